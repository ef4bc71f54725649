//! Feeds arbitrary datagrams to the pure TFTP cores: the request-port decision (parse, name
//! rules, option negotiation) and the transfer state machine, and checks their invariants.
//!
//! Input layout: the first byte is the length `n` of the request datagram that follows; the rest
//! is a script of events for a transfer set up from that request (or from fixed parameters when
//! the request is refused): each event is a tag byte (ACK / ERROR / timer / raw datagram) and its
//! payload.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use netboot::tftp::options::Limits;
use netboot::tftp::request::{decide, Decision};
use netboot::tftp::transfer::{Action, Transfer, TransferParams};
use netboot::tftp::{packet, TftpPath};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let (datagram, script) = rest.split_at(n);
    let limits = Limits::default();

    // The same bytes through the lower layers directly, too.
    let _ = packet::parse_request(datagram);
    let _ = packet::parse_client_packet(datagram);
    if let Ok(p) = TftpPath::parse(datagram) {
        let s = p.as_str();
        assert!(!s.is_empty() && !s.starts_with('/') && !s.contains('\\'));
        assert!(p
            .components()
            .all(|c| !c.is_empty() && c != "." && c != ".."));
    }

    let (blksize, windowsize, oack) = match decide(datagram, &limits) {
        Decision::Serve(req) => {
            let neg = req.negotiated;
            assert!((8..=limits.max_blksize).contains(&neg.blksize));
            assert!((1..=limits.max_windowsize).contains(&neg.windowsize));
            let mut out = Vec::new();
            neg.ack.encode(u64::MAX, &mut out);
            assert!(out.len() < 128);
            (neg.blksize, neg.windowsize, neg.ack.any())
        }
        Decision::Refuse(e) => {
            let (_code, msg) = e.reply();
            assert!(!msg.is_empty());
            (512, 4, true)
        }
        Decision::Ignore(_) => (8, 1, false),
    };

    // Size from the script's first bytes, so small and rollover-sized files both occur.
    let size = script
        .iter()
        .take(3)
        .fold(0u64, |acc, &b| acc * 256 + u64::from(b))
        * 37;
    let t0 = Instant::now();
    let params = TransferParams {
        size,
        blksize,
        windowsize,
        timeout: Duration::from_secs(1),
        retries: 3,
        send_oack: oack,
    };
    let (mut t, mut action) = Transfer::start(params, t0);
    let mut now = t0;
    let mut sends = 0u64;
    let mut events = script.iter().skip(3).copied();
    while let Some(tag) = events.next() {
        if let Action::SendData { first, last } = action {
            assert!(first >= 1 && first <= last);
            assert!(last - first < u64::from(windowsize));
            let (offset, len) = t.block_span(last);
            assert!(offset + len as u64 <= size);
            sends += last - first + 1;
        }
        if let Action::Finished(_) = action {
            assert!(t.is_done());
            assert_eq!(t.deadline(), None);
        }
        let a = events.next().unwrap_or(0);
        let b = events.next().unwrap_or(0);
        action = match tag % 4 {
            0 => t.on_ack(u16::from_be_bytes([a, b]), now),
            1 => t.on_client_error(u16::from(a), &[b]),
            2 => {
                now += Duration::from_millis(u64::from(a) * 8);
                t.on_timer(now)
            }
            _ => t.on_datagram(&[0, a, b, tag], now),
        };
        if t.is_done() {
            // Nothing more is ever sent once finished.
            assert!(matches!(
                t.on_timer(now + Duration::from_secs(3600)),
                Action::Wait
            ));
        }
    }
    // Each event sends at most one window.
    assert!(sends <= (script.len() as u64 + 1) * u64::from(windowsize));
});
