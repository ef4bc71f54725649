//! `clustermaker image …`: the image store from the command line (build, update, list, show,
//! snapshot, rollback, verify, prune, rm). The work is in the `images` crate; this file parses,
//! prints and checks what only the appliance knows (which nodes use an image).
//!
//! Changing an image safely: change its source and run `image update NAME` (a new version is
//! published beside the old one and switched to atomically; nodes boot it at their next boot).
//! Never edit `versions/*/root` in place: files there may be hard links shared with other
//! versions and snapshots; `image verify` names files changed that way.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use images::progress::Console;
use images::{BuildOptions, Compression, InitramfsOptions, Source, Store};
use serde_json::json;

use crate::config::Config;
use crate::registry::Registry;

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Builds an image (or a new version of it) from a source and makes it current.
    ///
    /// Sources: `host` (the master's own root, served live minus its identity files and
    /// state), `dir:PATH`, `tar:FILE` (.tar/.tar.gz/.tgz), `oci:FILE` (`docker save` or OCI
    /// image-layout tar), `debootstrap:SUITE` (a fresh Debian root). The kernel is the image's
    /// own boot/vmlinuz-* unless --kernel is given. Same input, same content hash.
    Build {
        name: String,
        /// Where the root comes from.
        #[arg(long = "from", value_name = "SOURCE")]
        from: Source,
        #[command(flatten)]
        flags: BuildFlags,
    },
    /// Rebuilds an image from its recorded source (or --from): a new version beside the old,
    /// switched atomically; nothing is published when nothing changed.
    Update {
        name: String,
        #[arg(long = "from", value_name = "SOURCE")]
        from: Option<Source>,
        #[command(flatten)]
        flags: BuildFlags,
    },
    /// Images with their current version, source, content hash, size, kernel, build time and
    /// snapshots (with the space only they use).
    List {
        #[arg(long)]
        json: bool,
    },
    /// One image in detail: every version and snapshot.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Freezes the current version as a snapshot (reflinks on btrfs/XFS, else hard links;
    /// a host image is copied). Default name: snap-N.
    Snapshot {
        name: String,
        snapshot: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Publishes a snapshot as the new current version (NAME@SNAPSHOT); nodes boot it at their
    /// next boot; the versions before it are kept.
    Rollback {
        #[arg(value_name = "NAME@SNAPSHOT")]
        target: String,
        /// Publish a snapshot even if its files changed since it was taken.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Rehashes the current version and every snapshot and names files changed in place
    /// (exit status 1 when any did).
    Verify {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Removes old versions, keeping the newest N and the current one.
    Prune {
        name: String,
        #[arg(long, value_name = "N")]
        keep: usize,
        #[arg(long)]
        json: bool,
    },
    /// Shows what a node gets on top of its image at boot: its overlay (hostname, hosts,
    /// network, fstab, agent configuration, SSH host keys); NODE is a name or a MAC. `--out
    /// DIR` writes the files there (private keys included).
    Render {
        node: String,
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Deletes an image with all its versions and snapshots.
    Rm {
        name: String,
        /// Delete even when nodes are assigned to it.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug, Clone)]
pub struct BuildFlags {
    /// Kernel to boot instead of the image's own.
    #[arg(long, value_name = "PATH", env = "CM_IMAGE_KERNEL")]
    kernel: Option<PathBuf>,
    /// The kernel's lib/modules/<version> directory [default: /lib/modules/<version from the file name>].
    #[arg(long, value_name = "DIR", env = "CM_IMAGE_MODULES")]
    modules: Option<PathBuf>,
    /// Static busybox for the node initramfs.
    #[arg(long, value_name = "PATH", env = "CM_BUSYBOX", default_value = images::initramfs::DEFAULT_BUSYBOX)]
    busybox: PathBuf,
    /// Kernel module to load at boot (repeatable; dependencies are added).
    #[arg(long = "module", value_name = "NAME")]
    extra_modules: Vec<String>,
    /// Do not load the default modules (virtio_pci virtio_net nfsv3 overlay).
    #[arg(long)]
    no_default_modules: bool,
    /// Leave the clustermaker agent out of the initramfs (/init then reports with wget).
    #[arg(long)]
    no_agent: bool,
    /// Initramfs compression: zstd, gzip or none, optionally with :LEVEL.
    #[arg(long, value_name = "FORMAT", default_value = "zstd:9")]
    compress: Compression,
    /// Clamp every mtime to this (reproducible builds); also the initramfs' mtime.
    #[arg(long, value_name = "SECONDS", env = "SOURCE_DATE_EPOCH")]
    source_date_epoch: Option<i64>,
    /// Debian mirror for debootstrap:SUITE.
    #[arg(long, value_name = "URL")]
    mirror: Option<String>,
    #[arg(long)]
    json: bool,
}

pub fn run(config: &Config, cmd: ImageCommand) -> Result<()> {
    let store = Store::new(config.boot.images_dir.clone());
    match cmd {
        ImageCommand::Render { node, out, json } => {
            crate::cli_overlay::render_cmd(config, &node, json, out.as_deref())
        }
        ImageCommand::Build { name, from, flags } => build(config, &store, &name, from, &flags),
        ImageCommand::Update { name, from, flags } => {
            let source = match from {
                Some(s) => s,
                None => {
                    let cur = store.current(&name)?.with_context(|| {
                        format!("no image `{name}` (fix: create it with `clustermaker image build {name} --from SOURCE`)")
                    })?;
                    store.version_meta(&name, &cur)?.source
                }
            };
            if !store.exists(&name) {
                bail!("no image `{name}` (fix: create it with `clustermaker image build {name} --from SOURCE`)");
            }
            build(config, &store, &name, source, &flags)
        }
        ImageCommand::List { json } => list(&store, json),
        ImageCommand::Show { name, json } => show(&store, &name, json),
        ImageCommand::Snapshot {
            name,
            snapshot,
            json,
        } => {
            let progress = Console::for_stderr(json);
            let r = images::snapshot(&store, &name, snapshot.as_deref(), progress.as_ref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{}@{}: froze version {} ({}), {} new ({} shared), image {}",
                    r.name,
                    r.snapshot,
                    r.from_version,
                    r.method,
                    human(r.space.unique_bytes),
                    human(r.space.shared_bytes),
                    human(r.image_bytes)
                );
            }
            Ok(())
        }
        ImageCommand::Rollback {
            target,
            force,
            json,
        } => {
            let (name, snap) = images::store::parse_ref(&target)?;
            let progress = Console::for_stderr(json);
            let r = images::rollback(&store, &name, &snap, force, progress.as_ref())?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{name}: version {} (from snapshot {snap}) is current; was {}; nodes boot it at their next boot",
                    r.version,
                    r.previous.as_deref().unwrap_or("none")
                );
            }
            Ok(())
        }
        ImageCommand::Verify { name, json } => {
            let progress = Console::for_stderr(json);
            let checks = images::verify(&store, &name, progress.as_ref())?;
            let bad = checks.iter().filter(|c| !c.ok).count();
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"name": name, "ok": bad == 0, "trees": checks})
                    )?
                );
            } else {
                for c in &checks {
                    if c.ok {
                        println!("{name} {}: ok", c.what);
                    } else {
                        println!("{name} {}: CHANGED {}", c.what, c.damage.join(" "));
                    }
                }
            }
            if bad > 0 {
                bail!("{bad} tree(s) of `{name}` changed in place (fix: publish a clean version with `image update {name}`; roll back only to unchanged snapshots)");
            }
            Ok(())
        }
        ImageCommand::Prune { name, keep, json } => {
            if !store.exists(&name) {
                bail!("no image `{name}` (fix: `clustermaker image list` shows the images)");
            }
            let lock = store.lock(&name)?;
            let removed = store.prune(&lock, &name, keep)?;
            if json {
                println!("{}", json!({"name": name, "removed": removed}));
            } else if removed.is_empty() {
                println!("{name}: nothing to prune");
            } else {
                println!("{name}: removed {}", removed.join(" "));
            }
            Ok(())
        }
        ImageCommand::Rm { name, force, json } => {
            if !store.exists(&name) {
                bail!("no image `{name}` (fix: `clustermaker image list` shows the images)");
            }
            let users = nodes_using(config, &name)?;
            if !users.is_empty() && !force {
                bail!(
                    "image `{name}` is assigned to {} (fix: move them with `clustermaker node set NODE --image OTHER`, or pass --force)",
                    users.join(", ")
                );
            }
            store.remove(&name)?;
            if json {
                println!(
                    "{}",
                    json!({"name": name, "removed": true, "assigned_nodes": users})
                );
            } else {
                println!("{name}: removed");
            }
            Ok(())
        }
    }
}

/// Member nodes that boot `image` (named, or through the default image).
fn nodes_using(config: &Config, image: &str) -> Result<Vec<String>> {
    let reg = Registry::load(&config.state_dir)?;
    Ok(reg
        .nodes
        .iter()
        .filter(|n| n.image.as_deref().unwrap_or(&config.boot.default_image) == image)
        .map(|n| n.name.clone())
        .collect())
}

fn build(config: &Config, store: &Store, name: &str, source: Source, f: &BuildFlags) -> Result<()> {
    if !f.busybox.is_file() {
        bail!(
            "no busybox at {} (fix: pass --busybox PATH to a static busybox, e.g. the one `cargo xtask build-image` unpacks under target/cm-cache/unpacked/busybox-static_*/bin/busybox)",
            f.busybox.display()
        );
    }
    let mut modules: Vec<String> = Vec::new();
    if !f.no_default_modules {
        modules.extend(
            images::initramfs::DEFAULT_MODULES
                .iter()
                .map(|m| m.to_string()),
        );
    }
    modules.extend(f.extra_modules.iter().cloned());
    let agent = if f.no_agent {
        None
    } else {
        Some(
            std::env::current_exe()
                .context("cannot find the running clustermaker binary (fix: pass --no-agent)")?,
        )
    };
    let opts = BuildOptions {
        source,
        kernel: f.kernel.clone(),
        modules: f.modules.clone(),
        initramfs: InitramfsOptions {
            busybox: f.busybox.clone(),
            agent,
            modules,
            compression: f.compress,
        },
        source_date_epoch: f.source_date_epoch,
        host_root: "/".into(),
        state_dir: config.state_dir.clone(),
        mirror: f.mirror.clone(),
    };
    let progress = Console::for_stderr(f.json);
    let r = images::build(store, name, &opts, progress.as_ref())?;
    if f.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else if r.unchanged {
        println!("{name}: unchanged, version {} stays current", r.version);
    } else {
        println!(
            "{name}: version {} is current ({}; {} entries, {}; kernel {}; {} files shared with the previous version; {:.1} s)",
            r.version,
            r.meta.source,
            r.meta.entries,
            human(r.meta.content_bytes),
            r.meta.kernel.as_ref().map(|k| k.version.as_str()).unwrap_or("-"),
            r.shared.reflinked + r.shared.hardlinked,
            r.build_secs
        );
    }
    Ok(())
}

fn list(store: &Store, json: bool) -> Result<()> {
    let mut all = Vec::new();
    for n in store.names()? {
        all.push(images::info(store, &n)?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(());
    }
    if all.is_empty() {
        println!("no images (create one with `clustermaker image build NAME --from SOURCE`)");
        return Ok(());
    }
    println!(
        "{:<16} {:<18} {:<28} {:<12} {:>10} {:<22} BUILT",
        "NAME", "CURRENT", "SOURCE", "HASH", "SIZE", "KERNEL"
    );
    for i in &all {
        println!(
            "{:<16} {:<18} {:<28} {:<12} {:>10} {:<22} {}",
            i.name,
            i.current.as_deref().unwrap_or("-"),
            i.source.as_deref().unwrap_or("-"),
            i.content_hash
                .as_deref()
                .map(|h| &h[..12.min(h.len())])
                .unwrap_or("live"),
            human(i.content_bytes),
            i.kernel_version.as_deref().unwrap_or("-"),
            i.built_at.map(when).unwrap_or_else(|| "-".into())
        );
        print_snapshots(i);
    }
    Ok(())
}

fn print_snapshots(i: &images::ImageInfo) {
    for s in &i.snapshots {
        println!(
            "  @{:<14} from {:<18} {:>10} new ({})  {}",
            s.name,
            s.from_version,
            human(s.space.unique_bytes),
            if s.space.reflinks_seen {
                "reflink".to_string()
            } else {
                s.method.clone()
            },
            if s.changed.is_empty() {
                "ok".to_string()
            } else {
                format!("CHANGED {}", s.changed.join(" "))
            }
        );
    }
}

fn show(store: &Store, name: &str, json: bool) -> Result<()> {
    let i = images::info(store, name)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&i)?);
        return Ok(());
    }
    println!("image      {}", i.name);
    println!("source     {}", i.source.as_deref().unwrap_or("-"));
    println!("current    {}", i.current.as_deref().unwrap_or("-"));
    println!(
        "hash       {}",
        i.content_hash.as_deref().unwrap_or("live (not hashed)")
    );
    println!(
        "size       {} in {} entries",
        human(i.content_bytes),
        i.entries
    );
    println!("kernel     {}", i.kernel_version.as_deref().unwrap_or("-"));
    if let Some(images::Export::Live { root, exclude }) = &i.export {
        println!(
            "export     {} live, excluding {}",
            root.display(),
            exclude.join(" ")
        );
    }
    println!("versions");
    for v in &i.versions {
        println!(
            "  {} {:<18} {}{}",
            if v.current { "*" } else { " " },
            v.version,
            when(v.built_at),
            v.rolled_back_from
                .as_deref()
                .map(|s| format!(" (rollback to {s})"))
                .unwrap_or_default()
        );
    }
    if !i.snapshots.is_empty() {
        println!("snapshots");
        print_snapshots(&i);
    }
    Ok(())
}

fn human(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < U.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[u])
    }
}

/// Unix seconds as UTC `YYYY-MM-DD HH:MM`.
fn when(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    // RFC 3339 `YYYY-MM-DDTHH:MM:SSZ`, cut to the minute.
    let text = humantime::format_rfc3339_seconds(t).to_string();
    text.get(..16).unwrap_or(&text).replacen('T', " ", 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human(10), "10 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(when(0), "1970-01-01 00:00");
        assert_eq!(when(1_798_416_000), "2026-12-28 00:00");
    }
}
