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

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use initrd::{Compression, InitramfsBuilder, LibraryClosure, ModuleClosure};

pub const INIT_SCRIPT: &str = include_str!("../../images/templates/initramfs/init.sh");
pub const UDHCPC_SCRIPT: &str = include_str!("../../images/templates/initramfs/udhcpc.script");

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
