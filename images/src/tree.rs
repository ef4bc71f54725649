//! Writing an image tree into a fresh directory that only this process writes to (a build or
//! snapshot staging directory): the one place that creates files, so the one place that
//! enforces "nothing lands outside the root".
//!
//! Every name is a checked [`RelPath`] (no `..`, not absolute) and every existing parent is
//! `lstat`ed before use: a symlink where a directory is expected (the "symlink, then a file
//! through it" archive trick) is refused with the entry named. Nothing else writes into the
//! staging directory, so the check is not racy. The final component is created with
//! `O_EXCL | O_NOFOLLOW` after removing what was there (later archive entries replace earlier
//! ones, as tar does).
//!
//! Directory mtimes are applied last (deepest first): creating children changes them.
//! Directories an archive implies without an entry get mtime 0, so the tree stays reproducible.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::progress::Progress;
use crate::relpath::RelPath;

/// Inode metadata carried from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits incl. setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
}

impl Meta {
    pub fn of(md: &fs::Metadata) -> Meta {
        Meta {
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            mtime: md.mtime(),
            mtime_nsec: md.mtime_nsec() as u32,
        }
    }
}

/// Special files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Char(u64, u64),
    Block(u64, u64),
    Fifo,
}

/// A tree being written under `root`.
pub struct TreeWriter {
    root: PathBuf,
    /// Directory mtimes to apply at the end (explicit entries and implied parents).
    dir_times: BTreeMap<RelPath, (i64, u32)>,
    /// Paths written by the current layer (OCI opaque whiteouts keep these).
    layer: std::collections::HashSet<RelPath>,
    pub entries: u64,
    pub bytes: u64,
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| anyhow!("NUL in path {}", p.display()))
}

/// `utimensat(AT_SYMLINK_NOFOLLOW)`: std has no way to set a symlink's own mtime.
pub fn set_mtime(path: &Path, secs: i64, nsec: u32) -> Result<()> {
    let c = cpath(path)?;
    let t = libc::timespec {
        tv_sec: secs as libc::time_t,
        tv_nsec: nsec.min(999_999_999) as libc::c_long,
    };
    let times = [t, t];
    // SAFETY: valid C string and a two-element timespec array.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("cannot set the mtime of {}", path.display()));
    }
    Ok(())
}

/// Owner, then mode (chown clears setuid, so the order matters), then mtime.
pub fn apply_meta(path: &Path, meta: &Meta, is_symlink: bool) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(meta.uid), Some(meta.gid))
        .with_context(|| format!("cannot chown {} (fix: run as root)", path.display()))?;
    if !is_symlink {
        fs::set_permissions(
            path,
            std::os::unix::fs::PermissionsExt::from_mode(meta.mode),
        )
        .with_context(|| format!("cannot chmod {}", path.display()))?;
    }
    set_mtime(path, meta.mtime, meta.mtime_nsec)
}

/// `FICLONE`: share the source's extents (btrfs, XFS with reflink=1). `Ok(false)` when the file
/// system cannot (EOPNOTSUPP, EXDEV, EINVAL): the caller falls back.
pub fn reflink(src: &File, dst: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    const FICLONE: libc::c_ulong = 0x4004_9409;
    // SAFETY: both fds are open for the duration of the call.
    let r = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EOPNOTSUPP)
        | Some(libc::EXDEV)
        | Some(libc::EINVAL)
        | Some(libc::ENOTTY)
        | Some(libc::EPERM) => Ok(false),
        _ => Err(e),
    }
}

/// How a file's data reached its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    Reflink,
    Copied,
}

/// Copies `src` to a new file `dst` (which must not exist): a reflink when the file system
/// shares extents, else the bytes.
pub fn copy_data(src: &Path, dst: &Path, progress: &dyn Progress) -> Result<CopyKind> {
    let mut from = File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(dst)
        .with_context(|| format!("cannot create {}", dst.display()))?;
    if reflink(&from, &to).with_context(|| format!("reflink {}", src.display()))? {
        return Ok(CopyKind::Reflink);
    }
    let n = io::copy(&mut from, &mut to)
        .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
    progress.bytes(n);
    Ok(CopyKind::Copied)
}

impl TreeWriter {
    /// `root` must exist and be empty (a staging directory of this process).
    pub fn new(root: &Path) -> TreeWriter {
        let mut dir_times = BTreeMap::new();
        dir_times.insert(RelPath::root(), (0, 0));
        TreeWriter {
            root: root.to_path_buf(),
            dir_times,
            layer: Default::default(),
            entries: 0,
            bytes: 0,
        }
    }

    pub fn path_of(&self, rel: &RelPath) -> PathBuf {
        if rel.is_root() {
            self.root.clone()
        } else {
            self.root.join(rel.as_path())
        }
    }

    /// Starts a new OCI layer (for opaque whiteouts).
    pub fn start_layer(&mut self) {
        self.layer.clear();
    }

    /// Makes sure every parent of `rel` is a real directory, creating missing ones (mode 755,
    /// root, mtime 0 unless an entry sets it later).
    fn parents(&mut self, rel: &RelPath) -> Result<()> {
        let mut cur = RelPath::root();
        let comps: Vec<Vec<u8>> = rel.components().map(|c| c.to_vec()).collect();
        for c in comps.iter().take(comps.len().saturating_sub(1)) {
            cur = cur.join(c);
            let p = self.path_of(&cur);
            match p.symlink_metadata() {
                Ok(md) if md.file_type().is_dir() => {}
                Ok(md) if md.file_type().is_symlink() => {
                    bail!("`{rel}` goes through the symlink `{cur}`: refused (an archive may not write outside its root)")
                }
                Ok(_) => bail!("`{rel}`: its parent `{cur}` is not a directory"),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
                    self.dir_times.entry(cur.clone()).or_insert((0, 0));
                }
                Err(e) => return Err(e).with_context(|| format!("cannot stat {}", p.display())),
            }
        }
        Ok(())
    }

    /// Removes what is at `rel` unless it is a directory and `keep_dir`. Returns whether a
    /// directory is left in place.
    fn clear(&mut self, rel: &RelPath, keep_dir: bool) -> Result<bool> {
        if rel.is_root() {
            if keep_dir {
                return Ok(true);
            }
            bail!("the archive replaces the root directory with a non-directory");
        }
        let p = self.path_of(rel);
        match p.symlink_metadata() {
            Ok(md) if md.is_dir() => {
                if keep_dir {
                    return Ok(true);
                }
                fs::remove_dir_all(&p).with_context(|| format!("cannot remove {}", p.display()))?;
                self.forget_dirs(rel);
            }
            Ok(_) => {
                fs::remove_file(&p).with_context(|| format!("cannot remove {}", p.display()))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", p.display())),
        }
        Ok(false)
    }

    fn forget_dirs(&mut self, rel: &RelPath) {
        let gone: Vec<RelPath> = self
            .dir_times
            .range(rel.clone()..)
            .take_while(|(k, _)| k.as_bytes().starts_with(rel.as_bytes()))
            .filter(|(k, _)| k.starts_with(rel))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.dir_times.remove(&k);
        }
    }

    fn begin(&mut self, rel: &RelPath, keep_dir: bool) -> Result<(PathBuf, bool)> {
        self.parents(rel)?;
        let kept = self.clear(rel, keep_dir)?;
        self.layer.insert(rel.clone());
        self.entries += 1;
        Ok((self.path_of(rel), kept))
    }

    pub fn dir(&mut self, rel: &RelPath, meta: &Meta) -> Result<()> {
        let (p, kept) = self.begin(rel, true)?;
        if !kept {
            fs::create_dir(&p).with_context(|| format!("cannot create {}", p.display()))?;
        }
        std::os::unix::fs::lchown(&p, Some(meta.uid), Some(meta.gid))
            .with_context(|| format!("cannot chown {} (fix: run as root)", p.display()))?;
        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(meta.mode))
            .with_context(|| format!("cannot chmod {}", p.display()))?;
        self.dir_times
            .insert(rel.clone(), (meta.mtime, meta.mtime_nsec));
        Ok(())
    }

    /// A regular file from a stream of exactly `size` bytes (a short stream is an error, so a
    /// truncated archive or a lying header size fails here instead of yielding a short file).
    pub fn file(
        &mut self,
        rel: &RelPath,
        meta: &Meta,
        data: &mut dyn Read,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        let (p, _) = self.begin(rel, false)?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&p)
            .with_context(|| format!("cannot create {}", p.display()))?;
        let n = io::copy(&mut data.take(size), &mut f)
            .with_context(|| format!("`{rel}`: cannot write its content"))?;
        if n != size {
            bail!("`{rel}`: the archive ends after {n} of its {size} bytes (truncated or a lying size header)");
        }
        progress.bytes(n);
        self.bytes += n;
        drop(f);
        apply_meta(&p, meta, false)
    }

    /// A regular file copied from another file on this machine (reflink when possible).
    pub fn copy_file(
        &mut self,
        rel: &RelPath,
        meta: &Meta,
        src: &Path,
        progress: &dyn Progress,
    ) -> Result<CopyKind> {
        let (p, _) = self.begin(rel, false)?;
        let kind = copy_data(src, &p, progress)?;
        self.bytes += fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        apply_meta(&p, meta, false)?;
        Ok(kind)
    }

    pub fn symlink(&mut self, rel: &RelPath, meta: &Meta, target: &[u8]) -> Result<()> {
        if target.is_empty() || target.contains(&0) {
            bail!("`{rel}`: symlink with an empty or NUL target");
        }
        let (p, _) = self.begin(rel, false)?;
        std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), &p)
            .with_context(|| format!("cannot create symlink {}", p.display()))?;
        apply_meta(&p, meta, true)
    }

    /// A second name for the inode at `target` (which must already be in the tree, reached
    /// without symlinks, and not be a directory).
    pub fn hardlink(&mut self, rel: &RelPath, target: &RelPath) -> Result<()> {
        if target.is_root() || target == rel {
            bail!("`{rel}`: hard link to `{target}` is not valid");
        }
        self.parents(target)?;
        let t = self.path_of(target);
        match t.symlink_metadata() {
            Ok(md) if md.is_dir() => bail!("`{rel}`: hard link to the directory `{target}`"),
            Ok(_) => {}
            Err(_) => {
                bail!("`{rel}`: hard link to `{target}`, which is not in the archive before it")
            }
        }
        let (p, _) = self.begin(rel, false)?;
        fs::hard_link(&t, &p)
            .with_context(|| format!("cannot link {} to {}", p.display(), t.display()))
    }

    pub fn special(&mut self, rel: &RelPath, meta: &Meta, kind: Special) -> Result<()> {
        let (p, _) = self.begin(rel, false)?;
        let c = cpath(&p)?;
        let (fmt, dev) = match kind {
            Special::Char(ma, mi) => (libc::S_IFCHR, libc::makedev(ma as u32, mi as u32)),
            Special::Block(ma, mi) => (libc::S_IFBLK, libc::makedev(ma as u32, mi as u32)),
            Special::Fifo => (libc::S_IFIFO, 0),
        };
        // SAFETY: valid C string.
        if unsafe { libc::mknod(c.as_ptr(), fmt | 0o600, dev) } != 0 {
            return Err(io::Error::last_os_error()).with_context(|| {
                format!("cannot create device {} (fix: run as root)", p.display())
            });
        }
        apply_meta(&p, meta, false)
    }

    /// OCI whiteout: `rel` (a `.wh.NAME` entry) deletes NAME from the lower layers;
    /// `.wh..wh..opq` empties its directory of everything lower layers put there.
    pub fn whiteout(&mut self, rel: &RelPath) -> Result<()> {
        let name = rel.file_name();
        let parent = rel.parent().unwrap_or_else(RelPath::root);
        self.parents(rel)?;
        if name == b".wh..wh..opq" {
            let dir = self.path_of(&parent);
            if let Ok(rd) = fs::read_dir(&dir) {
                for child in rd {
                    let child = child?;
                    let crel = parent.join(child.file_name().as_bytes());
                    if !self.layer.contains(&crel) {
                        self.clear(&crel, false)?;
                    }
                }
            }
            return Ok(());
        }
        let Some(victim) = name.strip_prefix(b".wh.") else {
            return Ok(());
        };
        if victim.is_empty() || victim == b"." || victim == b".." {
            bail!("`{rel}`: whiteout of an invalid name");
        }
        let victim = parent.join(victim);
        self.clear(&victim, false)?;
        Ok(())
    }

    /// Applies directory mtimes, deepest first; returns (entries, bytes).
    pub fn finish(self) -> Result<(u64, u64)> {
        for (rel, (s, ns)) in self.dir_times.iter().rev() {
            set_mtime(&self.path_of(rel), *s, *ns)?;
        }
        Ok((self.entries, self.bytes))
    }
}
