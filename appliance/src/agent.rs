//! Node agent: what runs on a booted node. `agent online` reports the node to the master
//! (MAC, address, kernel, seconds since power-on) so the master marks it online.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use netboot::MacAddr;

use crate::tracker::OnlineReport;

/// The `host:port` and path of an `http://` URL. Only what the master hands nodes is accepted.
pub fn parse_http_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("master URL `{url}` must start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.contains(['@', ' ']) {
        bail!("master URL `{url}` has no usable host");
    }
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

/// This node's identity on the interface that holds its IPv4 address (the first non-loopback
/// one, or `interface` when given).
pub fn local_identity(interface: Option<&str>) -> Result<(String, MacAddr, Ipv4Addr)> {
    let addrs = nix::ifaddrs::getifaddrs().context("cannot list network interfaces")?;
    for a in addrs {
        if a.interface_name == "lo" || interface.is_some_and(|want| want != a.interface_name) {
            continue;
        }
        let Some(ip) = a
            .address
            .as_ref()
            .and_then(|s| s.as_sockaddr_in())
            .map(|s| s.ip())
        else {
            continue;
        };
        let mac_text =
            std::fs::read_to_string(format!("/sys/class/net/{}/address", a.interface_name))
                .with_context(|| format!("cannot read the MAC of {}", a.interface_name))?;
        let mac = mac_text.trim().parse()?;
        return Ok((a.interface_name, mac, ip));
    }
    bail!("no interface with an IPv4 address (did DHCP fail?)")
}

fn uptime_secs() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split('.').next().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

pub fn build_report(interface: Option<&str>) -> Result<OnlineReport> {
    let (_, mac, ip) = local_identity(interface)?;
    let uts = nix::sys::utsname::uname().context("uname")?;
    Ok(OnlineReport {
        mac,
        ip,
        kernel: uts.release().to_string_lossy().into_owned(),
        uptime_secs: uptime_secs(),
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
    })
}

/// POSTs `body` as JSON to `url` with a minimal HTTP/1.1 client (one request, no redirects);
/// fails unless the answer is 2xx.
pub fn post_json(url: &str, body: &[u8], timeout: Duration) -> Result<()> {
    let (code, _, status_line) = post_json_reply(url, body, timeout)?;
    if (200..300).contains(&code) {
        Ok(())
    } else {
        bail!("master answered `{status_line}`")
    }
}

/// POSTs `body` as JSON to `url`; returns the status code, the body (at most 64 KiB; the
/// master answers with `Content-Length`, never chunked, for these small JSON replies) and the
/// status line.
pub fn post_json_reply(
    url: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, Vec<u8>, String)> {
    let (authority, path) = parse_http_url(url)?;
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {authority}"))?
        .next()
        .ok_or_else(|| anyhow!("{authority} resolves to nothing"))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // One write: head and body in one segment (simple servers read the request once).
    let mut request = head.into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request)?;
    let mut reply = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut reply)
        .context("no answer from the master")?;
    let status_line =
        String::from_utf8_lossy(reply.split(|&b| b == b'\n').next().unwrap_or_default())
            .trim()
            .to_string();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("master answered `{status_line}`, not HTTP"))?;
    let body = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| reply[i + 4..].to_vec())
        .unwrap_or_default();
    Ok((code, body, status_line))
}

/// Reports this node online, retrying `attempts` times one second apart.
pub fn report_online(master: &str, interface: Option<&str>, attempts: u32) -> Result<OnlineReport> {
    let url = format!("{}/api/v1/nodes/online", master.trim_end_matches('/'));
    let mut last = None;
    for attempt in 1..=attempts.max(1) {
        let result = build_report(interface).and_then(|report| {
            post_json(&url, &serde_json::to_vec(&report)?, Duration::from_secs(5))?;
            Ok(report)
        });
        match result {
            Ok(report) => return Ok(report),
            Err(e) => {
                eprintln!("clustermaker agent: attempt {attempt}: {e:#}");
                last = Some(e);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow!("no attempt made")))
        .with_context(|| format!("cannot report online to {url}; check that `clustermaker serve` runs there and http.port is reachable"))
}

/// `/etc/clustermaker/agent.toml`, as the node overlay writes it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The master's HTTP base URL (the virtual IP under HA).
    pub master: String,
    /// The node's name as the master knows it (for logs only).
    #[serde(default)]
    pub node: String,
    /// The boot MAC; the agent looks at `interface` (or the first interface) when absent.
    #[serde(default)]
    pub mac: Option<MacAddr>,
    #[serde(default)]
    pub interface: Option<String>,
    /// Seconds between reports.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
}

fn default_interval() -> u64 {
    10
}

pub const DEFAULT_AGENT_CONFIG: &str = "/etc/clustermaker/agent.toml";

impl AgentConfig {
    pub fn load(path: &std::path::Path) -> Result<AgentConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the agent configuration {}", path.display()))?;
        let c: AgentConfig =
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        parse_http_url(&c.master).with_context(|| format!("{}: key `master`", path.display()))?;
        if c.interval_secs == 0 || c.interval_secs > 3600 {
            bail!("{}: key `interval_secs`: must be 1..=3600", path.display());
        }
        Ok(c)
    }
}

/// The /proc counters at one moment; figures are differences between two readings.
pub struct Reading {
    at: std::time::Instant,
    cpu: Option<crate::procfs::CpuTimes>,
    net: Vec<crate::procfs::NetCounters>,
}

fn read_proc(name: &str) -> String {
    std::fs::read_to_string(name).unwrap_or_default()
}

impl Reading {
    pub fn now() -> Reading {
        Reading {
            at: std::time::Instant::now(),
            cpu: crate::procfs::parse_stat(&read_proc("/proc/stat")),
            net: crate::procfs::parse_net_dev(&read_proc("/proc/net/dev")),
        }
    }
}

/// This node's figures since `prev`, and the reading to use next time.
pub fn collect(prev: &Reading) -> (crate::metrics::Figures, Reading) {
    use crate::procfs::*;
    let cur = Reading::now();
    let secs = cur.at.duration_since(prev.at).as_secs_f64();
    let cpu = match (&prev.cpu, &cur.cpu) {
        (Some(a), Some(b)) => cpu_percent(a, b),
        _ => Default::default(),
    };
    let figures = crate::metrics::Figures {
        uptime_secs: parse_uptime(&read_proc("/proc/uptime")).unwrap_or(0),
        cpu,
        mem: parse_meminfo(&read_proc("/proc/meminfo")).unwrap_or_default(),
        load: parse_loadavg(&read_proc("/proc/loadavg")).unwrap_or_default(),
        net: net_figures(&prev.net, &cur.net, secs),
    };
    (figures, cur)
}

/// Whether a new export generation from the master means the node must drop its dentry and
/// inode caches (design nfs-server.md §3.3: negative overlay dentries would hide files added
/// to the image). The first generation an agent sees counts as new unless it is 0: the agent
/// may have been down while the image changed.
pub fn should_drop_caches(last: Option<u64>, reply: Option<u64>) -> bool {
    match (last, reply) {
        (_, None) => false,
        (None, Some(g)) => g > 0,
        (Some(l), Some(g)) => l != g,
    }
}

/// Delay after `failures` failed attempts in a row: 1, 2, 4 … seconds, at most `cap`.
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let secs = 1u64 << failures.saturating_sub(1).min(10);
    Duration::from_secs(secs)
        .min(cap)
        .max(Duration::from_millis(100))
}

fn drop_caches() {
    match std::fs::write("/proc/sys/vm/drop_caches", "2") {
        Ok(()) => tracing::info!("export generation changed: dropped dentry and inode caches"),
        Err(e) => tracing::warn!("cannot drop caches: {e}"),
    }
}

/// `clustermaker agent run`: reports online, then the node's figures every interval, for as
/// long as the node runs. Errors are logged (once per outage, not every retry) and retried;
/// only a bad configuration ends it.
pub fn run(config: &AgentConfig) -> Result<std::convert::Infallible> {
    let interval = Duration::from_secs(config.interval_secs);
    let base = config.master.trim_end_matches('/').to_string();
    let metrics_url = format!("{base}/api/v1/nodes/metrics");
    let mut failures = 0u32;
    let mut online = false;
    let mut last_generation = None;
    let mut prev = Reading::now();
    let mut mac = config.mac;
    tracing::info!(master = %base, node = %config.node, interval_secs = config.interval_secs, "agent started");
    loop {
        if mac.is_none() {
            match local_identity(config.interface.as_deref()) {
                Ok((_, m, _)) => mac = Some(m),
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!("cannot find this node's MAC: {e:#}; retrying");
                    }
                    std::thread::sleep(backoff(failures, interval));
                    continue;
                }
            }
        }
        let Some(mac) = mac else { continue };
        if !online {
            match report_online(&base, config.interface.as_deref(), 1) {
                Ok(_) => {
                    tracing::info!("reported online to {base}");
                    online = true;
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!("cannot report online: {e:#}; retrying with backoff");
                    }
                    std::thread::sleep(backoff(failures, interval));
                    continue;
                }
            }
        }
        std::thread::sleep(if failures == 0 {
            interval
        } else {
            backoff(failures, interval)
        });
        let (figures, cur) = collect(&prev);
        prev = cur;
        let report = crate::metrics::MetricsReport {
            mac,
            hostname: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            figures,
        };
        let body = serde_json::to_vec(&report)?;
        match post_json_reply(&metrics_url, &body, Duration::from_secs(5)) {
            Ok((code, reply, _)) if (200..300).contains(&code) => {
                if failures > 0 {
                    tracing::info!("master reachable again after {failures} failed reports");
                }
                failures = 0;
                let generation = serde_json::from_slice::<serde_json::Value>(&reply)
                    .ok()
                    .and_then(|v| v.get("export_generation")?.as_u64());
                if should_drop_caches(last_generation, generation) {
                    drop_caches();
                }
                if generation.is_some() {
                    last_generation = generation;
                }
            }
            Ok((404, _, _)) => {
                // A master that does not know us (a fresh or restored master): say hello again.
                tracing::warn!("master does not know this node; reporting online again");
                online = false;
            }
            Ok((_, reply, status)) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!(
                        "master refused the metrics: {status}: {}",
                        String::from_utf8_lossy(&reply).trim()
                    );
                }
            }
            Err(e) => {
                failures += 1;
                if failures == 1 {
                    tracing::warn!("cannot send metrics: {e:#}; retrying with backoff");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_drops_follow_generation_changes() {
        assert!(!should_drop_caches(None, None));
        assert!(!should_drop_caches(None, Some(0)));
        assert!(should_drop_caches(None, Some(3)));
        assert!(!should_drop_caches(Some(3), Some(3)));
        assert!(should_drop_caches(Some(3), Some(4)));
        assert!(!should_drop_caches(Some(3), None));
        assert_eq!(backoff(1, Duration::from_secs(10)), Duration::from_secs(1));
        assert_eq!(backoff(3, Duration::from_secs(10)), Duration::from_secs(4));
        assert_eq!(
            backoff(99, Duration::from_secs(10)),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn agent_config_parses_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent.toml");
        std::fs::write(
            &p,
            "master = \"http://10.0.0.1:8080\"\nnode = \"n1\"\nmac = \"52:54:00:00:00:01\"\n",
        )
        .unwrap();
        let c = AgentConfig::load(&p).unwrap();
        assert_eq!(c.interval_secs, 10);
        assert_eq!(c.mac, Some("52:54:00:00:00:01".parse().unwrap()));
        std::fs::write(&p, "master = \"ftp://x\"\n").unwrap();
        assert!(AgentConfig::load(&p)
            .unwrap_err()
            .to_string()
            .contains("master"));
        std::fs::write(&p, "master = \"http://x\"\nbogus = 1\n").unwrap();
        assert!(AgentConfig::load(&p).is_err());
    }

    #[test]
    fn readings_of_this_machine_make_sense() {
        let prev = Reading::now();
        std::thread::sleep(Duration::from_millis(50));
        let (f, _) = collect(&prev);
        assert!(f.mem.total_kb > 0 && f.uptime_secs > 0);
        assert!(f.cpu.cores >= 1 && (0.0..=100.0).contains(&f.cpu.percent));
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_http_url("http://10.0.0.1:8080").unwrap(),
            ("10.0.0.1:8080".into(), "".into())
        );
        assert_eq!(
            parse_http_url("http://m/x/").unwrap(),
            ("m:80".into(), "/x".into())
        );
        assert!(parse_http_url("https://m").is_err());
        assert!(parse_http_url("http://").is_err());
        assert!(parse_http_url("http://u@m").is_err());
    }

    #[test]
    fn posts_to_a_real_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        post_json(
            &format!("http://127.0.0.1:{port}/api/v1/nodes/online"),
            b"{\"a\":1}",
            Duration::from_secs(5),
        )
        .unwrap();
        let req = server.join().unwrap();
        assert!(
            req.starts_with("POST /api/v1/nodes/online HTTP/1.1\r\n"),
            "{req}"
        );
        assert!(req.ends_with("{\"a\":1}"), "{req}");
    }
}
