//! Paths inside an image root, as bytes: archive entry names are checked here before anything
//! touches the disk (pure, no I/O).
//!
//! An archive entry may not leave the root: no `..` component, no absolute path (a leading `/`
//! is an error, not silently stripped, so a hostile archive is named as such), no NUL. `.`
//! components and repeated slashes are dropped, as tar itself does.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Why an entry name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("absolute path")]
    Absolute,
    #[error("`..` component escapes the root")]
    DotDot,
    #[error("NUL byte in the name")]
    Nul,
    #[error("empty name")]
    Empty,
    #[error("name longer than 4096 bytes")]
    TooLong,
}

/// The longest name accepted (Linux PATH_MAX).
pub const MAX_PATH: usize = 4096;

/// A normalized relative path: components joined by `/`, no leading or trailing slash; the
/// root itself is the empty path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(Vec<u8>);

impl RelPath {
    pub fn root() -> RelPath {
        RelPath(Vec::new())
    }

    /// Checks and normalizes an archive entry name. `./` prefixes (GNU tar's default) are fine.
    pub fn parse(name: &[u8]) -> Result<RelPath, PathError> {
        if name.len() > MAX_PATH {
            return Err(PathError::TooLong);
        }
        if name.contains(&0) {
            return Err(PathError::Nul);
        }
        if name.first() == Some(&b'/') {
            return Err(PathError::Absolute);
        }
        let mut out: Vec<u8> = Vec::with_capacity(name.len());
        for comp in name.split(|&b| b == b'/') {
            match comp {
                b"" | b"." => continue,
                b".." => return Err(PathError::DotDot),
                c => {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(c);
                }
            }
        }
        Ok(RelPath(out))
    }

    pub fn from_path(p: &Path) -> Result<RelPath, PathError> {
        RelPath::parse(p.as_os_str().as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }

    /// The components, outermost first.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/').filter(|c| !c.is_empty())
    }

    /// The parent directory (the root for a top-level name, `None` for the root).
    pub fn parent(&self) -> Option<RelPath> {
        if self.0.is_empty() {
            return None;
        }
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => Some(RelPath(self.0[..i].to_vec())),
            None => Some(RelPath::root()),
        }
    }

    pub fn file_name(&self) -> &[u8] {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => &self.0[i + 1..],
            None => &self.0,
        }
    }

    pub fn join(&self, name: &[u8]) -> RelPath {
        let mut v = self.0.clone();
        if !v.is_empty() {
            v.push(b'/');
        }
        v.extend_from_slice(name);
        RelPath(v)
    }

    /// Whether `self` is `other` or inside it.
    pub fn starts_with(&self, other: &RelPath) -> bool {
        other.0.is_empty()
            || self.0 == other.0
            || (self.0.starts_with(&other.0) && self.0.get(other.0.len()) == Some(&b'/'))
    }

    /// Printable form for messages and the listing: bytes outside printable ASCII, `\` and
    /// tab/newline are written as `\xNN`, so a listing line is unambiguous.
    pub fn escaped(&self) -> String {
        escape(&self.0)
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&self.escaped())
        }
    }
}

/// See [`RelPath::escaped`].
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if (0x21..0x7f).contains(&b) && b != b'\\' || b == b' ' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// The inverse of [`escape`]; `None` on a malformed escape.
pub fn unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) != Some(&b'x') || i + 4 > b.len() {
                return None;
            }
            let hex = std::str::from_utf8(&b[i + 2..i + 4]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_refuses() {
        assert_eq!(RelPath::parse(b"./a//b/./c/").unwrap().as_bytes(), b"a/b/c");
        assert!(RelPath::parse(b"./").unwrap().is_root());
        assert_eq!(RelPath::parse(b"../x"), Err(PathError::DotDot));
        assert_eq!(RelPath::parse(b"a/../../x"), Err(PathError::DotDot));
        assert_eq!(RelPath::parse(b"/abs"), Err(PathError::Absolute));
        assert_eq!(RelPath::parse(b"a\0b"), Err(PathError::Nul));
        assert_eq!(RelPath::parse(&[b'a'; 5000]), Err(PathError::TooLong));
        // `..` inside a name is just a name.
        assert_eq!(RelPath::parse(b"a/..b").unwrap().as_bytes(), b"a/..b");
    }

    #[test]
    fn parents_and_prefixes() {
        let p = RelPath::parse(b"usr/lib/x").unwrap();
        assert_eq!(p.parent().unwrap().as_bytes(), b"usr/lib");
        assert_eq!(p.file_name(), b"x");
        assert!(RelPath::parse(b"x").unwrap().parent().unwrap().is_root());
        assert!(p.starts_with(&RelPath::parse(b"usr").unwrap()));
        assert!(!RelPath::parse(b"usrx")
            .unwrap()
            .starts_with(&RelPath::parse(b"usr").unwrap()));
        assert!(p.starts_with(&RelPath::root()));
    }

    #[test]
    fn escaping_round_trips() {
        for s in [&b"plain name"[..], b"tab\there", b"nl\n\\x\xff", b""] {
            assert_eq!(unescape(&escape(s)).unwrap(), s);
        }
        assert_eq!(escape(b"a b\t"), "a b\\x09");
        assert!(unescape("\\x4").is_none());
    }
}
