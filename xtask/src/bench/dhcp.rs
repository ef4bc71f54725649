//! DHCP: full DORA exchanges per second, measured with Kea's `perfdhcp` against dnsmasq, Kea
//! (`kea-dhcp4`) and ours, at 1,000 and 10,000 simulated clients.
//!
//! Lab: a server namespace and a client namespace joined by a veth pair (10.77.0.1/16 and
//! 10.77.0.2/16), made fresh for every server start so nothing of one run (a lease table, a
//! stray process) reaches the next. perfdhcp always acts as a relay: it sends from port 67
//! with giaddr = its own address (10.77.0.2), so every server is configured with the subnet
//! 10.77.0.0/16 that contains it (pool 10.77.1.0–10.77.250.255, 64,000 addresses) and Kea uses
//! `"dhcp-socket-type": "raw"`. Lease files live on a real disk, not tmpfs.
//!
//! Peak: perfdhcp offers exchanges at a fixed rate for a few seconds; the rate starts at 500/s
//! and doubles while the server completes at least 90 % of what is offered, then one step
//! halfway between the last two rates; the peak is the highest completed rate of that ladder
//! (perfdhcp's "Rate: … 4-way exchanges/second"). perfdhcp shares the machine's cores with
//! the server, for every server alike.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use super::ours::Config as OursConfig;
use super::report::{fmt_num, Better, Measure, Row, Section, Summary};
use super::sys::{self, Netns, Server, TempDir};
use super::Ctx;

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const CLIENT_CIDR: &str = "10.77.0.2/16";
const SERVER_CIDR: &str = "10.77.0.1/16";
const SUBNET: &str = "10.77.0.0/16";
const PREFIX: u8 = 16;
const POOL_START: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 0);
const POOL_END: Ipv4Addr = Ipv4Addr::new(10, 77, 250, 255);
const LEASE_SECS: u32 = 3600;
const START_RATE: u32 = 500;
const MAX_RATE: u32 = 64_000;
const MAX_STEPS: usize = 9;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
enum DhcpServer {
    Dnsmasq,
    Kea,
    /// `clustermaker serve`, leases fdatasync'ed before each ACK (the default).
    Ours,
    /// Ours with `fsync = false`, to show what durability costs (details only).
    OursNoFsync,
}

impl DhcpServer {
    fn name(self) -> &'static str {
        match self {
            DhcpServer::Dnsmasq => "dnsmasq",
            DhcpServer::Kea => "Kea",
            DhcpServer::Ours => "clustermaker",
            DhcpServer::OursNoFsync => "clustermaker fsync=false",
        }
    }
}

/// The two namespaces and the veth between them.
struct Lab {
    server: Netns,
    client: Netns,
    server_if: String,
    perfdhcp: PathBuf,
}

impl Lab {
    fn new(perfdhcp: &Path) -> Result<Lab> {
        let server = Netns::new()?;
        let client = Netns::new()?;
        let (server_if, _) = sys::veth(&server, SERVER_CIDR, &client, CLIENT_CIDR)?;
        Ok(Lab {
            server,
            client,
            server_if,
            perfdhcp: perfdhcp.to_path_buf(),
        })
    }
}

/// perfdhcp's figures for one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PerfResult {
    pub offered_rate: u32,
    pub clients: u32,
    pub period_s: u32,
    /// Completed 4-way exchanges per second ("Rate:").
    pub dora_per_s: f64,
    pub discover_sent: u64,
    pub offer_received: u64,
    pub request_sent: u64,
    pub ack_received: u64,
}

impl PerfResult {
    /// Share of DISCOVERs that did not end with an ACK.
    pub fn drop_ratio(&self) -> f64 {
        if self.discover_sent == 0 {
            return 1.0;
        }
        1.0 - self.ack_received as f64 / self.discover_sent as f64
    }
}

/// Parses perfdhcp's final report.
pub fn parse_perfdhcp(text: &str) -> Result<PerfResult> {
    let mut r = PerfResult::default();
    let mut section = "";
    let mut rate = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(s) = line.strip_prefix("***Statistics for: ") {
            section = s.trim_end_matches('*').trim();
            continue;
        }
        if let Some(v) = line.strip_prefix("Rate:") {
            rate = v
                .split_whitespace()
                .next()
                .and_then(|x| x.parse::<f64>().ok());
            continue;
        }
        let num = |prefix: &str| -> Option<u64> {
            line.strip_prefix(prefix)
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        match section {
            "DISCOVER-OFFER" => {
                if let Some(v) = num("sent packets:") {
                    r.discover_sent = v;
                } else if let Some(v) = num("received packets:") {
                    r.offer_received = v;
                }
            }
            "REQUEST-ACK" => {
                if let Some(v) = num("sent packets:") {
                    r.request_sent = v;
                } else if let Some(v) = num("received packets:") {
                    r.ack_received = v;
                }
            }
            _ => {}
        }
    }
    r.dora_per_s = rate.ok_or_else(|| anyhow!("no `Rate:` line in perfdhcp's output"))?;
    if r.discover_sent == 0 {
        bail!("perfdhcp sent no DISCOVER");
    }
    Ok(r)
}

/// Runs perfdhcp in the client namespace: `-r RATE -R CLIENTS -p PERIOD SERVER`.
fn perfdhcp(lab: &Lab, scratch: &Path, rate: u32, clients: u32, period: u32) -> Result<PerfResult> {
    let log = scratch.join(format!("perfdhcp-{rate}-{clients}.out"));
    let mut cmd = lab.client.command(&lab.perfdhcp);
    cmd.args([
        "-4",
        "-r",
        &rate.to_string(),
        "-R",
        &clients.to_string(),
        "-p",
        &period.to_string(),
    ])
    .arg(SERVER_IP.to_string());
    let (_, runs) = sys::run_clients(
        vec![(cmd, log.clone())],
        Duration::from_secs(period as u64 + 30),
    )?;
    // perfdhcp exits non-zero when packets were dropped: the figures are what counts.
    let text = std::fs::read_to_string(&runs[0].log).unwrap_or_default();
    let mut r = parse_perfdhcp(&text)
        .with_context(|| format!("perfdhcp output:\n{}", sys::tail(&log, 2000)))?;
    r.offered_rate = rate;
    r.clients = clients;
    r.period_s = period;
    Ok(r)
}

/// Waits until the server completes a DORA exchange (fails after 15 s).
fn wait_ready(lab: &Lab, server: &mut Server, scratch: &Path) -> Result<()> {
    let r = sys::wait_until(Duration::from_secs(15), Duration::from_millis(200), || {
        server.check_running()?;
        let r = perfdhcp(lab, scratch, 20, 1, 1)?;
        if r.ack_received == 0 {
            bail!("no ACK in a 1-second probe");
        }
        Ok(())
    });
    match r {
        Ok(()) => Ok(()),
        Err(e) => Err(server.not_serving(&format!(
            "completed no DHCP exchange with perfdhcp within 15 s ({e:#})"
        ))),
    }
}

/// The rate ladder: the highest completed DORA/s, and every step.
#[derive(Clone, Debug, Serialize)]
struct Ladder {
    steps: Vec<PerfResult>,
}

impl Ladder {
    fn peak(&self) -> &PerfResult {
        self.steps
            .iter()
            .max_by(|a, b| a.dora_per_s.total_cmp(&b.dora_per_s))
            .expect("a ladder has steps")
    }

    /// The highest offered rate completed with less than 1 % of exchanges lost.
    fn clean_rate(&self) -> Option<u32> {
        self.steps
            .iter()
            .filter(|s| s.drop_ratio() < 0.01)
            .map(|s| s.offered_rate)
            .max()
    }
}

fn climb(
    ctx: &Ctx,
    lab: &Lab,
    server: &mut Server,
    scratch: &Path,
    clients: u32,
    period: u32,
    what: &str,
) -> Result<Ladder> {
    let mut steps: Vec<PerfResult> = Vec::new();
    let mut rate = START_RATE;
    let saturated = |r: &PerfResult| r.dora_per_s < 0.9 * r.offered_rate as f64;
    while steps.len() < MAX_STEPS {
        ctx.progress
            .set(format!("{what}: offering {rate} DORA/s for {period} s"));
        let r = perfdhcp(lab, scratch, rate, clients, period)?;
        server.check_running()?;
        let sat = saturated(&r);
        steps.push(r);
        if sat || rate >= MAX_RATE {
            break;
        }
        rate = (rate * 2).min(MAX_RATE);
    }
    // Saturated at the first rate: a slow server may complete more when offered less (less
    // time lost on requests it cannot serve); go down, at most twice.
    if steps.len() == 1 && saturated(&steps[0]) {
        let mut rate = START_RATE / 2;
        for _ in 0..2 {
            ctx.progress
                .set(format!("{what}: offering {rate} DORA/s for {period} s"));
            let r = perfdhcp(lab, scratch, rate, clients, period)?;
            let sat = saturated(&r);
            steps.push(r);
            if !sat {
                break;
            }
            rate /= 2;
        }
        return Ok(Ladder { steps });
    }
    if steps.len() >= 2 && saturated(steps.last().unwrap()) {
        let n = steps.len();
        let mid = (steps[n - 2].offered_rate + steps[n - 1].offered_rate) / 2;
        ctx.progress
            .set(format!("{what}: offering {mid} DORA/s for {period} s"));
        steps.push(perfdhcp(lab, scratch, mid, clients, period)?);
    }
    Ok(Ladder { steps })
}

/// Tools, found once.
struct Tools {
    dnsmasq: PathBuf,
    kea: PathBuf,
}

fn start_dnsmasq(tools: &Tools, lab: &Lab, state: &Path, scratch: &Path) -> Result<Server> {
    let mut c = lab.server.command(&tools.dnsmasq);
    c.args([
        "-k",
        "--conf-file=/dev/null",
        "--port=0",
        "--no-ping",
        "--quiet-dhcp",
        "--dhcp-lease-max=100000",
        "--bind-interfaces",
    ])
    .arg(format!("--interface={}", lab.server_if))
    .arg(format!(
        "--dhcp-range={POOL_START},{POOL_END},255.255.0.0,{LEASE_SECS}"
    ))
    .arg(format!(
        "--dhcp-leasefile={}",
        state.join("dnsmasq.leases").display()
    ))
    .arg(format!(
        "--pid-file={}",
        scratch.join("dnsmasq.pid").display()
    ))
    .arg(format!(
        "--log-facility={}",
        scratch.join("dnsmasq.syslog").display()
    ));
    Server::spawn("dnsmasq (DHCP)", c, &scratch.join("dnsmasq.log"))
}

fn start_kea(tools: &Tools, lab: &Lab, state: &Path, scratch: &Path) -> Result<Server> {
    let config = serde_json::json!({
        "Dhcp4": {
            "interfaces-config": {"interfaces": [lab.server_if], "dhcp-socket-type": "raw"},
            "lease-database": {
                "type": "memfile",
                "persist": true,
                "name": state.join("kea-leases4.csv"),
                "lfc-interval": 0
            },
            "valid-lifetime": LEASE_SECS,
            "subnet4": [{
                "id": 1,
                "subnet": SUBNET,
                "pools": [{"pool": format!("{POOL_START} - {POOL_END}")}]
            }],
            "loggers": [{
                "name": "kea-dhcp4",
                "output_options": [{"output": scratch.join("kea.syslog")}],
                "severity": "WARN"
            }]
        }
    });
    let path = scratch.join("kea-dhcp4.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
    let mut c = lab.server.command(&tools.kea);
    c.arg("-c").arg(&path);
    c.env("KEA_PIDFILE_DIR", scratch)
        .env("KEA_LOCKFILE_DIR", scratch)
        .current_dir(scratch);
    Server::spawn("kea-dhcp4", c, &scratch.join("kea.log"))
}

/// The configuration of our DHCP server for the lab: the appliance's `[network]` on the
/// server's veth end, `[dhcp]` with the lab's subnet and pool. `fsync` false only for the
/// what-does-durability-cost comparison.
pub fn ours_dhcp_config(state: &Path, images: &Path, iface: &str, fsync: bool) -> OursConfig {
    let mut cfg = OursConfig::new(state, iface, SERVER_IP, images);
    cfg.prefix_len = Some(PREFIX);
    cfg.http_port = 18080;
    cfg.extra = format!(
        "[dhcp]\nmode = \"server\"\nfsync = {fsync}\nlease_secs = {LEASE_SECS}\n\n\
         [[dhcp.subnets]]\ncidr = \"{SUBNET}\"\npools = [{{ start = \"{POOL_START}\", end = \"{POOL_END}\" }}]\n"
    );
    cfg
}

/// Starts our DHCP server (`clustermaker serve`) in `ns` on `iface`, leases under `state`.
/// `Ok(None)`: this clustermaker has no DHCP server yet (its configuration refuses `[dhcp]`).
/// The one place to change when the way ours is started changes.
pub fn start_ours_dhcp(
    ctx: &Ctx,
    ns: &Netns,
    iface: &str,
    state: &Path,
    scratch: &Path,
    fsync: bool,
) -> Result<Option<Server>> {
    let ours = ctx.ours();
    let images = scratch.join("images");
    std::fs::create_dir_all(&images)?;
    let cfg = ours_dhcp_config(state, &images, iface, fsync);
    ours.start(ns, &cfg, scratch, "dhcp")
}

fn ours_dhcp_available(ctx: &Ctx) -> std::result::Result<(), String> {
    let ours = ctx.ours();
    ours.bin().map_err(|e| format!("{e:#}"))?;
    let dir = TempDir::new("dhcpcheck", false).map_err(|e| e.to_string())?;
    let cfg = ours_dhcp_config(&dir.join("state"), &dir.join("images"), "lo", true);
    let path = cfg.write(&dir.join("c.toml")).map_err(|e| e.to_string())?;
    match ours.check_config(&path) {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(format!(
            "clustermaker has no DHCP server yet (its configuration refuses `[dhcp]`: {})",
            why.lines().next().unwrap_or("")
        )),
        Err(e) => Err(format!("{e:#}")),
    }
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let m = e.metadata();
            match m {
                Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                Ok(m) => m.len(),
                Err(_) => 0,
            }
        })
        .sum()
}

#[derive(Serialize)]
struct RunRecord {
    server: DhcpServer,
    clients: u32,
    round: usize,
    peak_dora_per_s: f64,
    clean_rate: Option<u32>,
    lease_bytes: u64,
    ladder: Vec<PerfResult>,
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let mut section = Section::new("dhcp");
    let tools = Tools {
        dnsmasq: sys::require_program("dnsmasq", "dnsmasq-base")?,
        kea: sys::require_program("kea-dhcp4", "kea-dhcp4-server")?,
    };
    let perf = sys::require_program("perfdhcp", "kea-admin")?;
    section.tools.insert(
        "dnsmasq".into(),
        sys::version_line(&tools.dnsmasq, &["--version"]),
    );
    section
        .tools
        .insert("kea-dhcp4".into(), sys::version_line(&tools.kea, &["-V"]));
    section
        .tools
        .insert("perfdhcp".into(), sys::version_line(&perf, &["-v"]));

    let ours_ok = ours_dhcp_available(ctx);
    let mut servers = vec![DhcpServer::Dnsmasq, DhcpServer::Kea];
    match &ours_ok {
        Ok(()) => {
            section
                .tools
                .insert("clustermaker".into(), ctx.ours().version());
            servers.push(DhcpServer::Ours);
            if !ctx.quick {
                servers.push(DhcpServer::OursNoFsync);
            }
        }
        Err(why) => {
            ctx.progress.line(format!("dhcp: ours not measured: {why}"));
            section.notes.push(format!("ours: {why}"));
        }
    }
    let period: u32 = if ctx.quick { 2 } else { 4 };
    let rounds = ctx.long_rounds;
    let mut records: Vec<RunRecord> = Vec::new();
    for round in 0..rounds {
        for &clients in &ctx.args.dhcp_clients {
            for server_kind in super::round_order(&servers, round) {
                let what = format!(
                    "dhcp round {}/{rounds}: {} with {clients} clients",
                    round + 1,
                    server_kind.name()
                );
                ctx.progress.set(format!("{what}: starting"));
                let lab = Lab::new(&perf)?;
                let state = TempDir::new("dhcp-state", true)?;
                let scratch = TempDir::new("dhcp", false)?;
                let mut server = match server_kind {
                    DhcpServer::Dnsmasq => start_dnsmasq(&tools, &lab, &state.path, &scratch.path)?,
                    DhcpServer::Kea => start_kea(&tools, &lab, &state.path, &scratch.path)?,
                    DhcpServer::Ours | DhcpServer::OursNoFsync => start_ours_dhcp(
                        ctx,
                        &lab.server,
                        &lab.server_if,
                        &state.path,
                        &scratch.path,
                        server_kind == DhcpServer::Ours,
                    )?
                    .ok_or_else(|| anyhow!("our DHCP server is not available"))?,
                };
                wait_ready(&lab, &mut server, &scratch.path)?;
                let ladder = climb(
                    ctx,
                    &lab,
                    &mut server,
                    &scratch.path,
                    clients,
                    period,
                    &what,
                )?;
                server.check_running()?;
                server.stop(Duration::from_secs(5));
                let peak = ladder.peak().clone();
                ctx.progress.line(format!(
                    "  {what}: peak {} DORA/s at {} offered ({:.1} % lost)",
                    fmt_num(peak.dora_per_s),
                    peak.offered_rate,
                    peak.drop_ratio() * 100.0
                ));
                records.push(RunRecord {
                    server: server_kind,
                    clients,
                    round,
                    peak_dora_per_s: peak.dora_per_s,
                    clean_rate: ladder.clean_rate(),
                    lease_bytes: dir_bytes(&state.path),
                    ladder: ladder.steps,
                });
            }
        }
    }

    let peaks = |s: DhcpServer, c: u32| -> Vec<f64> {
        records
            .iter()
            .filter(|r| r.server == s && r.clients == c)
            .map(|r| r.peak_dora_per_s)
            .collect()
    };
    for &clients in &ctx.args.dhcp_clients {
        for anchor in [DhcpServer::Dnsmasq, DhcpServer::Kea] {
            let ours = match &ours_ok {
                Ok(()) => Measure::new("clustermaker", &peaks(DhcpServer::Ours, clients)),
                Err(_) => Measure::missing("clustermaker", "not available yet"),
            };
            section.rows.push(Row::new(
                format!("peak DORA/s, {} simulated clients", fmt_num(clients as f64)),
                "DORA/s",
                Better::Higher,
                Measure::new(anchor.name(), &peaks(anchor, clients)),
                ours,
            ));
        }
    }

    // Details: per server and client count, the peak step's counts (median round).
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Per server (the round with the median peak; counts from perfdhcp at the peak step):\n"
    );
    let _ = writeln!(md, "| server | clients | peak DORA/s | offered/s at peak | DISCOVER sent / OFFER received | REQUEST sent / ACK received | lost at peak | highest offered rate with < 1 % lost | lease file(s) after the run |");
    let _ = writeln!(
        md,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let mut by_key: BTreeMap<(u32, DhcpServer), Vec<&RunRecord>> = BTreeMap::new();
    for r in &records {
        by_key.entry((r.clients, r.server)).or_default().push(r);
    }
    for ((clients, server), mut runs) in by_key {
        runs.sort_by(|a, b| a.peak_dora_per_s.total_cmp(&b.peak_dora_per_s));
        let mid = runs[runs.len() / 2];
        let summary =
            Summary::of(&runs.iter().map(|r| r.peak_dora_per_s).collect::<Vec<_>>()).expect("runs");
        let peak = mid
            .ladder
            .iter()
            .max_by(|a, b| a.dora_per_s.total_cmp(&b.dora_per_s))
            .expect("steps");
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} / {} | {} / {} | {:.1} % | {} | {:.1} MB |",
            server.name(),
            fmt_num(clients as f64),
            super::report::fmt_summary(&summary, ""),
            fmt_num(peak.offered_rate as f64),
            peak.discover_sent,
            peak.offer_received,
            peak.request_sent,
            peak.ack_received,
            peak.drop_ratio() * 100.0,
            mid.clean_rate
                .map(|r| format!("{}/s", fmt_num(r as f64)))
                .unwrap_or_else(|| format!("< {START_RATE}/s")),
            mid.lease_bytes as f64 / 1e6,
        );
    }
    section.details_md = md;
    section.method = vec![
        "Lab: server and client network namespaces joined by a veth pair (10.77.0.1/16, 10.77.0.2/16), made fresh for each server start; lease files on a real disk (not tmpfs).".into(),
        format!("Client: `perfdhcp -4 -r RATE -R CLIENTS -p {period} 10.77.0.1` in the client namespace. perfdhcp always acts as a relay (source port 67, giaddr 10.77.0.2), so every server serves the subnet {SUBNET} (pool {POOL_START}–{POOL_END}, lease {LEASE_SECS} s)."),
        format!("Peak: the offered rate starts at {START_RATE}/s and doubles while at least 90 % is completed, then one step halfway between the last two rates (when already saturated at {START_RATE}/s: halved, at most twice); the peak is the highest completed rate (perfdhcp's \"Rate: … 4-way exchanges/second\") of that ladder. perfdhcp shares the cores with the server, alike for every server."),
        "dnsmasq: `-k --port=0 --no-ping --quiet-dhcp --dhcp-lease-max=100000 --interface=VETH --bind-interfaces --dhcp-range=… --dhcp-leasefile=FILE` (`--no-ping`: otherwise every new address is ICMP-probed for ~3 s before the OFFER; `--quiet-dhcp`: no per-packet log, like the others).".into(),
        "Kea 2.2 `kea-dhcp4 -c CONFIG` in the foreground: `\"dhcp-socket-type\": \"raw\"` (the only way it receives perfdhcp's relayed packets), memfile with `persist: true` (lease file in the temp dir, `lfc-interval: 0`), logging at WARN, single-threaded (Kea 2.2's default; its multi-threaded mode was slower on 2 cores: ~2,700 vs ~7,300 DORA/s in a trial).".into(),
        "Aim stated in the issue: ours ≥ 2× dnsmasq and ≥ Kea, with leases durable (reported here, not asserted).".into(),
        "Ours: `clustermaker serve` with a `[dhcp]` section (subnet and pool as above, log level warn). Its leases are written to a journal and fdatasync'ed before the ACK leaves (`fsync = true`, the default) — dnsmasq and Kea write their lease files without syncing. The row `clustermaker fsync=false` (details only, not in `--quick`) shows what that durability costs.".into(),
    ];
    section.raw = serde_json::to_value(&records)?;
    Ok(section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_perfdhcp_report() {
        let text = "Running: perfdhcp -4 -r 2000 -R 1000 -p 5 10.77.0.1\n\
            ***Rate statistics***\nRate: 1999.43 4-way exchanges/second, expected rate: 2000\n\
            ***Statistics for: DISCOVER-OFFER***\nsent packets: 9989\nreceived packets: 2776\ndrops: 7213\n\
            ***Statistics for: REQUEST-ACK***\nsent packets: 2776\nreceived packets: 1910\ndrops: 866\n";
        let r = parse_perfdhcp(text).unwrap();
        assert_eq!(r.dora_per_s, 1999.43);
        assert_eq!((r.discover_sent, r.offer_received), (9989, 2776));
        assert_eq!((r.request_sent, r.ack_received), (2776, 1910));
        assert!(parse_perfdhcp("nothing").is_err());
    }
}
