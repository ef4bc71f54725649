//! PXE power-on to online under QEMU TCG: one BIOS node (QEMU's iPXE option ROM) boots the
//! same kernel and initramfs (target/cm-boot, from `cargo xtask build-image`) from ours and
//! from dnsmasq.
//!
//! - Ours: `clustermaker serve` on the lab bridge with its defaults: DHCP, the iPXE script
//!   over HTTP, kernel and initramfs over HTTP, IPv6 router solicitations answered.
//! - dnsmasq, default setup: the classic dnsmasq + iPXE recipe (DHCP with the ICMP check of
//!   new addresses on, `dhcp-match` on option 175 to hand iPXE a script, everything over TFTP,
//!   no router advertisements: iPXE then waits ~15 s for them after its DHCPACK).
//! - dnsmasq, tuned: the same plus `--no-ping` and router advertisements on the bridge
//!   (`--enable-ra --dhcp-range=::,constructor:br0,ra-only`): what a careful admin gets.
//!
//! "Online" is the moment the node's /init prints `clustermaker-init: network up` (it has its
//! address from the boot server), the same marker for every server; ours also records when
//! the node reported itself to the master (`clustermaker-init: reported online`), which dnsmasq has no
//! counterpart for. The lab (cm-tests' `BootLab`: a namespace with bridge br0 at
//! 10.99.0.1/24 and fd99::1/64) is made fresh for every boot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use cm_tests::qemu::{Boot, BootLab, NodeOptions, QemuNode};

use super::ours::Config as OursConfig;
use super::report::{fmt_summary, Better, Measure, Row, Section, Summary};
use super::sys::{self, AdoptedDir, Netns, Server, TempDir};
use super::Ctx;

const MAC: &str = "52:54:00:be:00:01";
const CIDR4: &str = "10.99.0.1/24";
const CIDR6: &str = "fd99::1/64";
const HTTP_PORT: u16 = 8080;
const CMDLINE: &str = "console=ttyS0 quiet";
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// Console markers, in boot order, and what they mean. (iPXE writes nothing to the serial
/// console with QEMU's ROM, and `quiet` silences the kernel, so the first marker is /init's.)
const MARKERS: &[(&str, &str)] = &[
    ("clustermaker-init: starting", "initramfs /init started"),
    ("clustermaker-init: network up", "network up (online)"),
    (
        "clustermaker-init: reported online",
        "reported to the master (ours only)",
    ),
];
const ONLINE: usize = 1;
const REPORTED: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Variant {
    Ours,
    DnsmasqDefault,
    DnsmasqTuned,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Ours => "clustermaker",
            Variant::DnsmasqDefault => "dnsmasq (default setup)",
            Variant::DnsmasqTuned => "dnsmasq (--no-ping, RA)",
        }
    }
}

/// The boot files: target/cm-boot, built with `cargo xtask build-image` when missing.
pub(super) fn boot_files(ctx: &Ctx) -> Result<PathBuf> {
    let dir = ctx.workspace.join("target/cm-boot");
    if !dir.join("vmlinuz").is_file() || !dir.join("initramfs.img").is_file() {
        ctx.progress
            .set("boot: building the boot files (cargo xtask build-image)");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        sys::run_cmd(
            std::process::Command::new(cargo)
                .args(["xtask", "build-image"])
                .current_dir(&ctx.workspace),
        )
        .context("cargo xtask build-image (the node's kernel and initramfs)")?;
    }
    for f in ["vmlinuz", "initramfs.img"] {
        if !dir.join(f).is_file() {
            bail!(
                "{} is missing after cargo xtask build-image",
                dir.join(f).display()
            );
        }
    }
    Ok(dir)
}

/// Copies kernel and initramfs into `dest` (world-readable: dnsmasq's TFTP drops privileges).
fn copy_boot_files(from: &Path, dest: &Path) -> Result<()> {
    sys::mkdir_readable(dest)?;
    for f in ["vmlinuz", "initramfs.img"] {
        let data = std::fs::read(from.join(f))
            .with_context(|| format!("cannot read {}", from.join(f).display()))?;
        sys::write_readable(&dest.join(f), &data)?;
    }
    Ok(())
}

fn start_ours(
    ctx: &Ctx,
    ns: &Netns,
    lab: &BootLab,
    files: &Path,
    scratch: &Path,
) -> Result<Server> {
    let images = scratch.join("images");
    copy_boot_files(files, &images.join("bench"))?;
    let mut cfg = OursConfig::new(&scratch.join("state"), &lab.bridge, lab.addr, &images);
    cfg.prefix_len = Some(lab.prefix_len);
    cfg.http_port = HTTP_PORT;
    cfg.ipv6_ra = true;
    cfg.cmdline = Some(CMDLINE.into());
    let path = cfg.write(&scratch.join("clustermaker.toml"))?;
    if let Some(why) = ctx.ours().check_config(&path)? {
        bail!("clustermaker refuses the boot configuration: {why}");
    }
    let mut server = ctx
        .ours()
        .serve(ns, &path, &scratch.join("clustermaker.log"), &[])?;
    // Ready when its HTTP port answers (DHCP and TFTP start before HTTP in `serve`).
    let url = format!("http://{}:{HTTP_PORT}/api/v1/nodes", lab.addr);
    let r = sys::wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        server.check_running()?;
        let mut c = ns.command("curl");
        c.args(["-sS", "--fail", "--max-time", "1", "-o", "/dev/null", &url]);
        sys::run_one(c, &scratch.join("probe.log"), Duration::from_secs(5))?;
        Ok(())
    });
    r.map_err(|e| server.not_serving(&format!("does not answer {url} after 20 s ({e:#})")))?;
    Ok(server)
}

fn start_dnsmasq(
    ns: &Netns,
    lab: &BootLab,
    files: &Path,
    scratch: &Path,
    tuned: bool,
) -> Result<Server> {
    let dnsmasq = sys::require_program("dnsmasq", "dnsmasq-base")?;
    let root = scratch.join("tftp");
    copy_boot_files(files, &root)?;
    let undionly = Path::new("/usr/lib/ipxe/undionly.kpxe");
    if undionly.is_file() {
        sys::write_readable(&root.join("undionly.kpxe"), &std::fs::read(undionly)?)?;
    }
    let script = format!(
        "#!ipxe\nkernel tftp://{ip}/vmlinuz initrd=initramfs.img {CMDLINE} cm.mac=${{net0/mac}}\n\
         initrd --name initramfs.img tftp://{ip}/initramfs.img\nboot\n",
        ip = lab.addr
    );
    sys::write_readable(&root.join("boot.ipxe"), script.as_bytes())?;
    let net = lab.addr.octets();
    let mut c = ns.command(&dnsmasq);
    c.args([
        "-k",
        "--conf-file=/dev/null",
        "--port=0",
        "--bind-interfaces",
        "--enable-tftp",
    ])
    .arg(format!("--interface={}", lab.bridge))
    .arg(format!(
        "--dhcp-range={}.{}.{}.100,{}.{}.{}.200,12h",
        net[0], net[1], net[2], net[0], net[1], net[2]
    ))
    .arg(format!("--tftp-root={}", root.display()))
    .arg(format!(
        "--dhcp-leasefile={}",
        scratch.join("dnsmasq.leases").display()
    ))
    .arg(format!(
        "--pid-file={}",
        scratch.join("dnsmasq.pid").display()
    ))
    .arg(format!(
        "--log-facility={}",
        scratch.join("dnsmasq.syslog").display()
    ))
    // The classic recipe: plain PXE ROMs chain-load iPXE, iPXE (option 175) gets the script.
    .args([
        "--dhcp-match=set:ipxe,175",
        "--dhcp-boot=tag:!ipxe,undionly.kpxe",
        "--dhcp-boot=tag:ipxe,boot.ipxe",
    ]);
    if tuned {
        c.arg("--no-ping").arg("--enable-ra").arg(format!(
            "--dhcp-range=::,constructor:{},ra-only",
            lab.bridge
        ));
    }
    let mut server = Server::spawn("dnsmasq (boot)", c, &scratch.join("dnsmasq.log"))?;
    std::thread::sleep(Duration::from_millis(300));
    server.check_running()?;
    Ok(server)
}

/// When each console marker first appeared, in seconds since QEMU started; polls the console
/// until `until` (an index into MARKERS) appears.
fn follow(node: &mut QemuNode, until: usize, timeout: Duration) -> Result<Vec<Option<f64>>> {
    let deadline = Instant::now() + timeout;
    let mut seen: Vec<Option<f64>> = vec![None; MARKERS.len()];
    loop {
        let t = node.started.elapsed().as_secs_f64();
        let console = node.console();
        for (i, (needle, _)) in MARKERS.iter().enumerate() {
            if seen[i].is_none() && console.contains(needle) {
                seen[i] = Some(t);
            }
        }
        if seen[until].is_some() {
            return Ok(seen);
        }
        if console.contains("clustermaker-init: network failed") {
            bail!(
                "the node found no DHCP lease in its initramfs\n{}",
                node.post_mortem()
            );
        }
        if !node.is_running() {
            bail!(
                "QEMU exited before `{}`\n{}",
                MARKERS[until].0,
                node.post_mortem()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "no `{}` within {timeout:?}\n{}",
                MARKERS[until].0,
                node.post_mortem()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let mut section = Section::new("boot");
    let qemu = sys::require_program("qemu-system-x86_64", "qemu-system-x86")?;
    if !Path::new("/usr/lib/ipxe").is_dir() {
        bail!("/usr/lib/ipxe is missing (fix: apt-get install -y ipxe ipxe-qemu)");
    }
    section
        .tools
        .insert("qemu".into(), sys::version_line(&qemu, &["--version"]));
    if let Some(d) = sys::find_program("dnsmasq") {
        section
            .tools
            .insert("dnsmasq".into(), sys::version_line(&d, &["--version"]));
    }
    ctx.ours().bin()?;
    section
        .tools
        .insert("clustermaker".into(), ctx.ours().version());
    // A private copy: target/cm-boot may be rebuilt by someone else while we boot from it.
    let files_dir = TempDir::new("boot-files", false)?;
    copy_boot_files(&boot_files(ctx)?, &files_dir.path)?;
    let files = files_dir.path.clone();

    let variants = [
        Variant::Ours,
        Variant::DnsmasqDefault,
        Variant::DnsmasqTuned,
    ];
    let rounds = ctx.long_rounds;
    let mut times: Vec<(Variant, Vec<Option<f64>>)> = Vec::new();
    for round in 0..rounds {
        for variant in super::round_order(&variants, round) {
            let what = format!("boot round {}/{rounds}: {}", round + 1, variant.name());
            ctx.progress.set(format!("{what}: lab and server"));
            let lab = BootLab::with_addresses(CIDR4, CIDR6)?;
            let ns = Netns::adopt(&lab.ns.name)?;
            let scratch = TempDir::new("boot", false)?;
            let server = match variant {
                Variant::Ours => start_ours(ctx, &ns, &lab, &files, &scratch.path)?,
                Variant::DnsmasqDefault => start_dnsmasq(&ns, &lab, &files, &scratch.path, false)?,
                Variant::DnsmasqTuned => start_dnsmasq(&ns, &lab, &files, &scratch.path, true)?,
            };
            ctx.progress.set(format!("{what}: node booting (QEMU TCG)"));
            let mut node = lab.boot(&NodeOptions::new(MAC, Boot::BiosPxe))?;
            let _node_dir = AdoptedDir::new(node.dir());
            let until = if variant == Variant::Ours {
                REPORTED
            } else {
                ONLINE
            };
            let seen = follow(&mut node, until, BOOT_TIMEOUT).with_context(|| {
                format!("{what} (server log: {})", sys::tail(&server.log, 2000))
            })?;
            ctx.progress.line(format!(
                "  {what}: online {:.1} s after power-on",
                seen[ONLINE].unwrap_or(f64::NAN)
            ));
            times.push((variant, seen));
            drop(node);
            server.stop(Duration::from_secs(3));
            drop(ns);
            drop(lab);
        }
    }

    let series = |v: Variant, marker: usize| -> Vec<f64> {
        times
            .iter()
            .filter(|(x, _)| *x == v)
            .filter_map(|(_, s)| s[marker])
            .collect()
    };
    for anchor in [Variant::DnsmasqDefault, Variant::DnsmasqTuned] {
        section.rows.push(Row::new(
            "BIOS PXE boot, power-on to node network up (QEMU TCG)",
            "s",
            Better::Lower,
            Measure::new(anchor.name(), &series(anchor, ONLINE)),
            Measure::new("clustermaker", &series(Variant::Ours, ONLINE)),
        ));
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Seconds after power-on when each console marker first appeared (median [min–max]):\n"
    );
    let _ = writeln!(
        md,
        "| server | {} |",
        MARKERS
            .iter()
            .map(|(_, m)| *m)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(md, "| --- |{}", " --- |".repeat(MARKERS.len()));
    for v in variants {
        let cells: Vec<String> = (0..MARKERS.len())
            .map(|i| {
                Summary::of(&series(v, i))
                    .map(|s| fmt_summary(&s, "s"))
                    .unwrap_or_else(|| "—".into())
            })
            .collect();
        let _ = writeln!(md, "| {} | {} |", v.name(), cells.join(" | "));
    }
    section.details_md = md;
    section.method = vec![
        format!("Node: QEMU `-accel tcg`, 512 MiB, virtio-net with QEMU's iPXE option ROM (BIOS), MAC {MAC}; the same kernel and initramfs (`target/cm-boot`, from `cargo xtask build-image`) and kernel command line `{CMDLINE}` for every server. A new lab namespace (bridge br0 {CIDR4}, {CIDR6}) per boot."),
        "Ours: `clustermaker serve` with its defaults (DHCP, iPXE script and kernel + initramfs over HTTP, IPv6 router solicitations answered).".into(),
        "dnsmasq (default setup): the classic recipe `--dhcp-range=…,12h --enable-tftp --dhcp-match=set:ipxe,175 --dhcp-boot=tag:!ipxe,undionly.kpxe --dhcp-boot=tag:ipxe,boot.ipxe`, the script loading kernel and initramfs over TFTP. dnsmasq's defaults ICMP-probe each new address (~3 s) and send no router advertisements, so iPXE waits ~15 s for them after its DHCPACK.".into(),
        "dnsmasq (--no-ping, RA): the same plus `--no-ping --enable-ra --dhcp-range=::,constructor:br0,ra-only` — dnsmasq at its best for this job.".into(),
        "Online = the node's /init prints `clustermaker-init: network up` (it holds its lease): the same marker for every server. Console polled every 50 ms.".into(),
    ];
    section.raw = serde_json::json!(times
        .iter()
        .map(|(v, s)| serde_json::json!({
            "server": v.name(),
            "markers": MARKERS.iter().zip(s).map(|((m, _), t)| serde_json::json!({"marker": m, "s": t})).collect::<Vec<_>>(),
        }))
        .collect::<Vec<_>>());
    Ok(section)
}
