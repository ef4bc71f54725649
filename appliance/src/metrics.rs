//! Node metrics: what the agents report every 10 s (CPU, memory, load, network, uptime) and the
//! master's bounded history of it, per node, for `node show` and the graphs.
//!
//! Storage: one append-only file per node (`<state_dir>/metrics/<mac>.log`) of frames
//! `length u32 LE | CRC-32 u32 LE | JSON sample`, and the last `capacity` samples in memory.
//! A sample is appended (no fsync: a `kill -9` loses nothing that reached the page cache, and
//! losing the last seconds of graphs at power loss is acceptable); a torn or corrupt tail is
//! cut at the last good frame when the server starts. When a file holds twice the capacity,
//! it is rewritten atomically with the newest `capacity` samples, so the disk use per node is
//! bounded (about 2 × 8640 × ~300 bytes ≈ 5 MB for 24 h at 10 s). `latest.json` (atomic) holds
//! each node's newest sample for `node list`, so the CLI needs no replay of every file.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use netboot::MacAddr;
use serde::{Deserialize, Serialize};

use crate::statefile::{read_json, write_json};

/// 24 h of samples at the agent's default 10 s interval.
pub const DEFAULT_CAPACITY: usize = 8640;
/// A node whose newest sample is older than this is shown offline (three missed reports).
pub const ONLINE_WITHIN_MS: u64 = 35_000;
/// Bounds on what one report may hold (hostile input: the POST body is also size-limited).
pub const MAX_INTERFACES: usize = 32;
const MAX_FRAME: usize = 64 * 1024;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuFigures {
    /// Busy share of all CPUs since the previous report, 0–100.
    pub percent: f64,
    pub cores: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemFigures {
    pub total_kb: u64,
    pub available_kb: u64,
    /// total − available: what programs hold (page cache that can be dropped is not "used").
    pub used_kb: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct NetFigures {
    pub iface: String,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
    /// Rates since the previous report.
    pub rx_bytes_per_sec: f64,
    pub tx_bytes_per_sec: f64,
}

/// One report from a node's agent (`POST /api/v1/nodes/metrics`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    pub mac: MacAddr,
    #[serde(default)]
    pub hostname: String,
    #[serde(flatten)]
    pub figures: Figures,
}

/// The figures of one report.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    pub uptime_secs: u64,
    pub cpu: CpuFigures,
    pub mem: MemFigures,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    #[serde(default)]
    pub net: Vec<NetFigures>,
}

/// A stored sample: the figures and when the master received them (the master's clock: a
/// stateless node's clock may be anything before NTP).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at_ms: u64,
    #[serde(flatten)]
    pub figures: Figures,
}

impl MetricsReport {
    /// Refuses reports no agent sends: too many interfaces, odd names, impossible numbers.
    pub fn check(&self) -> Result<()> {
        let f = &self.figures;
        if self.hostname.len() > 253 {
            bail!("hostname longer than 253 bytes");
        }
        if f.net.len() > MAX_INTERFACES {
            bail!("more than {MAX_INTERFACES} interfaces");
        }
        for n in &f.net {
            if n.iface.is_empty()
                || n.iface.len() > 15
                || !n.iface.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
            {
                bail!("`{}` is not an interface name", n.iface.escape_debug());
            }
            if !(n.rx_bytes_per_sec.is_finite() && n.tx_bytes_per_sec.is_finite())
                || n.rx_bytes_per_sec < 0.0
                || n.tx_bytes_per_sec < 0.0
            {
                bail!("bad rate for {}", n.iface);
            }
        }
        if !f.cpu.percent.is_finite() || !(0.0..=100.0).contains(&f.cpu.percent) {
            bail!("cpu.percent must be within 0..=100");
        }
        if f.load.iter().any(|l| !l.is_finite() || *l < 0.0) {
            bail!("load averages must be finite and not negative");
        }
        if f.mem.available_kb > f.mem.total_kb || f.mem.used_kb > f.mem.total_kb {
            bail!("memory figures exceed the total");
        }
        Ok(())
    }
}

/// Encodes one frame.
fn frame(sample: &Sample) -> Result<Vec<u8>> {
    let payload = serde_json::to_vec(sample)?;
    if payload.len() > MAX_FRAME {
        bail!("sample too large ({} bytes)", payload.len());
    }
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes frames from `bytes` until the end or the first bad frame. Returns the samples and
/// the length of the good prefix (everything after it is a torn or corrupt tail).
pub fn decode_frames(bytes: &[u8]) -> (Vec<Sample>, usize) {
    let mut samples = Vec::new();
    let mut at = 0;
    while let Some(head) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_FRAME {
            break;
        }
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(sample) = serde_json::from_slice::<Sample>(payload) else {
            break;
        };
        samples.push(sample);
        at += 8 + len;
    }
    (samples, at)
}

pub fn metrics_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("metrics")
}

fn series_path(dir: &Path, mac: &MacAddr) -> PathBuf {
    dir.join(format!("{}.log", mac.dashed()))
}

fn latest_path(dir: &Path) -> PathBuf {
    dir.join("latest.json")
}

/// Reads a node's stored samples without changing the file (the CLI, while the server runs).
pub fn read_series(state_dir: &Path, mac: &MacAddr) -> Result<Vec<Sample>> {
    let path = series_path(&metrics_dir(state_dir), mac);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(decode_frames(&bytes).0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Each node's newest sample, as the server last wrote it.
pub fn load_latest(state_dir: &Path) -> Result<BTreeMap<MacAddr, Sample>> {
    read_json(&latest_path(&metrics_dir(state_dir)))
}

struct Series {
    samples: VecDeque<Sample>,
    /// Frames in the file (good ones), to know when to compact.
    file_frames: usize,
    file: Option<File>,
}

pub struct MetricsStore {
    dir: PathBuf,
    capacity: usize,
    series: Mutex<HashMap<MacAddr, Series>>,
    dirty: AtomicBool,
}

impl MetricsStore {
    /// Opens `<state_dir>/metrics`, replaying every node's file and cutting torn tails.
    pub fn open(state_dir: &Path, capacity: usize) -> Result<MetricsStore> {
        let dir = metrics_dir(state_dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let capacity = capacity.max(1);
        let mut series = HashMap::new();
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(mac) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|m| m.parse::<MacAddr>().ok())
            else {
                continue;
            };
            let path = entry.path();
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .with_context(|| format!("cannot read {}", path.display()))?;
            let (samples, good) = decode_frames(&bytes);
            if good < bytes.len() {
                tracing::warn!(
                    file = %path.display(), kept = samples.len(), dropped_bytes = bytes.len() - good,
                    "metrics file had a torn or corrupt tail; cut it"
                );
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(good as u64))
                    .with_context(|| format!("cannot truncate {}", path.display()))?;
            }
            let file_frames = samples.len();
            let skip = samples.len().saturating_sub(capacity);
            series.insert(
                mac,
                Series {
                    samples: samples.into_iter().skip(skip).collect(),
                    file_frames,
                    file: None,
                },
            );
        }
        Ok(MetricsStore {
            dir,
            capacity,
            series: Mutex::new(series),
            dirty: AtomicBool::new(true),
        })
    }

    /// Keeps `sample` for `mac`: in memory (dropping the oldest beyond the capacity) and in the
    /// node's file. Called from the HTTP handler: one small write into the page cache.
    pub fn record(&self, mac: MacAddr, sample: Sample) -> Result<()> {
        let bytes = frame(&sample)?;
        let mut all = self.series.lock().unwrap();
        let s = all.entry(mac).or_insert_with(|| Series {
            samples: VecDeque::new(),
            file_frames: 0,
            file: None,
        });
        s.samples.push_back(sample);
        while s.samples.len() > self.capacity {
            s.samples.pop_front();
        }
        self.dirty.store(true, Ordering::Relaxed);
        let path = series_path(&self.dir, &mac);
        if s.file_frames >= 2 * self.capacity {
            // Compact: the newest `capacity` samples (all in memory) into a new file, renamed
            // over the old one, so a crash leaves either file whole.
            let mut data = Vec::new();
            for x in &s.samples {
                data.extend_from_slice(&frame(x)?);
            }
            s.file = None;
            crate::statefile::write_atomic(&path, &data)?;
            s.file_frames = s.samples.len();
            return Ok(());
        }
        if s.file.is_none() {
            s.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("cannot open {}", path.display()))?,
            );
        }
        if let Some(f) = s.file.as_mut() {
            if let Err(e) = f.write_all(&bytes) {
                // Next time reopen: a half-written frame is cut at the next start.
                s.file = None;
                return Err(e).with_context(|| format!("cannot append to {}", path.display()));
            }
        }
        s.file_frames += 1;
        Ok(())
    }

    /// Samples of `mac` received at or after `since_ms`, oldest first.
    pub fn since(&self, mac: &MacAddr, since_ms: u64) -> Vec<Sample> {
        let all = self.series.lock().unwrap();
        all.get(mac)
            .map(|s| {
                s.samples
                    .iter()
                    .filter(|x| x.at_ms >= since_ms)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn latest(&self) -> BTreeMap<MacAddr, Sample> {
        let all = self.series.lock().unwrap();
        all.iter()
            .filter_map(|(m, s)| Some((*m, s.samples.back()?.clone())))
            .collect()
    }

    /// Writes `latest.json` if anything was recorded since the last call.
    pub fn persist_latest(&self) -> Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let result = write_json(&latest_path(&self.dir), &self.latest());
        if result.is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64) -> Sample {
        Sample {
            at_ms,
            figures: Figures {
                uptime_secs: at_ms / 1000,
                cpu: CpuFigures {
                    percent: 12.5,
                    cores: 2,
                },
                mem: MemFigures {
                    total_kb: 1000,
                    available_kb: 600,
                    used_kb: 400,
                },
                load: [0.5, 0.25, 0.125],
                net: vec![NetFigures {
                    iface: "eth0".into(),
                    rx_bytes: at_ms,
                    ..Default::default()
                }],
            },
        }
    }

    fn mac() -> MacAddr {
        "52:54:00:00:00:01".parse().unwrap()
    }

    #[test]
    fn history_is_bounded_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetricsStore::open(dir.path(), 5).unwrap();
        for i in 0..23 {
            store.record(mac(), sample(i)).unwrap();
        }
        let now: Vec<u64> = store.since(&mac(), 0).iter().map(|s| s.at_ms).collect();
        assert_eq!(now, [18, 19, 20, 21, 22]);
        assert_eq!(store.since(&mac(), 21).len(), 2);
        // The file was compacted: never more than 2 × capacity frames.
        let on_disk = read_series(dir.path(), &mac()).unwrap();
        assert!(on_disk.len() <= 10, "{}", on_disk.len());
        store.persist_latest().unwrap();
        drop(store);
        let again = MetricsStore::open(dir.path(), 5).unwrap();
        let after: Vec<u64> = again.since(&mac(), 0).iter().map(|s| s.at_ms).collect();
        assert_eq!(after, now);
        assert_eq!(load_latest(dir.path()).unwrap()[&mac()].at_ms, 22);
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetricsStore::open(dir.path(), 100).unwrap();
        for i in 0..3 {
            store.record(mac(), sample(i)).unwrap();
        }
        drop(store);
        // What kill -9 in the middle of a write leaves: half a frame.
        let path = series_path(&metrics_dir(dir.path()), &mac());
        let half = frame(&sample(3)).unwrap();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&half[..half.len() / 2]).unwrap();
        drop(f);
        let store = MetricsStore::open(dir.path(), 100).unwrap();
        assert_eq!(store.since(&mac(), 0).len(), 3);
        store.record(mac(), sample(4)).unwrap();
        drop(store);
        let got: Vec<u64> = read_series(dir.path(), &mac())
            .unwrap()
            .iter()
            .map(|s| s.at_ms)
            .collect();
        assert_eq!(got, [0, 1, 2, 4]);
    }

    #[test]
    fn corrupt_frames_stop_the_replay_without_panic() {
        let good = frame(&sample(1)).unwrap();
        let mut bytes = good.clone();
        bytes.extend_from_slice(&good);
        let n = bytes.len();
        bytes[n - 3] ^= 0xff; // CRC mismatch in the second frame
        let (s, at) = decode_frames(&bytes);
        assert_eq!((s.len(), at), (1, good.len()));
        // Huge length, garbage, empty.
        assert_eq!(decode_frames(&[0xff; 16]).0.len(), 0);
        assert_eq!(decode_frames(&[]).1, 0);
        for cut in 0..good.len() {
            assert_eq!(decode_frames(&good[..cut]).0.len(), 0);
        }
    }

    #[test]
    fn hostile_reports_are_refused() {
        let ok = MetricsReport {
            mac: mac(),
            hostname: "n1".into(),
            figures: sample(0).figures,
        };
        ok.check().unwrap();
        let mut r = ok.clone();
        r.figures.net = vec![NetFigures::default(); MAX_INTERFACES + 1];
        assert!(r.check().is_err());
        let mut r = ok.clone();
        r.figures.net[0].iface = "../x".into();
        assert!(r.check().is_err());
        let mut r = ok.clone();
        r.figures.cpu.percent = 101.0;
        assert!(r.check().is_err());
        let mut r = ok.clone();
        r.figures.mem.used_kb = 5000;
        assert!(r.check().is_err());
        // The wire form round-trips.
        let text = serde_json::to_string(&ok).unwrap();
        assert_eq!(serde_json::from_str::<MetricsReport>(&text).unwrap(), ok);
    }
}
