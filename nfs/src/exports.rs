//! Named exports over indexed tree versions: the [`Filesystem`] the protocol side calls
//! (design §2.2 resolve order, §2.5 version switch and retention, §2.6 start-up, §3.4 reads).
//!
//! Each export holds its current [`Version`] and up to `keep_versions` retained older ones
//! behind one `RwLock<Option<Arc<State>>>`: a switch is one pointer store, requests in flight
//! finish on the state they cloned. Everything but [`Filesystem::read`] is answered from memory.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crate::fs::{
    Attributes, DirEntry, FileHandle, FileType, Filesystem, FsStat, MountError, NfsError,
};
use crate::handle::{self, ExportId, HandleKey, Kind};
use crate::index::{self, BuildOptions, BuildReport, Index, IndexError, NodeId};
use crate::io::{self as fio, FdCache};

/// Where an export's tree comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExportSource {
    /// A fixed directory, possibly edited in place (e.g. a host export); rescans pick edits up.
    Directory(PathBuf),
    /// The `current` symlink of an image (`images/NAME/current -> versions/VID`); the tree is
    /// `current/root`, the index cache `current/nfs-index` unless `index_file` says otherwise.
    /// A change of the link's target is a new version.
    Current(PathBuf),
}

#[derive(Clone, Debug)]
pub struct ExportSpec {
    /// Export name: what the export id (and so every handle) is derived from.
    pub name: String,
    /// Mount path clients ask for, e.g. `b"/images/debian12"`.
    pub path: Vec<u8>,
    pub source: ExportSource,
    /// Relative paths left out of the export (`proc`, `sys`, `dev`, `run`, `tmp`, a state dir).
    pub exclude: Vec<PathBuf>,
    /// Index cache file, beside the tree (never inside it). `None` for a `Directory` source =
    /// no cache file.
    pub index_file: Option<PathBuf>,
}

impl ExportSpec {
    pub fn new(name: &str, path: &[u8], source: ExportSource) -> ExportSpec {
        ExportSpec {
            name: name.to_string(),
            path: path.to_vec(),
            source,
            exclude: Vec::new(),
            index_file: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ExportsConfig {
    /// Older versions kept loaded so handles of changed files still read old content
    /// (`Current` sources only: an edited-in-place directory has no old content to serve).
    pub keep_versions: usize,
    pub rescan_interval: Duration,
    pub fd_cache: usize,
}

impl Default for ExportsConfig {
    fn default() -> Self {
        ExportsConfig {
            keep_versions: 2,
            rescan_interval: Duration::from_secs(2),
            fd_cache: 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("nfs exports: {0}")]
    Config(String),
    #[error("nfs export {0:?} is not configured")]
    Unknown(String),
    #[error("nfs export {name}: {what} {path}: {source}")]
    Source {
        name: String,
        what: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("nfs export {name}: {source}")]
    Index { name: String, source: IndexError },
}

/// What a rescan found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RescanOutcome {
    /// First index built: the export now answers.
    Ready,
    /// Nothing a client can see changed.
    Unchanged,
    /// A new version is being served.
    Switched,
}

/// Figures for logs and the status page.
#[derive(Clone, Debug, Default)]
pub struct ExportStats {
    pub ready: bool,
    pub version: String,
    pub entries: u64,
    /// Sum of `used` (FSSTAT tbytes).
    pub bytes: u64,
    pub index_memory: u64,
    pub index_build: Duration,
    pub hashed_files: u64,
    pub hashed_bytes: u64,
    pub generation: u64,
    pub retained: usize,
    pub last_rescan: Option<SystemTime>,
    pub last_rescan_took: Duration,
    /// The last rescan found every lstat fact unchanged and built nothing.
    pub last_rescan_fast: bool,
    pub last_error: Option<String>,
}

/// One immutable indexed tree.
pub struct Version {
    serial: u64,
    label: String,
    root: PathBuf,
    root_fd: OwnedFd,
    index: Index,
}

impl Version {
    pub fn index(&self) -> &Index {
        &self.index
    }
    pub fn label(&self) -> &str {
        &self.label
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
}

struct State {
    current: Arc<Version>,
    /// Newest first.
    retained: Vec<Arc<Version>>,
}

struct Export {
    spec: ExportSpec,
    id: ExportId,
    state: RwLock<Option<Arc<State>>>,
    generation: AtomicU64,
    stats: Mutex<ExportStats>,
    /// Serialises rescans of this export (background thread vs. explicit calls).
    rescan: Mutex<()>,
}

pub struct Exports {
    key: HandleKey,
    cfg: ExportsConfig,
    exports: Vec<Export>,
    by_id: HashMap<ExportId, usize>,
    fds: FdCache,
    serial: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Exports {
    /// Validate the specs; no index is built yet (requests answer JUKEBOX until
    /// [`Exports::rescan`] or the [`Rescanner`] has built one).
    pub fn new(
        key: HandleKey,
        specs: Vec<ExportSpec>,
        cfg: ExportsConfig,
    ) -> Result<Exports, ExportError> {
        let mut by_id = HashMap::new();
        let mut paths = std::collections::HashSet::new();
        let mut exports = Vec::new();
        for spec in specs {
            if spec.name.is_empty() {
                return Err(ExportError::Config("export with an empty name".into()));
            }
            if !spec.path.starts_with(b"/") || spec.path.len() > 1024 || spec.path.contains(&0) {
                return Err(ExportError::Config(format!(
                    "export {}: mount path {:?} must be absolute",
                    spec.name,
                    lossy(&spec.path)
                )));
            }
            let path = trim_path(&spec.path).to_vec();
            if !paths.insert(path) {
                return Err(ExportError::Config(format!(
                    "export {}: mount path {:?} used twice",
                    spec.name,
                    lossy(&spec.path)
                )));
            }
            if let (ExportSource::Directory(dir), Some(f)) = (&spec.source, &spec.index_file) {
                // Inside the tree it would be served, and rewriting it would change the tree.
                if f.starts_with(dir) {
                    return Err(ExportError::Config(format!(
                        "export {}: index file {} is inside the exported tree",
                        spec.name,
                        f.display()
                    )));
                }
            }
            let id = handle::export_id(&key, &spec.name);
            if by_id.insert(id, exports.len()).is_some() {
                return Err(ExportError::Config(format!(
                    "export {}: name used twice or export id collision",
                    spec.name
                )));
            }
            exports.push(Export {
                spec,
                id,
                state: RwLock::new(None),
                generation: AtomicU64::new(0),
                stats: Mutex::new(ExportStats::default()),
                rescan: Mutex::new(()),
            });
        }
        let mut fd_cap = cfg.fd_cache;
        match fio::raise_nofile_limit() {
            Ok((soft, _)) => fd_cap = fd_cap.min((soft / 2).max(16) as usize),
            Err(e) => tracing::warn!(error = %e, "nfs: cannot raise RLIMIT_NOFILE"),
        }
        Ok(Exports {
            key,
            fds: FdCache::new(fd_cap),
            cfg,
            exports,
            by_id,
            serial: AtomicU64::new(1),
        })
    }

    pub fn key_fingerprint(&self) -> String {
        self.key.fingerprint()
    }

    pub fn names(&self) -> Vec<String> {
        self.exports.iter().map(|e| e.spec.name.clone()).collect()
    }

    fn export(&self, name: &str) -> Result<&Export, ExportError> {
        self.exports
            .iter()
            .find(|e| e.spec.name == name)
            .ok_or_else(|| ExportError::Unknown(name.to_string()))
    }

    /// Counter that moves whenever the content served by `name` changes (nodes drop caches on
    /// a change). 0 = not ready yet.
    pub fn generation(&self, name: &str) -> Option<u64> {
        self.export(name)
            .ok()
            .map(|e| e.generation.load(Ordering::Acquire))
    }

    pub fn stats(&self, name: &str) -> Option<ExportStats> {
        self.export(name).ok().map(|e| lock(&e.stats).clone())
    }

    pub fn is_ready(&self, name: &str) -> bool {
        self.export(name).is_ok_and(|e| read_state(e).is_some())
    }

    /// The root handle of an export (a pure function of key and name).
    pub fn root_handle(&self, name: &str) -> Option<FileHandle> {
        self.export(name).ok().map(|e| self.root_of(e))
    }

    fn root_of(&self, e: &Export) -> FileHandle {
        handle::encode(
            Kind::Directory,
            e.id,
            handle::object_id(&self.key, e.id, b""),
            0,
        )
    }

    /// Rescan every export once (logging failures); used by the background thread.
    pub fn rescan_all(&self) {
        for e in &self.exports {
            if let Err(err) = self.rescan(&e.spec.name) {
                let msg = err.to_string();
                let mut st = lock(&e.stats);
                // Once per distinct failure, not every interval.
                if st.last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(export = %e.spec.name, error = %msg, "nfs rescan failed; still serving the previous version");
                }
                st.last_error = Some(msg);
            }
        }
    }

    /// Walk the export's tree (re-resolving `current`), re-hash only what changed, and switch
    /// to a new version if anything a client can see differs.
    pub fn rescan(&self, name: &str) -> Result<RescanOutcome, ExportError> {
        let e = self.export(name)?;
        let _serial = lock(&e.rescan);
        let started = Instant::now();
        let (root, label, cache_path) = resolve_source(&e.spec)?;
        let state = read_state(e);
        let previous = state.as_ref().map(|s| s.current.clone());
        let same_root = previous.as_ref().is_some_and(|p| p.root == root);
        // The cache file only helps when there is no in-memory index of this same tree.
        let cache = match (&cache_path, same_root) {
            (Some(p), false) => index::load_cache(p),
            _ => None,
        };
        let src_err = |what, path: &Path, source| ExportError::Source {
            name: name.to_string(),
            what,
            path: path.display().to_string(),
            source,
        };
        let root_fd = fio::open_dir(&root).map_err(|s| src_err("opening tree", &root, s))?;
        let opts = BuildOptions {
            exclude: &e.spec.exclude,
            previous: previous.as_ref().map(|p| &p.index),
            cache: cache.as_ref(),
            now_ns: index::now_ns(),
        };
        let index_err = |source| ExportError::Index {
            name: name.to_string(),
            source,
        };
        let walk_started = Instant::now();
        let tree = index::walk(&root, &e.spec.exclude).map_err(index_err)?;
        if same_root
            && previous
                .as_ref()
                .is_some_and(|p| p.index.matches_walk(&tree))
        {
            // The common case every interval: no lstat fact moved, skip hashing and building.
            let mut st = lock(&e.stats);
            st.last_rescan = Some(SystemTime::now());
            st.last_rescan_took = started.elapsed();
            st.last_rescan_fast = true;
            st.last_error = None;
            return Ok(RescanOutcome::Unchanged);
        }
        let (new_index, tree, report) = index::build_from_tree(
            &self.key,
            e.id,
            tree,
            root_fd.as_fd(),
            &opts,
            walk_started.elapsed(),
        )
        .map_err(index_err)?;
        let content_changed = previous
            .as_ref()
            .is_none_or(|p| p.index.digest() != new_index.digest());
        if let Some(p) = &cache_path {
            if let Err(err) = index::write_cache(p, &tree, &new_index) {
                tracing::warn!(export = %name, path = %p.display(), error = %err, "nfs: cannot write index cache");
            }
        }
        drop(tree);
        if let (true, false, Some(state), Some(prev)) =
            (same_root, content_changed, &state, &previous)
        {
            // Same served content, but local facts moved (a touch, entries that were racily
            // clean): keep the new index so the next rescan can take the fast path. Equal
            // digests mean equal node numbering, so the version serial (and its cached fds)
            // stays valid.
            let version = Arc::new(Version {
                serial: prev.serial,
                label: prev.label.clone(),
                root,
                root_fd,
                index: new_index,
            });
            let new_state = Arc::new(State {
                current: version,
                retained: state.retained.clone(),
            });
            *e.state.write().unwrap_or_else(|p| p.into_inner()) = Some(new_state);
            let mut st = lock(&e.stats);
            st.last_rescan = Some(SystemTime::now());
            st.last_rescan_took = started.elapsed();
            st.last_rescan_fast = false;
            st.last_error = None;
            return Ok(RescanOutcome::Unchanged);
        }
        let version = Arc::new(Version {
            serial: self.serial.fetch_add(1, Ordering::Relaxed),
            label,
            root,
            root_fd,
            index: new_index,
        });
        let keep = match e.spec.source {
            ExportSource::Current(_) => self.cfg.keep_versions,
            // An edited-in-place tree has no old content on disk to serve from an old index.
            ExportSource::Directory(_) => 0,
        };
        let mut retained = Vec::new();
        if let Some(s) = &state {
            retained.push(s.current.clone());
            retained.extend(s.retained.iter().cloned());
        }
        let dropped: Vec<Arc<Version>> = if retained.len() > keep {
            retained.split_off(keep)
        } else {
            Vec::new()
        };
        let n_retained = retained.len();
        let new_state = Arc::new(State {
            current: version.clone(),
            retained,
        });
        *e.state.write().unwrap_or_else(|p| p.into_inner()) = Some(new_state);
        for v in &dropped {
            self.fds.forget_version(v.serial);
        }
        let generation = if content_changed {
            e.generation.fetch_add(1, Ordering::AcqRel) + 1
        } else {
            e.generation.load(Ordering::Acquire)
        };
        log_build(name, &version, &report);
        let mut st = lock(&e.stats);
        *st = ExportStats {
            ready: true,
            version: version.label.clone(),
            entries: version.index.len() as u64,
            bytes: version.index.total_used(),
            index_memory: version.index.memory_bytes() as u64,
            index_build: report.total,
            hashed_files: report.hashed_files,
            hashed_bytes: report.hashed_bytes,
            generation,
            retained: n_retained,
            last_rescan: Some(SystemTime::now()),
            last_rescan_took: started.elapsed(),
            last_rescan_fast: false,
            last_error: None,
        };
        Ok(if previous.is_none() {
            RescanOutcome::Ready
        } else {
            RescanOutcome::Switched
        })
    }

    /// Start the background rescanner: builds every export's first index, then rescans every
    /// `rescan_interval`. Dropping the returned value stops it.
    pub fn start_rescanner(self: &Arc<Self>) -> io::Result<Rescanner> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s2 = stop.clone();
        let me = self.clone();
        let interval = self.cfg.rescan_interval;
        let thread = std::thread::Builder::new()
            .name("nfs-rescan".into())
            .spawn(move || loop {
                me.rescan_all();
                let (m, cv) = &*s2;
                let guard = lock(m);
                let (guard, _) = cv
                    .wait_timeout_while(guard, interval, |stopped| !*stopped)
                    .unwrap_or_else(|p| p.into_inner());
                if *guard {
                    return;
                }
            })?;
        Ok(Rescanner {
            stop,
            thread: Some(thread),
        })
    }

    /// Resolve a handle (design §2.2): current version with the same generation, then retained
    /// versions newest first, then the current node at that path if the kind matches, else STALE.
    fn resolve(&self, fh: &FileHandle) -> Result<(Arc<Version>, NodeId), NfsError> {
        let d = handle::decode(fh)?;
        let e = self
            .by_id
            .get(&d.export)
            .map(|&i| &self.exports[i])
            .ok_or(NfsError::Stale)?;
        let state = read_state(e).ok_or(NfsError::Jukebox)?;
        let exact = |v: &Arc<Version>| {
            let n = v.index.find(&d.object)?;
            (v.index.kind(n) == d.kind && v.index.generation(n) == d.generation)
                .then(|| (v.clone(), n))
        };
        if let Some(hit) = exact(&state.current) {
            return Ok(hit);
        }
        if let Some(hit) = state.retained.iter().find_map(exact) {
            return Ok(hit);
        }
        let cur = &state.current;
        match cur.index.find(&d.object) {
            Some(n) if cur.index.kind(n) == d.kind => Ok((cur.clone(), n)),
            _ => Err(NfsError::Stale),
        }
    }

    fn entry(&self, v: &Version, n: NodeId, name: Vec<u8>, cookie: u64) -> DirEntry {
        let handle = v.index.handle(n);
        DirEntry {
            cookie,
            name,
            handle,
            attr: v.index.attributes(&self.key, n, &handle),
        }
    }
}

fn read_state(e: &Export) -> Option<Arc<State>> {
    e.state.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn trim_path(p: &[u8]) -> &[u8] {
    let mut p = p;
    while p.len() > 1 && p.ends_with(b"/") {
        p = &p[..p.len() - 1];
    }
    p
}

/// (tree root, version label, index cache path) of an export, re-reading `current`.
fn resolve_source(spec: &ExportSpec) -> Result<(PathBuf, String, Option<PathBuf>), ExportError> {
    let err = |what, path: &Path, source| ExportError::Source {
        name: spec.name.clone(),
        what,
        path: path.display().to_string(),
        source,
    };
    match &spec.source {
        ExportSource::Directory(dir) => {
            // Resolved once per rescan: a configured path that is itself a symlink is followed
            // here, deliberately, and nowhere below it.
            let root = fs::canonicalize(dir).map_err(|s| err("resolving", dir, s))?;
            Ok((root, "dir".to_string(), spec.index_file.clone()))
        }
        ExportSource::Current(link) => {
            let target = fs::read_link(link).map_err(|s| err("reading link", link, s))?;
            let base = link.parent().unwrap_or(Path::new("/"));
            let vdir =
                fs::canonicalize(base.join(&target)).map_err(|s| err("resolving", link, s))?;
            let label = vdir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let cache = spec
                .index_file
                .clone()
                .unwrap_or_else(|| vdir.join("nfs-index"));
            Ok((vdir.join("root"), label, Some(cache)))
        }
    }
}

fn log_build(name: &str, v: &Version, r: &BuildReport) {
    tracing::info!(
        export = %name,
        version = %v.label,
        entries = r.entries,
        hashed_files = r.hashed_files,
        hashed_bytes = r.hashed_bytes,
        reused = r.reused_hashes,
        walk_ms = r.walk.as_millis() as u64,
        hash_ms = r.hash.as_millis() as u64,
        total_ms = r.total.as_millis() as u64,
        "nfs: serving new index version"
    );
}

/// Background rescanner; stops (and joins) on drop.
pub struct Rescanner {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Rescanner {
    fn drop(&mut self) {
        let (m, cv) = &*self.stop;
        *lock(m) = true;
        cv.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Filesystem for Exports {
    fn mount(&self, path: &[u8]) -> Result<FileHandle, MountError> {
        if path.len() > 1024 {
            return Err(MountError::NameTooLong);
        }
        let want = trim_path(path);
        self.exports
            .iter()
            .find(|e| trim_path(&e.spec.path) == want)
            .map(|e| self.root_of(e))
            .ok_or(MountError::NoEnt)
    }

    fn export_paths(&self) -> Vec<Vec<u8>> {
        self.exports.iter().map(|e| e.spec.path.clone()).collect()
    }

    fn getattr(&self, fh: &FileHandle) -> Result<Attributes, NfsError> {
        let (v, n) = self.resolve(fh)?;
        Ok(v.index.attributes(&self.key, n, fh))
    }

    fn lookup(&self, dir: &FileHandle, name: &[u8]) -> Result<(FileHandle, Attributes), NfsError> {
        let (v, d) = self.resolve(dir)?;
        if v.index.ftype(d) != FileType::Directory {
            return Err(NfsError::NotDir);
        }
        index::check_name(name)?;
        let n = match name {
            b"." => d,
            b".." => v.index.parent(d),
            _ => v
                .index
                .lookup_child(&self.key, d, name)
                .ok_or(NfsError::NoEnt)?,
        };
        let h = v.index.handle(n);
        Ok((h, v.index.attributes(&self.key, n, &h)))
    }

    fn readlink(&self, fh: &FileHandle) -> Result<Vec<u8>, NfsError> {
        let (v, n) = self.resolve(fh)?;
        v.index.target(n).map(|t| t.to_vec()).ok_or(NfsError::Inval)
    }

    fn readdir(
        &self,
        dir: &FileHandle,
        after: u64,
        max_entries: usize,
    ) -> Result<(Vec<DirEntry>, bool), NfsError> {
        let (v, d) = self.resolve(dir)?;
        if v.index.ftype(d) != FileType::Directory {
            return Err(NfsError::NotDir);
        }
        let mut out = Vec::new();
        let mut pending: Vec<(NodeId, &[u8], u64)> = Vec::new();
        if after < handle::COOKIE_DOT {
            pending.push((d, b".", handle::COOKIE_DOT));
        }
        if after < handle::COOKIE_DOTDOT {
            pending.push((v.index.parent(d), b"..", handle::COOKIE_DOTDOT));
        }
        let rest = v.index.children_after(d, after);
        let total = pending.len() + rest.len();
        for (n, name, cookie) in pending.into_iter().take(max_entries) {
            out.push(self.entry(&v, n, name.to_vec(), cookie));
        }
        for &c in rest.iter().take(max_entries - out.len()) {
            out.push(self.entry(&v, c, v.index.name(c).to_vec(), v.index.cookie(c)));
        }
        let eof = out.len() == total;
        Ok((out, eof))
    }

    fn read(
        &self,
        fh: &FileHandle,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(usize, bool, Attributes), NfsError> {
        let (v, n) = self.resolve(fh)?;
        if v.index.ftype(n) != FileType::Regular {
            return Err(NfsError::Inval);
        }
        let attr = v.index.attributes(&self.key, n, fh);
        let size = attr.size;
        // Offsets beyond off_t, or at/after the end: nothing to read (design §1.3).
        if offset >= size || offset > i64::MAX as u64 {
            return Ok((0, true, attr));
        }
        // The index is the truth for this version: never read past its size.
        let want = (buf.len() as u64).min(size - offset) as usize;
        if want == 0 {
            return Ok((0, false, attr));
        }
        let c = v.index.canonical(n);
        let io_err = |what: &str, e: io::Error| {
            tracing::warn!(
                version = %v.label,
                path = %v.root.join(std::ffi::OsStr::from_bytes(&v.index.relpath(c))).display(),
                error = %e,
                "nfs READ: cannot {what}"
            );
            NfsError::Io
        };
        let file = self
            .fds
            .get_or_open((v.serial, c), || {
                let fd = fio::open_beneath(v.root_fd.as_fd(), &v.index.relpath(c))?;
                fio::advise_sequential(fd.as_fd());
                Ok(fd)
            })
            .map_err(|e| io_err("open", e))?;
        let (got, hit_eof) =
            fio::read_full_at(&file, offset, &mut buf[..want]).map_err(|e| io_err("read", e))?;
        // A file truncated underneath reports eof at its real end, so the client stops asking.
        let eof = hit_eof || offset + got as u64 >= size;
        Ok((got, eof, attr))
    }

    fn fsstat(&self, fh: &FileHandle) -> Result<(Attributes, FsStat), NfsError> {
        let (v, n) = self.resolve(fh)?;
        let attr = v.index.attributes(&self.key, n, fh);
        let st = FsStat {
            tbytes: v.index.total_used(),
            tfiles: v.index.len() as u64,
            ..FsStat::default()
        };
        Ok((attr, st))
    }
}
