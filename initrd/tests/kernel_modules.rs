//! Kernel-module closure on synthetic module trees (real ELF `.ko` files with a `.modinfo`
//! section, no `modules.dep`) and on Debian's cloud kernel when it is unpacked under
//! /work/cache, compared with what `depmod` computes.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;

use common::{cloud_kernel_modules_dir, run};
use initrd::{
    Compression, DependencySource, EntryKind, FileContent, InitramfsBuilder, ModuleClosure,
    ModuleError, ModuleIndex, MODULES_LOAD_ORDER,
};

/// A minimal ELF64 relocatable object whose only content is a `.modinfo` section.
fn fake_module(modinfo: &[&str]) -> Vec<u8> {
    let mut section = Vec::new();
    for field in modinfo {
        section.extend_from_slice(field.as_bytes());
        section.push(0);
    }
    let shstrtab = b"\0.modinfo\0.shstrtab\0";
    let modinfo_offset = 64;
    let shstrtab_offset = modinfo_offset + section.len();
    let section_headers = (shstrtab_offset + shstrtab.len()).div_ceil(8) * 8;
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    elf.extend_from_slice(&1u16.to_le_bytes()); // ET_REL
    elf.extend_from_slice(&62u16.to_le_bytes()); // x86-64
    elf.extend_from_slice(&1u32.to_le_bytes());
    elf.extend_from_slice(&0u64.to_le_bytes()); // entry
    elf.extend_from_slice(&0u64.to_le_bytes()); // phoff
    elf.extend_from_slice(&(section_headers as u64).to_le_bytes());
    elf.extend_from_slice(&0u32.to_le_bytes()); // flags
    for value in [64u16, 0, 0, 64, 3, 2] {
        elf.extend_from_slice(&value.to_le_bytes());
    }
    elf.extend_from_slice(&section);
    elf.extend_from_slice(shstrtab);
    elf.resize(section_headers, 0);
    let mut header = |name: u32, kind: u32, offset: usize, size: usize| {
        elf.extend_from_slice(&name.to_le_bytes());
        elf.extend_from_slice(&kind.to_le_bytes());
        for value in [0u64, 0, offset as u64, size as u64] {
            elf.extend_from_slice(&value.to_le_bytes());
        }
        elf.extend_from_slice(&0u32.to_le_bytes());
        elf.extend_from_slice(&0u32.to_le_bytes());
        elf.extend_from_slice(&1u64.to_le_bytes());
        elf.extend_from_slice(&0u64.to_le_bytes());
    };
    header(0, 0, 0, 0);
    header(1, 1, modinfo_offset, section.len()); // .modinfo, SHT_PROGBITS
    header(10, 3, shstrtab_offset, shstrtab.len()); // .shstrtab, SHT_STRTAB
    elf
}

fn write_module(dir: &Path, path: &str, modinfo: &[&str]) {
    let host = dir.join(path);
    fs::create_dir_all(host.parent().unwrap()).unwrap();
    let image = fake_module(modinfo);
    let bytes = if path.ends_with(".zst") {
        zstd::encode_all(&image[..], 3).unwrap()
    } else if path.ends_with(".gz") {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&image).unwrap();
        encoder.finish().unwrap()
    } else {
        image
    };
    fs::write(host, bytes).unwrap();
}

/// A modules directory without modules.dep: x -> a -> {b, c}, b -> c, and an aliased d-e.
fn synthetic_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("lib/modules/6.1.0-test");
    write_module(&modules, "kernel/a.ko", &["name=a", "depends=b,c"]);
    write_module(&modules, "kernel/sub/b.ko", &["name=b", "depends=c"]);
    write_module(&modules, "kernel/c.ko", &["name=c", "depends="]);
    write_module(
        &modules,
        "kernel/fs/d-e.ko.zst",
        &["alias=fs-dee", "name=d_e", "depends="],
    );
    write_module(&modules, "kernel/x.ko.gz", &["name=x", "depends=a"]);
    write_module(&modules, "kernel/p.ko", &["name=p", "depends=q"]);
    write_module(&modules, "kernel/q.ko", &["name=q", "depends=p"]);
    fs::write(modules.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
    dir
}

fn names(closure: &ModuleClosure) -> Vec<&str> {
    closure.modules.iter().map(|m| m.name.as_str()).collect()
}

#[test]
fn modinfo_fallback_on_a_synthetic_tree() {
    let tree = synthetic_tree();
    let modules = tree.path().join("lib/modules/6.1.0-test");
    let index = ModuleIndex::load(&modules).unwrap();
    assert_eq!(index.source(), DependencySource::Modinfo);
    assert_eq!(index.version(), "6.1.0-test");
    let closure = index.closure(&["x", "fs-dee", "ext4"]).unwrap();
    assert_eq!(names(&closure), ["c", "b", "a", "x", "d_e"]);
    assert_eq!(closure.builtin, ["ext4"]);
    assert!(matches!(
        index.closure(&["p"]),
        Err(ModuleError::Cycle { .. })
    ));
    assert!(matches!(
        index.closure(&["nope"]),
        Err(ModuleError::Unknown { name, .. }) if name == "nope"
    ));
}

#[test]
fn builder_installs_decompressed_modules_and_the_order_file() {
    let tree = synthetic_tree();
    let modules = tree.path().join("lib/modules/6.1.0-test");
    let mut builder = InitramfsBuilder::new();
    builder.add_kernel_modules(&modules, &["x", "d-e"]).unwrap();
    let order = match builder.archive().get(MODULES_LOAD_ORDER).unwrap().kind() {
        EntryKind::File(FileContent::Bytes(bytes)) => String::from_utf8(bytes.to_vec()).unwrap(),
        other => panic!("{other:?}"),
    };
    let base = "/lib/modules/6.1.0-test/kernel";
    assert_eq!(
        order,
        format!("{base}/c.ko\n{base}/sub/b.ko\n{base}/a.ko\n{base}/x.ko\n{base}/fs/d-e.ko\n")
    );
    let cpio = builder.to_bytes(Compression::None).unwrap();
    let listing = String::from_utf8(run("cpio", &["-it", "--quiet"], &cpio, None)).unwrap();
    assert!(listing
        .lines()
        .any(|l| l == "lib/modules/6.1.0-test/kernel/fs/d-e.ko"));
    // The stored module is the plain ELF image again.
    let dir = tempfile::tempdir().unwrap();
    run("cpio", &["-idm", "--quiet"], &cpio, Some(dir.path()));
    let stored = fs::read(dir.path().join("lib/modules/6.1.0-test/kernel/fs/d-e.ko")).unwrap();
    assert!(stored.starts_with(b"\x7fELF"));
}

/// Copies a modules tree to `<tmp>/lib/modules/<version>` and runs `depmod -b` on the copy.
fn depmod_copy(modules: &Path) -> (tempfile::TempDir, std::path::PathBuf) {
    let version = modules.file_name().unwrap().to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("lib/modules").join(&version);
    fs::create_dir_all(copy.parent().unwrap()).unwrap();
    run(
        "cp",
        &["-a", modules.to_str().unwrap(), copy.to_str().unwrap()],
        b"",
        None,
    );
    run(
        "depmod",
        &["-b", dir.path().to_str().unwrap(), &version],
        b"",
        None,
    );
    assert!(copy.join("modules.dep").is_file());
    (dir, copy)
}

/// Every module's dependencies (according to `index`) come before it.
fn assert_load_order(index: &ModuleIndex, closure: &ModuleClosure) {
    for (position, module) in closure.modules.iter().enumerate() {
        let own = index.closure(&[module.name.as_str()]).unwrap();
        for dependency in &own.modules[..own.modules.len() - 1] {
            let at = closure
                .modules
                .iter()
                .position(|m| m.name == dependency.name);
            assert!(
                at.is_some_and(|at| at < position),
                "{} must be loaded before {}",
                dependency.name,
                module.name
            );
        }
    }
}

const NODE_MODULES: [&str; 4] = ["virtio_pci", "virtio_net", "nfsv3", "overlay"];

/// The 17 modules that were seen to boot a node (notes/netboot-lab.md).
const EXPECTED_17: [&str; 17] = [
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "netfs",
    "fscache",
    "sunrpc",
    "grace",
    "lockd",
    "nfs",
    "nfs_acl",
    "nfsv3",
    "overlay",
];

#[test]
fn debian_cloud_kernel_closure_from_modinfo_matches_depmod() {
    let Some(modules) = cloud_kernel_modules_dir() else {
        eprintln!(
            "skipped: no Debian cloud kernel under /work/cache \
             (apt-get download linux-image-6.1.0-*-cloud-amd64 && dpkg -x)"
        );
        return;
    };
    let ours = ModuleIndex::from_modinfo(&modules).unwrap();
    let from_modinfo = ours.closure(&NODE_MODULES).unwrap();
    let found: BTreeSet<&str> = names(&from_modinfo).into_iter().collect();
    assert_eq!(found, EXPECTED_17.into_iter().collect(), "{from_modinfo:?}");
    assert_eq!(from_modinfo.modules.len(), 17, "no duplicates");
    assert_load_order(&ours, &from_modinfo);

    // Aliases without modules.alias come from the modules' own alias= fields.
    let by_alias = ours
        .closure(&["fs-overlay", "virtio:d00000001v00001AF4", "net-pf-10"])
        .unwrap();
    assert!(names(&by_alias).contains(&"overlay"));
    assert!(names(&by_alias).contains(&"virtio_net"));

    let (_keep, copy) = depmod_copy(&modules);
    let depmod = ModuleIndex::load(&copy).unwrap();
    assert_eq!(depmod.source(), DependencySource::ModulesDep);
    let from_depmod = depmod.closure(&NODE_MODULES).unwrap();
    let depmod_names: BTreeSet<&str> = names(&from_depmod).into_iter().collect();
    assert_eq!(depmod_names, found);
    assert_load_order(&depmod, &from_depmod);
    assert_load_order(&depmod, &from_modinfo);
    let aliased = depmod
        .closure(&["fs-overlay", "virtio:d00000001v00001AF4"])
        .unwrap();
    assert_eq!(names(&aliased)[0], "overlay");
    assert_eq!(names(&aliased).last(), Some(&"virtio_net"));
}

#[test]
fn debian_cloud_kernel_initramfs_is_reproducible() {
    let Some(modules) = cloud_kernel_modules_dir() else {
        eprintln!("skipped: no Debian cloud kernel under /work/cache");
        return;
    };
    let build = || {
        let mut builder = InitramfsBuilder::new();
        builder.set_mtime(1_700_000_000);
        builder.mirror_merged_usr(Path::new("/")).unwrap();
        builder.add_base_layout().unwrap();
        builder.add_executable(Path::new("/"), "/bin/ls").unwrap();
        builder.add_kernel_modules(&modules, &NODE_MODULES).unwrap();
        builder.to_bytes(Compression::default()).unwrap()
    };
    let first = build();
    assert_eq!(first, build());
    let cpio = run("zstd", &["-d", "-c", "-q"], &first, None);
    let listing = String::from_utf8(run("cpio", &["-it", "--quiet"], &cpio, None)).unwrap();
    assert!(listing
        .lines()
        .any(|l| l.ends_with("/kernel/fs/nfs/nfsv3.ko")));
    assert!(listing.lines().any(|l| l == "etc/modules-load.order"));
}
