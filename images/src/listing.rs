//! The canonical listing of an image tree and its content hash.
//!
//! One line per entry, sorted by relative path (bytes):
//!
//! ```text
//! PATH \t KIND \t MODE \t UID \t GID \t SIZE \t MTIME \t RDEV \t CONTENT \t LINK
//! ```
//!
//! - KIND is `d f l c b p s`; MODE the permission bits in octal (incl. setuid/setgid/sticky);
//!   SIZE the file size (symlinks: target length; directories 0, because a directory's st_size
//!   depends on the file system, not on the tree).
//! - MTIME is `seconds.nanoseconds`. **Mtimes are part of the hash**: nodes see them and tools
//!   act on them (Python's .pyc check, make), so two trees with different mtimes are different
//!   images. The `dir`, `tar` and `oci` sources carry mtimes deterministically (they are copied
//!   from the input), so builds of the same input hash the same; `debootstrap` stamps the build
//!   time, which `--source-date-epoch` clamps.
//! - RDEV is `major:minor` for device nodes, `-` otherwise; CONTENT the BLAKE3 of a regular
//!   file's bytes or the escaped symlink target, `-` otherwise; LINK, for the second and later
//!   names of a hard-linked inode, the first name (smallest path), else `-`.
//! - Paths and targets are escaped with [`crate::relpath::escape`] (no tabs or newlines).
//!
//! The image's **content hash** is the BLAKE3 of this text. The build time is not in it.
//! The same text is stored beside each version and snapshot (`listing`), which is what
//! `image verify` compares a tree against.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::progress::Progress;
use crate::relpath::{escape, unescape, RelPath};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

impl Kind {
    pub fn letter(self) -> char {
        match self {
            Kind::Dir => 'd',
            Kind::File => 'f',
            Kind::Symlink => 'l',
            Kind::Char => 'c',
            Kind::Block => 'b',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
        }
    }

    fn from_letter(c: &str) -> Option<Kind> {
        Some(match c {
            "d" => Kind::Dir,
            "f" => Kind::File,
            "l" => Kind::Symlink,
            "c" => Kind::Char,
            "b" => Kind::Block,
            "p" => Kind::Fifo,
            "s" => Kind::Socket,
            _ => return None,
        })
    }

    pub fn of_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFCHR => Kind::Char,
            libc::S_IFBLK => Kind::Block,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            _ => Kind::File,
        }
    }
}

/// One object of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: RelPath,
    pub kind: Kind,
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    /// (major, minor) for device nodes.
    pub rdev: Option<(u64, u64)>,
    /// BLAKE3 of a regular file's content; `None` in a metadata-only scan.
    pub hash: Option<[u8; 32]>,
    /// Symlink target.
    pub target: Option<Vec<u8>>,
    /// First name of the hard-linked inode this is a later name of.
    pub link: Option<RelPath>,
}

impl Entry {
    /// Same object as far as a node can tell, content hashes compared only when both have one.
    pub fn same_as(&self, other: &Entry) -> bool {
        self.path == other.path
            && self.kind == other.kind
            && self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && self.size == other.size
            && self.mtime == other.mtime
            && self.mtime_nsec == other.mtime_nsec
            && self.rdev == other.rdev
            && self.target == other.target
            && (self.hash.is_none() || other.hash.is_none() || self.hash == other.hash)
    }

    /// Whether a file with this entry's inode metadata can be shared (hard link) with `other`:
    /// a hard link shares mode, owner and mtime, so all must match, and the content too.
    pub fn shareable_with(&self, other: &Entry) -> bool {
        self.kind == Kind::File
            && other.kind == Kind::File
            && self.hash.is_some()
            && self.same_as(other)
    }

    fn line(&self, out: &mut String) {
        use std::fmt::Write;
        let rdev = match self.rdev {
            Some((ma, mi)) => format!("{ma}:{mi}"),
            None => "-".into(),
        };
        let content = match (&self.hash, &self.target) {
            (Some(h), _) => blake3::Hash::from_bytes(*h).to_hex().to_string(),
            (None, Some(t)) => escape(t),
            (None, None) => "-".into(),
        };
        let link = self
            .link
            .as_ref()
            .map(|l| l.escaped())
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{}\t{}\t{:04o}\t{}\t{}\t{}\t{}.{:09}\t{}\t{}\t{}",
            if self.path.is_root() {
                ".".to_string()
            } else {
                self.path.escaped()
            },
            self.kind.letter(),
            self.mode,
            self.uid,
            self.gid,
            self.size,
            self.mtime,
            self.mtime_nsec,
            rdev,
            content,
            link
        );
    }

    fn parse_line(line: &str) -> Option<Entry> {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != 10 {
            return None;
        }
        let path = if f[0] == "." {
            RelPath::root()
        } else {
            RelPath::parse(&unescape(f[0])?).ok()?
        };
        let kind = Kind::from_letter(f[1])?;
        let (secs, nsec) = f[6].split_once('.')?;
        let rdev = match f[7] {
            "-" => None,
            s => {
                let (a, b) = s.split_once(':')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            }
        };
        let (hash, target) = match (kind, f[8]) {
            (_, "-") if kind != Kind::Symlink => (None, None),
            (Kind::File, h) => (Some(*blake3::Hash::from_hex(h).ok()?.as_bytes()), None),
            (Kind::Symlink, t) => (None, Some(unescape(t)?)),
            _ => return None,
        };
        let link = match f[9] {
            "-" => None,
            l => Some(RelPath::parse(&unescape(l)?).ok()?),
        };
        Some(Entry {
            path,
            kind,
            mode: u32::from_str_radix(f[2], 8).ok()?,
            uid: f[3].parse().ok()?,
            gid: f[4].parse().ok()?,
            size: f[5].parse().ok()?,
            mtime: secs.parse().ok()?,
            mtime_nsec: nsec.parse().ok()?,
            rdev,
            hash,
            target,
            link,
        })
    }
}

/// A whole tree, sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub entries: Vec<Entry>,
}

/// How a listing differs from a tree (or another listing), by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: Vec<RelPath>,
    pub removed: Vec<RelPath>,
    pub changed: Vec<RelPath>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// A short human summary naming at most `max` paths.
    pub fn summary(&self, max: usize) -> String {
        let mut names: Vec<String> = Vec::new();
        for (sign, list) in [
            ("~", &self.changed),
            ("+", &self.added),
            ("-", &self.removed),
        ] {
            for p in list.iter() {
                names.push(format!("{sign}{p}"));
            }
        }
        let total = names.len();
        names.truncate(max);
        let mut s = names.join(" ");
        if total > max {
            s.push_str(&format!(" … ({} more)", total - max));
        }
        s
    }
}

impl Listing {
    /// Sorts by path and checks there are no duplicates.
    pub fn new(mut entries: Vec<Entry>) -> Listing {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        entries.dedup_by(|a, b| a.path == b.path);
        Listing { entries }
    }

    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(self.entries.len() * 120);
        for e in &self.entries {
            e.line(&mut s);
        }
        s
    }

    pub fn parse(text: &str) -> Result<Listing> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            match Entry::parse_line(line) {
                Some(e) => entries.push(e),
                None => bail!("listing line {} is malformed", i + 1),
            }
        }
        Ok(Listing::new(entries))
    }

    pub fn load(path: &Path) -> Result<Listing> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read listing {}", path.display()))?;
        Listing::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// BLAKE3 of the canonical text, hex.
    pub fn content_hash(&self) -> String {
        blake3::hash(self.to_text().as_bytes()).to_hex().to_string()
    }

    pub fn get(&self, path: &RelPath) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Bytes of file content (each hard-linked inode once).
    pub fn content_bytes(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.kind == Kind::File && e.link.is_none())
            .map(|e| e.size)
            .sum()
    }

    /// What differs from `self` (the expected state) in `actual`.
    pub fn diff(&self, actual: &Listing) -> Diff {
        let mut d = Diff::default();
        let (mut i, mut j) = (0, 0);
        let (a, b) = (&self.entries, &actual.entries);
        while i < a.len() || j < b.len() {
            match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) if x.path == y.path => {
                    if !x.same_as(y) {
                        d.changed.push(x.path.clone());
                    }
                    i += 1;
                    j += 1;
                }
                (Some(x), Some(y)) if x.path < y.path => {
                    d.removed.push(x.path.clone());
                    i += 1;
                }
                (Some(_), Some(y)) => {
                    d.added.push(y.path.clone());
                    j += 1;
                }
                (Some(x), None) => {
                    d.removed.push(x.path.clone());
                    i += 1;
                }
                (None, Some(y)) => {
                    d.added.push(y.path.clone());
                    j += 1;
                }
                (None, None) => break,
            }
        }
        d
    }
}

/// What [`scan`] reads.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Hash regular files' content (else metadata only: the quick check).
    pub hash: bool,
    /// Paths left out with everything below them (the host source's excludes).
    pub exclude: Vec<RelPath>,
    /// Stay on the root's file system (the host source: other mounts are not part of it).
    pub one_file_system: bool,
}

/// Walks `root` (never following symlinks) into a listing.
pub fn scan(root: &Path, opts: &ScanOptions, progress: &dyn Progress) -> Result<Listing> {
    let mut entries = Vec::new();
    // (dev, ino) → hash of an inode already read: hard links are hashed once.
    let mut seen: HashMap<(u64, u64), Option<[u8; 32]>> = HashMap::new();
    let mut groups: HashMap<(u64, u64), Vec<usize>> = HashMap::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .same_file_system(opts.one_file_system)
        .into_iter()
        .filter_entry(
            |e| match e.path().strip_prefix(root).map(RelPath::from_path) {
                Ok(Ok(rel)) => !opts.exclude.iter().any(|x| rel.starts_with(x)),
                _ => true,
            },
        );
    for item in walker {
        let item = item.with_context(|| format!("walking {}", root.display()))?;
        let rel = RelPath::from_path(item.path().strip_prefix(root).unwrap_or(item.path()))
            .map_err(|e| anyhow::anyhow!("{}: {e}", item.path().display()))?;
        let md = item
            .path()
            .symlink_metadata()
            .with_context(|| format!("cannot stat {}", item.path().display()))?;
        let kind = Kind::of_mode(md.mode());
        let key = (md.dev(), md.ino());
        let mut e = Entry {
            path: rel,
            kind,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: match kind {
                Kind::File | Kind::Symlink => md.size(),
                _ => 0,
            },
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec() as u32,
            rdev: match kind {
                Kind::Char | Kind::Block => {
                    Some((libc::major(md.rdev()) as u64, libc::minor(md.rdev()) as u64))
                }
                _ => None,
            },
            hash: None,
            target: None,
            link: None,
        };
        match kind {
            Kind::Symlink => {
                let t = std::fs::read_link(item.path())
                    .with_context(|| format!("cannot read link {}", item.path().display()))?;
                e.target = Some(std::os::unix::ffi::OsStrExt::as_bytes(t.as_os_str()).to_vec());
            }
            Kind::File => {
                if md.nlink() > 1 {
                    groups.entry(key).or_default().push(entries.len());
                }
                if opts.hash {
                    e.hash = match seen.get(&key) {
                        Some(h) => *h,
                        None => {
                            let h = hash_file(item.path())?;
                            progress.bytes(md.size());
                            if md.nlink() > 1 {
                                seen.insert(key, Some(h));
                            }
                            Some(h)
                        }
                    };
                }
            }
            _ => {}
        }
        progress.item();
        entries.push(e);
    }
    // Later names of one inode point at the first (smallest) name: stable whatever the walk
    // order, so the listing is canonical.
    for idxs in groups.values() {
        if idxs.len() < 2 {
            continue;
        }
        let first = idxs
            .iter()
            .map(|&i| entries[i].path.clone())
            .min()
            .expect("non-empty group");
        for &i in idxs {
            if entries[i].path != first {
                entries[i].link = Some(first.clone());
            }
        }
    }
    Ok(Listing::new(entries))
}

pub fn hash_file(path: &Path) -> Result<[u8; 32]> {
    let f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = blake3::Hasher::new();
    h.update_reader(f)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(*h.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: Kind) -> Entry {
        Entry {
            path: RelPath::parse(path.as_bytes()).unwrap(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 3,
            mtime: 5,
            mtime_nsec: 7,
            rdev: None,
            hash: (kind == Kind::File).then(|| *blake3::hash(b"abc").as_bytes()),
            target: (kind == Kind::Symlink).then(|| b"t a\tb".to_vec()),
            link: None,
        }
    }

    #[test]
    fn text_round_trips_and_is_sorted() {
        let mut dev = entry("dev/null", Kind::Char);
        dev.rdev = Some((1, 3));
        let mut linked = entry("b/x", Kind::File);
        linked.link = Some(RelPath::parse(b"a").unwrap());
        let l = Listing::new(vec![
            entry("a-c", Kind::File),
            entry("a/b", Kind::Symlink),
            entry("", Kind::Dir),
            dev,
            linked,
            entry("a", Kind::File),
        ]);
        let text = l.to_text();
        assert!(text.starts_with(".\td\t"), "{text}");
        assert_eq!(Listing::parse(&text).unwrap(), l);
        let paths: Vec<_> = l.entries.iter().map(|e| e.path.to_string()).collect();
        assert_eq!(paths, [".", "a", "a-c", "a/b", "b/x", "dev/null"]);
    }

    #[test]
    fn diff_names_changes() {
        let a = Listing::new(vec![entry("x", Kind::File), entry("y", Kind::File)]);
        let mut changed = entry("y", Kind::File);
        changed.hash = Some(*blake3::hash(b"abd").as_bytes());
        let b = Listing::new(vec![changed, entry("z", Kind::File)]);
        let d = a.diff(&b);
        assert_eq!(d.changed.len(), 1);
        assert_eq!(d.removed[0].to_string(), "x");
        assert_eq!(d.added[0].to_string(), "z");
        assert_eq!(d.summary(10), "~y +z -x");
        assert!(a.diff(&a).is_empty());
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(Listing::parse("x\tf\n").is_err());
        assert!(Listing::parse("../x\tf\t0644\t0\t0\t0\t0.0\t-\t-\t-\n").is_err());
    }
}
