//! The disk edge of the file side (design §3.4, §5.2): opening files beneath a version root
//! without ever following a symlink, reading at an offset, and a bounded LRU cache of open fds
//! keyed by `(version, node)` so an fd of one version is never used for another.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Raise the soft RLIMIT_NOFILE to the hard limit (the fd cache and the walk want fds; the
/// default soft limit of 1024 is a leftover of select(2)). Returns (soft, hard) after.
pub fn raise_nofile_limit() -> io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Open a directory (a version root) as an fd to resolve beneath.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid C string.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Set once openat2 answered ENOSYS (old kernel or a seccomp filter), so we stop asking.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// `O_NONBLOCK`: a FIFO swapped in for an indexed regular file (a live host export can change
/// under us) must not block the opener; it is refused right after by [`ensure_regular`].
const BASE_FLAGS: libc::c_int =
    libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;

/// Open the regular file at `relpath` beneath `root` read-only. No component may be a symlink
/// and the path may not leave `root` (the tree can change under us after it was indexed: a
/// directory replaced by a symlink to `/etc` must not be followed). `O_NOATIME` avoids an inode
/// write per open on the master; it needs ownership or CAP_FOWNER, hence the EPERM retry.
pub fn open_beneath(root: BorrowedFd<'_>, relpath: &[u8]) -> io::Result<OwnedFd> {
    let fd = open_beneath_any(root, relpath)?;
    ensure_regular(&fd)?;
    Ok(fd)
}

/// Refuses anything but a regular file (devices, FIFOs and sockets are never read over NFS).
fn ensure_regular(fd: &OwnedFd) -> io::Result<()> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: fstat on a valid fd into a properly sized buffer.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat succeeded, so the buffer is initialised.
    let mode = unsafe { st.assume_init() }.st_mode;
    if mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file (changed since it was indexed)",
        ));
    }
    Ok(())
}

fn open_beneath_any(root: BorrowedFd<'_>, relpath: &[u8]) -> io::Result<OwnedFd> {
    check_relpath(relpath)?;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        match openat2_beneath(root, relpath, BASE_FLAGS | libc::O_NOATIME) {
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                return openat2_beneath(root, relpath, BASE_FLAGS)
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            other => return other,
        }
    }
    open_by_components(root, relpath)
}

fn check_relpath(relpath: &[u8]) -> io::Result<()> {
    let bad = relpath.is_empty()
        || relpath.contains(&0)
        || relpath
            .split(|&b| b == b'/')
            .any(|c| c.is_empty() || c == b"." || c == b"..");
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a clean relative path",
        ));
    }
    Ok(())
}

fn openat2_beneath(
    root: BorrowedFd<'_>,
    relpath: &[u8],
    flags: libc::c_int,
) -> io::Result<OwnedFd> {
    let c = CString::new(relpath).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let how = OpenHow {
        flags: flags as u64,
        mode: 0,
        resolve: RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS,
    };
    loop {
        // SAFETY: valid fd, C string and open_how of the size we pass.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                root.as_raw_fd(),
                c.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if r >= 0 {
            // SAFETY: a fresh descriptor we own.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as libc::c_int) });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Fallback without openat2: walk the components with `O_NOFOLLOW`, directories as `O_PATH`.
/// `..` and `.` are refused by [`check_relpath`], so staying beneath `root` is structural.
pub fn open_by_components(root: BorrowedFd<'_>, relpath: &[u8]) -> io::Result<OwnedFd> {
    check_relpath(relpath)?;
    let comps: Vec<&[u8]> = relpath.split(|&b| b == b'/').collect();
    let mut dir: Option<OwnedFd> = None;
    for (i, comp) in comps.iter().enumerate() {
        let last = i + 1 == comps.len();
        let c = CString::new(*comp).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let at = dir.as_ref().map_or(root.as_raw_fd(), |d| d.as_raw_fd());
        let open = |flags: libc::c_int| {
            // SAFETY: valid dir fd and C string.
            let fd = unsafe { libc::openat(at, c.as_ptr(), flags) };
            if fd < 0 {
                Err(io::Error::last_os_error())
            } else {
                // SAFETY: a fresh descriptor we own.
                Ok(unsafe { OwnedFd::from_raw_fd(fd) })
            }
        };
        let fd = if last {
            match open(BASE_FLAGS | libc::O_NOATIME) {
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(BASE_FLAGS)?,
                r => r?,
            }
        } else {
            open(libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)?
        };
        dir = Some(fd);
    }
    dir.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))
}

/// Clients read files front to back in rsize pieces: ask the kernel for a larger readahead.
/// Advice only, failure is harmless.
pub fn advise_sequential(fd: BorrowedFd<'_>) {
    // SAFETY: a valid fd; the call does not touch memory.
    unsafe {
        libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

/// `pread` until `buf` is full or the file ends (a short read is not the end of the file).
/// Returns the bytes read and whether the end of the file was hit.
pub fn read_full_at(file: &File, offset: u64, buf: &mut [u8]) -> io::Result<(usize, bool)> {
    let mut done = 0;
    while done < buf.len() {
        let off = offset.saturating_add(done as u64);
        if off > i64::MAX as u64 {
            return Ok((done, true));
        }
        match file.read_at(&mut buf[done..], off) {
            Ok(0) => return Ok((done, true)),
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((done, false))
}

/// `(version serial, node index)`.
pub type FdKey = (u64, u32);

/// Bounded LRU of open files. A tick counter orders uses; the BTreeMap gives the least
/// recently used in O(log n). Files are handed out as `Arc<File>` so an eviction never closes
/// an fd another thread is reading from.
pub struct FdCache {
    cap: usize,
    inner: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    tick: u64,
    map: HashMap<FdKey, (Arc<File>, u64)>,
    order: BTreeMap<u64, FdKey>,
}

impl FdCache {
    pub fn new(cap: usize) -> FdCache {
        FdCache {
            cap: cap.max(1),
            inner: Mutex::new(Lru::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached file for `key`, or `open()` it (outside the lock: opening may block on disk)
    /// and cache it, evicting the least recently used beyond the capacity.
    pub fn get_or_open(
        &self,
        key: FdKey,
        open: impl FnOnce() -> io::Result<OwnedFd>,
    ) -> io::Result<Arc<File>> {
        {
            let mut g = self.lock();
            g.tick += 1;
            let t = g.tick;
            if let Some((f, old)) = g.map.get_mut(&key) {
                let f = f.clone();
                let old = std::mem::replace(old, t);
                g.order.remove(&old);
                g.order.insert(t, key);
                return Ok(f);
            }
        }
        let file = Arc::new(File::from(open()?));
        let mut g = self.lock();
        g.tick += 1;
        let t = g.tick;
        if let Some((old_f, old_t)) = g.map.insert(key, (file.clone(), t)) {
            // Another thread opened it meanwhile; keep ours, drop its order slot.
            drop(old_f);
            g.order.remove(&old_t);
        }
        g.order.insert(t, key);
        while g.map.len() > self.cap {
            let Some((_, k)) = g.order.pop_first() else {
                break;
            };
            g.map.remove(&k);
        }
        Ok(file)
    }

    /// Close every fd of a retired version.
    pub fn forget_version(&self, version: u64) {
        let mut g = self.lock();
        let keys: Vec<(FdKey, u64)> = g
            .map
            .iter()
            .filter(|(k, _)| k.0 == version)
            .map(|(k, (_, t))| (*k, *t))
            .collect();
        for (k, t) in keys {
            g.map.remove(&k);
            g.order.remove(&t);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_fifo_in_place_of_a_file_is_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo =
            std::ffi::CString::new(d.path().join("f").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo on a valid C string.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let root = std::fs::File::open(d.path()).unwrap();
        // Would block forever without O_NONBLOCK (no writer).
        let e = open_beneath(root.as_fd(), b"f").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        std::fs::write(d.path().join("g"), b"x").unwrap();
        assert!(open_beneath(root.as_fd(), b"g").is_ok());
    }

    #[test]
    fn open_beneath_refuses_symlinks_and_escapes() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), b"hello").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("etc")).unwrap();
        std::os::unix::fs::symlink("sub/f", root.join("lnk")).unwrap();
        std::os::unix::fs::symlink("sub", root.join("subl")).unwrap();
        let rfd = open_dir(root).unwrap();
        for open in [open_beneath, open_by_components] {
            let f = File::from(open(rfd.as_fd(), b"sub/f").unwrap());
            let mut b = [0u8; 5];
            assert_eq!(read_full_at(&f, 0, &mut b).unwrap(), (5, false));
            assert_eq!(&b, b"hello");
            for bad in [
                &b"etc/passwd"[..],
                b"lnk",
                b"subl/f",
                b"../x",
                b"sub/../sub/f",
                b"/etc/passwd",
                b"",
                b"sub//f",
            ] {
                assert!(
                    open(rfd.as_fd(), bad).is_err(),
                    "{:?} must not open",
                    String::from_utf8_lossy(bad)
                );
            }
        }
    }

    #[test]
    fn read_full_at_reports_eof() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"0123456789").unwrap();
        let f = File::open(d.path().join("f")).unwrap();
        let mut b = [0u8; 4];
        assert_eq!(read_full_at(&f, 8, &mut b).unwrap(), (2, true));
        assert_eq!(read_full_at(&f, 100, &mut b).unwrap(), (0, true));
        assert_eq!(read_full_at(&f, u64::MAX, &mut b).unwrap(), (0, true));
    }

    #[test]
    fn fd_cache_is_bounded_lru() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        let rfd = open_dir(d.path()).unwrap();
        let c = FdCache::new(3);
        let mut opens = 0;
        for n in 0..3u32 {
            c.get_or_open((1, n), || {
                opens += 1;
                open_beneath(rfd.as_fd(), b"f")
            })
            .unwrap();
        }
        // Touch 0 so 1 is the least recently used, then add 3: 1 goes.
        c.get_or_open((1, 0), || panic!("cached")).unwrap();
        c.get_or_open((1, 3), || open_beneath(rfd.as_fd(), b"f"))
            .unwrap();
        assert_eq!(c.len(), 3);
        c.get_or_open((1, 0), || panic!("0 must still be cached"))
            .unwrap();
        let mut reopened = false;
        c.get_or_open((1, 1), || {
            reopened = true;
            open_beneath(rfd.as_fd(), b"f")
        })
        .unwrap();
        assert!(reopened);
        c.get_or_open((2, 9), || open_beneath(rfd.as_fd(), b"f"))
            .unwrap();
        c.forget_version(1);
        assert_eq!(c.len(), 1);
        assert_eq!(opens, 3);
    }

    #[test]
    fn nofile_limit_raised() {
        let (soft, hard) = raise_nofile_limit().unwrap();
        assert_eq!(soft, hard);
    }
}
