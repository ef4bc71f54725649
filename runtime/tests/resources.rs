//! The resource group against a real kernel and a real SMTP conversation.
//!
//! Two network namespaces joined by a veth pair stand for the active master ("holder") and a
//! neighbour on its segment ("client"). The group runs on a thread that has entered the
//! holder namespace, so its netlink and AF_PACKET sockets live there. The client's neighbour
//! cache is first poisoned with a wrong MAC for the VIP, as after a failover; the test passes
//! only if our announcement corrects it.
//!
//! Needs root; skipped without it, except under `CI=true`, where a missing prerequisite fails.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use runtime::config::{HaConfig, MailConfig, ResourceConfig};
use runtime::mail::Mailer;
use runtime::resources::{ResourceGroup, ResourceState};

const FAKE_MAC: &str = "02:00:00:00:00:99";

fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// True when the test can run; under CI a missing prerequisite is a failure, not a skip.
fn require(test: &str) -> bool {
    let mut missing = Vec::new();
    if unsafe { libc::geteuid() } != 0 {
        missing.push("root".to_string());
    }
    for program in ["ip", "ping"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {program}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !found {
            missing.push(format!("`{program}`"));
        }
    }
    if missing.is_empty() {
        return true;
    }
    if in_ci() {
        panic!("{test} needs {} and CI must run it", missing.join(", "));
    }
    eprintln!("skipping {test}: needs {}", missing.join(", "));
    false
}

fn run(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out
}

fn text(out: Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short name (interface names are limited to 15 bytes).
fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id() % 100_000)
}

/// A network namespace, deleted on drop (also when the test panics).
struct Netns {
    name: String,
}

impl Netns {
    fn new(prefix: &str) -> Netns {
        let name = unique(prefix);
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        text(run("ip", &full))
    }

    fn ping(&self, addr: &str) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "ping", "-c1", "-W2", addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The namespace's IP/ICMP counters, to tell a dropped announcement from a lost one.
    fn counters(&self) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "cat",
                "/proc/net/snmp6",
                "/proc/net/snmp",
            ])
            .output();
        out.map(text)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split_whitespace().last().is_none_or(|v| v != "0"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Runs `f` on a thread that has entered this namespace, and returns its result; a panic
    /// in `f` fails the test after the namespaces are gone.
    fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the namespace");
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Holder and client joined by a veth pair, addressed, up. Returns the interface names.
fn lab(holder: &Netns, client: &Netns, holder_cidr: &str, client_cidr: &str) -> (String, String) {
    let (h, c) = (unique("vh"), unique("vc"));
    run(
        "ip",
        &[
            "link",
            "add",
            &h,
            "netns",
            &holder.name,
            "type",
            "veth",
            "peer",
            "name",
            &c,
            "netns",
            &client.name,
        ],
    );
    for (ns, dev, cidr) in [(holder, &h, holder_cidr), (client, &c, client_cidr)] {
        let mut args = vec!["addr", "add", cidr, "dev", dev.as_str()];
        if cidr.contains(':') {
            args.push("nodad");
        }
        ns.ip(&args);
        ns.ip(&["link", "set", dev, "up"]);
    }
    // A fresh veth's carrier reaches IPv6 through the kernel's link watch, up to a second
    // later; until then the kernel drops IPv6 input (no multicast route yet). A real master's
    // link has been up for long, so wait for the link-local addresses that mark readiness.
    for (ns, dev) in [(holder, &h), (client, &c)] {
        assert!(
            within(Duration::from_secs(5), || ns
                .ip(&["-6", "addr", "show", "dev", dev, "scope", "link"])
                .contains("fe80::")),
            "{dev} in {} never became ready for IPv6",
            ns.name
        );
    }
    (h, c)
}

fn mac_of(ns: &Netns, dev: &str) -> String {
    let out = ns.ip(&["-o", "link", "show", "dev", dev]);
    out.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("an Ethernet address")
        .to_string()
}

fn group(resources: Vec<ResourceConfig>, mail: MailConfig) -> ResourceGroup {
    let ha = HaConfig {
        resources,
        ..HaConfig::default()
    };
    ResourceGroup::new(&ha, "servera", Arc::new(Mailer::new(&mail, "servera"))).unwrap()
}

/// Polls `check` every 20 ms for up to `limit`.
fn within(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The whole takeover story for one VIP: poisoned neighbour cache, acquire, cache corrected
/// at once, VIP answers, release removes it.
fn takeover(family: &str, holder_cidr: &str, client_cidr: &str, vip: &str, prefix: u8) {
    let holder = Netns::new("cmh");
    let client = Netns::new("cmc");
    let (hdev, cdev) = lab(&holder, &client, holder_cidr, client_cidr);
    let holder_mac = mac_of(&holder, &hdev);

    // The client still believes the VIP lives at the old master's MAC.
    client.ip(&[
        family, "neigh", "replace", vip, "dev", &cdev, "lladdr", FAKE_MAC, "nud", "stale",
    ]);
    assert!(client
        .ip(&[family, "neigh", "show", vip, "dev", &cdev])
        .contains(FAKE_MAC));

    let vip_cidr = format!("{vip}/{prefix}");
    let hdev_s = hdev.clone();
    // No interface configured: the group must find it by subnet.
    let g = Arc::new(group(
        vec![ResourceConfig::Ipaddr {
            address: vip_cidr.clone(),
            interface: None,
        }],
        MailConfig::default(),
    ));
    let g2 = g.clone();
    holder.enter(move || {
        let t0 = Instant::now();
        g2.acquire("test takeover").unwrap();
        eprintln!("acquire of {vip_cidr} took {:?}", t0.elapsed());
        let st = &g2.status()[0];
        assert_eq!(st.name, format!("ipaddr {vip_cidr} on {hdev_s}"));
        assert_eq!(st.state, ResourceState::Up, "{st:?}");
        // Idempotent: acquiring again is fine.
        g2.acquire("again").unwrap();
    });

    // The first burst went out inside acquire; the second comes only after 3 s, so a
    // correction within one second is the first burst's doing.
    let neigh = || client.ip(&[family, "neigh", "show", vip, "dev", &cdev]);
    assert!(
        within(Duration::from_secs(1), || neigh().contains(&holder_mac)),
        "the client's cache still says: {}\n{}",
        neigh(),
        client.counters()
    );
    assert!(client.ping(vip), "{vip} does not answer");

    let g3 = g.clone();
    let released_in = holder.enter(move || {
        let t0 = Instant::now();
        g3.release("test release").unwrap();
        let took = t0.elapsed();
        assert_eq!(g3.status()[0].state, ResourceState::Down);
        // Removing an absent address is success.
        g3.release("again").unwrap();
        took
    });
    assert!(
        released_in < Duration::from_secs(1),
        "release waited for the pending announcement: {released_in:?}"
    );
    assert!(!holder
        .ip(&[family, "addr", "show", "dev", &hdev])
        .contains(&format!("{vip}/")));
}

#[test]
fn ipv4_vip_takeover_corrects_neighbours_and_release_removes_it() {
    if !require("ipv4_vip_takeover") {
        return;
    }
    takeover("-4", "10.77.0.1/24", "10.77.0.2/24", "10.77.0.49", 24);
}

#[test]
fn ipv6_vip_takeover_corrects_neighbours_and_release_removes_it() {
    if !require("ipv6_vip_takeover") {
        return;
    }
    takeover("-6", "fd77::1/64", "fd77::2/64", "fd77::49", 64);
}

#[test]
fn cleanup_removes_a_leftover_vip_on_a_named_interface() {
    if !require("cleanup_removes_a_leftover_vip") {
        return;
    }
    let holder = Netns::new("cmh");
    let client = Netns::new("cmc");
    let (hdev, _) = lab(&holder, &client, "10.78.0.1/24", "10.78.0.2/24");
    // A VIP left behind by a daemon that was killed.
    holder.ip(&["addr", "add", "10.78.0.49/24", "dev", &hdev]);
    let g = group(
        vec![ResourceConfig::Ipaddr {
            address: "10.78.0.49/24".into(),
            interface: Some(hdev.clone()),
        }],
        MailConfig::default(),
    );
    holder.enter(move || g.cleanup());
    assert!(!holder
        .ip(&["addr", "show", "dev", &hdev])
        .contains("10.78.0.49/"));
}

#[test]
fn failed_service_start_takes_the_vip_back_down() {
    if !require("failed_service_start_takes_the_vip_back_down") {
        return;
    }
    let holder = Netns::new("cmh");
    let client = Netns::new("cmc");
    let (hdev, _) = lab(&holder, &client, "10.79.0.1/24", "10.79.0.2/24");
    let g = group(
        vec![
            ResourceConfig::Ipaddr {
                address: "10.79.0.49/24".into(),
                interface: Some(hdev.clone()),
            },
            ResourceConfig::Service {
                name: "broken".into(),
                manager: runtime::config::ServiceManager::Command,
                start: Some("echo 'cannot bind port 3306' >&2; exit 1".into()),
                stop: Some("true".into()),
                status: None,
                timeout: Duration::from_secs(5),
            },
        ],
        MailConfig::default(),
    );
    let (err, took) = holder.enter(move || {
        let t0 = Instant::now();
        let err = g.acquire("test").unwrap_err().to_string();
        (err, t0.elapsed())
    });
    assert_eq!(
        err,
        "cannot start service broken (command): start exit 1: cannot bind port 3306"
    );
    // The rollback also cancelled the second announcement instead of waiting for it.
    assert!(took < Duration::from_secs(2), "{took:?}");
    assert!(!holder
        .ip(&["addr", "show", "dev", &hdev])
        .contains("10.79.0.49/"));
}

/// A minimal SMTP server on loopback that records each message's envelope and data.
fn smtp_sink() -> (u16, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(stream) = stream else { return };
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut out = stream.try_clone().unwrap();
            let mut lines = BufReader::new(stream);
            let mut record = String::new();
            let _ = out.write_all(b"220 sink ESMTP\r\n");
            let mut line = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let cmd = line.trim_end().to_ascii_uppercase();
                record.push_str(&line);
                let reply: &[u8] = if cmd.starts_with("DATA") {
                    let _ = out.write_all(b"354 go on\r\n");
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                            break;
                        }
                        record.push_str(&line);
                    }
                    b"250 queued\r\n"
                } else if cmd.starts_with("QUIT") {
                    let _ = out.write_all(b"221 bye\r\n");
                    break;
                } else {
                    b"250 ok\r\n"
                };
                let _ = out.write_all(reply);
            }
            let _ = tx.send(record);
        }
    });
    (port, rx)
}

/// Header lines may be folded; unfold them before looking for one.
fn unfold(record: &str) -> String {
    record.replace("\r\n ", " ").replace("\r\n\t", " ")
}

#[test]
fn mailer_delivers_to_the_default_recipients() {
    let (port, rx) = smtp_sink();
    let cfg = MailConfig {
        smtp_port: port,
        to: vec!["ops@example.org".into()],
        timeout: Duration::from_secs(5),
        ..MailConfig::default()
    };
    Mailer::new(&cfg, "servera")
        .send(&[], "MYSQL down", "mysql on servera failed\n")
        .unwrap();
    let record = unfold(&rx.recv_timeout(Duration::from_secs(10)).unwrap());
    assert!(
        record.contains("MAIL FROM:<clustermaker@servera>"),
        "{record}"
    );
    assert!(record.contains("RCPT TO:<ops@example.org>"), "{record}");
    assert!(record.contains("Subject: MYSQL down"), "{record}");
    assert!(record.contains("mysql on servera failed"), "{record}");
}

#[test]
fn mailto_resource_mails_takeover_and_release() {
    let (port, rx) = smtp_sink();
    let mail = MailConfig {
        smtp_port: port,
        from: "ha@cluster.example".into(),
        timeout: Duration::from_secs(5),
        ..MailConfig::default()
    };
    let g = group(
        vec![ResourceConfig::Mailto {
            to: vec!["root@localhost".into()],
            subject: "Cluster_Failover_Event".into(),
        }],
        mail,
    );
    g.acquire("peer serverb is dead").unwrap();
    let took = unfold(&rx.recv_timeout(Duration::from_secs(10)).unwrap());
    assert!(
        took.contains(
            "Subject: Cluster_Failover_Event servera took over the group: peer serverb is dead"
        ),
        "{took}"
    );
    assert!(took.contains("MAIL FROM:<ha@cluster.example>"), "{took}");
    assert!(g.flush_mail(Duration::from_secs(5)));
    assert!(
        g.status()[0].detail.contains("last mail sent"),
        "{:?}",
        g.status()
    );

    g.release("manual switchover").unwrap();
    let released = unfold(&rx.recv_timeout(Duration::from_secs(10)).unwrap());
    assert!(
        released.contains("servera released the group: manual switchover"),
        "{released}"
    );
}
