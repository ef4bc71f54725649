//! `manifest.json`: what was built from what, with sizes and BLAKE3 hashes. Everything in it
//! is a function of the inputs (no timestamps), so it is as reproducible as the images.

use std::fs::File;
use std::io;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(Serialize, Debug, Clone)]
pub struct Manifest {
    pub format: u32,
    pub kernel: KernelEntry,
    pub initramfs: InitramfsEntry,
    /// Module names in load order (dependencies first).
    pub modules: Vec<String>,
    /// Modules asked for but built into the kernel (nothing to load).
    pub builtin_modules: Vec<String>,
    pub busybox: BusyboxEntry,
    pub clustermaker: Option<AgentEntry>,
    /// The kernel command line a boot server should pass, with `cm.master=` to fill in.
    pub cmdline: String,
    pub source_date_epoch: u32,
}

#[derive(Serialize, Debug, Clone)]
pub struct KernelEntry {
    pub version: String,
    pub source: String,
    pub file: FileEntry,
}

#[derive(Serialize, Debug, Clone)]
pub struct InitramfsEntry {
    pub compression: String,
    pub uncompressed_size: u64,
    pub entries: usize,
    pub file: FileEntry,
}

#[derive(Serialize, Debug, Clone)]
pub struct BusyboxEntry {
    pub source: String,
    pub applets: usize,
}

#[derive(Serialize, Debug, Clone)]
pub struct AgentEntry {
    pub size: u64,
    pub unstripped_size: u64,
    pub stripped: bool,
    pub libraries: Vec<String>,
}

#[derive(Serialize, Debug, Clone)]
pub struct FileEntry {
    /// File name inside the output directory.
    pub name: String,
    pub size: u64,
    pub blake3: String,
}

impl FileEntry {
    pub fn of(dir: &Path, name: &str) -> Result<FileEntry> {
        let path = dir.join(name);
        let mut f = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let mut hasher = blake3::Hasher::new();
        let size = io::copy(&mut f, &mut hasher)?;
        Ok(FileEntry {
            name: name.to_string(),
            size,
            blake3: hasher.finalize().to_hex().to_string(),
        })
    }
}
