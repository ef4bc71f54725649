//! The node kernel and its module tree: a kernel given on the command line, or the Debian
//! cloud kernel package fetched into the cache.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::debian::{self, Cache};
use crate::ui::Step;

/// The Debian metapackage whose current kernel boots nodes by default: small, and with virtio
/// and NFS as modules (which is why the initramfs must carry them).
pub const DEFAULT_KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";

#[derive(Debug, Clone)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    /// `uname -r` of this kernel, the name of its directory under lib/modules/.
    pub version: String,
    /// `lib/modules/<version>`.
    pub modules_dir: PathBuf,
    /// Where it came from, for the manifest: a Debian package and version, or "local".
    pub source: String,
}

/// A kernel given with `--kernel PATH` and optionally `--modules DIR` (a `lib/modules/<version>`
/// directory); `images::kernel::local` has the rules (version from a `vmlinuz-<version>` name,
/// modules from `/lib/modules/<version>` without `--modules`).
pub fn local(vmlinuz: &Path, modules: Option<&Path>) -> Result<Kernel> {
    let k = images::kernel::local(vmlinuz, modules)?;
    Ok(Kernel {
        vmlinuz: k.vmlinuz,
        version: k.version,
        modules_dir: k.modules_dir,
        source: "local".into(),
    })
}

/// The kernel of the Debian package that `meta` depends on, downloaded and unpacked into the
/// cache. The .deb ships no modules.dep: `initrd::ModuleIndex` then reads each needed module's
/// `.modinfo` (`depends=`) instead, which takes milliseconds, so no `depmod` is run.
pub fn debian(cache: &Cache, meta: &str, step: &Step) -> Result<Kernel> {
    step.progress(format!("apt-cache depends {meta}"));
    let package = cache.kernel_package(meta, step)?;
    let unpacked = cache.fetch(&package, step)?;
    let (vmlinuz, version) = debian::find_kernel(&unpacked.root)?;
    let modules_dir = unpacked.root.join("lib/modules").join(&version);
    if !modules_dir.is_dir() {
        bail!(
            "{} has no lib/modules/{version} (fix: delete {} and run again)",
            package,
            unpacked.root.display()
        );
    }
    step.summary(format!("{version} from {}", debian::describe(&unpacked)));
    Ok(Kernel {
        vmlinuz,
        version,
        modules_dir,
        source: format!("debian:{}={}", unpacked.package, unpacked.version),
    })
}
