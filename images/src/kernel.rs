//! The kernel an image boots: its own (`boot/vmlinuz-<version>` with `lib/modules/<version>`
//! or `usr/lib/modules/<version>`) when it has one, else one given by path.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    /// `uname -r`: the directory name under lib/modules.
    pub version: String,
    pub modules_dir: PathBuf,
}

/// `sort -V` order: digit runs compare as numbers, everything else bytewise.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let na = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let nb = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (trim_zeros(&a[..na]), trim_zeros(&b[..nb]));
                let o = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
                if o != Ordering::Equal {
                    return o;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let i = d.iter().take_while(|&&c| c == b'0').count();
    &d[i..]
}

/// The newest `vmlinuz-<version>` name among `names` (pure).
pub fn newest_kernel_name<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    names
        .into_iter()
        .filter(|n| n.strip_prefix("vmlinuz-").is_some_and(|v| !v.is_empty()))
        .max_by(|a, b| version_cmp(&a[8..], &b[8..]))
}

/// The image's own kernel: the newest `boot/vmlinuz-*` that has a module directory.
pub fn in_root(root: &Path) -> Option<Kernel> {
    let rd = std::fs::read_dir(root.join("boot")).ok()?;
    let names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    let mut candidates: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    while let Some(name) = newest_kernel_name(candidates.iter().copied()) {
        let version = &name[8..];
        let vmlinuz = root.join("boot").join(name);
        // A symlinked vmlinuz (Debian's /boot/vmlinuz → vmlinuz-X) is resolved inside the root
        // by the caller reading it; here only real files count.
        let is_file = vmlinuz
            .symlink_metadata()
            .map(|m| m.is_file())
            .unwrap_or(false);
        for m in ["lib/modules", "usr/lib/modules"] {
            let dir = root.join(m).join(version);
            if is_file && dir.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
                return Some(Kernel {
                    vmlinuz,
                    version: version.to_string(),
                    modules_dir: dir,
                });
            }
        }
        candidates.retain(|c| *c != name);
    }
    None
}

/// A kernel given by path; without `modules`, the version comes from a `vmlinuz-<version>` name
/// and the modules from `/lib/modules/<version>`.
pub fn local(vmlinuz: &Path, modules: Option<&Path>) -> Result<Kernel> {
    if !vmlinuz.is_file() {
        bail!(
            "kernel {} does not exist (fix: pass an existing file to --kernel)",
            vmlinuz.display()
        );
    }
    let modules_dir = match modules {
        Some(d) => d.to_path_buf(),
        None => {
            let name = vmlinuz.file_name().unwrap_or_default().to_string_lossy();
            let Some(v) = name.strip_prefix("vmlinuz-") else {
                bail!("cannot tell the version of kernel {} (fix: pass its lib/modules/<version> directory with --modules)", vmlinuz.display());
            };
            Path::new("/lib/modules").join(v)
        }
    };
    if !modules_dir.is_dir() {
        bail!("module directory {} does not exist (fix: pass the kernel's lib/modules/<version> with --modules)", modules_dir.display());
    }
    let version = modules_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Kernel {
        vmlinuz: vmlinuz.to_path_buf(),
        version,
        modules_dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_sort_is_numeric() {
        assert_eq!(
            version_cmp("6.1.0-9-amd64", "6.1.0-10-amd64"),
            Ordering::Less
        );
        assert_eq!(version_cmp("5.10.0", "6.1.0"), Ordering::Less);
        assert_eq!(version_cmp("6.1.0", "6.1.0"), Ordering::Equal);
        assert_eq!(
            newest_kernel_name([
                "vmlinuz-6.1.0-9-cloud-amd64",
                "vmlinuz-6.1.0-10-cloud-amd64",
                "config-9",
                "vmlinuz-"
            ]),
            Some("vmlinuz-6.1.0-10-cloud-amd64")
        );
        assert_eq!(newest_kernel_name(["initrd.img"]), None);
    }

    #[test]
    fn finds_the_newest_kernel_with_modules() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("boot")).unwrap();
        std::fs::create_dir_all(r.join("usr/lib/modules/6.1.0-9")).unwrap();
        std::fs::write(r.join("boot/vmlinuz-6.1.0-9"), b"k9").unwrap();
        // Newer, but its modules are gone (a half-removed kernel): skipped.
        std::fs::write(r.join("boot/vmlinuz-6.1.0-10"), b"k10").unwrap();
        let k = in_root(r).unwrap();
        assert_eq!(k.version, "6.1.0-9");
        assert_eq!(k.modules_dir, r.join("usr/lib/modules/6.1.0-9"));
        std::fs::create_dir_all(r.join("lib/modules/6.1.0-10")).unwrap();
        assert_eq!(in_root(r).unwrap().version, "6.1.0-10");
        assert!(in_root(&r.join("nonexistent")).is_none());
    }
}
