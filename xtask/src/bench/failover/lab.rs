//! The failover lab: masters A and B and client C, each a network namespace with an `eth0`
//! on a bridge that lives in a fourth namespace. Each master runs a tiny TCP service on
//! port 80 that answers its own name (a thread of this process, entered into the master's
//! namespace: no extra process to confuse with the HA daemon). C polls the virtual IP.
//!
//! Nothing here touches the host's network: every address and every packet stays inside the
//! four namespaces, which are deleted (with whatever runs inside) on drop and on Ctrl-C.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::bench::sys::{run_cmd, Netns};

pub const IFACE: &str = "eth0";
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 100);
pub const PREFIX: u8 = 24;
pub const PORT: u16 = 80;
/// How often C starts a new request to the VIP.
pub const POLL_EVERY: Duration = Duration::from_millis(10);
/// Connect and read timeout of one request (a fresh request starts every 10 ms regardless).
const REQUEST_TIMEOUT: Duration = Duration::from_millis(250);
/// Requests in flight at most (a request that hangs lasts 2 × REQUEST_TIMEOUT).
const MAX_IN_FLIGHT: usize = 64;

/// One of the two masters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    A,
    B,
}

impl Node {
    pub fn name(self) -> &'static str {
        match self {
            Node::A => "a",
            Node::B => "b",
        }
    }

    /// What its service answers.
    pub fn answer(self) -> &'static str {
        match self {
            Node::A => "A",
            Node::B => "B",
        }
    }

    pub fn address(self) -> Ipv4Addr {
        match self {
            Node::A => Ipv4Addr::new(10, 77, 0, 1),
            Node::B => Ipv4Addr::new(10, 77, 0, 2),
        }
    }

    pub fn peer(self) -> Node {
        match self {
            Node::A => Node::B,
            Node::B => Node::A,
        }
    }
}

/// The client's address (also the ping node of ours).
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);

/// Who holds the VIP at one moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Holders {
    pub a: bool,
    pub b: bool,
}

impl Holders {
    pub fn only(node: Node) -> Holders {
        Holders {
            a: node == Node::A,
            b: node == Node::B,
        }
    }

    pub fn label(self) -> &'static str {
        match (self.a, self.b) {
            (true, true) => "A+B",
            (true, false) => "A",
            (false, true) => "B",
            (false, false) => "none",
        }
    }
}

struct Service {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub struct Lab {
    // Services first: they hold sockets in the namespaces below.
    services: Vec<Service>,
    pub a: Netns,
    pub b: Netns,
    pub c: Netns,
    _bridge: Netns,
}

impl Lab {
    pub fn new() -> Result<Lab> {
        let bridge = Netns::new()?;
        bridge.ip(&["link", "add", "br0", "type", "bridge"])?;
        bridge.ip(&["link", "set", "br0", "up"])?;
        let mut nodes = Vec::new();
        for (port, addr) in [
            ("pa", Node::A.address()),
            ("pb", Node::B.address()),
            ("pc", CLIENT),
        ] {
            let ns = Netns::new()?;
            // Made directly in the two namespaces: the host never sees these interfaces.
            run_cmd(Command::new("ip").args([
                "link",
                "add",
                IFACE,
                "netns",
                &ns.name,
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                &bridge.name,
            ]))?;
            bridge.ip(&["link", "set", port, "master", "br0"])?;
            bridge.ip(&["link", "set", port, "up"])?;
            ns.ip(&["addr", "add", &format!("{addr}/{PREFIX}"), "dev", IFACE])?;
            ns.ip(&["link", "set", IFACE, "up"])?;
            nodes.push(ns);
        }
        let c = nodes.pop().expect("three namespaces");
        let b = nodes.pop().expect("three namespaces");
        let a = nodes.pop().expect("three namespaces");
        let mut lab = Lab {
            services: Vec::new(),
            a,
            b,
            c,
            _bridge: bridge,
        };
        for node in [Node::A, Node::B] {
            let svc = service(lab.ns(node), node.answer())?;
            lab.services.push(svc);
        }
        Ok(lab)
    }

    pub fn ns(&self, node: Node) -> &Netns {
        match node {
            Node::A => &self.a,
            Node::B => &self.b,
        }
    }

    /// Which masters have the VIP on an interface now (read with getifaddrs from inside each
    /// namespace: no process started).
    pub fn holders(&self) -> Result<Holders> {
        std::thread::scope(|s| {
            let a = s.spawn(|| has_address(&self.a, VIP));
            let b = s.spawn(|| has_address(&self.b, VIP));
            let a = a.join().map_err(|_| anyhow!("holder probe panicked"))??;
            let b = b.join().map_err(|_| anyhow!("holder probe panicked"))??;
            Ok(Holders { a, b })
        })
    }

    /// Removes the VIP from both masters (what a daemon killed with -9 leaves behind).
    pub fn remove_vip(&self) {
        for node in [Node::A, Node::B] {
            let _ = run_cmd(Command::new("ip").args([
                "-n",
                &self.ns(node).name,
                "addr",
                "del",
                &format!("{VIP}/{PREFIX}"),
                "dev",
                IFACE,
            ]));
        }
    }

    /// Forgets C's neighbour entry of the VIP (only between runs, never while measuring: the
    /// new holder's gratuitous ARP is part of what is measured).
    pub fn forget_vip_neighbour(&self) {
        let _ = run_cmd(Command::new("ip").args([
            "-n",
            &self.c.name,
            "neigh",
            "flush",
            "to",
            &VIP.to_string(),
        ]));
    }

    /// "Link down": an nftables netdev table in `node`'s namespace that drops everything
    /// in and out of its interface (ARP included). Returns when the rules are committed.
    pub fn link_down(&self, node: Node) -> Result<()> {
        let rules = format!(
            "table netdev cmb_linkdown {{\n\
             \x20 chain in {{ type filter hook ingress device \"{IFACE}\" priority 0; policy drop; }}\n\
             \x20 chain out {{ type filter hook egress device \"{IFACE}\" priority 0; policy drop; }}\n\
             }}\n"
        );
        let mut cmd = self.ns(node).command("nft");
        cmd.args(["-f", "-"]);
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().context("cannot run nft")?;
        child
            .stdin
            .take()
            .ok_or_else(|| anyhow!("nft: no stdin"))?
            .write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft refused the link-down rules: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Undoes [`Lab::link_down`] (no error when it was not down).
    pub fn link_up(&self, node: Node) {
        let _ = run_cmd(self.ns(node).command("nft").args([
            "delete",
            "table",
            "netdev",
            "cmb_linkdown",
        ]));
    }

    /// The processes inside `node`'s namespace: its HA daemon and whatever that started (the
    /// services are threads of this process, which lives outside).
    pub fn daemon_pids(&self, node: Node) -> Vec<i32> {
        let me = std::process::id() as i32;
        self.ns(node)
            .pids()
            .into_iter()
            .filter(|&p| p != me)
            .collect()
    }

    /// SIGKILL to every process in `node`'s namespace until none is left (a daemon may fork
    /// while it is being killed). Returns how many were killed.
    pub fn kill_all(&self, node: Node) -> usize {
        let mut killed = 0;
        for _ in 0..200 {
            let pids = self.daemon_pids(node);
            if pids.is_empty() {
                break;
            }
            for p in pids {
                if unsafe { libc::kill(p, libc::SIGKILL) } == 0 {
                    killed += 1;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        killed
    }
}

/// Does the namespace have `addr` on an interface?
fn has_address(ns: &Netns, addr: Ipv4Addr) -> Result<bool> {
    // A thread of its own: setns applies to the calling thread only.
    std::thread::scope(|s| {
        s.spawn(|| {
            ns.enter_current_thread()?;
            let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
            if unsafe { libc::getifaddrs(&mut list) } != 0 {
                return Err(std::io::Error::last_os_error()).context("getifaddrs");
            }
            let mut found = false;
            let mut cur = list;
            while !cur.is_null() {
                let ifa = unsafe { &*cur };
                if !ifa.ifa_addr.is_null()
                    && unsafe { (*ifa.ifa_addr).sa_family } as i32 == libc::AF_INET
                {
                    let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                    if Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)) == addr {
                        found = true;
                        break;
                    }
                }
                cur = ifa.ifa_next;
            }
            unsafe { libc::freeifaddrs(list) };
            Ok(found)
        })
        .join()
        .map_err(|_| anyhow!("address probe panicked"))?
    })
}

/// A thread in `ns` answering `name\n` to every connection on port 80.
fn service(ns: &Netns, name: &'static str) -> Result<Service> {
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
    let stop2 = stop.clone();
    // The thread needs the namespace only to bind; the handle stays with the Lab.
    let fd = ns_fd(ns)?;
    let thread = std::thread::Builder::new()
        .name(format!("svc-{name}"))
        .spawn(move || {
            let bound = (|| -> Result<TcpListener> {
                if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error()).context("setns");
                }
                let l = TcpListener::bind(("0.0.0.0", PORT)).context("bind port 80")?;
                l.set_nonblocking(true)?;
                Ok(l)
            })();
            let listener = match bound {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            drop(fd);
            let mut pfd = libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            while !stop2.load(Ordering::Relaxed) {
                pfd.revents = 0;
                if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
                    continue;
                }
                while let Ok((mut s, _)) = listener.accept() {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_write_timeout(Some(Duration::from_millis(200)));
                    let _ = s.write_all(format!("{name}\n").as_bytes());
                    let _ = s.shutdown(std::net::Shutdown::Write);
                }
            }
        })
        .context("cannot start a service thread")?;
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| anyhow!("service {name} did not start"))??;
    Ok(Service {
        stop,
        thread: Some(thread),
    })
}

/// A second handle on the namespace (for a thread that outlives the borrow).
fn ns_fd(ns: &Netns) -> Result<std::fs::File> {
    std::fs::File::open(format!("/run/netns/{}", ns.name))
        .with_context(|| format!("cannot open /run/netns/{}", ns.name))
}

/// What C saw while a failover was provoked.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct PollOutcome {
    /// From the provocation (t0) to the first answer from B, in seconds; None: B never answered.
    pub failover: Option<f64>,
    /// Requests completed after t0, by outcome.
    pub after_t0_from_a: u32,
    pub after_t0_failed: u32,
    /// How long the provocation itself took (kill, or nft committing), seconds.
    pub provoke_took: f64,
}

/// One request to the VIP from C: the name that answered, or None.
fn request() -> Option<String> {
    let addr = SocketAddr::from((VIP, PORT));
    let mut s = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).ok()?;
    s.set_read_timeout(Some(REQUEST_TIMEOUT)).ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let name = buf.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// C requests the VIP every 10 ms (each request on a thread of its own, so one that hangs on
/// a dead holder does not delay the next). Once A has answered `lead_answers` requests in a
/// row, and then `delay` has passed, `provoke` runs (it kills A's daemon or cuts A's link and
/// returns t0); from then the first answer from B ends the measurement, or `timeout` does.
pub fn measure_failover(
    lab: &Lab,
    lead_answers: usize,
    delay: Duration,
    timeout: Duration,
    provoke: impl FnOnce() -> Result<Instant>,
) -> Result<PollOutcome> {
    let c = &lab.c;
    let (tx, rx) = mpsc::channel::<(Instant, Option<String>)>();
    let mut provoke = Some(provoke);
    std::thread::scope(|s| -> Result<PollOutcome> {
        let mut in_flight = 0usize;
        let mut next = Instant::now();
        let mut a_in_row = 0usize;
        let mut fire_at: Option<Instant> = None;
        let mut t0: Option<Instant> = None;
        let mut out = PollOutcome::default();
        let lead_deadline = Instant::now() + Duration::from_secs(15);
        let mut last_before: Option<String> = None;
        loop {
            let now = Instant::now();
            if now >= next && in_flight < MAX_IN_FLIGHT {
                let tx = tx.clone();
                in_flight += 1;
                s.spawn(move || {
                    let who = match c.enter_current_thread() {
                        Ok(()) => request(),
                        Err(_) => None,
                    };
                    let _ = tx.send((Instant::now(), who));
                });
                next += POLL_EVERY;
                if next < now {
                    next = now + POLL_EVERY;
                }
            }
            while let Ok((at, who)) = rx.try_recv() {
                in_flight -= 1;
                match t0 {
                    None => {
                        if who.as_deref() == Some(Node::A.answer()) {
                            a_in_row += 1;
                        } else if fire_at.is_some() {
                            bail!(
                                "A stopped answering alone before t0 ({})",
                                who.map(|w| format!("{w} answered"))
                                    .unwrap_or_else(|| "a request failed".into())
                            );
                        } else {
                            a_in_row = 0;
                            last_before = Some(who.unwrap_or_else(|| "no answer".into()));
                        }
                    }
                    Some(t0) if at >= t0 => match who.as_deref() {
                        Some(w) if w == Node::B.answer() => {
                            if out.failover.is_none() {
                                out.failover = Some((at - t0).as_secs_f64());
                            }
                        }
                        Some(_) => out.after_t0_from_a += 1,
                        None => out.after_t0_failed += 1,
                    },
                    Some(_) => {}
                }
            }
            match t0 {
                None if fire_at.is_none() && a_in_row >= lead_answers => {
                    fire_at = Some(Instant::now() + delay);
                }
                None if fire_at.is_some_and(|f| Instant::now() >= f) => {
                    let started = Instant::now();
                    let f = provoke.take().expect("provoked once");
                    let at = f()?;
                    out.provoke_took = (Instant::now() - started).as_secs_f64();
                    t0 = Some(at);
                }
                None if Instant::now() >= lead_deadline => {
                    bail!(
                        "the VIP does not answer steadily from A before the failover (last: {})",
                        last_before.as_deref().unwrap_or("—")
                    );
                }
                Some(t0) if out.failover.is_some() || Instant::now() >= t0 + timeout => break,
                _ => {}
            }
            let wait = next.saturating_duration_since(Instant::now());
            std::thread::sleep(wait.min(Duration::from_millis(2)));
        }
        Ok(out)
    })
}
