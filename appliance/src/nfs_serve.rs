//! The NFS side of `clustermaker serve`: every image of the store exported at `/images/NAME`
//! by the embedded server (`nfs` crate), kept in step with the store while serving.
//!
//! - **Which exports**: an image whose current version holds a tree is served from its
//!   `current` link (a publication switches the link; the `nfs` crate notices and serves the new
//!   version while retaining the old ones for handles already held); a `host` image is served
//!   live from its root minus its excludes. Images built, removed or turned from tree to live
//!   while serving change the set: a new [`nfs::exports::Exports`] is built and fully indexed
//!   beside the old one and swapped in only when ready, so nodes never see JUKEBOX delays for
//!   an image they already use.
//! - **The handle key** (`nfs.handle_key_file`) is made on first start; both masters must hold
//!   the same (cloning copies the state directory), or every handle goes stale at failover.
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
use nfs::handle::HandleKey;
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
                "nfs.handle_key_file {} (fix: chmod 600 it, or restore the key both masters share)",
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
        "nfs: made a new handle key (the backup master must get the same file)"
    );
    Ok(key)
}

/// The export of each image in `images_dir` whose current version can be served, by name.
/// Images without a current version, or whose metadata cannot be read, are left out with a
/// warning (the rest are still served).
pub fn image_exports(images_dir: &Path) -> BTreeMap<String, ExportSpec> {
    let mut out = BTreeMap::new();
    let store = images::store::Store::new(images_dir);
    let names = match store.names() {
        Ok(n) => n,
        Err(e) => {
            if images_dir.exists() {
                tracing::warn!("nfs: cannot list images in {}: {e:#}", images_dir.display());
            }
            return out;
        }
    };
    for name in names {
        let link = store.image_dir(&name).join("current");
        let meta = match store
            .current(&name)
            .and_then(|v| v.map(|vid| store.version_meta(&name, &vid)).transpose())
        {
            Ok(Some(m)) => m,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("nfs: image {name} is not exported: {e:#}");
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
                s
            }
        };
        out.insert(name, spec);
    }
    out
}

fn same_specs(a: &BTreeMap<String, ExportSpec>, b: &BTreeMap<String, ExportSpec>) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|((na, sa), (nb, sb))| {
            na == nb && sa.path == sb.path && sa.source == sb.source && sa.exclude == sb.exclude
        })
}

/// The exports being served: swapped whole when the set of images changes.
pub struct LiveExports {
    current: RwLock<Arc<Exports>>,
}

impl LiveExports {
    fn get(&self) -> Arc<Exports> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Served content generation summed over exports (changes whenever any export's does).
    pub fn generation_sum(&self) -> u64 {
        let e = self.get();
        e.names()
            .iter()
            .filter_map(|n| e.generation(n))
            .fold(0u64, |a, g| a.wrapping_add(g))
    }
}

impl Filesystem for LiveExports {
    fn mount(&self, path: &[u8]) -> Result<FileHandle, MountError> {
        self.get().mount(path)
    }
    fn export_paths(&self) -> Vec<Vec<u8>> {
        self.get().export_paths()
    }
    fn getattr(&self, fh: &FileHandle) -> Result<Attributes, NfsError> {
        self.get().getattr(fh)
    }
    fn lookup(&self, dir: &FileHandle, name: &[u8]) -> Result<(FileHandle, Attributes), NfsError> {
        self.get().lookup(dir, name)
    }
    fn readlink(&self, fh: &FileHandle) -> Result<Vec<u8>, NfsError> {
        self.get().readlink(fh)
    }
    fn readdir(
        &self,
        dir: &FileHandle,
        after: u64,
        max_entries: usize,
    ) -> Result<(Vec<DirEntry>, bool), NfsError> {
        self.get().readdir(dir, after, max_entries)
    }
    fn read(
        &self,
        fh: &FileHandle,
        offset: u64,
        buf: &mut [u8],
    ) -> Result<(usize, bool, Attributes), NfsError> {
        self.get().read(fh, offset, buf)
    }
    fn fsstat(&self, fh: &FileHandle) -> Result<(Attributes, FsStat), NfsError> {
        self.get().fsstat(fh)
    }
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

/// Builds and fully indexes an export set (blocking: walks and hashes trees).
fn build_exports(
    key: &HandleKey,
    specs: &BTreeMap<String, ExportSpec>,
    cfg: &ExportsConfig,
) -> Result<(Arc<Exports>, Rescanner)> {
    let exports = Arc::new(
        Exports::new(key.clone(), specs.values().cloned().collect(), cfg.clone())
            .map_err(|e| anyhow::anyhow!("{e}"))?,
    );
    exports.rescan_all();
    let rescanner = exports
        .start_rescanner()
        .context("cannot start the NFS rescanner thread")?;
    Ok((exports, rescanner))
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
    let key = load_or_create_key(&config.nfs.handle_key_file)?;
    let images_dir = config.boot.images_dir.clone();
    let cfg = exports_config(config);
    let specs = image_exports(&images_dir);
    let (exports, rescanner) = {
        let (key, specs, cfg) = (key.clone(), specs.clone(), cfg.clone());
        tokio::task::spawn_blocking(move || build_exports(&key, &specs, &cfg)).await??
    };
    for name in exports.names() {
        if let Some(s) = exports.stats(&name) {
            tracing::info!(
                export = %export_path(&name),
                version = %s.version,
                entries = s.entries,
                ms = s.index_build.as_millis() as u64,
                "nfs: exporting"
            );
        }
    }
    let live = Arc::new(LiveExports {
        current: RwLock::new(exports),
    });
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
    tracing::info!(listen = ?server.local_addrs(), key = %key.fingerprint(), "nfs: serving");

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
                    live, rescanner, specs, key, cfg, images_dir, state_dir, interval, status, stop,
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

/// Follows the store: a changed set of images → a new export set, built beside the old one and
/// swapped in when indexed; a changed content generation → `export-generation` bumped.
#[allow(clippy::too_many_arguments)]
fn watch_store(
    live: Arc<LiveExports>,
    mut rescanner: Rescanner,
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
        let now = image_exports(&images_dir);
        if !same_specs(&now, &specs) {
            match build_exports(&key, &now, &cfg) {
                Ok((exports, r)) => {
                    tracing::info!(images = ?now.keys().collect::<Vec<_>>(), "nfs: image set changed");
                    *live.current.write().unwrap_or_else(|e| e.into_inner()) = exports;
                    rescanner = r;
                    specs = now;
                    bump_export_generation(&state_dir);
                    last_generation = live.generation_sum();
                }
                Err(e) => tracing::error!("nfs: cannot export the new image set: {e:#}"),
            }
            continue;
        }
        let g = live.generation_sum();
        if g != last_generation {
            last_generation = g;
            bump_export_generation(&state_dir);
        }
    }
    drop(rescanner);
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
                .names()
                .into_iter()
                .filter_map(|name| {
                    let s = exports.stats(&name)?;
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
        &image_exports(&config.boot.images_dir),
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
            ExportSource::Directory(d) => d.clone(),
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
        assert!(lines[2].starts_with("\"/\" 10.0.0.0/24(ro,"));
        assert_eq!(
            text,
            kernel_exports_text(&specs, &allow),
            "stable across runs"
        );
        let fsid = |l: &str| {
            l.split("fsid=")
                .nth(1)
                .unwrap()
                .trim_end_matches(')')
                .to_string()
        };
        assert_ne!(fsid(lines[1]), fsid(lines[2]));
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
