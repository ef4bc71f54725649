//! RPC record marking over TCP (RFC 5531 §11), as a pure state machine.
//!
//! A record is one or more fragments, each behind a 4-byte big-endian header whose bit 31 marks
//! the last fragment and whose low 31 bits are the fragment length. The [`Deframer`] is fed
//! whatever the socket returned and yields complete records. It never buffers more than
//! [`MAX_RECORD`] bytes: a larger record (only a confused client's WRITE can legitimately be that
//! big for a read-only server) keeps its first [`DISCARD_HEAD`] bytes, the rest is dropped as it
//! streams in, and it comes out as [`Frame::Discarded`] so the caller can still answer from the
//! head. The number of fragments per record is bounded too: past [`MAX_FRAGMENTS`] the record is
//! treated like an oversized one (work stays proportional to input, memory stays bounded).

/// Largest record we buffer whole.
pub const MAX_RECORD: usize = 64 * 1024;
/// Bytes kept from a discarded record (enough for any RPC header plus the head of the args).
pub const DISCARD_HEAD: usize = 4 * 1024;
/// Most fragments one record may have before it is discarded.
pub const MAX_FRAGMENTS: usize = 64;

const LAST_FRAGMENT: u32 = 0x8000_0000;

/// One complete record from the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A record of at most [`MAX_RECORD`] bytes.
    Record(Vec<u8>),
    /// A record that was too big or had too many fragments: its first bytes (at most
    /// [`DISCARD_HEAD`]) and its total length.
    Discarded { head: Vec<u8>, total: u64 },
}

/// Deframer state. Feed it with [`Deframer::feed`].
#[derive(Debug, Default)]
pub struct Deframer {
    header: [u8; 4],
    header_len: usize,
    /// Bytes of the current fragment still to come (0 while reading a header).
    frag_left: u32,
    /// The current fragment is the record's last.
    frag_last: bool,
    /// Inside a fragment body (as opposed to waiting for a header).
    in_body: bool,
    buf: Vec<u8>,
    total: u64,
    fragments: usize,
    discarding: bool,
}

impl Deframer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes currently buffered (for tests of the memory bound).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Consumes bytes from the front of `input` until one record is complete (returned) or the
    /// input is used up (`None`; call again with more bytes). Call in a loop until `None`: the
    /// input may hold several records.
    pub fn feed(&mut self, input: &mut &[u8]) -> Option<Frame> {
        loop {
            if !self.in_body {
                if input.is_empty() {
                    return None;
                }
                let want = 4 - self.header_len;
                let n = want.min(input.len());
                let (h, rest) = input.split_at(n);
                self.header[self.header_len..self.header_len + n].copy_from_slice(h);
                self.header_len += n;
                *input = rest;
                if self.header_len < 4 {
                    return None;
                }
                self.header_len = 0;
                self.start_fragment(u32::from_be_bytes(self.header));
                // An empty last fragment completes the record right here.
                if self.frag_left == 0 && self.frag_last {
                    return Some(self.finish());
                }
                continue;
            }
            if self.frag_left > 0 {
                if input.is_empty() {
                    return None;
                }
                let left = usize::try_from(self.frag_left).unwrap_or(usize::MAX);
                let n = left.min(input.len());
                let (body, rest) = input.split_at(n);
                *input = rest;
                self.keep(body);
                // n ≤ frag_left, which is a u32.
                self.frag_left -= u32::try_from(n).unwrap_or(self.frag_left);
            }
            if self.frag_left == 0 {
                self.in_body = false;
                if self.frag_last {
                    return Some(self.finish());
                }
            }
        }
    }

    fn start_fragment(&mut self, header: u32) {
        let len = header & !LAST_FRAGMENT;
        self.frag_last = header & LAST_FRAGMENT != 0;
        self.frag_left = len;
        self.in_body = true;
        self.fragments += 1;
        self.total = self.total.saturating_add(u64::from(len));
        let over = self.total > MAX_RECORD as u64 || self.fragments > MAX_FRAGMENTS;
        if over && !self.discarding {
            self.discarding = true;
            self.buf.truncate(DISCARD_HEAD);
            self.buf.shrink_to(DISCARD_HEAD);
        }
    }

    fn keep(&mut self, body: &[u8]) {
        let cap = if self.discarding {
            DISCARD_HEAD
        } else {
            MAX_RECORD
        };
        let room = cap.saturating_sub(self.buf.len());
        let n = room.min(body.len());
        self.buf.extend_from_slice(&body[..n]);
    }

    fn finish(&mut self) -> Frame {
        let buf = std::mem::take(&mut self.buf);
        let frame = if self.discarding {
            Frame::Discarded {
                head: buf,
                total: self.total,
            }
        } else {
            Frame::Record(buf)
        };
        self.total = 0;
        self.fragments = 0;
        self.discarding = false;
        self.in_body = false;
        frame
    }
}

/// Record mark for a reply of `len` bytes sent as one last fragment. Replies are at most a few
/// MiB, far below 2^31; larger lengths are clamped (they cannot be produced).
pub fn reply_mark(len: usize) -> [u8; 4] {
    let len = u32::try_from(len).unwrap_or(u32::MAX) & !LAST_FRAGMENT;
    (LAST_FRAGMENT | len).to_be_bytes()
}

/// A reply body framed as one record (mark + body), for clients and tests.
pub fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&reply_mark(body.len()));
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32, last: bool) -> [u8; 4] {
        (len | if last { LAST_FRAGMENT } else { 0 }).to_be_bytes()
    }

    fn feed_all(d: &mut Deframer, mut input: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = d.feed(&mut input) {
            out.push(f);
        }
        assert!(input.is_empty());
        out
    }

    #[test]
    fn single_and_back_to_back() {
        let mut s = frame(b"hello");
        s.extend_from_slice(&frame(b""));
        s.extend_from_slice(&frame(b"world!!!"));
        let mut d = Deframer::new();
        assert_eq!(
            feed_all(&mut d, &s),
            vec![
                Frame::Record(b"hello".to_vec()),
                Frame::Record(Vec::new()),
                Frame::Record(b"world!!!".to_vec())
            ]
        );
    }

    /// One record cut into fragments at every pair of boundaries, and the resulting stream fed
    /// in two reads split at every byte.
    #[test]
    fn split_everywhere() {
        let msg: Vec<u8> = (0..23u8).collect();
        for a in 0..=msg.len() {
            for b in a..=msg.len() {
                let mut s = Vec::new();
                s.extend_from_slice(&header(a as u32, false));
                s.extend_from_slice(&msg[..a]);
                s.extend_from_slice(&header((b - a) as u32, false));
                s.extend_from_slice(&msg[a..b]);
                s.extend_from_slice(&header((msg.len() - b) as u32, true));
                s.extend_from_slice(&msg[b..]);
                for cut in 0..=s.len() {
                    let mut d = Deframer::new();
                    let mut got = feed_all(&mut d, &s[..cut]);
                    got.extend(feed_all(&mut d, &s[cut..]));
                    assert_eq!(
                        got,
                        vec![Frame::Record(msg.clone())],
                        "a={a} b={b} cut={cut}"
                    );
                }
            }
        }
        // Byte by byte.
        let mut d = Deframer::new();
        let s = frame(&msg);
        let mut got = Vec::new();
        for b in &s {
            got.extend(feed_all(&mut d, std::slice::from_ref(b)));
        }
        assert_eq!(got, vec![Frame::Record(msg)]);
    }

    #[test]
    fn zero_length_fragments() {
        let mut s = Vec::new();
        for _ in 0..10 {
            s.extend_from_slice(&header(0, false));
        }
        s.extend_from_slice(&header(2, false));
        s.extend_from_slice(b"ab");
        s.extend_from_slice(&header(0, true));
        let mut d = Deframer::new();
        assert_eq!(feed_all(&mut d, &s), vec![Frame::Record(b"ab".to_vec())]);
    }

    #[test]
    fn too_many_fragments_is_discarded_not_fatal() {
        let mut s = Vec::new();
        s.extend_from_slice(&header(4, false));
        s.extend_from_slice(b"xid!");
        for _ in 0..1000 {
            s.extend_from_slice(&header(0, false));
        }
        s.extend_from_slice(&header(0, true));
        s.extend_from_slice(&frame(b"next"));
        let mut d = Deframer::new();
        assert_eq!(
            feed_all(&mut d, &s),
            vec![
                Frame::Discarded {
                    head: b"xid!".to_vec(),
                    total: 4
                },
                Frame::Record(b"next".to_vec())
            ]
        );
    }

    #[test]
    fn huge_header_discards_with_bounded_memory() {
        let mut d = Deframer::new();
        let total: u64 = 0x7fff_ffff;
        let mut s = header(0x7fff_ffff, true).to_vec();
        s.extend_from_slice(&[7u8; 100]);
        assert_eq!(feed_all(&mut d, &s), vec![]);
        let chunk = vec![0xabu8; 1 << 20];
        let mut sent: u64 = 100;
        // Stream 2 GiB through in 1 MiB pieces: memory never exceeds the discard head.
        while sent + chunk.len() as u64 <= total {
            assert_eq!(feed_all(&mut d, &chunk), vec![]);
            sent += chunk.len() as u64;
            assert!(d.buffered() <= DISCARD_HEAD);
            assert!(d.buf.capacity() <= MAX_RECORD);
        }
        let tail = vec![0u8; (total - sent) as usize];
        let got = feed_all(&mut d, &tail);
        assert_eq!(got.len(), 1);
        match &got[0] {
            Frame::Discarded { head, total: t } => {
                assert_eq!(*t, total);
                assert_eq!(head.len(), DISCARD_HEAD);
                assert_eq!(&head[..100], &[7u8; 100][..]);
            }
            f => panic!("unexpected {f:?}"),
        }
        // The stream stays in sync.
        assert_eq!(
            feed_all(&mut d, &frame(b"ok")),
            vec![Frame::Record(b"ok".to_vec())]
        );
    }

    #[test]
    fn record_over_limit_across_fragments() {
        let mut d = Deframer::new();
        let mut s = Vec::new();
        let part = vec![1u8; MAX_RECORD / 2];
        for i in 0..3 {
            s.extend_from_slice(&header(part.len() as u32, i == 2));
            s.extend_from_slice(&part);
        }
        let got = feed_all(&mut d, &s);
        assert_eq!(
            got,
            vec![Frame::Discarded {
                head: vec![1u8; DISCARD_HEAD],
                total: 3 * part.len() as u64
            }]
        );
        // Exactly the limit is still a record.
        let s = frame(&vec![2u8; MAX_RECORD]);
        assert_eq!(
            feed_all(&mut d, &s),
            vec![Frame::Record(vec![2u8; MAX_RECORD])]
        );
    }

    #[test]
    fn reply_mark_sets_last_bit() {
        assert_eq!(reply_mark(5), [0x80, 0, 0, 5]);
        assert_eq!(frame(b"x"), vec![0x80, 0, 0, 1, b'x']);
    }
}
