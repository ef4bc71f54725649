//! The tokio TCP server: listeners, connections, limits. All protocol decisions are in
//! [`crate::ops`]; this module only moves bytes and enforces resource bounds.
//!
//! Per connection: one reader task (deframes, answers metadata inline: the file side answers
//! from memory in microseconds, a task hop would cost more), READs on the blocking pool, and one
//! writer task that coalesces whatever replies are queued into one flush. Limits (design §5.2,
//! §5.7): client allow-list and privileged source port checked at accept, a connection cap, an
//! idle timeout, at most 64 READs / 16 MiB of READ buffers in flight per connection and 256 MiB
//! in total. When a limit is reached the reader stops reading the socket (TCP back-pressure);
//! requests are never dropped.
//!
//! [`Server::start`] is an `async fn` and must be called inside a tokio runtime (the appliance
//! runs one); a multi-thread runtime is expected because READs use `spawn_blocking`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::fs::Filesystem;
use crate::ops::{self, Action, StatsSnapshot};
use crate::record::{self, Deframer};

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Addresses to listen on (port 0 = any free port; see [`ServerHandle::local_addrs`]).
    /// Bound with `IP_FREEBIND`, so a virtual IP not yet on the host can be bound.
    pub listen: Vec<SocketAddr>,
    /// Allowed client networks as (address, prefix length); empty = everyone.
    pub allow: Vec<(IpAddr, u8)>,
    /// Refuse clients whose source port is 1024 or above (knfsd's `secure`).
    pub require_privileged_port: bool,
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed (the client reconnects
    /// transparently).
    pub idle_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 2049))],
            allow: Vec::new(),
            require_privileged_port: false,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(6 * 60),
        }
    }
}

/// Counters of a running server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    pub connections_total: u64,
    pub connections_active: u64,
    /// Refused by the allow-list, the privileged-port rule or the connection cap.
    pub connections_rejected: u64,
    pub calls: StatsSnapshot,
}

/// Per-connection READ budget in KiB: 16 MiB, and every READ costs at least 1/64 of it, so at
/// most 64 are in flight.
const CONN_READ_KIB: u32 = 16 * 1024;
const MIN_READ_COST_KIB: u32 = CONN_READ_KIB / 64;
/// Server-wide READ buffer budget in KiB (256 MiB).
const TOTAL_READ_KIB: usize = 256 * 1024;
/// Replies queued to a connection's writer before the reader waits.
const REPLY_QUEUE: usize = 64;
const SOCKET_READ_BUF: usize = 64 * 1024;
/// Replies larger than this (READDIR/READDIRPLUS pages, big READLINKs) are charged to the same
/// budgets as READs, so queued replies of a client that does not read its socket stay bounded.
const SMALL_REPLY: usize = 4096;
/// A connection whose replies cannot be written for this long is closed (a dead or hostile
/// client must not hold READ budget that every other node needs).
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections one client address may hold (a node uses one, or `nconnect` of them).
const MAX_CONNECTIONS_PER_CLIENT: usize = 32;
const WRITE_BUF: usize = 64 * 1024;

struct Shared {
    fs: Arc<dyn Filesystem>,
    calls: ops::Stats,
    config: ServerConfig,
    connections: Arc<Semaphore>,
    read_budget: Arc<Semaphore>,
    total: AtomicU64,
    active: AtomicU64,
    rejected: AtomicU64,
    per_client: std::sync::Mutex<std::collections::HashMap<IpAddr, usize>>,
}

/// Entry point; see [`Server::start`].
pub struct Server;

impl Server {
    /// Binds every listen address and starts serving `fs`. Must run inside a tokio runtime.
    pub async fn start(config: ServerConfig, fs: Arc<dyn Filesystem>) -> io::Result<ServerHandle> {
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for addr in &config.listen {
            let l = bind(*addr)?;
            addrs.push(l.local_addr()?);
            listeners.push(l);
        }
        let shared = Arc::new(Shared {
            fs,
            calls: ops::Stats::new(),
            connections: Arc::new(Semaphore::new(
                config.max_connections.min(Semaphore::MAX_PERMITS),
            )),
            read_budget: Arc::new(Semaphore::new(TOTAL_READ_KIB)),
            config,
            total: AtomicU64::new(0),
            active: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            per_client: Default::default(),
        });
        let (stop, stopped) = watch::channel(false);
        let tasks = listeners
            .into_iter()
            .map(|l| tokio::spawn(accept_loop(l, shared.clone(), stopped.clone())))
            .collect();
        info!(addrs = ?addrs, "nfs server listening");
        Ok(ServerHandle {
            addrs,
            shared,
            stop,
            tasks,
        })
    }
}

/// A running server.
pub struct ServerHandle {
    addrs: Vec<SocketAddr>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl ServerHandle {
    /// The bound addresses (with the actual ports when 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    pub fn stats(&self) -> ServerStats {
        self.stats_reader().stats()
    }

    /// A handle on the counters that outlives [`ServerHandle::shutdown`] and can be moved to
    /// another thread (status reporting).
    pub fn stats_reader(&self) -> StatsReader {
        StatsReader(self.shared.clone())
    }

    /// Stops listening and closes every connection; returns when they are gone.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        info!("nfs server stopped");
    }
}

/// Reads a server's counters; see [`ServerHandle::stats_reader`].
#[derive(Clone)]
pub struct StatsReader(Arc<Shared>);

impl StatsReader {
    pub fn stats(&self) -> ServerStats {
        let s = &self.0;
        ServerStats {
            connections_total: s.total.load(Ordering::Relaxed),
            connections_active: s.active.load(Ordering::Relaxed),
            connections_rejected: s.rejected.load(Ordering::Relaxed),
            calls: s.calls.snapshot(),
        }
    }
}

/// A listening socket with `SO_REUSEADDR` (restart while old connections linger in TIME_WAIT)
/// and `IP_FREEBIND` (bind the virtual IP before it is added, design §5.6).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if addr.is_ipv4() {
        s.set_freebind(true)?;
    } else {
        s.set_only_v6(true)?;
        s.set_freebind_ipv6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

/// Is `ip` inside one of the `allow` networks (empty list = everyone)? IPv4-mapped IPv6
/// addresses are matched as IPv4.
pub fn allowed(allow: &[(IpAddr, u8)], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    allow.is_empty()
        || allow
            .iter()
            .any(|(net, len)| match (net.to_canonical(), ip) {
                (IpAddr::V4(n), IpAddr::V4(i)) => {
                    let mask = u32::MAX
                        .checked_shl(32 - u32::from((*len).min(32)))
                        .unwrap_or(0);
                    u32::from(n) & mask == u32::from(i) & mask
                }
                (IpAddr::V6(n), IpAddr::V6(i)) => {
                    let mask = u128::MAX
                        .checked_shl(128 - u32::from((*len).min(128)))
                        .unwrap_or(0);
                    u128::from(n) & mask == u128::from(i) & mask
                }
                _ => false,
            })
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            res = listener.accept() => match res {
                Ok((sock, peer)) => {
                    let Some(permit) = admit(&shared, peer) else {
                        shared.rejected.fetch_add(1, Ordering::Relaxed);
                        continue;
                    };
                    shared.total.fetch_add(1, Ordering::Relaxed);
                    conns.spawn(connection(sock, peer, shared.clone(), stopped.clone(), permit));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "nfs accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    conns.shutdown().await;
}

fn admit(shared: &Shared, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
    if !allowed(&shared.config.allow, peer.ip()) {
        warn!(%peer, "nfs client not in the allow-list");
        return None;
    }
    if shared.config.require_privileged_port && peer.port() >= 1024 {
        warn!(%peer, "nfs client from an unprivileged port");
        return None;
    }
    {
        let mut per = shared.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let n = per.entry(peer.ip()).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_CLIENT {
            warn!(%peer, max = MAX_CONNECTIONS_PER_CLIENT, "nfs connections per client limit reached");
            return None;
        }
        *n += 1;
    }
    match shared.connections.clone().try_acquire_owned() {
        Ok(p) => Some(p),
        Err(_) => {
            leave(shared, peer.ip());
            warn!(%peer, max = shared.config.max_connections, "nfs connection limit reached");
            None
        }
    }
}

/// Undoes the per-client count of [`admit`].
fn leave(shared: &Shared, ip: IpAddr) {
    let mut per = shared.per_client.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = per.get_mut(&ip) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per.remove(&ip);
        }
    }
}

/// Keepalives and a user timeout: a client that vanished (powered off mid-transfer) is noticed
/// and its connection's budget freed.
fn tune_socket(sock: &TcpStream) {
    let s = socket2::SockRef::from(sock);
    let _ = s.set_nodelay(true);
    let ka = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    let _ = s.set_tcp_keepalive(&ka);
    let _ = s.set_tcp_user_timeout(Some(Duration::from_secs(120)));
}

/// A reply on its way to the socket, with the READ budget it holds until written.
struct Outgoing {
    body: Vec<u8>,
    _budget: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

async fn connection(
    sock: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut stopped: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let _active = Active::enter(&shared, peer.ip());
    debug!(%peer, "nfs connection open");
    tune_socket(&sock);
    let (mut rd, wr) = sock.into_split();
    let (tx, rx) = mpsc::channel(REPLY_QUEUE);
    let writer = tokio::spawn(writer(wr, rx));
    let conn_budget = Arc::new(Semaphore::new(CONN_READ_KIB as usize));
    let mut deframer = Deframer::new();
    let mut buf = vec![0u8; SOCKET_READ_BUF];
    let idle = shared.config.idle_timeout;
    let why = 'conn: loop {
        let n = tokio::select! {
            _ = stopped.changed() => break 'conn "shutdown",
            r = tokio::time::timeout(idle, rd.read(&mut buf)) => match r {
                Err(_) => break 'conn "idle",
                Ok(Ok(0)) => break 'conn "closed by client",
                Ok(Ok(n)) => n,
                Ok(Err(_)) => break 'conn "read error",
            },
        };
        let mut input = buf.get(..n).unwrap_or_default();
        while let Some(frame) = deframer.feed(&mut input) {
            let out = match ops::handle_frame(&frame, &*shared.fs, &shared.calls) {
                Action::Reply(body) if body.len() > SMALL_REPLY => {
                    let kib = u32::try_from(body.len().div_ceil(1024)).unwrap_or(u32::MAX);
                    let Some(budget) = read_budget(&shared, &conn_budget, kib).await else {
                        break 'conn "shutdown";
                    };
                    Outgoing {
                        body,
                        _budget: Some(budget),
                    }
                }
                Action::Reply(body) => Outgoing {
                    body,
                    _budget: None,
                },
                Action::Read(req) => {
                    let kib = req.count.div_ceil(1024).max(1);
                    let Some(budget) = read_budget(&shared, &conn_budget, kib).await else {
                        break 'conn "shutdown";
                    };
                    let fs = shared.fs.clone();
                    let tx = tx.clone();
                    // The reader goes on with the next record; the reply joins the queue
                    // whenever the read is done (RPC replies need not be in order).
                    tokio::spawn(async move {
                        let body = tokio::task::spawn_blocking(move || ops::read_reply(&req, &*fs))
                            .await
                            .unwrap_or_else(|_| {
                                crate::rpc::accepted_error(
                                    req.xid,
                                    crate::rpc::AcceptStat::SystemErr,
                                )
                            });
                        let _ = tx
                            .send(Outgoing {
                                body,
                                _budget: Some(budget),
                            })
                            .await;
                    });
                    continue;
                }
                Action::Ignore => continue,
                Action::Close => break 'conn "undecodable record",
            };
            if tx.send(out).await.is_err() {
                break 'conn "write error";
            }
        }
    };
    drop(tx);
    let _ = writer.await;
    debug!(%peer, reason = why, "nfs connection closed");
}

/// Counts a connection as active for as long as it lives, including when its task is aborted at
/// shutdown.
struct Active<'a>(&'a Shared, IpAddr);

impl<'a> Active<'a> {
    fn enter(shared: &'a Shared, ip: IpAddr) -> Self {
        shared.active.fetch_add(1, Ordering::Relaxed);
        Active(shared, ip)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        leave(self.0, self.1);
    }
}

/// Waits for READ buffer budget: the connection's first, then the server's (always in this
/// order, so two connections cannot deadlock).
async fn read_budget(
    shared: &Shared,
    conn: &Arc<Semaphore>,
    kib: u32,
) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
    let c = conn
        .clone()
        .acquire_many_owned(kib.clamp(MIN_READ_COST_KIB, CONN_READ_KIB))
        .await
        .ok()?;
    let total = u32::try_from(TOTAL_READ_KIB).unwrap_or(u32::MAX);
    let g = shared
        .read_budget
        .clone()
        .acquire_many_owned(kib.min(total))
        .await
        .ok()?;
    Some((c, g))
}

/// Writes queued replies, flushing only when the queue is empty so bursts of small replies go
/// out in one write. A write that makes no progress for [`WRITE_TIMEOUT`] ends the connection
/// (dropping the queue releases the budgets its replies hold).
async fn writer(wr: OwnedWriteHalf, mut rx: mpsc::Receiver<Outgoing>) {
    let mut w = BufWriter::with_capacity(WRITE_BUF, wr);
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        while let Some(out) = next {
            match tokio::time::timeout(WRITE_TIMEOUT, send(&mut w, &out.body)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
            next = rx.try_recv().ok();
        }
        match tokio::time::timeout(WRITE_TIMEOUT, w.flush()).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
    let _ = w.shutdown().await;
}

async fn send(w: &mut BufWriter<OwnedWriteHalf>, body: &[u8]) -> io::Result<()> {
    let mark = record::reply_mark(body.len());
    if mark.len() + body.len() <= WRITE_BUF - w.buffer().len() {
        // Small replies gather in the buffer and leave together.
        w.write_all(&mark).await?;
        return w.write_all(body).await;
    }
    // A big reply (READ data): what is buffered goes first, then the record mark and the body
    // in one vectored write straight to the socket, without copying the body through the
    // buffer or sending the 4-byte mark as a segment of its own.
    w.flush().await?;
    let sock = w.get_mut();
    let total = mark.len() + body.len();
    let mut done = 0;
    while done < total {
        let n = if done < mark.len() {
            let parts = [io::IoSlice::new(&mark[done..]), io::IoSlice::new(body)];
            sock.write_vectored(&parts).await?
        } else {
            sock.write(&body[done - mark.len()..]).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_list() {
        let v4 = |s: &str| s.parse::<IpAddr>().unwrap();
        let allow = vec![
            (v4("10.78.0.0"), 16),
            (v4("192.168.1.7"), 32),
            (v4("fd00::"), 8),
        ];
        assert!(allowed(&allow, v4("10.78.3.4")));
        assert!(!allowed(&allow, v4("10.79.0.1")));
        assert!(allowed(&allow, v4("192.168.1.7")));
        assert!(!allowed(&allow, v4("192.168.1.8")));
        assert!(allowed(&allow, v4("::ffff:10.78.0.1")));
        assert!(allowed(&allow, v4("fd12::1")));
        assert!(!allowed(&allow, v4("fe80::1")));
        assert!(allowed(&[], v4("1.2.3.4")));
        assert!(allowed(&[(v4("0.0.0.0"), 0)], v4("1.2.3.4")));
        assert!(!allowed(&[(v4("0.0.0.0"), 0)], v4("::2")));
        // Oversized prefixes are clamped, not a panic.
        assert!(allowed(&[(v4("1.2.3.4"), 200)], v4("1.2.3.4")));
    }
}
