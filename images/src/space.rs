//! How much disk space a tree uses that no other tree shares: what deleting it would free.
//!
//! Per inode (each counted once): a regular file with more links than names in this tree is
//! hard-linked from elsewhere (another version or snapshot): shared. Otherwise its blocks are
//! asked of the file system with `FIEMAP`, whose `FIEMAP_EXTENT_SHARED` flag marks reflinked
//! extents (btrfs, XFS): shared extents are reported as shared, the rest as unique. File systems
//! without FIEMAP (tmpfs) count `st_blocks`. Directories, symlinks and the tree's own metadata
//! files are unique.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Space {
    /// Bytes only this tree uses.
    pub unique_bytes: u64,
    /// Bytes shared with other trees (hard links or reflinked extents).
    pub shared_bytes: u64,
    /// Whether reflinked (shared-extent) data was found.
    pub reflinks_seen: bool,
}

const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
const FIEMAP_EXTENT_SHARED: u32 = 0x2000;
const EXTENTS: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    logical: u64,
    physical: u64,
    length: u64,
    reserved64: [u64; 2],
    flags: u32,
    reserved: [u32; 3],
}

#[repr(C)]
struct Fiemap {
    start: u64,
    length: u64,
    flags: u32,
    mapped_extents: u32,
    extent_count: u32,
    reserved: u32,
    extents: [FiemapExtent; EXTENTS],
}

/// (unique, shared) bytes of a file's extents; `None` when the file system has no FIEMAP.
pub fn extents(file: &File) -> Option<(u64, u64)> {
    let (mut unique, mut shared) = (0u64, 0u64);
    let mut start = 0u64;
    loop {
        let mut fm = Fiemap {
            start,
            length: u64::MAX - start,
            flags: 0,
            mapped_extents: 0,
            extent_count: EXTENTS as u32,
            reserved: 0,
            extents: [FiemapExtent::default(); EXTENTS],
        };
        // SAFETY: `fm` is a correctly laid out struct fiemap with room for EXTENTS extents.
        let r =
            unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP as _, &mut fm as *mut Fiemap) };
        if r != 0 {
            return None;
        }
        let n = (fm.mapped_extents as usize).min(EXTENTS);
        if n == 0 {
            return Some((unique, shared));
        }
        for e in &fm.extents[..n] {
            if e.flags & FIEMAP_EXTENT_SHARED != 0 {
                shared += e.length;
            } else {
                unique += e.length;
            }
            start = e.logical + e.length;
            if e.flags & FIEMAP_EXTENT_LAST != 0 {
                return Some((unique, shared));
            }
        }
    }
}

/// The space of everything under `dir` (a version or snapshot directory).
pub fn measure(dir: &Path) -> Result<Space> {
    struct Inode {
        names: u64,
        nlink: u64,
        regular: bool,
        /// Unique bytes (FIEMAP's unshared extents, else st_blocks).
        bytes: u64,
    }
    let mut inodes: HashMap<(u64, u64), Inode> = HashMap::new();
    let mut space = Space::default();
    for item in walkdir::WalkDir::new(dir).follow_links(false) {
        let item = item.with_context(|| format!("walking {}", dir.display()))?;
        let md = item.path().symlink_metadata()?;
        let regular = md.file_type().is_file();
        let ino = inodes.entry((md.dev(), md.ino())).or_insert_with(|| Inode {
            names: 0,
            nlink: md.nlink(),
            regular,
            bytes: md.blocks() * 512,
        });
        ino.names += 1;
        // Only files without outside links can have reflinked extents; ask once per inode.
        if regular && ino.names == 1 && md.nlink() == 1 {
            if let Some((u, s)) = File::open(item.path()).ok().as_ref().and_then(extents) {
                ino.bytes = u;
                space.shared_bytes += s;
                space.reflinks_seen |= s > 0;
            }
        }
    }
    for ino in inodes.values() {
        if ino.regular && ino.nlink > ino.names {
            space.shared_bytes += ino.bytes;
        } else {
            space.unique_bytes += ino.bytes;
        }
    }
    Ok(space)
}
