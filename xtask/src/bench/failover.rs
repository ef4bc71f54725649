//! HA failover: how long the virtual IP is away when the active master's HA daemon dies
//! (`kill -9`) or its link goes down (nftables drops everything on its interface), and how
//! often the VIP moves by itself while the machine is under heavy load — keepalived (VRRP)
//! and Linux-HA Heartbeat 3 against `clustermaker serve` with `[ha]`, at each one's defaults
//! and tuned for speed.
//!
//! The lab ([`lab`]): masters A and B and client C in network namespaces on a bridge, VIP
//! 10.77.0.100/24. A holds the VIP; C requests the VIP on port 80 every 10 ms (a fresh TCP
//! connection each time, answered with the master's name); at t0 A's daemon is killed (every
//! process in A's namespace, SIGKILL) or A's link is cut, and the failover time is t0 to the
//! first answer from B. C's neighbour table is never flushed while measuring: the new
//! holder's gratuitous ARP is part of the failover. Before every run the lab is reset: all
//! daemons killed, the VIP removed, the link restored, both daemons started fresh (fresh
//! state directories), and A must hold the VIP alone and steadily.
//!
//! False failovers: at the tuned settings, the pair runs while `stress-ng --cpu 2 --io 2 --hdd
//! 1` loads the machine; the holders are sampled every 100 ms; every change of the holder set
//! counts as a VIP move, and samples with two holders (split brain) or none are counted.

mod contender;
mod lab;

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use self::contender::{Kind, OursSetup, Setting, Tier, Tools};
use self::lab::{Holders, Lab, Node, PollOutcome};
use super::ours::Ours;
use super::report::{fmt_num, Better, Measure, Row, Section, Summary};
use super::sys::{self, Server, TempDir};
use super::{round_order, Ctx};

/// Runs per setting and case by default (and with `--quick`).
pub const RUNS: usize = 10;
pub const QUICK_RUNS: usize = 3;
/// Load duration of the false-failover test by default (and with `--quick`).
pub const LOAD: Duration = Duration::from_secs(600);
pub const QUICK_LOAD: Duration = Duration::from_secs(60);
/// How often the holders are sampled under load.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// A answers this many requests in a row before the failover is provoked.
const LEAD_ANSWERS: usize = 20;
/// After A took the VIP, how long the pair must stay put before a run.
const SETTLE: Duration = Duration::from_secs(3);

/// How the active master fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Case {
    /// SIGKILL to every process of A's HA daemon.
    Kill9,
    /// nftables drops everything in and out of A's interface.
    LinkDown,
}

impl Case {
    fn label(self) -> &'static str {
        match self {
            Case::Kill9 => "kill -9",
            Case::LinkDown => "link down",
        }
    }
}

const CASES: [Case; 2] = [Case::Kill9, Case::LinkDown];

/// One contender's state in this benchmark.
struct Contender {
    setting: Setting,
    /// Why it is not measured.
    unavailable: Option<String>,
    /// Failover times per case (seconds), and the runs where B never answered.
    samples: Vec<(Case, Vec<f64>, usize)>,
    /// Every run's detail, for `--json`.
    runs: Vec<serde_json::Value>,
    /// Attempts that were redone, and why.
    redone: Vec<String>,
    load: Option<LoadResult>,
}

impl Contender {
    fn samples(&self, case: Case) -> &[f64] {
        self.samples
            .iter()
            .find(|(c, _, _)| *c == case)
            .map(|(_, s, _)| s.as_slice())
            .unwrap_or(&[])
    }

    fn failed(&self, case: Case) -> usize {
        self.samples
            .iter()
            .find(|(c, _, _)| *c == case)
            .map(|(_, _, f)| *f)
            .unwrap_or(0)
    }

    fn record(&mut self, case: Case, outcome: &PollOutcome) {
        if !self.samples.iter().any(|(c, _, _)| *c == case) {
            self.samples.push((case, Vec::new(), 0));
        }
        let entry = self
            .samples
            .iter_mut()
            .find(|(c, _, _)| *c == case)
            .expect("just added");
        match outcome.failover {
            Some(t) => entry.1.push(t),
            None => entry.2 += 1,
        }
    }
}

/// The false-failover test of one contender.
#[derive(Clone, Debug, serde::Serialize)]
struct LoadResult {
    seconds: f64,
    samples: usize,
    /// Changes of the holder set.
    moves: usize,
    /// Samples with both masters holding the VIP.
    two_holders: usize,
    /// Samples with no master holding it.
    no_holder: usize,
    /// The holder sequence, run-length encoded (`A×5990`, `B×10` …).
    timeline: Vec<String>,
    /// Whether both daemons were still running at the end.
    daemons_alive: bool,
    load_avg_end: f64,
}

/// The pair of daemons of one setting, and where their files live.
struct Pair<'a> {
    lab: &'a Lab,
    tools: &'a Tools,
    ours: Option<&'a OursSetup<'a>>,
    scratch: &'a Path,
    servers: Vec<Server>,
}

impl<'a> Pair<'a> {
    /// Kills everything, cleans the lab, starts both daemons fresh and waits until A holds the
    /// VIP alone and steadily.
    fn reset(&mut self, setting: &Setting) -> Result<()> {
        let mut last_err = None;
        for _attempt in 0..3 {
            match self.try_reset(setting) {
                Ok(()) => return Ok(()),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.expect("three attempts"))
    }

    fn stop(&mut self) {
        for node in [Node::A, Node::B] {
            self.lab.kill_all(node);
        }
        // Reaps them (they are dead already).
        for s in self.servers.drain(..) {
            s.stop(Duration::from_millis(100));
        }
        for node in [Node::A, Node::B] {
            self.lab.link_up(node);
        }
        self.lab.remove_vip();
    }

    fn try_reset(&mut self, setting: &Setting) -> Result<()> {
        self.stop();
        self.lab.forget_vip_neighbour();
        for node in [Node::A, Node::B] {
            let dir = self.scratch.join(&setting.id).join(node.name());
            if dir.exists() {
                std::fs::remove_dir_all(&dir)?;
            }
            std::fs::create_dir_all(&dir)?;
            let server = contender::start(setting, self.tools, self.ours, self.lab, node, &dir)?;
            self.servers.push(server);
        }
        let deadline = Instant::now() + setting.start_timeout();
        loop {
            for s in &mut self.servers {
                s.check_running()?;
            }
            let h = self.lab.holders()?;
            if h == Holders::only(Node::A) {
                break;
            }
            if h.b {
                bail!("{}: B took the VIP at start ({})", setting.id, h.label());
            }
            if Instant::now() >= deadline {
                let log = self
                    .servers
                    .first_mut()
                    .map(|s| s.not_serving("A does not take the VIP"))
                    .map(|e| format!("{e:#}"))
                    .unwrap_or_default();
                bail!(
                    "{}: A did not take the VIP within {:?}: {log}",
                    setting.id,
                    setting.start_timeout()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let settle_until =
            Instant::now() + SETTLE.max(setting.detection.min(Duration::from_secs(5)));
        while Instant::now() < settle_until {
            let h = self.lab.holders()?;
            if h != Holders::only(Node::A) {
                bail!(
                    "{}: the VIP moved while settling (holders {})",
                    setting.id,
                    h.label()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        for s in &mut self.servers {
            s.check_running()?;
        }
        Ok(())
    }

    /// One measured failover; a run that cannot be set up (the pair does not settle, A does
    /// not answer steadily before t0) is tried again, twice at most.
    /// Returns the outcome and why earlier attempts were redone.
    fn run(&mut self, setting: &Setting, case: Case) -> Result<(PollOutcome, Vec<String>)> {
        let mut redone = Vec::new();
        for _attempt in 0..3 {
            match self.run_once(setting, case) {
                Ok(o) => return Ok((o, redone)),
                Err(e) => redone.push(first_line(&format!("{e:#}"))),
            }
        }
        bail!("three attempts failed: {}", redone.join("; "))
    }

    fn run_once(&mut self, setting: &Setting, case: Case) -> Result<PollOutcome> {
        self.reset(setting)?;
        let lab = self.lab;
        let delay = random_below(setting.interval);
        let outcome = match case {
            Case::Kill9 => {
                lab::measure_failover(lab, LEAD_ANSWERS, delay, setting.failover_timeout(), || {
                    let pids = lab.daemon_pids(Node::A);
                    if pids.is_empty() {
                        bail!("A's daemon has no process to kill");
                    }
                    check_only_a(lab)?;
                    let t0 = Instant::now();
                    // Stop them all first, so that none of them sees another die and says
                    // goodbye (keepalived's VRRP child, for one, learns of its parent's death):
                    // at t0 the whole daemon is gone at once, as in a crash.
                    for &p in &pids {
                        unsafe { libc::kill(p, libc::SIGSTOP) };
                    }
                    for p in pids {
                        unsafe { libc::kill(p, libc::SIGKILL) };
                    }
                    // Whatever it forked meanwhile.
                    lab.kill_all(Node::A);
                    Ok(t0)
                })?
            }
            Case::LinkDown => {
                lab::measure_failover(lab, LEAD_ANSWERS, delay, setting.failover_timeout(), || {
                    check_only_a(lab)?;
                    lab.link_down(Node::A)?;
                    // The rules are committed at the latest when nft returns.
                    Ok(Instant::now())
                })?
            }
        };
        self.stop();
        Ok(outcome)
    }
}

impl Drop for Pair<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let tools = Tools::find()?;
    let runs = ctx
        .args
        .failover_runs
        .map(|n| n as usize)
        .unwrap_or(if ctx.quick { QUICK_RUNS } else { RUNS });
    let load = match ctx.args.failover_load {
        Some(s) => Duration::from_secs(s),
        None if ctx.quick => QUICK_LOAD,
        None => LOAD,
    };
    let scratch = TempDir::new("failover", true)?;
    let key_file = scratch.join("ha.key");
    contender::write_key(&key_file)?;

    let mut contenders: Vec<Contender> = contender::all()
        .into_iter()
        .map(|setting| Contender {
            unavailable: tools.missing(setting.kind),
            setting,
            samples: Vec::new(),
            runs: Vec::new(),
            redone: Vec::new(),
            load: None,
        })
        .collect();
    let ours = if ctx.args.failover_skip_ours {
        for c in contenders
            .iter_mut()
            .filter(|c| c.setting.kind == Kind::Ours)
        {
            c.unavailable = Some("skipped (--failover-skip-ours)".into());
        }
        None
    } else {
        let ours = ctx.ours();
        match contender::ours_available(ours, &scratch.path, &key_file) {
            Ok(boot_off) => Some(OursSetup {
                ours,
                key_file: key_file.clone(),
                boot_off,
            }),
            Err(why) => {
                ctx.progress
                    .line(format!("failover: ours not measured: {why}"));
                for c in contenders
                    .iter_mut()
                    .filter(|c| c.setting.kind == Kind::Ours)
                {
                    c.unavailable = Some(why.clone());
                }
                None
            }
        }
    };

    let lab = Lab::new().context("building the failover lab")?;
    let mut pair = Pair {
        lab: &lab,
        tools: &tools,
        ours: ours.as_ref(),
        scratch: &scratch.path,
        servers: Vec::new(),
    };

    // Failover times: every available setting and case once per round, the order reversed
    // every other round.
    let jobs: Vec<(usize, Case)> = contenders
        .iter()
        .enumerate()
        .filter(|(_, c)| c.unavailable.is_none())
        .flat_map(|(i, _)| CASES.map(|case| (i, case)))
        .collect();
    for round in 0..runs {
        for (i, case) in round_order(&jobs, round) {
            let c = &mut contenders[i];
            if c.unavailable.is_some() {
                continue;
            }
            ctx.progress.set(format!(
                "failover: run {}/{runs}: {} {} — {}",
                round + 1,
                c.setting.kind.who(),
                c.setting.label,
                case.label()
            ));
            match pair.run(&c.setting, case) {
                Ok((outcome, redone)) => {
                    for r in &redone {
                        ctx.progress.line(format!(
                            "failover: {} {}, {}: attempt redone: {r}",
                            c.setting.kind.who(),
                            c.setting.label,
                            case.label()
                        ));
                    }
                    c.redone.extend(redone);
                    ctx.progress.line(format!(
                        "failover: {} {}, {}, run {}: {}",
                        c.setting.kind.who(),
                        c.setting.label,
                        case.label(),
                        round + 1,
                        outcome
                            .failover
                            .map(|t| format!("{t:.3} s"))
                            .unwrap_or_else(|| "B never answered".into())
                    ));
                    c.record(case, &outcome);
                    c.runs.push(serde_json::json!({
                        "round": round + 1, "case": case, "outcome": outcome,
                    }));
                }
                Err(e) => {
                    // A contender that cannot even be set up stops being measured; the
                    // others go on.
                    ctx.progress.line(format!(
                        "failover: {} {} FAILED, not measured further: {e:#}",
                        c.setting.kind.who(),
                        c.setting.label
                    ));
                    c.unavailable = Some(format!("failed: {}", first_line(&format!("{e:#}"))));
                }
            }
        }
    }

    // False failovers under load, at the tuned settings.
    let stress = tools.stress_ng.clone();
    for c in contenders.iter_mut() {
        if c.setting.tier != Tier::Tuned || c.unavailable.is_some() {
            continue;
        }
        let Some(stress) = &stress else { break };
        ctx.progress.set(format!(
            "failover: {} {} under stress-ng for {} s",
            c.setting.kind.who(),
            c.setting.label,
            load.as_secs()
        ));
        match under_load(&mut pair, &c.setting, stress, &scratch.path, load, ctx) {
            Ok(r) => {
                ctx.progress.line(format!(
                    "failover: {} {} under load: {} VIP moves, {} samples with two holders, {} with none ({} samples)",
                    c.setting.kind.who(),
                    c.setting.label,
                    r.moves,
                    r.two_holders,
                    r.no_holder,
                    r.samples
                ));
                c.load = Some(r);
            }
            Err(e) => ctx.progress.line(format!(
                "failover: {} {} under load FAILED: {e:#}",
                c.setting.kind.who(),
                c.setting.label
            )),
        }
    }
    drop(pair);
    drop(lab);

    let mut section = report(&contenders, runs, load, stress.is_some());
    if ours.as_ref().is_some_and(|o| !o.boot_off) {
        section.notes.push(
            "This clustermaker build does not know `[boot] enabled` yet: its boot services ran too (inside the lab, nothing to answer).".into(),
        );
    }
    section.tools = versions(&tools, ours.as_ref().map(|o| o.ours));
    section.rounds = Some(runs);
    Ok(section)
}

/// Right before t0: A, and only A, holds the VIP (else the pair moved it by itself).
fn check_only_a(lab: &Lab) -> Result<()> {
    let h = lab.holders()?;
    if h != Holders::only(Node::A) {
        bail!("the VIP moved by itself before t0 (holders {})", h.label());
    }
    Ok(())
}

/// A uniformly random duration in [0, `max`).
fn random_below(max: Duration) -> Duration {
    let mut r = [0u8; 8];
    let got = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
    if got != r.len() as isize {
        return max / 2;
    }
    let unit = (u64::from_le_bytes(r) >> 11) as f64 / (1u64 << 53) as f64;
    max.mul_f64(unit)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(300).collect()
}

/// Runs the pair at `setting` under stress-ng for `duration`, sampling the holders.
fn under_load(
    pair: &mut Pair,
    setting: &Setting,
    stress: &Path,
    scratch: &Path,
    duration: Duration,
    ctx: &Ctx,
) -> Result<LoadResult> {
    pair.reset(setting)?;
    let dir = scratch.join("stress");
    std::fs::create_dir_all(&dir)?;
    let mut cmd = std::process::Command::new(stress);
    cmd.args(["--cpu", "2", "--io", "2", "--hdd", "1", "--timeout"])
        .arg(format!("{}s", duration.as_secs()))
        .arg("--temp-path")
        .arg(&dir);
    let mut stress_server = Server::spawn("stress-ng", cmd, &scratch.join("stress-ng.log"))?;
    let started = Instant::now();
    let mut states: Vec<Holders> = Vec::new();
    let mut next = started;
    let mut last_progress = started;
    while started.elapsed() < duration {
        states.push(pair.lab.holders()?);
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            let moves = count_moves(&states);
            ctx.progress.set(format!(
                "failover: {} {} under stress-ng: {:.0}/{} s, {} VIP moves so far, holder {}",
                setting.kind.who(),
                setting.label,
                started.elapsed().as_secs_f64(),
                duration.as_secs(),
                moves,
                states.last().map(|h| h.label()).unwrap_or("?")
            ));
        }
        next += SAMPLE_EVERY;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    let load_avg_end = super::report::loadavg();
    let _ = stress_server.check_running();
    stress_server.stop(Duration::from_secs(5));
    let mut alive = true;
    for s in &mut pair.servers {
        alive &= s.check_running().is_ok();
    }
    pair.stop();
    Ok(LoadResult {
        seconds: started.elapsed().as_secs_f64(),
        samples: states.len(),
        moves: count_moves(&states),
        two_holders: states.iter().filter(|h| h.a && h.b).count(),
        no_holder: states.iter().filter(|h| !h.a && !h.b).count(),
        timeline: run_lengths(&states),
        daemons_alive: alive,
        load_avg_end,
    })
}

fn count_moves(states: &[Holders]) -> usize {
    states.windows(2).filter(|w| w[0] != w[1]).count()
}

fn run_lengths(states: &[Holders]) -> Vec<String> {
    let mut out: Vec<(Holders, usize)> = Vec::new();
    for h in states {
        match out.last_mut() {
            Some((last, n)) if last == h => *n += 1,
            _ => out.push((*h, 1)),
        }
    }
    out.into_iter()
        .map(|(h, n)| format!("{}×{n}", h.label()))
        .collect()
}

fn versions(tools: &Tools, ours: Option<&Ours>) -> std::collections::BTreeMap<String, String> {
    let mut v = std::collections::BTreeMap::new();
    if let Some(k) = &tools.keepalived {
        v.insert("keepalived".into(), sys::version_line(k, &["--version"]));
    }
    if tools.heartbeat.is_some() {
        v.insert("heartbeat".into(), dpkg_version("heartbeat"));
    }
    if let Some(s) = &tools.stress_ng {
        v.insert("stress-ng".into(), sys::version_line(s, &["--version"]));
    }
    if let Some(o) = ours {
        v.insert("clustermaker".into(), o.version());
    }
    v.insert("kernel".into(), super::report::machine().kernel);
    v
}

fn dpkg_version(package: &str) -> String {
    std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .ok()
        .map(|o| format!("{package} {}", String::from_utf8_lossy(&o.stdout).trim()))
        .unwrap_or_else(|| "unknown".into())
}

fn median_max(samples: &[f64], failed: usize) -> String {
    let mut s = match Summary::of(samples) {
        Some(s) => format!("{} s | {} s", fmt_num(s.median), fmt_num(s.max)),
        None => "— | —".into(),
    };
    if failed > 0 {
        let _ = write!(s, " ({failed} without failover)");
    }
    s
}

fn report(contenders: &[Contender], runs: usize, load: Duration, have_stress: bool) -> Section {
    let mut s = Section::new("failover");
    let find = |kind: Kind, tier: Tier| {
        contenders
            .iter()
            .find(|c| c.setting.kind == kind && c.setting.tier == tier)
    };
    let measure = |c: Option<&Contender>, case: Case| -> Measure {
        let Some(c) = c else {
            return Measure::missing("?", "not in this run");
        };
        let who = format!("{} {}", c.setting.kind.who(), c.setting.label);
        let samples = c.samples(case);
        let mut m = if samples.is_empty() {
            Measure::missing(
                who,
                if c.unavailable.is_some() {
                    "not measured: see below"
                } else {
                    "no run ended in a failover"
                },
            )
        } else {
            Measure::new(who, samples)
        };
        if c.failed(case) > 0 && m.summary.is_some() {
            m.note = Some(format!(
                "{} of {} runs without failover",
                c.failed(case),
                c.failed(case) + samples.len()
            ));
        }
        m
    };
    // Ours at exactly an anchor's timers: the same detection budget, so the difference is
    // what each does with it (timer precision, takeover work, gratuitous ARP).
    for c in contenders.iter().filter(|c| c.setting.tier == Tier::Equal) {
        let Some(anchor) = contenders
            .iter()
            .find(|a| Some(&a.setting.id) == c.setting.equal_to.as_ref())
        else {
            continue;
        };
        for case in CASES {
            s.rows.push(Row::new(
                format!(
                    "VIP failover, {}, equal timers ({})",
                    case.label(),
                    anchor.setting.label
                ),
                "s",
                Better::Lower,
                measure(Some(anchor), case),
                measure(Some(c), case),
            ));
        }
    }
    for tier in [Tier::Default, Tier::Tuned] {
        let ours = find(Kind::Ours, tier);
        for anchor in [Kind::Keepalived, Kind::Heartbeat] {
            for case in CASES {
                let workload = format!(
                    "VIP failover, {}, {}",
                    case.label(),
                    match tier {
                        Tier::Default => "each at its defaults",
                        _ => "each tuned",
                    }
                );
                s.rows.push(Row::new(
                    workload,
                    "s",
                    Better::Lower,
                    measure(find(anchor, tier), case),
                    measure(ours, case),
                ));
            }
        }
    }

    // Detail: every setting, median and max per case.
    let mut d = String::new();
    let _ = writeln!(
        d,
        "Failover time per setting, t0 to the first answer from B ({runs} runs per setting and case):\n"
    );
    let _ = writeln!(
        d,
        "| contender | setting | kill -9 median | kill -9 max | link down median | link down max |"
    );
    let _ = writeln!(d, "| --- | --- | --- | --- | --- | --- |");
    for c in contenders {
        if c.samples.is_empty() {
            let _ = writeln!(
                d,
                "| {} | {} | — (not measured: see below) | | | |",
                c.setting.kind.who(),
                c.setting.label,
            );
            continue;
        }
        let _ = writeln!(
            d,
            "| {} | {} | {} | {} |",
            c.setting.kind.who(),
            c.setting.label,
            median_max(c.samples(Case::Kill9), c.failed(Case::Kill9)),
            median_max(c.samples(Case::LinkDown), c.failed(Case::LinkDown))
        );
    }
    let _ = writeln!(
        d,
        "\nFalse failovers under load (tuned settings, `stress-ng --cpu 2 --io 2 --hdd 1` for {} s, holders sampled every {} ms):\n",
        load.as_secs(),
        SAMPLE_EVERY.as_millis()
    );
    let _ = writeln!(
        d,
        "| contender | setting | VIP moves | samples with two holders | samples with none | samples | daemons alive at the end |"
    );
    let _ = writeln!(d, "| --- | --- | --- | --- | --- | --- | --- |");
    for c in contenders.iter().filter(|c| c.setting.tier == Tier::Tuned) {
        match &c.load {
            Some(r) => {
                let _ = writeln!(
                    d,
                    "| {} | {} | **{}** | {} | {} | {} | {} |",
                    c.setting.kind.who(),
                    c.setting.label,
                    r.moves,
                    r.two_holders,
                    r.no_holder,
                    r.samples,
                    if r.daemons_alive { "yes" } else { "**no**" }
                );
            }
            None => {
                let why = if !have_stress {
                    "stress-ng is not installed (fix: apt-get install -y stress-ng)".to_string()
                } else {
                    "not measured: see below".to_string()
                };
                let _ = writeln!(
                    d,
                    "| {} | {} | — ({}) | | | | |",
                    c.setting.kind.who(),
                    c.setting.label,
                    why.replace('|', "\\|")
                );
            }
        }
    }
    s.details_md = d;

    s.method = vec![
        "Lab: masters A (10.77.0.1) and B (10.77.0.2) and client C (10.77.0.3), each a network namespace with `eth0` on a bridge in a fourth namespace; VIP 10.77.0.100/24 on `eth0`. Each master answers TCP port 80 with its name (a thread of the harness inside the master's namespace).".into(),
        "Poller: from C, a fresh TCP connection to VIP:80 every 10 ms (each on its own thread, 250 ms connect and read timeouts, so a request hanging on the dead holder does not delay the next). C's neighbour table is not flushed while measuring: the new holder's gratuitous ARP is part of the failover.".into(),
        format!("A run: reset (kill every daemon, remove the VIP, restore the link, start both daemons with fresh state, wait until A alone holds the VIP for {} s), then once A has answered {LEAD_ANSWERS} requests in a row and after a random wait of up to one advert / keepalive interval (so t0 falls at a random phase of the sender's timer, not always the same one), t0: **kill -9** sends SIGSTOP and then SIGKILL to every process in A's namespace (the HA daemon and anything it forked, all gone at once with no goodbye; the VIP stays on A, as after a crash of the daemon), or **link down** loads an nftables netdev table in A's namespace dropping everything in and out of `eth0`, ARP included (t0 = when `nft` returns). The figure is t0 to the first answer from B.", SETTLE.as_secs()),
        format!("{runs} runs per setting and case; all settings and cases interleaved in each round, order reversed every other round. Median [min–max]; the detail table gives median and max."),
        "keepalived (Debian package): `--dont-fork --vrrp`, one `vrrp_instance`, A `state MASTER priority 150`, B `state BACKUP priority 100` (preemption on, the default), multicast adverts; defaults `advert_int 1`; tuned `advert_int 0.1` with `vrrp_version 3` (sub-second adverts exist only in VRRPv3).".into(),
        "Heartbeat 3 (Debian `heartbeat`, haresources mode, `crm no`): each node under `unshare --mount --uts` with its own copy of /etc/ha.d and /var/lib/heartbeat bind-mounted, a private tmpfs on /run and its own host name; `ucast eth0 PEER`, `authkeys` sha1, `auto_failback off`, `haresources`: `a IPaddr::10.77.0.100/24/eth0`. Defaults: `keepalive 2`, `warntime 10`, `deadtime 30`, `initdead 60` (its documented defaults, `initdead` doubled). Tuned: `keepalive 200ms`, `warntime 500ms`, `deadtime 1`, `initdead 10` (deadtime must exceed 2 × keepalive).".into(),
        "Ours: `clustermaker serve` with `[boot] enabled = false` and `[ha]`: `node`/`peer` a/b, `preferred = \"a\"`, one `udp` link to the peer, `ping_nodes = [C]`, one `ipaddr` resource (the VIP on `eth0`), `initdead = \"2s\"`. Defaults: keepalive 100ms, warntime 300ms, deadtime 600ms. Tuned: keepalive 30ms, warntime 90ms, deadtime 150ms (5 keepalives).".into(),
        "\"Each at its defaults\" and \"each tuned\" compare each anchor with ours at the same tier, not at equal timers: the ratio says how much faster the VIP moves with the settings a user would run.".into(),
        format!("False failovers: the tuned pair of each contender runs for {} s while `stress-ng --cpu 2 --io 2 --hdd 1` (temp files on disk) loads the 2 cores; the holders are read every 100 ms with getifaddrs inside A's and B's namespaces. A VIP move is any change of the holder set (A → B, A → A+B, A → none …); a correct pair shows 0. `--failover-load SECS` (or `CM_BENCH_FAILOVER_LOAD`) sets the duration; default 600 s, `--quick` 60 s.", load.as_secs()),
        "Every daemon runs with an unlimited RLIMIT_MEMLOCK (Heartbeat and ours lock themselves into memory, as on a real master). Nothing is written to the host's /etc or /run; every namespace, process and scratch directory is removed on exit, Ctrl-C included.".into(),
        "Reproduce: `cargo xtask bench --only failover` (as root; `apt-get install -y keepalived heartbeat stress-ng nftables`); `--quick` for 3 runs and a 60 s load test; `--failover-runs N`.".into(),
    ];
    for c in contenders {
        if !c.redone.is_empty() {
            s.notes.push(format!(
                "{} {}: {} attempt(s) redone before a run could be measured: {}",
                c.setting.kind.who(),
                c.setting.label,
                c.redone.len(),
                c.redone.join("; ")
            ));
        }
    }
    // One note per reason (both settings of a contender usually share it).
    let mut reasons: Vec<(String, Vec<String>)> = Vec::new();
    for c in contenders {
        if let Some(why) = &c.unavailable {
            let who = format!("{} {}", c.setting.kind.who(), c.setting.label);
            match reasons.iter_mut().find(|(w, _)| w == why) {
                Some((_, whos)) => whos.push(who),
                None => reasons.push((why.clone(), vec![who])),
            }
        }
    }
    for (why, whos) in reasons {
        s.notes.push(format!("{}: {why}", whos.join("; ")));
    }
    s.raw = serde_json::json!({
        "runs_per_setting": runs,
        "load_seconds": load.as_secs(),
        "contenders": contenders.iter().map(|c| serde_json::json!({
            "setting": c.setting,
            "unavailable": c.unavailable,
            "kill9": c.samples(Case::Kill9),
            "link_down": c.samples(Case::LinkDown),
            "without_failover": {"kill9": c.failed(Case::Kill9), "link_down": c.failed(Case::LinkDown)},
            "runs": c.runs,
            "redone": c.redone,
            "load": c.load,
        })).collect::<Vec<_>>(),
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(a: bool, b: bool) -> Holders {
        Holders { a, b }
    }

    #[test]
    fn moves_count_every_change_of_the_holder_set() {
        let s = [
            h(true, false),
            h(true, false),
            h(true, true),
            h(false, true),
            h(false, true),
        ];
        assert_eq!(count_moves(&s), 2);
        assert_eq!(run_lengths(&s), ["A×2", "A+B×1", "B×2"]);
        assert_eq!(count_moves(&s[..2]), 0);
        assert_eq!(count_moves(&[]), 0);
    }

    #[test]
    fn random_delay_stays_below_its_bound() {
        let max = Duration::from_millis(100);
        assert!((0..1000).all(|_| random_below(max) < max));
        assert_eq!(random_below(Duration::ZERO), Duration::ZERO);
    }
}
