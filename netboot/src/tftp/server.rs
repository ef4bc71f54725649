//! The I/O edge: the request socket, one task and one ephemeral socket per transfer.
//!
//! - Requests arrive on the listen socket (port 69). Each accepted request gets its own UDP
//!   socket bound to the *local address the request arrived on* and an ephemeral port (its TID,
//!   RFC 1350 §4), so replies always come from the boot address. With a specific listen address
//!   that is the listen address; when listening on `0.0.0.0` or `::`, `IP_PKTINFO` /
//!   `IPV6_RECVPKTINFO` tells which local address each request was sent to.
//! - Refusals (bad request, missing file, busy) are sent from such a socket as well.
//! - Datagrams reaching a transfer socket from another address or port get ERROR 5 and do not
//!   touch the transfer.
//! - A request identical to one being served, from the same client address and port, is a
//!   retransmitted RRQ: it is dropped rather than starting a second transfer.
//! - At most `max_transfers` run at once; more are refused with ERROR 0 "Server busy".
//! - Dropping the future of [`TftpServer::run`] aborts every transfer it started.

use std::collections::HashSet;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use nix::sys::socket::{self as nixsock, ControlMessageOwned, MsgFlags, SockaddrStorage};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::config::TftpConfig;
use super::error::TftpError;
use super::observer::{CompletedTransfer, TransferObserver};
use super::options::Limits;
use super::packet::{self, ClientPacket, ErrorCode, Escaped};
use super::reader::BlockReader;
use super::request::{self, Decision, ReadRequest};
use super::source::TftpSource;
use super::transfer::{Action, Outcome, Transfer, TransferParams};

/// Largest datagram read on the request port: any UDP datagram fits, so nothing is truncated
/// into something that parses differently. Requests longer than [`packet::MAX_REQUEST_LEN`] are
/// refused by the parser.
const REQUEST_BUF: usize = 65_536;
/// Largest datagram read on a transfer port: ACKs are 4 bytes, ERRORs a short text.
const TRANSFER_BUF: usize = 1024;

/// Counters of a running server, shared with whoever holds a copy.
#[derive(Clone, Debug, Default)]
pub struct TftpCounters(Arc<Cells>);

#[derive(Debug, Default)]
struct Cells {
    active: AtomicUsize,
    completed: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
}

impl TftpCounters {
    /// Transfers running now (a transfer's slot is freed the moment it ends).
    pub fn active(&self) -> usize {
        self.0.active.load(Ordering::SeqCst)
    }

    /// Transfers acknowledged to the last block.
    pub fn completed(&self) -> u64 {
        self.0.completed.load(Ordering::Relaxed)
    }

    /// Transfers started but not completed (client error, timeout, read error).
    pub fn failed(&self) -> u64 {
        self.0.failed.load(Ordering::Relaxed)
    }

    /// Requests answered with an ERROR before any data was sent.
    pub fn refused(&self) -> u64 {
        self.0.refused.load(Ordering::Relaxed)
    }
}

struct Shared {
    limits: Limits,
    retries: u32,
    max_transfers: usize,
    source: Arc<dyn TftpSource>,
    observer: Arc<dyn TransferObserver>,
    counters: TftpCounters,
    /// (client address, hash of the request) of every running transfer, to drop retransmitted
    /// requests.
    running: Mutex<HashSet<RequestKey>>,
}

/// A read-only TFTP server on tokio.
pub struct TftpServer {
    socket: std::net::UdpSocket,
    local: SocketAddr,
    pktinfo: bool,
    shared: Arc<Shared>,
}

impl TftpServer {
    /// Validates `config` and binds the request socket on `listen` (e.g. `10.0.0.1:69`). Works
    /// outside a tokio runtime; [`TftpServer::run`] needs one.
    pub fn bind(
        listen: SocketAddr,
        config: TftpConfig,
        source: Arc<dyn TftpSource>,
        observer: Arc<dyn TransferObserver>,
    ) -> Result<TftpServer, TftpError> {
        config.validate()?;
        let bind_err = |source| TftpError::Bind {
            addr: listen,
            source,
        };
        let socket = Socket::new(
            Domain::for_address(listen),
            Type::DGRAM,
            Some(Protocol::UDP),
        )
        .map_err(bind_err)?;
        if listen.is_ipv6() {
            // `::` must not also take IPv4 (mapped addresses would need their own pktinfo path).
            socket.set_only_v6(true).map_err(bind_err)?;
        }
        // A boot storm sends hundreds of requests at once; a larger buffer keeps them.
        let _ = socket.set_recv_buffer_size(1 << 20);
        socket.set_nonblocking(true).map_err(bind_err)?;
        socket.bind(&listen.into()).map_err(bind_err)?;
        let pktinfo = listen.ip().is_unspecified();
        if pktinfo {
            match listen {
                SocketAddr::V4(_) => {
                    nixsock::setsockopt(&socket, nixsock::sockopt::Ipv4PacketInfo, &true)
                }
                SocketAddr::V6(_) => {
                    nixsock::setsockopt(&socket, nixsock::sockopt::Ipv6RecvPacketInfo, &true)
                }
            }
            .map_err(|e| bind_err(e.into()))?;
        }
        let socket: std::net::UdpSocket = socket.into();
        let local = socket.local_addr().map_err(bind_err)?;
        Ok(TftpServer {
            socket,
            local,
            pktinfo,
            shared: Arc::new(Shared {
                limits: config.limits(),
                retries: config.retries,
                max_transfers: config.max_transfers,
                source,
                observer,
                counters: TftpCounters::default(),
                running: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The address the request socket is bound to (with the real port when 0 was asked).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server's counters (a handle: stays live while the server runs).
    pub fn counters(&self) -> TftpCounters {
        self.shared.counters.clone()
    }

    /// Serves requests until the request socket fails. Cancel by dropping the future (or
    /// aborting its task): in-flight transfers are aborted with it.
    pub async fn run(self) -> Result<(), TftpError> {
        let socket = UdpSocket::from_std(self.socket)?;
        let mut tasks = JoinSet::new();
        let mut buf = vec![0u8; REQUEST_BUF];
        info!(listen = %self.local, "TFTP server listening");
        loop {
            tokio::select! {
                received = recv_request(&socket, &mut buf, self.pktinfo, self.local.ip()) => {
                    match received {
                        Ok((n, peer, local_ip)) => {
                            handle_request(&self.shared, &buf[..n], peer, local_ip, &mut tasks)
                        }
                        // ICMP errors reported on the socket, signals: not fatal.
                        Err(e) if matches!(
                            e.kind(),
                            io::ErrorKind::ConnectionRefused
                                | io::ErrorKind::ConnectionReset
                                | io::ErrorKind::Interrupted
                        ) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = joined {
                        if e.is_panic() {
                            error!("TFTP transfer task panicked: {e}");
                        }
                    }
                }
            }
        }
    }
}

/// Receives one request: its length, the client, and the local address it was sent to.
async fn recv_request(
    socket: &UdpSocket,
    buf: &mut [u8],
    pktinfo: bool,
    listen_ip: IpAddr,
) -> io::Result<(usize, SocketAddr, IpAddr)> {
    if !pktinfo {
        let (n, peer) = socket.recv_from(buf).await?;
        return Ok((n, peer, listen_ip));
    }
    loop {
        socket.readable().await?;
        match socket.try_io(Interest::READABLE, || {
            recv_with_pktinfo(socket.as_raw_fd(), buf)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

fn recv_with_pktinfo(
    fd: std::os::fd::RawFd,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, IpAddr)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut cmsg = nix::cmsg_space!(libc::in_pktinfo, libc::in6_pktinfo);
    let msg = nixsock::recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let peer = msg.address.as_ref().and_then(|a| {
        if let Some(v4) = a.as_sockaddr_in() {
            Some(SocketAddr::V4(SocketAddrV4::from(*v4)))
        } else {
            a.as_sockaddr_in6()
                .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
        }
    });
    let mut local = None;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            // ipi_spec_dst: the local address replies should come from (the interface's own
            // address even when the request was broadcast).
            ControlMessageOwned::Ipv4PacketInfo(pi) => {
                local = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    pi.ipi_spec_dst.s_addr,
                ))))
            }
            ControlMessageOwned::Ipv6PacketInfo(pi) => {
                local = Some(IpAddr::V6(Ipv6Addr::from(pi.ipi6_addr.s6_addr)))
            }
            _ => {}
        }
    }
    match (peer, local) {
        (Some(peer), Some(local)) => Ok((msg.bytes, peer, local)),
        // Without both we cannot answer correctly; treat as a signal-like non-event.
        _ => Err(io::Error::from(io::ErrorKind::Interrupted)),
    }
}

fn handle_request(
    shared: &Arc<Shared>,
    datagram: &[u8],
    peer: SocketAddr,
    local_ip: IpAddr,
    tasks: &mut JoinSet<()>,
) {
    let req = match request::decide(datagram, &shared.limits) {
        Decision::Serve(req) => req,
        Decision::Ignore(why) => {
            debug!(%peer, why, "TFTP datagram dropped");
            return;
        }
        Decision::Refuse(e) => {
            let name = packet::parse_request(datagram)
                .map(|r| Escaped(r.filename).to_string())
                .unwrap_or_default();
            warn!(%peer, file = %name, reason = %e, "TFTP request refused");
            shared.counters.0.refused.fetch_add(1, Ordering::Relaxed);
            let (code, message) = e.reply();
            send_refusal(local_ip, peer, code, message);
            return;
        }
    };
    let key = RequestKey::new(peer, datagram);
    match Slot::claim(shared, key) {
        Ok(slot) => {
            tasks.spawn(run_transfer(Arc::clone(shared), req, peer, local_ip, slot));
        }
        Err(Busy::Repeated) => {
            debug!(%peer, "TFTP request repeated while its transfer runs; dropped");
        }
        Err(Busy::Full) => {
            warn!(
                %peer, path = %req.path, max = shared.max_transfers,
                "TFTP request refused: too many transfers"
            );
            shared.counters.0.refused.fetch_add(1, Ordering::Relaxed);
            send_refusal(local_ip, peer, ErrorCode::NotDefined, "Server busy");
        }
    }
}

/// Why no slot was claimed.
enum Busy {
    /// The same request from the same client address is being served (a retransmitted RRQ).
    Repeated,
    /// `max_transfers` are running.
    Full,
}

/// Identifies a request: who sent it and what it asked, exactly. A client that retransmits its
/// RRQ before seeing the first reply sends the same bytes from the same port: that must not start
/// a second transfer. A *different* request from the same port is a new transfer (a PXE ROM that
/// aborted its tsize probe and asks again may reuse its port, and its ERROR may not have been
/// processed yet); the old transfer then ends on its own (the client answers it with ERROR 5).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct RequestKey {
    peer: SocketAddr,
    request: u64,
}

impl RequestKey {
    fn new(peer: SocketAddr, datagram: &[u8]) -> RequestKey {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        datagram.hash(&mut h);
        RequestKey {
            peer,
            request: h.finish(),
        }
    }
}

/// A transfer's claim on a concurrency slot and on its request key; released on drop, so a
/// transfer that ends in any way (or is aborted) frees both at once.
struct Slot {
    shared: Arc<Shared>,
    key: RequestKey,
}

impl Slot {
    fn claim(shared: &Arc<Shared>, key: RequestKey) -> Result<Slot, Busy> {
        let mut running = shared.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.contains(&key) {
            return Err(Busy::Repeated);
        }
        let active = &shared.counters.0.active;
        if active.load(Ordering::SeqCst) >= shared.max_transfers {
            return Err(Busy::Full);
        }
        running.insert(key);
        active.fetch_add(1, Ordering::SeqCst);
        Ok(Slot {
            shared: Arc::clone(shared),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut running = self
            .shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        running.remove(&self.key);
        self.shared.counters.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The local address to bind for talking to `peer` from `local_ip` (link-local IPv6 needs the
/// peer's scope).
fn local_bind_addr(local_ip: IpAddr, peer: SocketAddr) -> SocketAddr {
    match (local_ip, peer) {
        (IpAddr::V6(ip), SocketAddr::V6(p)) if ip.segments()[0] & 0xffc0 == 0xfe80 => {
            SocketAddr::V6(SocketAddrV6::new(ip, 0, 0, p.scope_id()))
        }
        (ip, _) => SocketAddr::new(ip, 0),
    }
}

/// Sends a refusal from a fresh socket on the request's local address (a new TID).
fn send_refusal(local_ip: IpAddr, peer: SocketAddr, code: ErrorCode, message: &str) {
    let sent = std::net::UdpSocket::bind(local_bind_addr(local_ip, peer))
        .and_then(|s| s.send_to(&packet::error_packet(code, message), peer));
    if let Err(e) = sent {
        debug!(%peer, "cannot send TFTP error: {e}");
    }
}

/// Why a transfer stopped without completing, beyond the client's doing.
enum Failure {
    Client(u16, String),
    GaveUp,
    Io(io::Error),
}

async fn run_transfer(
    shared: Arc<Shared>,
    req: ReadRequest,
    peer: SocketAddr,
    local_ip: IpAddr,
    _slot: Slot,
) {
    let started = Instant::now();
    let socket = match std::net::UdpSocket::bind(local_bind_addr(local_ip, peer)).and_then(|s| {
        s.set_nonblocking(true)?;
        UdpSocket::from_std(s)
    }) {
        Ok(s) => s,
        Err(e) => {
            warn!(%peer, path = %req.path, "cannot open a TFTP transfer socket: {e}");
            shared.counters.0.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let source = Arc::clone(&shared.source);
    let path = req.path.clone();
    let opened = tokio::task::spawn_blocking(move || source.open(&path, peer)).await;
    let content = match opened {
        Ok(Ok(content)) => content,
        Ok(Err(e)) => {
            warn!(%peer, path = %req.path, reason = %e, "TFTP request refused");
            shared.counters.0.refused.fetch_add(1, Ordering::Relaxed);
            let (code, message) = e.reply();
            let _ = socket
                .send_to(&packet::error_packet(code, message), peer)
                .await;
            return;
        }
        Err(e) => {
            error!(%peer, path = %req.path, "TFTP source failed: {e}");
            shared.counters.0.failed.fetch_add(1, Ordering::Relaxed);
            let _ = socket
                .send_to(
                    &packet::error_packet(ErrorCode::NotDefined, "Cannot read file"),
                    peer,
                )
                .await;
            return;
        }
    };
    let neg = req.negotiated;
    let size = content.len();
    debug!(
        %peer, path = %req.path, size, blksize = neg.blksize, windowsize = neg.windowsize,
        "TFTP transfer started"
    );
    let params = TransferParams {
        size,
        blksize: neg.blksize,
        windowsize: neg.windowsize,
        timeout: neg.timeout,
        retries: shared.retries,
        send_oack: neg.ack.any(),
    };
    let mut oack = Vec::new();
    neg.ack.encode(size, &mut oack);
    let reader = BlockReader::new(content.into_body(), neg.blksize, neg.windowsize);
    let result = serve(&socket, peer, params, &oack, reader).await;
    let elapsed = started.elapsed();
    let counters = &shared.counters.0;
    match result {
        Ok(()) => {
            counters.completed.fetch_add(1, Ordering::Relaxed);
            let secs = elapsed.as_secs_f64().max(1e-9);
            info!(
                %peer, path = %req.path, bytes = size, ms = elapsed.as_millis() as u64,
                mbyte_per_s = format_args!("{:.1}", size as f64 / secs / 1e6),
                blksize = neg.blksize, windowsize = neg.windowsize,
                "TFTP transfer complete"
            );
            shared.observer.completed(&CompletedTransfer {
                client: peer,
                path: &req.path,
                bytes: size,
                duration: elapsed,
            });
        }
        Err(Failure::Client(code, message)) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            // PXE ROMs routinely abort a first request once they have the tsize: not a warning.
            info!(%peer, path = %req.path, code, message = %message.escape_debug(), "TFTP transfer aborted by the client");
        }
        Err(Failure::GaveUp) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            warn!(%peer, path = %req.path, retries = shared.retries, "TFTP transfer timed out");
        }
        Err(Failure::Io(e)) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            warn!(%peer, path = %req.path, "TFTP transfer failed: {e}");
            let _ = socket
                .send_to(
                    &packet::error_packet(ErrorCode::NotDefined, "Cannot read file"),
                    peer,
                )
                .await;
        }
    }
}

/// Drives one transfer's state machine over its socket until it ends.
async fn serve(
    socket: &UdpSocket,
    peer: SocketAddr,
    params: TransferParams,
    oack: &[u8],
    mut reader: BlockReader,
) -> Result<(), Failure> {
    let (mut transfer, mut action) = Transfer::start(params, Instant::now());
    // One packet buffer for the whole transfer: header + largest block.
    let mut pkt = vec![0u8; 4 + usize::from(params.blksize)];
    let mut rx = [0u8; TRANSFER_BUF];
    let timer = tokio::time::sleep(params.timeout);
    tokio::pin!(timer);
    loop {
        match action {
            Action::Wait => {}
            Action::SendOack => {
                socket.send_to(oack, peer).await.map_err(Failure::Io)?;
            }
            Action::SendData { first, last } => {
                for abs in first..=last {
                    let (offset, len) = transfer.block_span(abs);
                    let data = reader.block(offset, len).await.map_err(Failure::Io)?;
                    let (header, body) = pkt.split_at_mut(4);
                    let header: &mut [u8; 4] = header
                        .try_into()
                        .map_err(|_| Failure::Io(io::Error::other("packet buffer too small")))?;
                    packet::write_data_header(Transfer::wire_block(abs), header);
                    body[..len].copy_from_slice(data);
                    socket
                        .send_to(&pkt[..4 + len], peer)
                        .await
                        .map_err(Failure::Io)?;
                }
            }
            Action::Finished(Outcome::Complete) => return Ok(()),
            Action::Finished(Outcome::ClientError { code, message }) => {
                return Err(Failure::Client(code, message))
            }
            Action::Finished(Outcome::GaveUp) => return Err(Failure::GaveUp),
        }
        let Some(deadline) = transfer.deadline() else {
            return Err(Failure::GaveUp);
        };
        if timer.deadline().into_std() != deadline {
            timer.as_mut().reset(deadline.into());
        }
        action = tokio::select! {
            received = socket.recv_from(&mut rx) => {
                let (n, from) = received.map_err(Failure::Io)?;
                if from == peer {
                    transfer.on_datagram(&rx[..n], Instant::now())
                } else {
                    stray(socket, from, &rx[..n]).await;
                    Action::Wait
                }
            }
            () = &mut timer => transfer.on_timer(Instant::now()),
        };
    }
}

/// A datagram from someone other than the transfer's client: ERROR 5, unless it is itself an
/// ERROR (never answer an error).
async fn stray(socket: &UdpSocket, from: SocketAddr, datagram: &[u8]) {
    if matches!(
        packet::parse_client_packet(datagram),
        ClientPacket::Error { .. }
    ) {
        return;
    }
    debug!(%from, "datagram from an unknown TID");
    let _ = socket
        .send_to(
            &packet::error_packet(ErrorCode::UnknownTid, "Unknown transfer ID"),
            from,
        )
        .await;
}
