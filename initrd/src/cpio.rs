//! An in-memory, deterministic newc ("070701") cpio archive builder.
//!
//! The archive behaves like the file system the kernel will unpack it into: adding
//! `lib/modules/x.ko` when `lib` is already a symlink to `usr/lib` stores the file at
//! `usr/lib/modules/x.ko`, exactly where the kernel's unpacker would have written it. Missing
//! parent directories are created implicitly with mode 0755.
//!
//! Output is a pure function of the entries and the mtime: entries are written in byte-wise path
//! order (so every directory precedes its contents), uid/gid are 0, every entry has the same
//! mtime, inode numbers count up from 1 in output order, and nothing about the host (real inode
//! numbers, owners, timestamps) leaks in.
//!
//! Duplicate paths: adding an entry that is identical to the one already stored (same kind, mode
//! and content) is a no-op, so independent parts of a build may both add e.g. `libc.so.6`.
//! Adding a *different* entry at an occupied path is an [`ArchiveError::Conflict`] unless
//! [`Archive::replace`] is used. Directories merge: an explicit directory overrides the mode of
//! an implicitly created one.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::ArchiveError;
use crate::path::{ArchivePath, MAX_PATH_LEN};

/// Mode of directories created implicitly as parents.
pub const IMPLICIT_DIR_MODE: u32 = 0o755;

/// Linux gives up after 40 symlinks in one resolution; so do we.
const MAX_SYMLINK_FOLLOWS: usize = 40;

/// Size of newc's fixed header.
const HEADER_LEN: usize = 110;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFBLK: u32 = 0o060_000;

/// Where a regular file's bytes come from.
#[derive(Clone, Debug)]
pub enum FileContent {
    /// Bytes held in memory.
    Bytes(Arc<[u8]>),
    /// A host file, read when the archive is written (so large files are not held in memory).
    /// `len` is its size when it was added; a different size at write time is an error.
    Host {
        /// The host path.
        path: PathBuf,
        /// The size recorded when the entry was created.
        len: u64,
    },
}

impl FileContent {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        match self {
            FileContent::Bytes(bytes) => bytes.len() as u64,
            FileContent::Host { len, .. } => *len,
        }
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn open(&self) -> Result<Box<dyn Read + '_>, ArchiveError> {
        match self {
            FileContent::Bytes(bytes) => Ok(Box::new(&bytes[..])),
            FileContent::Host { path, .. } => {
                let file = File::open(path).map_err(|source| ArchiveError::HostIo {
                    path: path.clone(),
                    source,
                })?;
                Ok(Box::new(file))
            }
        }
    }

    /// Compares contents, reading host files if needed.
    fn same_as(&self, other: &FileContent) -> Result<bool, ArchiveError> {
        if self.len() != other.len() {
            return Ok(false);
        }
        match (self, other) {
            (FileContent::Bytes(a), FileContent::Bytes(b)) => Ok(a == b),
            (FileContent::Host { path: a, .. }, FileContent::Host { path: b, .. }) if a == b => {
                Ok(true)
            }
            _ => {
                readers_equal(self.open()?, other.open()?).map_err(|source| ArchiveError::HostIo {
                    path: self.host_path().or(other.host_path()).unwrap_or_default(),
                    source,
                })
            }
        }
    }

    fn host_path(&self) -> Option<PathBuf> {
        match self {
            FileContent::Host { path, .. } => Some(path.clone()),
            FileContent::Bytes(_) => None,
        }
    }
}

/// Compares two streams chunk by chunk.
fn readers_equal(mut a: impl Read, mut b: impl Read) -> io::Result<bool> {
    let mut buffer_a = vec![0u8; 64 * 1024];
    let mut buffer_b = vec![0u8; 64 * 1024];
    loop {
        let read = read_full(&mut a, &mut buffer_a)?;
        let read_b = read_full(&mut b, &mut buffer_b[..read.max(1)])?;
        if read != read_b || buffer_a[..read] != buffer_b[..read] {
            return Ok(false);
        }
        if read == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buffer` is full or the stream ends.
fn read_full(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// The type of an archive entry with its type-specific data.
#[derive(Clone, Debug)]
pub enum EntryKind {
    /// A regular file.
    File(FileContent),
    /// A directory.
    Directory,
    /// A symbolic link to the given target (stored verbatim, may be relative).
    Symlink(String),
    /// A character device node.
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device node.
    BlockDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

impl EntryKind {
    /// A short human name used in error messages.
    pub fn name(&self) -> &'static str {
        match self {
            EntryKind::File(_) => "file",
            EntryKind::Directory => "directory",
            EntryKind::Symlink(_) => "symlink",
            EntryKind::CharDevice { .. } => "character device",
            EntryKind::BlockDevice { .. } => "block device",
        }
    }

    fn type_bits(&self) -> u32 {
        match self {
            EntryKind::File(_) => S_IFREG,
            EntryKind::Directory => S_IFDIR,
            EntryKind::Symlink(_) => S_IFLNK,
            EntryKind::CharDevice { .. } => S_IFCHR,
            EntryKind::BlockDevice { .. } => S_IFBLK,
        }
    }
}

/// One archive entry: its kind and permission bits.
#[derive(Clone, Debug)]
pub struct Entry {
    kind: EntryKind,
    mode: u32,
    /// Created as a missing parent rather than asked for; an explicit directory overrides it.
    implicit: bool,
}

impl Entry {
    /// A regular file with in-memory contents.
    pub fn file(mode: u32, contents: impl Into<Vec<u8>>) -> Entry {
        let bytes: Vec<u8> = contents.into();
        Entry::new(EntryKind::File(FileContent::Bytes(bytes.into())), mode)
    }

    /// A regular file whose contents are read from `host_path` when the archive is written.
    /// The file must exist now (its size is recorded); symlinks are followed.
    pub fn host_file(mode: u32, host_path: impl AsRef<Path>) -> Result<Entry, ArchiveError> {
        let path = host_path.as_ref().to_path_buf();
        let metadata = std::fs::metadata(&path).map_err(|source| ArchiveError::HostIo {
            path: path.clone(),
            source,
        })?;
        if !metadata.is_file() {
            return Err(ArchiveError::HostNotRegularFile { path });
        }
        let len = metadata.len();
        Ok(Entry::new(
            EntryKind::File(FileContent::Host { path, len }),
            mode,
        ))
    }

    /// A directory.
    pub fn directory(mode: u32) -> Entry {
        Entry::new(EntryKind::Directory, mode)
    }

    /// A symbolic link; its mode is always 0777 (Linux ignores symlink permissions).
    pub fn symlink(target: impl Into<String>) -> Entry {
        Entry::new(EntryKind::Symlink(target.into()), 0o777)
    }

    /// A character device node (e.g. `dev/console` is 5:1).
    pub fn char_device(mode: u32, major: u32, minor: u32) -> Entry {
        Entry::new(EntryKind::CharDevice { major, minor }, mode)
    }

    /// A block device node.
    pub fn block_device(mode: u32, major: u32, minor: u32) -> Entry {
        Entry::new(EntryKind::BlockDevice { major, minor }, mode)
    }

    fn new(kind: EntryKind, mode: u32) -> Entry {
        Entry {
            kind,
            mode,
            implicit: false,
        }
    }

    fn implicit_directory() -> Entry {
        Entry {
            kind: EntryKind::Directory,
            mode: IMPLICIT_DIR_MODE,
            implicit: true,
        }
    }

    /// The entry's kind.
    pub fn kind(&self) -> &EntryKind {
        &self.kind
    }

    /// Permission bits (at most `0o7777`).
    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// True when the directory was created only as a missing parent.
    pub fn is_implicit(&self) -> bool {
        self.implicit
    }

    /// The number of data bytes the entry has in the archive.
    fn data_len(&self) -> u64 {
        match &self.kind {
            EntryKind::File(content) => content.len(),
            EntryKind::Symlink(target) => target.len() as u64,
            _ => 0,
        }
    }

    /// Checks everything that does not depend on the rest of the archive.
    fn validate(&self, path: &ArchivePath) -> Result<(), ArchiveError> {
        if self.mode & !0o7777 != 0 {
            return Err(ArchiveError::InvalidMode {
                path: path.to_string(),
                mode: self.mode,
            });
        }
        if let EntryKind::Symlink(target) = &self.kind {
            let reason = if target.is_empty() {
                Some("it is empty")
            } else if target.contains('\0') {
                Some("it contains a NUL byte")
            } else if target.len() > MAX_PATH_LEN {
                Some("it is longer than PATH_MAX")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(ArchiveError::InvalidSymlinkTarget {
                    path: path.to_string(),
                    target: target.clone(),
                    reason,
                });
            }
        }
        let size = self.data_len();
        if size > u64::from(u32::MAX) {
            return Err(ArchiveError::FileTooLarge {
                path: path.to_string(),
                size,
            });
        }
        Ok(())
    }

    /// Same kind, mode and content.
    fn same_as(&self, other: &Entry) -> Result<bool, ArchiveError> {
        if self.mode != other.mode {
            return Ok(false);
        }
        Ok(match (&self.kind, &other.kind) {
            (EntryKind::File(a), EntryKind::File(b)) => a.same_as(b)?,
            (EntryKind::Directory, EntryKind::Directory) => true,
            (EntryKind::Symlink(a), EntryKind::Symlink(b)) => a == b,
            (
                EntryKind::CharDevice { major, minor },
                EntryKind::CharDevice {
                    major: other_major,
                    minor: other_minor,
                },
            )
            | (
                EntryKind::BlockDevice { major, minor },
                EntryKind::BlockDevice {
                    major: other_major,
                    minor: other_minor,
                },
            ) => major == other_major && minor == other_minor,
            _ => false,
        })
    }
}

/// What to do when a path is added that already holds a different entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnConflict {
    Fail,
    Replace,
}

/// A deterministic newc cpio archive under construction.
///
/// ```
/// use initrd::Archive;
/// let mut archive = Archive::new();
/// archive.add_file("init", 0o755, "#!/bin/sh\nexec sh\n")?;
/// archive.add_symlink("bin/sh", "busybox")?;
/// archive.add_char_device("dev/console", 0o600, 5, 1)?;
/// let bytes = archive.write(Vec::new())?;
/// assert!(bytes.starts_with(b"070701"));
/// # Ok::<(), initrd::ArchiveError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Archive {
    entries: BTreeMap<ArchivePath, Entry>,
    mtime: u32,
}

impl Archive {
    /// An empty archive whose entries get mtime 0.
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Sets the mtime written for every entry (e.g. `SOURCE_DATE_EPOCH`).
    pub fn set_mtime(&mut self, mtime: u32) {
        self.mtime = mtime;
    }

    /// The mtime written for every entry.
    pub fn mtime(&self) -> u32 {
        self.mtime
    }

    /// Adds a regular file with in-memory contents. Returns where it was stored.
    pub fn add_file(
        &mut self,
        path: &str,
        mode: u32,
        contents: impl Into<Vec<u8>>,
    ) -> Result<ArchivePath, ArchiveError> {
        self.insert(path, Entry::file(mode, contents))
    }

    /// Adds a regular file whose contents are streamed from `host_path` when the archive is
    /// written.
    pub fn add_host_file(
        &mut self,
        path: &str,
        mode: u32,
        host_path: impl AsRef<Path>,
    ) -> Result<ArchivePath, ArchiveError> {
        self.insert(path, Entry::host_file(mode, host_path)?)
    }

    /// Adds a directory.
    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<ArchivePath, ArchiveError> {
        self.insert(path, Entry::directory(mode))
    }

    /// Adds a symbolic link pointing at `target` (stored verbatim).
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<ArchivePath, ArchiveError> {
        self.insert(path, Entry::symlink(target))
    }

    /// Adds a character device node.
    pub fn add_char_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<ArchivePath, ArchiveError> {
        self.insert(path, Entry::char_device(mode, major, minor))
    }

    /// Adds a block device node.
    pub fn add_block_device(
        &mut self,
        path: &str,
        mode: u32,
        major: u32,
        minor: u32,
    ) -> Result<ArchivePath, ArchiveError> {
        self.insert(path, Entry::block_device(mode, major, minor))
    }

    /// Adds `entry` at `path`. An identical entry already there is fine; a different one is an
    /// [`ArchiveError::Conflict`]. Returns the path where the entry was stored, which differs
    /// from `path` when an ancestor is a symlink inside the archive.
    pub fn insert(&mut self, path: &str, entry: Entry) -> Result<ArchivePath, ArchiveError> {
        self.insert_with(path, entry, OnConflict::Fail)
    }

    /// Adds `entry` at `path`, overwriting whatever is there (except a directory that still has
    /// entries below it).
    pub fn replace(&mut self, path: &str, entry: Entry) -> Result<ArchivePath, ArchiveError> {
        self.insert_with(path, entry, OnConflict::Replace)
    }

    /// The entry stored at `path` (not following a final symlink, but following symlinks in
    /// its ancestors).
    pub fn get(&self, path: &str) -> Option<&Entry> {
        let stored = self.resolve_components(path, false).ok()?;
        self.entries.get(&stored)
    }

    /// Where `path` leads inside the archive when every symlink, including a final one, is
    /// followed, like the kernel would resolve it in the unpacked tree (`..` is allowed here and
    /// never climbs above the root). The result need not exist.
    pub fn resolve(&self, path: &str) -> Result<ArchivePath, ArchiveError> {
        self.resolve_components(path, true)
    }

    /// Number of entries (including implicit directories, excluding the trailer).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in the order they will be written.
    pub fn iter(&self) -> impl Iterator<Item = (&ArchivePath, &Entry)> {
        self.entries.iter()
    }

    fn insert_with(
        &mut self,
        path: &str,
        entry: Entry,
        on_conflict: OnConflict,
    ) -> Result<ArchivePath, ArchiveError> {
        let requested = ArchivePath::new(path).map_err(|reason| ArchiveError::InvalidPath {
            path: path.to_string(),
            reason,
        })?;
        entry.validate(&requested)?;
        let stored = self.resolve_components(requested.as_str(), false)?;
        self.create_parents(&stored)?;
        let Some(existing) = self.entries.get(&stored) else {
            self.entries.insert(stored.clone(), entry);
            return Ok(stored);
        };
        let both_directories = matches!(existing.kind, EntryKind::Directory)
            && matches!(entry.kind, EntryKind::Directory);
        let keep_existing = if both_directories {
            // Directories merge: implicit ones yield to explicit ones, explicit modes must agree.
            if entry.implicit || (!existing.implicit && existing.mode == entry.mode) {
                true
            } else if existing.implicit || on_conflict == OnConflict::Replace {
                false
            } else {
                return Err(ArchiveError::Conflict {
                    path: stored.to_string(),
                    existing: existing.kind.name(),
                });
            }
        } else if existing.same_as(&entry)? {
            true
        } else if on_conflict == OnConflict::Fail {
            return Err(ArchiveError::Conflict {
                path: stored.to_string(),
                existing: existing.kind.name(),
            });
        } else if matches!(existing.kind, EntryKind::Directory) && self.has_descendants(&stored) {
            return Err(ArchiveError::DirectoryNotEmpty {
                path: stored.to_string(),
                new: entry.kind.name(),
            });
        } else {
            false
        };
        if !keep_existing {
            self.entries.insert(stored.clone(), entry);
        }
        Ok(stored)
    }

    fn has_descendants(&self, directory: &ArchivePath) -> bool {
        let start = directory.descendants_start();
        self.entries
            .range(start.clone()..)
            .next()
            .is_some_and(|(key, _)| key.as_str().starts_with(start.as_str()))
    }

    /// Creates missing ancestors of `path` as implicit directories. Expects `path` to have been
    /// resolved already, so every existing ancestor should be a directory.
    fn create_parents(&mut self, path: &ArchivePath) -> Result<(), ArchiveError> {
        let ancestors = path.ancestors();
        // Check first, so that a failed insert leaves the archive unchanged.
        for ancestor in &ancestors {
            match self.entries.get(ancestor).map(Entry::kind) {
                None | Some(EntryKind::Directory) => {}
                Some(other) => {
                    return Err(ArchiveError::NotADirectory {
                        path: path.to_string(),
                        ancestor: ancestor.to_string(),
                        kind: other.name(),
                    })
                }
            }
        }
        for ancestor in ancestors {
            self.entries
                .entry(ancestor)
                .or_insert_with(Entry::implicit_directory);
        }
        Ok(())
    }

    /// Walks `path` through the archive's symlinks the way the kernel would walk the unpacked
    /// tree: relative targets are relative to the link's directory, absolute ones to the
    /// archive root, and `..` never climbs above the root.
    fn resolve_components(
        &self,
        path: &str,
        follow_last: bool,
    ) -> Result<ArchivePath, ArchiveError> {
        if path.contains('\0') {
            return Err(ArchiveError::InvalidPath {
                path: path.to_string(),
                reason: crate::error::PathError::Nul,
            });
        }
        let mut pending: VecDeque<String> = path.split('/').map(str::to_string).collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut follows = 0;
        while let Some(component) = pending.pop_front() {
            match component.as_str() {
                "" | "." => continue,
                ".." => {
                    resolved.pop();
                    continue;
                }
                _ => {}
            }
            resolved.push(component);
            let is_last = pending.iter().all(|c| c.is_empty() || c == ".");
            let here = ArchivePath::from_components(resolved.iter().map(String::as_str)).map_err(
                |reason| ArchiveError::InvalidPath {
                    path: path.to_string(),
                    reason,
                },
            )?;
            match self.entries.get(&here).map(|entry| &entry.kind) {
                None | Some(EntryKind::Directory) => {}
                Some(EntryKind::Symlink(_)) if is_last && !follow_last => {}
                Some(EntryKind::Symlink(target)) => {
                    follows += 1;
                    if follows > MAX_SYMLINK_FOLLOWS {
                        return Err(ArchiveError::SymlinkLoop {
                            path: path.to_string(),
                        });
                    }
                    resolved.pop();
                    if target.starts_with('/') {
                        resolved.clear();
                    }
                    for part in target.split('/').rev() {
                        pending.push_front(part.to_string());
                    }
                }
                Some(_) if is_last => {}
                Some(other) => {
                    return Err(ArchiveError::NotADirectory {
                        path: path.to_string(),
                        ancestor: here.to_string(),
                        kind: other.name(),
                    })
                }
            }
        }
        ArchivePath::from_components(resolved.iter().map(String::as_str)).map_err(|reason| {
            ArchiveError::InvalidPath {
                path: path.to_string(),
                reason,
            }
        })
    }

    /// Writes the archive, including the `TRAILER!!!` record, to `out` and returns it.
    ///
    /// File contents are streamed: in-memory files are written from their buffer and host
    /// files are copied from disk, so the archive is never held twice.
    pub fn write<W: Write>(&self, out: W) -> Result<W, ArchiveError> {
        let subdirectory_counts = self.subdirectory_counts();
        let mut out = BufWriter::with_capacity(128 * 1024, out);
        let mut inode: u32 = 1;
        for (path, entry) in &self.entries {
            let (rdev_major, rdev_minor) = match entry.kind {
                EntryKind::CharDevice { major, minor }
                | EntryKind::BlockDevice { major, minor } => (major, minor),
                _ => (0, 0),
            };
            let nlink = match entry.kind {
                // A directory is linked from its parent, from its own `.` and from each
                // subdirectory's `..`.
                EntryKind::Directory => {
                    2u32.saturating_add(subdirectory_counts.get(path).copied().unwrap_or(0))
                }
                _ => 1,
            };
            let data_len =
                u32::try_from(entry.data_len()).map_err(|_| ArchiveError::FileTooLarge {
                    path: path.to_string(),
                    size: entry.data_len(),
                })?;
            let header = Header {
                inode,
                mode: entry.kind.type_bits() | entry.mode,
                nlink,
                mtime: self.mtime,
                file_size: data_len,
                rdev_major,
                rdev_minor,
                name: path.as_str(),
            };
            header.write(&mut out).map_err(ArchiveError::Write)?;
            match &entry.kind {
                EntryKind::File(content) => write_content(content, &mut out)?,
                EntryKind::Symlink(target) => {
                    out.write_all(target.as_bytes())
                        .map_err(ArchiveError::Write)?;
                }
                _ => {}
            }
            write_padding(&mut out, u64::from(data_len)).map_err(ArchiveError::Write)?;
            inode = inode.wrapping_add(1);
        }
        Header::trailer()
            .write(&mut out)
            .map_err(ArchiveError::Write)?;
        out.into_inner()
            .map_err(|error| ArchiveError::Write(error.into_error()))
    }

    /// The archive as bytes; convenient for small archives and tests.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ArchiveError> {
        self.write(Vec::new())
    }

    fn subdirectory_counts(&self) -> BTreeMap<ArchivePath, u32> {
        let mut counts = BTreeMap::new();
        for (path, entry) in &self.entries {
            if let (EntryKind::Directory, Some(parent)) = (&entry.kind, path.parent()) {
                *counts.entry(parent).or_insert(0u32) += 1;
            }
        }
        counts
    }
}

/// Parses a `SOURCE_DATE_EPOCH` value into a newc mtime.
pub fn parse_source_date_epoch(value: &str) -> Result<u32, ArchiveError> {
    let seconds: u64 = value
        .trim()
        .parse()
        .map_err(|_| ArchiveError::InvalidSourceDateEpoch(value.to_string()))?;
    u32::try_from(seconds).map_err(|_| ArchiveError::MtimeOutOfRange(seconds))
}

/// Streams a file's bytes, checking that a host file still has the size it was added with.
fn write_content(content: &FileContent, out: &mut impl Write) -> Result<(), ArchiveError> {
    match content {
        FileContent::Bytes(bytes) => out.write_all(bytes).map_err(ArchiveError::Write),
        FileContent::Host { path, len } => {
            let host_error = |source| ArchiveError::HostIo {
                path: path.clone(),
                source,
            };
            let file = File::open(path).map_err(host_error)?;
            let actual = file.metadata().map_err(host_error)?.len();
            if actual != *len {
                return Err(ArchiveError::HostFileChanged {
                    path: path.clone(),
                    expected: *len,
                    actual,
                });
            }
            let copied = copy_exactly(file.take(*len), out).map_err(|error| match error {
                CopyError::Read(source) => host_error(source),
                CopyError::Write(source) => ArchiveError::Write(source),
            })?;
            if copied != *len {
                return Err(ArchiveError::HostFileChanged {
                    path: path.clone(),
                    expected: *len,
                    actual: copied,
                });
            }
            Ok(())
        }
    }
}

enum CopyError {
    Read(io::Error),
    Write(io::Error),
}

/// Like `io::copy`, but tells read errors (the host file) from write errors (the output).
fn copy_exactly(mut reader: impl Read, out: &mut impl Write) -> Result<u64, CopyError> {
    let mut buffer = vec![0u8; 128 * 1024];
    let mut copied = 0u64;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(CopyError::Read(error)),
        };
        out.write_all(&buffer[..read]).map_err(CopyError::Write)?;
        copied += read as u64;
    }
}

/// Pads to the next multiple of four bytes, as newc requires after headers and data.
fn write_padding(out: &mut impl Write, written: u64) -> io::Result<()> {
    let padding = (4 - (written % 4) as usize) % 4;
    out.write_all(&[0u8; 3][..padding])
}

/// One newc header plus name.
struct Header<'a> {
    inode: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    file_size: u32,
    rdev_major: u32,
    rdev_minor: u32,
    name: &'a str,
}

impl Header<'_> {
    fn trailer() -> Header<'static> {
        Header {
            inode: 0,
            mode: 0,
            nlink: 1,
            mtime: 0,
            file_size: 0,
            rdev_major: 0,
            rdev_minor: 0,
            name: "TRAILER!!!",
        }
    }

    fn write(&self, out: &mut impl Write) -> io::Result<()> {
        // The name length includes its terminating NUL.
        let name_size = u32::try_from(self.name.len() + 1)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "cpio name too long"))?;
        let fields = [
            self.inode,
            self.mode,
            0, // uid
            0, // gid
            self.nlink,
            self.mtime,
            self.file_size,
            0, // devmajor: the device holding the file means nothing in an archive
            0, // devminor
            self.rdev_major,
            self.rdev_minor,
            name_size,
            0, // check: only used by the "070702" crc format
        ];
        let mut header = String::with_capacity(HEADER_LEN);
        header.push_str("070701");
        for field in fields {
            header.push_str(&format!("{field:08X}"));
        }
        debug_assert_eq!(header.len(), HEADER_LEN);
        out.write_all(header.as_bytes())?;
        out.write_all(self.name.as_bytes())?;
        out.write_all(&[0])?;
        write_padding(out, (HEADER_LEN + self.name.len() + 1) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal newc reader for checking what the writer produced.
    #[derive(Debug, PartialEq)]
    struct Record {
        inode: u32,
        mode: u32,
        uid: u32,
        gid: u32,
        nlink: u32,
        mtime: u32,
        rdev: (u32, u32),
        name: String,
        data: Vec<u8>,
    }

    fn parse(bytes: &[u8]) -> Vec<Record> {
        let mut records = Vec::new();
        let mut offset = 0;
        loop {
            assert_eq!(offset % 4, 0, "record must start aligned");
            assert_eq!(&bytes[offset..offset + 6], b"070701");
            let field = |index: usize| {
                let start = offset + 6 + index * 8;
                let text = std::str::from_utf8(&bytes[start..start + 8]).unwrap();
                u32::from_str_radix(text, 16).unwrap()
            };
            let name_size = field(11) as usize;
            let file_size = field(6) as usize;
            let name_start = offset + HEADER_LEN;
            let name = std::str::from_utf8(&bytes[name_start..name_start + name_size - 1])
                .unwrap()
                .to_string();
            assert_eq!(bytes[name_start + name_size - 1], 0);
            let data_start = (name_start + name_size).div_ceil(4) * 4;
            let data = bytes[data_start..data_start + file_size].to_vec();
            let record = Record {
                inode: field(0),
                mode: field(1),
                uid: field(2),
                gid: field(3),
                nlink: field(4),
                mtime: field(5),
                rdev: (field(9), field(10)),
                name,
                data,
            };
            offset = (data_start + file_size).div_ceil(4) * 4;
            let done = record.name == "TRAILER!!!";
            records.push(record);
            if done {
                assert_eq!(offset, bytes.len(), "nothing after the trailer");
                return records;
            }
        }
    }

    fn names(archive: &Archive) -> Vec<String> {
        archive.iter().map(|(path, _)| path.to_string()).collect()
    }

    #[test]
    fn writes_sorted_entries_with_implicit_parents_and_trailer() {
        let mut archive = Archive::new();
        archive.add_file("usr/bin/tool", 0o755, "abc").unwrap();
        archive.add_symlink("bin", "usr/bin").unwrap();
        archive.add_char_device("dev/console", 0o600, 5, 1).unwrap();
        archive.add_dir("/etc/", 0o700).unwrap();
        let records = parse(&archive.to_bytes().unwrap());
        let names: Vec<_> = records.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "dev",
                "dev/console",
                "etc",
                "usr",
                "usr/bin",
                "usr/bin/tool",
                "TRAILER!!!"
            ]
        );
        let by_name = |name: &str| records.iter().find(|r| r.name == name).unwrap();
        assert_eq!(by_name("bin").mode, 0o120_777);
        assert_eq!(by_name("bin").data, b"usr/bin");
        assert_eq!(by_name("dev").mode, 0o040_755);
        assert_eq!(by_name("dev/console").mode, 0o020_600);
        assert_eq!(by_name("dev/console").rdev, (5, 1));
        assert_eq!(by_name("etc").mode, 0o040_700);
        assert_eq!(by_name("usr/bin/tool").mode, 0o100_755);
        assert_eq!(by_name("usr/bin/tool").data, b"abc");
        assert_eq!(by_name("usr/bin/tool").nlink, 1);
        assert_eq!(by_name("usr").nlink, 3, "usr has one subdirectory");
        assert_eq!(by_name("usr/bin").nlink, 2);
        for (index, record) in records[..records.len() - 1].iter().enumerate() {
            assert_eq!(record.inode, index as u32 + 1);
            assert_eq!((record.uid, record.gid, record.mtime), (0, 0, 0));
        }
        let trailer = records.last().unwrap();
        assert_eq!((trailer.inode, trailer.mode, trailer.nlink), (0, 0, 1));
    }

    #[test]
    fn mtime_and_source_date_epoch() {
        let mut archive = Archive::new();
        archive.set_mtime(parse_source_date_epoch("1700000000\n").unwrap());
        archive.add_file("a", 0o644, "x").unwrap();
        let records = parse(&archive.to_bytes().unwrap());
        assert_eq!(records[0].mtime, 1_700_000_000);
        assert!(matches!(
            parse_source_date_epoch("99999999999"),
            Err(ArchiveError::MtimeOutOfRange(99_999_999_999))
        ));
        assert!(matches!(
            parse_source_date_epoch("-1"),
            Err(ArchiveError::InvalidSourceDateEpoch(_))
        ));
    }

    #[test]
    fn same_inputs_in_any_order_give_identical_bytes() {
        let mut first = Archive::new();
        first.add_file("b/file", 0o644, "1").unwrap();
        first.add_symlink("a", "b").unwrap();
        first.add_dir("c", 0o755).unwrap();
        let mut second = Archive::new();
        second.add_dir("c", 0o755).unwrap();
        second.add_symlink("a", "b").unwrap();
        second.add_file("b/file", 0o644, "1").unwrap();
        assert_eq!(first.to_bytes().unwrap(), second.to_bytes().unwrap());
    }

    #[test]
    fn padding_is_correct_for_every_name_and_data_length() {
        let mut archive = Archive::new();
        for length in 1..=9 {
            let name = "n".repeat(length);
            archive.add_file(&name, 0o644, vec![b'x'; length]).unwrap();
        }
        let records = parse(&archive.to_bytes().unwrap());
        assert_eq!(records.len(), 10);
        for record in &records[..9] {
            assert_eq!(record.data.len(), record.name.len());
        }
    }

    #[test]
    fn rejects_invalid_paths_modes_and_targets() {
        let mut archive = Archive::new();
        for bad in ["", "/", "a/../b", "a\0b"] {
            assert!(
                matches!(
                    archive.add_file(bad, 0o644, "x"),
                    Err(ArchiveError::InvalidPath { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(matches!(
            archive.add_file("x", 0o100_644, "x"),
            Err(ArchiveError::InvalidMode { .. })
        ));
        assert!(matches!(
            archive.add_symlink("l", ""),
            Err(ArchiveError::InvalidSymlinkTarget { .. })
        ));
        assert!(matches!(
            archive.add_symlink("l", "a\0b"),
            Err(ArchiveError::InvalidSymlinkTarget { .. })
        ));
        assert!(archive.is_empty(), "failed inserts leave nothing behind");
    }

    #[test]
    fn setuid_and_sticky_bits_are_kept() {
        let mut archive = Archive::new();
        archive.add_file("bin/su", 0o4755, "x").unwrap();
        archive.add_dir("tmp", 0o1777).unwrap();
        assert_eq!(archive.get("bin/su").unwrap().mode(), 0o4755);
        let records = parse(&archive.to_bytes().unwrap());
        let tmp = records.iter().find(|r| r.name == "tmp").unwrap();
        assert_eq!(tmp.mode, 0o041_777);
    }

    #[test]
    fn duplicate_identical_is_fine_different_is_conflict_replace_overwrites() {
        let mut archive = Archive::new();
        archive.add_file("etc/hostname", 0o644, "node1").unwrap();
        archive.add_file("etc/hostname", 0o644, "node1").unwrap();
        let conflict = archive.add_file("etc/hostname", 0o644, "node2");
        assert!(matches!(conflict, Err(ArchiveError::Conflict { .. })));
        let mode_conflict = archive.add_file("etc/hostname", 0o600, "node1");
        assert!(matches!(mode_conflict, Err(ArchiveError::Conflict { .. })));
        archive
            .replace("etc/hostname", Entry::file(0o600, "node2"))
            .unwrap();
        let entry = archive.get("etc/hostname").unwrap();
        assert_eq!(entry.mode(), 0o600);
        assert!(
            matches!(entry.kind(), EntryKind::File(FileContent::Bytes(b)) if &b[..] == b"node2")
        );
    }

    #[test]
    fn host_file_equal_to_bytes_is_not_a_conflict() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("f");
        std::fs::write(&host, "same").unwrap();
        let mut archive = Archive::new();
        archive.add_file("f", 0o644, "same").unwrap();
        archive.add_host_file("f", 0o644, &host).unwrap();
        std::fs::write(&host, "diff").unwrap();
        assert!(matches!(
            archive.add_host_file("f", 0o644, &host),
            Err(ArchiveError::Conflict { .. })
        ));
    }

    #[test]
    fn directories_merge_and_explicit_mode_wins_over_implicit() {
        let mut archive = Archive::new();
        archive.add_file("var/lib/x", 0o644, "").unwrap();
        assert!(archive.get("var").unwrap().is_implicit());
        archive.add_dir("var", 0o700).unwrap();
        assert_eq!(archive.get("var").unwrap().mode(), 0o700);
        archive.add_file("var/y", 0o644, "").unwrap();
        assert_eq!(archive.get("var").unwrap().mode(), 0o700, "stays explicit");
        assert!(matches!(
            archive.add_dir("var", 0o755),
            Err(ArchiveError::Conflict { .. })
        ));
        archive.replace("var", Entry::directory(0o755)).unwrap();
        assert_eq!(archive.get("var").unwrap().mode(), 0o755);
    }

    #[test]
    fn non_empty_directory_cannot_become_a_file() {
        let mut archive = Archive::new();
        archive.add_file("lib/x", 0o644, "").unwrap();
        assert!(matches!(
            archive.add_symlink("lib", "usr/lib"),
            Err(ArchiveError::Conflict { .. })
        ));
        assert!(matches!(
            archive.replace("lib", Entry::symlink("usr/lib")),
            Err(ArchiveError::DirectoryNotEmpty { .. })
        ));
        archive.add_dir("empty", 0o755).unwrap();
        archive.replace("empty", Entry::symlink("lib")).unwrap();
    }

    #[test]
    fn entries_below_an_archive_symlink_land_at_its_target() {
        let mut archive = Archive::new();
        archive.add_symlink("lib", "usr/lib").unwrap();
        archive.add_symlink("usr/lib64", "/usr/lib").unwrap();
        let stored = archive.add_file("lib/modules/a.ko", 0o644, "").unwrap();
        assert_eq!(stored.as_str(), "usr/lib/modules/a.ko");
        let stored = archive.add_file("usr/lib64/b", 0o644, "").unwrap();
        assert_eq!(stored.as_str(), "usr/lib/b");
        assert_eq!(
            names(&archive),
            [
                "lib",
                "usr",
                "usr/lib",
                "usr/lib/b",
                "usr/lib/modules",
                "usr/lib/modules/a.ko",
                "usr/lib64"
            ]
        );
        assert_eq!(archive.resolve("lib/b").unwrap().as_str(), "usr/lib/b");
        assert_eq!(archive.resolve("lib").unwrap().as_str(), "usr/lib");
        assert_eq!(
            archive.resolve("/lib/../lib64/b").unwrap().as_str(),
            "usr/lib/b"
        );
        assert_eq!(archive.resolve("lib/..").unwrap().as_str(), "usr");
        assert!(matches!(
            archive.resolve("lib/../.."),
            Err(ArchiveError::InvalidPath { .. })
        ));
        assert!(archive.get("lib/modules/a.ko").is_some());
        assert!(matches!(
            archive.get("lib").unwrap().kind(),
            EntryKind::Symlink(_)
        ));
    }

    #[test]
    fn symlink_targets_climbing_above_root_stay_at_root() {
        let mut archive = Archive::new();
        archive.add_symlink("up", "../../..").unwrap();
        assert_eq!(archive.add_file("up/x", 0o644, "").unwrap().as_str(), "x");
    }

    #[test]
    fn symlink_loops_and_files_as_parents_are_errors() {
        let mut archive = Archive::new();
        archive.add_symlink("a", "b").unwrap();
        archive.add_symlink("b", "a").unwrap();
        assert!(matches!(
            archive.add_file("a/x", 0o644, ""),
            Err(ArchiveError::SymlinkLoop { .. })
        ));
        archive.add_file("f", 0o644, "").unwrap();
        assert!(matches!(
            archive.add_file("f/x", 0o644, ""),
            Err(ArchiveError::NotADirectory { .. })
        ));
    }

    #[test]
    fn host_files_are_streamed_and_size_changes_detected() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("big");
        let contents: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&host, &contents).unwrap();
        let mut archive = Archive::new();
        archive.add_host_file("big", 0o644, &host).unwrap();
        let records = parse(&archive.to_bytes().unwrap());
        assert_eq!(records[0].data, contents);
        std::fs::write(&host, b"short").unwrap();
        assert!(matches!(
            archive.to_bytes(),
            Err(ArchiveError::HostFileChanged { .. })
        ));
        assert!(matches!(
            Entry::host_file(0o644, dir.path()),
            Err(ArchiveError::HostNotRegularFile { .. })
        ));
        assert!(matches!(
            Entry::host_file(0o644, dir.path().join("missing")),
            Err(ArchiveError::HostIo { .. })
        ));
    }

    #[test]
    fn files_of_4_gib_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("sparse");
        let file = File::create(&host).unwrap();
        file.set_len(u64::from(u32::MAX) + 1).unwrap();
        let mut archive = Archive::new();
        assert!(matches!(
            archive.add_host_file("sparse", 0o644, &host),
            Err(ArchiveError::FileTooLarge { size, .. }) if size == 1 << 32
        ));
    }

    #[test]
    fn write_errors_are_reported() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut archive = Archive::new();
        archive.add_file("x", 0o644, vec![0u8; 300_000]).unwrap();
        assert!(matches!(archive.write(Broken), Err(ArchiveError::Write(_))));
    }
}
