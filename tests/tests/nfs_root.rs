//! Stateless diskless nodes on the shared NFS root, end to end: QEMU guests (TCG) PXE-boot from
//! `clustermaker serve`, mount their image's root from the embedded NFS server, put a tmpfs
//! overlay on top, apply their node overlay and switch into the image's own init (busybox
//! init here), whose services answer over the lab network.
//!
//! The image is a busybox root (tests/src/nfsroot.rs) built into the store with
//! `clustermaker image build --from dir:…`; the kernel is the Debian cloud kernel that
//! `cargo xtask build-image` downloads (the image has none of its own). Nodes are driven
//! through the image's test-only command port.
//!
//! Boot counts are kept low (TCG boots take tens of seconds on two shared cores): two nodes
//! boot at once; one of them is rebooted after a snapshot rollback; a third boot runs the
//! handle-survival scenario.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;
use cm_tests::master::Master;
use cm_tests::nfsroot::{
    build_busybox_root, cached_busybox, guest_sh, http_get, kernel_and_modules, parse_loop_status,
    start_loops, GUEST_SHELL_PORT, LOOP_STATUS,
};
use cm_tests::qemu::{Boot, BootLab, NodeOptions, QemuNode};
use cm_tests::{require_program, require_root, retry};

/// One test with VMs at a time.
static VM: Mutex<()> = Mutex::new(());

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const IMAGE: &str = "busy";
/// Size of the image's /data/big, read in loops by the nodes.
const BIG_MB: u64 = 16;

fn prerequisites(test: &str) -> bool {
    require_root(test)
        && require_program(test, "qemu-system-x86_64")
        && require_program(test, "ssh-keygen")
        && Path::new("/usr/lib/ipxe/undionly.kpxe").exists()
}

struct Lab {
    lab: BootLab,
    master: Master,
    /// The source tree the image was built from.
    src: tempfile::TempDir,
}

impl Lab {
    fn new() -> Result<Lab> {
        let lab = BootLab::new()?;
        let config = format!(
            "[network]\ninterface = \"{}\"\naddress = \"{}\"\nprefix_len = {}\n\
             [boot]\ncmdline = \"console=ttyS0\"\n\
             [nfs]\nrescan_interval = \"1s\"\n",
            lab.bridge, lab.addr, lab.prefix_len
        );
        let master = Master::prepare(&config, None, &format!("http://{}:8080", lab.addr))?;
        let src = tempfile::tempdir()?;
        build_busybox_root(src.path(), &cached_busybox()?, BIG_MB)?;
        let lab = Lab { lab, master, src };
        lab.image(&[
            "build",
            IMAGE,
            "--from",
            &format!("dir:{}", lab.src.path().display()),
        ])?;
        Ok(lab)
    }

    /// `clustermaker image ARGS` with the test kernel, its modules and busybox.
    fn image(&self, args: &[&str]) -> Result<String> {
        let (kernel, modules) = kernel_and_modules()?;
        let busybox = cached_busybox()?;
        let mut full = vec!["image"];
        full.extend_from_slice(args);
        if matches!(args.first(), Some(&"build") | Some(&"update")) {
            full.extend_from_slice(&[
                "--kernel",
                kernel.to_str().unwrap(),
                "--modules",
                modules.to_str().unwrap(),
                "--busybox",
                busybox.to_str().unwrap(),
            ]);
        }
        let out = self.master.cli(&full)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn add_node(&self, name: &str, mac: &str, ip: &str) -> Result<()> {
        self.master.cli(&[
            "node", "add", name, "--mac", mac, "--ip", ip, "--image", IMAGE,
        ])?;
        Ok(())
    }

    /// The current version's root in the store (what the NFS server exports).
    fn current_root(&self) -> PathBuf {
        self.master
            .dir
            .path()
            .join("state/images")
            .join(IMAGE)
            .join("current/root")
    }

    fn shell(&self, ip: &str) -> SocketAddr {
        SocketAddr::new(ip.parse::<IpAddr>().unwrap(), GUEST_SHELL_PORT)
    }

    fn sh(&self, ip: &str, script: &str) -> Result<String> {
        guest_sh(
            &self.lab.ns.name,
            self.shell(ip),
            script,
            Duration::from_secs(120),
        )
    }

    /// Boots `mac` and waits until the image's services run.
    fn boot(&self, mac: &str) -> Result<QemuNode> {
        let mut opts = NodeOptions::new(mac, Boot::BiosPxe);
        opts.memory_mb = 384;
        self.lab.boot(&opts)
    }

    fn wait_services(&self, node: &mut QemuNode, what: &str) -> Result<Duration> {
        let t = node
            .wait_for_console("image-init: services started", BOOT_TIMEOUT)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{what}: {e}\n--- master log ---\n{}",
                    tail(&self.master.log_text(), 60)
                )
            })?;
        eprintln!(
            "{what}: power-on to image services in {:.1}s",
            t.as_secs_f64()
        );
        Ok(t)
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn two_nodes_boot_the_shared_root_run_its_init_and_stay_stateless() -> Result<()> {
    let test = "two nodes on the shared NFS root";
    if !prerequisites(test) {
        return Ok(());
    }
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new()?;
    let net = lab.lab.addr.octets();
    let ip_a = format!("{}.{}.{}.21", net[0], net[1], net[2]);
    let ip_b = format!("{}.{}.{}.22", net[0], net[1], net[2]);
    lab.add_node("alpha", "52:54:00:d0:00:01", &ip_a)?;
    lab.add_node("beta", "52:54:00:d0:00:02", &ip_b)?;
    lab.master.start(&lab.lab.ns)?;

    // Both at once from the same image.
    let mut a = lab.boot("52:54:00:d0:00:01")?;
    let mut b = lab.boot("52:54:00:d0:00:02")?;
    lab.wait_services(&mut a, "alpha")?;
    lab.wait_services(&mut b, "beta")?;
    for (node, name) in [(&a, "alpha"), (&b, "beta")] {
        let console = node.console();
        assert!(
            console.contains("clustermaker-init: nfs root mounted"),
            "{name}: {console}"
        );
        assert!(
            console.contains("clustermaker-init: switching to /sbin/init (busybox)"),
            "{name}: {console}"
        );
    }

    // The service enabled in the image answers, from each node with its own overlay name.
    for (ip, name) in [(&ip_a, "alpha"), (&ip_b, "beta")] {
        let page = retry("image HTTP service", Duration::from_secs(60), || {
            http_get(
                &lab.lab.ns.name,
                SocketAddr::new(ip.parse()?, 80),
                "/index.html",
            )
        })?;
        assert!(page.contains(&format!("served by {name}")), "{page}");
    }

    // The root is NFS under an overlay whose upper layer is tmpfs.
    let mounts = lab.sh(&ip_a, "cat /proc/mounts; echo; id -u")?;
    assert!(mounts.contains("overlay / overlay"), "{mounts}");
    assert!(mounts.contains(" nfs "), "{mounts}");

    // Programs from the export run (busybox and a dynamically linked one with its libraries).
    let out = lab.sh(&ip_a, "sha256sum /etc/motd && /usr/bin/sha256sum /etc/motd")?;
    assert_eq!(out.lines().count(), 2, "{out}");

    // The master shows the nodes online with metrics (the agent reports every 10 s).
    retry("alpha online with metrics", Duration::from_secs(90), || {
        let v = lab.master.cli_json(&["node", "show", "alpha"])?;
        let agent = &v["agent"];
        anyhow::ensure!(agent["online"] == true, "agent not online: {v}");
        let latest = &agent["latest"];
        anyhow::ensure!(
            latest["mem"]["total_kb"].as_u64().unwrap_or(0) > 0
                && latest["load"].as_array().is_some_and(|l| l.len() == 3)
                && latest["net"].as_array().is_some_and(|n| !n.is_empty()),
            "incomplete metrics: {latest}"
        );
        Ok(())
    })?;

    // The master says what it serves; `image render` shows what a node gets on top.
    let status = lab.master.cli_json(&["nfs", "status"])?;
    let export = &status["exports"][0];
    assert_eq!(export["path"], format!("/images/{IMAGE}"), "{status}");
    assert_eq!(export["ready"], true, "{status}");
    assert!(
        status["calls"]["read"].as_u64().unwrap_or(0) > 0,
        "{status}"
    );
    assert!(
        status["calls"]["mount.mnt"].as_u64().unwrap_or(0) >= 2,
        "{status}"
    );
    let render = lab
        .master
        .cli_json(&["image", "render", "alpha"])?
        .to_string();
    assert!(render.contains("etc/hostname"), "{render}");
    let out = lab.sh(&ip_a, "cat /etc/hostname; ls /etc/ssh/")?;
    assert!(out.starts_with("alpha"), "{out}");
    assert!(out.contains("ssh_host_ed25519_key"), "{out}");

    // Writes land in tmpfs; the export is never written.
    let out = lab.sh(&ip_a, "echo scribble > /etc/scribble && cat /etc/scribble && echo x >> /etc/motd && cat /etc/motd")?;
    assert!(out.contains("scribble"), "{out}");
    let root = lab.current_root();
    assert!(!root.join("etc/scribble").exists());
    assert_eq!(
        fs::read_to_string(root.join("etc/motd"))?,
        "clustermaker test root v1\n"
    );
    let out = lab.sh(&ip_b, "cat /etc/scribble 2>&1; cat /etc/motd")?;
    assert!(
        out.contains("No such file"),
        "beta sees alpha's write: {out}"
    );

    // A file added to the image while the nodes run becomes visible on them.
    fs::create_dir_all(root.join("opt"))?;
    fs::write(root.join("opt/added.txt"), "added while running\n")?;
    for ip in [&ip_a, &ip_b] {
        let seen = retry(
            "added file visible on the node",
            Duration::from_secs(60),
            || {
                let out = lab.sh(ip, "cat /opt/added.txt")?;
                anyhow::ensure!(out.contains("added while running"), "not yet: {out}");
                Ok(out)
            },
        )?;
        assert!(seen.contains("added while running"));
    }

    // After a reboot the node's writes are gone (and the added file is still there).
    drop(a);
    let mut a = lab.boot("52:54:00:d0:00:01")?;
    lab.wait_services(&mut a, "alpha after reboot")?;
    let out = lab.sh(
        &ip_a,
        "cat /etc/scribble 2>&1; cat /etc/motd; cat /opt/added.txt",
    )?;
    assert!(out.contains("No such file"), "{out}");
    assert!(!out.contains("\nx\n"), "{out}");
    assert!(out.contains("added while running"), "{out}");
    drop(b);
    lab.master.stop();
    Ok(())
}

/// (rounds of the path loop, failure lines, their text) so far.
fn loop_status(lab: &Lab, ip: &str) -> Result<(usize, usize, String)> {
    let out = lab.sh(ip, LOOP_STATUS)?;
    Ok(parse_loop_status(&out))
}

fn inode_of(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(p).map(|m| m.ino()).unwrap_or(0)
}

#[test]
fn handles_survive_a_copy_and_updates_snapshots_and_rollbacks_reach_the_node() -> Result<()> {
    let test = "handles survive a server switch; update, snapshot, rollback";
    if !prerequisites(test) {
        return Ok(());
    }
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new()?;
    let net = lab.lab.addr.octets();
    let ip = format!("{}.{}.{}.31", net[0], net[1], net[2]);
    let mac = "52:54:00:d0:00:03";
    lab.add_node("gamma", mac, &ip)?;
    lab.master.start(&lab.lab.ns)?;
    let mut node = lab.boot(mac)?;
    lab.wait_services(&mut node, "gamma")?;

    let out = std::process::Command::new("sha256sum")
        .arg(lab.src.path().join("data/big"))
        .output()?;
    let expected = String::from_utf8_lossy(&out.stdout)[..64].to_string();
    assert!(lab.sh(&ip, &start_loops(&expected))?.contains("started"));
    let before = retry("loops running", Duration::from_secs(120), || {
        let (ok, fails, text) = loop_status(&lab, &ip)?;
        anyhow::ensure!(fails == 0, "loop failures before the switch: {text}");
        anyhow::ensure!(ok >= 4, "only {ok} rounds so far");
        Ok(ok)
    })?;

    // Server switch: stop the master, replace the exported tree by a file-by-file copy (new
    // inodes everywhere), start it again on the same address.
    lab.master.stop();
    let root = lab.current_root();
    let copy = root.with_file_name("root.copy2");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&root)
        .arg(&copy)
        .status()?;
    assert!(status.success());
    let old_ino = inode_of(&root.join("data/big"));
    fs::remove_dir_all(&root)?;
    fs::rename(&copy, &root)?;
    assert_ne!(
        old_ino,
        inode_of(&root.join("data/big")),
        "the copy must have new inodes"
    );
    // Without the index cache the new server hashes everything again, like a fresh copy.
    let _ = fs::remove_file(root.with_file_name("nfs-index"));
    std::thread::sleep(Duration::from_secs(2));
    lab.master.start(&lab.lab.ns)?;
    // Every handle the node holds must now be sent to the new server, not answered from its
    // caches.
    retry("drop caches on the node", Duration::from_secs(120), || {
        let o = lab.sh(&ip, "sync; echo 3 > /proc/sys/vm/drop_caches; echo dropped")?;
        anyhow::ensure!(o.contains("dropped"), "{o}");
        Ok(())
    })?;
    let after = retry("loops after the switch", Duration::from_secs(120), || {
        let (ok, fails, text) = loop_status(&lab, &ip)?;
        anyhow::ensure!(fails == 0, "loop failures after the server switch: {text}");
        anyhow::ensure!(ok >= before + 6, "{ok} rounds, {before} before the switch");
        Ok(ok)
    })?;
    let dmesg = lab.sh(&ip, "dmesg | grep -iE 'stale|fileid changed' || echo clean")?;
    assert!(
        dmesg.trim().ends_with("clean"),
        "kernel complaints: {dmesg}"
    );
    eprintln!("server switch: {before} rounds before, {after} after, no failures");

    // Snapshot, then publish a changed image while the node runs it (a new version beside the
    // old, switched atomically): the loops keep passing and the change reaches the node.
    lab.image(&["snapshot", IMAGE, "s1"])?;
    fs::write(
        lab.src.path().join("etc/motd"),
        "clustermaker test root v2\n",
    )?;
    lab.image(&["update", IMAGE])?;
    retry("v2 visible on the node", Duration::from_secs(60), || {
        let out = lab.sh(&ip, "cat /etc/motd")?;
        anyhow::ensure!(out.contains("v2"), "still {out}");
        Ok(())
    })?;
    let (ok, fails, text) = loop_status(&lab, &ip)?;
    assert_eq!(fails, 0, "loop failures after the update: {text}");
    assert!(ok > after);

    // The snapshot's new space is a small part of the image.
    let list = lab.master.cli_json(&["image", "list"])?;
    let image = list
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == IMAGE))
        .cloned()
        .unwrap_or_default();
    let size = image["content_bytes"].as_u64().unwrap_or(0);
    let unique = image["snapshots"][0]["space"]["unique_bytes"]
        .as_u64()
        .unwrap_or(u64::MAX);
    eprintln!("snapshot s1: {unique} bytes of new space for an image of {size} bytes");
    assert!(size > (BIG_MB << 20));
    assert!(
        unique * 20 < size,
        "snapshot uses {unique} of {size} bytes (5 % or more)"
    );

    // Roll back; after a reboot the node runs the old content.
    lab.image(&["rollback", &format!("{IMAGE}@s1")])?;
    drop(node);
    let mut node = lab.boot(mac)?;
    lab.wait_services(&mut node, "gamma after rollback")?;
    let out = lab.sh(&ip, "cat /etc/motd")?;
    assert!(out.contains("clustermaker test root v1"), "{out}");
    lab.master.stop();
    Ok(())
}

#[test]
fn a_failed_nfs_mount_is_retried_reported_and_recovers() -> Result<()> {
    let test = "failed NFS mount retried and reported";
    if !prerequisites(test) || !require_program(test, "nft") {
        return Ok(());
    }
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let mut lab = Lab::new()?;
    let net = lab.lab.addr.octets();
    let ip = format!("{}.{}.{}.41", net[0], net[1], net[2]);
    let mac = "52:54:00:d0:00:04";
    lab.add_node("delta", mac, &ip)?;
    lab.master.start(&lab.lab.ns)?;
    // The NFS port refuses connections (TCP reset) until the node has reported a failure.
    lab.lab.ns.run("nft", &["add", "table", "inet", "cmtest"])?;
    lab.lab.ns.run(
        "nft",
        &[
            "add",
            "chain",
            "inet",
            "cmtest",
            "input",
            "{ type filter hook input priority 0; }",
        ],
    )?;
    lab.lab.ns.run(
        "nft",
        &[
            "add", "rule", "inet", "cmtest", "input", "tcp", "dport", "2049", "reject", "with",
            "tcp", "reset",
        ],
    )?;
    let mut node = lab.boot(mac)?;
    node.wait_for_console(
        "clustermaker-init: nfs mount attempt 1 failed",
        BOOT_TIMEOUT,
    )?;
    let reported = retry(
        "failure reported to the master",
        Duration::from_secs(60),
        || {
            let v = lab.master.cli_json(&["node", "show", "delta"])?;
            let events = v["events"].to_string();
            anyhow::ensure!(events.contains("nfs-mount-failed"), "events: {events}");
            Ok(events)
        },
    )?;
    assert!(reported.contains("attempt 1"), "{reported}");
    lab.lab
        .ns
        .run("nft", &["delete", "table", "inet", "cmtest"])?;
    lab.wait_services(&mut node, "delta after the NFS server came back")?;
    let console = node.console();
    assert!(
        console.contains("clustermaker-init: nfs root mounted"),
        "{console}"
    );
    lab.master.stop();
    Ok(())
}
