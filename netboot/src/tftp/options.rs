//! Option negotiation (RFC 2347): blksize (RFC 2348), tsize and timeout (RFC 2349), windowsize
//! (RFC 7440).
//!
//! Rules, and why:
//! - Option names are case-insensitive; unknown options are ignored (RFC 2347), so are repeats of
//!   an option already seen (the first one counts).
//! - A known option whose value is not a plain decimal number fails the request with ERROR 8:
//!   the client asked for something it will believe was granted if we carried on silently.
//! - `blksize` below 8 is outside RFC 2348 and fails with ERROR 8. Above it, the server answers
//!   with the smaller of the client's value and the configured maximum (RFC 2348 lets the server
//!   answer smaller; a client asking 65464 on a 1500-byte MTU would otherwise get IP fragments).
//! - `windowsize` 0 fails with ERROR 8; above the configured maximum it is lowered (RFC 7440 §4).
//! - `timeout` must be echoed unchanged (RFC 2349), so it is either accepted as sent (1 s up to the
//!   configured `max_client_timeout_s`) or left out of the OACK; leaving it out means the
//!   server's own timeout applies. This bounds how long an abandoned transfer can hold a slot.
//! - `tsize` on a read request is answered with the real size, whatever the client sent (RFC 2349
//!   says it sends 0); the value must still be a decimal number.
//! - An OACK is sent only when at least one option was accepted; otherwise the transfer starts
//!   with DATA block 1 as in RFC 1350.

use std::time::Duration;

use super::packet;

/// RFC 1350's block size, used when the client does not negotiate one.
pub const DEFAULT_BLKSIZE: u16 = 512;
/// RFC 2348's bounds for blksize.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
/// The upper bound of the windowsize this implementation will use, whatever the configuration: it
/// keeps block-number arithmetic unambiguous (far below 32768) and a window's burst inside
/// ordinary socket buffers.
pub const MAX_WINDOWSIZE: u16 = 1024;
/// The longest number accepted in an option value (u64 has 20 digits).
const MAX_DIGITS: usize = 20;

/// The server's side of negotiation: what it is willing to grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest block size granted (RFC 2348), 8–65464.
    pub max_blksize: u16,
    /// Largest window granted (RFC 7440), 1–[`MAX_WINDOWSIZE`].
    pub max_windowsize: u16,
    /// Retransmission timeout when the client does not negotiate one.
    pub timeout: Duration,
    /// Largest client `timeout` option accepted, in seconds; 0 never accepts it.
    pub max_client_timeout_s: u8,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_blksize: 1468,
            max_windowsize: 64,
            timeout: Duration::from_secs(1),
            max_client_timeout_s: 10,
        }
    }
}

/// The outcome of a successful negotiation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Block size in use.
    pub blksize: u16,
    /// Blocks sent per window (1 = RFC 1350 lock-step).
    pub windowsize: u16,
    /// Retransmission timeout.
    pub timeout: Duration,
    /// What goes into the OACK.
    pub ack: AckedOptions,
}

/// The options accepted, to be echoed in the OACK.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AckedOptions {
    pub blksize: Option<u16>,
    pub windowsize: Option<u16>,
    pub timeout_s: Option<u8>,
    /// The client asked for tsize: answer with the content's size.
    pub tsize: bool,
}

impl AckedOptions {
    /// True when an OACK must be sent (at least one option accepted).
    pub fn any(&self) -> bool {
        self.blksize.is_some()
            || self.windowsize.is_some()
            || self.timeout_s.is_some()
            || self.tsize
    }

    /// Encodes the OACK into `out`, with `size` as the tsize answer.
    pub fn encode(&self, size: u64, out: &mut Vec<u8>) {
        let items = [
            self.blksize.map(|v| ("blksize", u64::from(v))),
            self.tsize.then_some(("tsize", size)),
            self.timeout_s.map(|v| ("timeout", u64::from(v))),
            self.windowsize.map(|v| ("windowsize", u64::from(v))),
        ];
        packet::encode_oack(items.into_iter().flatten(), out);
    }
}

/// Why negotiation failed (answered with ERROR 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OptionError {
    #[error("option `{0}` has a value that is not a decimal number")]
    NotANumber(&'static str),
    #[error("blksize {0} is below the RFC 2348 minimum of 8")]
    BlksizeTooSmall(u64),
    #[error("windowsize 0 is invalid")]
    WindowsizeZero,
}

/// Negotiates the options of a read request against `limits`.
pub fn negotiate<'a>(
    options: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    limits: &Limits,
) -> Result<Negotiated, OptionError> {
    let max_blksize = limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE);
    let max_windowsize = limits.max_windowsize.clamp(1, MAX_WINDOWSIZE);
    let mut ack = AckedOptions::default();
    let mut seen_timeout = false;
    for (name, value) in options {
        if name.eq_ignore_ascii_case(b"blksize") {
            if ack.blksize.is_some() {
                continue;
            }
            let v = number(value).ok_or(OptionError::NotANumber("blksize"))?;
            if v < u64::from(MIN_BLKSIZE) {
                return Err(OptionError::BlksizeTooSmall(v));
            }
            ack.blksize = Some(v.min(u64::from(max_blksize)) as u16);
        } else if name.eq_ignore_ascii_case(b"windowsize") {
            if ack.windowsize.is_some() {
                continue;
            }
            let v = number(value).ok_or(OptionError::NotANumber("windowsize"))?;
            if v == 0 {
                return Err(OptionError::WindowsizeZero);
            }
            ack.windowsize = Some(v.min(u64::from(max_windowsize)) as u16);
        } else if name.eq_ignore_ascii_case(b"timeout") {
            if seen_timeout {
                continue;
            }
            seen_timeout = true;
            let v = number(value).ok_or(OptionError::NotANumber("timeout"))?;
            // Declined (left out of the OACK) rather than refused: the client then simply uses
            // the server's timeout.
            if (1..=u64::from(limits.max_client_timeout_s)).contains(&v) {
                ack.timeout_s = Some(v as u8);
            }
        } else if name.eq_ignore_ascii_case(b"tsize") {
            if ack.tsize {
                continue;
            }
            number(value).ok_or(OptionError::NotANumber("tsize"))?;
            ack.tsize = true;
        }
    }
    Ok(Negotiated {
        blksize: ack.blksize.unwrap_or(DEFAULT_BLKSIZE),
        windowsize: ack.windowsize.unwrap_or(1),
        timeout: ack
            .timeout_s
            .map(|s| Duration::from_secs(s.into()))
            .unwrap_or(limits.timeout),
        ack,
    })
}

/// A plain decimal number: ASCII digits only, no sign, no spaces, fits in u64.
fn number(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > MAX_DIGITS || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neg(opts: &[(&str, &str)]) -> Result<Negotiated, OptionError> {
        negotiate(
            opts.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())),
            &Limits::default(),
        )
    }

    #[test]
    fn no_options_means_rfc1350() {
        let n = neg(&[]).unwrap();
        assert_eq!(n.blksize, 512);
        assert_eq!(n.windowsize, 1);
        assert_eq!(n.timeout, Duration::from_secs(1));
        assert!(!n.ack.any());
    }

    #[test]
    fn blksize_is_clamped_both_ways() {
        assert_eq!(neg(&[("blksize", "1024")]).unwrap().blksize, 1024);
        assert_eq!(neg(&[("BLKSIZE", "1468")]).unwrap().blksize, 1468);
        assert_eq!(neg(&[("blksize", "8")]).unwrap().blksize, 8);
        let n = neg(&[("blksize", "99999")]).unwrap();
        assert_eq!((n.blksize, n.ack.blksize), (1468, Some(1468)));
        assert_eq!(
            neg(&[("blksize", "7")]),
            Err(OptionError::BlksizeTooSmall(7))
        );
        assert_eq!(
            neg(&[("blksize", "0")]),
            Err(OptionError::BlksizeTooSmall(0))
        );
        assert_eq!(
            neg(&[("blksize", "")]),
            Err(OptionError::NotANumber("blksize"))
        );
        assert_eq!(
            neg(&[("blksize", "-1")]),
            Err(OptionError::NotANumber("blksize"))
        );
        assert_eq!(
            neg(&[("blksize", " 512")]),
            Err(OptionError::NotANumber("blksize"))
        );
    }

    #[test]
    fn windowsize_is_clamped() {
        assert_eq!(neg(&[("windowsize", "16")]).unwrap().windowsize, 16);
        assert_eq!(neg(&[("windowsize", "65535")]).unwrap().windowsize, 64);
        assert_eq!(
            neg(&[("windowsize", "0")]),
            Err(OptionError::WindowsizeZero)
        );
    }

    #[test]
    fn timeout_is_echoed_or_declined() {
        let n = neg(&[("timeout", "3")]).unwrap();
        assert_eq!(
            (n.timeout, n.ack.timeout_s),
            (Duration::from_secs(3), Some(3))
        );
        let n = neg(&[("timeout", "200")]).unwrap();
        assert_eq!((n.timeout, n.ack.timeout_s), (Duration::from_secs(1), None));
        let n = neg(&[("timeout", "0")]).unwrap();
        assert_eq!(n.ack.timeout_s, None);
        assert!(!n.ack.any());
    }

    #[test]
    fn tsize_and_huge_numbers() {
        assert!(neg(&[("tsize", "0")]).unwrap().ack.tsize);
        assert!(neg(&[("tsize", "18446744073709551615")]).unwrap().ack.tsize);
        assert_eq!(
            neg(&[("tsize", "18446744073709551616")]),
            Err(OptionError::NotANumber("tsize"))
        );
        assert_eq!(
            neg(&[("tsize", &"9".repeat(400))]),
            Err(OptionError::NotANumber("tsize"))
        );
    }

    #[test]
    fn unknown_and_repeated_options() {
        let n = neg(&[
            ("rollover", "1"),
            ("x", "y"),
            ("blksize", "1024"),
            ("blksize", "9"),
        ])
        .unwrap();
        assert_eq!(n.blksize, 1024);
        assert!(!neg(&[("multicast", "")]).unwrap().ack.any());
    }

    #[test]
    fn oack_encoding() {
        let n = neg(&[("tsize", "0"), ("blksize", "1468"), ("windowsize", "16")]).unwrap();
        let mut out = Vec::new();
        n.ack.encode(14_680_064, &mut out);
        assert_eq!(
            out,
            b"\x00\x06blksize\x001468\x00tsize\x0014680064\x00windowsize\x0016\x00"
        );
    }
}
