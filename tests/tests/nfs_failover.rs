//! The shared root survives a master failover: a QEMU node (TCG) boots from master A and mounts
//! its root from the virtual IP; B holds a file-by-file copy of the image store (new inodes).
//! Neither has a handle key file: both derive it from the HA key they share. `kill -9` of A's `serve`: B takes the virtual IP, and the node,
//! still holding A's file handles (open file, working directory, mapped programs), keeps
//! reading and running programs from B's copy without ESTALE.
//!
//! The HA lab (tests/src/ha.rs): masters A and B and client C as namespaces on a switch, the
//! serial heartbeat over a socat pty pair, C as the ping node; the node is a QEMU guest on a
//! tap of the switch. A also runs the boot services (DHCP, HTTP, TFTP); B only HA and NFS.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use cm_tests::ha::{HaLab, LabOptions, VIP};
use cm_tests::nfsroot::{
    build_busybox_root, cached_busybox, guest_sh, kernel_and_modules, parse_loop_status,
    start_loops, GUEST_SHELL_PORT, LOOP_STATUS,
};
use cm_tests::qemu::{Boot, NodeOptions, QemuNode};
use cm_tests::{require_program, require_root, retry};

static LAB: Mutex<()> = Mutex::new(());

const NODE_IP: &str = "10.88.0.50";
const NODE_MAC: &str = "52:54:00:d0:00:0f";
const IMAGE: &str = "busy";

fn prerequisites(test: &str) -> bool {
    require_root(test)
        && require_program(test, "qemu-system-x86_64")
        && require_program(test, "socat")
        && require_program(test, "nft")
        && require_program(test, "/usr/bin/python3")
        && require_program(test, "ssh-keygen")
}

/// A's configuration gains the boot network and boot services; B's the network (for its NFS
/// allow-list). Both keep HA as the lab wrote it.
fn add_boot_config(config: &Path, address: &str, boot: bool) -> Result<()> {
    let text = fs::read_to_string(config)?;
    let boot_section = if boot {
        "[boot]\ncmdline = \"console=ttyS0\"\nipv6_ra = false\n[nfs]\nrescan_interval = \"1s\"\n"
    } else {
        "[boot]\nenabled = false\n"
    };
    let text = text.replacen(
        "[boot]\nenabled = false\n",
        &format!(
            "[network]\ninterface = \"eth0\"\naddress = \"{address}\"\nprefix_len = 24\n{boot_section}"
        ),
        1,
    );
    fs::write(config, text)?;
    Ok(())
}

#[test]
fn a_node_keeps_running_from_the_backup_masters_copy_after_kill9_of_the_active() -> Result<()> {
    let test = "NFS root across a master failover";
    if !prerequisites(test) {
        return Ok(());
    }
    let _one = LAB.lock().unwrap_or_else(|p| p.into_inner());
    let mut lab = HaLab::new(LabOptions::default())?;
    add_boot_config(&lab.a.config, "10.88.0.1", true)?;
    add_boot_config(&lab.b.config, "10.88.0.2", false)?;

    // The image on A, then copied file by file to B (what replication will do).
    let src = tempfile::tempdir()?;
    let busybox = cached_busybox()?;
    build_busybox_root(src.path(), &busybox, 8)?;
    let (kernel, modules) = kernel_and_modules()?;
    let from = format!("dir:{}", src.path().display());
    let build = [
        "image",
        "build",
        IMAGE,
        "--from",
        &from,
        "--kernel",
        kernel.to_str().unwrap(),
        "--modules",
        modules.to_str().unwrap(),
        "--busybox",
        busybox.to_str().unwrap(),
    ];
    let out = lab.a.cli(&build)?;
    anyhow::ensure!(out.status.success(), "image build: {out:?}");
    fs::create_dir_all(&lab.b.state_dir)?;
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(lab.a.state_dir.join("images"))
        .arg(lab.b.state_dir.join("images"))
        .status()?;
    anyhow::ensure!(status.success(), "cp -a of the image store failed");
    let out = lab.a.cli(&[
        "node", "add", "omega", "--mac", NODE_MAC, "--ip", NODE_IP, "--image", IMAGE,
    ])?;
    anyhow::ensure!(out.status.success(), "node add: {out:?}");

    lab.a.start()?;
    std::thread::sleep(Duration::from_millis(300));
    lab.b.start()?;
    lab.wait_holder("a", Duration::from_secs(30))?;

    let (switch_ns, tap) = lab.switch().add_tap("tapnode")?;
    let mut opts = NodeOptions::new(NODE_MAC, Boot::BiosPxe);
    opts.memory_mb = 384;
    let mut node = QemuNode::start(switch_ns, &tap, &opts)?;
    let t = node
        .wait_for_console("image-init: services started", Duration::from_secs(300))
        .with_context(|| format!("A's log:\n{}", lab.a.log_text()))?;
    eprintln!("node booted from A in {:.1}s", t.as_secs_f64());
    let console = node.console();
    assert!(
        console.contains(&format!("nfs root mounted from {VIP}:/images/{IMAGE}")),
        "the root must come from the virtual IP: {console}"
    );

    let shell = SocketAddr::new(NODE_IP.parse()?, GUEST_SHELL_PORT);
    let sh = |script: &str| guest_sh(&lab.c.name, shell, script, Duration::from_secs(120));
    let expected = {
        let out = std::process::Command::new("sha256sum")
            .arg(src.path().join("data/big"))
            .output()?;
        String::from_utf8_lossy(&out.stdout)[..64].to_string()
    };
    assert!(sh(&start_loops(&expected))?.contains("started"));
    let before = retry("loops running", Duration::from_secs(120), || {
        let (ok, fails, text) = parse_loop_status(&sh(LOOP_STATUS)?);
        anyhow::ensure!(fails == 0, "failures before the failover: {text}");
        anyhow::ensure!(ok >= 4, "only {ok} rounds");
        Ok(ok)
    })?;

    // The active master dies; B takes the virtual IP and serves its own copy.
    lab.a.kill9()?;
    lab.wait_holder("b", Duration::from_secs(15))?;
    retry("drop caches on the node", Duration::from_secs(120), || {
        let o = sh("sync; echo 3 > /proc/sys/vm/drop_caches; echo dropped")?;
        anyhow::ensure!(o.contains("dropped"), "{o}");
        Ok(())
    })?;
    let after = retry("loops after the failover", Duration::from_secs(180), || {
        let (ok, fails, text) = parse_loop_status(&sh(LOOP_STATUS)?);
        anyhow::ensure!(fails == 0, "failures after the failover: {text}");
        anyhow::ensure!(ok >= before + 6, "{ok} rounds, {before} before");
        Ok(ok)
    })?;
    let dmesg = sh("dmesg | grep -iE 'stale|fileid changed' || echo clean")?;
    assert!(
        dmesg.trim().ends_with("clean"),
        "kernel complaints: {dmesg}"
    );
    // B really served: its NFS status counts the node's calls.
    let status = lab.b.cli(&["nfs", "status", "--json"])?;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    assert!(
        status["calls"]["read"].as_u64().unwrap_or(0) > 0,
        "B served no READ: {status}"
    );
    eprintln!(
        "failover: {before} loop rounds before, {after} after, B answered {} calls",
        status["calls"]
    );
    drop(node);
    lab.b.stop();
    Ok(())
}
