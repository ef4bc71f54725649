//! The DHCP wire format at the edge of trust: a bounds-checked parser for requests and the
//! finishing touches on replies.
//!
//! Requests are parsed here and not by dhcproto: dhcproto silently drops every option after a
//! malformed one (so a bad option 93 hides the message type) and, in debug builds, panics on an
//! option 94 of the wrong length. [`parse`] walks the options itself, checks each length against
//! what the option needs, skips (strips) the malformed ones and keeps the rest, without
//! allocating. [`sanitize`] produces a copy with only well-formed options, for code that wants
//! to hand a hostile packet to dhcproto. Replies are built with dhcproto and finished by
//! [`finish_reply`] (verbatim option 82, padding to the BOOTP minimum of 300 bytes).

use std::net::Ipv4Addr;

use crate::node::MacAddr;

/// Fixed BOOTP header length (up to and excluding the magic cookie).
pub const HEADER_LEN: usize = 236;
/// The DHCP magic cookie.
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// Shortest reply some PXE ROMs accept (RFC 951 BOOTP size).
pub const MIN_REPLY_LEN: usize = 300;
/// Longest request we look at; anything longer is cut here (Ethernet frames cannot carry more
/// without fragmentation, which no DHCP client uses).
pub const MAX_PACKET_LEN: usize = 1500;

/// DHCP message types (option 53).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MessageType {
    /// The type for an option-53 value, if it is one we know.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            _ => return None,
        })
    }
}

/// Why a datagram is not a DHCP request we can answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("packet of {0} bytes is shorter than a DHCP header")]
    TooShort(usize),
    #[error("op {0} is not BOOTREQUEST")]
    NotRequest(u8),
    #[error("hardware type {htype}/length {hlen} is not Ethernet")]
    NotEthernet { htype: u8, hlen: u8 },
    #[error("no DHCP magic cookie (plain BOOTP is not served)")]
    NoMagic,
    #[error("no valid message type (option 53)")]
    NoMessageType,
}

/// A parsed DHCP request. Borrowed from the datagram; no allocation.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub msg_type: MessageType,
    pub hops: u8,
    pub xid: u32,
    pub secs: u16,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// The 16-byte chaddr field as sent (echoed in replies).
    pub chaddr: [u8; 16],
    /// The client's hardware address (first 6 bytes of chaddr).
    pub mac: MacAddr,
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 51.
    pub lease_time: Option<u32>,
    /// Option 61, at least one byte.
    pub client_id: Option<&'a [u8]>,
    /// Option 55.
    pub param_list: Option<&'a [u8]>,
    /// Option 57 (only values ≥ 576 are kept).
    pub max_size: Option<u16>,
    /// Option 12.
    pub hostname: Option<&'a [u8]>,
    /// Option 60.
    pub vendor_class: Option<&'a [u8]>,
    /// Option 77.
    pub user_class: Option<&'a [u8]>,
    /// Option 93: the first architecture of the list.
    pub arch: Option<u16>,
    /// Option 94: (type, major, minor).
    pub nic: Option<(u8, u8, u8)>,
    /// Option 97: 17 bytes, leading type 0 (the whole option value, for echoing).
    pub uuid: Option<&'a [u8]>,
    /// Option 175 (iPXE encapsulated options) as sent.
    pub ipxe_options: Option<&'a [u8]>,
    /// Option 82 as sent (well-formed sub-options only), echoed verbatim to the relay.
    pub relay_info: Option<&'a [u8]>,
    /// How many options were stripped because their length was wrong or they ran past the end.
    pub malformed: u16,
}

impl Request<'_> {
    /// The BROADCAST bit of the flags field.
    pub fn broadcast(&self) -> bool {
        self.flags & 0x8000 != 0
    }

    /// Whether option `code` is in the parameter request list.
    pub fn requested(&self, code: u8) -> bool {
        self.param_list.is_some_and(|l| l.contains(&code))
    }
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    match b.get(at..at + 4) {
        Some(s) => Ipv4Addr::new(s[0], s[1], s[2], s[3]),
        None => Ipv4Addr::UNSPECIFIED,
    }
}

/// Whether option `code` with value `v` is well formed, as far as this server reads it.
/// Options we never interpret are accepted as they are.
fn well_formed(code: u8, v: &[u8]) -> bool {
    match code {
        53 => v.len() == 1,
        50 | 54 | 51 => v.len() == 4,
        57 => v.len() == 2 && u16::from_be_bytes([v[0], v[1]]) >= 576,
        61 | 55 | 60 | 77 | 12 => !v.is_empty(),
        93 => !v.is_empty() && v.len() & 1 == 0,
        94 => v.len() == 3,
        97 => v.len() == 17 && v[0] == 0,
        82 => relay_info_well_formed(v),
        // Option overload: we never read options from sname/file; drop it so that nothing
        // downstream tries to.
        52 => false,
        _ => true,
    }
}

/// Option 82 must be a sequence of complete sub-options.
fn relay_info_well_formed(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        let Some(&len) = v.get(i + 1) else {
            return false;
        };
        i += 2 + usize::from(len);
    }
    i == v.len() && !v.is_empty()
}

/// Walks the options area, calling `f(code, value)` for every option (pad and end excluded).
/// Returns true when the walk ended on an option that runs past the end of the packet. Never
/// reads out of bounds; the number of steps is bounded by the packet length.
fn walk<'a>(opts: &'a [u8], mut f: impl FnMut(u8, &'a [u8])) -> bool {
    let mut i = 0;
    while i < opts.len() {
        let code = opts[i];
        match code {
            0 => i += 1,
            255 => return false,
            _ => {
                let Some(&len) = opts.get(i + 1) else {
                    return true;
                };
                let end = i + 2 + usize::from(len);
                let Some(value) = opts.get(i + 2..end) else {
                    return true;
                };
                f(code, value);
                i = end;
            }
        }
    }
    false
}

/// Parses a request datagram. Malformed options are skipped (counted in `malformed`); the
/// first occurrence of an option wins (RFC 3396 concatenation is not done: none of the options
/// this server reads needs more than 255 bytes).
pub fn parse(packet: &[u8]) -> Result<Request<'_>, WireError> {
    let b = &packet[..packet.len().min(MAX_PACKET_LEN)];
    if b.len() < HEADER_LEN + 4 {
        return Err(WireError::TooShort(b.len()));
    }
    if b[0] != 1 {
        return Err(WireError::NotRequest(b[0]));
    }
    if b[1] != 1 || b[2] != 6 {
        return Err(WireError::NotEthernet {
            htype: b[1],
            hlen: b[2],
        });
    }
    if b[HEADER_LEN..HEADER_LEN + 4] != MAGIC {
        return Err(WireError::NoMagic);
    }
    let mut chaddr = [0u8; 16];
    chaddr.copy_from_slice(&b[28..44]);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&b[28..34]);
    let mut req = Request {
        msg_type: MessageType::Discover,
        hops: b[3],
        xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        secs: u16::from_be_bytes([b[8], b[9]]),
        flags: u16::from_be_bytes([b[10], b[11]]),
        ciaddr: ip_at(b, 12),
        yiaddr: ip_at(b, 16),
        siaddr: ip_at(b, 20),
        giaddr: ip_at(b, 24),
        chaddr,
        mac: MacAddr(mac),
        requested_ip: None,
        server_id: None,
        lease_time: None,
        client_id: None,
        param_list: None,
        max_size: None,
        hostname: None,
        vendor_class: None,
        user_class: None,
        arch: None,
        nic: None,
        uuid: None,
        ipxe_options: None,
        relay_info: None,
        malformed: 0,
    };
    let mut msg_type = None;
    let mut malformed: u16 = 0;
    let truncated = walk(&b[HEADER_LEN + 4..], |code, v| {
        if !well_formed(code, v) {
            malformed = malformed.saturating_add(1);
            return;
        }
        match code {
            53 if msg_type.is_none() => msg_type = Some(v[0]),
            50 if req.requested_ip.is_none() => req.requested_ip = Some(ip_at(v, 0)),
            54 if req.server_id.is_none() => req.server_id = Some(ip_at(v, 0)),
            51 if req.lease_time.is_none() => {
                req.lease_time = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
            }
            57 if req.max_size.is_none() => req.max_size = Some(u16::from_be_bytes([v[0], v[1]])),
            61 if req.client_id.is_none() => req.client_id = Some(v),
            55 if req.param_list.is_none() => req.param_list = Some(v),
            12 if req.hostname.is_none() => req.hostname = Some(v),
            60 if req.vendor_class.is_none() => req.vendor_class = Some(v),
            77 if req.user_class.is_none() => req.user_class = Some(v),
            93 if req.arch.is_none() => req.arch = Some(u16::from_be_bytes([v[0], v[1]])),
            94 if req.nic.is_none() => req.nic = Some((v[0], v[1], v[2])),
            97 if req.uuid.is_none() => req.uuid = Some(v),
            175 if req.ipxe_options.is_none() => req.ipxe_options = Some(v),
            82 if req.relay_info.is_none() => req.relay_info = Some(v),
            _ => {}
        }
    });
    req.malformed = malformed.saturating_add(u16::from(truncated));
    req.msg_type = msg_type
        .and_then(MessageType::from_u8)
        .ok_or(WireError::NoMessageType)?;
    Ok(req)
}

/// A copy of `packet` whose options area holds only the well-formed options (in their original
/// order) and an end marker, so that it can be given to dhcproto without losing options or
/// tripping its debug assertions. The header is copied as is.
pub fn sanitize(packet: &[u8]) -> Option<Vec<u8>> {
    let b = &packet[..packet.len().min(MAX_PACKET_LEN)];
    if b.len() < HEADER_LEN + 4 || b[HEADER_LEN..HEADER_LEN + 4] != MAGIC {
        return None;
    }
    let mut out = Vec::with_capacity(b.len() + 1);
    out.extend_from_slice(&b[..HEADER_LEN + 4]);
    walk(&b[HEADER_LEN + 4..], |code, v| {
        if well_formed(code, v) {
            out.push(code);
            out.push(v.len() as u8);
            out.extend_from_slice(v);
        }
    });
    out.push(255);
    Some(out)
}

/// Finishes an encoded reply: appends option 82 verbatim (RFC 3046: the server copies it back
/// unchanged) before the end marker, and pads to [`MIN_REPLY_LEN`].
///
/// `encoded` must be a dhcproto-encoded message whose last byte is the end option.
pub fn finish_reply(encoded: &mut Vec<u8>, relay_info: Option<&[u8]>) {
    if let Some(info) = relay_info {
        if encoded.last() == Some(&255) && info.len() <= 255 {
            encoded.pop();
            encoded.push(82);
            encoded.push(info.len() as u8);
            encoded.extend_from_slice(info);
            encoded.push(255);
        }
    }
    if encoded.len() < MIN_REPLY_LEN {
        encoded.resize(MIN_REPLY_LEN, 0);
    }
}

/// Finds option `code` in an encoded message (for tests and tools). Bounds-checked.
pub fn find_option(packet: &[u8], code: u8) -> Option<&[u8]> {
    let opts = packet.get(HEADER_LEN + 4..)?;
    let mut found = None;
    walk(opts, |c, v| {
        if c == code && found.is_none() {
            found = Some(v);
        }
    });
    found
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a raw request: header + cookie + the given raw option bytes + end.
    pub(crate) fn raw_request(mac: [u8; 6], opts: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p[0] = 1;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        p[28..34].copy_from_slice(&mac);
        p.extend_from_slice(&MAGIC);
        p.extend_from_slice(opts);
        p.push(255);
        p
    }

    const MAC: [u8; 6] = [0x52, 0x54, 0, 1, 2, 3];

    #[test]
    fn parses_a_pxe_discover() {
        let mut opts = vec![53, 1, 1, 93, 2, 0, 7, 94, 3, 1, 3, 16, 97, 17, 0];
        opts.extend_from_slice(&[7; 16]);
        opts.extend_from_slice(&[60, 9]);
        opts.extend_from_slice(b"PXEClient");
        let p = raw_request(MAC, &opts);
        let r = parse(&p).unwrap();
        assert_eq!(r.msg_type, MessageType::Discover);
        assert_eq!(r.arch, Some(7));
        assert_eq!(r.nic, Some((1, 3, 16)));
        assert_eq!(r.uuid.unwrap().len(), 17);
        assert_eq!(r.vendor_class, Some(&b"PXEClient"[..]));
        assert_eq!(r.mac, MacAddr(MAC));
        assert_eq!(r.malformed, 0);
    }

    #[test]
    fn malformed_options_are_stripped_not_fatal() {
        // 93 with length 1 and 94 with length 2, then the message type: dhcproto would lose 53.
        let opts = [93, 1, 0, 94, 2, 1, 2, 53, 1, 3, 97, 3, 0, 1, 2];
        let p = raw_request(MAC, &opts);
        let r = parse(&p).unwrap();
        assert_eq!(r.msg_type, MessageType::Request);
        assert_eq!(r.arch, None);
        assert_eq!(r.nic, None);
        assert_eq!(r.uuid, None);
        assert_eq!(r.malformed, 3);
        // The sanitized copy decodes with dhcproto and keeps the message type.
        use dhcproto::Decodable;
        let clean = sanitize(&p).unwrap();
        let m = dhcproto::v4::Message::decode(&mut dhcproto::Decoder::new(&clean)).unwrap();
        assert_eq!(
            m.opts().msg_type(),
            Some(dhcproto::v4::MessageType::Request)
        );
    }

    #[test]
    fn truncated_packets_and_options() {
        assert_eq!(parse(&[1, 1, 6]).unwrap_err(), WireError::TooShort(3));
        let p = raw_request(MAC, &[53, 1, 1, 61, 200, 1, 2]);
        // 61 runs past the end: stripped, 53 kept.
        let r = parse(&p).unwrap();
        assert_eq!(r.client_id, None);
        assert_eq!(r.malformed, 1);
        let mut p = raw_request(MAC, &[53, 1, 1]);
        p.truncate(HEADER_LEN + 4 + 2);
        assert_eq!(parse(&p).unwrap_err(), WireError::NoMessageType);
        let mut bad = raw_request(MAC, &[53, 1, 1]);
        bad[0] = 2;
        assert_eq!(parse(&bad).unwrap_err(), WireError::NotRequest(2));
        let mut bad = raw_request(MAC, &[53, 1, 1]);
        bad[2] = 16;
        assert!(matches!(parse(&bad), Err(WireError::NotEthernet { .. })));
    }

    #[test]
    fn overlong_option_lists_are_bounded() {
        // 700 pad bytes and 300 tiny options: parse stays within the first 1500 bytes.
        let mut opts = vec![0u8; 700];
        for _ in 0..300 {
            opts.extend_from_slice(&[250, 1, 0]);
        }
        opts.extend_from_slice(&[53, 1, 1]);
        let p = raw_request(MAC, &opts);
        assert!(p.len() > MAX_PACKET_LEN);
        assert_eq!(parse(&p).unwrap_err(), WireError::NoMessageType);
        assert!(sanitize(&p).unwrap().len() <= MAX_PACKET_LEN + 1);
    }

    #[test]
    fn finish_reply_appends_82_and_pads() {
        let mut enc = vec![0u8; 240];
        enc.extend_from_slice(&[53, 1, 2, 255]);
        finish_reply(&mut enc, Some(&[1, 2, 0xaa, 0xbb]));
        assert_eq!(enc.len(), MIN_REPLY_LEN);
        assert_eq!(find_option(&enc, 82), Some(&[1, 2, 0xaa, 0xbb][..]));
        assert_eq!(find_option(&enc, 53), Some(&[2][..]));
    }
}
