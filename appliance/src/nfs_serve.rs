//! The NFS side of `clustermaker serve`: every image of the store exported at `/images/NAME`
//! by the embedded server (`nfs` crate), kept in step with the store while serving.
//!
//! - **Which exports**: an image whose current version holds a tree is served from its
//!   `current` link (a publication switches the link; the `nfs` crate notices and serves the new
//!   version while retaining the old ones for handles already held); a `host` image is served
//!   live from its root minus its excludes. Each image has its own [`Exports`] (index,
//!   retained versions, rescanner), and requests are routed by the export id in the handle: an
//!   image built or removed while serving never disturbs the others. A new or changed image is
//!   fully indexed before it is routed to, so nodes never wait for an index.
//! - **A store that cannot be read is not a store without images**: an image whose metadata
//!   cannot be read right now keeps being served as before; only an image whose directory is
//!   gone stops being exported (its handles then answer STALE, as they must).
//! - **The handle key**: with HA it is derived from the HA key both masters already share, so
//!   they cannot disagree (a mismatch would stale every handle at failover); without HA it is
//!   a file made on first start; `nfs.handle_key_file` pins one.
//! - **Export generation**: whenever served content changes, the number in
//!   `state_dir/export-generation` goes up; node agents see it in their metrics reply and drop
//!   their dentry caches, so files added to the image appear through the node's overlay.
//! - With `nfs.kernel_exports_file`, nothing is served: the file is written for the kernel NFS
//!   server instead (sites whose images sit on block-replicated storage).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use nfs::exports::{ExportSource, ExportSpec, Exports, ExportsConfig, Rescanner};
use nfs::fs::{Attributes, DirEntry, FileHandle, Filesystem, FsStat, MountError, NfsError};
use nfs::handle::{ExportId, HandleKey};
use nfs::server::{Server, ServerConfig, ServerHandle, StatsReader};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::nfs_config::parse_cidr;

/// The mount path of image `name`.
pub fn export_path(name: &str) -> String {
    format!("/images/{name}")
}

/// Loads the handle key, or makes one when the file does not exist yet.
pub fn load_or_create_key(path: &Path) -> Result<HandleKey> {
    if path.exists() {
        return HandleKey::load(path).with_context(|| {
            format!(
                "NFS handle key {} (fix: chmod 600 it, or restore the key both masters share)",
                path.display()
            )
        });
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let key = HandleKey::generate(path)
        .with_context(|| format!("cannot create the NFS handle key {}", path.display()))?;
    tracing::info!(
        key = %path.display(),
        fingerprint = %key.fingerprint(),
        "nfs: made a new handle key"
    );
    Ok(key)
}

/// Domain separation: the handle key is never the HA key itself.
const HANDLE_KEY_CONTEXT: &str = "clustermaker 2026-11 nfs file handle key v1";

/// The handle key and where it comes from (see the module doc).
pub fn handle_key(config: &Config) -> Result<(HandleKey, String)> {
    if let Some(path) = &config.nfs.handle_key_file {
        return Ok((load_or_create_key(path)?, path.display().to_string()));
    }
    if config.ha.enabled {
        // Validates owner-only permissions and length like the HA runtime does.
        runtime::ha::read_key(&config.ha.key_file)?;
        let material = std::fs::read(&config.ha.key_file)
            .with_context(|| format!("cannot read the HA key {}", config.ha.key_file.display()))?;
        let key = blake3::derive_key(HANDLE_KEY_CONTEXT, material.trim_ascii());
        return Ok((
            HandleKey(key),
            format!("derived from the HA key {}", config.ha.key_file.display()),
        ));
    }
    let path = config.state_dir.join("nfs/handle.key");
    Ok((load_or_create_key(&path)?, path.display().to_string()))
}

/// The export of each image in `images_dir` whose current version can be served, by name.
///
/// `previous` is what is served now: when the store cannot be listed, it is kept whole; when
/// one image's metadata cannot be read, that image keeps its previous export (with a warning).
/// Only an image whose directory is gone is left out. Host images get an index cache in
/// `state_dir/nfs/` so a restart does not hash the master's whole root again.
pub fn image_exports(
    images_dir: &Path,
    state_dir: &Path,
    previous: &BTreeMap<String, ExportSpec>,
) -> BTreeMap<String, ExportSpec> {
    let store = images::store::Store::new(images_dir);
    let names = match store.names() {
        Ok(n) => n,
        Err(e) => {
            if images_dir.exists() {
                tracing::warn!(
                    "nfs: cannot list images in {} (still serving the previous set): {e:#}",
                    images_dir.display()
                );
            }
            return previous.clone();
        }
    };
    let mut out = BTreeMap::new();
    for name in names {
        let link = store.image_dir(&name).join("current");
        let meta = match store
            .current(&name)
            .and_then(|v| v.map(|vid| store.version_meta(&name, &vid)).transpose())
        {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                match previous.get(&name) {
                    Some(spec) => {
                        tracing::warn!("nfs: image {name}: {e:#} (still serving it as before)");
                        out.insert(name, spec.clone());
                    }
                    None => tracing::warn!("nfs: image {name} is not exported: {e:#}"),
                }
                continue;
            }
        };
        let path = export_path(&name);
        let spec = match meta.export {
            images::meta::Export::Tree => {
                ExportSpec::new(&name, path.as_bytes(), ExportSource::Current(link))
            }
            images::meta::Export::Live { root, exclude } => {
                let mut s = ExportSpec::new(&name, path.as_bytes(), ExportSource::Directory(root));
                s.exclude = exclude.into_iter().map(PathBuf::from).collect();
                s.index_file = Some(state_dir.join("nfs").join(format!("{name}.nfs-index")));
                s
            }
        };
        out.insert(name, spec);
    }
    out
}

fn same_spec(a: &ExportSpec, b: &ExportSpec) -> bool {
    a.path == b.path
        && a.source == b.source
        && a.exclude == b.exclude
        && a.index_file == b.index_file
}

/// One exported image: its own index, retained versions and rescanner.
pub struct Served {
    spec: ExportSpec,
    id: ExportId,
    exports: Arc<Exports>,
    _rescanner: Rescanner,
}

impl Served {
    /// Builds and fully indexes the export (blocking: walks and hashes the tree).
    fn build(key: &HandleKey, spec: &ExportSpec, cfg: &ExportsConfig) -> Result<Served> {
        let exports = Arc::new(
            Exports::new(key.clone(), vec![spec.clone()], cfg.clone())
                .map_err(|e| anyhow::anyhow!("export {}: {e}", spec.name))?,
        );
        exports.rescan_all();
        let rescanner = exports
            .start_rescanner()
            .context("cannot start the NFS rescanner thread")?;
        if let Some(s) = exports.stats(&spec.name) {
            tracing::info!(
                export = %export_path(&spec.name),
                version = %s.version,
                entries = s.entries,
                ms = s.index_build.as_millis() as u64,
                ready = s.ready,
                "nfs: exporting"
            );
        }
        Ok(Served {
            id: nfs::handle::export_id(key, &spec.name),
            spec: spec.clone(),
            exports,
            _rescanner: rescanner,
        })
    }

    fn generation(&self) -> u64 {
        self.exports.generation(&self.spec.name).unwrap_or(0)
    }
}

/// The exports being served, routed by the export id in each handle.
pub struct LiveExports {
    current: RwLock<Arc<Vec<Arc<Served>>>>,
}

impl LiveExports {
    fn get(&self) -> Arc<Vec<Arc<Served>>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn set(&self, served: Vec<Arc<Served>>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(served);
    }

    /// The image a handle belongs to: BADHANDLE when it is not ours, STALE when its image is
    /// not exported (any more).
    fn route(&self, fh: &FileHandle) -> Result<Arc<Served>, NfsError> {
        let id = nfs::handle::decode(fh)?.export;
        self.get()
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or(NfsError::Stale)
    }

    /// Served content generation summed over exports (changes whenever any export's does).
    pub fn generation_sum(&self) -> u64 {
        self.get()
            .iter()
            .fold(0u64, |a, s| a.wrapping_add(s.generation()))
    }
}

impl Filesystem for LiveExports {
    fn mount(&self, path: &[u8]) -> Result<FileHandle, MountError> {
        let served = self.get();
        let trimmed = match path.len() {
            n if n > 1 && path.ends_with(b"/") => &path[..n - 1],
            _ => path,
        };
        let owner = served.iter().find(|s| {
            let p = s.spec.path.as_slice();
            trimmed == p || (trimmed.starts_with(p) && trimmed.get(p.len()) == Some(&b'/'))
        });
        match owner {
            Some(s) => s.exports.mount(path),
            None => Err(MountError::NoEnt),
        }
    }
    fn export_paths(&self) -> Vec<Vec<u8>> {
        self.get().iter().map(|s| s.spec.path.clone()).collect()
    }
    fn getattr(&self, fh: &FileHandle) -> Result<Attributes, NfsError> {
        self.route(fh)?.exports.getattr(fh)
    }
    fn lookup(&self, dir: &FileHandle, name: &[u8]) -> Result<(FileHandle, Attributes), NfsError> {
        self.route(dir)?.exports.lookup(dir, name)
    }
    fn readlink(&self, fh: &FileHandle) -> Result<Vec<u8>, NfsError> {
        self.route(fh)?.exports.readlink(fh)
    }
    fn readdir(
        &self,
        dir: &FileHandle,
        after: u64,
        max_entries: usize,
    ) -> Result<(Vec<DirEntry>, bool), NfsError> {
        self.route(dir)?.exports.readdir(dir, after, max_entries)
    }
    fn read(
        &self,
        fh: &FileHandle,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(usize, bool, Attributes), NfsError> {
        self.route(fh)?.exports.read(fh, offset, buf)
    }
    fn fsstat(&self, fh: &FileHandle) -> Result<(Attributes, FsStat), NfsError> {
        self.route(fh)?.exports.fsstat(fh)
    }
}

/// The exports for `specs`: existing [`Served`] kept when their spec is unchanged (their
/// retained versions with them), the others built (blocking). An image whose export cannot be
/// built keeps its previous one, if any.
fn reconcile(
    key: &HandleKey,
    cfg: &ExportsConfig,
    old: &[Arc<Served>],
    specs: &BTreeMap<String, ExportSpec>,
) -> (Vec<Arc<Served>>, bool) {
    let mut changed = old.len() != specs.len();
    let mut out = Vec::new();
    for (name, spec) in specs {
        let existing = old.iter().find(|s| &s.spec.name == name);
        match existing {
            Some(s) if same_spec(&s.spec, spec) => out.push(s.clone()),
            _ => match Served::build(key, spec, cfg) {
                Ok(s) => {
                    changed = true;
                    out.push(Arc::new(s));
                }
                Err(e) => {
                    tracing::error!("nfs: cannot export image {name}: {e:#}");
                    if let Some(s) = existing {
                        out.push(s.clone());
                    }
                }
            },
        }
    }
    (out, changed)
}

/// A running NFS service; stopped when dropped (the server with [`NfsService::shutdown`]).
pub struct NfsService {
    server: Option<ServerHandle>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    watcher: Option<std::thread::JoinHandle<()>>,
}

impl NfsService {
    pub async fn shutdown(mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        if let Some(w) = self.watcher.take() {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
    }
}

impl Drop for NfsService {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The client networks allowed: `nfs.allow`, or the boot network.
pub fn allow_list(config: &Config) -> Result<Vec<(IpAddr, u8)>> {
    if config.nfs.allow.is_empty() {
        let prefix = config.network.prefix_len;
        let mask = u32::MAX << (32 - u32::from(prefix));
        let net = Ipv4Addr::from(u32::from(config.network.address) & mask);
        return Ok(vec![(IpAddr::V4(net), prefix)]);
    }
    config
        .nfs
        .allow
        .iter()
        .map(|a| parse_cidr(a).map_err(anyhow::Error::msg))
        .collect()
}

fn exports_config(config: &Config) -> ExportsConfig {
    ExportsConfig {
        keep_versions: config.nfs.keep_versions,
        rescan_interval: config.nfs.rescan_interval,
        ..ExportsConfig::default()
    }
}

/// Raises the number in `state_dir/export-generation` (atomically: temp file + rename).
fn bump_export_generation(state_dir: &Path) {
    let path = crate::node_api::export_generation_path(state_dir);
    let next = crate::node_api::export_generation(state_dir).saturating_add(1);
    let tmp = path.with_extension("tmp");
    let result =
        std::fs::write(&tmp, format!("{next}\n")).and_then(|_| std::fs::rename(&tmp, &path));
    if let Err(e) = result {
        tracing::warn!("nfs: cannot write {}: {e}", path.display());
    }
}

/// Starts the NFS service of `serve`: indexes every image (blocking, before nodes are
/// answered, so the first mount never waits), binds the listeners, and watches the store.
pub async fn start(config: &Config) -> Result<NfsService> {
    let (key, key_origin) = handle_key(config)?;
    let images_dir = config.boot.images_dir.clone();
    let state_dir = config.state_dir.clone();
    let cfg = exports_config(config);
    let specs = image_exports(&images_dir, &state_dir, &BTreeMap::new());
    let served = {
        let (key, specs, cfg) = (key.clone(), specs.clone(), cfg.clone());
        tokio::task::spawn_blocking(move || reconcile(&key, &cfg, &[], &specs).0).await?
    };
    let live = Arc::new(LiveExports {
        current: RwLock::new(Arc::new(served)),
    });
    // Content may have changed while serve was down: tell the agents once.
    bump_export_generation(&state_dir);
    let server_config = ServerConfig {
        listen: config.nfs.listen.clone(),
        allow: allow_list(config)?,
        require_privileged_port: config.nfs.require_privileged_port,
        ..ServerConfig::default()
    };
    let server = Server::start(server_config.clone(), live.clone())
        .await
        .with_context(|| {
            format!(
                "NFS server on {:?} (fix: stop the kernel NFS server or another program on port 2049, or set nfs.listen)",
                server_config.listen
            )
        })?;
    tracing::info!(
        listen = ?server.local_addrs(),
        key = %key.fingerprint(),
        key_origin = %key_origin,
        "nfs: serving"
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let status = StatusWriter {
        path: status_path(&config.state_dir),
        listen: server.local_addrs().iter().map(|a| a.to_string()).collect(),
        key_fingerprint: key.fingerprint(),
        server_address: config
            .nfs
            .server_address
            .unwrap_or_else(|| crate::cli_overlay::master_address(config))
            .to_string(),
        mount_options: node_mount_options(config),
        stats: server.stats_reader(),
    };
    status.write(&live);
    let watcher = {
        let live = live.clone();
        let stop = stop.clone();
        let state_dir = config.state_dir.clone();
        let interval = config.nfs.rescan_interval;
        std::thread::Builder::new()
            .name("nfs-images".into())
            .spawn(move || {
                watch_store(
                    live, specs, key, cfg, images_dir, state_dir, interval, status, stop,
                )
            })
            .context("cannot start the NFS image watcher")?
    };
    Ok(NfsService {
        server: Some(server),
        stop,
        watcher: Some(watcher),
    })
}

/// Follows the store: images added, changed or removed → their exports built (before they are
/// routed to) or dropped, the others untouched; served content changed → `export-generation`
/// raised.
#[allow(clippy::too_many_arguments)]
fn watch_store(
    live: Arc<LiveExports>,
    mut specs: BTreeMap<String, ExportSpec>,
    key: HandleKey,
    cfg: ExportsConfig,
    images_dir: PathBuf,
    state_dir: PathBuf,
    interval: Duration,
    status: StatusWriter,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut last_generation = live.generation_sum();
    let tick = Duration::from_millis(100);
    let mut waited = Duration::ZERO;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(tick);
        waited += tick;
        if waited < interval {
            continue;
        }
        waited = Duration::ZERO;
        status.write(&live);
        let now = image_exports(&images_dir, &state_dir, &specs);
        let unchanged = now.len() == specs.len()
            && now
                .iter()
                .all(|(n, s)| specs.get(n).is_some_and(|old| same_spec(old, s)));
        if !unchanged {
            let old = live.get();
            let (served, changed) = reconcile(&key, &cfg, &old, &now);
            if changed {
                tracing::info!(images = ?now.keys().collect::<Vec<_>>(), "nfs: image set changed");
                live.set(served);
                bump_export_generation(&state_dir);
                last_generation = live.generation_sum();
            }
            specs = now;
            continue;
        }
        let g = live.generation_sum();
        if g != last_generation {
            last_generation = g;
            bump_export_generation(&state_dir);
        }
    }
    let _ = std::fs::remove_file(&status.path);
}

/// The options nodes mount with: the initramfs's own plus `nfs.mount_options`.
pub fn node_mount_options(config: &Config) -> String {
    let base = crate::nfs_config::NODE_MOUNT_OPTIONS;
    if config.nfs.mount_options.is_empty() {
        base.to_string()
    } else {
        format!("{base},{}", config.nfs.mount_options)
    }
}

/// `state_dir/nfs/status.json`, rewritten by `serve` every rescan interval and read by
/// `clustermaker nfs status`.
pub fn status_path(state_dir: &Path) -> PathBuf {
    state_dir.join("nfs/status.json")
}

/// What `clustermaker nfs status` shows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NfsStatus {
    pub updated_ms: u64,
    pub listen: Vec<String>,
    pub server_address: String,
    pub key_fingerprint: String,
    pub mount_options: String,
    pub exports: Vec<ExportStatus>,
    pub connections_total: u64,
    pub connections_active: u64,
    pub connections_rejected: u64,
    /// NFSv3 and MOUNT calls by procedure name (only those called at least once).
    pub calls: BTreeMap<String, u64>,
    /// Calls answered with an RPC-level error (garbage, unknown program/procedure, denied,
    /// oversized).
    pub rpc_errors: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportStatus {
    pub name: String,
    pub path: String,
    pub ready: bool,
    pub version: String,
    pub entries: u64,
    pub bytes: u64,
    pub index_memory: u64,
    pub index_build_ms: u64,
    pub generation: u64,
    pub retained_versions: usize,
    pub last_rescan_ms: Option<u64>,
    pub last_error: Option<String>,
}

struct StatusWriter {
    path: PathBuf,
    listen: Vec<String>,
    key_fingerprint: String,
    server_address: String,
    mount_options: String,
    stats: StatsReader,
}

fn ms_since_epoch(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl StatusWriter {
    fn collect(&self, live: &LiveExports) -> NfsStatus {
        let exports = live.get();
        let server = self.stats.stats();
        let mut calls = BTreeMap::new();
        for (i, n) in server.calls.nfs.iter().enumerate() {
            if *n > 0 {
                calls.insert(nfs::proto::nfs3::procs::NAMES[i].to_string(), *n);
            }
        }
        for (i, n) in server.calls.mount.iter().enumerate() {
            if *n > 0 {
                calls.insert(format!("mount.{}", nfs::proto::mount3::procs::NAMES[i]), *n);
            }
        }
        let c = &server.calls;
        NfsStatus {
            updated_ms: ms_since_epoch(std::time::SystemTime::now()),
            listen: self.listen.clone(),
            server_address: self.server_address.clone(),
            key_fingerprint: self.key_fingerprint.clone(),
            mount_options: self.mount_options.clone(),
            exports: exports
                .iter()
                .filter_map(|served| {
                    let name = served.spec.name.clone();
                    let s = served.exports.stats(&name)?;
                    Some(ExportStatus {
                        path: export_path(&name),
                        name,
                        ready: s.ready,
                        version: s.version,
                        entries: s.entries,
                        bytes: s.bytes,
                        index_memory: s.index_memory,
                        index_build_ms: s.index_build.as_millis() as u64,
                        generation: s.generation,
                        retained_versions: s.retained,
                        last_rescan_ms: s.last_rescan.map(ms_since_epoch),
                        last_error: s.last_error,
                    })
                })
                .collect(),
            connections_total: server.connections_total,
            connections_active: server.connections_active,
            connections_rejected: server.connections_rejected,
            calls,
            rpc_errors: c.garbage_args
                + c.prog_unavail
                + c.prog_mismatch
                + c.proc_unavail
                + c.denied
                + c.discarded,
        }
    }

    fn write(&self, live: &LiveExports) {
        let status = self.collect(live);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = crate::statefile::write_json(&self.path, &status) {
            tracing::warn!("nfs: cannot write {}: {e:#}", self.path.display());
        }
    }
}

/// The kernel NFS server's exports for the images (`nfs.kernel_exports_file`). Each line has a
/// fixed `fsid` derived from the image name, so a failover to a master with the same storage
/// (block replication) keeps handles; a file-by-file copy does not (that is what the embedded
/// server is for).
pub fn kernel_exports(config: &Config) -> Result<String> {
    Ok(kernel_exports_text(
        &image_exports(&config.boot.images_dir, &config.state_dir, &BTreeMap::new()),
        &allow_list(config)?,
    ))
}

/// The exports(5) text for `specs`, one line per image, each client network with read-only,
/// no root squash (a node's root must read root-only files) and a fixed fsid from the name.
/// The kernel resolves the `current` link when `exportfs -ra` runs: run it again after
/// `image update`. A host image's excludes cannot be expressed (knfsd exports whole trees;
/// other file systems below it are not crossed).
pub fn kernel_exports_text(specs: &BTreeMap<String, ExportSpec>, allow: &[(IpAddr, u8)]) -> String {
    let mut out =
        String::from("# Written by clustermaker (nfs.kernel_exports_file); do not edit.\n");
    for (name, spec) in specs {
        let dir = match &spec.source {
            ExportSource::Current(link) => link.join("root"),
            ExportSource::Directory(d) => {
                // knfsd exports whole trees: the master's state, keys and identity files
                // cannot be left out.
                out.push_str(&format!(
                    "# host image {name} ({}) is not exported: the kernel NFS server cannot leave out the master's state and keys\n",
                    d.display()
                ));
                continue;
            }
        };
        let hash = blake3::hash(name.as_bytes());
        let bytes = hash.as_bytes();
        let fsid =
            (u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) & 0x7fff_ffff).max(1);
        let clients: Vec<String> = allow
            .iter()
            .map(|(ip, len)| {
                format!("{ip}/{len}(ro,no_root_squash,no_subtree_check,sync,fsid={fsid})")
            })
            .collect();
        out.push_str(&format!("\"{}\" {}\n", dir.display(), clients.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_exports_name_every_image_with_a_stable_fsid() {
        let mut specs = BTreeMap::new();
        specs.insert(
            "busy".to_string(),
            ExportSpec::new(
                "busy",
                b"/images/busy",
                ExportSource::Current("/s/images/busy/current".into()),
            ),
        );
        specs.insert(
            "host".to_string(),
            ExportSpec::new("host", b"/images/host", ExportSource::Directory("/".into())),
        );
        let allow = [("10.0.0.0".parse().unwrap(), 24)];
        let text = kernel_exports_text(&specs, &allow);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].starts_with("\"/s/images/busy/current/root\" 10.0.0.0/24(ro,no_root_squash,")
        );
        // A host image is never exported by the kernel server: its excludes (state, keys,
        // identity) cannot be expressed in exports(5).
        assert!(
            lines[2].starts_with("# host image host (/) is not exported"),
            "{text}"
        );
        assert_eq!(
            text,
            kernel_exports_text(&specs, &allow),
            "stable across runs"
        );
        let mut other = specs.clone();
        other.insert(
            "busy2".to_string(),
            ExportSpec::new(
                "busy2",
                b"/images/busy2",
                ExportSource::Current("/s/images/busy2/current".into()),
            ),
        );
        let text2 = kernel_exports_text(&other, &allow);
        let fsid = |l: &str| {
            l.split("fsid=")
                .nth(1)
                .unwrap()
                .trim_end_matches(')')
                .to_string()
        };
        let l2: Vec<&str> = text2.lines().collect();
        assert_eq!(
            fsid(l2[1]),
            fsid(lines[1]),
            "an image keeps its fsid when others are added"
        );
        assert_ne!(fsid(l2[1]), fsid(l2[2]));
    }

    #[test]
    fn with_ha_both_masters_derive_the_same_handle_key_from_the_ha_key() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let p = d.path().join(name);
            std::fs::write(&p, text).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            p
        };
        let ha = write("ha.key", "0123456789abcdef0123456789abcdef\n");
        let other = write("other.key", "fedcba9876543210fedcba9876543210\n");
        let config = |node: &str, peer: &str, key: &Path| {
            Config::parse(
                &format!(
                    "state_dir = \"{}/{node}\"\n[ha]\nenabled = true\nnode = \"{node}\"\npeer = \"{peer}\"\nkey_file = \"{}\"\n[[ha.links]]\nkind = \"udp\"\npeer = \"10.0.0.9\"\n",
                    d.path().display(),
                    key.display()
                ),
                "t",
                d.path(),
            )
            .unwrap()
        };
        let (ka, origin) = handle_key(&config("a", "b", &ha)).unwrap();
        let (kb, _) = handle_key(&config("b", "a", &ha)).unwrap();
        assert_eq!(ka.fingerprint(), kb.fingerprint());
        assert!(origin.contains("derived from the HA key"), "{origin}");
        assert_ne!(
            ka.0,
            *blake3::hash(b"0123456789abcdef0123456789abcdef").as_bytes()
        );
        let (kc, _) = handle_key(&config("a", "b", &other)).unwrap();
        assert_ne!(ka.fingerprint(), kc.fingerprint());
        // No key file was written: nothing to copy, nothing to diverge.
        assert!(!d.path().join("a/nfs/handle.key").exists());
    }

    #[test]
    fn an_unreadable_image_keeps_its_export_and_only_a_removed_one_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let images = d.path().join("images");
        let v = images.join("busy/versions/0001-x");
        std::fs::create_dir_all(v.join("root")).unwrap();
        std::os::unix::fs::symlink("versions/0001-x", images.join("busy/current")).unwrap();
        std::fs::write(v.join("meta.json"), "{ not json").unwrap();
        let mut previous = BTreeMap::new();
        let spec = ExportSpec::new(
            "busy",
            b"/images/busy",
            ExportSource::Current(images.join("busy/current")),
        );
        previous.insert("busy".to_string(), spec.clone());
        // Metadata unreadable right now: still served as before.
        let now = image_exports(&images, d.path(), &previous);
        assert!(now.get("busy").is_some_and(|s| same_spec(s, &spec)));
        // Never seen before and unreadable: not exported.
        assert!(image_exports(&images, d.path(), &BTreeMap::new()).is_empty());
        // The store cannot be listed: the previous set stays whole.
        let unlistable = d.path().join("not-a-dir");
        std::fs::write(&unlistable, "x").unwrap();
        assert_eq!(image_exports(&unlistable, d.path(), &previous).len(), 1);
        // The image is gone: dropped.
        std::fs::remove_dir_all(images.join("busy")).unwrap();
        assert!(image_exports(&images, d.path(), &previous).is_empty());
    }

    #[test]
    fn the_default_allow_list_is_the_boot_network() {
        let c = Config::parse(
            "[network]\naddress = \"10.5.6.7\"\nprefix_len = 16\n",
            "t",
            Path::new("/"),
        )
        .unwrap();
        assert_eq!(
            allow_list(&c).unwrap(),
            vec![("10.5.0.0".parse().unwrap(), 16)]
        );
    }
}
