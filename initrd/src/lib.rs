//! Reproducible initramfs builder (newc cpio): regular files, directories, symlinks, device
//! nodes, the ELF shared-library closure of a binary, the kernel-module closure from
//! `modules.dep`, and zstd or gzip compression.

pub mod cpio;
pub mod elf;
pub mod error;
mod glob;
pub mod ldso;
pub mod path;
pub mod rootfs;

pub use cpio::{parse_source_date_epoch, Archive, Entry, EntryKind, FileContent};
pub use error::{ArchiveError, ClosureError, CompressError, ElfError, Error, ModuleError, PathError, RootError};
pub use ldso::{FoundVia, LibraryClosure, LibraryResolver, ResolvedLibrary};
pub use path::ArchivePath;
pub use rootfs::{Resolved, RootFs, SymlinkStep};
