//! The decision on one datagram received on the request port: serve it, refuse it with an ERROR,
//! or drop it silently. Pure; this is what the `tftp_request` fuzz target drives.
//!
//! Replies, and why:
//! - Fewer than two bytes: dropped. It is not a TFTP packet, and answering every stray datagram
//!   would make the server a reflector.
//! - An ERROR packet: dropped. Errors are never answered (RFC 1350 §7), or two peers could bounce
//!   errors forever.
//! - Any other non-request opcode (DATA, ACK, OACK, unknown): ERROR 4, illegal operation.
//! - A malformed RRQ/WRQ (truncated, no mode, option without value…): ERROR 4.
//! - A WRQ: ERROR 2, access violation: this server is read-only.
//! - A mode other than `octet` or `netascii`: ERROR 4. `netascii` is served byte for byte like
//!   `octet`: boot files are binary, and converting line ends would corrupt them for the many
//!   clients that default to netascii (tftp-hpa's client does); the size announced in tsize then
//!   also stays exact.
//! - A refused file name: ERROR 2. Bad option values: ERROR 8.

use super::options::{self, Limits, Negotiated, OptionError};
use super::packet::{self, ErrorCode, ParseError, RequestKind};
use super::path::{PathError, TftpPath};

/// The transfer mode requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Octet,
    /// Served as octet (see the module documentation).
    Netascii,
}

/// A read request the server will try to serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub path: TftpPath,
    pub mode: Mode,
    pub negotiated: Negotiated,
}

/// Why a request is refused. The `Display` text is for logs; [`RequestError::reply`] is what the
/// client is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("malformed request: {0}")]
    Malformed(ParseError),
    #[error("write request refused (read-only server)")]
    Write,
    #[error("unsupported mode")]
    BadMode,
    #[error("refused file name: {0}")]
    Path(PathError),
    #[error("option negotiation failed: {0}")]
    Option(OptionError),
}

impl RequestError {
    /// The ERROR code and message sent to the client. Messages are fixed texts: nothing from the
    /// request is echoed back.
    pub fn reply(&self) -> (ErrorCode, &'static str) {
        match self {
            RequestError::Malformed(ParseError::UnknownOpcode(_) | ParseError::NotARequest(_)) => {
                (ErrorCode::IllegalOperation, "Illegal TFTP operation")
            }
            RequestError::Malformed(_) => (ErrorCode::IllegalOperation, "Malformed request"),
            RequestError::Write => (ErrorCode::AccessViolation, "Read-only server"),
            RequestError::BadMode => (ErrorCode::IllegalOperation, "Unsupported mode"),
            RequestError::Path(_) => (ErrorCode::AccessViolation, "Access violation"),
            RequestError::Option(_) => (ErrorCode::OptionRefused, "Invalid option value"),
        }
    }
}

/// What to do with one datagram on the request port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Start a transfer.
    Serve(ReadRequest),
    /// Answer with an ERROR packet.
    Refuse(RequestError),
    /// Drop without an answer (the reason is for logs).
    Ignore(&'static str),
}

/// Decides what to do with a datagram received on the request port.
pub fn decide(datagram: &[u8], limits: &Limits) -> Decision {
    let req = match packet::parse_request(datagram) {
        Ok(req) => req,
        Err(ParseError::TooShort(_)) => return Decision::Ignore("datagram too short"),
        Err(ParseError::NotARequest(packet::OP_ERROR)) => {
            return Decision::Ignore("ERROR packet on the request port")
        }
        Err(e) => return Decision::Refuse(RequestError::Malformed(e)),
    };
    if req.kind == RequestKind::Write {
        return Decision::Refuse(RequestError::Write);
    }
    let mode = if req.mode.eq_ignore_ascii_case(b"octet") {
        Mode::Octet
    } else if req.mode.eq_ignore_ascii_case(b"netascii") {
        Mode::Netascii
    } else {
        return Decision::Refuse(RequestError::BadMode);
    };
    let path = match TftpPath::parse(req.filename) {
        Ok(p) => p,
        Err(e) => return Decision::Refuse(RequestError::Path(e)),
    };
    match options::negotiate(req.options(), limits) {
        Ok(negotiated) => Decision::Serve(ReadRequest {
            path,
            mode,
            negotiated,
        }),
        Err(e) => Decision::Refuse(RequestError::Option(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: u16, fields: &[&[u8]]) -> Vec<u8> {
        let mut v = op.to_be_bytes().to_vec();
        for f in fields {
            v.extend_from_slice(f);
            v.push(0);
        }
        v
    }

    fn decide_default(d: &[u8]) -> Decision {
        decide(d, &Limits::default())
    }

    fn refused(d: &[u8]) -> ErrorCode {
        match decide_default(d) {
            Decision::Refuse(e) => e.reply().0,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn serves_a_good_request() {
        let d = decide_default(&req(1, &[b"/ipxe.efi", b"OCTET", b"blksize", b"1468"]));
        let Decision::Serve(r) = d else {
            panic!("{d:?}")
        };
        assert_eq!(r.path.as_str(), "ipxe.efi");
        assert_eq!(r.mode, Mode::Octet);
        assert_eq!(r.negotiated.blksize, 1468);
        let d = decide_default(&req(1, &[b"x", b"netascii"]));
        assert!(matches!(
            d,
            Decision::Serve(ReadRequest {
                mode: Mode::Netascii,
                ..
            })
        ));
    }

    #[test]
    fn refusals_carry_the_right_codes() {
        use ErrorCode::*;
        assert_eq!(refused(&req(2, &[b"x", b"octet"])), AccessViolation);
        assert_eq!(refused(&req(1, &[b"x", b"mail"])), IllegalOperation);
        assert_eq!(refused(&req(1, &[b"x"])), IllegalOperation);
        assert_eq!(refused(&req(1, &[b"../x", b"octet"])), AccessViolation);
        assert_eq!(
            refused(&req(1, &[b"x", b"octet", b"blksize", b"7"])),
            OptionRefused
        );
        assert_eq!(refused(&req(9, &[b"x", b"octet"])), IllegalOperation);
        assert_eq!(refused(&req(4, &[b"x"])), IllegalOperation);
        assert_eq!(refused(b"\x00\x01abc"), IllegalOperation);
    }

    #[test]
    fn ignores_non_packets_and_errors() {
        assert!(matches!(decide_default(b""), Decision::Ignore(_)));
        assert!(matches!(decide_default(b"\x01"), Decision::Ignore(_)));
        assert!(matches!(
            decide_default(b"\x00\x05\x00\x01x\x00"),
            Decision::Ignore(_)
        ));
    }
}
