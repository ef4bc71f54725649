//! The checks: TCP connect, HTTP GET, and a shell command, each bounded by a timeout.
//!
//! The HTTP client is a minimal HTTP/1.1 GET written here: a check only needs the status line,
//! and a full client (TLS, redirects, pools) would be much more code to trust than this.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::CheckConfig;

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckResult {
    pub ok: bool,
    /// One line for status displays and alerts: what was seen, or why it failed.
    pub detail: String,
    pub took: Duration,
}

/// How much of an HTTP response is read looking for the status line.
const MAX_STATUS_LINE: usize = 8 * 1024;
/// The longest detail kept from a command's output.
const MAX_DETAIL: usize = 200;

/// A short description of a check for status and mail: `tcp localhost:3306`.
pub fn describe(check: &CheckConfig) -> String {
    match check {
        CheckConfig::Tcp { host, port } => format!("tcp {}", host_port(host, *port)),
        CheckConfig::Http { url, expect } => format!("http {url} (expect {expect})"),
        CheckConfig::Exec { command } => format!("exec {command}"),
    }
}

/// Runs one check within `timeout`.
pub async fn run(check: &CheckConfig, timeout: Duration) -> CheckResult {
    let start = Instant::now();
    let (ok, detail) = match check {
        CheckConfig::Tcp { host, port } => bounded(timeout, tcp(host, *port)).await,
        CheckConfig::Http { url, expect } => bounded(timeout, http(url, *expect)).await,
        // The command enforces its own timeout, since it must kill what it started.
        CheckConfig::Exec { command } => {
            let r = run_command(command, &[], timeout).await;
            (r.ok, r.detail)
        }
    };
    CheckResult {
        ok,
        detail,
        took: start.elapsed(),
    }
}

async fn bounded(
    timeout: Duration,
    check: impl std::future::Future<Output = Result<String, String>>,
) -> (bool, String) {
    match tokio::time::timeout(timeout, check).await {
        Ok(Ok(detail)) => (true, detail),
        Ok(Err(detail)) => (false, detail),
        Err(_) => (
            false,
            format!("no answer within {}", humantime::format_duration(timeout)),
        ),
    }
}

/// `host:port`, with brackets around an IPv6 literal.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Connects to `host:port` (resolved; every address is tried in turn, as mon's tcp.monitor
/// passes once any connect succeeds).
async fn tcp(host: &str, port: u16) -> Result<String, String> {
    let target = host_port(host, port);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match TcpStream::connect((host, port)).await {
        Ok(s) => {
            let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
            Ok(format!("connected to {target} ({peer})"))
        }
        Err(e) => Err(format!("connect to {target}: {e}")),
    }
}

/// The parts of an `http://` URL a GET needs.
#[derive(Debug, PartialEq, Eq)]
struct HttpUrl<'a> {
    /// As written in the URL, for the Host header (`example.org:8080`, `[::1]:80`).
    authority: &'a str,
    host: &'a str,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<HttpUrl<'_>, String> {
    // The URL goes into the request line as it is.
    if url
        .bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(format!("{url:?}: spaces or control characters in the URL"));
    }
    let rest = match url.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(format!(
                "{url}: https is not supported by the http check; \
                 use an exec check (e.g. curl -fsS) for TLS"
            ))
        }
        _ => return Err(format!("{url}: only http:// URLs are supported")),
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // The fragment never goes to the server; a bare query still needs the root path.
    let path = path.split('#').next().unwrap_or("");
    let path = match path.chars().next() {
        None => "/".to_string(),
        Some('?') => format!("/{path}"),
        Some(_) => path.to_string(),
    };
    let (host, port) = parse_authority(authority, url)?;
    Ok(HttpUrl {
        authority,
        host,
        port,
        path,
    })
}

/// Splits `host[:port]` / `[v6][:port]`; rejects user info and empty hosts.
fn parse_authority<'a>(authority: &'a str, url: &str) -> Result<(&'a str, u16), String> {
    let bad = |why: &str| Err(format!("{url}: {why}"));
    if authority.contains('@') {
        return bad("credentials in the URL are not supported");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((host, "")) => (host, None),
            Some((host, port)) => match port.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return bad("malformed IPv6 address"),
            },
            None => return bad("malformed IPv6 address"),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return bad("no host");
    }
    let port = match port {
        None => 80,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return bad("bad port"),
        },
    };
    Ok((host, port))
}

/// GETs `url` and compares the response status with `expect`.
async fn http(url: &str, expect: u16) -> Result<String, String> {
    let u = parse_url(url)?;
    let mut stream = TcpStream::connect((u.host, u.port))
        .await
        .map_err(|e| format!("connect to {}: {e}", u.authority))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: clustermaker-monitor\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n",
        u.path, u.authority
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send to {}: {e}", u.authority))?;
    let line = read_status_line(&mut stream)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let (code, reason) = parse_status_line(&line).ok_or_else(|| {
        format!(
            "{url}: not an HTTP status line: {:?}",
            truncate(&line, MAX_DETAIL)
        )
    })?;
    let seen = format!("HTTP {code} {reason}").trim_end().to_string();
    if code == expect {
        Ok(seen)
    } else {
        Err(format!("{seen} (expected {expect})"))
    }
}

/// Reads until the first CRLF, never more than [`MAX_STATUS_LINE`] bytes.
async fn read_status_line(stream: &mut TcpStream) -> Result<String, String> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(2).position(|w| w == b"\r\n") {
            buf.truncate(end);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() >= MAX_STATUS_LINE {
            return Err(format!(
                "no status line in the first {MAX_STATUS_LINE} bytes"
            ));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                "connection closed without a response".into()
            } else {
                format!(
                    "connection closed within the status line: {:?}",
                    truncate(&String::from_utf8_lossy(&buf), MAX_DETAIL)
                )
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `HTTP/1.1 503 Service Unavailable` → (503, "Service Unavailable").
fn parse_status_line(line: &str) -> Option<(u16, &str)> {
    let rest = line.strip_prefix("HTTP/")?;
    let (_version, rest) = rest.split_once(' ')?;
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((code.parse().ok()?, reason.trim()))
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Runs `sh -c command` with `env` added through `crate::command::run` (its own process
/// group, killed when `timeout` passes; output in a file, so a background child holding it
/// does not hold the check), keeping the last line of its output as detail. Exit 0 passes.
pub async fn run_command(command: &str, env: &[(&str, &str)], timeout: Duration) -> CheckResult {
    let start = Instant::now();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(command).envs(env.iter().copied());
    let outcome = tokio::task::spawn_blocking(move || crate::command::run(&mut cmd, timeout)).await;
    let (ok, detail) = match outcome {
        Ok(Ok(o)) => {
            let last = truncate(&o.last_line, MAX_DETAIL).to_string();
            let what = match (o.timed_out, o.code) {
                (true, _) => format!(
                    "killed after {} without finishing",
                    humantime::format_duration(timeout)
                ),
                (false, Some(code)) => format!("exit {code}"),
                (false, None) => "killed by a signal".into(),
            };
            let detail = match (o.success(), last.is_empty()) {
                (_, true) => what,
                (true, false) => last,
                (false, false) => format!("{what}: {last}"),
            };
            (o.success(), detail)
        }
        Ok(Err(e)) => (false, format!("{e:#}")),
        Err(e) => (false, format!("the command runner failed: {e}")),
    };
    CheckResult {
        ok,
        detail,
        took: start.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("http://localhost:8080/health?x=1#frag").unwrap();
        assert_eq!(
            u,
            HttpUrl {
                authority: "localhost:8080",
                host: "localhost",
                port: 8080,
                path: "/health?x=1".into()
            }
        );
        let u = parse_url("HTTP://[::1]/").unwrap();
        assert_eq!((u.host, u.port, u.path.as_str()), ("::1", 80, "/"));
        let u = parse_url("http://example.org").unwrap();
        assert_eq!(
            (u.authority, u.port, u.path.as_str()),
            ("example.org", 80, "/")
        );
        let u = parse_url("http://example.org?q").unwrap();
        assert_eq!(u.path, "/?q");
        assert!(parse_url("https://example.org/")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(parse_url("ftp://x/").is_err());
        assert!(parse_url("example.org").is_err());
        assert!(parse_url("http://:80/").is_err());
        assert!(parse_url("http://a:99999/").is_err());
        assert!(parse_url("http://u:p@a/").is_err());
        assert!(parse_url("http://[::1/").is_err());
        assert!(parse_url("http://a/x HTTP/1.0\r\nX: y").is_err());
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 200 OK"), Some((200, "OK")));
        assert_eq!(
            parse_status_line("HTTP/1.0 503 Service Unavailable"),
            Some((503, "Service Unavailable"))
        );
        assert_eq!(parse_status_line("HTTP/1.1 204"), Some((204, "")));
        assert_eq!(parse_status_line("HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status_line(""), None);
    }

    #[tokio::test]
    async fn last_lines() {
        let r = run_command(
            "printf 'one\\ntwo\\n\\n  \\n'",
            &[],
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(r.detail, "two");
        let r = run_command("printf 'x%.0s' $(seq 500)", &[], Duration::from_secs(10)).await;
        assert_eq!(r.detail.len(), MAX_DETAIL);
        assert_eq!(truncate("ééé", 3), "é");
    }

    #[test]
    fn descriptions() {
        let tcp = CheckConfig::Tcp {
            host: "::1".into(),
            port: 3306,
        };
        assert_eq!(describe(&tcp), "tcp [::1]:3306");
    }

    #[tokio::test]
    async fn command_output_and_status() {
        let r = run_command(
            "echo one; echo two >&2; exit 3",
            &[],
            Duration::from_secs(10),
        )
        .await;
        assert!(!r.ok);
        assert_eq!(r.detail, "exit 3: two");
        let r = run_command("echo \"$A\"", &[("A", "hello")], Duration::from_secs(10)).await;
        assert!(r.ok);
        assert_eq!(r.detail, "hello");
        let r = run_command("true", &[], Duration::from_secs(10)).await;
        assert_eq!((r.ok, r.detail.as_str()), (true, "exit 0"));
    }

    #[tokio::test]
    async fn command_timeout_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        // A grandchild that would write the marker if it outlived the kill.
        let cmd = format!("echo started; (sleep 1; touch {}) & wait", marker.display());
        let r = run_command(&cmd, &[], Duration::from_millis(200)).await;
        assert!(!r.ok);
        assert!(r.detail.starts_with("killed after 200ms"), "{}", r.detail);
        assert!(r.detail.ends_with("started"), "{}", r.detail);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn background_child_holding_the_pipe_does_not_hang_the_check() {
        let r = run_command("sleep 5 & echo done", &[], Duration::from_secs(3)).await;
        assert!(r.ok, "{}", r.detail);
        assert_eq!(r.detail, "done");
    }

    #[tokio::test]
    async fn tcp_refused_and_unresolvable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let check = CheckConfig::Tcp {
            host: "localhost".into(),
            port,
        };
        let r = run(&check, Duration::from_secs(5)).await;
        assert!(r.ok, "{}", r.detail);
        drop(l);
        let r = run(&check, Duration::from_secs(5)).await;
        assert!(!r.ok);
        assert!(r.detail.contains("connect to localhost:"), "{}", r.detail);
        let bad = CheckConfig::Tcp {
            host: "no-such-host.invalid".into(),
            port: 1,
        };
        assert!(!run(&bad, Duration::from_secs(5)).await.ok);
    }
}
