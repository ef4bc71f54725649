//! The node initramfs: what goes where in the archive (the `initrd` crate does the cpio, the
//! library and module closures, and the compression).
//!
//! Layout (every entry owned by root, one fixed mtime, written in sorted order):
//! - the build host's merged-/usr links (`bin -> usr/bin`, `lib -> usr/lib`, …), so the
//!   libraries of the clustermaker binary sit where its loader looks for them
//! - `/init` and `/etc/udhcpc.script` from `images/templates/initramfs/`
//! - `/bin/busybox` and a `bin/<applet> -> busybox` link per applet
//! - `/usr/bin/clustermaker`, its interpreter and shared libraries (from the build host: the
//!   binary was built there)
//! - `/lib/modules/<version>/…` for each module and `/etc/modules-load.order`, the absolute
//!   module paths in load order that /init feeds to insmod
//! - `/dev/console` and `/dev/null` (the kernel opens /dev/console for PID 1's stdio before
//!   /init can mount devtmpfs), and the mount points

//!
//! Used by `clustermaker image build` (one initramfs per image version, for that version's
//! kernel) and by `cargo xtask build-image`.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use initrd::{
    Compression, InitramfsBuilder, LibraryClosure, LibraryResolver, ModuleClosure, ModuleIndex,
};

pub const INIT_SCRIPT: &str = include_str!("../templates/initramfs/init.sh");
pub const UDHCPC_SCRIPT: &str = include_str!("../templates/initramfs/udhcpc.script");

/// Where the clustermaker binary goes; /init finds it on PATH.
pub const AGENT_PATH: &str = "usr/bin/clustermaker";

/// The root the clustermaker binary's libraries come from: it was built on this host.
pub const LIB_ROOT: &str = "/";

pub struct Contents<'a> {
    pub kernel_version: &'a str,
    pub modules: &'a ModuleClosure,
    pub busybox: &'a Path,
    /// Applet names (`sh`, `ip`, …).
    pub applets: &'a [String],
    /// The clustermaker binary and its library closure (from [`LIB_ROOT`]).
    pub agent: Option<(PathBuf, &'a LibraryClosure)>,
    pub mtime: u32,
}

/// The image, and the size of the archive before compression.
pub struct Built {
    pub image: Vec<u8>,
    pub cpio_size: u64,
    pub entries: usize,
}

pub fn build(c: &Contents, compression: Compression) -> Result<Built> {
    let lib_root = Path::new(LIB_ROOT);
    let mut b = InitramfsBuilder::new();
    b.set_mtime(c.mtime);
    b.mirror_merged_usr(lib_root)?;
    b.add_base_layout()?;
    b.add_busybox(c.busybox, c.applets)
        .with_context(|| format!("adding busybox {}", c.busybox.display()))?;
    if let Some((binary, closure)) = &c.agent {
        let a = b.archive_mut();
        a.add_host_file(AGENT_PATH, 0o755, binary)?;
        initrd::add_libraries(a, lib_root, closure).context("adding clustermaker's libraries")?;
    }
    let a = b.archive_mut();
    let order = initrd::add_modules(a, c.modules, c.kernel_version)?;
    a.add_file(
        initrd::MODULES_LOAD_ORDER,
        0o644,
        initrd::load_order_file(&order),
    )?;
    a.add_file("init", 0o755, INIT_SCRIPT)?;
    a.add_file("etc/udhcpc.script", 0o755, UDHCPC_SCRIPT)?;
    a.add_file("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n")?;
    a.add_file("etc/group", 0o644, "root:x:0:\ntty:x:5:\n")?;

    let mut count = Count(0);
    b.archive().write(&mut count)?;
    Ok(Built {
        image: b.to_bytes(compression)?,
        cpio_size: count.0,
        entries: b.archive().len(),
    })
}

/// Modules a node needs to boot over virtio-net and mount an NFS root with an overlay; their
/// dependencies are added (17 modules in all with the Debian cloud kernel).
pub const DEFAULT_MODULES: &[&str] = &["virtio_pci", "virtio_net", "nfsv3", "overlay"];

/// The applets /init and the udhcpc script use.
pub const NEEDED_APPLETS: &[&str] = &[
    "sh", "mount", "insmod", "udhcpc", "ip", "ifconfig", "route", "wget", "cat", "cut", "tr",
    "sed", "grep", "sleep", "setsid", "cttyhack", "hostname", "basename", "uname",
];

/// Where `clustermaker image build` looks for the node's static busybox by default.
pub const DEFAULT_BUSYBOX: &str = "/usr/lib/clustermaker/busybox";

/// The applets of a busybox binary (`busybox --list`), checked against [`NEEDED_APPLETS`].
pub fn busybox_applets(path: &Path) -> Result<Vec<String>> {
    let out = Command::new(path).arg("--list").output().with_context(|| {
        format!(
            "cannot run busybox {} (fix: pass a static busybox for this machine with --busybox)",
            path.display()
        )
    })?;
    if !out.status.success() {
        bail!(
            "`{} --list` failed (fix: use a busybox built with the --list option, e.g. Debian's busybox-static)",
            path.display()
        );
    }
    let applets = parse_applets(&String::from_utf8_lossy(&out.stdout));
    for name in NEEDED_APPLETS {
        if !applets.iter().any(|a| a == name) {
            bail!("busybox {} has no `{name}` applet, which /init needs (fix: use Debian's busybox-static)", path.display());
        }
    }
    Ok(applets)
}

/// `busybox --list` output → sorted applet names. `[` and `[[` are applets too; a name with a
/// slash would escape bin/.
pub fn parse_applets(list: &str) -> Vec<String> {
    let mut applets: Vec<String> = list
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && l.as_str() != "busybox" && !l.contains('/'))
        .collect();
    applets.sort();
    applets.dedup();
    applets
}

/// What a node initramfs is made of, by path: the image store's entry point.
#[derive(Debug, Clone)]
pub struct NodeInitramfs {
    pub kernel_version: String,
    /// `lib/modules/<kernel_version>` of the kernel the initramfs is for.
    pub modules_dir: PathBuf,
    /// Modules to load (dependencies are added).
    pub modules: Vec<String>,
    pub busybox: PathBuf,
    /// The clustermaker binary for the node (its libraries come from [`LIB_ROOT`]).
    pub agent: Option<PathBuf>,
    pub mtime: u32,
    pub compression: Compression,
}

/// The built archive plus what it holds, for the version's metadata.
pub struct NodeBuilt {
    pub built: Built,
    /// Module names in load order.
    pub modules: Vec<String>,
}

impl NodeInitramfs {
    pub fn build(&self) -> Result<NodeBuilt> {
        let applets = busybox_applets(&self.busybox)?;
        let index = ModuleIndex::load(&self.modules_dir).with_context(|| {
            format!("reading the module index of {}", self.modules_dir.display())
        })?;
        let closure = index.closure(&self.modules).map_err(|e| {
            anyhow::anyhow!("{e} (fix: check the name with `modinfo -k VERSION NAME`, or leave it out with --no-default-modules)")
        })?;
        let agent_closure = match &self.agent {
            Some(binary) => Some(
                LibraryResolver::new(LIB_ROOT)?
                    .closure_of_file(binary, AGENT_PATH)
                    .with_context(|| {
                        format!("finding the shared libraries of {}", binary.display())
                    })?,
            ),
            None => None,
        };
        let built = build(
            &Contents {
                kernel_version: &self.kernel_version,
                modules: &closure,
                busybox: &self.busybox,
                applets: &applets,
                agent: self
                    .agent
                    .as_ref()
                    .zip(agent_closure.as_ref())
                    .map(|(b, c)| (b.clone(), c)),
                mtime: self.mtime,
            },
            self.compression,
        )?;
        Ok(NodeBuilt {
            built,
            modules: closure.modules.iter().map(|m| m.name.clone()).collect(),
        })
    }
}

/// A writer that only counts bytes: the uncompressed size without a second buffer.
struct Count(u64);

impl Write for Count {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
