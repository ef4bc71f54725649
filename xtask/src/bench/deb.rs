//! Anchors that must not be installed (atftpd conflicts with tftpd-hpa as a Debian package;
//! installing nginx would start a system service): `apt-get download` + `dpkg-deb -x` into the
//! download cache, in the same layout as `cargo xtask build-image` uses (`debs/`,
//! `unpacked/<deb file stem>/`), and run from there.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

use super::sys::run_cmd;

/// The unpacked tree of `package` (newest cached version; downloaded when none is cached).
pub fn unpacked(cache: &Path, package: &str) -> Result<PathBuf> {
    let debs = cache.join("debs");
    let unpacked = cache.join("unpacked");
    for d in [&debs, &unpacked] {
        fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let deb = match newest(&debs, package, ".deb")? {
        Some(deb) => deb,
        None => {
            run_cmd(
                Command::new("apt-get")
                    .args(["download", "-q", package])
                    .current_dir(&debs),
            )
            .with_context(|| {
                format!("cannot download the Debian package {package} (fix: apt-get update)")
            })?;
            newest(&debs, package, ".deb")?.ok_or_else(|| {
                anyhow!(
                    "apt-get download {package} left no .deb in {}",
                    debs.display()
                )
            })?
        }
    };
    let stem = deb
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".deb"))
        .ok_or_else(|| anyhow!("odd .deb name {}", deb.display()))?
        .to_string();
    let dest = unpacked.join(&stem);
    if dest.is_dir() {
        return Ok(dest);
    }
    let tmp = unpacked.join(format!(".{stem}.partial"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    run_cmd(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))
        .with_context(|| format!("cannot unpack {} (delete it and run again)", deb.display()))?;
    fs::rename(&tmp, &dest)?;
    Ok(dest)
}

/// The newest `<package>_<version>_<arch><suffix>` in `dir` (by modification time).
fn newest(dir: &Path, package: &str, suffix: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with(&prefix) && name.ends_with(suffix) {
            let t = e.metadata()?.modified()?;
            found.push((t, e.path()));
        }
    }
    found.sort();
    Ok(found.pop().map(|(_, p)| p))
}

/// A program inside an unpacked package, checked to exist.
pub fn program(cache: &Path, package: &str, rel: &str) -> Result<PathBuf> {
    let root = unpacked(cache, package)?;
    let p = root.join(rel);
    if !p.is_file() {
        bail!("{} has no {rel}", root.display());
    }
    Ok(p)
}
