//! [`RootDir`]: files served from one directory, with the kernel enforcing confinement.
//!
//! Every lookup is made with `openat2(2)` and `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` relative to
//! the root: the kernel refuses any resolution that would leave the root, whether by `..` or by a
//! symlink (absolute, or relative with too many `..`), and refuses `/proc` magic links. Symlinks
//! that stay inside the root are followed, so a root that links `ipxe.efi -> ipxe/ipxe-1.21.efi`
//! works. A symlink to a file outside the root (say `/usr/lib/ipxe/ipxe.efi`) is refused and
//! logged: copy the file, or bind-mount its directory inside the root. Mount points inside the
//! root are crossed.
//!
//! On kernels without `openat2` (before 5.6, or a seccomp filter returning `ENOSYS`) the path is
//! walked one component at a time with `O_NOFOLLOW`, which refuses every symlink: stricter, never
//! looser.
//!
//! Files are opened with `O_NONBLOCK` so that a FIFO in the root cannot hang the opener (it is
//! then refused as not a regular file), and `O_NOCTTY` so a terminal device cannot become ours.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use super::path::TftpPath;
use super::source::{regular_len, SourceError, TftpContent, TftpSource};

/// A directory served read-only.
#[derive(Clone, Debug)]
pub struct RootDir {
    root: PathBuf,
    /// Tests force the component walk that older kernels get.
    walk_only: bool,
}

impl RootDir {
    /// Serves `root`, which must be an existing directory. The directory is opened again for
    /// each request, so it may be replaced (e.g. a symlink switched to a new tree) while serving.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<RootDir> {
        let root = root.into();
        let meta = std::fs::metadata(&root)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        Ok(RootDir {
            root,
            walk_only: false,
        })
    }

    /// The directory served.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Opens `path` beneath the root: a regular file, or an error saying why not.
    pub fn open_file(&self, path: &TftpPath) -> Result<File, SourceError> {
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&self.root)?;
        let fd = if !self.walk_only && openat2_available() {
            match openat2_beneath(dir.as_raw_fd(), path.as_str()) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                    OPENAT2.store(NO, Ordering::Relaxed);
                    walk_nofollow(dir.into(), path)
                }
                other => other,
            }
        } else {
            walk_nofollow(dir.into(), path)
        };
        let file = File::from(fd.map_err(classify)?);
        // Checked on the open descriptor: the only race-free way to know what was opened.
        regular_len(&file)?;
        Ok(file)
    }

    #[cfg(test)]
    fn walk_only(mut self) -> Self {
        self.walk_only = true;
        self
    }
}

impl TftpSource for RootDir {
    fn open(&self, path: &TftpPath, _client: SocketAddr) -> Result<TftpContent, SourceError> {
        TftpContent::from_file(self.open_file(path)?)
    }
}

const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;
static OPENAT2: AtomicU8 = AtomicU8::new(UNKNOWN);

fn openat2_available() -> bool {
    OPENAT2.load(Ordering::Relaxed) != NO
}

/// `struct open_how` of linux/openat2.h (libc's is `non_exhaustive`, so it cannot be built here).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const FILE_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;

fn openat2_beneath(dir: RawFd, path: &str) -> io::Result<OwnedFd> {
    let cpath = CString::new(path).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let how = OpenHow {
        flags: FILE_FLAGS as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    };
    // EAGAIN: a concurrent rename or mount made the kernel give up a RESOLVE_BENEATH walk; it
    // asks for a retry.
    let mut attempts = 0;
    loop {
        // SAFETY: `cpath` is NUL-terminated and `how` is a live open_how of the size passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                cpath.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if r >= 0 {
            OPENAT2.store(YES, Ordering::Relaxed);
            // SAFETY: the kernel returned a new descriptor that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) if attempts < 8 => attempts += 1,
            _ => return Err(e),
        }
    }
}

/// The fallback: one `openat` per component, never following a symlink.
fn walk_nofollow(mut dir: OwnedFd, path: &TftpPath) -> io::Result<OwnedFd> {
    let mut parts = path.components().peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        let flags = if last {
            FILE_FLAGS | libc::O_NOFOLLOW
        } else {
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC
        };
        let cpart = CString::new(part).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `dir` is an open descriptor and `cpart` NUL-terminated.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), cpart.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor from the kernel.
        dir = unsafe { OwnedFd::from_raw_fd(fd) };
    }
    Ok(dir)
}

/// Maps an open error to what the client is told and the reason logged.
fn classify(e: io::Error) -> SourceError {
    match e.raw_os_error() {
        Some(libc::ENOENT | libc::ENOTDIR) => SourceError::NotFound,
        Some(libc::EXDEV) => SourceError::Denied("path resolves outside the root (symlink)"),
        Some(libc::ELOOP) => {
            SourceError::Denied("symlink not followed (loop, magic link or no openat2)")
        }
        Some(libc::ENXIO) => SourceError::Denied("not a regular file"),
        _ => SourceError::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Lab {
        _tmp: tempfile::TempDir,
        root: PathBuf,
    }

    /// ROOT/{a.txt, sub/b.txt, in-link -> sub/b.txt, sub/up-link -> ../a.txt,
    /// abs-out -> OUTSIDE/secret, rel-out -> ../outside/secret, dir-out -> ../outside, fifo, sub}
    fn lab() -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"SECRET").unwrap();
        std::fs::write(root.join("a.txt"), b"A").unwrap();
        std::fs::write(root.join("sub/b.txt"), b"BB").unwrap();
        symlink("sub/b.txt", root.join("in-link")).unwrap();
        symlink("../a.txt", root.join("sub/up-link")).unwrap();
        symlink(outside.join("secret"), root.join("abs-out")).unwrap();
        symlink("../outside/secret", root.join("rel-out")).unwrap();
        symlink("../outside", root.join("dir-out")).unwrap();
        let fifo = CString::new(root.join("fifo").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        Lab { _tmp: tmp, root }
    }

    fn p(s: &str) -> TftpPath {
        TftpPath::parse(s.as_bytes()).unwrap()
    }

    fn read(dir: &RootDir, s: &str) -> Result<Vec<u8>, SourceError> {
        use std::io::Read;
        let mut f = dir.open_file(&p(s))?;
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        Ok(v)
    }

    fn check_common(dir: &RootDir) {
        assert_eq!(read(dir, "a.txt").unwrap(), b"A");
        assert_eq!(read(dir, "/sub/b.txt").unwrap(), b"BB");
        assert!(matches!(read(dir, "nope"), Err(SourceError::NotFound)));
        assert!(matches!(read(dir, "a.txt/x"), Err(SourceError::NotFound)));
        for escape in ["abs-out", "rel-out", "dir-out/secret"] {
            match read(dir, escape) {
                Err(SourceError::Denied(_)) | Err(SourceError::NotFound) => {}
                other => panic!("{escape}: {other:?}"),
            }
        }
        assert!(matches!(
            read(dir, "sub"),
            Err(SourceError::Denied("a directory"))
        ));
        assert!(matches!(
            read(dir, "fifo"),
            Err(SourceError::Denied("a FIFO"))
        ));
    }

    #[test]
    fn openat2_confines_and_follows_inner_links() {
        let lab = lab();
        let dir = RootDir::new(&lab.root).unwrap();
        check_common(&dir);
        assert_eq!(read(&dir, "in-link").unwrap(), b"BB");
        assert_eq!(read(&dir, "sub/up-link").unwrap(), b"A");
        assert!(matches!(read(&dir, "abs-out"), Err(SourceError::Denied(_))));
        assert!(matches!(read(&dir, "rel-out"), Err(SourceError::Denied(_))));
    }

    #[test]
    fn fallback_walk_refuses_every_symlink() {
        let lab = lab();
        let dir = RootDir::new(&lab.root).unwrap().walk_only();
        check_common(&dir);
        assert!(read(&dir, "in-link").is_err());
        assert!(read(&dir, "sub/up-link").is_err());
    }

    #[test]
    fn root_must_be_a_directory() {
        let lab = lab();
        assert!(RootDir::new(lab.root.join("a.txt")).is_err());
        assert!(RootDir::new(lab.root.join("missing")).is_err());
    }
}
