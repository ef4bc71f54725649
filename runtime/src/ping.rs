//! The ping-node tiebreaker: ICMP echo to the configured nodes every keepalive, from a thread
//! of its own. A master "reaches its ping nodes" when any of them answered within deadtime —
//! the same window the peer gets before it is declared dead, so both verdicts age alike.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use std::os::fd::AsFd;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use socket2::{Domain, Protocol, Socket, Type};

/// Runs on its own thread, calling `report` with `true`/`false` whenever reachability changes,
/// until `report` returns false.
pub fn spawn(
    targets: Vec<IpAddr>,
    interval: Duration,
    window: Duration,
    realtime: bool,
    mut report: impl FnMut(bool) -> bool + Send + 'static,
) -> anyhow::Result<()> {
    let v4 = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    let v6 = Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?;
    v4.set_nonblocking(true)?;
    v6.set_nonblocking(true)?;
    let id = (std::process::id() & 0xffff) as u16;
    std::thread::Builder::new()
        .name("hb-ping".into())
        .spawn(move || {
            if realtime {
                crate::links::make_realtime("ping tiebreaker");
            }
            let mut last_reply: Option<Instant> = None;
            let mut reported: Option<bool> = None;
            let mut seq: u16 = 0;
            let mut next_send = Instant::now();
            let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
            loop {
                let now = Instant::now();
                if now >= next_send {
                    seq = seq.wrapping_add(1);
                    for t in &targets {
                        let (sock, pkt) = match t {
                            IpAddr::V4(_) => (&v4, echo_request(8, id, seq, true)),
                            IpAddr::V6(_) => (&v6, echo_request(128, id, seq, false)),
                        };
                        let _ = sock.send_to(&pkt, &SocketAddr::new(*t, 0).into());
                    }
                    next_send = now + interval;
                }
                let wait = next_send.saturating_duration_since(Instant::now());
                let mut fds = [
                    PollFd::new(v4.as_fd(), PollFlags::POLLIN),
                    PollFd::new(v6.as_fd(), PollFlags::POLLIN),
                ];
                let ms = u16::try_from(wait.as_millis().max(1)).unwrap_or(u16::MAX);
                let _ = poll(&mut fds, PollTimeout::from(ms));
                for (sock, v6) in [(&v4, false), (&v6, true)] {
                    while let Ok((n, from)) = sock.recv_from(&mut buf) {
                        // SAFETY: recv_from initialised the first `n` bytes.
                        let pkt: &[u8] =
                            unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), n) };
                        let from_target =
                            from.as_socket().is_some_and(|a| targets.contains(&a.ip()));
                        if from_target && is_echo_reply(pkt, id, v6) {
                            last_reply = Some(Instant::now());
                        }
                    }
                }
                let reachable = last_reply.is_some_and(|t| t.elapsed() < window);
                if reported != Some(reachable) {
                    reported = Some(reachable);
                    if !report(reachable) {
                        return;
                    }
                }
            }
        })?;
    Ok(())
}

/// An ICMP (v4 type 8) or ICMPv6 (type 128) echo request. The kernel fills the ICMPv6
/// checksum of raw sockets itself; the v4 one is ours.
fn echo_request(kind: u8, id: u16, seq: u16, v4_checksum: bool) -> Vec<u8> {
    let mut p = vec![kind, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"clustermaker-ping");
    if v4_checksum {
        let sum = internet_checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// Raw IPv4 sockets deliver the IP header; raw ICMPv6 sockets do not.
fn is_echo_reply(pkt: &[u8], id: u16, v6: bool) -> bool {
    let icmp = if v6 {
        pkt
    } else {
        let ihl = usize::from(pkt.first().map_or(0, |b| b & 0x0f)) * 4;
        if ihl < 20 || pkt.len() < ihl {
            return false;
        }
        &pkt[ihl..]
    };
    let reply_type = if v6 { 129 } else { 0 };
    icmp.len() >= 8 && icmp[0] == reply_type && icmp[4..6] == id.to_be_bytes()
}

/// The ones'-complement sum of RFC 1071, over whatever the caller says it covers.
pub(crate) fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_request_verifies() {
        let p = echo_request(8, 0x1234, 7, true);
        assert_eq!(internet_checksum(&p), 0);
    }

    #[test]
    fn reply_matching() {
        let mut ip = vec![0x45u8; 1];
        ip.resize(20, 0);
        let mut reply = echo_request(0, 42, 1, true);
        let mut v4 = ip.clone();
        v4.append(&mut reply);
        assert!(is_echo_reply(&v4, 42, false));
        assert!(!is_echo_reply(&v4, 43, false));
        assert!(!is_echo_reply(&v4[..22], 42, false));
        assert!(!is_echo_reply(&[], 42, false));
        let v6 = echo_request(129, 42, 1, false);
        assert!(is_echo_reply(&v6, 42, true));
    }
}
