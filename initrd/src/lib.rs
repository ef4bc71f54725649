//! Reproducible initramfs builder for clustermaker nodes.
//!
//! The pieces, each usable on its own:
//!
//! * [`Archive`] — an in-memory, deterministic newc cpio writer (files, directories, symlinks,
//!   device nodes) that streams its output to any [`std::io::Write`];
//! * [`LibraryResolver`] — the shared-library closure of an ELF program, found like `ld.so`
//!   finds it, inside a root directory ([`RootFs`]);
//! * [`ModuleIndex`] — the kernel-module closure and load order, from `modules.dep` or from the
//!   modules' own `.modinfo`;
//! * [`Compression`] — deterministic zstd or gzip output;
//! * [`InitramfsBuilder`] — all of the above put together for a node initramfs, including the
//!   `etc/modules-load.order` file that `/init` reads.
//!
//! Same inputs give bit-identical output: entries are sorted, owners are root, every mtime is
//! the same fixed value, and nothing from the build host (inode numbers, times) leaks in.

pub mod compress;
pub mod cpio;
pub mod elf;
pub mod error;
mod glob;
pub mod initramfs;
pub mod ldso;
pub mod modinfo;
pub mod modules;
pub mod path;
pub mod rootfs;

pub use compress::{CompressedWriter, Compression};
pub use cpio::{parse_source_date_epoch, Archive, Entry, EntryKind, FileContent};
pub use error::{
    ArchiveError, ClosureError, CompressError, ElfError, Error, ModuleError, PathError, RootError,
};
pub use initramfs::{
    add_from_root, add_libraries, add_modules, load_order_file, InitramfsBuilder,
    MODULES_LOAD_ORDER,
};
pub use ldso::{FoundVia, LibraryClosure, LibraryResolver, ResolvedLibrary};
pub use modinfo::ModuleCompression;
pub use modules::{DependencySource, KernelModule, ModuleClosure, ModuleIndex};
pub use path::ArchivePath;
pub use rootfs::{Resolved, RootFs, SymlinkStep};
