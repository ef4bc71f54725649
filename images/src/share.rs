//! Sharing file data between versions and snapshots: copy-on-write where the file system has
//! it (`FICLONE` reflinks: btrfs, XFS), hard links elsewhere (rsnapshot-style).
//!
//! Why hard links are safe here: a version or snapshot is never written in place by
//! clustermaker; a new version gets a *new* inode for every changed file and shares only files
//! whose content **and** inode metadata (mode, owner, mtime) are identical. What hard links do
//! not protect against is someone writing *into* a shared file (`echo >> file`, an editor that
//! saves in place): that changes every version and snapshot sharing the inode. That is why every
//! version and snapshot keeps its listing with content hashes and `image verify` (and `list`,
//! `rollback`) report such damage by file name. To change an image safely, publish a new version
//! (`image update`), or use tools that replace files (write a new file, rename it over).

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::listing::{Kind, Listing};
use crate::progress::Progress;
use crate::relpath::RelPath;
use crate::tree::{apply_meta, reflink, set_mtime, Meta, Special, TreeWriter};

/// How a tree's files were shared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShareStats {
    pub reflinked: u64,
    pub hardlinked: u64,
    pub copied: u64,
    /// Bytes of the files shared (reflinked or hard-linked).
    pub shared_bytes: u64,
}

impl ShareStats {
    /// The method most files used.
    pub fn method(&self) -> &'static str {
        if self.reflinked >= self.hardlinked && self.reflinked >= self.copied && self.reflinked > 0
        {
            "reflink"
        } else if self.hardlinked >= self.copied && self.hardlinked > 0 {
            "hardlink"
        } else {
            "copy"
        }
    }
}

/// What sharing is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShareMode {
    /// Reflink, else hard link (between store trees, which nobody writes into).
    ReflinkOrHardlink,
    /// Reflink, else copy the bytes (from a live tree that is edited in place, e.g. the host).
    ReflinkOrCopy,
}

/// `dst` gets the data of `src`: a reflinked new inode with `meta`, else (if allowed) a hard
/// link to `src`, else a byte copy. `dst` must not exist.
pub fn share_file(
    src: &Path,
    dst: &Path,
    meta: &Meta,
    mode: ShareMode,
    reflink_ok: &mut Option<bool>,
) -> Result<SharedAs> {
    if *reflink_ok != Some(false) {
        let from = File::open(src).with_context(|| format!("cannot read {}", src.display()))?;
        let to = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(dst)
            .with_context(|| format!("cannot create {}", dst.display()))?;
        let ok = reflink(&from, &to).with_context(|| format!("reflink {}", src.display()))?;
        *reflink_ok = Some(ok);
        if ok {
            drop(to);
            apply_meta(dst, meta, false)?;
            return Ok(SharedAs::Reflink);
        }
        drop(to);
        fs::remove_file(dst)?;
    }
    match mode {
        ShareMode::ReflinkOrHardlink => match fs::hard_link(src, dst) {
            Ok(()) => Ok(SharedAs::Hardlink),
            // An inode shared by more versions and snapshots than the file system allows
            // links (65000 on ext4): this tree gets its own copy.
            Err(e) if e.raw_os_error() == Some(libc::EMLINK) => {
                fs::copy(src, dst).with_context(|| format!("cannot copy {}", src.display()))?;
                apply_meta(dst, meta, false)?;
                Ok(SharedAs::Copied)
            }
            Err(e) => Err(e)
                .with_context(|| format!("cannot link {} to {}", dst.display(), src.display())),
        },
        ShareMode::ReflinkOrCopy => {
            fs::copy(src, dst).with_context(|| format!("cannot copy {}", src.display()))?;
            apply_meta(dst, meta, false)?;
            Ok(SharedAs::Copied)
        }
    }
}

/// How one file was shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SharedAs {
    Reflink,
    Hardlink,
    Copied,
}

impl ShareStats {
    fn count(&mut self, k: SharedAs, size: u64) {
        match k {
            SharedAs::Reflink => {
                self.reflinked += 1;
                self.shared_bytes += size;
            }
            SharedAs::Hardlink => {
                self.hardlinked += 1;
                self.shared_bytes += size;
            }
            SharedAs::Copied => self.copied += 1,
        }
    }
}

fn meta_of(e: &crate::listing::Entry) -> Meta {
    Meta {
        mode: e.mode,
        uid: e.uid,
        gid: e.gid,
        mtime: e.mtime,
        mtime_nsec: e.mtime_nsec,
    }
}

/// Recreates the tree described by `listing` (found at `src`) under `dst`, sharing file data.
pub fn clone_tree(
    src: &Path,
    listing: &Listing,
    dst: &Path,
    mode: ShareMode,
    progress: &dyn Progress,
) -> Result<ShareStats> {
    fs::create_dir(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    let mut tree = TreeWriter::new(dst);
    let mut stats = ShareStats::default();
    let mut reflink_ok = None;
    for e in &listing.entries {
        let meta = meta_of(e);
        let from = src.join(e.path.as_path());
        match e.kind {
            Kind::Dir => tree.dir(&e.path, &meta)?,
            Kind::Symlink => {
                tree.symlink(&e.path, &meta, e.target.as_deref().unwrap_or_default())?
            }
            Kind::Char | Kind::Block => {
                let (ma, mi) = e.rdev.unwrap_or((0, 0));
                let s = if e.kind == Kind::Char {
                    Special::Char(ma, mi)
                } else {
                    Special::Block(ma, mi)
                };
                tree.special(&e.path, &meta, s)?
            }
            Kind::Fifo => tree.special(&e.path, &meta, Special::Fifo)?,
            Kind::Socket => {}
            Kind::File => match &e.link {
                Some(first) => tree.hardlink(&e.path, first)?,
                None => {
                    let to = tree.path_of(&e.path);
                    let k = share_file(&from, &to, &meta, mode, &mut reflink_ok)?;
                    stats.count(k, e.size);
                    progress.bytes(e.size);
                }
            },
        }
        progress.item();
    }
    tree.finish()?;
    Ok(stats)
}

/// Paths that are part of a hard-link group inside their own tree.
fn grouped(l: &Listing) -> HashSet<&RelPath> {
    let mut s = HashSet::new();
    for e in &l.entries {
        if let Some(first) = &e.link {
            s.insert(&e.path);
            s.insert(first);
        }
    }
    s
}

/// Replaces files of the freshly built tree at `root` that are identical (content and inode
/// metadata) to the same path in `base` with shared ones, then restores directory mtimes (the
/// renames changed them). Files in hard-link groups are left alone: sharing one name of a group
/// would split it.
pub fn dedupe(
    root: &Path,
    listing: &Listing,
    base: &Path,
    base_listing: &Listing,
    progress: &dyn Progress,
) -> Result<ShareStats> {
    let mut stats = ShareStats::default();
    let (g_new, g_base) = (grouped(listing), grouped(base_listing));
    let mut reflink_ok = None;
    for e in &listing.entries {
        if e.kind != Kind::File || g_new.contains(&e.path) || g_base.contains(&e.path) {
            continue;
        }
        let Some(b) = base_listing.get(&e.path) else {
            continue;
        };
        if !e.shareable_with(b) {
            continue;
        }
        let target = root.join(e.path.as_path());
        // Staged beside the tree, not in it: no name in the image can collide with it.
        let tmp = root.with_file_name(".cm-share.tmp");
        let _ = fs::remove_file(&tmp);
        let k = share_file(
            &base.join(e.path.as_path()),
            &tmp,
            &meta_of(e),
            ShareMode::ReflinkOrHardlink,
            &mut reflink_ok,
        )?;
        fs::rename(&tmp, &target)
            .with_context(|| format!("cannot replace {}", target.display()))?;
        stats.count(k, e.size);
        progress.item();
    }
    restore_dir_times(root, listing)?;
    Ok(stats)
}

/// Sets every directory's mtime back to the listing's, deepest first.
pub fn restore_dir_times(root: &Path, listing: &Listing) -> Result<()> {
    for e in listing.entries.iter().rev().filter(|e| e.kind == Kind::Dir) {
        let p = if e.path.is_root() {
            root.to_path_buf()
        } else {
            root.join(e.path.as_path())
        };
        set_mtime(&p, e.mtime, e.mtime_nsec)?;
    }
    Ok(())
}

/// Lowers every mtime above `epoch` to `epoch` (the reproducible-builds SOURCE_DATE_EPOCH rule).
pub fn clamp_mtimes(root: &Path, epoch: i64) -> Result<u64> {
    let mut n = 0;
    // Children before parents: clamping a child does not touch its directory's mtime, but keep
    // the order anyway so a later change in this walk cannot undo a parent's clamp.
    for item in walkdir::WalkDir::new(root)
        .follow_links(false)
        .contents_first(true)
    {
        let item = item?;
        let md = item.path().symlink_metadata()?;
        use std::os::unix::fs::MetadataExt;
        if md.mtime() > epoch {
            set_mtime(item.path(), epoch, 0)?;
            n += 1;
        }
    }
    Ok(n)
}
