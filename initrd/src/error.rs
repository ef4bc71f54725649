//! Typed errors, one enum per concern, plus [`Error`] which wraps them for the
//! high-level [`crate::InitramfsBuilder`].

use std::io;
use std::path::PathBuf;

/// Why a string is not acceptable as a path inside the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is the empty string.
    #[error("the path is empty")]
    Empty,
    /// The path contains a NUL byte, which newc uses as the name terminator.
    #[error("the path contains a NUL byte")]
    Nul,
    /// The path contains a `..` component; archive paths never climb.
    #[error("the path contains a `..` component")]
    ParentComponent,
    /// After normalisation the path names the archive root itself (`/`, `.`).
    #[error("the path names the archive root itself")]
    Root,
    /// The path is longer than the kernel's `PATH_MAX` allows.
    #[error("the path is longer than {max} bytes")]
    TooLong {
        /// The limit that was exceeded.
        max: usize,
    },
}

/// Errors of the cpio [`crate::Archive`].
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A path given to the archive is not a valid archive path.
    #[error("invalid archive path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given by the caller.
        path: String,
        /// What is wrong with it.
        reason: PathError,
    },
    /// A mode carries bits other than the permission bits `0o7777`.
    #[error("invalid mode {mode:#o} for {path}: only permission bits (0o7777) may be given")]
    InvalidMode {
        /// The archive path.
        path: String,
        /// The rejected mode.
        mode: u32,
    },
    /// A symlink target is empty, too long or contains a NUL byte.
    #[error("invalid symlink target {target:?} for {path}: {reason}")]
    InvalidSymlinkTarget {
        /// The archive path of the symlink.
        path: String,
        /// The rejected target.
        target: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The path is already in the archive with a different type, mode or content.
    #[error(
        "{path} is already in the archive as a {existing} with other content or mode \
         (use Archive::replace to overwrite it)"
    )]
    Conflict {
        /// The archive path.
        path: String,
        /// The kind of the entry already there.
        existing: &'static str,
    },
    /// A directory that has entries below it cannot be replaced by something else.
    #[error("{path} is a directory with entries below it and cannot be replaced by a {new}")]
    DirectoryNotEmpty {
        /// The archive path.
        path: String,
        /// The kind of entry that was to replace the directory.
        new: &'static str,
    },
    /// An ancestor of the path exists in the archive but is not a directory.
    #[error("cannot add {path}: {ancestor} is a {kind} in the archive, not a directory")]
    NotADirectory {
        /// The path being added.
        path: String,
        /// The offending ancestor.
        ancestor: String,
        /// The kind of the ancestor entry.
        kind: &'static str,
    },
    /// Resolving the path through the archive's own symlinks did not terminate.
    #[error("too many levels of symbolic links in the archive while resolving {path}")]
    SymlinkLoop {
        /// The path being resolved.
        path: String,
    },
    /// newc stores sizes in 32 bits.
    #[error("{path} is {size} bytes; newc cpio cannot store files of 4 GiB or more")]
    FileTooLarge {
        /// The archive path.
        path: String,
        /// The file size in bytes.
        size: u64,
    },
    /// A host file given as content could not be read.
    #[error("cannot read {}: {source}", path.display())]
    HostIo {
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A host file given as content is not a regular file.
    #[error("{} is not a regular file", path.display())]
    HostNotRegularFile {
        /// The host path.
        path: PathBuf,
    },
    /// A host file changed size between being added and being written.
    #[error("{} changed size while the archive was being built ({expected} -> {actual} bytes)", path.display())]
    HostFileChanged {
        /// The host path.
        path: PathBuf,
        /// The size seen when the file was added.
        expected: u64,
        /// The size seen (or read) when the archive was written.
        actual: u64,
    },
    /// The modification time does not fit newc's 32-bit field.
    #[error("mtime {0} does not fit the 32-bit newc field")]
    MtimeOutOfRange(u64),
    /// `SOURCE_DATE_EPOCH` is not a decimal number of seconds.
    #[error("SOURCE_DATE_EPOCH {0:?} is not a non-negative decimal number of seconds")]
    InvalidSourceDateEpoch(String),
    /// Writing the archive to the output failed.
    #[error("writing the archive failed: {0}")]
    Write(#[source] io::Error),
}

/// Errors while resolving paths inside a root directory ([`crate::RootFs`]).
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    /// A file system call under the root failed (including "not found").
    #[error("{}: {source}", path.display())]
    Io {
        /// The host path that failed.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A path or symlink target under the root is not valid UTF-8.
    #[error("{}: path or symlink target is not valid UTF-8", path.display())]
    NotUtf8 {
        /// The host path concerned.
        path: PathBuf,
    },
    /// Symlink resolution did not terminate (more than 40 links, like Linux).
    #[error("too many levels of symbolic links resolving {path} under {}", root.display())]
    SymlinkLoop {
        /// The path being resolved, relative to the root.
        path: String,
        /// The root.
        root: PathBuf,
    },
    /// A path component that should be a directory is something else.
    #[error("{path} under {}: a component is not a directory", root.display())]
    NotADirectory {
        /// The path being resolved, relative to the root.
        path: String,
        /// The root.
        root: PathBuf,
    },
}

impl RootError {
    /// True when the path simply does not exist (a search may go on elsewhere).
    pub fn is_not_found(&self) -> bool {
        match self {
            RootError::Io { source, .. } => source.kind() == io::ErrorKind::NotFound,
            RootError::NotADirectory { .. } => true,
            _ => false,
        }
    }
}

/// Errors while parsing an ELF file ([`crate::elf::parse_elf`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    /// The data does not start with the ELF magic.
    #[error("not an ELF file")]
    NotElf,
    /// The ELF structures are truncated or inconsistent.
    #[error("malformed ELF: {0}")]
    Malformed(String),
}

/// Errors of the shared-library closure ([`crate::LibraryResolver`]).
#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    /// An ELF object could not be parsed.
    #[error("{path}: {source}")]
    Elf {
        /// Path of the object (inside the root).
        path: String,
        /// What is wrong with it.
        source: ElfError,
    },
    /// A file under the root could not be resolved or read.
    #[error(transparent)]
    Root(#[from] RootError),
    /// A needed library was not found in any search directory.
    #[error("library {name} needed by {needed_by} not found under {} (searched: {searched})", root.display())]
    NotFound {
        /// The `DT_NEEDED` name (or interpreter path).
        name: String,
        /// The object that needs it.
        needed_by: String,
        /// The root searched.
        root: PathBuf,
        /// The directories searched, colon-separated.
        searched: String,
    },
    /// The binary has a class/machine that the resolver does not know default directories for,
    /// or a dependency only exists with the wrong class.
    #[error("{path}: {reason}")]
    Incompatible {
        /// The object concerned.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
}

/// Errors of the kernel-module closure ([`crate::ModuleIndex`]).
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// A line of `modules.dep`, `modules.alias` or `modules.builtin` is malformed.
    #[error("{file} line {line}: {reason}")]
    Parse {
        /// The file name (e.g. `modules.dep`).
        file: &'static str,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A wanted module is neither a module, an alias of one, nor built into the kernel.
    #[error("unknown kernel module {name:?} in {}: no module or alias by that name", dir.display())]
    Unknown {
        /// The name as asked for.
        name: String,
        /// The modules directory.
        dir: PathBuf,
    },
    /// A module depends on a module that is not present.
    #[error("kernel module {module} depends on {dependency}, which is not in {}", dir.display())]
    MissingDependency {
        /// The depending module.
        module: String,
        /// The missing dependency.
        dependency: String,
        /// The modules directory.
        dir: PathBuf,
    },
    /// The dependencies contain a cycle, so no load order exists.
    #[error("dependency cycle between kernel modules: {}", cycle.join(" -> "))]
    Cycle {
        /// The modules on the cycle, the first repeated at the end.
        cycle: Vec<String>,
    },
    /// A module file's `.modinfo` section could not be read.
    #[error("{path}: {reason}")]
    Modinfo {
        /// The module path (relative to the modules directory).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A module is compressed in a format this crate does not decompress.
    #[error("{path} is {format}-compressed, which is not supported here: {hint}")]
    UnsupportedCompression {
        /// The module path.
        path: String,
        /// The compression format.
        format: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// A file of the modules directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The host path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Errors of the compression layer ([`crate::Compression`]).
#[derive(Debug, thiserror::Error)]
pub enum CompressError {
    /// The level is outside the range this crate allows for the format.
    #[error("{format} level {level} is outside {min}..={max}")]
    InvalidLevel {
        /// The format name.
        format: &'static str,
        /// The level asked for.
        level: i32,
        /// Lowest allowed level.
        min: i32,
        /// Highest allowed level.
        max: i32,
    },
    /// An unknown compression name was given to [`std::str::FromStr`].
    #[error("unknown compression {0:?} (expected none, gzip, gzip:LEVEL, zstd or zstd:LEVEL)")]
    UnknownFormat(String),
    /// The encoder failed.
    #[error("compression failed: {0}")]
    Io(#[from] io::Error),
}

/// Any error of the high-level [`crate::InitramfsBuilder`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// See [`ArchiveError`].
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// See [`RootError`].
    #[error(transparent)]
    Root(#[from] RootError),
    /// See [`ClosureError`].
    #[error(transparent)]
    Closure(#[from] ClosureError),
    /// See [`ModuleError`].
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// See [`CompressError`].
    #[error(transparent)]
    Compress(#[from] CompressError),
}
