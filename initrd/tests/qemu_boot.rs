//! One real boot: Debian's cloud kernel under QEMU (TCG) unpacks our zstd initramfs, `/init`
//! loads the 17 node modules with busybox `insmod` in the order we wrote, and runs this
//! machine's dynamically linked `/bin/ls` from the initramfs. This is the proof that the
//! kernel accepts the archive and that module order and library closure are right.
//!
//! Skipped (with a message) unless qemu-system-x86_64, the cloud kernel and a static busybox
//! are present: `/work/cache/**/boot/vmlinuz-*-cloud-amd64` with its modules, and
//! `/work/cache/**/bin/busybox` from the busybox-static .deb (or `INITRD_TEST_BUSYBOX`).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cloud_kernel_modules_dir;
use initrd::{Compression, InitramfsBuilder};

const INIT: &str = r#"#!/bin/sh
/bin/busybox mount -t proc proc /proc
while read -r module; do
    /bin/busybox insmod "$module" || echo "INSMOD-FAILED $module"
done < /etc/modules-load.order
echo "MODULES-LOADED $(/bin/busybox wc -l < /proc/modules)"
/bin/ls / > /dev/null && echo "DYNAMIC-LS-OK"
echo "INITRD-BOOT-OK"
/bin/busybox poweroff -f
"#;

const NODE_MODULES: [&str; 4] = ["virtio_pci", "virtio_net", "nfsv3", "overlay"];

fn static_busybox() -> Option<PathBuf> {
    if let Ok(path) = std::env::var("INITRD_TEST_BUSYBOX") {
        return Some(PathBuf::from(path));
    }
    let candidates = Command::new("find")
        .args([
            "/work/cache",
            "-maxdepth",
            "5",
            "-path",
            "*/bin/busybox",
            "-type",
            "f",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&candidates.stdout).into_owned();
    let mut paths: Vec<&str> = text.lines().collect();
    paths.sort();
    paths.into_iter().map(PathBuf::from).find(|path| {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| initrd::elf::parse_elf(&bytes).ok())
            .is_some_and(|info| info.is_static())
    })
}

#[test]
fn the_cloud_kernel_boots_our_initramfs_and_loads_the_modules() {
    let qemu = Path::new("/usr/bin/qemu-system-x86_64");
    let (Some(modules), Some(busybox)) = (cloud_kernel_modules_dir(), static_busybox()) else {
        eprintln!("skipped: needs the cloud kernel and a static busybox under /work/cache");
        return;
    };
    let version = modules.file_name().unwrap().to_str().unwrap().to_string();
    let kernel = modules.join(format!("../../../boot/vmlinuz-{version}"));
    if !qemu.exists() || !kernel.exists() {
        eprintln!("skipped: needs {} and {}", qemu.display(), kernel.display());
        return;
    }

    let mut builder = InitramfsBuilder::new();
    builder.mirror_merged_usr(Path::new("/")).unwrap();
    builder.add_base_layout().unwrap();
    builder.add_busybox(&busybox, &["sh"]).unwrap();
    builder.add_executable(Path::new("/"), "/bin/ls").unwrap();
    let closure = builder.add_kernel_modules(&modules, &NODE_MODULES).unwrap();
    assert_eq!(closure.modules.len(), 17);
    builder.archive_mut().add_file("init", 0o755, INIT).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("initramfs.img");
    builder
        .write(
            Compression::default(),
            std::fs::File::create(&image).unwrap(),
        )
        .unwrap();

    let mut child = Command::new(qemu)
        .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot"])
        .args(["-monitor", "none", "-serial", "stdio", "-nodefaults"])
        .arg("-kernel")
        .arg(&kernel)
        .arg("-initrd")
        .arg(&image)
        .args(["-append", "console=ttyS0 panic=-1 loglevel=3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut output = String::new();
        let _ = stdout.read_to_string(&mut output);
        output
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = child.wait();
    let console = reader.join().unwrap();
    assert!(
        console.contains("INITRD-BOOT-OK"),
        "the node did not finish /init:\n{console}"
    );
    assert!(!console.contains("INSMOD-FAILED"), "{console}");
    assert!(console.contains("MODULES-LOADED 17"), "{console}");
    assert!(console.contains("DYNAMIC-LS-OK"), "{console}");
}
