//! `image build` / `image update`: a source becomes a new version of an image, published beside
//! the old ones and switched to atomically.
//!
//! Steps, all inside `NAME/.build-*` (removed by the next run if this one is killed):
//! import the tree → clamp mtimes (optional) → list and hash it → pick the kernel → build the
//! initramfs → if nothing differs from the current version, stop ("unchanged") → share
//! unchanged files with the current version → write `listing` and `meta.json` → flush →
//! rename to `versions/VID` → switch `current`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use initrd::Compression;
use serde::Serialize;

use crate::import;
use crate::initramfs::NodeInitramfs;
use crate::kernel::{self, Kernel};
use crate::listing::{scan, Listing, ScanOptions};
use crate::meta::{self, Export, InitramfsInfo, KernelInfo, VersionMeta};
use crate::progress::Progress;
use crate::relpath::RelPath;
use crate::share::{self, ShareStats};
use crate::source::{self, Source};
use crate::store::{self, Store};
use crate::tree::TreeWriter;

/// What goes into the node initramfs besides the kernel's modules.
#[derive(Debug, Clone)]
pub struct InitramfsOptions {
    /// A static busybox.
    pub busybox: PathBuf,
    /// The clustermaker binary for the node (normally the running executable).
    pub agent: Option<PathBuf>,
    /// Modules to load (dependencies are added).
    pub modules: Vec<String>,
    pub compression: Compression,
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub source: Source,
    /// A kernel given explicitly; wins over the image's own.
    pub kernel: Option<PathBuf>,
    /// Its `lib/modules/<version>` directory.
    pub modules: Option<PathBuf>,
    pub initramfs: InitramfsOptions,
    /// Clamp mtimes to this (SOURCE_DATE_EPOCH); also the initramfs mtime.
    pub source_date_epoch: Option<i64>,
    /// The master's root for the `host` source (`/`; a directory in tests).
    pub host_root: PathBuf,
    /// clustermaker's state directory, excluded from a host image.
    pub state_dir: PathBuf,
    /// Debian mirror for `debootstrap`.
    pub mirror: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub name: String,
    pub version: String,
    /// The build matched the current version; nothing was published.
    pub unchanged: bool,
    pub path: PathBuf,
    pub meta: VersionMeta,
    /// Files shared with the previous version.
    pub shared: ShareStats,
    pub build_secs: f64,
}

pub fn build(
    store: &Store,
    name: &str,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<BuildReport> {
    let started = Instant::now();
    let lock = store.lock(name)?;
    let staging = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&lock.dir)
        .with_context(|| {
            format!(
                "cannot create a staging directory in {}",
                lock.dir.display()
            )
        })?;
    let stage = staging.path();
    let root = stage.join(store::ROOT);

    // 1. The tree.
    let (listing, export): (Option<Listing>, Export) = match &opts.source {
        Source::Host => {
            let exclude = host_excludes(&opts.host_root, &opts.state_dir);
            (
                None,
                Export::Live {
                    root: opts.host_root.clone(),
                    exclude,
                },
            )
        }
        src => {
            fs::create_dir(&root)?;
            import_source(src, &root, opts, progress)?;
            if let Some(epoch) = opts.source_date_epoch {
                share::clamp_mtimes(&root, epoch)?;
            }
            progress.phase("hashing", None);
            let l = scan(
                &root,
                &ScanOptions {
                    hash: true,
                    ..Default::default()
                },
                progress,
            )?;
            progress.done();
            (Some(l), Export::Tree)
        }
    };

    // 2. Kernel and initramfs.
    let tree_for_kernel: &Path = match &export {
        Export::Tree => &root,
        Export::Live { root, .. } => root,
    };
    let k = pick_kernel(tree_for_kernel, opts)?;
    progress.note(&format!("kernel {} ({})", k.0.version, k.1));
    fs::copy(&k.0.vmlinuz, stage.join(store::KERNEL))
        .with_context(|| format!("cannot copy the kernel {}", k.0.vmlinuz.display()))?;
    progress.phase("initramfs", None);
    let built = NodeInitramfs {
        kernel_version: k.0.version.clone(),
        modules_dir: k.0.modules_dir.clone(),
        modules: opts.initramfs.modules.clone(),
        busybox: opts.initramfs.busybox.clone(),
        agent: opts.initramfs.agent.clone(),
        mtime: opts
            .source_date_epoch
            .unwrap_or(0)
            .clamp(0, u32::MAX as i64) as u32,
        compression: opts.initramfs.compression,
    }
    .build()?;
    fs::write(stage.join(store::INITRAMFS), &built.built.image)?;
    progress.done();

    let content_hash = listing.as_ref().map(|l| l.content_hash());
    let mut meta = VersionMeta {
        format: meta::FORMAT,
        name: name.to_string(),
        version: String::new(),
        source: match (&opts.source, &opts.mirror) {
            (Source::Debootstrap { suite, .. }, Some(m)) => Source::Debootstrap {
                suite: suite.clone(),
                mirror: Some(m.clone()),
            },
            (s, _) => s.clone(),
        },
        export,
        content_hash: content_hash.clone(),
        entries: listing
            .as_ref()
            .map(|l| l.entries.len() as u64)
            .unwrap_or(0),
        content_bytes: listing.as_ref().map(|l| l.content_bytes()).unwrap_or(0),
        built_at: meta::now(),
        kernel: Some(KernelInfo {
            version: k.0.version.clone(),
            origin: k.1.clone(),
            file: meta::file_info(&stage.join(store::KERNEL))?,
        }),
        initramfs: Some(InitramfsInfo {
            file: meta::file_info(&stage.join(store::INITRAMFS))?,
            modules: built.modules,
            compression: opts.initramfs.compression.to_string(),
        }),
        source_date_epoch: opts.source_date_epoch,
        rolled_back_from: None,
        snapshot: None,
    };

    // 3. Unchanged? Then the current version stays.
    let current = store.current(name)?;
    if let Some(cur) = &current {
        if let Ok(cm) = store.version_meta(name, cur) {
            if cm.same_content(&meta) && cm.source == meta.source {
                return Ok(BuildReport {
                    name: name.to_string(),
                    version: cur.clone(),
                    unchanged: true,
                    path: store.version_dir(name, cur),
                    meta: cm,
                    shared: ShareStats::default(),
                    build_secs: started.elapsed().as_secs_f64(),
                });
            }
        }
    }

    // 4. Share what did not change with the current version (tree, kernel, initramfs).
    let mut shared = ShareStats::default();
    if let Some(cm) = current
        .as_ref()
        .and_then(|c| store.version_meta(name, c).ok())
    {
        let cdir = store.version_dir(name, &cm.version);
        let pairs = [
            (
                store::KERNEL,
                meta.kernel.as_ref().map(|k| &k.file),
                cm.kernel.as_ref().map(|k| &k.file),
            ),
            (
                store::INITRAMFS,
                meta.initramfs.as_ref().map(|i| &i.file),
                cm.initramfs.as_ref().map(|i| &i.file),
            ),
        ];
        for (f, new, old) in pairs {
            if new.is_some() && new == old {
                let tmp = stage.join(".cm-share.tmp");
                let md = fs::metadata(cdir.join(f))?;
                share::share_file(
                    &cdir.join(f),
                    &tmp,
                    &crate::tree::Meta::of(&md),
                    share::ShareMode::ReflinkOrHardlink,
                    &mut None,
                )?;
                fs::rename(&tmp, stage.join(f))?;
            }
        }
    }
    if let (Some(l), Some(cur)) = (&listing, &current) {
        let cdir = store.version_dir(name, cur);
        if let Ok(cl) = Listing::load(&cdir.join(store::LISTING)) {
            progress.phase("sharing", None);
            shared = share::dedupe(&root, l, &cdir.join(store::ROOT), &cl, progress)?;
            progress.done();
        }
    }

    // 5. Publish.
    let number = store.next_number(name)?;
    let vid = store::vid(number, content_hash.as_deref());
    meta.version = vid.clone();
    if let Some(l) = &listing {
        fs::write(stage.join(store::LISTING), l.to_text())?;
    }
    meta.write(&stage.join(store::META))?;
    let staged = staging.keep();
    let path = store.publish(&lock, &staged, &vid)?;
    Ok(BuildReport {
        name: name.to_string(),
        version: vid,
        unchanged: false,
        path,
        meta,
        shared,
        build_secs: started.elapsed().as_secs_f64(),
    })
}

fn import_source(
    src: &Source,
    root: &Path,
    opts: &BuildOptions,
    progress: &dyn Progress,
) -> Result<()> {
    match src {
        Source::Dir { path } => {
            let mut t = TreeWriter::new(root);
            import::from_dir(path, &[], false, &mut t, progress)?;
            t.finish()?;
        }
        Source::Tar { path } => {
            let mut t = TreeWriter::new(root);
            import::from_tar(path, &mut t, progress)?;
            t.finish()?;
        }
        Source::Oci { path } => {
            let mut t = TreeWriter::new(root);
            import::from_oci(path, &mut t, progress)?;
            t.finish()?;
        }
        Source::Debootstrap { suite, mirror } => {
            progress.phase("debootstrap", None);
            let m = mirror.as_deref().or(opts.mirror.as_deref());
            let status = source::debootstrap_command(suite, root, m)
                .stdout(std::process::Stdio::null())
                .status()
                .context("cannot run debootstrap (fix: apt-get install debootstrap)")?;
            if !status.success() {
                bail!("debootstrap {suite} failed with {status} (fix: check the suite name and the mirror {}; its log is in the staging root's debootstrap/debootstrap.log)", m.unwrap_or(source::DEFAULT_MIRROR));
            }
            normalize_debootstrap(root)?;
            progress.done();
        }
        Source::Host => unreachable!("host images are not copied"),
    }
    Ok(())
}

/// What debootstrap leaves that is specific to one run or one machine, reset so that two runs
/// with the same SOURCE_DATE_EPOCH and mirror state give the same tree, and so that nodes do
/// not share one identity: `etc/machine-id` empty (systemd then makes one per boot on a
/// read-only root, the documented state for images), dbus' copy removed, the install logs
/// emptied and ldconfig's aux-cache (a cache of file stats) removed.
pub fn normalize_debootstrap(root: &Path) -> Result<()> {
    for (path, action) in [
        ("etc/machine-id", "empty"),
        ("var/lib/dbus/machine-id", "remove"),
        ("var/log/bootstrap.log", "empty"),
        ("var/log/dpkg.log", "empty"),
        ("var/log/alternatives.log", "empty"),
        ("var/log/apt/history.log", "empty"),
        ("var/log/apt/term.log", "empty"),
        ("var/cache/ldconfig/aux-cache", "remove"),
    ] {
        let p = root.join(path);
        // Only regular files: a symlink here (dbus' machine-id → /etc/machine-id) is left alone.
        if !p.symlink_metadata().map(|m| m.is_file()).unwrap_or(false) {
            continue;
        }
        match action {
            "empty" => fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&p)
                .map(|_| ()),
            _ => fs::remove_file(&p),
        }
        .with_context(|| format!("cannot reset {}", p.display()))?;
    }
    Ok(())
}

/// (kernel, origin): `--kernel` when given, else the tree's own, else an error saying how to fix.
fn pick_kernel(tree: &Path, opts: &BuildOptions) -> Result<(Kernel, String)> {
    if let Some(k) = &opts.kernel {
        return Ok((
            kernel::local(k, opts.modules.as_deref())?,
            k.display().to_string(),
        ));
    }
    if let Some(k) = kernel::in_root(tree) {
        return Ok((k, "image".into()));
    }
    bail!(
        "{} has no boot/vmlinuz-<version> with lib/modules/<version> (fix: install a kernel in the image, or pass --kernel PATH --modules DIR)",
        tree.display()
    )
}

/// The host excludes for `root`, with SSH host key globs expanded and the state directory
/// (when it is inside `root`) added.
pub fn host_excludes(root: &Path, state_dir: &Path) -> Vec<String> {
    let state_rel = state_dir
        .strip_prefix(root)
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let list = |dir: &str| -> Vec<String> {
        fs::read_dir(root.join(dir))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    source::expand_host_excludes(state_rel.as_deref(), &list)
}

/// Excludes as relative paths (for a walk).
pub fn exclude_paths(ex: &[String]) -> Vec<RelPath> {
    ex.iter()
        .filter_map(|x| RelPath::parse(x.as_bytes()).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debootstrap_leftovers_are_reset() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["etc", "var/lib/dbus", "var/log", "var/cache/ldconfig"] {
            fs::create_dir_all(r.join(d)).unwrap();
        }
        fs::write(r.join("etc/machine-id"), "0123456789abcdef\n").unwrap();
        std::os::unix::fs::symlink("/etc/machine-id", r.join("var/lib/dbus/machine-id")).unwrap();
        fs::write(r.join("var/log/dpkg.log"), "2026-11-27 installed\n").unwrap();
        fs::write(r.join("var/cache/ldconfig/aux-cache"), "stats").unwrap();
        normalize_debootstrap(r).unwrap();
        assert_eq!(fs::read(r.join("etc/machine-id")).unwrap(), b"");
        assert!(
            fs::read_link(r.join("var/lib/dbus/machine-id")).is_ok(),
            "symlink kept"
        );
        assert_eq!(fs::read(r.join("var/log/dpkg.log")).unwrap(), b"");
        assert!(!r.join("var/cache/ldconfig/aux-cache").exists());
    }
}
