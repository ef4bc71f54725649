//! `cargo xtask bench`: ours against the established tool on the same workload in the same run,
//! reported as ratios in docs/BENCHMARKS.md (and as JSON with `--json`).
//!
//! Benchmarks ([`Which`]): DHCP DORA/s with perfdhcp against dnsmasq and Kea ([`dhcp`]); TFTP
//! fetch times against tftpd-hpa, dnsmasq and atftpd ([`tftp`]); kernel + initramfs over our
//! HTTP against nginx and against TFTP ([`http`]); PXE power-on to online under QEMU against a
//! default dnsmasq setup ([`boot`]); the initramfs build ([`initramfs`]); VIP failover time and
//! false failovers under load against keepalived and Heartbeat 3 ([`failover`]); our NFS root
//! server against nfs-ganesha, and the image build of a Debian root ([`nfs`]).
//!
//! Each one starts the anchor and ours one after the other on the identical workload, repeats
//! for several rounds in alternating order, and reports median [min–max]. It reports, it does
//! not assert — but a server that does not start, or a transfer whose checksum is wrong, fails
//! the run. Namespaces, processes and scratch directories are removed on every exit path,
//! Ctrl-C included ([`sys`]).

mod boot;
mod deb;
mod dhcp;
mod failover;
mod http;
mod initramfs;
mod nfs;
mod ours;
mod report;
mod sys;
mod tftp;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use self::ours::Ours;
use self::report::{Report, Section};

/// A benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Which {
    /// DHCP DORA/s (perfdhcp) vs dnsmasq and Kea
    Dhcp,
    /// TFTP 14 MB fetch, 1 and 20 clients, vs tftpd-hpa, dnsmasq, atftpd
    Tftp,
    /// kernel + initramfs over our HTTP vs nginx, and vs TFTP
    Http,
    /// initramfs build time and size (cargo xtask build-image)
    Initramfs,
    /// PXE power-on to online under QEMU TCG vs a default dnsmasq setup
    Boot,
    /// HA: VIP failover time (kill -9, link down) and false failovers under load vs
    /// keepalived and Heartbeat 3
    Failover,
    /// NFS root: 100 MiB read (libnfs and QEMU guest), Debian+systemd boot, handle survival
    /// vs nfs-ganesha; busybox node power-on to service with its stages
    Nfs,
    /// `clustermaker image build` of a Debian minbase root: time, image and initramfs size
    Image,
}

impl Which {
    const ALL: [Which; 8] = [
        Which::Dhcp,
        Which::Tftp,
        Which::Http,
        Which::Boot,
        Which::Initramfs,
        Which::Image,
        Which::Nfs,
        Which::Failover,
    ];
}

/// `cargo xtask bench`: ours vs the established tools, results in docs/BENCHMARKS.md.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Run only these benchmarks (repeat the flag or separate with commas)
    #[arg(long, value_enum, value_delimiter = ',', value_name = "BENCH")]
    pub only: Vec<Which>,
    /// Fewer and shorter rounds: a smoke run with rougher figures
    #[arg(long)]
    pub quick: bool,
    /// Rounds per benchmark [default: 5 (DHCP, boot, initramfs, image, nfs: 3, nfs Debian
    /// boots: 5); with --quick 2 (1)]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=50))]
    pub rounds: Option<u16>,
    /// Print the results as JSON on stdout (progress stays on stderr)
    #[arg(long)]
    pub json: bool,
    /// Do not rewrite docs/BENCHMARKS.md
    #[arg(long)]
    pub no_write: bool,
    /// Markdown file to update [default: <workspace>/docs/BENCHMARKS.md]
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The clustermaker binary to measure [default: cargo build --release -p clustermaker]
    #[arg(long, value_name = "PATH", env = "CLUSTERMAKER_BIN")]
    pub clustermaker: Option<PathBuf>,
    /// Download cache for Debian packages (atftpd, nginx; the cached kernel is used as the
    /// 14 MB file) [default: <workspace>/target/cm-cache]
    #[arg(long, value_name = "DIR", env = "CM_CACHE_DIR")]
    pub cache: Option<PathBuf>,
    /// The 14 MB file for TFTP/HTTP [default: the cached Debian cloud kernel, else random data]
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// The initramfs for the HTTP benchmark [default: target/cm-boot/initramfs.img when built,
    /// else 2 MiB of random data]
    #[arg(long, value_name = "PATH")]
    pub initramfs: Option<PathBuf>,
    /// DHCP: simulated client counts
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1000,10000",
        value_name = "N,N"
    )]
    pub dhcp_clients: Vec<u32>,
    /// Failover: runs per setting and case [default: 10; with --quick 3]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=100))]
    pub failover_runs: Option<u16>,
    /// Failover: seconds of stress-ng load in the false-failover test [default: 600; with
    /// --quick 60]
    #[arg(long, value_name = "SECS", env = "CM_BENCH_FAILOVER_LOAD")]
    pub failover_load: Option<u64>,
    /// Failover: measure only keepalived and Heartbeat (do not build or run clustermaker)
    #[arg(long)]
    pub failover_skip_ours: bool,
}

/// What every benchmark shares.
pub struct Ctx {
    pub workspace: PathBuf,
    pub args: BenchArgs,
    /// Rounds for the cheap benchmarks (TFTP, HTTP).
    pub rounds: usize,
    /// Rounds for the expensive ones (DHCP, boot, initramfs).
    pub long_rounds: usize,
    pub quick: bool,
    pub cache: PathBuf,
    pub progress: Progress,
    ours: OnceLock<Ours>,
}

impl Ctx {
    /// Our binary, built on first use.
    pub fn ours(&self) -> &Ours {
        self.ours.get_or_init(|| {
            self.progress
                .set("building clustermaker (cargo build --release -p clustermaker)");
            let o = Ours::locate(&self.workspace, self.args.clustermaker.as_deref());
            if let Err(e) = &o.bin {
                self.progress
                    .line(format!("bench: no clustermaker binary: {e}"));
            }
            o
        })
    }

    /// The Debian cloud kernel: `--kernel`, else a cached `linux-image-*` package's vmlinuz.
    pub fn find_kernel(&self) -> Option<PathBuf> {
        if let Some(k) = &self.args.kernel {
            return Some(k.clone());
        }
        let unpacked = self.cache.join("unpacked");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&unpacked)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("linux-image-"))
            .flat_map(|e| {
                std::fs::read_dir(e.path().join("boot"))
                    .into_iter()
                    .flatten()
                    .flatten()
            })
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                    .unwrap_or(false)
            })
            .collect();
        found.sort();
        found.pop()
    }
}

/// `items` in order on even rounds, reversed on odd rounds (so no side always goes first).
pub fn round_order<T: Clone>(items: &[T], round: usize) -> Vec<T> {
    let mut v = items.to_vec();
    if round % 2 == 1 {
        v.reverse();
    }
    v
}

/// A spinner on stderr when it is a terminal; plain lines otherwise (CI logs).
pub struct Progress {
    pb: Option<ProgressBar>,
    started: Instant,
}

impl Progress {
    fn new() -> Progress {
        let tty = unsafe { libc::isatty(2) } == 1;
        let pb = tty.then(|| {
            let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            pb.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        });
        Progress {
            pb,
            started: Instant::now(),
        }
    }

    /// What is happening now.
    pub fn set(&self, msg: impl Into<String>) {
        let msg = msg.into();
        match &self.pb {
            Some(pb) => pb.set_message(msg),
            None => eprintln!("[{:>6.1}s] {msg}", self.started.elapsed().as_secs_f64()),
        }
    }

    /// A line that stays.
    pub fn line(&self, msg: impl Into<String>) {
        let msg = msg.into();
        match &self.pb {
            Some(pb) => pb.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    fn finish(&self) {
        if let Some(pb) = &self.pb {
            pb.finish_and_clear();
        }
    }
}

/// The workspace root: the nearest ancestor of the current directory (or of this crate) whose
/// Cargo.toml has a `[workspace]` table.
fn workspace_root() -> Result<PathBuf> {
    let starts = [
        std::env::current_dir().ok(),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
    ];
    for start in starts.into_iter().flatten() {
        for dir in start.ancestors() {
            let manifest = dir.join("Cargo.toml");
            if let Ok(text) = std::fs::read_to_string(&manifest) {
                if text.lines().any(|l| l.trim() == "[workspace]") && dir.join("netboot").is_dir() {
                    return Ok(dir.to_path_buf());
                }
            }
        }
    }
    bail!("cannot find the clustermaker workspace (run from inside it)")
}

fn revision(workspace: &Path) -> String {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(workspace)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    if dirty {
        format!("{rev}-dirty")
    } else {
        rev
    }
}

/// The command line as the user typed it (`cargo xtask bench …`).
fn command_line() -> String {
    let args: Vec<String> = std::env::args().collect();
    let rest: Vec<String> = match args.iter().position(|a| a == "bench") {
        Some(i) => args[i + 1..].to_vec(),
        None => args.iter().skip(1).cloned().collect(),
    };
    let mut cmd = String::from("cargo xtask bench");
    for a in rest {
        cmd.push(' ');
        if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
            cmd.push_str(&format!("'{}'", a.replace('\'', "'\\''")));
        } else {
            cmd.push_str(&a);
        }
    }
    cmd
}

pub fn run(args: BenchArgs) -> Result<()> {
    sys::install_signal_cleanup()?;
    sys::require_root()?;
    sys::remove_stale_namespaces();
    let workspace = workspace_root()?;
    let cache = args
        .cache
        .clone()
        .unwrap_or_else(|| workspace.join("target").join("cm-cache"));
    let quick = args.quick;
    let (rounds, long_rounds) = match args.rounds {
        Some(n) => (n as usize, n as usize),
        None if quick => (2, 1),
        None => (5, 3),
    };
    let selected: Vec<Which> = if args.only.is_empty() {
        Which::ALL.to_vec()
    } else {
        Which::ALL
            .iter()
            .copied()
            .filter(|w| args.only.contains(w))
            .collect()
    };
    let ctx = Ctx {
        workspace: workspace.clone(),
        args: args.clone(),
        rounds,
        long_rounds,
        quick,
        cache,
        progress: Progress::new(),
        ours: OnceLock::new(),
    };
    let mut report = Report {
        machine: report::machine(),
        command: command_line(),
        rounds,
        revision: revision(&workspace),
        sections: Vec::new(),
    };
    let mut failures: Vec<String> = Vec::new();
    for which in selected {
        let t0 = Instant::now();
        let started = report::now_utc();
        let load_before = report::loadavg();
        ctx.progress.set(format!("{which:?}"));
        let result: Result<Section> = match which {
            Which::Dhcp => dhcp::run(&ctx),
            Which::Tftp => tftp::run(&ctx),
            Which::Http => http::run(&ctx),
            Which::Initramfs => initramfs::run(&ctx),
            Which::Boot => boot::run(&ctx),
            Which::Failover => failover::run(&ctx),
            Which::Nfs => nfs::run(&ctx),
            Which::Image => nfs::run_image(&ctx),
        };
        match result {
            Ok(mut s) => {
                s.date_utc = started;
                s.load_before = load_before;
                s.load_after = report::loadavg();
                let rounds_here = s.rounds.unwrap_or(match which {
                    Which::Tftp | Which::Http => rounds,
                    _ => long_rounds,
                });
                s.raw = serde_json::json!({"rounds": rounds_here, "seconds": t0.elapsed().as_secs_f64(), "data": s.raw});
                for r in &s.rows {
                    ctx.progress.line(format!(
                        "{}: {} — {} vs {}: {}",
                        s.id, r.workload, r.anchor.who, r.ours.who, r.verdict
                    ));
                }
                report.sections.push(s);
            }
            Err(e) => {
                ctx.progress.line(format!("bench {which:?} FAILED: {e:#}"));
                failures.push(format!("{which:?}: {e:#}"));
            }
        }
    }
    ctx.progress.finish();
    // Per-section rounds in the markdown header: the report-level figure is the cheap one.
    if !args.no_write && !report.sections.is_empty() {
        let path = args
            .output
            .clone()
            .unwrap_or_else(|| workspace.join("docs").join("BENCHMARKS.md"));
        write_markdown(&path, &report, rounds, long_rounds)?;
        eprintln!("bench: wrote {}", path.display());
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    if !failures.is_empty() {
        bail!(
            "{} benchmark(s) failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

/// Writes the markdown with each section's own round count in its header.
fn write_markdown(path: &Path, report: &Report, rounds: usize, long_rounds: usize) -> Result<()> {
    // update_markdown keeps the sections it is not given, so write them one at a time.
    for s in &report.sections {
        let mut one = report.clone();
        one.rounds = s
            .rounds
            .unwrap_or(if matches!(s.id.as_str(), "tftp" | "http") {
                rounds
            } else {
                long_rounds
            });
        one.sections = vec![s.clone()];
        report::update_markdown(path, &one).context("updating the benchmarks document")?;
    }
    Ok(())
}
