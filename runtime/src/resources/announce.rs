//! Telling the segment that a virtual IP moved: gratuitous ARP (IPv4) and unsolicited neighbour
//! advertisements (IPv6), sent as raw Ethernet frames over AF_PACKET.
//!
//! Neighbours keep the old master's MAC cached for minutes; until they learn the new one the
//! VIP is dead for them (resource-agents#1117, keepalived#2459). So the first burst goes out
//! at once on the caller's thread, and a second one ~3 s later (like keepalived's repeat) from
//! a background thread, for peers that missed the first while their link or switch port was
//! still settling. Releasing the address cancels the second burst.
//!
//! The frame builders are pure (bytes out) so they can be checked byte by byte.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

pub type Mac = [u8; 6];

/// Frames per burst (keepalived's `garp_master_repeat`, send_arp's default count).
pub const BURST: usize = 5;
/// Delay before the second burst.
pub const REPEAT_AFTER: Duration = Duration::from_secs(3);

const BROADCAST: Mac = [0xff; 6];
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

fn ethernet(dst: Mac, src: Mac, ethertype: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&dst);
    out.extend_from_slice(&src);
    out.extend_from_slice(&ethertype.to_be_bytes());
}

fn arp(op: u16, mac: Mac, ip: Ipv4Addr, target_mac: Mac) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    ethernet(BROADCAST, mac, ETH_P_ARP, &mut f);
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f.push(6);
    f.push(4);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&target_mac);
    f.extend_from_slice(&ip.octets());
    f
}

/// Gratuitous ARP request (RFC 5227 announcement form): sender and target IP are the VIP,
/// target MAC zero, broadcast.
pub fn garp_request(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    arp(1, mac, ip, [0; 6])
}

/// Gratuitous ARP reply, broadcast. The target MAC repeats the sender's: Linux only treats a
/// reply as gratuitous (and overrides a recently confirmed entry) when they are equal.
pub fn garp_reply(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    arp(2, mac, ip, mac)
}

/// Unsolicited neighbour advertisement for `target` (RFC 4861 §7.2.6): to all nodes, hop limit
/// 255 (receivers drop anything else), Override set and Solicited clear so caches replace the
/// old MAC, with the target link-layer address option.
pub fn unsolicited_na(mac: Mac, source: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let mut icmp = Vec::with_capacity(32);
    icmp.push(136); // type: neighbour advertisement
    icmp.push(0); // code
    icmp.extend_from_slice(&[0, 0]); // checksum, filled below
    icmp.extend_from_slice(&[0x20, 0, 0, 0]); // flags: Override
    icmp.extend_from_slice(&target.octets());
    icmp.push(2); // option: target link-layer address
    icmp.push(1); // length in units of 8 bytes
    icmp.extend_from_slice(&mac);
    let sum = icmpv6_checksum(source, ALL_NODES, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    // IPv6 multicast maps to 33:33 + the low 32 bits of the group.
    let g = ALL_NODES.octets();
    ethernet(
        [0x33, 0x33, g[12], g[13], g[14], g[15]],
        mac,
        ETH_P_IPV6,
        &mut f,
    );
    f.extend_from_slice(&[0x60, 0, 0, 0]); // version 6, no traffic class or flow label
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.push(58); // next header: ICMPv6
    f.push(255); // hop limit
    f.extend_from_slice(&source.octets());
    f.extend_from_slice(&ALL_NODES.octets());
    f.extend_from_slice(&icmp);
    f
}

/// The ICMPv6 checksum over the IPv6 pseudo-header and the message (RFC 4443 §2.3).
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut covered = Vec::with_capacity(40 + message.len());
    covered.extend_from_slice(&src.octets());
    covered.extend_from_slice(&dst.octets());
    covered.extend_from_slice(&(message.len() as u32).to_be_bytes());
    covered.extend_from_slice(&[0, 0, 0, 58]);
    covered.extend_from_slice(message);
    crate::ping::internet_checksum(&covered)
}

/// A raw AF_PACKET socket that sends whole Ethernet frames out of one interface.
struct FrameSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl FrameSocket {
    /// Opens the socket in the caller's network namespace. Protocol 0: send only, so the
    /// kernel never queues received traffic on it.
    fn open(ifindex: u32) -> io::Result<FrameSocket> {
        let ifindex = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?;
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(FrameSocket { fd, ifindex })
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "short frame"));
        }
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        // Already in network order in the frame: copy the bytes as they are.
        sll.sll_protocol = u16::from_ne_bytes([frame[12], frame[13]]);
        sll.sll_ifindex = self.ifindex;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the buffer and the address are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One burst: every frame `BURST` times, back to back. Tries them all and reports the
    /// first error, so one refused frame does not silence the others.
    fn burst(&self, frames: &[Vec<u8>]) -> io::Result<()> {
        let mut first_err = None;
        for _ in 0..BURST {
            for f in frames {
                if let Err(e) = self.send(f) {
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// The second burst, waiting in its thread. Dropping or cancelling it stops it.
pub struct Pending {
    cancel: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Pending {
    /// Stops the second burst if it has not gone out yet, and waits for the thread.
    pub fn cancel(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        // Closing the channel wakes the thread at once.
        self.cancel.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends the first burst now and schedules the second. `label` names the address in logs.
/// The socket is opened here, on the caller's thread, so both bursts leave through the
/// caller's network namespace.
pub fn announce(ifindex: u32, frames: Vec<Vec<u8>>, label: String) -> io::Result<Pending> {
    let socket = FrameSocket::open(ifindex)?;
    // A refused first burst (say, the link is still down) is no reason to skip the second.
    if let Err(e) = socket.burst(&frames) {
        tracing::warn!("first announcement of {label} failed: {e}");
    }
    let (tx, rx) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("announce".into())
        .spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(REPEAT_AFTER) {
                if let Err(e) = socket.burst(&frames) {
                    tracing::warn!("second announcement of {label} failed: {e}");
                }
            }
        })?;
    Ok(Pending {
        cancel: Some(tx),
        thread: Some(thread),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    #[test]
    fn garp_request_layout() {
        let f = garp_request(MAC, Ipv4Addr::new(192, 168, 1, 49));
        assert_eq!(f.len(), 42);
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[14..22], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&f[22..28], &MAC);
        assert_eq!(&f[28..32], &[192, 168, 1, 49]);
        assert_eq!(&f[32..38], &[0; 6]);
        assert_eq!(&f[38..42], &[192, 168, 1, 49]);
    }

    #[test]
    fn garp_reply_repeats_sender_mac_as_target() {
        let f = garp_reply(MAC, Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(&f[20..22], &[0, 2]);
        assert_eq!(&f[32..38], &MAC);
        assert_eq!(&f[28..32], &f[38..42]);
    }

    #[test]
    fn na_layout() {
        let src: Ipv6Addr = "fe80::11:22ff:fe33:4455".parse().unwrap();
        let target: Ipv6Addr = "fd00::49".parse().unwrap();
        let f = unsolicited_na(MAC, src, target);
        assert_eq!(f.len(), 86);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        assert_eq!(f[14] >> 4, 6);
        assert_eq!(&f[18..20], &[0, 32]); // payload length
        assert_eq!(f[20], 58);
        assert_eq!(f[21], 255);
        assert_eq!(&f[22..38], &src.octets());
        assert_eq!(&f[38..54], &ALL_NODES.octets());
        let icmp = &f[54..];
        assert_eq!(icmp[0], 136);
        assert_eq!(icmp[1], 0);
        assert_eq!(icmp[4], 0x20, "override only, not solicited");
        assert_eq!(&icmp[8..24], &target.octets());
        assert_eq!(&icmp[24..26], &[2, 1]);
        assert_eq!(&icmp[26..32], &MAC);
        // A correct checksum makes the sum over pseudo-header and message come out as zero.
        assert_eq!(icmpv6_checksum(src, ALL_NODES, icmp), 0);
    }

    #[test]
    fn checksum_known_value() {
        // Odd length is padded with a zero byte; value computed by hand.
        let src = Ipv6Addr::LOCALHOST;
        let sum = icmpv6_checksum(src, src, &[0x80, 0, 0, 0, 0x12]);
        // words: 2×(::1) = 2, length 5, next header 58, 0x8000, 0x0000, 0x1200
        let expected = !((2 + 5 + 58 + 0x8000 + 0x1200) as u16);
        assert_eq!(sum, expected);
    }
}
