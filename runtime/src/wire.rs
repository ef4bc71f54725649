//! The heartbeat message: encoding, HMAC-SHA256 authentication and replay filtering.
//!
//! Every heartbeat carries the sender's whole view (role, data generation, requests), so a lost
//! message costs nothing and the same message can go over every link. Layout (big-endian):
//!
//! ```text
//! 0   "CMH1"          magic and version
//! 4   role            u8 (see `WireRole`)
//! 5   flags           u8 (see `Flags`)
//! 6   name_len        u8, 1..=64
//! 7   name            the sender's node name
//! ..  boot_gen        u64: bumped and persisted at every start of the sender
//! ..  seq             u64: per message, from 1 at every start
//! ..  data_gen        u64: which master's data is newest (bumped at every takeover)
//! ..  keepalive_ms    u32: the sender's interval, for diagnostics
//! ..  hmac            32 bytes, HMAC-SHA256(key, everything before)
//! ```
//!
//! Replay protection: a receiver accepts a message on a link only when its (boot_gen, seq) is
//! newer than the last one that link delivered, and not far behind the newest seen on any link.
//! Because `boot_gen` never goes back (it is at least the wall-clock second of the start), a
//! master whose state directory was wiped still sends generations its peer accepts.

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const MAGIC: &[u8; 4] = b"CMH1";
pub const MAX_NAME: usize = 64;
pub const MAC_LEN: usize = 32;
/// Longest valid message; anything longer is refused before it is looked at.
pub const MAX_MESSAGE: usize = 7 + MAX_NAME + 8 + 8 + 8 + 4 + MAC_LEN;
/// How far behind the newest sequence number a message may be and still count for its link
/// (links deliver with different delays; a replayed old message is far behind).
pub const REPLAY_WINDOW: u64 = 32;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WireRole {
    Starting,
    Standby,
    Fencing,
    Acquiring,
    Active,
    Releasing,
}

impl WireRole {
    fn code(self) -> u8 {
        match self {
            WireRole::Starting => 0,
            WireRole::Standby => 1,
            WireRole::Fencing => 2,
            WireRole::Acquiring => 3,
            WireRole::Active => 4,
            WireRole::Releasing => 5,
        }
    }
    fn from_code(c: u8) -> Option<WireRole> {
        Some(match c {
            0 => WireRole::Starting,
            1 => WireRole::Standby,
            2 => WireRole::Fencing,
            3 => WireRole::Acquiring,
            4 => WireRole::Active,
            5 => WireRole::Releasing,
            _ => return None,
        })
    }
    /// Whether a master in this role may have the group's resources up.
    pub fn holds(self) -> bool {
        matches!(
            self,
            WireRole::Acquiring | WireRole::Active | WireRole::Releasing
        )
    }
}

/// Requests and health carried in every heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Flags {
    /// "I am giving the group up: take it." (standby command, failed monitor, failed start)
    pub handover: bool,
    /// "Release the group to me." (takeover command)
    pub takeover: bool,
    /// The sender can run the group (no failed start, `always` monitors pass).
    pub fit: bool,
    /// The sender reaches its ping node (or has none).
    pub ping_ok: bool,
}

impl Flags {
    fn bits(self) -> u8 {
        u8::from(self.handover)
            | u8::from(self.takeover) << 1
            | u8::from(self.fit) << 2
            | u8::from(self.ping_ok) << 3
    }
    fn from_bits(b: u8) -> Option<Flags> {
        (b & 0xf0 == 0).then_some(Flags {
            handover: b & 1 != 0,
            takeover: b & 2 != 0,
            fit: b & 4 != 0,
            ping_ok: b & 8 != 0,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heartbeat {
    pub node: String,
    pub role: WireRole,
    pub flags: Flags,
    pub boot_gen: u64,
    pub seq: u64,
    pub data_gen: u64,
    pub keepalive_ms: u32,
}

/// Why a datagram or frame was dropped; each is counted per link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Reject {
    #[error("longer than any heartbeat")]
    Oversized,
    #[error("malformed")]
    Malformed,
    #[error("bad HMAC (wrong key or forged)")]
    BadAuth,
    #[error("replayed or out of date")]
    Replayed,
    #[error("from an unknown node")]
    UnknownSender,
    #[error("our own message came back")]
    Reflected,
}

/// The shared secret; never printed.
#[derive(Clone)]
pub struct Key(Vec<u8>);

impl Key {
    pub fn new(bytes: Vec<u8>) -> Option<Key> {
        (bytes.len() >= 16).then_some(Key(bytes))
    }
    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(<{} bytes>)", self.0.len())
    }
}

pub fn encode(hb: &Heartbeat, key: &Key) -> Vec<u8> {
    let name = hb.node.as_bytes();
    assert!(
        (1..=MAX_NAME).contains(&name.len()),
        "node names are validated at configuration time"
    );
    let mut out = Vec::with_capacity(MAX_MESSAGE);
    out.extend_from_slice(MAGIC);
    out.push(hb.role.code());
    out.push(hb.flags.bits());
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&hb.boot_gen.to_be_bytes());
    out.extend_from_slice(&hb.seq.to_be_bytes());
    out.extend_from_slice(&hb.data_gen.to_be_bytes());
    out.extend_from_slice(&hb.keepalive_ms.to_be_bytes());
    let mut mac = key.mac();
    mac.update(&out);
    out.extend_from_slice(&mac.finalize().into_bytes());
    out
}

/// Checks length, layout and HMAC (in constant time) and returns the message. Does not judge
/// who sent it or when; see `ReplayFilter`.
pub fn decode(bytes: &[u8], key: &Key) -> Result<Heartbeat, Reject> {
    if bytes.len() > MAX_MESSAGE {
        return Err(Reject::Oversized);
    }
    if bytes.len() < 7 + 1 + 28 + MAC_LEN || &bytes[..4] != MAGIC {
        return Err(Reject::Malformed);
    }
    let name_len = usize::from(bytes[6]);
    if !(1..=MAX_NAME).contains(&name_len) || bytes.len() != 7 + name_len + 28 + MAC_LEN {
        return Err(Reject::Malformed);
    }
    let (body, tag) = bytes.split_at(bytes.len() - MAC_LEN);
    let mut mac = key.mac();
    mac.update(body);
    mac.verify_slice(tag).map_err(|_| Reject::BadAuth)?;
    let role = WireRole::from_code(body[4]).ok_or(Reject::Malformed)?;
    let flags = Flags::from_bits(body[5]).ok_or(Reject::Malformed)?;
    let node = std::str::from_utf8(&body[7..7 + name_len])
        .ok()
        .filter(|n| crate::config::valid_node_name(n))
        .ok_or(Reject::Malformed)?
        .to_string();
    let rest = &body[7 + name_len..];
    let u64_at = |i: usize| u64::from_be_bytes(rest[i..i + 8].try_into().expect("8 bytes"));
    Ok(Heartbeat {
        node,
        role,
        flags,
        boot_gen: u64_at(0),
        seq: u64_at(8),
        data_gen: u64_at(16),
        keepalive_ms: u32::from_be_bytes(rest[24..28].try_into().expect("4 bytes")),
    })
}

/// What a receiver does with an authentic message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Newest of all: proves the link and updates the view of the peer.
    Fresh,
    /// Already delivered by another link: proves this link only.
    LinkOnly,
}

/// Per-peer replay state over all links. `min_boot_gen` is the highest generation ever
/// accepted (persisted by the caller, so a restart of the receiver does not reopen old ones).
#[derive(Debug, Clone)]
pub struct ReplayFilter {
    newest: (u64, u64),
    per_link: Vec<(u64, u64)>,
}

impl ReplayFilter {
    pub fn new(links: usize, min_boot_gen: u64) -> ReplayFilter {
        ReplayFilter {
            newest: (min_boot_gen, 0),
            per_link: vec![(min_boot_gen, 0); links],
        }
    }

    pub fn newest_boot_gen(&self) -> u64 {
        self.newest.0
    }

    pub fn check(&mut self, link: usize, hb: &Heartbeat) -> Result<Verdict, Reject> {
        let id = (hb.boot_gen, hb.seq);
        let Some(last) = self.per_link.get_mut(link) else {
            return Err(Reject::Malformed);
        };
        if id <= *last || hb.seq == 0 {
            return Err(Reject::Replayed);
        }
        if id.0 < self.newest.0
            || (id.0 == self.newest.0 && id.1.saturating_add(REPLAY_WINDOW) < self.newest.1)
        {
            return Err(Reject::Replayed);
        }
        *last = id;
        if id > self.newest {
            self.newest = id;
            Ok(Verdict::Fresh)
        } else {
            Ok(Verdict::LinkOnly)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    fn hb(seq: u64) -> Heartbeat {
        Heartbeat {
            node: "servera".into(),
            role: WireRole::Active,
            flags: Flags {
                fit: true,
                ping_ok: true,
                ..Flags::default()
            },
            boot_gen: 1_790_000_000,
            seq,
            data_gen: 7,
            keepalive_ms: 100,
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&hb(3), &key());
        assert!(bytes.len() <= MAX_MESSAGE);
        assert_eq!(decode(&bytes, &key()).unwrap(), hb(3));
    }

    #[test]
    fn forged_truncated_oversized_are_refused() {
        let bytes = encode(&hb(3), &key());
        let other = Key::new(b"another key of sixteen+ bytes".to_vec()).unwrap();
        assert_eq!(decode(&bytes, &other), Err(Reject::BadAuth));
        let mut flipped = bytes.clone();
        flipped[20] ^= 1;
        assert_eq!(decode(&flipped, &key()), Err(Reject::BadAuth));
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], &key()).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.resize(MAX_MESSAGE + 1, 0);
        assert_eq!(decode(&long, &key()), Err(Reject::Oversized));
    }

    #[test]
    fn replay_filter() {
        let mut f = ReplayFilter::new(2, 0);
        assert_eq!(f.check(0, &hb(1)), Ok(Verdict::Fresh));
        assert_eq!(f.check(1, &hb(1)), Ok(Verdict::LinkOnly));
        assert_eq!(f.check(0, &hb(1)), Err(Reject::Replayed));
        assert_eq!(f.check(0, &hb(2)), Ok(Verdict::Fresh));
        // Link 1 was silent for a while, then someone replays an old message on it.
        for s in 3..100 {
            f.check(0, &hb(s)).unwrap();
        }
        assert_eq!(f.check(1, &hb(5)), Err(Reject::Replayed));
        assert_eq!(f.check(1, &hb(99)), Ok(Verdict::LinkOnly));
        // A restart of the sender: higher generation, sequence from 1 again.
        let mut restarted = hb(1);
        restarted.boot_gen += 5;
        assert_eq!(f.check(1, &restarted), Ok(Verdict::Fresh));
        assert_eq!(f.check(0, &hb(100)), Err(Reject::Replayed));
    }

    #[test]
    fn sequence_numbers_at_the_end_of_the_range() {
        // Found by the ha_wire fuzz target: the window arithmetic overflowed.
        let mut f = ReplayFilter::new(1, 0);
        assert_eq!(f.check(0, &hb(u64::MAX - 1)), Ok(Verdict::Fresh));
        assert_eq!(f.check(0, &hb(u64::MAX)), Ok(Verdict::Fresh));
        assert_eq!(f.check(0, &hb(u64::MAX)), Err(Reject::Replayed));
    }

    #[test]
    fn persisted_generation_bars_old_messages() {
        let mut f = ReplayFilter::new(1, 1_790_000_001);
        assert_eq!(f.check(0, &hb(1)), Err(Reject::Replayed));
    }
}
