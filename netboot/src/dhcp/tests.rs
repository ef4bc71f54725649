//! Tests of the pure core: every message type and state, with a fake clock and directory.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::Decodable;

use super::config::{
    BootConfig, DhcpConfig, DhcpMode, PoolRange, ProxyVendorOptions, SubnetConfig,
};
use super::handler::{Decision, Delivery, Event, Handler, ListenPort, Outcome, RecvMeta};
use super::wire::{find_option, HEADER_LEN, MAGIC};
use crate::node::{BootStage, ClientArch, MacAddr, NodeDirectory, Reservation};

const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const T0: u64 = 1_700_000_000;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn mac(n: u8) -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0, 0, n])
}

#[derive(Default)]
struct Dir(HashMap<MacAddr, Reservation>);

impl NodeDirectory for Dir {
    fn reservation(&self, mac: &MacAddr) -> Option<Reservation> {
        self.0.get(mac).cloned()
    }
    fn reserved_by(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.0
            .iter()
            .find(|(_, r)| r.ip == Some(ip))
            .map(|(m, _)| *m)
    }
}

fn subnet(cidr: &str, start: &str, end: &str) -> SubnetConfig {
    SubnetConfig {
        cidr: cidr.parse().unwrap(),
        pools: vec![PoolRange {
            start: ip(start),
            end: ip(end),
        }],
        router: None,
        dns: vec![],
        domain: None,
        ntp: vec![],
        mtu: None,
        lease_secs: None,
    }
}

fn config() -> DhcpConfig {
    let mut local = subnet("10.0.0.0/24", "10.0.0.100", "10.0.0.199");
    local.router = Some(ip("10.0.0.254"));
    local.dns = vec![ip("10.0.0.53")];
    local.domain = Some("cluster.test".into());
    local.ntp = vec![ip("10.0.0.123")];
    local.mtu = Some(9000);
    DhcpConfig {
        server_ip: Some(SERVER),
        subnets: vec![local, subnet("10.9.0.0/24", "10.9.0.10", "10.9.0.20")],
        lease_secs: 600,
        ..DhcpConfig::default()
    }
}

/// A request under construction.
struct Pkt {
    mac: MacAddr,
    ciaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    flags: u16,
    opts: Vec<u8>,
}

fn pkt(t: u8, m: u8) -> Pkt {
    Pkt {
        mac: mac(m),
        ciaddr: Ipv4Addr::UNSPECIFIED,
        giaddr: Ipv4Addr::UNSPECIFIED,
        flags: 0,
        opts: vec![53, 1, t],
    }
}

impl Pkt {
    fn opt(mut self, code: u8, v: &[u8]) -> Pkt {
        self.opts.push(code);
        self.opts.push(v.len() as u8);
        self.opts.extend_from_slice(v);
        self
    }
    fn raw(mut self, v: &[u8]) -> Pkt {
        self.opts.extend_from_slice(v);
        self
    }
    fn requested(self, a: Ipv4Addr) -> Pkt {
        self.opt(50, &a.octets())
    }
    fn server_id(self, a: Ipv4Addr) -> Pkt {
        self.opt(54, &a.octets())
    }
    fn ciaddr(mut self, a: Ipv4Addr) -> Pkt {
        self.ciaddr = a;
        self
    }
    fn giaddr(mut self, a: Ipv4Addr) -> Pkt {
        self.giaddr = a;
        self
    }
    fn broadcast(mut self) -> Pkt {
        self.flags = 0x8000;
        self
    }
    fn pxe(self, arch: u16) -> Pkt {
        self.opt(
            60,
            format!("PXEClient:Arch:{arch:05}:UNDI:003016").as_bytes(),
        )
        .opt(93, &arch.to_be_bytes())
        .opt(94, &[1, 3, 16])
    }
    fn bytes(&self) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p[0] = 1;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&0xdead_beefu32.to_be_bytes());
        p[10..12].copy_from_slice(&self.flags.to_be_bytes());
        p[12..16].copy_from_slice(&self.ciaddr.octets());
        p[24..28].copy_from_slice(&self.giaddr.octets());
        p[28..34].copy_from_slice(&self.mac.0);
        p.extend_from_slice(&MAGIC);
        p.extend_from_slice(&self.opts);
        p.push(255);
        p
    }
}

struct Lab {
    h: Handler,
    dir: Dir,
    now: u64,
}

impl Lab {
    fn new(cfg: DhcpConfig) -> Lab {
        Lab {
            h: Handler::new(&cfg).unwrap(),
            dir: Dir::default(),
            now: T0,
        }
    }
    fn send(&mut self, p: Pkt) -> Decision {
        self.send_on(p, ListenPort::Dhcp)
    }
    fn send_on(&mut self, p: Pkt, port: ListenPort) -> Decision {
        let meta = RecvMeta {
            src: SocketAddrV4::new(
                ip("10.0.0.77"),
                if port == ListenPort::Pxe { 4011 } else { 68 },
            ),
            port,
        };
        let d = self.h.handle(&p.bytes(), &meta, self.now, &self.dir);
        self.h.table().check_invariants().unwrap();
        d
    }
    /// DISCOVER + REQUEST; returns the bound address.
    fn bind(&mut self, m: u8) -> Ipv4Addr {
        let Outcome::Offered(a) = self.send(pkt(1, m)).outcome else {
            panic!("no offer")
        };
        let d = self.send(pkt(3, m).server_id(SERVER).requested(a));
        assert_eq!(d.outcome, Outcome::Acked(a));
        a
    }
    fn records(&mut self) -> usize {
        self.h.drain_records().count()
    }
}

fn reply(d: &Decision) -> dhcproto::v4::Message {
    let bytes = &d.reply.as_ref().expect("a reply").bytes;
    assert!(bytes.len() >= 300, "reply padded to the BOOTP minimum");
    dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(bytes)).unwrap()
}

/// The `file` header field up to its NUL (dhcproto's `fname()` keeps the NUL).
fn file_field(d: &Decision) -> &[u8] {
    let f = &reply_bytes(d)[108..236];
    &f[..f.iter().position(|b| *b == 0).unwrap_or(f.len())]
}

fn reply_bytes(d: &Decision) -> &[u8] {
    &d.reply.as_ref().expect("a reply").bytes
}

#[test]
fn discover_offers_with_the_configured_options() {
    let mut lab = Lab::new(config());
    let d = lab.send(pkt(1, 1).opt(55, &[1, 3, 6, 15, 26, 42]));
    let Outcome::Offered(a) = d.outcome else {
        panic!("{:?}", d.outcome)
    };
    assert_eq!(a, ip("10.0.0.100"));
    let r = reply(&d);
    use dhcproto::v4::{DhcpOption as O, OptionCode as C};
    assert_eq!(r.yiaddr(), a);
    assert_eq!(r.opts().msg_type(), Some(dhcproto::v4::MessageType::Offer));
    assert_eq!(
        r.opts().get(C::SubnetMask),
        Some(&O::SubnetMask(ip("255.255.255.0")))
    );
    assert_eq!(
        r.opts().get(C::Router),
        Some(&O::Router(vec![ip("10.0.0.254")]))
    );
    assert_eq!(
        r.opts().get(C::DomainNameServer),
        Some(&O::DomainNameServer(vec![ip("10.0.0.53")]))
    );
    assert_eq!(
        r.opts().get(C::DomainName),
        Some(&O::DomainName("cluster.test".into()))
    );
    assert_eq!(
        r.opts().get(C::NtpServers),
        Some(&O::NtpServers(vec![ip("10.0.0.123")]))
    );
    assert_eq!(r.opts().get(C::InterfaceMtu), Some(&O::InterfaceMtu(9000)));
    assert_eq!(
        r.opts().get(C::AddressLeaseTime),
        Some(&O::AddressLeaseTime(600))
    );
    assert_eq!(r.opts().get(C::Renewal), Some(&O::Renewal(300)));
    assert_eq!(r.opts().get(C::Rebinding), Some(&O::Rebinding(525)));
    assert_eq!(
        r.opts().get(C::ServerIdentifier),
        Some(&O::ServerIdentifier(SERVER))
    );
    assert_eq!(
        d.reply.as_ref().unwrap().to,
        Delivery::UnicastNoArp { ip: a, mac: mac(1) }
    );
    assert!(d.events.contains(&Event::Stage(
        crate::node::ClientRef {
            mac: Some(mac(1)),
            ip: Some(a)
        },
        BootStage::Offered
    )));
    // Not requested: MTU and NTP are left out.
    let d = lab.send(pkt(1, 2).opt(55, &[1, 3]).broadcast());
    let r = reply(&d);
    assert!(r.opts().get(C::InterfaceMtu).is_none());
    assert!(r.opts().get(C::NtpServers).is_none());
    assert_eq!(d.reply.unwrap().to, Delivery::Broadcast);
}

#[test]
fn offers_are_held_and_request_binds() {
    let mut lab = Lab::new(config());
    let Outcome::Offered(a) = lab.send(pkt(1, 1)).outcome else {
        panic!()
    };
    let Outcome::Offered(b) = lab.send(pkt(1, 2)).outcome else {
        panic!()
    };
    assert_ne!(a, b, "two DISCOVERs never get the same address");
    // The same client asking again gets the same offer.
    assert_eq!(lab.send(pkt(1, 1)).outcome, Outcome::Offered(a));
    let d = lab.send(pkt(3, 1).server_id(SERVER).requested(a));
    assert_eq!(d.outcome, Outcome::Acked(a));
    assert!(d.reply.as_ref().unwrap().durable);
    assert!(d
        .events
        .iter()
        .any(|e| matches!(e, Event::Stage(_, BootStage::Bound))));
    assert_eq!(lab.records(), 1);
    let leases = lab.h.leases(lab.now, &lab.dir);
    assert!(leases
        .iter()
        .any(|l| l.ip == a && l.mac == mac(1) && l.expires == T0 + 600));
    assert_eq!(lab.h.lease_by_ip(a, lab.now, &lab.dir).unwrap().mac, mac(1));
    assert!(lab.h.lease_by_ip(a, lab.now + 600, &lab.dir).is_none());
    // Client 2 requests client 1's address: NAK.
    let d = lab.send(pkt(3, 2).server_id(SERVER).requested(a));
    assert_eq!(d.outcome, Outcome::Nak);
    assert_eq!(d.reply.unwrap().to, Delivery::Broadcast);
}

#[test]
fn selecting_another_server_releases_our_offer() {
    let mut cfg = config();
    cfg.subnets[0].pools[0].end = ip("10.0.0.100");
    let mut lab = Lab::new(cfg);
    let Outcome::Offered(a) = lab.send(pkt(1, 1)).outcome else {
        panic!()
    };
    assert_eq!(
        lab.send(pkt(1, 2)).outcome,
        Outcome::Ignored("pool exhausted")
    );
    let d = lab.send(
        pkt(3, 1)
            .server_id(ip("10.0.0.2"))
            .requested(ip("10.0.0.99")),
    );
    assert!(d.reply.is_none());
    assert_eq!(lab.send(pkt(1, 2)).outcome, Outcome::Offered(a));
}

#[test]
fn init_reboot() {
    let mut lab = Lab::new(config());
    let a = lab.bind(1);
    let b = lab.bind(2);
    // Right address: ACK.
    assert_eq!(lab.send(pkt(3, 1).requested(a)).outcome, Outcome::Acked(a));
    // A wrong address on the right subnet, for a client we know: NAK.
    assert_eq!(
        lab.send(pkt(3, 1).requested(ip("10.0.0.150"))).outcome,
        Outcome::Nak
    );
    // Wrong network: NAK.
    assert_eq!(
        lab.send(pkt(3, 1).requested(ip("192.168.1.5"))).outcome,
        Outcome::Nak
    );
    // A client we know nothing about: silence (RFC 2131 4.3.2)...
    let d = lab.send(pkt(3, 9).requested(ip("10.0.0.150")));
    assert!(d.reply.is_none(), "{:?}", d.outcome);
    // ...unless it claims an address bound to someone else.
    assert_eq!(lab.send(pkt(3, 9).requested(b)).outcome, Outcome::Nak);
}

#[test]
fn renew_and_rebind() {
    let mut lab = Lab::new(config());
    let a = lab.bind(1);
    lab.records();
    lab.now += 300;
    let d = lab.send(pkt(3, 1).ciaddr(a));
    assert_eq!(d.outcome, Outcome::Acked(a));
    assert_eq!(
        d.reply.as_ref().unwrap().to,
        Delivery::Unicast(SocketAddrV4::new(a, 68))
    );
    assert_eq!(reply(&d).ciaddr(), a);
    assert_eq!(lab.records(), 1);
    // The renewal moved the expiry.
    lab.now += 500;
    assert_eq!(
        lab.send(pkt(3, 1).ciaddr(a).broadcast()).outcome,
        Outcome::Acked(a)
    );
    // Someone else renewing that address: NAK.
    assert_eq!(lab.send(pkt(3, 2).ciaddr(a)).outcome, Outcome::Nak);
    // A renewal for a network we do not serve: silence.
    assert!(lab.send(pkt(3, 2).ciaddr(ip("172.16.0.5"))).reply.is_none());
}

#[test]
fn expired_leases_are_reclaimed() {
    let mut cfg = config();
    cfg.subnets[0].pools[0].end = ip("10.0.0.100");
    cfg.subnets[0].lease_secs = Some(60);
    let mut lab = Lab::new(cfg);
    let a = lab.bind(1);
    assert_eq!(
        lab.send(pkt(1, 2)).outcome,
        Outcome::Ignored("pool exhausted")
    );
    lab.now += 61;
    assert_eq!(lab.send(pkt(1, 2)).outcome, Outcome::Offered(a));
    assert!(lab
        .h
        .leases(lab.now, &lab.dir)
        .iter()
        .all(|l| l.mac != mac(1)));
}

#[test]
fn decline_quarantines_and_release_frees() {
    let mut cfg = config();
    cfg.subnets[0].pools[0].end = ip("10.0.0.101");
    let mut lab = Lab::new(cfg);
    let a = lab.bind(1);
    lab.records();
    let d = lab.send(pkt(4, 1).server_id(SERVER).requested(a));
    assert_eq!(d.outcome, Outcome::Declined(a));
    assert!(d.reply.is_none());
    assert_eq!(lab.records(), 1);
    // The declined address is not offered again, to anyone.
    let Outcome::Offered(b) = lab.send(pkt(1, 1)).outcome else {
        panic!()
    };
    assert_ne!(a, b);
    assert_eq!(
        lab.send(pkt(3, 1).server_id(SERVER).requested(b)).outcome,
        Outcome::Acked(b)
    );
    assert_eq!(
        lab.send(pkt(1, 2)).outcome,
        Outcome::Ignored("pool exhausted")
    );
    lab.now += 601;
    assert_eq!(lab.send(pkt(1, 2)).outcome, Outcome::Offered(a));
    // Release.
    let mut lab = Lab::new(config());
    let a = lab.bind(1);
    lab.records();
    // A release from someone else is ignored.
    assert!(matches!(
        lab.send(pkt(7, 2).server_id(SERVER).ciaddr(a)).outcome,
        Outcome::Ignored(_)
    ));
    assert_eq!(
        lab.send(pkt(7, 1).server_id(SERVER).ciaddr(a)).outcome,
        Outcome::Released(a)
    );
    assert_eq!(lab.records(), 1);
    assert!(lab.h.leases(lab.now, &lab.dir).is_empty());
}

#[test]
fn release_makes_the_address_reusable() {
    let mut cfg = config();
    cfg.subnets[0].pools[0].end = ip("10.0.0.100");
    let mut lab = Lab::new(cfg);
    let a = lab.bind(1);
    lab.send(pkt(7, 1).server_id(SERVER).ciaddr(a));
    assert_eq!(lab.send(pkt(1, 2)).outcome, Outcome::Offered(a));
}

#[test]
fn inform_gets_options_without_a_lease() {
    let mut lab = Lab::new(config());
    let d = lab.send(pkt(8, 1).ciaddr(ip("10.0.0.50")));
    assert_eq!(d.outcome, Outcome::Informed);
    let r = reply(&d);
    assert_eq!(r.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert!(r
        .opts()
        .get(dhcproto::v4::OptionCode::AddressLeaseTime)
        .is_none());
    assert!(r.opts().get(dhcproto::v4::OptionCode::Router).is_some());
    assert_eq!(
        d.reply.unwrap().to,
        Delivery::Unicast(SocketAddrV4::new(ip("10.0.0.50"), 68))
    );
    assert_eq!(lab.records(), 0);
}

#[test]
fn reservations_take_precedence() {
    let mut lab = Lab::new(config());
    // Node 5 has 10.0.0.20 (outside the pool); node 6 has 10.0.0.100 (the pool's first).
    lab.dir.0.insert(
        mac(5),
        Reservation {
            name: "node05".into(),
            ip: Some(ip("10.0.0.20")),
            ..Reservation::default()
        },
    );
    lab.dir.0.insert(
        mac(6),
        Reservation {
            name: "node06".into(),
            ip: Some(ip("10.0.0.100")),
            ..Reservation::default()
        },
    );
    let a = lab.bind(5);
    assert_eq!(a, ip("10.0.0.20"));
    let d = lab.send(pkt(3, 5).ciaddr(a));
    assert_eq!(
        reply(&d).opts().get(dhcproto::v4::OptionCode::Hostname),
        Some(&dhcproto::v4::DhcpOption::Hostname("node05".into()))
    );
    assert!(lab
        .h
        .leases(lab.now, &lab.dir)
        .iter()
        .any(|l| l.ip == a && l.hostname.as_deref() == Some("node05")));
    // An unknown client never gets a reserved address, even one inside the pool.
    let b = lab.bind(1);
    assert_ne!(b, ip("10.0.0.100"));
    // Nor by asking for it.
    assert_eq!(
        lab.send(pkt(3, 2).server_id(SERVER).requested(ip("10.0.0.100")))
            .outcome,
        Outcome::Nak
    );
    assert_eq!(lab.bind(6), ip("10.0.0.100"));
}

#[test]
fn reservation_held_by_another_client_is_resolved() {
    let mut lab = Lab::new(config());
    // Client 1 got 10.0.0.100 from the pool before node 6 was registered with that address.
    assert_eq!(lab.bind(1), ip("10.0.0.100"));
    lab.dir.0.insert(
        mac(6),
        Reservation {
            name: "node06".into(),
            ip: Some(ip("10.0.0.100")),
            ..Reservation::default()
        },
    );
    // Node 6 boots meanwhile: a pool address, never a duplicate.
    let b = lab.bind(6);
    assert_ne!(b, ip("10.0.0.100"));
    // Client 1's renewal is refused, so it moves away...
    assert_eq!(
        lab.send(pkt(3, 1).ciaddr(ip("10.0.0.100"))).outcome,
        Outcome::Nak
    );
    let c = lab.bind(1);
    assert_ne!(c, ip("10.0.0.100"));
    // ...and node 6 moves to its reserved address at its next renewal (NAK, then rebind).
    assert_eq!(lab.send(pkt(3, 6).ciaddr(b)).outcome, Outcome::Nak);
    assert_eq!(lab.bind(6), ip("10.0.0.100"));
}

#[test]
fn client_id_is_the_lease_key() {
    let mut lab = Lab::new(config());
    let Outcome::Offered(a) = lab.send(pkt(1, 1).opt(61, &[1, 9, 9, 9, 9, 9, 9])).outcome else {
        panic!()
    };
    // Same MAC, different client id (e.g. another OS on the same NIC): a different lease.
    let Outcome::Offered(b) = lab.send(pkt(1, 1).opt(61, &[1, 8, 8, 8, 8, 8, 8])).outcome else {
        panic!()
    };
    assert_ne!(a, b);
    let d = lab.send(
        pkt(3, 1)
            .opt(61, &[1, 9, 9, 9, 9, 9, 9])
            .server_id(SERVER)
            .requested(a),
    );
    assert_eq!(d.outcome, Outcome::Acked(a));
    // Option 61 is echoed (RFC 6842).
    assert_eq!(
        find_option(reply_bytes(&d), 61),
        Some(&[1, 9, 9, 9, 9, 9, 9][..])
    );
}

#[test]
fn pxe_bios_and_uefi_boot_files() {
    let mut lab = Lab::new(config());
    let d = lab.send(pkt(1, 1).pxe(0));
    let r = reply(&d);
    assert_eq!(file_field(&d), b"undionly.kpxe");
    assert_eq!(r.siaddr(), SERVER);
    assert_eq!(find_option(reply_bytes(&d), 66), Some(&b"10.0.0.1"[..]));
    assert_eq!(
        find_option(reply_bytes(&d), 67),
        Some(&b"undionly.kpxe"[..])
    );
    // Server mode: no PXEClient echo, no 97 when not sent, no 175 for a non-iPXE ROM.
    assert_eq!(find_option(reply_bytes(&d), 60), None);
    assert_eq!(find_option(reply_bytes(&d), 97), None);
    assert_eq!(find_option(reply_bytes(&d), 175), None);
    let mut uuid = vec![0u8];
    uuid.extend(1..=16u8);
    let d = lab.send(pkt(1, 2).pxe(7).opt(97, &uuid));
    assert_eq!(find_option(reply_bytes(&d), 67), Some(&b"ipxe.efi"[..]));
    assert_eq!(find_option(reply_bytes(&d), 97), Some(&uuid[..]));
    // Per-node EFI loader.
    lab.dir.0.insert(
        mac(3),
        Reservation {
            name: "n3".into(),
            efi_loader: Some("snponly.efi".into()),
            ..Reservation::default()
        },
    );
    let d = lab.send(pkt(1, 3).pxe(9));
    assert_eq!(find_option(reply_bytes(&d), 67), Some(&b"snponly.efi"[..]));
    let d = lab.send(pkt(1, 4).pxe(11));
    assert_eq!(
        find_option(reply_bytes(&d), 67),
        Some(&b"ipxe-arm64.efi"[..])
    );
    // A plain client gets no boot file.
    let d = lab.send(pkt(1, 5));
    assert_eq!(find_option(reply_bytes(&d), 67), None);
}

#[test]
fn ipxe_gets_its_script_and_no_pxedhcp() {
    let mut cfg = config();
    let mut lab = Lab::new(cfg.clone());
    let d = lab.send(pkt(1, 1).pxe(0).opt(77, b"iPXE"));
    assert_eq!(
        find_option(reply_bytes(&d), 67),
        Some(&b"boot/52-54-00-00-00-01.ipxe"[..])
    );
    assert_eq!(find_option(reply_bytes(&d), 175), Some(&[176, 1, 1][..]));
    cfg.boot.http_base = Some("http://10.0.0.1:8080".into());
    let mut lab = Lab::new(cfg);
    let d = lab.send(pkt(1, 1).pxe(7).opt(175, &[19, 1, 1]));
    assert_eq!(
        find_option(reply_bytes(&d), 67),
        Some(&b"http://10.0.0.1:8080/boot/52-54-00-00-00-01.ipxe"[..])
    );
    assert_eq!(find_option(reply_bytes(&d), 175), Some(&[176, 1, 1][..]));
}

#[test]
fn uefi_http_boot_gets_a_url() {
    let mut cfg = config();
    cfg.boot.http_base = Some("http://10.0.0.1:8080".into());
    let mut lab = Lab::new(cfg);
    let d = lab.send(
        pkt(1, 1)
            .opt(60, b"HTTPClient:Arch:00016:UNDI:003001")
            .opt(93, &[0, 16]),
    );
    assert_eq!(
        find_option(reply_bytes(&d), 67),
        Some(&b"http://10.0.0.1:8080/ipxe.efi"[..])
    );
    assert_eq!(find_option(reply_bytes(&d), 60), Some(&b"HTTPClient"[..]));
    assert_eq!(find_option(reply_bytes(&d), 66), None);
}

#[test]
fn relayed_requests_go_back_to_the_relay_with_option_82() {
    let mut lab = Lab::new(config());
    let relay = ip("10.9.0.1");
    let agent = [1, 4, b'e', b't', b'h', b'0', 2, 2, 0xab, 0xcd];
    let d = lab.send(pkt(1, 1).giaddr(relay).opt(82, &agent));
    let Outcome::Offered(a) = d.outcome else {
        panic!("{:?}", d.outcome)
    };
    assert!((ip("10.9.0.10")..=ip("10.9.0.20")).contains(&a));
    assert_eq!(
        d.reply.as_ref().unwrap().to,
        Delivery::Unicast(SocketAddrV4::new(relay, 67))
    );
    assert_eq!(find_option(reply_bytes(&d), 82), Some(&agent[..]));
    assert_eq!(reply(&d).giaddr(), relay);
    let d = lab.send(pkt(3, 1).giaddr(relay).server_id(SERVER).requested(a));
    assert_eq!(d.outcome, Outcome::Acked(a));
    // A relayed client renewing by unicast (no giaddr) is found by its ciaddr.
    assert_eq!(lab.send(pkt(3, 1).ciaddr(a)).outcome, Outcome::Acked(a));
    // A NAK through a relay has the broadcast bit set.
    let d = lab.send(pkt(3, 2).giaddr(relay).server_id(SERVER).requested(a));
    assert_eq!(d.outcome, Outcome::Nak);
    assert!(reply(&d).flags().broadcast());
    // A relay from a network we do not serve: silence.
    assert!(lab.send(pkt(1, 3).giaddr(ip("172.16.0.1"))).reply.is_none());
}

fn proxy_config(v: ProxyVendorOptions) -> DhcpConfig {
    DhcpConfig {
        mode: DhcpMode::Proxy,
        server_ip: Some(SERVER),
        proxy_vendor_options: v,
        ..DhcpConfig::default()
    }
}

#[test]
fn proxy_dhcp_answers_boot_clients_only() {
    let mut lab = Lab::new(proxy_config(ProxyVendorOptions::BiosOnly));
    let mut uuid = vec![0u8];
    uuid.extend(1..=16u8);
    let d = lab.send(pkt(1, 1).pxe(0).opt(97, &uuid));
    assert_eq!(d.outcome, Outcome::ProxyOffered);
    let r = reply(&d);
    assert_eq!(r.yiaddr(), Ipv4Addr::UNSPECIFIED);
    assert_eq!(r.siaddr(), SERVER);
    assert_eq!(find_option(reply_bytes(&d), 60), Some(&b"PXEClient"[..]));
    assert_eq!(find_option(reply_bytes(&d), 54), Some(&SERVER.octets()[..]));
    assert_eq!(find_option(reply_bytes(&d), 43), Some(&[6, 1, 8, 255][..]));
    assert_eq!(find_option(reply_bytes(&d), 97), Some(&uuid[..]));
    assert_eq!(find_option(reply_bytes(&d), 51), None);
    assert_eq!(find_option(reply_bytes(&d), 175), None);
    assert_eq!(file_field(&d), b"undionly.kpxe");
    assert_eq!(d.reply.unwrap().to, Delivery::Broadcast);
    // UEFI: no 43, so the firmware asks port 4011.
    let d = lab.send(pkt(1, 2).pxe(7));
    assert_eq!(find_option(reply_bytes(&d), 43), None);
    let d = lab.send_on(pkt(3, 2).pxe(7).ciaddr(ip("10.0.0.77")), ListenPort::Pxe);
    assert_eq!(d.outcome, Outcome::ProxyAcked);
    assert_eq!(
        d.reply.as_ref().unwrap().to,
        Delivery::Unicast(SocketAddrV4::new(ip("10.0.0.77"), 4011))
    );
    assert_eq!(find_option(reply_bytes(&d), 67), Some(&b"ipxe.efi"[..]));
    // Non-PXE clients and the main server's REQUESTs are left alone; nothing is recorded.
    assert!(lab.send(pkt(1, 3)).reply.is_none());
    assert!(lab
        .send(
            pkt(3, 1)
                .pxe(0)
                .server_id(ip("10.0.0.2"))
                .requested(ip("10.0.0.50"))
        )
        .reply
        .is_none());
    assert!(lab.h.table().is_empty());
    assert_eq!(lab.records(), 0);
    // smee style: 43 for every PXE client.
    let mut lab = Lab::new(proxy_config(ProxyVendorOptions::All));
    let d = lab.send(pkt(1, 2).pxe(7));
    assert_eq!(find_option(reply_bytes(&d), 43), Some(&[6, 1, 8, 255][..]));
}

#[test]
fn server_mode_ignores_port_4011_and_off_mode_ignores_all() {
    let mut lab = Lab::new(config());
    assert!(lab
        .send_on(pkt(3, 1).pxe(7), ListenPort::Pxe)
        .reply
        .is_none());
    let mut lab = Lab::new(DhcpConfig {
        mode: DhcpMode::Off,
        ..DhcpConfig::default()
    });
    assert!(lab.send(pkt(1, 1).pxe(7)).reply.is_none());
}

#[test]
fn unknown_boot_clients_are_discovered_once_per_interval() {
    let mut lab = Lab::new(config());
    let mut uuid = vec![0u8];
    uuid.extend([0xab; 16]);
    let discovered = |d: &Decision| {
        d.events
            .iter()
            .filter_map(|e| match e {
                Event::Discovered(c) => Some(c.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let d = lab.send(pkt(1, 1).pxe(7).opt(97, &uuid));
    let found = discovered(&d);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].mac, mac(1));
    assert_eq!(found[0].arch, Some(ClientArch::EfiBc));
    assert_eq!(
        found[0].vendor_class.as_deref(),
        Some("PXEClient:Arch:00007:UNDI:003016")
    );
    assert_eq!(
        found[0].uuid.as_deref(),
        Some("abababababababababababababababab")
    );
    for _ in 0..100 {
        assert!(discovered(&lab.send(pkt(1, 1).pxe(7))).is_empty());
    }
    lab.now += 301;
    assert_eq!(discovered(&lab.send(pkt(1, 1).pxe(7))).len(), 1);
    // Known nodes and non-boot clients are not reported.
    lab.dir.0.insert(
        mac(2),
        Reservation {
            name: "n2".into(),
            ..Reservation::default()
        },
    );
    assert!(discovered(&lab.send(pkt(1, 2).pxe(0))).is_empty());
    assert!(discovered(&lab.send(pkt(1, 3))).is_empty());
}

#[test]
fn malformed_options_never_panic_and_decide_sanely() {
    let mut lab = Lab::new(config());
    // 93 with length 1, 94 with length 2: stripped, the DISCOVER is still answered.
    let d = lab.send(
        pkt(1, 1)
            .raw(&[93, 1, 0, 94, 2, 1, 2])
            .opt(60, b"PXEClient"),
    );
    assert!(matches!(d.outcome, Outcome::Offered(_)), "{:?}", d.outcome);
    // Bad 97 (wrong length, nonzero type): not echoed.
    let d = lab.send(pkt(1, 2).pxe(0).opt(97, &[1; 17]));
    assert_eq!(find_option(reply_bytes(&d), 97), None);
    // Truncated packet.
    let mut p = pkt(1, 3).bytes();
    p.truncate(200);
    let meta = RecvMeta {
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        port: ListenPort::Dhcp,
    };
    assert_eq!(
        lab.h.handle(&p, &meta, lab.now, &lab.dir).outcome,
        Outcome::Ignored("unparsable")
    );
    // An option running past the end.
    let mut p = pkt(1, 3).bytes();
    p.pop();
    p.extend_from_slice(&[61, 250, 1]);
    assert!(matches!(
        lab.h.handle(&p, &meta, lab.now, &lab.dir).outcome,
        Outcome::Offered(_)
    ));
    // An overlong option list (thousands of options).
    let mut big = pkt(1, 4);
    for i in 0..2000u32 {
        big = big.raw(&[(i % 200 + 1) as u8 + 20, 1, 0]);
    }
    let _ = lab.send(big);
    // Every mutation of a valid packet: no panic, invariants kept.
    let base = pkt(3, 5)
        .pxe(7)
        .server_id(SERVER)
        .requested(ip("10.0.0.150"))
        .opt(82, &[1, 1, 1])
        .bytes();
    for i in 0..base.len() {
        for v in [0u8, 1, 2, 0x35, 0x7f, 0xff] {
            let mut m = base.clone();
            m[i] = v;
            let _ = lab.h.handle(&m, &meta, lab.now, &lab.dir);
            let _ = lab.h.handle(&m[..i], &meta, lab.now, &lab.dir);
        }
    }
    lab.h.table().check_invariants().unwrap();
}

#[test]
fn restore_replays_records() {
    let mut lab = Lab::new(config());
    let a = lab.bind(1);
    let b = lab.bind(2);
    lab.send(pkt(7, 2).server_id(SERVER).ciaddr(b));
    let recs: Vec<_> = lab.h.drain_records().collect();
    let mut h = Handler::new(&config()).unwrap();
    h.restore(&recs, T0 + 10);
    let leases = h.leases(T0 + 10, &lab.dir);
    assert_eq!(leases.len(), 1);
    assert_eq!((leases[0].ip, leases[0].mac), (a, mac(1)));
    // A fresh client does not get the restored address.
    let mut lab2 = Lab {
        h,
        dir: Dir::default(),
        now: T0 + 10,
    };
    let Outcome::Offered(c) = lab2.send(pkt(1, 9)).outcome else {
        panic!()
    };
    assert_ne!(c, a);
    // The restored client renews fine; a restore after expiry frees the address.
    assert_eq!(lab2.send(pkt(3, 1).ciaddr(a)).outcome, Outcome::Acked(a));
    let mut h = Handler::new(&config()).unwrap();
    h.restore(&recs, T0 + 10_000);
    assert!(h.leases(T0 + 10_000, &lab.dir).is_empty());
}

#[test]
fn many_clients_stay_fast_and_unique() {
    let mut cfg = config();
    cfg.subnets[0] = subnet("10.0.0.0/16", "10.0.1.0", "10.0.255.250");
    let mut lab = Lab::new(cfg);
    let mut seen = std::collections::HashSet::new();
    let start = std::time::Instant::now();
    for n in 0..20_000u32 {
        let m = MacAddr([2, 0, 0, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
        let mut p = pkt(1, 0);
        p.mac = m;
        let Outcome::Offered(a) = lab
            .h
            .handle(
                &p.bytes(),
                &RecvMeta {
                    src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
                    port: ListenPort::Dhcp,
                },
                lab.now,
                &lab.dir,
            )
            .outcome
        else {
            panic!()
        };
        assert!(seen.insert(a));
    }
    // Generous bound (debug build, shared CI cores); catches accidental pool scans.
    assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
}

#[test]
fn boot_config_paths_match_the_http_side() {
    assert_eq!(
        BootConfig::script_path(&mac(1)),
        "boot/52-54-00-00-00-01.ipxe"
    );
}

#[test]
fn random_datagrams_keep_the_table_consistent() {
    // A cheap stand-in for the fuzz target in plain `cargo test`: valid headers with random
    // option soup, random message types and addresses, both modes, moving clock.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut server = Lab::new(config());
    let mut proxy = Lab::new(proxy_config(ProxyVendorOptions::All));
    server.dir.0.insert(
        mac(5),
        Reservation {
            name: "n5".into(),
            ip: Some(ip("10.0.0.100")),
            ..Reservation::default()
        },
    );
    for i in 0..20_000u32 {
        let r = rnd();
        let mut p = pkt((r % 9) as u8, (r >> 8) as u8 % 8);
        if r & (1 << 20) != 0 {
            p = p.ciaddr(Ipv4Addr::from(0x0a00_0064 + (r >> 24) as u32 % 16));
        }
        if r & (1 << 21) != 0 {
            p = p.giaddr(ip("10.9.0.1"));
        }
        if r & (1 << 22) != 0 {
            p = p.server_id(SERVER);
        }
        if r & (1 << 23) != 0 {
            p = p.requested(Ipv4Addr::from(0x0a00_0064 + (r >> 32) as u32 % 16));
        }
        let n = (r >> 40) as usize % 40;
        let soup: Vec<u8> = (0..n).map(|_| rnd() as u8).collect();
        p = p.raw(&soup);
        let lab = if i % 5 == 0 { &mut proxy } else { &mut server };
        lab.now += (r >> 60) % 8;
        let port = if r & (1 << 30) != 0 {
            ListenPort::Pxe
        } else {
            ListenPort::Dhcp
        };
        let d = lab.send_on(p, port);
        if let Some(reply) = d.reply {
            assert!(reply.bytes.len() >= 300 && reply.bytes.len() <= 576);
        }
        lab.records();
        // The reserved address never goes to anyone but node 5.
        if let Some(l) = server.h.table().get(ip("10.0.0.100")) {
            if matches!(
                l.state,
                super::leases::LeaseState::Offered | super::leases::LeaseState::Bound
            ) {
                assert_eq!(l.mac, mac(5));
            }
        }
    }
    assert!(proxy.h.table().is_empty());
}
