//! Hostile heartbeat datagrams: `wire::decode` and the replay filter must refuse or accept
//! without panicking, and what is encoded decodes to itself.
//!
//! Input layout: a byte for the number of links (1..=4), then records: a tag byte, a link
//! byte, a length byte and that many bytes. Tag bit 0 clear: the bytes are a datagram for
//! `decode` (and, when it is authentic, for the filter). Tag bit 0 set: the bytes describe a
//! heartbeat (name, generations, sequence) that is encoded, decoded and fed to the filter,
//! so the filter sees authentic messages in any order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::wire::{self, Flags, Heartbeat, Key, ReplayFilter, Verdict, WireRole};

fuzz_target!(|data: &[u8]| {
    let Some((&links, mut rest)) = data.split_first() else {
        return;
    };
    let links = usize::from(links % 4) + 1;
    let key = Key::new(b"fuzzing key, 32 bytes long......".to_vec()).expect("long enough");
    let mut filter = ReplayFilter::new(links, 0);
    let mut newest = (0u64, 0u64);

    while rest.len() >= 3 {
        let (tag, link, len) = (rest[0], usize::from(rest[1] % 5), usize::from(rest[2]));
        let body = &rest[3..(3 + len).min(rest.len())];
        rest = &rest[(3 + len).min(rest.len())..];

        let hb = if tag & 1 == 0 {
            // Raw bytes: almost always refused, never a panic.
            match wire::decode(body, &key) {
                Ok(hb) => hb,
                Err(_) => continue,
            }
        } else {
            let Some(hb) = heartbeat_from(body, tag) else {
                continue;
            };
            let bytes = wire::encode(&hb, &key);
            assert!(bytes.len() <= wire::MAX_MESSAGE);
            assert_eq!(wire::decode(&bytes, &key).as_ref(), Ok(&hb));
            // Any single-bit change is refused.
            let mut flipped = bytes.clone();
            let i = usize::from(tag) % flipped.len();
            flipped[i] ^= 1 << (tag % 8);
            assert!(wire::decode(&flipped, &key).is_err());
            hb
        };

        match filter.check(link, &hb) {
            Ok(Verdict::Fresh) => {
                assert!(link < links);
                assert!((hb.boot_gen, hb.seq) > newest, "fresh but not newer");
                newest = (hb.boot_gen, hb.seq);
                assert_eq!(filter.newest_boot_gen(), hb.boot_gen);
            }
            Ok(Verdict::LinkOnly) => {
                assert!(link < links);
                assert!((hb.boot_gen, hb.seq) <= newest);
            }
            Err(_) => {}
        }
        // The same message again on the same link is always refused.
        if link < links {
            assert!(filter.check(link, &hb).is_err());
        }
    }
});

fn heartbeat_from(body: &[u8], tag: u8) -> Option<Heartbeat> {
    let (head, name) = body.split_at_checked(8 + 2 + 8 + 4)?;
    let name = std::str::from_utf8(name).ok()?;
    if !runtime::config::valid_node_name(name) {
        return None;
    }
    let boot_gen = u64::from_be_bytes(head[0..8].try_into().ok()?);
    // Small sequence numbers (from two bytes) so that windows and repeats happen; the top
    // tag bits also try the far end of the range.
    let mut seq = u64::from(u16::from_be_bytes([head[8], head[9]]));
    if tag & 0x80 != 0 {
        seq = u64::MAX - seq;
    }
    let data_gen = u64::from_be_bytes(head[10..18].try_into().ok()?);
    let keepalive_ms = u32::from_be_bytes(head[18..22].try_into().ok()?);
    let role = [
        WireRole::Starting,
        WireRole::Standby,
        WireRole::Fencing,
        WireRole::Acquiring,
        WireRole::Active,
        WireRole::Releasing,
    ][usize::from(tag >> 1) % 6];
    Some(Heartbeat {
        node: name.to_string(),
        role,
        flags: Flags {
            handover: tag & 2 != 0,
            takeover: tag & 4 != 0,
            fit: tag & 8 != 0,
            ping_ok: tag & 16 != 0,
        },
        boot_gen,
        seq,
        data_gen,
        keepalive_ms,
    })
}
