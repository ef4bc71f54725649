//! Results: median [min–max] summaries, rows comparing ours with an anchor, the machine they
//! were measured on, and docs/BENCHMARKS.md, which each run updates section by section (a run
//! with `--only tftp` replaces the TFTP section and keeps the others as they were).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

/// Median, min and max of a set of samples (the samples are kept for `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Summary {
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(|a, b| a.total_cmp(b));
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Summary {
            median,
            min: s[0],
            max: s[n - 1],
            samples: samples.to_vec(),
        })
    }
}

/// Which direction is better for a figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Better {
    /// Times: less is better.
    Lower,
    /// Rates: more is better.
    Higher,
}

/// One side of a comparison.
#[derive(Clone, Debug, Serialize)]
pub struct Measure {
    /// Who: `tftpd-hpa`, `dnsmasq`, `clustermaker` …
    pub who: String,
    pub summary: Option<Summary>,
    /// Why there is no figure, or what to know about it.
    pub note: Option<String>,
}

impl Measure {
    pub fn new(who: impl Into<String>, samples: &[f64]) -> Measure {
        Measure {
            who: who.into(),
            summary: Summary::of(samples),
            note: None,
        }
    }

    pub fn missing(who: impl Into<String>, why: impl Into<String>) -> Measure {
        Measure {
            who: who.into(),
            summary: None,
            note: Some(why.into()),
        }
    }
}

/// A workload measured on an anchor and on ours.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub workload: String,
    pub unit: String,
    pub better: Better,
    pub anchor: Measure,
    pub ours: Measure,
    /// ours / anchor, on the medians (for a time, below 1 means ours is faster).
    pub ratio_ours_over_anchor: Option<f64>,
    /// How many times better ours is (> 1) or worse (< 1), whatever the unit.
    pub speedup: Option<f64>,
    /// `2.10× faster`, `1.30× slower`, `n/a`.
    pub verdict: String,
}

impl Row {
    pub fn new(
        workload: impl Into<String>,
        unit: &str,
        better: Better,
        anchor: Measure,
        ours: Measure,
    ) -> Row {
        let (ratio, speedup) = match (&anchor.summary, &ours.summary) {
            (Some(a), Some(o)) if a.median > 0.0 && o.median > 0.0 => {
                let r = o.median / a.median;
                (
                    Some(r),
                    Some(if better == Better::Lower { 1.0 / r } else { r }),
                )
            }
            _ => (None, None),
        };
        let verdict = match speedup {
            Some(s) if s >= 1.0 => format!("{s:.2}× faster"),
            Some(s) => format!("{:.2}× slower", 1.0 / s),
            None => "n/a".into(),
        };
        Row {
            workload: workload.into(),
            unit: unit.to_string(),
            better,
            anchor,
            ours,
            ratio_ours_over_anchor: ratio,
            speedup,
            verdict,
        }
    }
}

/// One benchmark's results.
#[derive(Clone, Debug, Serialize)]
pub struct Section {
    /// `dhcp`, `tftp`, `http`, `boot`, `initramfs`.
    pub id: String,
    pub title: String,
    /// How the measurement is made (one markdown bullet each).
    pub method: Vec<String>,
    pub rows: Vec<Row>,
    /// Further markdown (detail tables); not in the JSON, which has `raw` instead.
    #[serde(skip)]
    pub details_md: String,
    /// Everything measured, for `--json`.
    pub raw: serde_json::Value,
    /// Things not measured, and why (ours not available yet, a tool missing …).
    pub notes: Vec<String>,
    /// Rounds of this section when it has its own count (else the run's).
    #[serde(skip)]
    pub rounds: Option<usize>,
    /// Versions of the tools involved.
    pub tools: BTreeMap<String, String>,
    /// When this benchmark started.
    pub date_utc: String,
    /// 1-minute load average before and after the benchmark ran.
    pub load_before: f64,
    pub load_after: f64,
}

impl Section {
    pub fn new(id: &str) -> Section {
        let title = SECTIONS
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, t)| t.to_string())
            .unwrap_or_else(|| id.to_string());
        Section {
            id: id.to_string(),
            title,
            method: Vec::new(),
            rows: Vec::new(),
            details_md: String::new(),
            raw: serde_json::Value::Null,
            notes: Vec::new(),
            rounds: None,
            tools: BTreeMap::new(),
            date_utc: now_utc(),
            load_before: 0.0,
            load_after: 0.0,
        }
    }
}

/// Where and when a run happened.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu: String,
    pub mem_gib: f64,
    pub kernel: String,
    pub date_utc: String,
}

/// The 1-minute load average (other work on a shared machine skews every figure).
pub fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    pub command: String,
    pub rounds: usize,
    /// `git describe`-style revision of the workspace (with `-dirty`).
    pub revision: String,
    pub sections: Vec<Section>,
}

pub fn machine() -> Machine {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let kernel = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        if libc::uname(&mut u) == 0 {
            std::ffi::CStr::from_ptr(u.release.as_ptr())
                .to_string_lossy()
                .to_string()
        } else {
            "unknown".into()
        }
    };
    Machine {
        nproc,
        cpu,
        mem_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        kernel,
        date_utc: now_utc(),
    }
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock (civil-from-days, no date crate needed).
pub fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days_from_civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// A figure with a sensible number of digits for its size.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        let s = format!("{:.0}", v);
        // Thousands separators: 12,345.
        let (sign, digits) = s.strip_prefix('-').map(|d| ("-", d)).unwrap_or(("", &s));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

pub fn fmt_summary(s: &Summary, unit: &str) -> String {
    let unit = if unit.is_empty() {
        String::new()
    } else {
        format!(" {unit}")
    };
    if s.samples.len() == 1 {
        format!("{}{unit}", fmt_num(s.median))
    } else {
        format!(
            "{}{unit} [{}–{}]",
            fmt_num(s.median),
            fmt_num(s.min),
            fmt_num(s.max)
        )
    }
}

fn fmt_measure(m: &Measure, unit: &str) -> String {
    match (&m.summary, &m.note) {
        (Some(s), Some(n)) => format!("{} ({n})", fmt_summary(s, unit)),
        (Some(s), None) => fmt_summary(s, unit),
        (None, Some(n)) => format!("— ({n})"),
        (None, None) => "—".into(),
    }
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

const BEGIN: &str = "<!-- bench:";

/// The markdown block of one section, between its begin/end markers.
pub fn section_markdown(report: &Report, s: &Section) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "<!-- bench:{}:begin -->", s.id);
    let _ = writeln!(md, "## {}\n", s.title);
    let _ = writeln!(
        md,
        "Measured {} on {} × {} ({} GiB), Linux {}, load average {:.1} before / {:.1} after, revision `{}`, {} round{}{}, with\n\n```\n{}\n```\n",
        s.date_utc,
        report.machine.nproc,
        report.machine.cpu,
        report.machine.mem_gib,
        report.machine.kernel,
        s.load_before,
        s.load_after,
        report.revision,
        report.rounds,
        if report.rounds == 1 { "" } else { "s" },
        // Alternation is between an anchor and ours: a section of absolute figures has none.
        if report.rounds > 1 && s.rows.iter().any(|r| r.anchor.summary.is_some()) {
            " in alternating order"
        } else {
            ""
        },
        report.command
    );
    if !s.rows.is_empty() {
        let _ = writeln!(
            md,
            "| workload | anchor | anchor figure | ours | ours / anchor | verdict |"
        );
        let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- |");
        for r in &s.rows {
            let ratio = r
                .ratio_ours_over_anchor
                .map(|x| format!("{x:.2}"))
                .unwrap_or_else(|| "—".into());
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | **{}** |",
                cell(&r.workload),
                cell(&r.anchor.who),
                cell(&fmt_measure(&r.anchor, &r.unit)),
                cell(&format!(
                    "{}: {}",
                    r.ours.who,
                    fmt_measure(&r.ours, &r.unit)
                )),
                ratio,
                cell(&r.verdict)
            );
        }
        let _ = writeln!(
            md,
            "\nFigures are median [min–max] over all samples (see How for the samples per \
             round). *ours / anchor* divides the medians \
             ({}); the verdict states it as how many times faster or slower ours is.\n",
            if s.rows.iter().all(|r| r.better == Better::Lower) {
                "times: below 1 means ours is faster"
            } else if s.rows.iter().all(|r| r.better == Better::Higher) {
                "rates: above 1 means ours is faster"
            } else {
                "for times below 1 is faster, for rates above 1"
            }
        );
    }
    if !s.details_md.is_empty() {
        md.push_str(s.details_md.trim_end());
        md.push_str("\n\n");
    }
    if !s.method.is_empty() {
        md.push_str("How:\n\n");
        for m in &s.method {
            let _ = writeln!(md, "- {m}");
        }
        md.push('\n');
    }
    if !s.notes.is_empty() {
        md.push_str("Not measured / to know:\n\n");
        for n in &s.notes {
            let _ = writeln!(md, "- {n}");
        }
        md.push('\n');
    }
    if !s.tools.is_empty() {
        let tools: Vec<String> = s.tools.iter().map(|(k, v)| format!("{k}: `{v}`")).collect();
        let _ = writeln!(md, "Tools: {}.\n", tools.join("; "));
    }
    let _ = writeln!(md, "<!-- bench:{}:end -->", s.id);
    md
}

/// The order and titles of the sections in docs/BENCHMARKS.md.
pub const SECTIONS: &[(&str, &str)] = &[
    ("dhcp", "DHCP: DORA exchanges per second"),
    ("tftp", "TFTP: a 14 MB file, 1 and 20 clients"),
    ("http", "Kernel + initramfs: HTTP vs TFTP"),
    ("boot", "PXE power-on to online under QEMU TCG"),
    ("initramfs", "initramfs build"),
    ("image", "Image build from a Debian minbase root"),
    (
        "nfs",
        "NFS root: our NFS server vs nfs-ganesha, and a node from power-on to service",
    ),
    (
        "failover",
        "HA failover: VIP takeover time and false failovers under load",
    ),
];

const HEADER: &str = "# Benchmarks

Every figure here is measured side by side with the established tool doing the same work, in the
same run, on the same machine, and reported as a ratio. `cargo xtask bench` (as root: it makes
network namespaces) runs them all and rewrites the sections it measured; `--only dhcp|tftp|http|
initramfs|image|boot|nfs|failover` picks one, `--quick` runs fewer and shorter rounds, `--json` prints the results as
JSON. Nothing here is a pass/fail threshold: the harness reports, it does not assert — but it fails
loudly when a server does not start or a transfer comes back corrupt (every download is checked
against the file's blake3).

Each benchmark starts the anchor and ours one after the other on the identical workload, repeats
that for several rounds with the order reversed every other round, and reports median [min–max].
The machines these run on are small shared VMs (often 2 cores): absolute figures move from run to
run, the ratios much less. Settings that make the anchors behave (perfdhcp relay mode, dnsmasq
`--no-ping`, atftpd for windowsize …) are listed with each section.

";

/// Rewrites `path`: the sections of this run replaced, the others kept as they were.
pub fn update_markdown(path: &Path, report: &Report) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = String::from(HEADER);
    for (id, title) in SECTIONS {
        if let Some(s) = report.sections.iter().find(|s| s.id == *id) {
            out.push_str(&section_markdown(report, s));
        } else if let Some(block) = existing_block(&old, id) {
            out.push_str(&block);
        } else {
            let _ = writeln!(
                out,
                "<!-- bench:{id}:begin -->\n## {title}\n\nNot measured yet: `cargo xtask bench --only {id}`.\n<!-- bench:{id}:end -->"
            );
        }
        out.push('\n');
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    std::fs::write(path, out.trim_end().to_string() + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

fn existing_block(text: &str, id: &str) -> Option<String> {
    let begin = format!("{BEGIN}{id}:begin -->");
    let end = format!("{BEGIN}{id}:end -->");
    let a = text.find(&begin)?;
    let b = text[a..].find(&end)? + a + end.len();
    Some(format!("{}\n", &text[a..b]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_median_even_and_odd() {
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]).unwrap().median, 2.0);
        let s = Summary::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn verdict_direction() {
        let r = Row::new(
            "w",
            "s",
            Better::Lower,
            Measure::new("a", &[2.0]),
            Measure::new("o", &[1.0]),
        );
        assert_eq!(r.verdict, "2.00× faster");
        assert_eq!(r.ratio_ours_over_anchor, Some(0.5));
        let r = Row::new(
            "w",
            "/s",
            Better::Higher,
            Measure::new("a", &[200.0]),
            Measure::new("o", &[100.0]),
        );
        assert_eq!(r.verdict, "2.00× slower");
    }

    #[test]
    fn numbers() {
        assert_eq!(fmt_num(12345.6), "12,346");
        assert_eq!(fmt_num(556.0), "556");
        assert_eq!(fmt_num(0.1314), "0.131");
    }
}
