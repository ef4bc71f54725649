//! The TFTP wire format (RFC 1350, RFC 2347): parsing what clients send and encoding what the
//! server sends. Pure: bytes in, borrowed views out; nothing here allocates on the parse path.

use std::fmt;

/// Opcodes (RFC 1350 §5, RFC 2347).
pub const OP_RRQ: u16 = 1;
pub const OP_WRQ: u16 = 2;
pub const OP_DATA: u16 = 3;
pub const OP_ACK: u16 = 4;
pub const OP_ERROR: u16 = 5;
pub const OP_OACK: u16 = 6;

/// The most options a request may carry. Real clients send at most four or five (blksize, tsize,
/// timeout, windowsize, sometimes rollover); the bound keeps the work per request constant.
pub const MAX_OPTIONS: usize = 16;

/// The longest request accepted, in bytes: twice RFC 2347's 512-octet limit, for tolerance.
pub const MAX_REQUEST_LEN: usize = 1024;

/// TFTP error codes (RFC 1350 appendix, RFC 2347 for 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    /// 0: not defined, see the message.
    NotDefined = 0,
    /// 1: file not found.
    FileNotFound = 1,
    /// 2: access violation.
    AccessViolation = 2,
    /// 3: disk full or allocation exceeded.
    DiskFull = 3,
    /// 4: illegal TFTP operation.
    IllegalOperation = 4,
    /// 5: unknown transfer ID.
    UnknownTid = 5,
    /// 6: file already exists.
    FileExists = 6,
    /// 7: no such user.
    NoSuchUser = 7,
    /// 8: option negotiation refused (RFC 2347).
    OptionRefused = 8,
}

impl ErrorCode {
    /// The numeric code on the wire.
    pub fn code(self) -> u16 {
        self as u16
    }
}

/// Whether a request asks to read or to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// RRQ: the client wants a file.
    Read,
    /// WRQ: the client wants to store a file (always refused: this server is read-only).
    Write,
}

/// A parsed RRQ or WRQ, borrowing the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub kind: RequestKind,
    /// The file name exactly as sent (not validated; see [`super::path`]).
    pub filename: &'a [u8],
    /// The transfer mode as sent (`octet`, `netascii`, `mail`, any case).
    pub mode: &'a [u8],
    /// `name\0value\0` pairs, already checked to be well formed and at most [`MAX_OPTIONS`].
    options: &'a [u8],
}

impl<'a> Request<'a> {
    /// The options as `(name, value)` pairs, in the order sent.
    pub fn options(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let mut fields = split_fields(self.options);
        std::iter::from_fn(move || Some((fields.next()?, fields.next()?)))
    }
}

/// Splits a run of NUL-terminated fields (an empty run has no fields).
fn split_fields(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    buf.split_inclusive(|&b| b == 0)
        .map(|f| f.strip_suffix(&[0]).unwrap_or(f))
}

/// Why a datagram on the request port is not a usable request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer than two bytes: not even an opcode.
    #[error("datagram too short for an opcode ({0} bytes)")]
    TooShort(usize),
    /// An opcode TFTP does not define.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A valid opcode that is not a request (DATA, ACK, ERROR, OACK sent to the request port).
    #[error("opcode {0} is not a request")]
    NotARequest(u16),
    /// Longer than [`MAX_REQUEST_LEN`].
    #[error("request longer than {MAX_REQUEST_LEN} bytes ({0})")]
    TooLong(usize),
    /// The last field is not NUL-terminated (a truncated packet).
    #[error("request is not NUL-terminated (truncated?)")]
    Unterminated,
    /// Only a file name, no mode.
    #[error("request has no mode")]
    MissingMode,
    /// An option name without its value.
    #[error("option without a value")]
    OptionWithoutValue,
    /// More than [`MAX_OPTIONS`] options.
    #[error("more than {MAX_OPTIONS} options")]
    TooManyOptions,
}

/// Parses a datagram received on the request port.
pub fn parse_request(buf: &[u8]) -> Result<Request<'_>, ParseError> {
    let opcode = opcode(buf)?;
    let kind = match opcode {
        OP_RRQ => RequestKind::Read,
        OP_WRQ => RequestKind::Write,
        OP_DATA | OP_ACK | OP_ERROR | OP_OACK => return Err(ParseError::NotARequest(opcode)),
        other => return Err(ParseError::UnknownOpcode(other)),
    };
    if buf.len() > MAX_REQUEST_LEN {
        return Err(ParseError::TooLong(buf.len()));
    }
    let body = &buf[2..];
    if body.last() != Some(&0) {
        return Err(ParseError::Unterminated);
    }
    let name_end = find_nul(body, 0);
    let filename = &body[..name_end];
    // `body` ends with NUL, so `name_end` is a valid index; the mode starts after it.
    let mode_start = name_end + 1;
    if mode_start >= body.len() {
        return Err(ParseError::MissingMode);
    }
    let mode_end = find_nul(body, mode_start);
    let mode = &body[mode_start..mode_end];
    let options = &body[mode_end + 1..];
    let count = options.iter().filter(|&&b| b == 0).count();
    if count % 2 != 0 {
        return Err(ParseError::OptionWithoutValue);
    }
    if count / 2 > MAX_OPTIONS {
        return Err(ParseError::TooManyOptions);
    }
    Ok(Request {
        kind,
        filename,
        mode,
        options,
    })
}

/// Index of the first NUL at or after `from` (the caller guarantees one exists).
fn find_nul(buf: &[u8], from: usize) -> usize {
    buf[from..]
        .iter()
        .position(|&b| b == 0)
        .map(|p| from + p)
        .unwrap_or(buf.len())
}

fn opcode(buf: &[u8]) -> Result<u16, ParseError> {
    match buf {
        [a, b, ..] => Ok(u16::from_be_bytes([*a, *b])),
        _ => Err(ParseError::TooShort(buf.len())),
    }
}

/// What a client may send on a transfer's own port (its TID).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientPacket<'a> {
    /// ACK of a block (block 0 acknowledges an OACK).
    Ack(u16),
    /// The client gives up; the message is as sent (may be empty or not UTF-8).
    Error { code: u16, message: &'a [u8] },
    /// Anything else: a request, DATA, OACK, garbage. Ignored during a read transfer.
    Other,
}

/// Parses a datagram received on a transfer port. Never fails: what is not an ACK or ERROR is
/// [`ClientPacket::Other`].
pub fn parse_client_packet(buf: &[u8]) -> ClientPacket<'_> {
    match opcode(buf) {
        // RFC 1350 ACKs are exactly 4 bytes; trailing bytes are tolerated (some stacks pad).
        Ok(OP_ACK) if buf.len() >= 4 => ClientPacket::Ack(u16::from_be_bytes([buf[2], buf[3]])),
        Ok(OP_ERROR) if buf.len() >= 4 => {
            let msg = &buf[4..];
            let end = msg.iter().position(|&b| b == 0).unwrap_or(msg.len());
            ClientPacket::Error {
                code: u16::from_be_bytes([buf[2], buf[3]]),
                message: &msg[..end],
            }
        }
        _ => ClientPacket::Other,
    }
}

/// Encodes an ERROR packet into `out` (cleared first).
pub fn encode_error(code: ErrorCode, message: &str, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&OP_ERROR.to_be_bytes());
    out.extend_from_slice(&code.code().to_be_bytes());
    // Messages are the server's own text; a NUL inside would end the field early, so drop them.
    out.extend(message.bytes().filter(|&b| b != 0));
    out.push(0);
}

/// An ERROR packet as a new vector.
pub fn error_packet(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len());
    encode_error(code, message, &mut out);
    out
}

/// Writes a DATA header for `block` into the first four bytes of `out`.
pub fn write_data_header(block: u16, out: &mut [u8; 4]) {
    out[..2].copy_from_slice(&OP_DATA.to_be_bytes());
    out[2..].copy_from_slice(&block.to_be_bytes());
}

/// Writes the OACK for `options` (name, value) into `out` (cleared first).
pub fn encode_oack<'a>(options: impl IntoIterator<Item = (&'a str, u64)>, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&OP_OACK.to_be_bytes());
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.to_string().as_bytes());
        out.push(0);
    }
}

/// Shows bytes from the network in a log line: printable ASCII as is, the rest escaped, at most
/// 80 bytes (so a hostile name cannot flood or forge log lines).
pub struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 80;
        for &b in self.0.iter().take(MAX) {
            if (0x20..0x7f).contains(&b) && b != b'\\' {
                write!(f, "{}", b as char)?;
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        if self.0.len() > MAX {
            write!(f, "…(+{} bytes)", self.0.len() - MAX)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(fields: &[&[u8]]) -> Vec<u8> {
        let mut v = OP_RRQ.to_be_bytes().to_vec();
        for f in fields {
            v.extend_from_slice(f);
            v.push(0);
        }
        v
    }

    #[test]
    fn parses_a_plain_request() {
        let pkt = rrq(&[b"ipxe.efi", b"octet"]);
        let r = parse_request(&pkt).unwrap();
        assert_eq!(r.kind, RequestKind::Read);
        assert_eq!(r.filename, b"ipxe.efi");
        assert_eq!(r.mode, b"octet");
        assert_eq!(r.options().count(), 0);
    }

    #[test]
    fn parses_options_in_order() {
        let pkt = rrq(&[b"f", b"octet", b"blksize", b"1468", b"tsize", b"0"]);
        let r = parse_request(&pkt).unwrap();
        let opts: Vec<_> = r.options().collect();
        assert_eq!(
            opts,
            vec![(&b"blksize"[..], &b"1468"[..]), (&b"tsize"[..], &b"0"[..])]
        );
    }

    #[test]
    fn rejects_malformed_requests() {
        assert_eq!(parse_request(b""), Err(ParseError::TooShort(0)));
        assert_eq!(parse_request(b"\x00"), Err(ParseError::TooShort(1)));
        assert_eq!(
            parse_request(b"\x00\x09f\x00octet\x00"),
            Err(ParseError::UnknownOpcode(9))
        );
        assert_eq!(
            parse_request(b"\x00\x04\x00\x01"),
            Err(ParseError::NotARequest(4))
        );
        assert_eq!(parse_request(b"\x00\x01"), Err(ParseError::Unterminated));
        let mut long = rrq(&[b"f", b"octet"]);
        long.resize(MAX_REQUEST_LEN + 1, 0);
        assert_eq!(
            parse_request(&long),
            Err(ParseError::TooLong(MAX_REQUEST_LEN + 1))
        );
        assert_eq!(
            parse_request(b"\x00\x01file\x00oct"),
            Err(ParseError::Unterminated)
        );
        assert_eq!(
            parse_request(b"\x00\x01file\x00"),
            Err(ParseError::MissingMode)
        );
        assert_eq!(
            parse_request(&rrq(&[b"f", b"octet", b"blksize"])),
            Err(ParseError::OptionWithoutValue)
        );
        let mut many: Vec<&[u8]> = vec![b"f", b"octet"];
        for _ in 0..=MAX_OPTIONS {
            many.push(b"x");
            many.push(b"1");
        }
        assert_eq!(parse_request(&rrq(&many)), Err(ParseError::TooManyOptions));
    }

    #[test]
    fn empty_fields_are_kept_as_empty() {
        let r = parse_request(b"\x00\x01\x00\x00").unwrap();
        assert_eq!(r.filename, b"");
        assert_eq!(r.mode, b"");
    }

    #[test]
    fn client_packets() {
        assert_eq!(
            parse_client_packet(b"\x00\x04\x12\x34"),
            ClientPacket::Ack(0x1234)
        );
        assert_eq!(
            parse_client_packet(b"\x00\x05\x00\x08no\x00junk"),
            ClientPacket::Error {
                code: 8,
                message: b"no"
            }
        );
        assert_eq!(
            parse_client_packet(b"\x00\x05\x00\x00"),
            ClientPacket::Error {
                code: 0,
                message: b""
            }
        );
        assert_eq!(parse_client_packet(b"\x00\x04\x00"), ClientPacket::Other);
        assert_eq!(parse_client_packet(b""), ClientPacket::Other);
        assert_eq!(
            parse_client_packet(b"\x00\x03\x00\x01abc"),
            ClientPacket::Other
        );
    }

    #[test]
    fn encodes_error_and_oack() {
        assert_eq!(
            error_packet(ErrorCode::FileNotFound, "File not found"),
            b"\x00\x05\x00\x01File not found\x00"
        );
        let mut out = Vec::new();
        encode_oack([("blksize", 1468), ("tsize", 0)], &mut out);
        assert_eq!(out, b"\x00\x06blksize\x001468\x00tsize\x000\x00");
    }

    #[test]
    fn escaped_is_bounded_and_safe() {
        let s = Escaped(b"a\nb\\\xff").to_string();
        assert_eq!(s, "a\\x0ab\\x5c\\xff");
        let long = vec![b'a'; 300];
        assert!(Escaped(&long).to_string().len() < 120);
    }
}
