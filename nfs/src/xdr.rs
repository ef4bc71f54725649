//! XDR (RFC 4506) over borrowed bytes.
//!
//! [`Reader`] decodes from a `&[u8]` and hands out borrowed slices: every length read from the
//! wire is checked against the bytes actually left (and against the field's maximum) before it
//! is used, and nothing is ever allocated from a wire length. [`Writer`] appends to a `Vec<u8>`
//! whose size is driven only by what we decide to send.

use thiserror::Error;

/// Why a decode stopped. All of them mean "garbage" to the caller; the variants only help tests
/// and logs say which rule was broken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum XdrError {
    #[error("XDR item runs past the end of the message")]
    Short,
    #[error("XDR length {len} over the maximum {max}")]
    TooLong { len: u32, max: u32 },
    #[error("XDR bool is {0}, not 0 or 1")]
    BadBool(u32),
}

/// Zero bytes needed after `len` bytes to reach a multiple of 4.
pub const fn pad(len: usize) -> usize {
    (4 - (len & 3)) & 3
}

/// `len` rounded up to a multiple of 4.
pub const fn padded(len: usize) -> usize {
    len + pad(len)
}

/// A bounded cursor over one message.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// What is left, without consuming it.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Takes exactly `n` bytes.
    fn take(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        if n > self.buf.len() {
            return Err(XdrError::Short);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    pub fn u32(&mut self) -> Result<u32, XdrError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, XdrError> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Ok(hi << 32 | lo)
    }

    /// Strict bool: anything but 0 or 1 is an error (a client sending 2 is not speaking XDR).
    pub fn bool(&mut self) -> Result<bool, XdrError> {
        match self.u32()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(XdrError::BadBool(v)),
        }
    }

    /// Fixed-length opaque (`opaque x[n]`): `n` bytes plus padding. Padding bytes are not
    /// checked: other servers accept non-zero padding and so do we.
    pub fn fixed_opaque(&mut self, n: usize) -> Result<&'a [u8], XdrError> {
        let data = self.take(n)?;
        self.take(pad(n))?;
        Ok(data)
    }

    /// Variable-length opaque (`opaque x<max>`): length, bytes, padding.
    pub fn opaque(&mut self, max: u32) -> Result<&'a [u8], XdrError> {
        let len = self.u32()?;
        if len > max {
            return Err(XdrError::TooLong { len, max });
        }
        // `len` fits in usize on every target we build for (u32 ≤ usize), and `take` checks
        // it against what is left before slicing.
        let n = usize::try_from(len).map_err(|_| XdrError::Short)?;
        self.fixed_opaque(n)
    }

    /// `string x<max>`: bytes, not necessarily UTF-8 (file names are arbitrary bytes).
    pub fn string(&mut self, max: u32) -> Result<&'a [u8], XdrError> {
        self.opaque(max)
    }
}

/// Appends XDR items to a `Vec<u8>`.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Writer { buf: Vec::new() }
    }

    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn bool(&mut self, v: bool) {
        self.u32(u32::from(v));
    }

    /// Fixed-length opaque: the bytes and their padding, no length.
    pub fn fixed_opaque(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        self.zeros(pad(data.len()));
    }

    /// Variable-length opaque. Callers only pass data they produced or bounded themselves; a
    /// length over `u32::MAX` cannot be expressed, so it is clamped (never happens: replies are
    /// at most a few MiB).
    pub fn opaque(&mut self, data: &[u8]) {
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        self.u32(len);
        self.fixed_opaque(data);
    }

    pub fn string(&mut self, s: &[u8]) {
        self.opaque(s);
    }

    pub fn zeros(&mut self, n: usize) {
        self.buf.resize(self.buf.len() + n, 0);
    }

    /// Overwrites the u32 at byte offset `at` (a length or count patched after the data is
    /// known). Out-of-range offsets are a programming error and are ignored rather than
    /// panicking.
    pub fn patch_u32(&mut self, at: usize, v: u32) {
        let Some(end) = at.checked_add(4) else {
            return;
        };
        if let Some(slot) = self.buf.get_mut(at..end) {
            slot.copy_from_slice(&v.to_be_bytes());
        }
    }

    /// Direct access for the READ path, which `pread`s into a reserved area.
    pub fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pads() {
        assert_eq!([0, 1, 2, 3, 4, 5].map(pad), [0, 3, 2, 1, 0, 3], "pad to 4");
        assert_eq!(padded(5), 8);
    }

    #[test]
    fn round_trip() {
        let mut w = Writer::new();
        w.u32(7);
        w.u64(0x0102_0304_0506_0708);
        w.bool(true);
        w.opaque(b"abcde");
        w.fixed_opaque(&[9; 8]);
        w.string(b"");
        assert_eq!(w.len(), 4 + 8 + 4 + 4 + 8 + 8 + 4);
        let bytes = w.into_inner();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u32(), Ok(7));
        assert_eq!(r.u64(), Ok(0x0102_0304_0506_0708));
        assert_eq!(r.bool(), Ok(true));
        assert_eq!(r.opaque(5), Ok(&b"abcde"[..]));
        assert_eq!(r.fixed_opaque(8), Ok(&[9u8; 8][..]));
        assert_eq!(r.string(0), Ok(&b""[..]));
        assert!(r.is_empty());
    }

    #[test]
    fn golden_opaque() {
        let mut w = Writer::new();
        w.opaque(b"abc");
        assert_eq!(w.as_slice(), b"\0\0\0\x03abc\0");
    }

    #[test]
    fn rejects_lengths_past_end_or_over_max() {
        // Length 5 but only 4 bytes follow.
        let b = [0, 0, 0, 5, 1, 2, 3, 4];
        assert_eq!(Reader::new(&b).opaque(100), Err(XdrError::Short));
        // Length 4 GiB - 1: no allocation, just an error.
        let b = [0xff, 0xff, 0xff, 0xff];
        assert_eq!(Reader::new(&b).opaque(u32::MAX), Err(XdrError::Short));
        assert_eq!(
            Reader::new(&b).opaque(400),
            Err(XdrError::TooLong {
                len: u32::MAX,
                max: 400
            })
        );
        // Data present but the padding is missing.
        let b = [0, 0, 0, 1, 7];
        assert_eq!(Reader::new(&b).opaque(4), Err(XdrError::Short));
        assert_eq!(Reader::new(&[0, 0, 1]).u32(), Err(XdrError::Short));
        assert_eq!(Reader::new(&[0; 7]).u64(), Err(XdrError::Short));
    }

    #[test]
    fn strict_bool_lenient_padding() {
        assert_eq!(Reader::new(&[0, 0, 0, 2]).bool(), Err(XdrError::BadBool(2)));
        assert_eq!(Reader::new(&[0, 0, 0, 0]).bool(), Ok(false));
        let b = [0, 0, 0, 1, b'x', 0xaa, 0xbb, 0xcc];
        assert_eq!(Reader::new(&b).opaque(4), Ok(&b"x"[..]));
    }

    #[test]
    fn patch() {
        let mut w = Writer::new();
        w.u32(0);
        w.patch_u32(0, 0xdead_beef);
        w.patch_u32(2, 1); // out of range: ignored
        assert_eq!(w.as_slice(), &[0xde, 0xad, 0xbe, 0xef]);
    }
}
