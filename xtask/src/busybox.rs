//! The static busybox that is the node's userland, and the list of its applets.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::debian::{self, Cache};
use crate::ui::Step;

/// The package with the statically linked busybox: no shared libraries to carry.
pub const PACKAGE: &str = "busybox-static";

pub struct Busybox {
    pub path: PathBuf,
    /// Applet names (`sh`, `ip`, …). All go to /bin: PATH covers it, and one directory keeps
    /// the layout independent of busybox's idea of sbin vs bin.
    pub applets: Vec<String>,
    pub source: String,
}

/// busybox from the Debian package, fetched into the cache (never installed on the host).
pub fn debian(cache: &Cache, step: &Step) -> Result<Busybox> {
    let unpacked = cache.fetch(PACKAGE, step)?;
    let bb = local(&unpacked.root.join("bin/busybox"))?;
    step.summary(format!(
        "{} applets, {}",
        bb.applets.len(),
        debian::describe(&unpacked)
    ));
    Ok(Busybox {
        source: format!("debian:{}={}", unpacked.package, unpacked.version),
        ..bb
    })
}

/// A busybox binary given on the command line.
pub fn local(path: &Path) -> Result<Busybox> {
    Ok(Busybox {
        path: path.to_path_buf(),
        applets: images::initramfs::busybox_applets(path)?,
        source: "local".into(),
    })
}
