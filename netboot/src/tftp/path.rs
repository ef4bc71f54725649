//! The file name rules: what a client may ask for, before any file system is touched.
//!
//! A name is accepted when it is UTF-8, 1–[`MAX_NAME_LEN`] bytes, has no control characters and no
//! backslash, and no `..` component. Leading slashes are stripped: many PXE ROMs and boot loader
//! configurations send `/pxelinux.0` or `/boot/x`, and the result is always looked up *beneath*
//! the root (as tftp-hpa does with `-s`), so `/etc/passwd` means `ROOT/etc/passwd`, never the
//! host's file. `.` and empty components (`a//./b`) are dropped. The lexical rules are the first
//! fence; [`super::RootDir`] is the second (the kernel refuses any resolution, symlinks
//! included, that leaves the root).

use std::fmt;

/// The longest file name accepted, in bytes. DHCP option 67 holds at most 255 bytes, and real
/// boot paths are far shorter; tftp-hpa and dnsmasq use similar bounds.
pub const MAX_NAME_LEN: usize = 255;

/// A validated, normalized path relative to the TFTP root: components joined by `/`, no leading
/// slash, no `.`/`..`/empty components, no control characters, no backslash.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TftpPath(String);

/// Why a requested file name is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty file name")]
    Empty,
    #[error("file name longer than {MAX_NAME_LEN} bytes ({0})")]
    TooLong(usize),
    #[error("file name is not UTF-8")]
    NotUtf8,
    #[error("file name contains a control character")]
    ControlChar,
    #[error("file name contains a backslash")]
    Backslash,
    #[error("file name has a `..` component")]
    DotDot,
}

impl TftpPath {
    /// Validates and normalizes a file name as received.
    pub fn parse(raw: &[u8]) -> Result<TftpPath, PathError> {
        if raw.len() > MAX_NAME_LEN {
            return Err(PathError::TooLong(raw.len()));
        }
        let s = std::str::from_utf8(raw).map_err(|_| PathError::NotUtf8)?;
        if s.chars().any(char::is_control) {
            return Err(PathError::ControlChar);
        }
        // Windows clients (WDS) send `boot\x86\wdsnbp.com`; mapping `\` to `/` would make `..\x`
        // a traversal attempt in disguise, so refuse rather than guess.
        if s.contains('\\') {
            return Err(PathError::Backslash);
        }
        let mut out = String::with_capacity(s.len());
        for part in s.split('/') {
            match part {
                "" | "." => continue,
                ".." => return Err(PathError::DotDot),
                _ => {
                    if !out.is_empty() {
                        out.push('/');
                    }
                    out.push_str(part);
                }
            }
        }
        if out.is_empty() {
            return Err(PathError::Empty);
        }
        Ok(TftpPath(out))
    }

    /// The normalized path (`boot/52-54-00-12-34-56.ipxe`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components, in order (never empty, never `.` or `..`).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

impl fmt::Display for TftpPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TftpPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for TftpPath {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        TftpPath::parse(raw.as_bytes()).unwrap().as_str().to_owned()
    }

    fn err(raw: &[u8]) -> PathError {
        TftpPath::parse(raw).unwrap_err()
    }

    #[test]
    fn accepts_and_normalizes() {
        assert_eq!(ok("ipxe.efi"), "ipxe.efi");
        assert_eq!(ok("/pxelinux.0"), "pxelinux.0");
        assert_eq!(ok("//boot/./x//y"), "boot/x/y");
        assert_eq!(
            ok("boot/52-54-00-12-34-56.ipxe"),
            "boot/52-54-00-12-34-56.ipxe"
        );
        assert_eq!(ok("..."), "...");
        assert_eq!(ok("a..b/..c"), "a..b/..c");
        assert_eq!(ok("/etc/passwd"), "etc/passwd");
        assert_eq!(ok("dir/"), "dir");
        assert_eq!(ok("ünïcode"), "ünïcode");
    }

    #[test]
    fn refuses_hostile_names() {
        assert_eq!(err(b""), PathError::Empty);
        assert_eq!(err(b"/"), PathError::Empty);
        assert_eq!(err(b"./."), PathError::Empty);
        assert_eq!(err(b".."), PathError::DotDot);
        assert_eq!(err(b"../etc/passwd"), PathError::DotDot);
        assert_eq!(err(b"a/../../x"), PathError::DotDot);
        assert_eq!(err(b"a/.."), PathError::DotDot);
        assert_eq!(err(b"/../x"), PathError::DotDot);
        assert_eq!(err(b"..\\x"), PathError::Backslash);
        assert_eq!(err(b"a\\b"), PathError::Backslash);
        assert_eq!(err(b"a\0b"), PathError::ControlChar);
        assert_eq!(err(b"a\nb"), PathError::ControlChar);
        assert_eq!(err(b"a\x7fb"), PathError::ControlChar);
        assert_eq!(err(b"\xff\xfe"), PathError::NotUtf8);
        assert_eq!(err(&[b'a'; 256]), PathError::TooLong(256));
        assert!(TftpPath::parse(&[b'a'; 255]).is_ok());
    }

    #[test]
    fn components() {
        let p = TftpPath::parse(b"/boot//x.ipxe").unwrap();
        assert_eq!(p.components().collect::<Vec<_>>(), vec!["boot", "x.ipxe"]);
    }
}
