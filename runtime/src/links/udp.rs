//! UDP links: unicast to the peer, multicast to a group, or broadcast on an interface.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context};
use socket2::{Domain, Protocol, Socket, Type};

use super::{LinkCounters, LinkSender, ReceiveContext};
use crate::config::LinkConfig;
use crate::wire::MAX_MESSAGE;

pub struct UdpSender {
    socket: Arc<Socket>,
    to: socket2::SockAddr,
    counters: Arc<LinkCounters>,
}

impl LinkSender for UdpSender {
    fn send(&mut self, message: &[u8]) {
        match self.socket.send_to(message, &self.to) {
            Ok(_) => self.counters.sent.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.counters.send_errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

pub fn open(
    index: usize,
    config: &LinkConfig,
    ctx: ReceiveContext,
    counters: Arc<LinkCounters>,
) -> anyhow::Result<UdpSender> {
    let (socket, to, only_from) = match config {
        LinkConfig::Udp {
            peer,
            port,
            bind,
            interface,
        } => {
            let local = bind.unwrap_or(match peer {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            });
            let socket = bound_socket(SocketAddr::new(local, *port), interface.as_deref())?;
            (socket, SocketAddr::new(*peer, *port), Some(*peer))
        }
        LinkConfig::Mcast {
            group,
            interface,
            port,
        } => {
            let IpAddr::V4(group4) = group else {
                bail!("mcast link: only IPv4 groups are supported ({group})");
            };
            let socket = bound_socket(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), *port),
                Some(interface),
            )?;
            let ifindex = nix::net::if_::if_nametoindex(interface.as_str())
                .with_context(|| format!("mcast link: no interface {interface}"))?;
            socket
                .join_multicast_v4_n(group4, &socket2::InterfaceIndexOrAddress::Index(ifindex))
                .with_context(|| format!("mcast link: cannot join {group} on {interface}"))?;
            socket.set_multicast_if_v4(&interface_v4(interface)?)?;
            socket.set_multicast_ttl_v4(1)?;
            socket.set_multicast_loop_v4(false)?;
            (socket, SocketAddr::new(*group, *port), None)
        }
        LinkConfig::Bcast { interface, port } => {
            let socket = bound_socket(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), *port),
                Some(interface),
            )?;
            socket.set_broadcast(true)?;
            (
                socket,
                SocketAddr::new(IpAddr::V4(Ipv4Addr::BROADCAST), *port),
                None,
            )
        }
        LinkConfig::Serial { .. } => unreachable!("serial links open in serial.rs"),
    };
    socket.set_nonblocking(true)?;
    let socket = Arc::new(socket);
    counters.open.store(true, Ordering::Relaxed);
    let receiver = socket.try_clone().context("UDP link socket")?;
    receiver.set_nonblocking(false)?;
    let label = config.label();
    let rx_counters = counters.clone();
    std::thread::Builder::new()
        .name(format!("hb-rx-{index}"))
        .spawn(move || receive_loop(index, receiver, only_from, ctx, rx_counters, label))?;
    Ok(UdpSender {
        socket,
        to: to.into(),
        counters,
    })
}

fn bound_socket(addr: SocketAddr, interface: Option<&str>) -> anyhow::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    if let Some(name) = interface {
        socket
            .bind_device(Some(name.as_bytes()))
            .with_context(|| format!("cannot bind the heartbeat link to interface {name}"))?;
    }
    // Heartbeats before bulk traffic on the wire (DSCP CS6, network control).
    if addr.is_ipv4() {
        let _ = socket.set_tos(0xc0);
    }
    socket.bind(&addr.into()).with_context(|| {
        format!("cannot listen for heartbeats on {addr} (another link or program uses it? give each udp link its own `bind` or `interface`)")
    })?;
    Ok(socket)
}

fn interface_v4(name: &str) -> anyhow::Result<Ipv4Addr> {
    for ifa in nix::ifaddrs::getifaddrs()? {
        if ifa.interface_name == name {
            if let Some(a) = ifa.address.as_ref().and_then(|a| a.as_sockaddr_in()) {
                return Ok(a.ip());
            }
        }
    }
    bail!("interface {name} has no IPv4 address for multicast")
}

fn receive_loop(
    index: usize,
    socket: Socket,
    only_from: Option<IpAddr>,
    ctx: ReceiveContext,
    counters: Arc<LinkCounters>,
    label: String,
) {
    if ctx.realtime {
        super::make_realtime(&label);
    }
    // One byte more than the longest heartbeat, so a longer datagram shows as oversized
    // instead of being silently truncated into a valid-looking length.
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); MAX_MESSAGE + 1];
    loop {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::error!("heartbeat link {label}: receive failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        if let (Some(peer), Some(src)) = (only_from, from.as_socket()) {
            if src.ip() != peer {
                counters.count(crate::wire::Reject::UnknownSender);
                continue;
            }
        }
        // SAFETY: recv_from initialised the first `n` bytes.
        let bytes: &[u8] = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
        ctx.accept(index, bytes, &counters);
    }
}
