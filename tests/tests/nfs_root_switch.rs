//! The node /init's NFS-root path without a VM and without NFS (this host's kernel has no NFS
//! client): the real init.sh functions run as PID 1 of a new PID and mount namespace, chrooted
//! into a tmpfs that plays the initramfs, inside a "node" network namespace. Only the NFS mount
//! itself is stood in for by a bind mount of an image directory; everything after it is real:
//! tmpfs + overlay, the node overlay fetched from a running master, the agent installed with
//! its own loader into a busybox image (no glibc there), the busybox inittab hook, mount
//! --move and busybox switch_root into the image's init, which then checks from inside.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use cm_tests::master::Master;
use cm_tests::{clustermaker_bin, require_root, veth, wait_for, ChildGuard, Netns};

const MASTER: &str = "http://10.96.0.1:8080";

/// A static busybox (the node initramfs uses Debian's busybox-static; installing that package
/// would remove the host's busybox, so it is only unpacked): `CM_BUSYBOX_STATIC`, or the copy
/// `cargo xtask build-image` unpacked into its download cache.
fn static_busybox() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("CM_BUSYBOX_STATIC") {
        return Some(p.into());
    }
    cm_tests::nfsroot::cached_busybox().ok()
}

/// `dir/bin/busybox` and a link per applet.
fn install_busybox(busybox: &Path, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir.join("bin"))?;
    std::fs::copy(busybox, dir.join("bin/busybox"))?;
    let list = Command::new(busybox).arg("--list").output()?;
    for applet in String::from_utf8(list.stdout)?.lines() {
        let link = dir.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", link)?;
        }
    }
    Ok(())
}

/// Copies `file` to the same absolute path under `root` (following links).
fn copy_to(root: &Path, file: &str) -> Result<()> {
    let dest = root.join(file.trim_start_matches('/'));
    std::fs::create_dir_all(dest.parent().unwrap())?;
    std::fs::copy(file, &dest).with_context(|| format!("copy {file}"))?;
    Ok(())
}

/// The clustermaker binary with its loader and libraries, as the initramfs builder puts them.
fn install_agent(root: &Path) -> Result<()> {
    let bin = clustermaker_bin();
    std::fs::create_dir_all(root.join("usr/bin"))?;
    let dest = root.join("usr/bin/clustermaker");
    // Without debug info the debug build is a tenth of its size (it is copied into tmpfs
    // twice); a plain copy when binutils is missing.
    let stripped = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dest)
        .arg(&bin)
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(&bin, &dest)?;
    }
    let ldso = "/lib64/ld-linux-x86-64.so.2";
    copy_to(root, ldso)?;
    let list = Command::new(ldso).arg("--list").arg(&bin).output()?;
    for line in String::from_utf8(list.stdout)?.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() >= 3 && f[1] == "=>" && f[2].starts_with('/') {
            copy_to(root, f[2])?;
        }
    }
    Ok(())
}

const CHECK: &str = r#"#!/bin/sh
# rcS of the test image: runs under busybox init after switch_root; says what it sees.
mount -t proc proc /proc 2>/dev/null
echo "CHECK pid=$$ hostname=$(cat /etc/hostname)"
echo "CHECK root=$(awk '$2 == "/" { t = $3 } END { print t }' /proc/mounts)"
touch /written-on-node
[ -e /run/cm/rw/upper/written-on-node ] && echo "CHECK write-in-tmpfs"
[ -e /run/cm/lower/written-on-node ] || echo "CHECK lower-untouched"
echo "CHECK agent=$(/usr/local/sbin/clustermaker --version)"
echo "CHECK respawn=$(grep -c '::respawn:/usr/local/sbin/clustermaker agent run' /etc/inittab)"
echo "CHECK ready"
# In the background: busybox init starts the respawn entries (the agent) after sysinit ends.
(
    i=0
    while [ ! -e /added-later ] && [ $i -lt 400 ]; do sleep 0.1; i=$((i + 1)); done
    [ -e /added-later ] && echo "CHECK added-visible"
) &
"#;

#[test]
fn init_switches_into_a_busybox_image_over_an_overlay_with_the_node_overlay_and_agent() -> Result<()>
{
    let t = "nfs root switch";
    if !require_root(t) {
        return Ok(());
    }
    let Some(busybox) = static_busybox() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!(
                "{t}: no static busybox (run cargo xtask build-image, or set CM_BUSYBOX_STATIC)"
            );
        }
        eprintln!("skipping {t}: no static busybox (set CM_BUSYBOX_STATIC)");
        return Ok(());
    };
    let server = Netns::new("cmra")?;
    let node = Netns::new("cmrb")?;
    let (server_if, node_if) = veth(&server, &node)?;
    server.addr(&server_if, "10.96.0.1/24")?;
    node.addr(&node_if, "10.96.0.42/24")?;
    let mac = String::from_utf8(
        node.run("cat", &[&format!("/sys/class/net/{node_if}/address")])?
            .stdout,
    )?
    .trim()
    .to_string();
    let mut master = Master::prepare(
        &format!(
            "[network]\ninterface = \"{server_if}\"\naddress = \"10.96.0.1\"\n[boot]\nipv6_ra = false\n\
             [dhcp]\nmode = \"off\"\n"
        ),
        None,
        MASTER,
    )?;
    master.cli(&["node", "add", "n7", "--mac", &mac, "--ip", "10.96.0.42"])?;
    master.start(&server)?;

    let work = master.dir.path().join("switch");
    let initrd = work.join("initrd");
    let lower = work.join("lower");
    // The initramfs: busybox, the clustermaker binary and its libraries, /init.
    install_busybox(&busybox, &initrd)?;
    install_agent(&initrd)?;
    let init_sh =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/templates/initramfs/init.sh");
    std::fs::copy(&init_sh, initrd.join("init"))?;
    for d in ["proc", "sys", "dev", "run", "tmp", "lower", "etc"] {
        std::fs::create_dir_all(initrd.join(d))?;
    }
    std::fs::write(
        initrd.join("drive.sh"),
        format!(
            "#!/bin/sh\n[ $$ = 1 ] || {{ echo 'not PID 1'; exit 1; }}\n\
             mount -t proc proc /proc\nmount -t sysfs sysfs /sys\nmount -t devtmpfs devtmpfs /dev\n\
             mount -t tmpfs tmpfs /run\nmount -t tmpfs tmpfs /tmp\n\
             CM_INIT_LIB=1\n. /init\n\
             CM_MASTER={MASTER}\nMAC={mac}\nleased={node_if}\nCM_ROOT=nfs:10.96.0.1:/images/default\n\
             # Stand-in for the NFS mount: the image directory, bind-mounted read-only.\n\
             nfs_mount_once() {{ mount --bind /lower \"$LOWER\" && mount -o remount,bind,ro \"$LOWER\"; }}\n\
             nfs_boot\necho 'DRIVE nfs_boot returned'\n"
        ),
    )?;
    // The image: busybox only (no glibc), with busybox init and an inittab of its own.
    install_busybox(&busybox, &lower)?;
    for d in ["sbin", "etc/init.d", "proc", "sys", "dev", "run", "tmp"] {
        std::fs::create_dir_all(lower.join(d))?;
    }
    std::os::unix::fs::symlink("../bin/busybox", lower.join("sbin/init"))?;
    std::fs::write(lower.join("etc/inittab"), "::sysinit:/etc/init.d/rcS\n")?;
    std::fs::write(lower.join("etc/init.d/rcS"), CHECK)?;
    for f in ["etc/init.d/rcS", "init", "drive.sh"] {
        let p = if f == "etc/init.d/rcS" {
            lower.join(f)
        } else {
            initrd.join(f)
        };
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }

    // PID 1 of new PID and mount namespaces, in a tmpfs root holding /init (what busybox
    // switch_root insists on), with the image bind-mounted from the host (another device, so
    // switch_root's clean-up of the old root leaves it alone, and the host can add files).
    let root = work.join("root");
    std::fs::create_dir_all(&root)?;
    let log = work.join("console.log");
    let setup = format!(
        "set -e\nmount -t tmpfs -o mode=0755 tmpfs {root}\ncp -a {initrd}/. {root}/\n\
         mount --bind {lower} {root}/lower\nexec chroot {root} /bin/sh /drive.sh",
        root = root.display(),
        initrd = initrd.display(),
        lower = lower.display()
    );
    let console = std::fs::File::create(&log)?;
    let _pid1 = ChildGuard(
        node.command("unshare")
            .args([
                "--pid",
                "--fork",
                "--kill-child",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                &setup,
            ])
            .stdin(Stdio::null())
            .stdout(console.try_clone()?)
            .stderr(console)
            .spawn()?,
    );
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    let ready = wait_for("the image's init to run", Duration::from_secs(60), || {
        let t = text();
        if t.contains("DRIVE nfs_boot returned") || t.contains("not PID 1") {
            return Some(Err(t));
        }
        t.contains("CHECK ready").then_some(Ok(t))
    });
    match ready {
        Ok(Ok(_)) => {}
        Ok(Err(t)) => bail!("init did not switch:\n{t}"),
        Err(e) => bail!("{e}:\n{}", text()),
    }
    // A file added to the image while the node runs shows through the overlay, once the
    // master tells the agent the export changed and the agent drops the dentry caches: the
    // node looked the name up before, and overlayfs keeps that negative dentry otherwise
    // (design nfs-server.md §3.3).
    std::fs::write(lower.join("added-later"), "new\n")?;
    std::fs::write(master.dir.path().join("state/export-generation"), "1\n")?;
    let t = wait_for("the added file", Duration::from_secs(40), || {
        let t = text();
        t.contains("CHECK added-visible").then_some(t)
    })
    .unwrap_or_else(|_| text());
    for want in [
        "clustermaker-init: nfs root mounted",
        "clustermaker-init: overlay applied",
        "clustermaker-init: switching to /sbin/init (busybox)",
        "CHECK pid=",
        "hostname=n7",
        "CHECK root=overlay",
        "CHECK write-in-tmpfs",
        "CHECK lower-untouched",
        "CHECK agent=clustermaker ",
        "CHECK respawn=1",
        "CHECK added-visible",
    ] {
        assert!(t.contains(want), "no `{want}` in:\n{t}");
    }
    assert!(!lower.join("written-on-node").exists());
    // The agent, respawned by busybox init from the image, reports to the master.
    let show = wait_for("n7 online", Duration::from_secs(30), || {
        let v = master.cli_json(&["node", "show", "n7"]).ok()?;
        (v["stage"] == "online").then_some(v)
    })
    .with_context(text)?;
    let events: Vec<String> = show["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        events,
        ["nfs-mounted", "overlay-applied", "switch-root"],
        "{show}"
    );
    Ok(())
}
