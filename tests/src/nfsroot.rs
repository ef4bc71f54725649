//! A small but real root file system for NFS-root nodes, and a way for tests to run commands
//! on a booted node.
//!
//! [`build_busybox_root`] makes a tree that boots with busybox's own `init`: `/etc/inittab`
//! runs `/etc/init.d/rcS`, which starts the services *enabled in the image*: an HTTP server on
//! port 80 (`/www/index.html` names the node) and, for tests only, a command port
//! ([`GUEST_SHELL_PORT`]) where every connection gets a shell. Everything the node runs comes
//! from the NFS export: busybox itself, and a dynamically linked program with its libraries
//! (`/usr/bin/sha256sum` from this host) so that "running programs from the export" includes
//! the ELF loader and mmapped shared libraries.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::qemu::in_netns;

/// TCP port of the test-only command service of [`build_busybox_root`] images.
pub const GUEST_SHELL_PORT: u16 = 5555;

/// The static busybox downloaded by `cargo xtask build-image` into its cache.
pub fn cached_busybox() -> Result<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let cache = std::env::var_os("CM_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target/cm-cache"));
    let unpacked = cache.join("unpacked");
    let entries = fs::read_dir(&unpacked).with_context(|| {
        format!(
            "no {} (fix: run cargo xtask build-image once)",
            unpacked.display()
        )
    })?;
    for e in entries.flatten() {
        let name = e.file_name();
        if name.to_string_lossy().starts_with("busybox-static_") {
            let bb = e.path().join("bin/busybox");
            if bb.is_file() {
                return Ok(bb);
            }
        }
    }
    bail!(
        "no busybox-static in {} (fix: run cargo xtask build-image once)",
        unpacked.display()
    )
}

fn write(path: &Path, mode: u32, text: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Copies a host program and the shared libraries it needs (as `ldd` lists them) into `root`
/// at the same paths.
fn copy_program_with_libraries(root: &Path, program: &str) -> Result<()> {
    let out = Command::new("ldd").arg(program).output()?;
    if !out.status.success() {
        bail!("ldd {program} failed");
    }
    let mut files = vec![PathBuf::from(program)];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)"
        let path = line
            .split("=>")
            .last()
            .and_then(|s| s.split_whitespace().next())
            .filter(|p| p.starts_with('/'));
        if let Some(p) = path {
            files.push(PathBuf::from(p));
        }
    }
    for f in files {
        let real = fs::canonicalize(&f)?;
        let dest = root.join(f.strip_prefix("/").unwrap());
        fs::create_dir_all(dest.parent().unwrap())?;
        if !dest.exists() {
            fs::copy(&real, &dest)
                .with_context(|| format!("cannot copy {} into the root", real.display()))?;
        }
    }
    Ok(())
}

/// Builds a busybox root at `root` (see the module doc). `big_file_mb` adds `/data/big`, that
/// many MiB of pseudo-random bytes (a deterministic pattern), for read tests.
pub fn build_busybox_root(root: &Path, busybox: &Path, big_file_mb: u64) -> Result<()> {
    for d in [
        "bin",
        "sbin",
        "etc/init.d",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "root",
        "www",
        "var/log",
        "usr/bin",
        "usr/sbin",
        "mnt",
        "data",
    ] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    fs::copy(busybox, root.join("bin/busybox")).context("copying busybox")?;
    fs::set_permissions(root.join("bin/busybox"), fs::Permissions::from_mode(0o755))?;
    let list = Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet == "busybox" || applet.contains('/') {
            continue;
        }
        let link = root.join("bin").join(applet);
        if !link.exists() {
            symlink("busybox", &link)?;
        }
    }
    symlink("../bin/busybox", root.join("sbin/init"))?;
    write(
        &root.join("etc/passwd"),
        0o644,
        "root:x:0:0:root:/root:/bin/sh\n",
    )?;
    write(&root.join("etc/group"), 0o644, "root:x:0:\n")?;
    write(
        &root.join("etc/shadow"),
        0o640,
        "root:*:19000:0:99999:7:::\n",
    )?;
    write(
        &root.join("etc/inittab"),
        0o644,
        "::sysinit:/etc/init.d/rcS\n::shutdown:/bin/umount -a -r\n",
    )?;
    // The services enabled in this image. `nc -ll -e` keeps listening and gives every
    // connection its own shell: the test's window into the node.
    write(
        &root.join("etc/init.d/rcS"),
        0o755,
        &format!(
            "#!/bin/sh\n\
             mount -t proc proc /proc 2>/dev/null\n\
             mount -t sysfs sysfs /sys 2>/dev/null\n\
             echo \"image-init: rcS running on $(hostname)\" > /dev/console\n\
             echo \"served by $(hostname) from the shared root\" > /tmp/index.html\n\
             httpd -p 80 -h /www\n\
             nc -ll -p {GUEST_SHELL_PORT} -e /bin/sh &\n\
             echo image-init: services started > /dev/console\n"
        ),
    )?;
    // index.html lives in tmpfs (per node); the export only has a link to it.
    symlink("/tmp/index.html", root.join("www/index.html"))?;
    write(&root.join("etc/motd"), 0o644, "clustermaker test root v1\n")?;
    copy_program_with_libraries(root, "/usr/bin/sha256sum")?;
    if big_file_mb > 0 {
        write_pattern_file(&root.join("data/big"), big_file_mb << 20)?;
    }
    Ok(())
}

/// Writes `len` bytes of a deterministic xorshift pattern (incompressible enough that no layer
/// can cheat, identical on every run).
pub fn write_pattern_file(path: &Path, len: u64) -> Result<()> {
    let mut f = std::io::BufWriter::new(fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut left = len;
    let mut block = vec![0u8; 1 << 16];
    while left > 0 {
        for chunk in block.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}

/// Runs `script` with `/bin/sh` on the node at `node` (its [`GUEST_SHELL_PORT`] service), from
/// inside network namespace `ns`; returns what the script printed (stdout and stderr).
pub fn guest_sh(ns: &str, node: SocketAddr, script: &str, timeout: Duration) -> Result<String> {
    let script = format!("{script}\nexit\n");
    in_netns(ns, move || -> Result<String> {
        // The service may still be starting right after the image's init said so: a refused
        // connection is retried for a while (nothing was sent yet, so nothing runs twice).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut s = loop {
            match TcpStream::connect_timeout(&node, Duration::from_secs(5)) {
                Ok(s) => break s,
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot reach the node's shell at {node}"))
                }
            }
        };
        s.set_read_timeout(Some(timeout))?;
        s.write_all(format!("exec 2>&1\n{script}").as_bytes())?;
        s.shutdown(Shutdown::Write)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)
            .with_context(|| format!("reading the node's answer to {script:?}"))?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    })?
}

/// An HTTP GET from inside `ns` (busybox-free: plain TCP), returning the body.
pub fn http_get(ns: &str, addr: SocketAddr, path: &str) -> Result<String> {
    let path = path.to_string();
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    in_netns(ns, move || -> Result<String> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.write_all(req.as_bytes())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        let text = String::from_utf8_lossy(&out).into_owned();
        match text.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200") => {
                Ok(body.to_string())
            }
            _ => bail!("unexpected HTTP answer from {addr}{path}: {text:?}"),
        }
    })?
}

/// The workspace root (for the default download cache and boot files).
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Debian cloud kernel and its modules directory, as `cargo xtask build-image` left them.
pub fn kernel_and_modules() -> Result<(PathBuf, PathBuf)> {
    let boot = std::env::var_os("CM_BOOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/cm-boot"));
    let kernel = boot.join("vmlinuz");
    anyhow::ensure!(
        kernel.is_file(),
        "{}: no kernel; run `cargo xtask build-image` first",
        kernel.display()
    );
    let cache = std::env::var_os("CM_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/cm-cache"));
    for e in fs::read_dir(cache.join("unpacked"))?.flatten() {
        if e.file_name().to_string_lossy().starts_with("linux-image-") {
            if let Some(m) = fs::read_dir(e.path().join("lib/modules"))?.flatten().next() {
                return Ok((kernel, m.path()));
            }
        }
    }
    bail!("no unpacked linux-image package in {}", cache.display())
}

/// The guest-side loops of the handle-survival test, started in the background on the node.
/// Each appends `ok` or `FAIL …` to its log in tmpfs after every round:
/// - `l1`: path walks and program runs: the dynamically linked sha256sum over /data/big,
///   compared with the expected hash, and `ls -lR` of the programs' directories;
/// - `l2`: a file descriptor opened once (before the switch) and a working directory entered
///   once, re-read through `/proc/self/fd` every round: handles that no path walk renews.
pub fn start_loops(expected: &str) -> String {
    format!(
        r#"cat > /tmp/loops.sh <<'EOF'
l1() {{
  while :; do
    h=$(/usr/bin/sha256sum /data/big | cut -c1-64)
    if [ "$h" = "{expected}" ]; then echo ok >> /tmp/l1; else echo "FAIL sha=$h" >> /tmp/l1; fi
    ls -lR /usr /bin > /dev/null 2>> /tmp/l1.err || echo "FAIL ls" >> /tmp/l1
    sleep 1
  done
}}
l2() {{
  cd /usr/lib/x86_64-linux-gnu || exit 1
  exec 3< /data/big
  while :; do
    h=$(sha256sum < /proc/self/fd/3 | cut -c1-64)
    if [ "$h" = "{expected}" ] && [ -e libc.so.6 ]; then echo ok >> /tmp/l2; else echo "FAIL fd sha=$h" >> /tmp/l2; fi
    sleep 1
  done
}}
l1 &
l2 &
wait
EOF
setsid sh /tmp/loops.sh < /dev/null > /dev/null 2>&1 &
echo started"#
    )
}

/// Prints the logs of the [`start_loops`] loops (parse with [`parse_loop_status`]).
pub const LOOP_STATUS: &str =
    "cat /tmp/l1 /tmp/l2 2>/dev/null; echo ==; cat /tmp/l1.err 2>/dev/null";

/// (ok rounds of both loops, failure lines, their text) from the output of [`LOOP_STATUS`].
pub fn parse_loop_status(out: &str) -> (usize, usize, String) {
    let (body, errs) = out.split_once("==").unwrap_or((out, ""));
    let ok = body.lines().filter(|l| *l == "ok").count();
    let fails: Vec<&str> = body.lines().filter(|l| l.starts_with("FAIL")).collect();
    (
        ok,
        fails.len(),
        format!("{}\n{}", fails.join("\n"), errs.trim()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_file_is_deterministic_and_sized() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        write_pattern_file(&a, 100_003).unwrap();
        write_pattern_file(&b, 100_003).unwrap();
        let (a, b) = (fs::read(a).unwrap(), fs::read(b).unwrap());
        assert_eq!(a.len(), 100_003);
        assert_eq!(a, b);
        assert!(a.iter().filter(|&&x| x == 0).count() < 2_000);
    }

    #[test]
    fn busybox_root_has_init_services_and_a_dynamic_program() {
        let Ok(bb) = cached_busybox() else {
            eprintln!("skipping: no cached busybox");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        build_busybox_root(dir.path(), &bb, 1).unwrap();
        let r = dir.path();
        assert!(fs::read_link(r.join("sbin/init")).is_ok());
        assert!(r.join("bin/httpd").exists() || fs::symlink_metadata(r.join("bin/httpd")).is_ok());
        assert!(fs::read_to_string(r.join("etc/init.d/rcS"))
            .unwrap()
            .contains("httpd -p 80"));
        assert!(r.join("usr/bin/sha256sum").is_file());
        assert_eq!(fs::metadata(r.join("data/big")).unwrap().len(), 1 << 20);
    }
}
