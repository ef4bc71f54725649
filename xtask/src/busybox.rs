//! The static busybox that is the node's userland, and the list of its applets.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::debian::{self, Cache};
use crate::ui::Step;

/// The package with the statically linked busybox: no shared libraries to carry.
pub const PACKAGE: &str = "busybox-static";

/// The applets /init and the udhcpc script use.
pub const NEEDED: &[&str] = &[
    "sh", "mount", "insmod", "udhcpc", "ip", "ifconfig", "route", "wget", "cat", "cut", "tr",
    "sed", "grep", "sleep", "setsid", "cttyhack", "hostname", "basename", "uname",
];

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
    let out = Command::new(path).arg("--list").output().with_context(|| {
        format!(
            "cannot run {} (fix: pass a busybox binary for this machine)",
            path.display()
        )
    })?;
    if !out.status.success() {
        bail!(
            "`{} --list-full` failed (fix: use a busybox built with the --list-full option)",
            path.display()
        );
    }
    let mut applets: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        // `[` and `[[` are applets too; a name with a slash would escape bin/.
        .filter(|l| !l.is_empty() && l.as_str() != "busybox" && !l.contains('/'))
        .collect();
    applets.sort();
    applets.dedup();
    for name in NEEDED {
        if !applets.iter().any(|a| a == name) {
            bail!("busybox {} has no `{name}` applet, which /init needs (fix: use Debian's busybox-static)", path.display());
        }
    }
    Ok(Busybox {
        path: path.to_path_buf(),
        applets,
        source: "local".into(),
    })
}
