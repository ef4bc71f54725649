//! The node /init (images/templates/initramfs/init.sh): syntax under the shells that run it,
//! and its NFS-root helper functions run against fake image roots (the script is sourced with
//! CM_INIT_LIB=1, which defines the functions and returns before any mount).

use std::path::{Path, PathBuf};
use std::process::Command;

fn init_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/initramfs/init.sh")
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn init_and_udhcpc_script_parse_with_dash_and_busybox() {
    let udhcpc = init_sh().with_file_name("udhcpc.script");
    let mut checked = 0;
    for (shell, args) in [("dash", vec!["-n"]), ("busybox", vec!["sh", "-n"])] {
        if !have(shell) {
            eprintln!("{shell} not installed: skipped");
            continue;
        }
        for script in [init_sh(), udhcpc.clone()] {
            let out = Command::new(shell)
                .args(&args)
                .arg(&script)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{shell} -n {}: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        checked += 1;
    }
    assert!(checked > 0, "neither dash nor busybox is installed");
}

/// Runs `body` in dash after sourcing init.sh's functions; returns stdout, panics on failure.
fn run_functions(body: &str) -> String {
    let script = format!("set -e\nCM_INIT_LIB=1\n. {}\n{body}\n", init_sh().display());
    let out = Command::new("dash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "script failed:\n{script}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn cm_root_is_parsed_and_bad_values_refused() {
    if !have("dash") {
        return;
    }
    let out = run_functions(
        "CM_ROOT=nfs:10.0.0.1:/images/default; parse_root; echo \"$NFS_SERVER|$NFS_PATH\"\n\
         for bad in nfs:server.example:/x nfs:10.0.0.1 nfs::/x tftp:1.2.3.4:/x ''; do\n\
           CM_ROOT=$bad; if parse_root; then echo \"accepted $bad\"; fi\n\
         done",
    );
    assert_eq!(out, "10.0.0.1|/images/default\n");
}

fn make_root(dir: &Path, init: &str) -> PathBuf {
    let root = dir.join(init.replace('/', "_"));
    for d in ["sbin", "bin", "lib/systemd", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    root
}

#[test]
fn the_image_init_is_detected_and_gets_an_agent_start_hook() {
    if !have("dash") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // systemd: absolute symlink, resolved inside the image root, not the initramfs.
    let systemd = make_root(dir.path(), "systemd");
    std::fs::write(systemd.join("lib/systemd/systemd"), "elf").unwrap();
    std::os::unix::fs::symlink("/lib/systemd/systemd", systemd.join("sbin/init")).unwrap();
    // busybox: relative symlink, no inittab.
    let bb = make_root(dir.path(), "busybox");
    std::fs::write(bb.join("bin/busybox"), "elf").unwrap();
    std::os::unix::fs::symlink("../bin/busybox", bb.join("sbin/init")).unwrap();
    // busybox copied as init.
    let bbcopy = make_root(dir.path(), "bbcopy");
    std::fs::write(bbcopy.join("sbin/init"), "\x7fELF...BusyBox v1.35.0...").unwrap();
    // sysvinit with Debian's inittab.
    let sysv = make_root(dir.path(), "sysv");
    std::fs::write(sysv.join("sbin/init"), "\x7fELF sysvinit").unwrap();
    std::fs::write(
        sysv.join("etc/inittab"),
        "id:2:initdefault:\nsi::sysinit:/etc/init.d/rcS\n",
    )
    .unwrap();
    let out = run_functions(&format!(
        "for r in {s} {b} {c} {v}; do k=$(init_kind $r /sbin/init); echo $k; install_hook $r $k; install_hook $r $k; done",
        s = systemd.display(),
        b = bb.display(),
        c = bbcopy.display(),
        v = sysv.display()
    ));
    assert_eq!(out, "systemd\nbusybox\nbusybox\nsysv\n");

    let wants =
        systemd.join("etc/systemd/system/multi-user.target.wants/clustermaker-agent.service");
    assert_eq!(
        std::fs::read_link(&wants).unwrap(),
        Path::new("/etc/systemd/system/clustermaker-agent.service")
    );
    let unit =
        std::fs::read_to_string(systemd.join("etc/systemd/system/clustermaker-agent.service"))
            .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/sbin/clustermaker agent run --config /etc/clustermaker/agent.toml\n"), "{unit}");

    let inittab = std::fs::read_to_string(bb.join("etc/inittab")).unwrap();
    assert!(
        inittab.starts_with("::sysinit:/etc/init.d/rcS\n"),
        "{inittab}"
    );
    assert_eq!(
        inittab
            .matches("::respawn:/usr/local/sbin/clustermaker agent run")
            .count(),
        1,
        "{inittab}"
    );

    let inittab = std::fs::read_to_string(sysv.join("etc/inittab")).unwrap();
    assert_eq!(
        inittab,
        "id:2:initdefault:\nsi::sysinit:/etc/init.d/rcS\n\
         cm:2345:respawn:/usr/local/sbin/clustermaker agent run --config /etc/clustermaker/agent.toml\n"
    );
}

#[test]
fn the_agent_is_installed_with_its_loader_and_libraries() {
    if !have("dash") || !Path::new("/bin/ls").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A dynamically linked program standing in for clustermaker (it answers --version).
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy("/bin/ls", bin.join("clustermaker")).unwrap();
    let root = make_root(dir.path(), "image");
    let out = run_functions(&format!(
        "PATH={}:$PATH; install_agent {}",
        bin.display(),
        root.display()
    ));
    assert!(out.contains("agent: installed"), "{out}");
    let lib = root.join("usr/local/lib/clustermaker");
    let wrapper = std::fs::read_to_string(root.join("usr/local/sbin/clustermaker")).unwrap();
    if lib.join("ld.so").exists() {
        assert!(lib.join("libc.so.6").exists());
        assert_eq!(
            wrapper,
            "#!/bin/sh\nexec /usr/local/lib/clustermaker/ld.so --library-path /usr/local/lib/clustermaker /usr/local/lib/clustermaker/clustermaker \"$@\"\n"
        );
        // The copied loader runs the copied program with the copied libraries.
        let out = Command::new(lib.join("ld.so"))
            .arg("--library-path")
            .arg(&lib)
            .arg(lib.join("clustermaker"))
            .arg("--version")
            .output()
            .unwrap();
        assert!(out.status.success());
    }
}
