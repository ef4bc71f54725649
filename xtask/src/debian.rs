//! Debian packages as build inputs: `apt-get download` into a cache, `dpkg-deb -x` once.
//!
//! Nothing is installed on the host: busybox-static in particular would replace the dynamic
//! busybox package that other tools on the machine rely on.

use std::cell::Cell;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::cmd::{APT_CACHE, APT_GET, DPKG_DEB};

/// The download cache: `debs/` holds .deb files, `unpacked/` their extracted trees.
pub struct Cache {
    pub root: PathBuf,
    /// Whether this run already ran `apt-get update` (at most once).
    updated: Cell<bool>,
}

/// A downloaded package and where its files were unpacked.
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub package: String,
    pub version: String,
    pub root: PathBuf,
    /// True when nothing had to be downloaded or extracted.
    pub cached: bool,
}

const APT_FIX: &str = "run `apt-get update`, or check the Debian mirror in /etc/apt/sources.list";

impl Cache {
    pub fn new(root: PathBuf) -> Result<Cache> {
        for sub in ["debs", "unpacked"] {
            let d = root.join(sub);
            fs::create_dir_all(&d)
                .with_context(|| format!("cannot create cache directory {}", d.display()))?;
        }
        Ok(Cache {
            root,
            updated: Cell::new(false),
        })
    }

    /// The versioned kernel package a metapackage such as `linux-image-cloud-amd64` depends on
    /// (its candidate version), e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub fn kernel_package(&self, meta: &str, step: &crate::ui::Step) -> Result<String> {
        let text = self.with_fresh_lists(step, || {
            let out = APT_CACHE.run(
                APT_CACHE.command().args(["depends", meta]),
                "check --kernel-package (`apt-cache search linux-image-`), or run `apt-get update`",
            )?;
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        })?;
        parse_kernel_dependency(&text).ok_or_else(|| {
            anyhow!("`apt-cache depends {meta}` names no linux-image-<version> dependency (fix: {APT_FIX})")
        })
    }

    /// Downloads `package` (candidate version) unless its .deb is already cached, and unpacks it
    /// unless already unpacked. Works offline when the cache already has the package.
    pub fn fetch(&self, package: &str, step: &crate::ui::Step) -> Result<Unpacked> {
        let debs = self.root.join("debs");
        let (deb, downloaded) = match self.with_fresh_lists(step, || self.download(package, step)) {
            Ok(found) => found,
            // Offline: a .deb cached by an earlier run will do.
            Err(e) => match newest_cached(&debs, package)? {
                Some(deb) => (deb, false),
                None => return Err(e),
            },
        };
        let version = version_from_file_name(&deb, package);
        let root = self.unpack(&deb, step)?;
        Ok(Unpacked {
            package: package.to_string(),
            version,
            cached: !downloaded && root.1,
            root: root.0,
        })
    }

    /// The cached .deb of the candidate version of `package`, downloaded if missing; true when
    /// it was downloaded.
    fn download(&self, package: &str, step: &crate::ui::Step) -> Result<(PathBuf, bool)> {
        let debs = self.root.join("debs");
        let version = candidate_version(package)?;
        let deb = debs.join(deb_file_name(package, &version));
        if deb.is_file() {
            return Ok((deb, false));
        }
        step.progress(format!("apt-get download {package}"));
        APT_GET.run(
            APT_GET
                .command()
                .arg("download")
                .arg(package)
                .current_dir(&debs),
            APT_FIX,
        )?;
        if !deb.is_file() {
            bail!(
                "apt-get download {package} did not produce {} (fix: {APT_FIX})",
                deb.display()
            );
        }
        Ok((deb, true))
    }

    /// Runs `f`; if it fails and we are root, refreshes the package lists once (`apt-get
    /// update`) and runs it again. Missing lists (a fresh machine) and stale ones (the mirror
    /// moved to a newer kernel, so the old .deb is gone) both fail the first try.
    fn with_fresh_lists<T>(&self, step: &crate::ui::Step, f: impl Fn() -> Result<T>) -> Result<T> {
        match f() {
            Ok(v) => Ok(v),
            Err(e) if !self.updated.get() && unsafe { libc::geteuid() } == 0 => {
                self.updated.set(true);
                step.progress("apt-get update");
                if APT_GET
                    .run(APT_GET.command().args(["update", "-qq"]), APT_FIX)
                    .is_err()
                {
                    return Err(e);
                }
                f()
            }
            Err(e) => Err(e),
        }
    }

    /// `dpkg-deb -x` into `unpacked/<deb name>/`, through a temporary directory renamed at the
    /// end, so an interrupted extraction is never mistaken for a complete one.
    fn unpack(&self, deb: &Path, step: &crate::ui::Step) -> Result<(PathBuf, bool)> {
        let stem = deb.file_stem().expect("a .deb file name").to_string_lossy();
        let dest = self.root.join("unpacked").join(stem.as_ref());
        if dest.is_dir() {
            return Ok((dest, true));
        }
        let tmp = self.root.join("unpacked").join(format!(".{stem}.partial"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove {}", tmp.display()))?;
        }
        step.progress(format!("dpkg-deb -x {}", deb.display()));
        DPKG_DEB.run(
            DPKG_DEB.command().arg("-x").arg(deb).arg(&tmp),
            "delete the cached .deb and run again (it may be truncated)",
        )?;
        fs::rename(&tmp, &dest).with_context(|| format!("cannot rename {}", tmp.display()))?;
        Ok((dest, false))
    }
}

/// `apt-cache policy PKG` → the `Candidate:` version.
fn candidate_version(package: &str) -> Result<String> {
    let out = APT_CACHE.run(APT_CACHE.command().args(["policy", package]), APT_FIX)?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty() && v != "(none)")
        .ok_or_else(|| anyhow!("Debian package {package} is unknown to apt (fix: {APT_FIX})"))
}

/// The first `Depends: linux-image-<version>` of `apt-cache depends` output.
fn parse_kernel_dependency(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|d| {
            d.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
        .find(|d| {
            d.starts_with("linux-image-") && d.as_bytes().get(12).is_some_and(u8::is_ascii_digit)
        })
}

/// The file name `apt-get download` gives a package: the epoch colon is written `%3a`.
fn deb_file_name(package: &str, version: &str) -> String {
    format!(
        "{package}_{}_{}.deb",
        version.replace(':', "%3a"),
        host_arch()
    )
}

fn version_from_file_name(deb: &Path, package: &str) -> String {
    let name = deb.file_name().unwrap_or_default().to_string_lossy();
    name.strip_prefix(&format!("{package}_"))
        .and_then(|rest| rest.split('_').next())
        .map(|v| v.replace("%3a", ":"))
        .unwrap_or_default()
}

fn newest_cached(debs: &Path, package: &str) -> Result<Option<PathBuf>> {
    let prefix = format!("{package}_");
    let mut found: Vec<PathBuf> = fs::read_dir(debs)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(".deb")
        })
        .collect();
    // Modification time picks the newest download; good enough for an offline fallback.
    found.sort_by_key(|p| fs::metadata(p).and_then(|m| m.modified()).ok());
    Ok(found.pop())
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The one `boot/vmlinuz-*` of an unpacked kernel package, and its version.
pub fn find_kernel(root: &Path) -> Result<(PathBuf, String)> {
    let boot = root.join("boot");
    let mut found = Vec::new();
    for e in fs::read_dir(&boot).with_context(|| format!("no boot/ in {}", root.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(v) = name.strip_prefix("vmlinuz-") {
            found.push((boot.join(&name), v.to_string()));
        }
    }
    match found.len() {
        1 => Ok(found.pop().expect("one")),
        0 => bail!(
            "no boot/vmlinuz-* in {} (fix: delete that directory from the cache and run again)",
            root.display()
        ),
        _ => bail!("several kernels in {}: {found:?}", boot.display()),
    }
}

pub fn describe(u: &Unpacked) -> String {
    format!(
        "{} {}{}",
        u.package,
        u.version,
        if u.cached { " (cached)" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dependency_is_the_versioned_image() {
        let text = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            parse_kernel_dependency(text).as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        assert_eq!(
            parse_kernel_dependency("x\n  Depends: linux-image-cloud-amd64\n"),
            None
        );
    }

    #[test]
    fn deb_names_escape_the_epoch() {
        let n = deb_file_name("busybox-static", "1:1.35.0-4+deb12u1+b1");
        assert!(
            n.starts_with("busybox-static_1%3a1.35.0-4+deb12u1+b1_"),
            "{n}"
        );
        let p = PathBuf::from(format!("/c/{n}"));
        assert_eq!(
            version_from_file_name(&p, "busybox-static"),
            "1:1.35.0-4+deb12u1+b1"
        );
    }
}
