//! Feeds arbitrary datagrams to the pure DHCP handler (server mode with an in-memory lease
//! table, then proxy mode) and checks that nothing panics, replies stay bounded, and the lease
//! table keeps its invariants.
//!
//! The first input byte steers the clock, the port and the mode, so sequences of expiry and
//! both listeners are explored; the rest is the datagram.

#![no_main]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Mutex;

use libfuzzer_sys::fuzz_target;
use netboot::dhcp::{DhcpConfig, DhcpMode, Handler, ListenPort, PoolRange, RecvMeta, SubnetConfig};
use netboot::{MacAddr, NodeDirectory, Reservation};

struct Dir;

impl NodeDirectory for Dir {
    fn reservation(&self, mac: &MacAddr) -> Option<Reservation> {
        // Every MAC ending in 0x05 is a member with a reserved address.
        (mac.0[5] == 5).then(|| Reservation {
            name: "node05".into(),
            ip: Some(Ipv4Addr::new(10, 0, 0, 5)),
            image: None,
            efi_loader: Some("snponly.efi".into()),
        })
    }
    fn reserved_by(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        (ip == Ipv4Addr::new(10, 0, 0, 5)).then_some(MacAddr([0x52, 0x54, 0, 0, 0, 5]))
    }
}

fn config(mode: DhcpMode) -> DhcpConfig {
    DhcpConfig {
        mode,
        server_ip: Some(Ipv4Addr::new(10, 0, 0, 1)),
        subnets: vec![
            SubnetConfig {
                cidr: "10.0.0.0/24".parse().unwrap(),
                pools: vec![PoolRange {
                    start: Ipv4Addr::new(10, 0, 0, 100),
                    end: Ipv4Addr::new(10, 0, 0, 110),
                }],
                router: Some(Ipv4Addr::new(10, 0, 0, 254)),
                dns: vec![Ipv4Addr::new(10, 0, 0, 53)],
                domain: Some("cluster.test".into()),
                ntp: vec![],
                mtu: Some(1500),
                lease_secs: Some(60),
            },
            SubnetConfig {
                cidr: "10.9.0.0/24".parse().unwrap(),
                pools: vec![PoolRange {
                    start: Ipv4Addr::new(10, 9, 0, 10),
                    end: Ipv4Addr::new(10, 9, 0, 12),
                }],
                router: None,
                dns: vec![],
                domain: None,
                ntp: vec![],
                mtu: None,
                lease_secs: None,
            },
        ],
        max_leases: 64,
        ..DhcpConfig::default()
    }
}

struct State {
    server: Handler,
    proxy: Handler,
    now: u64,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, packet)) = data.split_first() else {
        return;
    };
    let mut guard = STATE.lock().unwrap_or_else(|e| e.into_inner());
    // The table persists across inputs (bounded by max_leases) so that sequences matter.
    let st = guard.get_or_insert_with(|| State {
        server: Handler::new(&config(DhcpMode::Server)).unwrap(),
        proxy: Handler::new(&config(DhcpMode::Proxy)).unwrap(),
        now: 1_700_000_000,
    });
    st.now += u64::from(ctl & 0x3f);
    let port = if ctl & 0x40 != 0 {
        ListenPort::Pxe
    } else {
        ListenPort::Dhcp
    };
    let meta = RecvMeta {
        src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 77), 68),
        port,
    };
    let h = if ctl & 0x80 != 0 {
        &mut st.proxy
    } else {
        &mut st.server
    };
    let d = h.handle(packet, &meta, st.now, &Dir);
    if let Some(r) = &d.reply {
        assert!(r.bytes.is_empty() || r.bytes.len() >= 300);
        assert!(r.bytes.len() <= 1500, "reply of {} bytes", r.bytes.len());
    }
    h.table().check_invariants().unwrap();
    assert!(h.table().len() <= 64);
    let _ = h.drain_records().count();
    // The sanitized copy (what may be handed to dhcproto) is bounded and parses the same way.
    if let Some(clean) = netboot::dhcp::wire::sanitize(packet) {
        assert!(clean.len() <= netboot::dhcp::wire::MAX_PACKET_LEN + 1);
        if let (Ok(a), Ok(b)) = (
            netboot::dhcp::wire::parse(packet),
            netboot::dhcp::wire::parse(&clean),
        ) {
            assert_eq!(a.msg_type, b.msg_type);
            assert_eq!(a.arch, b.arch);
            assert_eq!(b.malformed, 0);
        }
    }
});
