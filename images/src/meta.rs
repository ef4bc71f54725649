//! `meta.json` of a version or snapshot: what it was built from and what it holds. This is what
//! the NFS server reads to know how to export a version (`export`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::source::Source;

pub const FORMAT: u32 = 1;

/// How the NFS server serves a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Export {
    /// The version's own `root/` directory (immutable).
    Tree,
    /// A live directory outside the store (the master's `/`), minus `exclude` (relative paths,
    /// each excluding everything below it).
    Live { root: PathBuf, exclude: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub size: u64,
    pub blake3: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    pub version: String,
    /// `image` (the image's own boot/vmlinuz-*) or the path it was given as.
    pub origin: String,
    pub file: FileInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitramfsInfo {
    pub file: FileInfo,
    /// Modules /init loads, in order.
    pub modules: Vec<String>,
    pub compression: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub created_at: u64,
    /// The version it froze.
    pub from_version: String,
    /// `reflink`, `hardlink` or `copy` (how most files were shared).
    pub method: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionMeta {
    pub format: u32,
    pub name: String,
    pub version: String,
    pub source: Source,
    pub export: Export,
    /// BLAKE3 of the canonical listing (see [`crate::listing`]); `None` for a live tree.
    pub content_hash: Option<String>,
    pub entries: u64,
    /// Bytes of file content (each inode once).
    pub content_bytes: u64,
    /// Unix seconds; not part of any hash.
    pub built_at: u64,
    pub kernel: Option<KernelInfo>,
    pub initramfs: Option<InitramfsInfo>,
    /// Mtimes were clamped to this (SOURCE_DATE_EPOCH).
    pub source_date_epoch: Option<i64>,
    /// Set on a version published by `image rollback`.
    pub rolled_back_from: Option<String>,
    /// Set in a snapshot's own meta.json.
    pub snapshot: Option<SnapshotInfo>,
}

impl VersionMeta {
    pub fn load(path: &Path) -> Result<VersionMeta> {
        let text =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_slice(&text).with_context(|| format!("{} is not valid", path.display()))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    /// Same content as far as a node is concerned (tree, kernel, initramfs, export).
    pub fn same_content(&self, other: &VersionMeta) -> bool {
        self.content_hash == other.content_hash
            && self.export == other.export
            && self.kernel.as_ref().map(|k| &k.file) == other.kernel.as_ref().map(|k| &k.file)
            && self.initramfs.as_ref().map(|i| &i.file) == other.initramfs.as_ref().map(|i| &i.file)
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn file_info(path: &Path) -> Result<FileInfo> {
    let h = crate::listing::hash_file(path)?;
    Ok(FileInfo {
        size: std::fs::metadata(path)?.len(),
        blake3: blake3::Hash::from_bytes(h).to_hex().to_string(),
    })
}
