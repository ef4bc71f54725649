//! Pure parsers for the /proc files the node agent reads (text in, figures out), and the
//! arithmetic between two readings. Malformed input gives `None` or skips the line: the
//! agent reports what it can and never panics on a kernel it did not expect.

use crate::metrics::{CpuFigures, MemFigures, NetFigures, MAX_INTERFACES};

/// Aggregate CPU time from the `cpu` line of /proc/stat, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub total: u64,
    /// idle + iowait: time the CPUs had nothing to run.
    pub idle: u64,
    /// Number of `cpuN` lines (online CPUs).
    pub cores: u32,
}

/// Parses /proc/stat.
pub fn parse_stat(text: &str) -> Option<CpuTimes> {
    let mut times = None;
    let mut cores = 0u32;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        match fields.next() {
            Some("cpu") => {
                // user nice system idle iowait irq softirq steal [guest guest_nice]; guest time
                // is already counted in user and nice, so only the first eight are summed.
                let v: Vec<u64> = fields.take(8).map_while(|f| f.parse().ok()).collect();
                if v.len() < 4 {
                    return None;
                }
                let total = v.iter().fold(0u64, |a, b| a.saturating_add(*b));
                let idle = v[3].saturating_add(v.get(4).copied().unwrap_or(0));
                times = Some((total, idle));
            }
            Some(name)
                if name.len() > 3
                    && name.starts_with("cpu")
                    && name[3..].bytes().all(|b| b.is_ascii_digit()) =>
            {
                cores = cores.saturating_add(1);
            }
            _ => {}
        }
    }
    let (total, idle) = times?;
    Some(CpuTimes {
        total,
        idle,
        cores: cores.max(1),
    })
}

/// Busy share of all CPUs between two readings, 0–100.
pub fn cpu_percent(prev: &CpuTimes, cur: &CpuTimes) -> CpuFigures {
    let total = cur.total.saturating_sub(prev.total);
    let idle = cur.idle.saturating_sub(prev.idle).min(total);
    let percent = if total == 0 {
        0.0
    } else {
        ((total - idle) as f64 * 100.0 / total as f64).clamp(0.0, 100.0)
    };
    CpuFigures {
        percent,
        cores: cur.cores,
    }
}

/// Parses /proc/meminfo. Kernels before 3.14 have no MemAvailable: free + buffers + cached.
pub fn parse_meminfo(text: &str) -> Option<MemFigures> {
    let mut total = None;
    let mut available = None;
    let (mut free, mut buffers, mut cached) = (0u64, 0u64, 0u64);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let Some(kb) = rest
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        else {
            continue;
        };
        match key {
            "MemTotal" => total = Some(kb),
            "MemAvailable" => available = Some(kb),
            "MemFree" => free = kb,
            "Buffers" => buffers = kb,
            "Cached" => cached = kb,
            _ => {}
        }
    }
    let total_kb = total?;
    let available_kb = available
        .unwrap_or_else(|| free.saturating_add(buffers).saturating_add(cached))
        .min(total_kb);
    Some(MemFigures {
        total_kb,
        available_kb,
        used_kb: total_kb - available_kb,
    })
}

/// Parses /proc/loadavg: the 1, 5 and 15 minute averages.
pub fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut f = text.split_ascii_whitespace().map(|v| v.parse::<f64>().ok());
    let load = [f.next()??, f.next()??, f.next()??];
    load.iter()
        .all(|l| l.is_finite() && *l >= 0.0)
        .then_some(load)
}

/// Parses /proc/uptime: whole seconds since boot.
pub fn parse_uptime(text: &str) -> Option<u64> {
    let secs: f64 = text.split_ascii_whitespace().next()?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then_some(secs as u64)
}

/// One interface's counters from /proc/net/dev.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub iface: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// Parses /proc/net/dev (loopback left out), at most [`MAX_INTERFACES`] interfaces.
pub fn parse_net_dev(text: &str) -> Vec<NetCounters> {
    let mut out = Vec::new();
    for line in text.lines() {
        // Header lines have a `|`; old kernels glue the first number to the colon.
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let iface = name.trim();
        if iface.is_empty() || iface == "lo" || iface.contains('|') || iface.len() > 15 {
            continue;
        }
        let v: Vec<u64> = rest
            .split_ascii_whitespace()
            .map_while(|f| f.parse().ok())
            .collect();
        if v.len() < 10 {
            continue;
        }
        out.push(NetCounters {
            iface: iface.to_string(),
            rx_bytes: v[0],
            rx_packets: v[1],
            tx_bytes: v[8],
            tx_packets: v[9],
        });
        if out.len() == MAX_INTERFACES {
            break;
        }
    }
    out
}

/// Counters with their rates since `prev` (`secs` apart). An interface new since `prev`, or
/// whose counters went backwards (driver reload), shows a rate of 0.
pub fn net_figures(prev: &[NetCounters], cur: &[NetCounters], secs: f64) -> Vec<NetFigures> {
    cur.iter()
        .map(|c| {
            let before = prev.iter().find(|p| p.iface == c.iface);
            let rate = |now: u64, then: Option<u64>| match then {
                Some(t) if secs > 0.0 && now >= t => (now - t) as f64 / secs,
                _ => 0.0,
            };
            NetFigures {
                iface: c.iface.clone(),
                rx_bytes: c.rx_bytes,
                tx_bytes: c.tx_bytes,
                rx_packets: c.rx_packets,
                tx_packets: c.tx_packets,
                rx_bytes_per_sec: rate(c.rx_bytes, before.map(|b| b.rx_bytes)),
                tx_bytes_per_sec: rate(c.tx_bytes, before.map(|b| b.tx_bytes)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "cpu  4705 356 584 3699 23 23 0 0 0 0\n\
cpu0 1393280 32966 572056 13343292 6130 0 17875 0 23933 0\n\
cpu1 1393280 32966 572056 13343292 6130 0 17875 0 23933 0\n\
intr 114930548 113199788 3 0 5 263 0 4 [... lots more numbers ...]\n\
ctxt 1990473\nbtime 1062191376\nprocesses 2915\nprocs_running 1\n";

    const MEMINFO: &str = "MemTotal:        2035584 kB\nMemFree:          104396 kB\n\
MemAvailable:    1433012 kB\nBuffers:           93652 kB\nCached:          1291392 kB\n";

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit\n \
face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
lo:  123456     100    0    0    0     0          0         0   123456     100    0    0    0     0       0          0\n  \
eth0: 9876543   7000    0    0    0     0          0         0  1234567    4000    0    0    0     0       0          0\n\
ens3:5 6 0 0 0 0 0 0 7 8 0 0 0 0 0 0\n";

    #[test]
    fn stat_golden_and_percent() {
        let a = parse_stat(STAT).unwrap();
        assert_eq!(a.total, 4705 + 356 + 584 + 3699 + 23 + 23);
        assert_eq!(a.idle, 3699 + 23);
        assert_eq!(a.cores, 2);
        let b = CpuTimes {
            total: a.total + 200,
            idle: a.idle + 150,
            cores: 2,
        };
        let f = cpu_percent(&a, &b);
        assert_eq!(f.percent, 25.0);
        assert_eq!(f.cores, 2);
        // Counters that went backwards (a bad reading) give 0, not a panic or NaN.
        assert_eq!(cpu_percent(&b, &a).percent, 0.0);
    }

    #[test]
    fn meminfo_golden_and_old_kernels() {
        let m = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(
            m,
            MemFigures {
                total_kb: 2035584,
                available_kb: 1433012,
                used_kb: 2035584 - 1433012
            }
        );
        let old = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 200 kB\n";
        assert_eq!(parse_meminfo(old).unwrap().available_kb, 350);
    }

    #[test]
    fn loadavg_uptime_netdev_golden() {
        assert_eq!(
            parse_loadavg("0.20 0.18 0.12 1/80 11206\n"),
            Some([0.2, 0.18, 0.12])
        );
        assert_eq!(parse_uptime("350735.47 234388.90\n"), Some(350735));
        let n = parse_net_dev(NET_DEV);
        assert_eq!(
            n,
            vec![
                NetCounters {
                    iface: "eth0".into(),
                    rx_bytes: 9876543,
                    rx_packets: 7000,
                    tx_bytes: 1234567,
                    tx_packets: 4000
                },
                NetCounters {
                    iface: "ens3".into(),
                    rx_bytes: 5,
                    rx_packets: 6,
                    tx_bytes: 7,
                    tx_packets: 8
                },
            ]
        );
        let mut later = n.clone();
        later[0].rx_bytes += 10_000;
        later[0].tx_bytes += 500;
        let f = net_figures(&n, &later, 10.0);
        assert_eq!(f[0].rx_bytes_per_sec, 1000.0);
        assert_eq!(f[0].tx_bytes_per_sec, 50.0);
        assert_eq!(f[1].rx_bytes_per_sec, 0.0);
        assert_eq!(net_figures(&later, &n, 10.0)[0].rx_bytes_per_sec, 0.0);
        assert_eq!(net_figures(&[], &n, 10.0)[0].rx_bytes_per_sec, 0.0);
    }

    #[test]
    fn malformed_input_never_panics() {
        let inputs = [
            "",
            "cpu",
            "cpu x y z",
            "cpu 1 2 3",
            "cpu 99999999999999999999999 1 1 1",
            "cpu 18446744073709551615 18446744073709551615 1 1 1\n",
            "MemTotal:\n",
            "MemTotal: 10 kB\nMemAvailable: 20 kB\n",
            "nan inf -1",
            "1.0 2.0",
            ":::\n eth0: 1 2\n |: 1 2 3 4 5 6 7 8 9 10\n",
            "\u{0}\u{ffff}:\n",
        ];
        for t in inputs {
            let _ = parse_stat(t);
            if let Some(m) = parse_meminfo(t) {
                assert!(m.available_kb <= m.total_kb && m.used_kb <= m.total_kb);
            }
            assert!(parse_loadavg(t).is_none_or(|l| l.iter().all(|x| x.is_finite())));
            let _ = parse_uptime(t);
            let _ = parse_net_dev(t);
        }
        assert_eq!(parse_stat("cpu 1 2 3"), None);
        assert_eq!(parse_loadavg("nan inf -1"), None);
        let many: String = (0..100)
            .map(|i| format!("e{i}: 1 2 3 4 5 6 7 8 9 10\n"))
            .collect();
        assert_eq!(parse_net_dev(&many).len(), MAX_INTERFACES);
    }
}
