//! The contract between the protocol side ([`crate::ops`], [`crate::server`]) and the file side
//! ([`crate::exports`] over [`crate::index`]). The protocol side only ever sees these types; the
//! file side never sees XDR.
//!
//! Everything a client can observe about an object (handle, fileid, attributes, readdir
//! cookies) must be a function of the tree's *content*, never of where a copy of it is stored:
//! that is what keeps handles valid when another copy of the tree is served (design §2–3).

use std::fmt;

/// Length of every handle we hand out (design §2.2). Clients send back what they got; anything
/// of another length is not ours.
pub const HANDLE_LEN: usize = 36;

/// NFSv3 limit on handle length (`NFS3_FHSIZE`, RFC 1813 §2.4).
pub const NFS3_FHSIZE: usize = 64;

/// An opaque NFSv3 file handle as we issue it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileHandle(pub [u8; HANDLE_LEN]);

impl FileHandle {
    /// The handle in `bytes`, if it has our length (format checks are the file side's job).
    pub fn from_slice(bytes: &[u8]) -> Option<FileHandle> {
        bytes.try_into().ok().map(FileHandle)
    }

    pub fn as_bytes(&self) -> &[u8; HANDLE_LEN] {
        &self.0
    }
}

impl fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fh:")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// `ftype3` (RFC 1813 §2.5); the discriminants are the wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum FileType {
    Regular = 1,
    Directory = 2,
    BlockDevice = 3,
    CharDevice = 4,
    Symlink = 5,
    Socket = 6,
    Fifo = 7,
}

/// `nfstime3`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NfsTime {
    pub seconds: u32,
    pub nseconds: u32,
}

/// `fattr3`, already computed by the file side by the rules of design §3.2 (mode keeps setuid,
/// setgid and sticky; nlink counts names in the export; fileid derived from the handle; ctime and
/// atime equal to mtime; canonical directory sizes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub ftype: FileType,
    /// Permission bits only: `st_mode & 0o7777`.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub used: u64,
    /// (major, minor) for device nodes, else (0, 0).
    pub rdev: (u32, u32),
    pub fsid: u64,
    pub fileid: u64,
    pub atime: NfsTime,
    pub mtime: NfsTime,
    pub ctime: NfsTime,
}

/// `nfsstat3` error values the file side may return (RFC 1813 §2.6). `Ok` is not an error and
/// is not here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum NfsError {
    Perm = 1,
    NoEnt = 2,
    Io = 5,
    Acces = 13,
    NotDir = 20,
    IsDir = 21,
    Inval = 22,
    Rofs = 30,
    NameTooLong = 63,
    Stale = 70,
    BadHandle = 10001,
    NotSupp = 10004,
    TooSmall = 10005,
    ServerFault = 10006,
    /// The export is not ready yet (index being built): the client waits and retries.
    Jukebox = 10008,
}

/// `mountstat3` error values (RFC 1813 §5.1.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum MountError {
    Perm = 1,
    NoEnt = 2,
    Io = 5,
    Acces = 13,
    NotDir = 20,
    Inval = 22,
    NameTooLong = 63,
    NotSupp = 10004,
    ServerFault = 10006,
}

/// One directory entry as READDIR/READDIRPLUS return it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    /// Resume point: the next call with this cookie returns the entries after this one. Stable
    /// across restarts, copies and version switches (design §1.4). `.` is 1, `..` is 2, all
    /// others are ≥ 3.
    pub cookie: u64,
    /// Raw name bytes (never empty, never contains `/` or NUL).
    pub name: Vec<u8>,
    pub handle: FileHandle,
    pub attr: Attributes,
}

/// `fsstat3` totals (the attributes are returned beside them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStat {
    pub tbytes: u64,
    pub fbytes: u64,
    pub abytes: u64,
    pub tfiles: u64,
    pub ffiles: u64,
    pub afiles: u64,
}

/// The file side. Implementations must be cheap for every method but [`Filesystem::read`]
/// (answered from memory: the protocol side calls them inline on its async tasks); `read` may
/// block on disk and is called from a blocking thread.
pub trait Filesystem: Send + Sync + 'static {
    /// MOUNT MNT: the root handle of the export at `path` (e.g. `/images/debian12`).
    fn mount(&self, path: &[u8]) -> Result<FileHandle, MountError>;

    /// MOUNT EXPORT: the exported paths.
    fn export_paths(&self) -> Vec<Vec<u8>>;

    fn getattr(&self, fh: &FileHandle) -> Result<Attributes, NfsError>;

    /// LOOKUP of `name` in directory `dir`, including `.` and `..` (the root's `..` is the
    /// root). `name` is raw bytes from the wire: the implementation refuses empty names and names
    /// with `/` or NUL (`NoEnt`) and names over 255 bytes (`NameTooLong`).
    fn lookup(&self, dir: &FileHandle, name: &[u8]) -> Result<(FileHandle, Attributes), NfsError>;

    /// READLINK: the target bytes as stored.
    fn readlink(&self, fh: &FileHandle) -> Result<Vec<u8>, NfsError>;

    /// Entries of `dir` whose cookie is greater than `after` (0 = from the start, which begins
    /// with `.` and `..`), in cookie order, at most `max_entries` of them; the bool is true when
    /// the listing is exhausted after the returned entries. The protocol side asks for a few more
    /// than it expects to fit and stops when its byte budget is spent.
    fn readdir(
        &self,
        dir: &FileHandle,
        after: u64,
        max_entries: usize,
    ) -> Result<(Vec<DirEntry>, bool), NfsError>;

    /// READ up to `buf.len()` bytes at `offset` into `buf`: (bytes read, eof, attributes after).
    /// Reads of non-regular files are `Inval`. May block.
    fn read(
        &self,
        fh: &FileHandle,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(usize, bool, Attributes), NfsError>;

    /// FSSTAT of the export that `fh` belongs to.
    fn fsstat(&self, fh: &FileHandle) -> Result<(Attributes, FsStat), NfsError>;
}
