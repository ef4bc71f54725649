//! Where served bytes come from: the [`TftpSource`] trait, the content it returns, and its errors.
//!
//! The server asks its source for every validated path. [`super::RootDir`] serves a directory;
//! the appliance wraps it to serve generated content (per-node iPXE scripts) from memory and
//! passes everything else through:
//!
//! ```
//! use std::net::SocketAddr;
//! use netboot::tftp::{RootDir, SourceError, TftpContent, TftpPath, TftpSource};
//!
//! struct Scripts {
//!     disk: RootDir,
//! }
//!
//! impl TftpSource for Scripts {
//!     fn open(&self, path: &TftpPath, client: SocketAddr) -> Result<TftpContent, SourceError> {
//!         match path.as_str().strip_prefix("boot/").and_then(|p| p.strip_suffix(".ipxe")) {
//!             Some(mac) => Ok(TftpContent::from_bytes(format!("#!ipxe\necho {mac}\n").into_bytes())),
//!             None => self.disk.open(path, client),
//!         }
//!     }
//! }
//! ```

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::sync::Arc;

use super::packet::ErrorCode;
use super::path::TftpPath;

/// Serves the bytes behind a path. Called once per accepted request, off the async runtime (in
/// a blocking thread), so it may read files or render templates.
pub trait TftpSource: Send + Sync + 'static {
    /// Opens `path` (already validated: relative, no `..`) for `client`.
    fn open(&self, path: &TftpPath, client: SocketAddr) -> Result<TftpContent, SourceError>;
}

impl<S: TftpSource + ?Sized> TftpSource for Arc<S> {
    fn open(&self, path: &TftpPath, client: SocketAddr) -> Result<TftpContent, SourceError> {
        (**self).open(path, client)
    }
}

/// The content of one transfer: an open regular file, or bytes in memory. Its size is fixed when
/// it is made (that is what tsize announces).
#[derive(Clone, Debug)]
pub struct TftpContent {
    body: Body,
}

#[derive(Clone, Debug)]
pub(crate) enum Body {
    File { file: Arc<File>, len: u64 },
    Memory(Arc<[u8]>),
}

impl TftpContent {
    /// Content read from an open file, which must be a regular file. Its size is taken now; if
    /// the file shrinks during the transfer the transfer fails rather than send short data.
    /// Replace served files by renaming a new file over them, never by rewriting in place.
    pub fn from_file(file: File) -> Result<TftpContent, SourceError> {
        let len = regular_len(&file)?;
        Ok(TftpContent {
            body: Body::File {
                file: Arc::new(file),
                len,
            },
        })
    }

    /// Content held in memory (a rendered boot script). Cloning shares the bytes.
    pub fn from_bytes(bytes: impl Into<Arc<[u8]>>) -> TftpContent {
        TftpContent {
            body: Body::Memory(bytes.into()),
        }
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        match &self.body {
            Body::File { len, .. } => *len,
            Body::Memory(b) => b.len() as u64,
        }
    }

    /// True when there are no bytes (served as one empty DATA block).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn into_body(self) -> Body {
        self.body
    }
}

/// The size of `file` if it is a regular file; otherwise says what it is.
pub(crate) fn regular_len(file: &File) -> Result<u64, SourceError> {
    let meta = file.metadata()?;
    let ft = meta.file_type();
    if ft.is_file() {
        return Ok(meta.len());
    }
    Err(SourceError::Denied(if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }))
}

/// Why a source cannot serve a path.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Nothing there (ERROR 1).
    #[error("not found")]
    NotFound,
    /// Refused by policy: a symlink out of the root, not a regular file… (ERROR 2). The reason
    /// goes to the log, never to the client.
    #[error("access denied: {0}")]
    Denied(&'static str),
    /// Any other failure (ERROR 0, or 1/2 for not-found and permission errors).
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl SourceError {
    /// The ERROR code and fixed message sent to the client.
    pub fn reply(&self) -> (ErrorCode, &'static str) {
        match self {
            SourceError::NotFound => (ErrorCode::FileNotFound, "File not found"),
            SourceError::Denied(_) => (ErrorCode::AccessViolation, "Access violation"),
            SourceError::Io(e) => match e.kind() {
                io::ErrorKind::NotFound => (ErrorCode::FileNotFound, "File not found"),
                io::ErrorKind::PermissionDenied => (ErrorCode::AccessViolation, "Access violation"),
                _ => (ErrorCode::NotDefined, "Cannot read file"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_content() {
        let c = TftpContent::from_bytes(b"#!ipxe\n".to_vec());
        assert_eq!(c.len(), 7);
        assert!(!c.is_empty());
        assert!(TftpContent::from_bytes(Vec::new()).is_empty());
    }

    #[test]
    fn only_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = File::open(dir.path()).unwrap();
        assert!(matches!(
            TftpContent::from_file(d),
            Err(SourceError::Denied("a directory"))
        ));
        let null = File::open("/dev/null").unwrap();
        assert!(matches!(
            TftpContent::from_file(null),
            Err(SourceError::Denied("a device"))
        ));
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            TftpContent::from_file(File::open(&p).unwrap())
                .unwrap()
                .len(),
            3
        );
    }

    #[test]
    fn replies() {
        assert_eq!(SourceError::NotFound.reply().0, ErrorCode::FileNotFound);
        assert_eq!(
            SourceError::Denied("x").reply().0,
            ErrorCode::AccessViolation
        );
        let e = SourceError::Io(io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!(e.reply().0, ErrorCode::AccessViolation);
        let e = SourceError::Io(io::Error::other("boom"));
        assert_eq!(e.reply(), (ErrorCode::NotDefined, "Cannot read file"));
    }
}
