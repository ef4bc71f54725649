//! Fixtures for the image store tests: a fake kernel with a module tree, a fake busybox, and
//! small root trees with every kind of file.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use images::{BuildOptions, InitramfsOptions, Source, Store};

pub const KVER: &str = "9.9.9-test";

/// A module tree and kernel small enough for a test; the .ko files are never loaded.
pub fn fake_modules(dir: &Path) -> PathBuf {
    let modules = dir.join(KVER);
    fs::create_dir_all(modules.join("kernel/net")).unwrap();
    for (name, body) in [("a", "A"), ("b", "B"), ("c", "C")] {
        fs::write(modules.join(format!("kernel/net/{name}.ko")), body).unwrap();
    }
    fs::write(
        modules.join("modules.dep"),
        "kernel/net/c.ko: kernel/net/b.ko kernel/net/a.ko\nkernel/net/b.ko: kernel/net/a.ko\nkernel/net/a.ko:\n",
    )
    .unwrap();
    modules
}

/// A busybox stand-in that only answers `--list`.
pub fn fake_busybox(dir: &Path) -> PathBuf {
    let busybox = dir.join("busybox");
    let list = images::initramfs::NEEDED_APPLETS.join(" ");
    fs::write(&busybox, format!("#!/bin/sh\nprintf '%s\\n' {list} '['\n")).unwrap();
    fs::set_permissions(&busybox, fs::Permissions::from_mode(0o755)).unwrap();
    busybox
}

pub struct Env {
    pub tmp: tempfile::TempDir,
    pub store: Store,
    pub kernel: PathBuf,
    pub modules: PathBuf,
    pub busybox: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let inputs = tmp.path().join("inputs");
        fs::create_dir_all(&inputs).unwrap();
        let kernel = inputs.join(format!("vmlinuz-{KVER}"));
        fs::write(&kernel, b"not really a kernel").unwrap();
        let modules = fake_modules(&inputs);
        let busybox = fake_busybox(&inputs);
        let store = Store::new(tmp.path().join("state/images"));
        Env {
            tmp,
            store,
            kernel,
            modules,
            busybox,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    /// Options for `source` with the fake kernel given explicitly.
    pub fn opts(&self, source: Source) -> BuildOptions {
        let mut o = self.opts_image_kernel(source);
        o.kernel = Some(self.kernel.clone());
        o.modules = Some(self.modules.clone());
        o
    }

    /// Options that rely on the image's own kernel.
    pub fn opts_image_kernel(&self, source: Source) -> BuildOptions {
        BuildOptions {
            source,
            kernel: None,
            modules: None,
            initramfs: InitramfsOptions {
                busybox: self.busybox.clone(),
                agent: None,
                modules: vec!["c".into()],
                compression: "none".parse().unwrap(),
            },
            source_date_epoch: None,
            host_root: "/".into(),
            state_dir: self.tmp.path().join("state"),
            mirror: None,
        }
    }
}

/// A small root: directories, regular files (one setuid, one owned by 1000:1000), a symlink,
/// a hard link, a device node and a FIFO, plus `bulk` bytes spread over `files` files.
pub fn make_root(dir: &Path, files: usize, bulk: usize) {
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::create_dir_all(dir.join("usr/bin")).unwrap();
    fs::create_dir_all(dir.join("dev")).unwrap();
    fs::write(dir.join("etc/hostname"), "image\n").unwrap();
    fs::write(dir.join("etc/motd"), "hello\n").unwrap();
    fs::write(dir.join("usr/bin/su"), b"\x7fELF pretend").unwrap();
    fs::set_permissions(dir.join("usr/bin/su"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::write(dir.join("usr/bin/user-owned"), b"x").unwrap();
    std::os::unix::fs::chown(dir.join("usr/bin/user-owned"), Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::symlink("usr/bin", dir.join("bin")).unwrap();
    fs::hard_link(dir.join("usr/bin/su"), dir.join("usr/bin/su-link")).unwrap();
    let c = std::ffi::CString::new(dir.join("dev/null").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(
        unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) },
        0
    );
    let f = std::ffi::CString::new(dir.join("dev/fifo").as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(f.as_ptr(), 0o600) }, 0);
    let per = bulk.checked_div(files).unwrap_or(0);
    for i in 0..files {
        let d = dir.join(format!("usr/share/pkg{}", i % 20));
        fs::create_dir_all(&d).unwrap();
        // Distinct content per file so nothing deduplicates by accident.
        let mut data = vec![0u8; per];
        let mut x: u32 = (i as u32).wrapping_mul(2654435761) | 1;
        for b in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        fs::write(d.join(format!("file{i}.dat")), data).unwrap();
    }
}

/// The canonical listing text of a tree (content hashes included).
pub fn listing_text(root: &Path) -> String {
    images::listing::scan(
        root,
        &images::ScanOptions {
            hash: true,
            ..Default::default()
        },
        &images::Silent,
    )
    .unwrap()
    .to_text()
}
