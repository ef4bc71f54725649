//! IPv6 router advertisements on the boot network, so iPXE does not stall.
//!
//! After its DHCPv4 lease, iPXE also runs IPv6 autoconfiguration and waits about 15 s for a
//! router advertisement before it runs the boot script when nobody answers. We answer its router
//! solicitations with an advertisement that configures nothing (router lifetime 0, no prefixes, no
//! managed/other flags): iPXE then finishes at once, and hosts on the segment are told we are not
//! a router. Measured here: a plain PXE boot went from 23–30 s to 6–7 s.

use std::net::{Ipv6Addr, SocketAddrV6};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

const ICMPV6_ROUTER_SOLICITATION: u8 = 133;
const ICMPV6_ROUTER_ADVERTISEMENT: u8 = 134;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);

/// True when `packet` (an ICMPv6 message, as a raw socket delivers it) is a well-formed router
/// solicitation (RFC 4861 6.1.1: code 0, at least 8 bytes, options of non-zero length).
pub fn is_router_solicitation(packet: &[u8]) -> bool {
    if packet.len() < 8 || packet[0] != ICMPV6_ROUTER_SOLICITATION || packet[1] != 0 {
        return false;
    }
    let mut opts = &packet[8..];
    while !opts.is_empty() {
        if opts.len() < 2 || opts[1] == 0 || opts.len() < opts[1] as usize * 8 {
            return false;
        }
        opts = &opts[opts[1] as usize * 8..];
    }
    true
}

/// A router advertisement that configures nothing: router lifetime 0, no prefix, M and O clear,
/// with our link-layer address. The kernel fills in the checksum of raw ICMPv6 sockets.
pub fn null_router_advertisement(mac: Option<[u8; 6]>) -> Vec<u8> {
    let mut ra = vec![
        ICMPV6_ROUTER_ADVERTISEMENT,
        0, // code
        0,
        0,  // checksum (kernel)
        64, // current hop limit
        0,  // flags: M = 0, O = 0
        0,
        0, // router lifetime 0: not a default router
        0,
        0,
        0,
        0, // reachable time: unspecified
        0,
        0,
        0,
        0, // retrans timer: unspecified
    ];
    if let Some(mac) = mac {
        ra.extend_from_slice(&[1, 1]); // source link-layer address option, 8 bytes
        ra.extend_from_slice(&mac);
    }
    ra
}

/// Answers router solicitations on `interface` until the task is dropped. Also sends one
/// unsolicited advertisement at start, for clients that solicited before we were up.
pub async fn serve(interface: String) -> anyhow::Result<()> {
    use anyhow::Context;
    let ifindex = nix::net::if_::if_nametoindex(interface.as_str())
        .with_context(|| format!("interface {interface} not found (check network.interface)"))?;
    let mac = interface_mac(&interface);
    let socket = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))
        .context("cannot open a raw ICMPv6 socket (needs root or CAP_NET_RAW)")?;
    socket.bind_device(Some(interface.as_bytes()))?;
    socket.set_multicast_hops_v6(255)?;
    socket.set_unicast_hops_v6(255)?;
    socket.set_multicast_if_v6(ifindex)?;
    socket.set_multicast_loop_v6(false)?;
    socket
        .join_multicast_v6(&ALL_ROUTERS, ifindex)
        .with_context(|| format!("cannot join ff02::2 on {interface}: is IPv6 enabled there?"))?;
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
    let ra = null_router_advertisement(mac);
    let dest = SocketAddrV6::new(ALL_NODES, 0, 0, ifindex);
    if let Err(e) = socket.send_to(&ra, dest).await {
        // No link-local address yet (the bridge just came up): later solicitations still work.
        tracing::debug!("unsolicited router advertisement on {interface} not sent: {e}");
    }
    tracing::info!("answering IPv6 router solicitations on {interface} (no router, no prefix)");
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = socket.recv_from(&mut buf).await?;
        if !is_router_solicitation(&buf[..n]) {
            continue;
        }
        tracing::debug!("router solicitation from {from} on {interface}");
        if let Err(e) = socket.send_to(&ra, dest).await {
            tracing::warn!("router advertisement on {interface} failed: {e}");
            // Avoid a busy loop if the interface lost its link-local address.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The interface's MAC address, from sysfs.
fn interface_mac(interface: &str) -> Option<[u8; 6]> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{interface}/address")).ok()?;
    text.trim().parse::<crate::MacAddr>().ok().map(|m| m.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_solicitations_and_rejects_malformed_ones() {
        assert!(is_router_solicitation(&[133, 0, 0, 0, 0, 0, 0, 0]));
        assert!(is_router_solicitation(&[
            133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 3, 4, 5, 6
        ]));
        assert!(!is_router_solicitation(&[133, 1, 0, 0, 0, 0, 0, 0]));
        assert!(!is_router_solicitation(&[134, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_router_solicitation(&[133, 0, 0]));
        // an option of length 0 would loop forever in a naive parser
        assert!(!is_router_solicitation(&[
            133, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0
        ]));
        // an option longer than the packet
        assert!(!is_router_solicitation(&[
            133, 0, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0
        ]));
    }

    #[test]
    fn advertisement_configures_nothing() {
        let ra = null_router_advertisement(Some([2, 0, 0, 0, 0, 1]));
        assert_eq!(ra[0], 134);
        assert_eq!(ra[5], 0, "M and O flags clear");
        assert_eq!(&ra[6..8], &[0, 0], "router lifetime 0");
        assert_eq!(&ra[16..24], &[1, 1, 2, 0, 0, 0, 0, 1]);
    }
}
