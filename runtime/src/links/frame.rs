//! Framing of heartbeats on a serial line: COBS-encoded messages ended by a zero byte.
//!
//! A serial line is a byte stream with no message boundaries, and a cable that is plugged in
//! mid-message delivers a partial frame. COBS removes every zero from the payload, so a zero
//! always ends a frame and a receiver resynchronises at the next one, whatever came before.
//! The decoder keeps at most `MAX_FRAME` bytes: line noise cannot make it allocate more.

use crate::wire::MAX_MESSAGE;

/// Longest encoded frame we keep (COBS adds one byte per 254, plus one).
pub const MAX_FRAME: usize = MAX_MESSAGE + MAX_MESSAGE / 254 + 2;

/// Encodes `payload` and appends the terminating zero.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + payload.len() / 254 + 2);
    let mut code_at = out.len();
    out.push(0);
    let mut code: u8 = 1;
    for &b in payload {
        if b == 0 {
            out[code_at] = code;
            code_at = out.len();
            out.push(0);
            code = 1;
        } else {
            out.push(b);
            code += 1;
            if code == 0xff {
                out[code_at] = code;
                code_at = out.len();
                out.push(0);
                code = 1;
            }
        }
    }
    out[code_at] = code;
    out.push(0);
    out
}

/// Decodes one frame (without its terminating zero); `None` when it is not valid COBS.
pub fn decode(frame: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(frame.len());
    let mut i = 0;
    while i < frame.len() {
        let code = usize::from(frame[i]);
        if code == 0 || i + code > frame.len() {
            return None;
        }
        out.extend_from_slice(&frame[i + 1..i + code]);
        i += code;
        if code < 0xff && i < frame.len() {
            out.push(0);
        }
    }
    Some(out)
}

/// Splits a byte stream into frames.
#[derive(Debug, Default)]
pub struct Deframer {
    buf: Vec<u8>,
    /// The current frame grew past `MAX_FRAME`: drop bytes until the next zero.
    skipping: bool,
}

/// What the deframer found in the bytes it was fed.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    Frame(Vec<u8>),
    /// Bytes that could not be a heartbeat (too long or not COBS).
    Garbage,
}

impl Deframer {
    pub fn push(&mut self, bytes: &[u8], mut found: impl FnMut(Piece)) {
        for &b in bytes {
            if b == 0 {
                if self.skipping {
                    found(Piece::Garbage);
                } else if !self.buf.is_empty() {
                    match decode(&self.buf) {
                        Some(frame) => found(Piece::Frame(frame)),
                        None => found(Piece::Garbage),
                    }
                }
                self.buf.clear();
                self.skipping = false;
            } else if !self.skipping {
                if self.buf.len() == MAX_FRAME {
                    self.buf.clear();
                    self.skipping = true;
                } else {
                    self.buf.push(b);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(stream: &[u8]) -> Vec<Piece> {
        let mut d = Deframer::default();
        let mut out = Vec::new();
        d.push(stream, |p| out.push(p));
        out
    }

    #[test]
    fn round_trips_with_zeros_and_long_runs() {
        for payload in [
            vec![],
            vec![0],
            vec![0, 0, 1],
            vec![7; 300],
            (0..=255u8).cycle().take(700).collect::<Vec<_>>(),
        ] {
            let enc = encode(&payload);
            assert_eq!(enc.iter().filter(|&&b| b == 0).count(), 1);
            assert_eq!(decode(&enc[..enc.len() - 1]).unwrap(), payload);
        }
    }

    #[test]
    fn resynchronises_after_noise_and_split_reads() {
        let msg = vec![1, 0, 2, 3];
        let mut stream = vec![9, 9, 9, 0]; // the tail of a frame from before we listened
        stream.extend(encode(&msg));
        stream.extend(encode(&msg));
        let mut d = Deframer::default();
        let mut got = Vec::new();
        for chunk in stream.chunks(3) {
            d.push(chunk, |p| got.push(p));
        }
        assert_eq!(
            got,
            vec![Piece::Garbage, Piece::Frame(msg.clone()), Piece::Frame(msg)]
        );
    }

    #[test]
    fn endless_line_noise_is_bounded() {
        let mut stream = vec![0x41; 100_000];
        stream.push(0);
        stream.extend(encode(b"ok"));
        let got = frames(&stream);
        assert_eq!(got, vec![Piece::Garbage, Piece::Frame(b"ok".to_vec())]);
    }
}
