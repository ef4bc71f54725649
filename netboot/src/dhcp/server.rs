//! The tokio edge: sockets, group commit of the lease journal, sending replies, reporting
//! events. No protocol policy lives here (that is [`Handler`]).
//!
//! One loop serves everything: wait until a socket is readable, drain every datagram queued on
//! it (up to [`MAX_BATCH`]), let the handler decide, write all new lease records with one
//! `write` + one `fdatasync` (off the async threads), and only then send the replies and report
//! the events. Under load a batch grows while the previous fsync runs, so the cost of a sync is
//! shared by many clients.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use crate::node::{BootObserver, MacAddr, NodeDirectory};

use super::config::{ConfigError, DhcpConfig, DhcpMode};
use super::handler::{Decision, Delivery, Handler, ListenPort, RecvMeta, Reply};
use super::journal::{Journal, JournalError};
use super::leases::{LeaseInfo, Secs};

/// Most datagrams handled between two journal commits.
pub const MAX_BATCH: usize = 512;
/// Receive buffer per datagram; longer datagrams are cut (and their options then look
/// truncated, which the parser handles).
const RECV_BUF: usize = 2048;
/// Kernel receive buffer, so bursts queue while a batch is being synced.
const SOCKET_RCVBUF: usize = 4 << 20;

/// Errors of the DHCP server.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("DHCP socket {what}: {source}")]
    Socket {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("DHCP journal task failed: {0}")]
    Task(String),
}

/// The current time as the handler wants it.
pub fn unix_now() -> Secs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct Shared {
    handler: Mutex<Handler>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Handler> {
        // A panic while holding the lock would be a bug in the handler; the table itself stays
        // consistent between packets, so keep serving rather than poison every later call.
        self.handler.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A cheap handle to query a running server (the appliance's `node list` and status pages).
#[derive(Clone)]
pub struct DhcpStatus {
    shared: Arc<Shared>,
    directory: Arc<dyn NodeDirectory>,
}

impl DhcpStatus {
    /// Current offered and bound leases, sorted by address.
    pub fn leases(&self) -> Vec<LeaseInfo> {
        self.shared.lock().leases(unix_now(), &*self.directory)
    }

    /// The current lease of an address, if any (maps a TFTP/HTTP client address to its MAC).
    pub fn lease_by_ip(&self, ip: Ipv4Addr) -> Option<LeaseInfo> {
        self.shared
            .lock()
            .lease_by_ip(ip, unix_now(), &*self.directory)
    }
}

/// The DHCP server: configuration, lease state, node directory and observer.
pub struct DhcpServer {
    cfg: DhcpConfig,
    shared: Arc<Shared>,
    journal: Option<Journal>,
    directory: Arc<dyn NodeDirectory>,
    observer: Arc<dyn BootObserver>,
}

impl DhcpServer {
    /// Validates the configuration and, in server mode, opens and replays the lease journal in
    /// `state_dir` (created if missing). No socket is opened yet.
    pub fn new(
        cfg: DhcpConfig,
        state_dir: &Path,
        directory: Arc<dyn NodeDirectory>,
        observer: Arc<dyn BootObserver>,
    ) -> Result<DhcpServer, DhcpError> {
        let mut handler = Handler::new(&cfg)?;
        let journal = if cfg.mode == DhcpMode::Server {
            let (journal, replay) = Journal::open(state_dir, cfg.fsync)?;
            handler.restore(&replay.records, unix_now());
            tracing::info!(
                path = %journal.path().display(),
                records = replay.records.len(),
                leases = handler.table().bound_count(),
                "lease journal replayed"
            );
            Some(journal)
        } else {
            None
        };
        Ok(DhcpServer {
            cfg,
            shared: Arc::new(Shared {
                handler: Mutex::new(handler),
            }),
            journal,
            directory,
            observer,
        })
    }

    /// A handle for lease queries, valid while and after the server runs.
    pub fn status(&self) -> DhcpStatus {
        DhcpStatus {
            shared: self.shared.clone(),
            directory: self.directory.clone(),
        }
    }

    /// Serves until `shutdown` completes. Pending journal writes are finished first.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), DhcpError> {
        tokio::select! {
            r = self.run() => r,
            () = shutdown => Ok(()),
        }
    }

    /// Runs the server on a private single-threaded tokio runtime, blocking the calling thread
    /// (for programs and tests that have no runtime of their own).
    pub fn run_blocking(self) -> Result<(), DhcpError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| sock_err("runtime", e))?;
        rt.block_on(self.run())
    }

    /// Binds the sockets and serves forever (until the future is dropped, which is safe at any
    /// point: a reply is only sent after its lease record is durable). Returns at once, without
    /// binding anything, when `mode = "off"`.
    pub async fn run(mut self) -> Result<(), DhcpError> {
        if self.cfg.mode == DhcpMode::Off {
            return Ok(());
        }
        let iface = self.cfg.interface.clone();
        let dhcp = bind_udp(67, iface.as_deref())?;
        let pxe = if self.cfg.mode == DhcpMode::Proxy {
            Some(bind_udp(4011, iface.as_deref())?)
        } else {
            None
        };
        tracing::info!(mode = ?self.cfg.mode, interface = iface.as_deref().unwrap_or("*"), "DHCP server listening");
        let mut buf = vec![0u8; RECV_BUF];
        let mut decisions: Vec<Decision> = Vec::with_capacity(MAX_BATCH);
        loop {
            match &pxe {
                Some(p) => {
                    tokio::select! {
                        r = dhcp.readable() => r,
                        r = p.readable() => r,
                    }
                }
                None => dhcp.readable().await,
            }
            .map_err(|e| sock_err("wait", e))?;
            let now = unix_now();
            {
                let mut h = self.shared.lock();
                drain(
                    &dhcp,
                    ListenPort::Dhcp,
                    &mut buf,
                    &mut h,
                    now,
                    &*self.directory,
                    &mut decisions,
                );
                if let Some(p) = &pxe {
                    drain(
                        p,
                        ListenPort::Pxe,
                        &mut buf,
                        &mut h,
                        now,
                        &*self.directory,
                        &mut decisions,
                    );
                }
                if let Some(j) = self.journal.as_mut() {
                    for rec in h.drain_records() {
                        j.append(&rec);
                    }
                }
            }
            let durable = self.commit().await?;
            for d in decisions.drain(..) {
                if let Some(reply) = d.reply {
                    if reply.durable && !durable {
                        // Not persisted: no ACK, and no "bound" event either.
                        continue;
                    }
                    let sock = match (&pxe, reply.to) {
                        (Some(p), Delivery::Unicast(a)) if a.port() != 67 && a.port() != 68 => p,
                        _ => &dhcp,
                    };
                    send(sock, &reply, iface.as_deref()).await;
                }
                for e in d.events {
                    e.report(&*self.observer);
                }
            }
        }
    }

    /// Commits pending journal records (and compacts when due). Returns whether replies that
    /// promise a lease may go out.
    async fn commit(&mut self) -> Result<bool, DhcpError> {
        let Some(mut journal) = self.journal.take() else {
            return Ok(true);
        };
        if !journal.has_pending() {
            self.journal = Some(journal);
            return Ok(true);
        }
        let live = self.shared.lock().table().len();
        let snapshot = if journal.needs_compaction(live) {
            Some(self.shared.lock().table().snapshot())
        } else {
            None
        };
        let (journal, ok) = tokio::task::spawn_blocking(move || {
            let ok = match journal.commit() {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "cannot write the lease journal; withholding ACKs");
                    false
                }
            };
            if let (true, Some(snap)) = (ok, snapshot) {
                if let Err(e) = journal.compact(&snap) {
                    tracing::error!(error = %e, "lease journal compaction failed (journal kept as is)");
                }
            }
            (journal, ok)
        })
        .await
        .map_err(|e| DhcpError::Task(e.to_string()))?;
        self.journal = Some(journal);
        Ok(ok)
    }
}

#[allow(clippy::too_many_arguments)]
fn drain(
    sock: &UdpSocket,
    port: ListenPort,
    buf: &mut [u8],
    h: &mut Handler,
    now: Secs,
    dir: &dyn NodeDirectory,
    out: &mut Vec<Decision>,
) {
    for _ in 0..MAX_BATCH {
        match sock.try_recv_from(buf) {
            Ok((n, SocketAddr::V4(src))) => {
                let d = h.handle(&buf[..n], &RecvMeta { src, port }, now, dir);
                if d.reply.is_some() || !d.events.is_empty() {
                    out.push(d);
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::warn!(error = %e, "DHCP receive failed");
                return;
            }
        }
    }
}

fn sock_err(what: impl Into<String>, source: io::Error) -> DhcpError {
    DhcpError::Socket {
        what: what.into(),
        source,
    }
}

/// A UDP socket on 0.0.0.0:`port` with SO_REUSEADDR, SO_BROADCAST and (when an interface is
/// configured) SO_BINDTODEVICE, so replies and broadcasts leave through that interface only.
fn bind_udp(port: u16, iface: Option<&str>) -> Result<UdpSocket, DhcpError> {
    let what = format!("0.0.0.0:{port}");
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| sock_err(&what, e))?;
    s.set_reuse_address(true).map_err(|e| sock_err(&what, e))?;
    s.set_broadcast(true).map_err(|e| sock_err(&what, e))?;
    if let Some(i) = iface {
        s.bind_device(Some(i.as_bytes()))
            .map_err(|e| sock_err(format!("{what} on {i}"), e))?;
    }
    // Best effort: a smaller buffer only means more drops under a flood.
    let _ = s.set_recv_buffer_size(SOCKET_RCVBUF);
    s.set_nonblocking(true).map_err(|e| sock_err(&what, e))?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())
        .map_err(|e| sock_err(&what, e))?;
    UdpSocket::from_std(s.into()).map_err(|e| sock_err(&what, e))
}

async fn send(sock: &UdpSocket, reply: &Reply, iface: Option<&str>) {
    if reply.bytes.is_empty() {
        return;
    }
    let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, 68);
    let to = match reply.to {
        Delivery::Broadcast => broadcast,
        Delivery::Unicast(a) => a,
        Delivery::UnicastNoArp { ip, mac } => match iface {
            Some(i) => match set_arp(sock, i, ip, mac) {
                Ok(()) => SocketAddrV4::new(ip, 68),
                Err(e) => {
                    tracing::debug!(error = %e, %ip, "cannot add an ARP entry; broadcasting");
                    broadcast
                }
            },
            None => broadcast,
        },
    };
    let res = match sock.try_send_to(&reply.bytes, to.into()) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            sock.send_to(&reply.bytes, to).await.map(|_| ())
        }
        r => r.map(|_| ()),
    };
    if let Err(e) = res {
        tracing::warn!(error = %e, to = %to, "DHCP send failed");
    }
}

const ATF_COM: libc::c_int = 0x02;

/// Inserts `ip → mac` into the ARP table of `iface` (SIOCSARP), so a reply can be unicast to a
/// client that does not answer ARP yet. The entry is a normal, aging one (ATF_COM).
fn set_arp(sock: &UdpSocket, iface: &str, ip: Ipv4Addr, mac: MacAddr) -> io::Result<()> {
    // SAFETY: arpreq is plain old data; all-zero is a valid value.
    let mut req: libc::arpreq = unsafe { std::mem::zeroed() };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux; we copy bytes only.
    unsafe {
        std::ptr::copy_nonoverlapping(
            &sin as *const libc::sockaddr_in as *const u8,
            &mut req.arp_pa as *mut libc::sockaddr as *mut u8,
            std::mem::size_of::<libc::sockaddr_in>(),
        );
    }
    req.arp_ha.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in req.arp_ha.sa_data.iter_mut().zip(mac.0) {
        *d = s as libc::c_char;
    }
    req.arp_flags = ATF_COM;
    for (d, s) in req.arp_dev.iter_mut().zip(iface.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    // SAFETY: valid fd, valid pointer to an initialised arpreq for the duration of the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSARP as _, &req) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
