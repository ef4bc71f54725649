//! The image store on disk, and the atomic switch of an image's current version.
//!
//! ```text
//! <images_dir>/NAME/
//!   .lock                        flock: one writer per image (build, snapshot, rollback, prune)
//!   current -> versions/VID      relative symlink, replaced by symlink-to-temp + rename(2)
//!   vmlinuz -> current/vmlinuz   stable boot paths (HTTP/TFTP serve images/NAME/vmlinuz)
//!   initramfs.img -> current/initramfs.img
//!   versions/VID/{root/, vmlinuz, initramfs.img, meta.json, listing}
//!   snapshots/SNAP/{root/, vmlinuz, initramfs.img, meta.json, listing}
//!   .build-*/ .snap-*/ .current-*  staging; left only by a killed process, removed under the lock
//! ```
//!
//! **VID** = `NNNN-HHHHHHHHHHHH`: a per-image sequence number (order of publication, what
//! `prune --keep` counts) and the first 12 hex digits of the content hash (`live` for a host
//! image, whose tree is not in the store). The full hash is in `meta.json`.
//!
//! **Versions are immutable once published**: an update is a new version beside the old one
//! (unchanged files shared with it), then `current` is switched. A node that booted the old
//! version keeps reading it (the NFS server retains older versions), and the next boot gets the
//! new kernel, initramfs and tree. Nothing clustermaker does writes into a published version.
//!
//! **Snapshots** are directories, not symlinks to a version: a snapshot must stay frozen even
//! for a host image (whose tree is the live root) and must survive `prune` of the version it
//! was taken from. Their files share data with the version (reflink, else hard link; see
//! [`crate::snapshot`]).

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::meta::VersionMeta;

pub const VERSIONS: &str = "versions";
pub const SNAPSHOTS: &str = "snapshots";
pub const CURRENT: &str = "current";
pub const META: &str = "meta.json";
pub const LISTING: &str = "listing";
pub const ROOT: &str = "root";
pub const KERNEL: &str = "vmlinuz";
pub const INITRAMFS: &str = "initramfs.img";

/// Image and snapshot names: a directory name and a URL path segment.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// `NAME@SNAP` → (NAME, SNAP).
pub fn parse_ref(s: &str) -> Result<(String, String)> {
    match s.split_once('@') {
        Some((n, sn)) if valid_name(n) && valid_name(sn) => Ok((n.into(), sn.into())),
        _ => bail!(
            "`{s}` is not NAME@SNAPSHOT (fix: see `clustermaker image list` for snapshot names)"
        ),
    }
}

/// `NNNN-HASH12`.
pub fn vid(number: u64, content_hash: Option<&str>) -> String {
    let h = content_hash
        .map(|h| &h[..h.len().min(12)])
        .unwrap_or("live");
    format!("{number:04}-{h}")
}

/// The sequence number of a VID.
pub fn vid_number(vid: &str) -> Option<u64> {
    vid.split_once('-')?.0.parse().ok()
}

#[derive(Debug, Clone)]
pub struct Store {
    pub root: PathBuf,
}

/// Held while an image is changed; dropping it releases the lock.
pub struct ImageLock {
    _file: fs::File,
    pub dir: PathBuf,
}

impl Store {
    pub fn new(root: impl Into<PathBuf>) -> Store {
        Store { root: root.into() }
    }

    pub fn image_dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn version_dir(&self, name: &str, vid: &str) -> PathBuf {
        self.root.join(name).join(VERSIONS).join(vid)
    }

    pub fn snapshot_dir(&self, name: &str, snap: &str) -> PathBuf {
        self.root.join(name).join(SNAPSHOTS).join(snap)
    }

    /// Image names (directories with a `current` link).
    pub fn names(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let rd = match fs::read_dir(&self.root) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.root.display()))
            }
        };
        for e in rd {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            // A first build that failed leaves an image directory without `current`: not an image.
            if valid_name(&name) && e.path().join(CURRENT).symlink_metadata().is_ok() {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    pub fn exists(&self, name: &str) -> bool {
        valid_name(name)
            && self
                .image_dir(name)
                .join(CURRENT)
                .symlink_metadata()
                .is_ok()
    }

    /// Takes the image's lock (waiting for another writer), creating the image directory, and
    /// removes staging left by a killed process: under the lock nobody else is staging.
    pub fn lock(&self, name: &str) -> Result<ImageLock> {
        if !valid_name(name) {
            bail!("image name `{name}` is not valid (fix: letters, digits, `-`, `_`, `.`; not starting with `.`)");
        }
        let dir = self.image_dir(name);
        for d in [dir.join(VERSIONS), dir.join(SNAPSHOTS)] {
            fs::create_dir_all(&d).with_context(|| {
                format!(
                    "cannot create {} (fix: check the images directory and run as root)",
                    d.display()
                )
            })?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(".lock"))
            .with_context(|| format!("cannot open {}/.lock", dir.display()))?;
        // SAFETY: a valid fd for the lifetime of `file`.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(io::Error::last_os_error()).context("cannot lock the image");
        }
        clean_staging(&dir)?;
        Ok(ImageLock { _file: file, dir })
    }

    /// The VID `current` points at.
    pub fn current(&self, name: &str) -> Result<Option<String>> {
        match fs::read_link(self.image_dir(name).join(CURRENT)) {
            Ok(t) => Ok(t.file_name().map(|n| n.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).context("cannot read the current link"),
        }
    }

    /// Published versions, oldest first.
    pub fn versions(&self, name: &str) -> Result<Vec<String>> {
        sorted_names(&self.image_dir(name).join(VERSIONS), |a, b| {
            vid_number(a).cmp(&vid_number(b)).then_with(|| a.cmp(b))
        })
    }

    /// Snapshots, by name.
    pub fn snapshots(&self, name: &str) -> Result<Vec<String>> {
        sorted_names(&self.image_dir(name).join(SNAPSHOTS), |a, b| a.cmp(b))
    }

    pub fn version_meta(&self, name: &str, vid: &str) -> Result<VersionMeta> {
        VersionMeta::load(&self.version_dir(name, vid).join(META))
    }

    pub fn next_number(&self, name: &str) -> Result<u64> {
        Ok(self
            .versions(name)?
            .iter()
            .filter_map(|v| vid_number(v))
            .max()
            .unwrap_or(0)
            + 1)
    }

    /// Moves a complete staging directory to `versions/VID` and points `current` at it.
    /// The staging directory's content is flushed first (`syncfs`), so `current` never names a
    /// version whose files are not on disk.
    pub fn publish(&self, lock: &ImageLock, staging: &Path, vid: &str) -> Result<PathBuf> {
        sync_fs(staging)?;
        let dest = lock.dir.join(VERSIONS).join(vid);
        fs::rename(staging, &dest)
            .with_context(|| format!("cannot move {} to {}", staging.display(), dest.display()))?;
        self.switch_current(lock, vid)?;
        Ok(dest)
    }

    /// Points `current` at `versions/VID` atomically: a new symlink under a temporary name,
    /// renamed over the old one (rename(2) replaces atomically; a reader sees the old or the
    /// new target, never none).
    pub fn switch_current(&self, lock: &ImageLock, vid: &str) -> Result<()> {
        let target = Path::new(VERSIONS).join(vid);
        if !lock.dir.join(&target).join(META).is_file() {
            bail!("version {vid} is not complete (no meta.json)");
        }
        let tmp = lock.dir.join(format!(".current-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        fs::rename(&tmp, lock.dir.join(CURRENT)).context("cannot switch the current link")?;
        // The boot servers serve images/NAME/{vmlinuz,initramfs.img}: links through `current`.
        for f in [KERNEL, INITRAMFS] {
            let link = lock.dir.join(f);
            if fs::read_link(&link).is_err() {
                let _ = fs::remove_file(&link);
                std::os::unix::fs::symlink(Path::new(CURRENT).join(f), &link)
                    .with_context(|| format!("cannot create {}", link.display()))?;
            }
        }
        fsync_dir(&lock.dir)
    }

    /// Removes all but the newest `keep` versions, never the current one. Returns the removed.
    pub fn prune(&self, lock: &ImageLock, name: &str, keep: usize) -> Result<Vec<String>> {
        let current = self.current(name)?;
        let versions = self.versions(name)?;
        let mut removed = Vec::new();
        let n = versions.len();
        for (i, v) in versions.into_iter().enumerate() {
            if i + keep >= n || Some(&v) == current.as_ref() {
                continue;
            }
            let d = lock.dir.join(VERSIONS).join(&v);
            // Rename first: a half-deleted version is never mistaken for a complete one.
            let tmp = lock.dir.join(format!(".build-prune-{v}"));
            fs::rename(&d, &tmp).with_context(|| format!("cannot remove {}", d.display()))?;
            fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
            removed.push(v);
        }
        Ok(removed)
    }

    /// Deletes a whole image (versions, snapshots).
    pub fn remove(&self, name: &str) -> Result<()> {
        let lock = self.lock(name)?;
        let tmp = self
            .root
            .join(format!(".removing-{name}-{}", std::process::id()));
        fs::rename(&lock.dir, &tmp)
            .with_context(|| format!("cannot remove {}", lock.dir.display()))?;
        drop(lock);
        fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))
    }
}

fn sorted_names(
    dir: &Path,
    cmp: impl Fn(&String, &String) -> std::cmp::Ordering,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    match fs::read_dir(dir) {
        Ok(rd) => {
            for e in rd {
                let n = e?.file_name().to_string_lossy().into_owned();
                if valid_name(&n) {
                    out.push(n);
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
    out.sort_by(&cmp);
    Ok(out)
}

/// Staging names start with a dot; complete versions never do.
fn clean_staging(dir: &Path) -> Result<()> {
    for sub in [dir.to_path_buf(), dir.join(VERSIONS), dir.join(SNAPSHOTS)] {
        let Ok(rd) = fs::read_dir(&sub) else { continue };
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with(".build-") || n.starts_with(".snap-") || n.starts_with(".current-") {
                let p = e.path();
                let r = if p.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                r.with_context(|| format!("cannot remove the leftover {}", p.display()))?;
            }
        }
    }
    Ok(())
}

/// Flushes the file system holding `path`.
pub fn sync_fs(path: &Path) -> Result<()> {
    let f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: valid fd.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error()).context("syncfs");
    }
    Ok(())
}

pub fn fsync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_vids() {
        assert!(valid_name("debian-12.1_x"));
        for bad in ["", ".x", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(vid(3, Some("0123456789abcdef0123")), "0003-0123456789ab");
        assert_eq!(vid(12, None), "0012-live");
        assert_eq!(vid_number("0012-live"), Some(12));
        assert_eq!(
            parse_ref("img@snap1").unwrap(),
            ("img".into(), "snap1".into())
        );
        assert!(parse_ref("img").unwrap_err().to_string().contains("fix:"));
    }
}
