//! Nodes PXE-boot from `clustermaker serve` under QEMU (TCG): BIOS with kernel and initramfs
//! over HTTP and over TFTP only, UEFI (OVMF), and an unknown node that is discovered, added, and
//! boots again with its reserved address and its name. Boot times are printed, never asserted
//! (`cargo xtask bench` measures them).
//!
//! Needs the boot files from `cargo xtask build-image` (`CM_BOOT_DIR`, default target/cm-boot).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cm_tests::master::Master;
use cm_tests::qemu::{Boot, BootLab, NodeOptions};
use cm_tests::{require_program, require_root, wait_for};

/// One VM at a time: two TCG guests on two cores slow each other past any sane timeout.
static VM: Mutex<()> = Mutex::new(());

const ONLINE: &str = "clustermaker-init: online";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

fn boot_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("CM_BOOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/cm-boot"));
    let dir = std::fs::canonicalize(&dir).with_context(|| {
        format!(
            "{}: no boot files; run `cargo xtask build-image` first",
            dir.display()
        )
    })?;
    anyhow::ensure!(
        dir.join("vmlinuz").is_file() && dir.join("initramfs.img").is_file(),
        "{}: vmlinuz or initramfs.img missing",
        dir.display()
    );
    Ok(dir)
}

fn prerequisites(test: &str) -> bool {
    require_root(test)
        && require_program(test, "qemu-system-x86_64")
        && std::path::Path::new("/usr/lib/ipxe/undionly.kpxe").exists()
}

fn master_config(lab: &BootLab, transfer: &str) -> String {
    format!(
        "[network]\ninterface = \"{}\"\naddress = \"{}\"\nprefix_len = {}\n[boot]\ntransfer = \"{transfer}\"\ncmdline = \"console=ttyS0\"\n",
        lab.bridge, lab.addr, lab.prefix_len
    )
}

/// A boot lab with a master serving the built image, kernel and initramfs over `transfer`.
fn lab_with_master(transfer: &str) -> Result<(BootLab, Master)> {
    let lab = BootLab::new()?;
    let mut master = Master::prepare(
        &master_config(&lab, transfer),
        Some(&boot_dir()?),
        &format!("http://{}:8080", lab.addr),
    )?;
    master.start(&lab.ns)?;
    Ok((lab, master))
}

fn node_json(master: &Master, mac: &str) -> Option<serde_json::Value> {
    let list = master.cli_json(&["node", "list"]).ok()?;
    list.as_array()?.iter().find(|n| n["mac"] == mac).cloned()
}

/// Waits for the console line and for the master to have seen the node online.
fn wait_online(
    node: &mut cm_tests::qemu::QemuNode,
    master: &Master,
    what: &str,
) -> Result<Duration> {
    let t = node.wait_for_console(ONLINE, BOOT_TIMEOUT).map_err(|e| {
        anyhow::anyhow!(
            "{what}: {e}\n--- master log ---\n{}",
            tail(&master.log_text(), 40)
        )
    })?;
    eprintln!("{what}: power-on to online in {:.1}s", t.as_secs_f64());
    Ok(t)
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every stage of a boot. `boot-file-sent` is not among them: QEMU's NIC ROM is iPXE already,
/// so it goes straight to its script (the DHCP server sees it is iPXE and sends no loader).
fn all_stages(node: &serde_json::Value) -> bool {
    [
        "offered",
        "bound",
        "script-sent",
        "kernel-sent",
        "initrd-sent",
        "online",
    ]
    .iter()
    .all(|s| node["stages"].get(s).is_some())
}

#[test]
fn unknown_bios_node_boots_over_http_is_discovered_and_comes_back_with_its_reservation(
) -> Result<()> {
    let test = "bios http + discovery";
    if !prerequisites(test) {
        return Ok(());
    }
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let (lab, master) = lab_with_master("http")?;
    let mac = "52:54:00:c1:00:01";

    // First boot: unknown, so it boots the default image from the pool and shows up as discovered.
    let mut node = lab.boot(&NodeOptions::new(mac, Boot::BiosPxe))?;
    wait_online(&mut node, &master, "BIOS/HTTP unknown node")?;
    let found = wait_for(
        "the node in `node discovered`",
        Duration::from_secs(10),
        || {
            let d = master.cli_json(&["node", "discovered"]).ok()?;
            d.as_array()?.iter().find(|x| x["mac"] == mac).cloned()
        },
    )?;
    assert_eq!(found["arch"], "bios", "{found}");
    drop(node);

    // Added with a name and an address: the next boot uses both.
    master.cli(&[
        "node",
        "add",
        "render01",
        "--mac",
        mac,
        "--ip",
        "10.99.0.77",
    ])?;
    let start = Instant::now();
    let mut node = lab.boot(&NodeOptions::new(mac, Boot::BiosPxe))?;
    wait_online(&mut node, &master, "BIOS/HTTP registered node")?;
    let seen = wait_for(
        "node list to show render01 online with every stage",
        Duration::from_secs(15),
        || {
            let n = node_json(&master, mac)?;
            (n["stage"] == "online" && all_stages(&n) && n["online"]["ip"] == "10.99.0.77")
                .then_some(n)
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}\n{}", tail(&master.log_text(), 40)))?;
    assert_eq!(seen["name"], "render01");
    assert_eq!(seen["online"]["hostname"], "render01", "{seen}");
    let console = node.console();
    assert!(
        console.contains("10.99.0.77"),
        "the node's console does not show its reserved address"
    );
    let text = String::from_utf8(master.cli(&["node", "list"])?.stdout)?;
    assert!(
        text.contains("render01") && text.contains("online") && text.contains("kernel-sent"),
        "{text}"
    );
    eprintln!(
        "registered node: node list after {:.1}s:\n{text}",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn bios_node_boots_with_everything_over_tftp() -> Result<()> {
    let test = "bios tftp only";
    if !prerequisites(test) {
        return Ok(());
    }
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let (lab, master) = lab_with_master("tftp")?;
    let mac = "52:54:00:c1:00:02";
    master.cli(&["node", "add", "tftp01", "--mac", mac])?;
    let mut node = lab.boot(&NodeOptions::new(mac, Boot::BiosPxe))?;
    wait_online(&mut node, &master, "BIOS/TFTP")?;
    let n = wait_for("every stage", Duration::from_secs(15), || {
        node_json(&master, mac).filter(all_stages)
    })?;
    assert_eq!(n["stage"], "online");
    // Nothing but the online report went over HTTP: the kernel came by TFTP.
    let log = master.log_text();
    assert!(
        log.contains("path=images/default/vmlinuz"),
        "kernel not sent over TFTP:\n{}",
        tail(&log, 30)
    );
    assert!(
        log.contains("path=boot/52-54-00-c1-00-02.ipxe"),
        "script not sent over TFTP"
    );
    Ok(())
}

#[test]
fn uefi_node_boots_over_http() -> Result<()> {
    let test = "uefi";
    if !prerequisites(test) || !std::path::Path::new(cm_tests::qemu::OVMF_CODE).exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: OVMF firmware missing; .ci/run must install the `ovmf` package");
        }
        return Ok(());
    }
    let _vm = VM.lock().unwrap_or_else(|e| e.into_inner());
    let (lab, master) = lab_with_master("http")?;
    let mac = "52:54:00:c1:00:03";
    master.cli(&["node", "add", "uefi01", "--mac", mac])?;
    let mut node = lab.boot(&NodeOptions::new(mac, Boot::UefiPxe { native_pxe: false }))?;
    wait_online(&mut node, &master, "UEFI/HTTP")?;
    let n = wait_for("online in node list", Duration::from_secs(15), || {
        node_json(&master, mac).filter(|n| n["stage"] == "online")
    })?;
    assert_eq!(n["online"]["hostname"], "uefi01");
    Ok(())
}
