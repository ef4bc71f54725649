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

/// POSTs `body` as JSON to `url` with a minimal HTTP/1.1 client (one request, no redirects).
pub fn post_json(url: &str, body: &[u8], timeout: Duration) -> Result<()> {
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
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut reply = Vec::new();
    stream
        .take(4096)
        .read_to_end(&mut reply)
        .context("no answer from the master")?;
    let status_line =
        String::from_utf8_lossy(reply.split(|&b| b == b'\n').next().unwrap_or_default())
            .trim()
            .to_string();
    match status_line.split_whitespace().nth(1) {
        Some(code) if code.starts_with('2') => Ok(()),
        _ => bail!("master answered `{status_line}`"),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
