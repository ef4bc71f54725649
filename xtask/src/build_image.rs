//! `cargo xtask build-image`: kernel + node initramfs + manifest in one output directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use crate::agent::{self, Agent};
use crate::busybox::{self, Busybox};
use crate::debian::Cache;
use crate::kernel::{self, Kernel, DEFAULT_KERNEL_PACKAGE};
use crate::manifest::{AgentEntry, BusyboxEntry, FileEntry, InitramfsEntry, KernelEntry, Manifest};
use crate::ui::Ui;
use images::initramfs::{self, Contents};
use initrd::{Compression, LibraryClosure, LibraryResolver, ModuleIndex};

/// Modules a node needs to boot over virtio-net and mount an NFS root with an overlay; their
/// dependencies are added (17 modules in all with the Debian cloud kernel).
/// The cloud kernel has no e1000 driver, so QEMU nodes use virtio-net for BIOS and UEFI alike.
pub const DEFAULT_COMPRESSION: &str = "zstd:9";

pub use images::initramfs::DEFAULT_MODULES;

#[derive(Args, Debug, Clone)]
pub struct BuildImageArgs {
    /// Output directory (vmlinuz, initramfs.img, manifest.json) [default: <workspace>/target/cm-boot]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Download cache for Debian packages [default: <workspace>/target/cm-cache]
    #[arg(long, value_name = "DIR", env = "CM_CACHE_DIR")]
    pub cache: Option<PathBuf>,
    /// Use this kernel instead of the Debian package
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// The kernel's module directory, lib/modules/<version> (modules.dep is used when present,
    /// else each module's .modinfo)
    /// [default: /lib/modules/<version from the vmlinuz-<version> file name>]
    #[arg(long, value_name = "DIR", requires = "kernel")]
    pub modules: Option<PathBuf>,
    /// Debian metapackage whose kernel is used when --kernel is not given
    #[arg(long, value_name = "PACKAGE", default_value = DEFAULT_KERNEL_PACKAGE)]
    pub kernel_package: String,
    /// Kernel module to load at boot (repeatable; dependencies are added)
    #[arg(long = "module", value_name = "NAME")]
    pub extra_modules: Vec<String>,
    /// Do not load the default modules (virtio_pci virtio_net nfsv3 overlay)
    #[arg(long)]
    pub no_default_modules: bool,
    /// Use this static busybox instead of the one from Debian's busybox-static
    #[arg(long, value_name = "PATH")]
    pub busybox: Option<PathBuf>,
    /// The clustermaker binary for the node [default: build it with cargo build --release]
    #[arg(long, value_name = "PATH", conflicts_with = "no_clustermaker")]
    pub clustermaker: Option<PathBuf>,
    /// Leave clustermaker out (/init then reports online with busybox wget)
    #[arg(long)]
    pub no_clustermaker: bool,
    /// Keep the symbols of the clustermaker binary
    #[arg(long)]
    pub no_strip: bool,
    /// Initramfs compression: zstd, gzip or none, optionally with :LEVEL (zstd:3..19, gzip:0..9).
    /// zstd:9 is within 10% of zstd:19's size at a fifteenth of its time
    #[arg(long, value_name = "FORMAT", default_value = DEFAULT_COMPRESSION)]
    pub compress: Compression,
    /// Print the build report as JSON on stdout (progress output is suppressed)
    #[arg(long)]
    pub json: bool,
}

impl BuildImageArgs {
    /// Arguments for a build with every default, writing to `out`.
    pub fn with_out(out: PathBuf) -> BuildImageArgs {
        BuildImageArgs {
            out: Some(out),
            cache: None,
            kernel: None,
            modules: None,
            kernel_package: DEFAULT_KERNEL_PACKAGE.into(),
            extra_modules: Vec::new(),
            no_default_modules: false,
            busybox: None,
            clustermaker: None,
            no_clustermaker: false,
            no_strip: false,
            compress: DEFAULT_COMPRESSION.parse().expect("valid default"),
            json: false,
        }
    }
}

/// What `--json` prints, and what callers (tests, the demo) get back.
#[derive(Serialize, Debug, Clone)]
pub struct Report {
    pub out_dir: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub manifest: PathBuf,
    pub kernel_version: String,
    pub initramfs_size: u64,
    pub initramfs_uncompressed_size: u64,
    pub initramfs_blake3: String,
    pub modules: Vec<String>,
    pub build_secs: f64,
}

pub const STEPS: usize = 6;

pub fn run(args: &BuildImageArgs, workspace: &Path, ui: &mut Ui) -> Result<Report> {
    let started = Instant::now();
    let target = workspace.join("target");
    let out = args.out.clone().unwrap_or_else(|| target.join("cm-boot"));
    let cache_dir = args
        .cache
        .clone()
        .unwrap_or_else(|| target.join("cm-cache"));
    let work = out.join(".work");
    fs::create_dir_all(&work).with_context(|| {
        format!(
            "cannot create output directory {} (fix: pass a writable --out)",
            out.display()
        )
    })?;
    let cache = Cache::new(cache_dir)?;

    let kernel: Kernel = ui.step("kernel", |s| match &args.kernel {
        Some(path) => {
            let k = kernel::local(path, args.modules.as_deref())?;
            s.summary(format!("{} from {}", k.version, path.display()));
            Ok(k)
        }
        None => kernel::debian(&cache, &args.kernel_package, s),
    })?;

    let bb: Busybox = ui.step("busybox", |s| match &args.busybox {
        Some(path) => {
            let b = busybox::local(path)?;
            s.summary(format!(
                "{} applets from {}",
                b.applets.len(),
                path.display()
            ));
            Ok(b)
        }
        None => busybox::debian(&cache, s),
    })?;

    let agent: Option<(Agent, LibraryClosure)> = ui.step("clustermaker agent", |s| {
        if args.no_clustermaker {
            s.summary("left out (--no-clustermaker): /init reports with wget");
            return Ok(None);
        }
        let binary = match &args.clustermaker {
            Some(p) => p.clone(),
            None => {
                s.progress("cargo build --release -p clustermaker");
                agent::build_release(workspace)?
            }
        };
        let a = agent::prepare(&binary, &work, !args.no_strip)?;
        let closure = LibraryResolver::new(initramfs::LIB_ROOT)?
            .closure_of_file(&a.path, initramfs::AGENT_PATH)
            .context("finding the shared libraries of clustermaker")?;
        s.summary(format!(
            "{} ({} KiB{}, {} libraries)",
            binary.display(),
            a.size / 1024,
            if args.no_strip {
                String::new()
            } else {
                format!(" stripped from {} KiB", a.unstripped_size / 1024)
            },
            closure.iter().count()
        ));
        Ok(Some((a, closure)))
    })?;

    let modules = ui.step("kernel modules", |s| {
        let mut wanted: Vec<String> = Vec::new();
        if !args.no_default_modules {
            wanted.extend(DEFAULT_MODULES.iter().map(|m| m.to_string()));
        }
        wanted.extend(args.extra_modules.iter().cloned());
        let index = ModuleIndex::load(&kernel.modules_dir)?;
        let closure = index.closure(&wanted).map_err(|e| {
            anyhow::anyhow!(
                "{e} (fix: check the name with `modinfo -b ROOT -k VERSION NAME`, or leave it out)"
            )
        })?;
        s.summary(format!(
            "{} to load: {}",
            closure.modules.len(),
            closure
                .modules
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        ));
        Ok(closure)
    })?;

    let mtime = source_date_epoch()?;
    let (uncompressed, entries) = ui.step("initramfs", |s| {
        s.progress(format!("assembling and compressing with {}", args.compress));
        let built = initramfs::build(
            &Contents {
                kernel_version: &kernel.version,
                modules: &modules,
                busybox: &bb.path,
                applets: &bb.applets,
                agent: agent.as_ref().map(|(a, closure)| (a.path.clone(), closure)),
                mtime,
            },
            args.compress,
        )?;
        write_atomic(&out.join("initramfs.img"), &built.image)?;
        s.summary(format!(
            "{} entries, {} KiB cpio -> {} KiB {}",
            built.entries,
            built.cpio_size / 1024,
            built.image.len() / 1024,
            args.compress
        ));
        Ok((built.cpio_size, built.entries))
    })?;

    let manifest = ui.step("kernel and manifest", |s| {
        copy_if_changed(&kernel.vmlinuz, &out.join("vmlinuz"))?;
        let manifest = Manifest {
            format: 1,
            kernel: KernelEntry {
                version: kernel.version.clone(),
                source: kernel.source.clone(),
                file: FileEntry::of(&out, "vmlinuz")?,
            },
            initramfs: InitramfsEntry {
                compression: args.compress.to_string(),
                uncompressed_size: uncompressed,
                entries,
                file: FileEntry::of(&out, "initramfs.img")?,
            },
            modules: modules.modules.iter().map(|m| m.name.clone()).collect(),
            builtin_modules: modules.builtin.clone(),
            busybox: BusyboxEntry {
                source: bb.source.clone(),
                applets: bb.applets.len(),
            },
            clustermaker: agent.as_ref().map(|(a, closure)| AgentEntry {
                size: a.size,
                unstripped_size: a.unstripped_size,
                stripped: !args.no_strip,
                libraries: closure.iter().map(|l| l.path.clone()).collect(),
            }),
            cmdline: "console=ttyS0 cm.master=http://MASTER:PORT".into(),
            source_date_epoch: mtime,
        };
        let mut text = serde_json::to_string_pretty(&manifest)?;
        text.push('\n');
        write_atomic(&out.join("manifest.json"), text.as_bytes())?;
        s.summary(format!("{}", out.display()));
        Ok(manifest)
    })?;
    let _ = fs::remove_dir_all(&work);

    Ok(Report {
        kernel: out.join("vmlinuz"),
        initramfs: out.join("initramfs.img"),
        manifest: out.join("manifest.json"),
        out_dir: out,
        kernel_version: manifest.kernel.version,
        initramfs_size: manifest.initramfs.file.size,
        initramfs_uncompressed_size: uncompressed,
        initramfs_blake3: manifest.initramfs.file.blake3,
        modules: manifest.modules,
        build_secs: started.elapsed().as_secs_f64(),
    })
}

/// The archive mtime: `SOURCE_DATE_EPOCH` when set (reproducible-builds convention), else 0.
fn source_date_epoch() -> Result<u32> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => Ok(initrd::parse_source_date_epoch(&v)
            .context("SOURCE_DATE_EPOCH (fix: unset it or give seconds since 1970)")?),
        Err(_) => Ok(0),
    }
}

/// Writes through a temporary file and a rename: a reader (a TFTP server serving the output
/// directory) never sees half a file.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

fn copy_if_changed(from: &Path, to: &Path) -> Result<()> {
    let new = fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    if fs::read(to).map(|old| old == new).unwrap_or(false) {
        return Ok(());
    }
    write_atomic(to, &new)
}

/// Checks that `out` holds what build-image writes (used by the demo with --skip-build).
pub fn check_output(out: &Path) -> Result<()> {
    for f in ["vmlinuz", "initramfs.img", "manifest.json"] {
        if !out.join(f).is_file() {
            bail!(
                "{} has no {f} (fix: run cargo xtask build-image --out {})",
                out.display(),
                out.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::Mode;
    use std::os::unix::fs::PermissionsExt;

    /// A kernel, module tree and busybox small enough to build from in a unit test: the fake
    /// .ko files are never loaded, the fake busybox only answers `--list-full`.
    fn fake_inputs(dir: &Path) -> BuildImageArgs {
        let version = "9.9.9-test";
        let modules = dir.join("lib/modules").join(version);
        fs::create_dir_all(modules.join("kernel/net")).unwrap();
        fs::write(
            dir.join(format!("vmlinuz-{version}")),
            b"not really a kernel",
        )
        .unwrap();
        for (name, body) in [("a", "A"), ("b", "B"), ("c", "C")] {
            fs::write(modules.join(format!("kernel/net/{name}.ko")), body).unwrap();
        }
        fs::write(
            modules.join("modules.dep"),
            "kernel/net/c.ko: kernel/net/b.ko kernel/net/a.ko\nkernel/net/b.ko: kernel/net/a.ko\nkernel/net/a.ko:\n",
        )
        .unwrap();
        let busybox = dir.join("busybox");
        let list = images::initramfs::NEEDED_APPLETS.join(" ");
        fs::write(&busybox, format!("#!/bin/sh\nprintf '%s\\n' {list} '['\n")).unwrap();
        fs::set_permissions(&busybox, fs::Permissions::from_mode(0o755)).unwrap();

        let mut args = BuildImageArgs::with_out(dir.join("out"));
        args.kernel = Some(dir.join(format!("vmlinuz-{version}")));
        args.modules = Some(modules);
        args.no_default_modules = true;
        args.extra_modules = vec!["c".into()];
        args.busybox = Some(busybox);
        // A real dynamically linked ELF, so stripping and the library closure are exercised.
        args.clustermaker = Some("/bin/true".into());
        args
    }

    fn build(args: &BuildImageArgs, dir: &Path) -> Report {
        let mut ui = Ui::new(Mode::Quiet, STEPS);
        run(args, dir, &mut ui).unwrap()
    }

    #[test]
    fn two_builds_are_bit_identical() {
        let tmp = tempfile::tempdir().unwrap();
        let mut args = fake_inputs(tmp.path());
        let first = build(&args, tmp.path());
        let image1 = fs::read(&first.initramfs).unwrap();
        let manifest1 = fs::read(&first.manifest).unwrap();

        args.out = Some(tmp.path().join("out2"));
        let second = build(&args, tmp.path());
        assert_eq!(
            image1,
            fs::read(&second.initramfs).unwrap(),
            "initramfs differs"
        );
        assert_eq!(
            manifest1,
            fs::read(&second.manifest).unwrap(),
            "manifest differs"
        );
        assert_eq!(first.initramfs_blake3, second.initramfs_blake3);
        // zstd magic: the default compression.
        assert_eq!(&image1[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
        assert_eq!(first.modules, ["a", "b", "c"], "dependencies load first");
    }

    #[test]
    fn archive_holds_init_modules_and_agent() {
        let tmp = tempfile::tempdir().unwrap();
        let mut args = fake_inputs(tmp.path());
        args.compress = "none".parse().unwrap();
        let report = build(&args, tmp.path());
        let cpio = fs::read(&report.initramfs).unwrap();
        assert!(cpio.starts_with(b"070701"), "newc magic");
        let has = |name: &str| {
            let needle = [name.as_bytes(), b"\0"].concat();
            cpio.windows(needle.len()).any(|w| w == needle.as_slice())
        };
        for name in [
            "init",
            "etc/udhcpc.script",
            "etc/modules-load.order",
            "bin/busybox",
            "bin/udhcpc",
            "usr/bin/clustermaker",
            "dev/console",
            "lib/modules/9.9.9-test/kernel/net/a.ko",
        ] {
            assert!(has(name), "{name} missing from the archive");
        }
        let order = "/lib/modules/9.9.9-test/kernel/net/a.ko\n/lib/modules/9.9.9-test/kernel/net/b.ko\n/lib/modules/9.9.9-test/kernel/net/c.ko\n";
        assert!(cpio.windows(order.len()).any(|w| w == order.as_bytes()));
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(&report.manifest).unwrap()).unwrap();
        assert_eq!(manifest["kernel"]["version"], "9.9.9-test");
        assert_eq!(manifest["initramfs"]["compression"], "none");
        assert_eq!(manifest["initramfs"]["file"]["size"], cpio.len() as u64);
    }

    #[test]
    fn unknown_module_names_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let mut args = fake_inputs(tmp.path());
        args.extra_modules = vec!["nosuch".into()];
        let mut ui = Ui::new(Mode::Quiet, STEPS);
        let err = format!("{:#}", run(&args, tmp.path(), &mut ui).unwrap_err());
        assert!(err.contains("nosuch") && err.contains("fix:"), "{err}");
        assert!(!err.contains('\n'), "one-line error: {err}");
    }
}
