//! Snapshots (`image snapshot`), rollback, verification, and the per-image report of
//! `image list` / `image show`.
//!
//! A snapshot freezes the current version as `snapshots/SNAP/` (same layout as a version).
//! Its files share data with the version: reflinks where the file system has them (each
//! snapshot file its own inode: writes into the version cannot reach it), else hard links
//! (writes *into* a shared file would reach it; see [`crate::share`] for why clustermaker never
//! does that and how it is detected). Directories are recreated, so the new space a snapshot
//! takes is its directories, symlinks and listing: a few percent of the image at most.
//!
//! A host image's tree is the live root, edited in place by the master's own tools, so its
//! snapshot copies the data (reflink, else bytes) and then shares unchanged files with the
//! previous snapshot of the same image (hard links between frozen snapshots are safe).
//!
//! Rollback publishes a snapshot as a new version (shared the same way) and switches `current`
//! to it: nodes boot it at their next boot; the versions before stay.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::build::exclude_paths;
use crate::import;
use crate::listing::{scan, Diff, Listing, ScanOptions};
use crate::meta::{self, Export, SnapshotInfo, VersionMeta};
use crate::progress::Progress;
use crate::share::{self, ShareMode, ShareStats};
use crate::space::{self, Space};
use crate::store::{self, Store};
use crate::tree::TreeWriter;

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotReport {
    pub name: String,
    pub snapshot: String,
    pub from_version: String,
    pub method: String,
    pub shared: ShareStats,
    pub space: Space,
    pub image_bytes: u64,
}

/// Copies or links the kernel and initramfs of a version/snapshot directory.
fn share_boot_files(src: &Path, dst: &Path) -> Result<()> {
    for f in [store::KERNEL, store::INITRAMFS] {
        let from = src.join(f);
        if !from.exists() {
            continue;
        }
        let md = fs::metadata(&from)?;
        let mut r = None;
        share::share_file(
            &from,
            &dst.join(f),
            &crate::tree::Meta::of(&md),
            ShareMode::ReflinkOrHardlink,
            &mut r,
        )?;
    }
    Ok(())
}

/// Writes the listing beside a tree; when `from` holds the same text (the snapshot of an
/// unchanged version, the rollback of an unchanged snapshot) the file is shared instead: on a
/// large image it is a third of what a snapshot would otherwise add.
fn write_listing(listing: &Listing, from: &Path, stage: &Path) -> Result<()> {
    let text = listing.to_text();
    let src = from.join(store::LISTING);
    if fs::read(&src)
        .map(|old| old == text.as_bytes())
        .unwrap_or(false)
    {
        let md = fs::metadata(&src)?;
        share::share_file(
            &src,
            &stage.join(store::LISTING),
            &crate::tree::Meta::of(&md),
            ShareMode::ReflinkOrHardlink,
            &mut None,
        )?;
        return Ok(());
    }
    fs::write(stage.join(store::LISTING), text)?;
    Ok(())
}

/// A default snapshot name: `snap-N`, N one more than the largest such.
pub fn next_snapshot_name(existing: &[String]) -> String {
    let n = existing
        .iter()
        .filter_map(|s| s.strip_prefix("snap-").and_then(|n| n.parse::<u64>().ok()))
        .max()
        .unwrap_or(0);
    format!("snap-{}", n + 1)
}

pub fn snapshot(
    store: &Store,
    name: &str,
    snap: Option<&str>,
    progress: &dyn Progress,
) -> Result<SnapshotReport> {
    if !store.exists(name) {
        bail!("no image `{name}` (fix: `clustermaker image list` shows the images)");
    }
    let lock = store.lock(name)?;
    let snap = match snap {
        Some(s) => s.to_string(),
        None => next_snapshot_name(&store.snapshots(name)?),
    };
    if !store::valid_name(&snap) {
        bail!("snapshot name `{snap}` is not valid (fix: letters, digits, `-`, `_`, `.`)");
    }
    let dest = store.snapshot_dir(name, &snap);
    if dest.exists() {
        bail!("image `{name}` already has a snapshot `{snap}` (fix: choose another name)");
    }
    let vid = store
        .current(name)?
        .with_context(|| format!("image `{name}` has no current version (fix: build it first)"))?;
    let vdir = store.version_dir(name, &vid);
    let vmeta = store.version_meta(name, &vid)?;
    let staging = tempfile::Builder::new()
        .prefix(".snap-")
        .tempdir_in(&lock.dir)?;
    let stage = staging.path();

    let (listing, stats) = match &vmeta.export {
        Export::Tree => {
            // The version's listing says what to freeze; a quick check first, so a version
            // damaged in place is frozen as it is now (and hashed again), not as it was.
            let vl = Listing::load(&vdir.join(store::LISTING))?;
            progress.phase("checking", None);
            let now = scan(&vdir.join(store::ROOT), &ScanOptions::default(), progress)?;
            let listing = if vl.diff(&now).is_empty() {
                vl
            } else {
                progress.note("the current version differs from its listing: hashing it again");
                scan(
                    &vdir.join(store::ROOT),
                    &ScanOptions {
                        hash: true,
                        ..Default::default()
                    },
                    progress,
                )?
            };
            progress.phase("snapshot", Some(listing.content_bytes()));
            let stats = share::clone_tree(
                &vdir.join(store::ROOT),
                &listing,
                &stage.join(store::ROOT),
                ShareMode::ReflinkOrHardlink,
                progress,
            )?;
            (listing, stats)
        }
        Export::Live { root, exclude } => {
            let ex = exclude_paths(exclude);
            let sroot = stage.join(store::ROOT);
            fs::create_dir(&sroot)?;
            let mut t = TreeWriter::new(&sroot);
            import::from_dir(root, &ex, true, &mut t, progress)?;
            t.finish()?;
            progress.phase("hashing", None);
            let l = scan(
                &sroot,
                &ScanOptions {
                    hash: true,
                    ..Default::default()
                },
                progress,
            )?;
            let mut stats = ShareStats {
                copied: l.entries.len() as u64,
                ..Default::default()
            };
            // Share unchanged files with the newest earlier snapshot of this image.
            if let Some(prev) = store.snapshots(name)?.iter().rev().find_map(|s| {
                let d = store.snapshot_dir(name, s);
                Listing::load(&d.join(store::LISTING))
                    .ok()
                    .map(|pl| (d, pl))
            }) {
                progress.phase("sharing", None);
                stats = share::dedupe(&sroot, &l, &prev.0.join(store::ROOT), &prev.1, progress)?;
            }
            (l, stats)
        }
    };
    progress.done();
    share_boot_files(&vdir, stage)?;
    write_listing(&listing, &vdir, stage)?;
    let mut smeta = vmeta.clone();
    if smeta.content_hash.is_none() {
        smeta.content_hash = Some(listing.content_hash());
        smeta.entries = listing.entries.len() as u64;
        smeta.content_bytes = listing.content_bytes();
    }
    smeta.export = Export::Tree;
    smeta.snapshot = Some(SnapshotInfo {
        name: snap.clone(),
        created_at: meta::now(),
        from_version: vid.clone(),
        method: stats.method().into(),
    });
    smeta.write(&stage.join(store::META))?;
    let staged = staging.keep();
    store::sync_fs(&staged)?;
    fs::rename(&staged, &dest)
        .with_context(|| format!("cannot move the snapshot to {}", dest.display()))?;
    store::fsync_dir(&lock.dir.join(store::SNAPSHOTS))?;
    let space = space::measure(&dest)?;
    Ok(SnapshotReport {
        name: name.to_string(),
        snapshot: snap,
        from_version: vid,
        method: stats.method().into(),
        shared: stats,
        space,
        image_bytes: listing.content_bytes(),
    })
}

/// What `verify` found for one tree.
#[derive(Debug, Clone, Serialize)]
pub struct TreeCheck {
    /// `version VID` or `snapshot SNAP`.
    pub what: String,
    pub ok: bool,
    /// Changed files, named (with + added, - removed, ~ changed).
    pub damage: Vec<String>,
}

fn check_tree(dir: &Path, full: bool, progress: &dyn Progress) -> Result<Option<Diff>> {
    let lp = dir.join(store::LISTING);
    if !lp.exists() {
        return Ok(None);
    }
    let expected = Listing::load(&lp)?;
    let actual = scan(
        &dir.join(store::ROOT),
        &ScanOptions {
            hash: full,
            ..Default::default()
        },
        progress,
    )?;
    Ok(Some(expected.diff(&actual)))
}

fn to_check(what: String, d: Option<Diff>) -> TreeCheck {
    match d {
        None => TreeCheck {
            what,
            ok: true,
            damage: vec![],
        },
        Some(d) => {
            let mut damage: Vec<String> = Vec::new();
            damage.extend(d.changed.iter().map(|p| format!("~{p}")));
            damage.extend(d.added.iter().map(|p| format!("+{p}")));
            damage.extend(d.removed.iter().map(|p| format!("-{p}")));
            TreeCheck {
                what,
                ok: damage.is_empty(),
                damage,
            }
        }
    }
}

/// Rehashes the current version and every snapshot and compares them with their listings.
pub fn verify(store: &Store, name: &str, progress: &dyn Progress) -> Result<Vec<TreeCheck>> {
    let mut out = Vec::new();
    if let Some(v) = store.current(name)? {
        let d = check_tree(&store.version_dir(name, &v), true, progress)?;
        out.push(to_check(format!("version {v}"), d));
    }
    for s in store.snapshots(name)? {
        let d = check_tree(&store.snapshot_dir(name, &s), true, progress)?;
        out.push(to_check(format!("snapshot {s}"), d));
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub name: String,
    pub snapshot: String,
    pub version: String,
    pub previous: Option<String>,
    pub shared: ShareStats,
}

/// Publishes snapshot `snap` as a new current version. Refuses a damaged snapshot (naming the
/// files) unless `force`.
pub fn rollback(
    store: &Store,
    name: &str,
    snap: &str,
    force: bool,
    progress: &dyn Progress,
) -> Result<RollbackReport> {
    let sdir = store.snapshot_dir(name, snap);
    if !sdir.join(store::META).is_file() {
        bail!("image `{name}` has no snapshot `{snap}` (fix: `clustermaker image list {name}` shows its snapshots)");
    }
    let lock = store.lock(name)?;
    progress.phase("verifying", None);
    let diff = check_tree(&sdir, true, progress)?;
    if let Some(d) = &diff {
        if !d.is_empty() && !force {
            bail!("snapshot {name}@{snap} changed since it was taken (through a shared hard link?): {} (fix: inspect it, then `image rollback --force` to publish it as it is now)", d.summary(8));
        }
    }
    let listing = if diff.as_ref().is_some_and(|d| !d.is_empty()) {
        scan(
            &sdir.join(store::ROOT),
            &ScanOptions {
                hash: true,
                ..Default::default()
            },
            progress,
        )?
    } else {
        Listing::load(&sdir.join(store::LISTING))?
    };
    let smeta = VersionMeta::load(&sdir.join(store::META))?;
    let staging = tempfile::Builder::new()
        .prefix(".build-")
        .tempdir_in(&lock.dir)?;
    let stage = staging.path();
    progress.phase("rollback", Some(listing.content_bytes()));
    let stats = share::clone_tree(
        &sdir.join(store::ROOT),
        &listing,
        &stage.join(store::ROOT),
        ShareMode::ReflinkOrHardlink,
        progress,
    )?;
    progress.done();
    share_boot_files(&sdir, stage)?;
    write_listing(&listing, &sdir, stage)?;
    let previous = store.current(name)?;
    let hash = listing.content_hash();
    let vid = store::vid(store.next_number(name)?, Some(&hash));
    let mut m = smeta;
    m.version = vid.clone();
    m.content_hash = Some(hash);
    m.export = Export::Tree;
    m.built_at = meta::now();
    m.rolled_back_from = Some(snap.to_string());
    m.snapshot = None;
    m.write(&stage.join(store::META))?;
    let staged = staging.keep();
    store.publish(&lock, &staged, &vid)?;
    Ok(RollbackReport {
        name: name.to_string(),
        snapshot: snap.to_string(),
        version: vid,
        previous,
        shared: stats,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotSummary {
    pub name: String,
    pub created_at: u64,
    pub from_version: String,
    pub method: String,
    pub content_hash: Option<String>,
    pub space: Space,
    /// Quick check (metadata) against its listing: files changed since it was taken.
    pub changed: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionSummary {
    pub version: String,
    pub current: bool,
    pub built_at: u64,
    pub content_hash: Option<String>,
    pub rolled_back_from: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageInfo {
    pub name: String,
    pub current: Option<String>,
    pub path: Option<PathBuf>,
    pub source: Option<String>,
    pub export: Option<Export>,
    pub content_hash: Option<String>,
    pub content_bytes: u64,
    pub entries: u64,
    pub kernel_version: Option<String>,
    pub built_at: Option<u64>,
    pub versions: Vec<VersionSummary>,
    pub snapshots: Vec<SnapshotSummary>,
}

/// Everything `image list` / `image show` print about one image. Snapshot space and the quick
/// check walk each snapshot (metadata only, no hashing).
pub fn info(store: &Store, name: &str) -> Result<ImageInfo> {
    if !store.exists(name) {
        bail!("no image `{name}` (fix: `clustermaker image list` shows the images)");
    }
    let current = store.current(name)?;
    let cm = current
        .as_ref()
        .and_then(|v| store.version_meta(name, v).ok());
    let mut versions = Vec::new();
    for v in store.versions(name)? {
        let m = store.version_meta(name, &v).ok();
        versions.push(VersionSummary {
            current: Some(&v) == current.as_ref(),
            built_at: m.as_ref().map(|m| m.built_at).unwrap_or(0),
            content_hash: m.as_ref().and_then(|m| m.content_hash.clone()),
            rolled_back_from: m.and_then(|m| m.rolled_back_from),
            version: v,
        });
    }
    let mut snapshots = Vec::new();
    for s in store.snapshots(name)? {
        let d = store.snapshot_dir(name, &s);
        let Ok(m) = VersionMeta::load(&d.join(store::META)) else {
            continue;
        };
        let quick = check_tree(&d, false, &crate::progress::Silent)?;
        let changed = to_check(String::new(), quick).damage;
        let si = m.snapshot.clone();
        snapshots.push(SnapshotSummary {
            name: s,
            created_at: si.as_ref().map(|s| s.created_at).unwrap_or(0),
            from_version: si
                .as_ref()
                .map(|s| s.from_version.clone())
                .unwrap_or_default(),
            method: si.map(|s| s.method).unwrap_or_default(),
            content_hash: m.content_hash,
            space: space::measure(&d)?,
            changed,
        });
    }
    Ok(ImageInfo {
        name: name.to_string(),
        path: current.as_ref().map(|v| store.version_dir(name, v)),
        current,
        source: cm.as_ref().map(|m| m.source.to_string()),
        export: cm.as_ref().map(|m| m.export.clone()),
        content_hash: cm.as_ref().and_then(|m| m.content_hash.clone()),
        content_bytes: cm.as_ref().map(|m| m.content_bytes).unwrap_or(0),
        entries: cm.as_ref().map(|m| m.entries).unwrap_or(0),
        kernel_version: cm
            .as_ref()
            .and_then(|m| m.kernel.as_ref().map(|k| k.version.clone())),
        built_at: cm.as_ref().map(|m| m.built_at),
        versions,
        snapshots,
    })
}
