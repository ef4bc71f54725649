//! Reading blocks out of a transfer's content without holding the whole file in memory.
//!
//! A file is read in chunks of at least one window (and at least 64 KiB) into one buffer per
//! transfer, allocated once; the blocks of a window, and any resend of it, are then sliced out of
//! that buffer. Reads run on tokio's blocking pool, since even a page-cache read is a syscall that
//! may sleep on a cold disk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::source::Body;

/// The smallest read, so that lock-step transfers (one block per round trip) do not pay a
/// blocking-pool hand-off per block.
const MIN_CHUNK: usize = 64 * 1024;

pub(crate) enum BlockReader {
    Memory(Arc<[u8]>),
    File(FileReader),
}

pub(crate) struct FileReader {
    file: Arc<File>,
    size: u64,
    chunk: usize,
    /// `buf[..filled]` holds the content at `start..start + filled`.
    buf: Vec<u8>,
    start: u64,
    filled: usize,
}

impl BlockReader {
    pub(crate) fn new(body: Body, blksize: u16, windowsize: u16) -> BlockReader {
        match body {
            Body::Memory(bytes) => BlockReader::Memory(bytes),
            Body::File { file, len } => {
                let blksize = usize::from(blksize.max(1));
                let window = blksize * usize::from(windowsize.max(1));
                // Whole blocks only, so a chunk boundary never splits one.
                let chunk = window.max(MIN_CHUNK).div_ceil(blksize) * blksize;
                // Never more than the file needs (small files, boot scripts).
                let chunk = chunk.min(usize::try_from(len).unwrap_or(usize::MAX).max(1));
                BlockReader::File(FileReader {
                    file,
                    size: len,
                    chunk,
                    buf: Vec::new(),
                    start: 0,
                    filled: 0,
                })
            }
        }
    }

    /// The `len` bytes at `offset`, which the caller computed from the content's size.
    pub(crate) async fn block(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        match self {
            BlockReader::Memory(bytes) => usize::try_from(offset)
                .ok()
                .and_then(|o| bytes.get(o..o.checked_add(len)?))
                .ok_or_else(|| io::Error::other("block outside the content")),
            BlockReader::File(f) => f.block(offset, len).await,
        }
    }
}

impl FileReader {
    async fn block(&mut self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let end = offset + len as u64;
        if end > self.size {
            return Err(io::Error::other("block outside the content"));
        }
        if offset < self.start || end > self.start + self.filled as u64 {
            self.fill(offset).await?;
        }
        let from = (offset - self.start) as usize;
        Ok(&self.buf[from..from + len])
    }

    /// Reads a chunk starting at `offset` (or what is left of the file).
    async fn fill(&mut self, offset: u64) -> io::Result<()> {
        let want = (self.size - offset).min(self.chunk as u64) as usize;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(self.chunk, 0);
        let file = Arc::clone(&self.file);
        let (buf, result) = tokio::task::spawn_blocking(move || {
            let r = file.read_exact_at(&mut buf[..want], offset);
            (buf, r)
        })
        .await
        .map_err(io::Error::other)?;
        self.buf = buf;
        match result {
            Ok(()) => {
                self.start = offset;
                self.filled = want;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                self.filled = 0;
                Err(io::Error::other("file shrank during the transfer"))
            }
            Err(e) => {
                self.filled = 0;
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_body(data: &[u8]) -> (tempfile::NamedTempFile, Body) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(data).unwrap();
        let file = File::open(f.path()).unwrap();
        (
            f,
            Body::File {
                file: Arc::new(file),
                len: data.len() as u64,
            },
        )
    }

    #[tokio::test]
    async fn reads_blocks_across_chunks() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (_tmp, body) = file_body(&data);
        let mut r = BlockReader::new(body, 1000, 4);
        for b in 0..300u64 {
            let got = r.block(b * 1000, 1000).await.unwrap();
            assert_eq!(got, &data[b as usize * 1000..][..1000]);
        }
        // Going back (a resend) re-reads.
        assert_eq!(r.block(0, 10).await.unwrap(), &data[..10]);
        assert_eq!(r.block(300_000, 0).await.unwrap(), b"");
        assert!(r.block(299_999, 2).await.is_err());
    }

    #[tokio::test]
    async fn memory_blocks() {
        let mut r = BlockReader::new(Body::Memory(Arc::from(&b"hello"[..])), 2, 1);
        assert_eq!(r.block(2, 2).await.unwrap(), b"ll");
        assert_eq!(r.block(4, 1).await.unwrap(), b"o");
        assert!(r.block(4, 2).await.is_err());
    }

    #[tokio::test]
    async fn a_shrunk_file_is_an_error() {
        let (tmp, body) = file_body(&[7u8; 10_000]);
        tmp.as_file().set_len(100).unwrap();
        let mut r = BlockReader::new(body, 512, 1);
        assert!(r.block(0, 512).await.is_err());
    }
}
