//! TFTP: the time to fetch a 14 MB file (the Debian cloud kernel when cached, else 14 MiB of
//! random data), with 1 client and with 20 at once, from tftpd-hpa, dnsmasq, atftpd and ours.
//!
//! Everything runs inside one private network namespace on its loopback (127.0.0.1:69), one
//! server at a time. Clients: curl at blksize 1468 (no windowsize), tftp-hpa (512 only) and
//! atftp at blksize 1468 + windowsize 16 — the last only against the servers that negotiate
//! windowsize (atftpd and ours; tftpd-hpa 5.2 and dnsmasq 2.90 do not). Each download is
//! checked against the file's blake3.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::ours::Config as OursConfig;
use super::report::{Better, Measure, Row, Section};
use super::sys::{self, Netns, Payload, Server, TempDir};
use super::Ctx;

/// The path every server serves the payload under (relative to its root).
pub const FILE: &str = "images/bench/vmlinuz";
const PROBE: &str = "probe.txt";
/// The HTTP port of `clustermaker serve` in the TFTP and HTTP benchmarks (it serves both).
pub const OURS_HTTP_PORT: u16 = 18080;
const PROBE_TEXT: &[u8] = b"clustermaker bench probe\n";

/// A TFTP server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TftpServer {
    TftpdHpa,
    Dnsmasq,
    Atftpd,
    Ours,
}

impl TftpServer {
    pub fn name(self) -> &'static str {
        match self {
            TftpServer::TftpdHpa => "tftpd-hpa",
            TftpServer::Dnsmasq => "dnsmasq",
            TftpServer::Atftpd => "atftpd",
            TftpServer::Ours => "clustermaker",
        }
    }

    /// Negotiates RFC 7440 windowsize.
    pub fn windowsize(self) -> bool {
        matches!(self, TftpServer::Atftpd | TftpServer::Ours)
    }
}

/// A TFTP client and its settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TftpClient {
    /// curl --tftp-blksize 1468.
    Curl1468,
    /// tftp-hpa, 512-byte blocks (it has no blksize option).
    Hpa512,
    /// atftp --option "blksize 1468" --option "windowsize 16".
    AtftpW16,
}

impl TftpClient {
    pub fn label(self) -> &'static str {
        match self {
            TftpClient::Curl1468 => "curl blksize 1468",
            TftpClient::Hpa512 => "tftp-hpa blksize 512",
            TftpClient::AtftpW16 => "atftp blksize 1468 windowsize 16",
        }
    }

    /// The command fetching `remote` from `ip`:69 into `out`, inside `ns`.
    pub fn command(self, ns: &Netns, ip: Ipv4Addr, remote: &str, out: &Path) -> Command {
        match self {
            TftpClient::Curl1468 => {
                let mut c = ns.command("curl");
                c.args(["-sS", "--max-time", "120", "--tftp-blksize", "1468", "-o"])
                    .arg(out)
                    .arg(format!("tftp://{ip}/{remote}"));
                c
            }
            TftpClient::Hpa512 => {
                let mut c = ns.command("tftp");
                c.arg(ip.to_string())
                    .args(["-m", "binary", "-c", "get", remote])
                    .arg(out);
                c
            }
            TftpClient::AtftpW16 => {
                let mut c = ns.command("atftp");
                c.args([
                    "--option",
                    "blksize 1468",
                    "--option",
                    "windowsize 16",
                    "-g",
                    "-r",
                    remote,
                    "-l",
                ])
                .arg(out)
                .arg(ip.to_string())
                .arg("69");
                c
            }
        }
    }
}

/// Paths of the anchors' programs, found (or fetched) once.
pub struct TftpTools {
    pub in_tftpd: PathBuf,
    pub dnsmasq: PathBuf,
    pub atftpd: PathBuf,
}

impl TftpTools {
    pub fn find(ctx: &Ctx) -> Result<TftpTools> {
        for (p, pkg) in [("curl", "curl"), ("tftp", "tftp-hpa"), ("atftp", "atftp")] {
            sys::require_program(p, pkg)?;
        }
        Ok(TftpTools {
            in_tftpd: sys::require_program("in.tftpd", "tftpd-hpa")?,
            dnsmasq: sys::require_program("dnsmasq", "dnsmasq-base")?,
            atftpd: super::deb::program(&ctx.cache, "atftpd", "usr/sbin/atftpd").context(
                "atftpd (run from its unpacked .deb: it conflicts with tftpd-hpa as a package)",
            )?,
        })
    }

    pub fn versions(&self, into: &mut BTreeMap<String, String>) {
        into.insert(
            "tftpd-hpa".into(),
            sys::version_line(&self.in_tftpd, &["-V"]),
        );
        into.insert(
            "dnsmasq".into(),
            sys::version_line(&self.dnsmasq, &["--version"]),
        );
        into.insert(
            "atftpd".into(),
            sys::version_line(&self.atftpd, &["--version"]),
        );
        if let Some(p) = sys::find_program("curl") {
            into.insert("curl".into(), sys::version_line(&p, &["--version"]));
        }
        if let Some(p) = sys::find_program("atftp") {
            into.insert("atftp".into(), sys::version_line(&p, &["--version"]));
        }
        if let Some(p) = sys::find_program("tftp") {
            into.insert("tftp".into(), sys::version_line(&p, &["-V"]));
        }
    }
}

/// Starts `which` serving `root` on `ip`:69 inside `ns`, and waits until it answers a fetch of
/// the probe file. `scratch` holds its logs (and ours its configuration).
pub fn start_server(
    ctx: &Ctx,
    tools: &TftpTools,
    which: TftpServer,
    ns: &Netns,
    ip: Ipv4Addr,
    root: &Path,
    scratch: &Path,
) -> Result<Server> {
    sys::write_readable(&root.join(PROBE), PROBE_TEXT)?;
    let log = scratch.join(format!("{}.log", which.name()));
    let mut server = match which {
        TftpServer::TftpdHpa => {
            let mut c = ns.command(&tools.in_tftpd);
            // -L: stay in the foreground; -s: chroot to the root (Debian's default setup).
            c.arg("-L")
                .arg("-s")
                .arg(root)
                .arg("-a")
                .arg(format!("{ip}:69"));
            Server::spawn("tftpd-hpa", c, &log)?
        }
        TftpServer::Dnsmasq => {
            let mut c = ns.command(&tools.dnsmasq);
            c.args([
                "-k",
                "--conf-file=/dev/null",
                "--port=0",
                "--enable-tftp",
                "--bind-interfaces",
            ])
            .arg(format!("--listen-address={ip}"))
            .arg(format!("--tftp-root={}", root.display()))
            .arg(format!(
                "--pid-file={}",
                scratch.join("dnsmasq-tftp.pid").display()
            ))
            .arg(format!(
                "--log-facility={}",
                scratch.join("dnsmasq-tftp.syslog").display()
            ));
            Server::spawn("dnsmasq (TFTP)", c, &log)?
        }
        TftpServer::Atftpd => {
            let mut c = ns.command(&tools.atftpd);
            c.args(["--daemon", "--no-fork", "--port", "69", "--bind-address"])
                .arg(ip.to_string())
                .arg("--logfile")
                .arg(scratch.join("atftpd.syslog"))
                .arg(root);
            Server::spawn("atftpd", c, &log)?
        }
        TftpServer::Ours => start_ours_tftp(ctx, ns, "lo", ip, root, scratch)?
            .ok_or_else(|| anyhow::anyhow!("our TFTP server is not available"))?,
    };
    let probe_out = scratch.join("probe.out");
    let ready = sys::wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        server.check_running()?;
        let _ = std::fs::remove_file(&probe_out);
        let mut c = ns.command("curl");
        c.args(["-sS", "--max-time", "1", "-o"])
            .arg(&probe_out)
            .arg(format!("tftp://{ip}/{PROBE}"));
        sys::run_one(c, &scratch.join("probe.log"), Duration::from_secs(5))?;
        if std::fs::read(&probe_out)? != PROBE_TEXT {
            bail!("the probe file came back different");
        }
        Ok(())
    });
    if let Err(e) = ready {
        server.check_running()?;
        return Err(server.not_serving(&format!(
            "does not serve TFTP on {ip}:69 after 10 s ({e:#})"
        )));
    }
    Ok(server)
}

/// A namespace for loopback TFTP: besides 127.0.0.1 its `lo` carries 10.213.0.1/32, because
/// tftpd-hpa resolves its `-a` address with AI_ADDRCONFIG and exits (code 66) on a host whose
/// only IPv4 address is a loopback one. Traffic still never leaves `lo`.
pub fn tftp_netns() -> Result<Netns> {
    let ns = Netns::new()?;
    ns.ip(&["addr", "add", "10.213.0.1/32", "dev", "lo"])?;
    Ok(ns)
}

/// The `[tftp]` section we give `clustermaker serve` (best knowledge of the format while
/// netboot::tftp is wired into the appliance).
/// DHCP stays on (idle: nothing in the namespace asks for an address). `mode = "off"` would be
/// the tidy choice, but with it `clustermaker serve` (as of this writing) exits at once with
/// status 0: its DHCP task returns Ok and `serve` stops when any task ends.
pub fn ours_tftp_section(root: &Path) -> String {
    format!("[tftp]\nroot = {:?}\n", root.display().to_string())
}

/// Starts our TFTP server (`clustermaker serve` with a `[tftp]` section) in `ns` serving `root`
/// on `ip`:69. `Ok(None)`: this clustermaker has no TFTP server yet.
pub fn start_ours_tftp(
    ctx: &Ctx,
    ns: &Netns,
    iface: &str,
    ip: Ipv4Addr,
    root: &Path,
    scratch: &Path,
) -> Result<Option<Server>> {
    let ours = ctx.ours();
    let mut cfg = OursConfig::new(&scratch.join("state"), iface, ip, &root.join("images"));
    cfg.http_port = OURS_HTTP_PORT;
    cfg.extra = ours_tftp_section(root);
    ours.start(ns, &cfg, scratch, "tftp")
}

/// Whether ours has a TFTP server; `Err(why)` when not.
pub fn ours_tftp_available(ctx: &Ctx) -> std::result::Result<(), String> {
    let ours = ctx.ours();
    if let Err(e) = ours.bin() {
        return Err(format!("{e:#}"));
    }
    let dir = TempDir::new("tftpcheck", false).map_err(|e| e.to_string())?;
    let mut cfg = OursConfig::new(
        &dir.join("state"),
        "lo",
        Ipv4Addr::LOCALHOST,
        &dir.join("images"),
    );
    cfg.extra = ours_tftp_section(&dir.path);
    let path = cfg.write(&dir.join("c.toml")).map_err(|e| e.to_string())?;
    match ours.check_config(&path) {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(format!(
            "clustermaker has no TFTP server yet (its configuration refuses `[tftp]`: {})",
            why.lines().next().unwrap_or("")
        )),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// The 14 MB file: the cached Debian cloud kernel, else 14 MiB of random data.
pub fn kernel_payload(ctx: &Ctx, dest: &Path) -> Result<Payload> {
    if let Some(k) = ctx.find_kernel() {
        std::fs::copy(&k, dest).with_context(|| format!("cannot copy {}", k.display()))?;
        sys::write_readable(dest, &std::fs::read(dest)?)?;
        let name = k
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        return Payload::from_file(dest, format!("Debian cloud kernel {name}"));
    }
    Payload::random(dest, 14 << 20, 0x005e_ed14)
}

/// Fetches per round: a single fetch takes a fraction of a second and is noisy on a shared
/// machine, so it is repeated (every repetition is a sample); 20 at once run once.
pub fn reps(parallel: usize) -> usize {
    if parallel == 1 {
        3
    } else {
        1
    }
}

struct Workload {
    client: TftpClient,
    parallel: usize,
}

impl Workload {
    fn label(&self, size: &str) -> String {
        if self.parallel == 1 {
            format!("{size}, 1 client, {}", self.client.label())
        } else {
            format!(
                "{size}, {} clients at once (total), {}",
                self.parallel,
                self.client.label()
            )
        }
    }

    fn applies(&self, server: TftpServer) -> bool {
        self.client != TftpClient::AtftpW16 || server.windowsize()
    }
}

/// Runs `n` clients at once fetching `remote` and checks every download. Returns the wall
/// time from the first start to the last exit, in seconds.
#[allow(clippy::too_many_arguments)]
pub fn fetch_parallel(
    ns: &Netns,
    client: TftpClient,
    ip: Ipv4Addr,
    remote: &str,
    payload: &Payload,
    n: usize,
    outdir: &Path,
    who: &str,
) -> Result<f64> {
    let mut cmds = Vec::with_capacity(n);
    let mut outs = Vec::with_capacity(n);
    for i in 0..n {
        let out = outdir.join(format!("dl{i}"));
        let _ = std::fs::remove_file(&out);
        cmds.push((
            client.command(ns, ip, remote, &out),
            outdir.join(format!("dl{i}.log")),
        ));
        outs.push(out);
    }
    let timeout = Duration::from_secs(if n == 1 { 60 } else { 180 });
    let (wall, runs) = sys::run_clients(cmds, timeout)
        .with_context(|| format!("{who}: {} × {}", n, client.label()))?;
    sys::check_success(&runs).with_context(|| format!("{who}: {}", client.label()))?;
    for out in &outs {
        sys::verify_download(out, payload, &format!("{who} with {}", client.label()))?;
        let _ = std::fs::remove_file(out);
    }
    Ok(wall.as_secs_f64())
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let mut section = Section::new("tftp");
    let tools = TftpTools::find(ctx)?;
    tools.versions(&mut section.tools);
    let ours_ok = ours_tftp_available(ctx);
    if let Err(why) = &ours_ok {
        ctx.progress.line(format!("tftp: ours not measured: {why}"));
        section.notes.push(format!("ours: {why}"));
    } else {
        section
            .tools
            .insert("clustermaker".into(), ctx.ours().version());
    }

    let dir = TempDir::new("tftp", false)?;
    let root = dir.join("root");
    sys::mkdir_readable(&root.join("images/bench"))?;
    let payload = kernel_payload(ctx, &root.join(FILE))?;
    let size = format!("{:.1} MB file", payload.len as f64 / 1e6);
    let outdir = dir.join("out");
    std::fs::create_dir_all(&outdir)?;
    let ns = tftp_netns()?;
    let ip = Ipv4Addr::LOCALHOST;

    let workloads = [
        Workload {
            client: TftpClient::Curl1468,
            parallel: 1,
        },
        Workload {
            client: TftpClient::Hpa512,
            parallel: 1,
        },
        Workload {
            client: TftpClient::AtftpW16,
            parallel: 1,
        },
        Workload {
            client: TftpClient::Curl1468,
            parallel: 20,
        },
        Workload {
            client: TftpClient::AtftpW16,
            parallel: 20,
        },
    ];
    let mut servers = vec![
        TftpServer::TftpdHpa,
        TftpServer::Dnsmasq,
        TftpServer::Atftpd,
    ];
    if ours_ok.is_ok() {
        servers.push(TftpServer::Ours);
    }
    let mut samples: BTreeMap<(usize, TftpServer), Vec<f64>> = BTreeMap::new();
    let rounds = ctx.rounds;
    for round in 0..rounds {
        let order = super::round_order(&servers, round);
        for &server in &order {
            ctx.progress.set(format!(
                "tftp round {}/{rounds}: starting {}",
                round + 1,
                server.name()
            ));
            let scratch = TempDir::new(&format!("tftp-{}", server.name()), false)?;
            let srv = start_server(ctx, &tools, server, &ns, ip, &root, &scratch.path)?;
            // Warm-up, untimed: page cache, first-request paths; checked like every fetch.
            fetch_parallel(
                &ns,
                TftpClient::Curl1468,
                ip,
                FILE,
                &payload,
                1,
                &outdir,
                server.name(),
            )?;
            for (w, workload) in workloads.iter().enumerate() {
                if !workload.applies(server) {
                    continue;
                }
                ctx.progress.set(format!(
                    "tftp round {}/{rounds}: {} — {}",
                    round + 1,
                    server.name(),
                    workload.label(&size)
                ));
                for _ in 0..reps(workload.parallel) {
                    let secs = fetch_parallel(
                        &ns,
                        workload.client,
                        ip,
                        FILE,
                        &payload,
                        workload.parallel,
                        &outdir,
                        server.name(),
                    )?;
                    samples.entry((w, server)).or_default().push(secs);
                }
            }
            srv.stop(Duration::from_secs(3));
        }
    }

    for (w, workload) in workloads.iter().enumerate() {
        for &anchor in &[
            TftpServer::TftpdHpa,
            TftpServer::Dnsmasq,
            TftpServer::Atftpd,
        ] {
            if !workload.applies(anchor) {
                continue;
            }
            let a = Measure::new(
                anchor.name(),
                samples.get(&(w, anchor)).map(Vec::as_slice).unwrap_or(&[]),
            );
            let o = match &ours_ok {
                Ok(()) => Measure::new(
                    "clustermaker",
                    samples
                        .get(&(w, TftpServer::Ours))
                        .map(Vec::as_slice)
                        .unwrap_or(&[]),
                ),
                Err(_) => Measure::missing("clustermaker", "not available yet"),
            };
            section
                .rows
                .push(Row::new(workload.label(&size), "s", Better::Lower, a, o));
        }
    }
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Throughput at the medians (MB/s; 20 clients: all bytes of all clients over the total time):\n"
    );
    let _ = writeln!(
        md,
        "| workload | {} |",
        servers
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(md, "| --- |{}", " --- |".repeat(servers.len()));
    for (w, workload) in workloads.iter().enumerate() {
        let cells: Vec<String> = servers
            .iter()
            .map(|s| {
                match samples
                    .get(&(w, *s))
                    .and_then(|v| super::report::Summary::of(v))
                {
                    Some(sum) => format!(
                        "{:.0}",
                        payload.len as f64 * workload.parallel as f64 / sum.median / 1e6
                    ),
                    None => "—".into(),
                }
            })
            .collect();
        let _ = writeln!(md, "| {} | {} |", workload.label(&size), cells.join(" | "));
    }
    section.details_md = md;
    section.method = vec![
        format!("File: {} ({} bytes, blake3 {}…); every download is compared with it.", payload.origin, payload.len, &payload.blake3[..16]),
        "One private network namespace; server and clients on its loopback, 127.0.0.1:69; one server at a time, each started fresh per round, with one untimed warm-up fetch. Single-client fetches run 3 times per round (each a sample), 20-client runs once.".into(),
        "tftpd-hpa: `in.tftpd -L -s ROOT -a 127.0.0.1:69`. dnsmasq: `-k --port=0 --enable-tftp --tftp-root=ROOT --listen-address=127.0.0.1 --bind-interfaces`. atftpd (Debian .deb unpacked, not installed: it conflicts with tftpd-hpa): `--daemon --no-fork --port 69 --bind-address 127.0.0.1 ROOT`. Ours: `clustermaker serve` with a `[tftp]` section, log level warn.".into(),
        "Clients: curl `--tftp-blksize 1468` (curl has no windowsize), tftp-hpa (512-byte blocks only), atftp `--option \"blksize 1468\" --option \"windowsize 16\"` — the last only against servers that negotiate windowsize (atftpd, ours; tftpd-hpa 5.2 and dnsmasq 2.90 do not).".into(),
        "Time: from just before the client process is spawned until it exits (std::time::Instant; exit seen with waitid), so client start-up (~10 ms for curl) is in every figure alike. 20 clients: from the first spawn to the last exit.".into(),
    ];
    section.raw = serde_json::json!({
        "payload": payload,
        "samples_s": samples.iter().map(|((w, s), v)| serde_json::json!({
            "workload": workloads[*w].label(&size), "server": s.name(), "seconds": v
        })).collect::<Vec<_>>(),
    });
    Ok(section)
}
