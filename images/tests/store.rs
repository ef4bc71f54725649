//! The image store end to end on real directories (root needed for owners and device nodes).

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use common::{listing_text, make_root, Env, KVER};
use images::{Silent, Source, Store};

fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

macro_rules! need_root {
    () => {
        if !is_root() {
            eprintln!("skipped: needs root (owners, device nodes)");
            return;
        }
    };
}

fn current_root(store: &Store, name: &str) -> std::path::PathBuf {
    store.image_dir(name).join("current/root")
}

#[test]
fn dir_source_builds_are_identical_and_keep_every_kind_of_file() {
    need_root!();
    let env = Env::new();
    let src = env.path("src");
    make_root(&src, 50, 200_000);
    let a = images::build(
        &env.store,
        "a",
        &env.opts(Source::Dir { path: src.clone() }),
        &Silent,
    )
    .unwrap();
    let b = images::build(
        &env.store,
        "b",
        &env.opts(Source::Dir { path: src.clone() }),
        &Silent,
    )
    .unwrap();
    assert!(!a.unchanged && !b.unchanged);
    assert_eq!(a.meta.content_hash, b.meta.content_hash);
    assert_eq!(
        a.meta.initramfs, b.meta.initramfs,
        "initramfs is reproducible too"
    );
    let (ra, rb) = (current_root(&env.store, "a"), current_root(&env.store, "b"));
    assert_eq!(listing_text(&ra), listing_text(&rb));
    // The copy is faithful: the source's own listing is the image's.
    assert_eq!(listing_text(&src), listing_text(&ra));

    let su = fs::symlink_metadata(ra.join("usr/bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!(
        su.ino(),
        fs::symlink_metadata(ra.join("usr/bin/su-link"))
            .unwrap()
            .ino(),
        "hard link kept"
    );
    let owned = fs::symlink_metadata(ra.join("usr/bin/user-owned")).unwrap();
    assert_eq!((owned.uid(), owned.gid()), (1000, 1000));
    assert_eq!(fs::read_link(ra.join("bin")).unwrap(), Path::new("usr/bin"));
    let null = fs::symlink_metadata(ra.join("dev/null")).unwrap();
    assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));

    // The layout the boot servers and the NFS server rely on.
    let dir = env.store.image_dir("a");
    assert_eq!(
        fs::read_link(dir.join("current")).unwrap(),
        Path::new("versions").join(&a.version)
    );
    assert_eq!(
        fs::read(dir.join("vmlinuz")).unwrap(),
        b"not really a kernel"
    );
    assert!(fs::read(dir.join("initramfs.img"))
        .unwrap()
        .starts_with(b"070701"));
    assert_eq!(a.meta.kernel.as_ref().unwrap().version, KVER);
    assert_eq!(a.meta.initramfs.as_ref().unwrap().modules, ["a", "b", "c"]);

    // Same input again: nothing new is published.
    let again = images::build(
        &env.store,
        "a",
        &env.opts(Source::Dir { path: src }),
        &Silent,
    )
    .unwrap();
    assert!(again.unchanged);
    assert_eq!(env.store.versions("a").unwrap().len(), 1);
}

fn gnu_tar(args: &[&str]) {
    let st = Command::new("tar").args(args).status().unwrap();
    assert!(st.success(), "tar {args:?}");
}

#[test]
fn tar_and_tar_gz_builds_are_identical() {
    need_root!();
    let env = Env::new();
    let src = env.path("src");
    make_root(&src, 30, 100_000);
    let tar = env.path("root.tar");
    let tgz = env.path("root.tgz");
    gnu_tar(&[
        "--numeric-owner",
        "-cf",
        tar.to_str().unwrap(),
        "-C",
        src.to_str().unwrap(),
        ".",
    ]);
    gnu_tar(&[
        "--numeric-owner",
        "-czf",
        tgz.to_str().unwrap(),
        "-C",
        src.to_str().unwrap(),
        ".",
    ]);
    let t1 = images::build(
        &env.store,
        "t1",
        &env.opts(Source::Tar { path: tar.clone() }),
        &Silent,
    )
    .unwrap();
    let t2 = images::build(
        &env.store,
        "t2",
        &env.opts(Source::Tar { path: tar }),
        &Silent,
    )
    .unwrap();
    let gz = images::build(
        &env.store,
        "gz",
        &env.opts(Source::Tar { path: tgz }),
        &Silent,
    )
    .unwrap();
    assert_eq!(t1.meta.content_hash, t2.meta.content_hash);
    assert_eq!(t1.meta.content_hash, gz.meta.content_hash);
    let r = current_root(&env.store, "gz");
    assert_eq!(
        listing_text(&current_root(&env.store, "t1")),
        listing_text(&r)
    );
    assert_eq!(
        fs::symlink_metadata(r.join("usr/bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        fs::symlink_metadata(r.join("usr/bin/su")).unwrap().ino(),
        fs::symlink_metadata(r.join("usr/bin/su-link"))
            .unwrap()
            .ino()
    );
    assert_eq!(fs::read(r.join("etc/motd")).unwrap(), b"hello\n");
}

/// One raw ustar entry: the name goes in unchecked, as a hostile archive would have it.
fn raw_entry(
    out: &mut Vec<u8>,
    name: &[u8],
    kind: tar::EntryType,
    size: u64,
    link: &[u8],
    data: &[u8],
) {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    h.set_mtime(1);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    out.extend(std::iter::repeat_n(0u8, pad));
}

#[test]
fn hostile_tar_entries_are_refused_by_name() {
    need_root!();
    let env = Env::new();
    let outside = env.path("outside");
    fs::create_dir_all(&outside).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            {
                let mut v = Vec::new();
                raw_entry(&mut v, b"../x", tar::EntryType::Regular, 2, b"", b"hi");
                v
            },
            "../x",
        ),
        (
            "absolute",
            {
                let mut v = Vec::new();
                raw_entry(&mut v, b"/abs", tar::EntryType::Regular, 2, b"", b"hi");
                v
            },
            "/abs",
        ),
        (
            "through-symlink",
            {
                let mut v = Vec::new();
                raw_entry(
                    &mut v,
                    b"l",
                    tar::EntryType::Symlink,
                    0,
                    outside.to_str().unwrap().as_bytes(),
                    b"",
                );
                raw_entry(&mut v, b"l/evil", tar::EntryType::Regular, 2, b"", b"hi");
                v
            },
            "l/evil",
        ),
        (
            "hardlink-out",
            {
                let mut v = Vec::new();
                raw_entry(
                    &mut v,
                    b"h",
                    tar::EntryType::Link,
                    0,
                    b"../../../etc/passwd",
                    b"",
                );
                v
            },
            "h",
        ),
        (
            "huge-size",
            {
                let mut v = Vec::new();
                raw_entry(
                    &mut v,
                    b"big",
                    tar::EntryType::Regular,
                    1 << 40,
                    b"",
                    b"only a few bytes",
                );
                v
            },
            "big",
        ),
    ];
    for (label, mut bytes, entry) in cases {
        bytes.extend_from_slice(&[0u8; 1024]);
        let f = env.path(&format!("{label}.tar"));
        fs::write(&f, &bytes).unwrap();
        let err = images::build(
            &env.store,
            label,
            &env.opts(Source::Tar { path: f }),
            &Silent,
        )
        .map(|_| ())
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains(&format!("`{entry}`")), "{label}: {msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
        assert!(
            env.store.current(label).unwrap().is_none(),
            "{label}: nothing published"
        );
    }
    assert_eq!(
        fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert!(!env.path("x").exists());
}

fn tar_of(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(100);
        h.set_uid(0);
        h.set_gid(0);
        match data {
            Some(d) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, name, *d).unwrap();
            }
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, name, &[][..]).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn oci_layers() -> (Vec<u8>, Vec<u8>) {
    let l1 = tar_of(&[
        ("a/", None),
        ("a/x", Some(b"x1")),
        ("a/y", Some(b"y1")),
        ("b/", None),
        ("b/old", Some(b"old")),
        ("b/sub/", None),
        ("b/sub/deep", Some(b"deep")),
    ]);
    let l2 = tar_of(&[
        ("a/.wh.x", Some(b"")),
        ("b/", None),
        ("b/new", Some(b"new")),
        ("b/.wh..wh..opq", Some(b"")),
        ("a/y", Some(b"y2")),
    ]);
    (l1, l2)
}

fn check_oci_result(root: &Path) {
    assert!(!root.join("a/x").exists(), "whiteout removed a/x");
    assert_eq!(
        fs::read(root.join("a/y")).unwrap(),
        b"y2",
        "upper layer wins"
    );
    let mut b: Vec<_> = fs::read_dir(root.join("b"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    b.sort();
    assert_eq!(b, ["new"], "opaque dir keeps only this layer's entries");
    assert!(!root.join("a/.wh.x").exists() && !root.join("b/.wh..wh..opq").exists());
}

#[test]
fn oci_docker_save_and_image_layout_apply_layers_with_whiteouts() {
    need_root!();
    let env = Env::new();
    let (l1, l2) = oci_layers();
    // docker save: manifest.json naming layer tars.
    let docker = {
        let mut b = tar::Builder::new(Vec::new());
        let manifest = br#"[{"Config":"cfg.json","RepoTags":["t:1"],"Layers":["l1/layer.tar","l2/layer.tar"]}]"#;
        for (name, data) in [
            ("l2/layer.tar", &l2[..]),
            ("manifest.json", &manifest[..]),
            ("l1/layer.tar", &l1[..]),
        ] {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, data).unwrap();
        }
        b.into_inner().unwrap()
    };
    let f = env.path("docker.tar");
    fs::write(&f, docker).unwrap();
    images::build(
        &env.store,
        "docker",
        &env.opts(Source::Oci { path: f }),
        &Silent,
    )
    .unwrap();
    check_oci_result(&current_root(&env.store, "docker"));

    // OCI image layout: index.json → manifest blob → gzip layer blobs.
    let (g1, g2) = (gzip(&l1), gzip(&l2));
    let d1 = blake3::hash(&g1).to_hex().to_string();
    let d2 = blake3::hash(&g2).to_hex().to_string();
    let manifest = format!(
        r#"{{"schemaVersion":2,"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{d1}"}},{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:{d2}"}}]}}"#
    );
    let dm = blake3::hash(manifest.as_bytes()).to_hex().to_string();
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:{dm}","platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
    );
    let oci = {
        let mut b = tar::Builder::new(Vec::new());
        let items: Vec<(String, Vec<u8>)> = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".into(), index.into_bytes()),
            (format!("blobs/sha256/{dm}"), manifest.into_bytes()),
            (format!("blobs/sha256/{d2}"), g2),
            (format!("blobs/sha256/{d1}"), g1),
        ];
        for (name, data) in items {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    };
    let f = env.path("oci.tar");
    fs::write(&f, oci).unwrap();
    let r = images::build(
        &env.store,
        "oci",
        &env.opts(Source::Oci { path: f }),
        &Silent,
    )
    .unwrap();
    check_oci_result(&current_root(&env.store, "oci"));
    let d = images::build(
        &env.store,
        "docker",
        &env.opts(Source::Oci {
            path: env.path("docker.tar"),
        }),
        &Silent,
    )
    .unwrap();
    assert_eq!(
        r.meta.content_hash, d.meta.content_hash,
        "same layers, same image"
    );
}

#[test]
fn the_images_own_kernel_is_used() {
    need_root!();
    let env = Env::new();
    let src = env.path("src");
    make_root(&src, 0, 0);
    fs::create_dir_all(src.join("boot")).unwrap();
    fs::write(src.join("boot/vmlinuz-1.0.0-old"), b"old kernel").unwrap();
    fs::write(src.join(format!("boot/vmlinuz-{KVER}")), b"image kernel").unwrap();
    common::fake_modules(&src.join("lib/modules"));
    fs::create_dir_all(src.join("lib/modules/1.0.0-old")).unwrap();
    let r = images::build(
        &env.store,
        "k",
        &env.opts_image_kernel(Source::Dir { path: src.clone() }),
        &Silent,
    )
    .unwrap();
    let k = r.meta.kernel.unwrap();
    assert_eq!((k.version.as_str(), k.origin.as_str()), (KVER, "image"));
    assert_eq!(
        fs::read(env.store.image_dir("k").join("vmlinuz")).unwrap(),
        b"image kernel"
    );

    // No kernel anywhere: one line with the fix.
    let bare = env.path("bare");
    make_root(&bare, 0, 0);
    let e = images::build(
        &env.store,
        "bare",
        &env.opts_image_kernel(Source::Dir { path: bare }),
        &Silent,
    )
    .unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("--kernel") && msg.contains("fix:"), "{msg}");
}

#[test]
fn leftovers_of_a_killed_build_are_removed_and_current_stays() {
    need_root!();
    let env = Env::new();
    let src = env.path("src");
    make_root(&src, 5, 10_000);
    let first = images::build(
        &env.store,
        "img",
        &env.opts(Source::Dir { path: src.clone() }),
        &Silent,
    )
    .unwrap();
    // What a SIGKILL mid-build leaves: a staging dir, a temp current link.
    let dir = env.store.image_dir("img");
    fs::create_dir_all(dir.join(".build-dead/root/usr")).unwrap();
    std::os::unix::fs::symlink("versions/nothing", dir.join(".current-999")).unwrap();
    assert_eq!(env.store.current("img").unwrap().unwrap(), first.version);
    fs::write(src.join("etc/motd"), "changed\n").unwrap();
    let second = images::build(
        &env.store,
        "img",
        &env.opts(Source::Dir { path: src }),
        &Silent,
    )
    .unwrap();
    assert!(!dir.join(".build-dead").exists() && !dir.join(".current-999").exists());
    assert_ne!(first.version, second.version);
    assert_eq!(
        env.store.versions("img").unwrap(),
        [first.version.clone(), second.version.clone()],
        "old version kept"
    );
    assert_eq!(
        fs::read(current_root(&env.store, "img").join("etc/motd")).unwrap(),
        b"changed\n"
    );
    // Unchanged files are shared with the previous version (hard links on this file system).
    assert!(
        second.shared.hardlinked + second.shared.reflinked >= 5,
        "{:?}",
        second.shared
    );
}

#[test]
fn current_always_names_a_complete_version_while_publishing() {
    need_root!();
    let env = Env::new();
    let src = env.path("src");
    make_root(&src, 5, 10_000);
    images::build(
        &env.store,
        "img",
        &env.opts(Source::Dir { path: src.clone() }),
        &Silent,
    )
    .unwrap();
    let dir = env.store.image_dir("img");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (dir, stop) = (dir.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                assert!(
                    dir.join("current/meta.json").is_file(),
                    "current names an incomplete version"
                );
                assert!(dir.join("vmlinuz").is_file());
                n += 1;
            }
            n
        })
    };
    for i in 0..5 {
        fs::write(src.join("etc/motd"), format!("round {i}\n")).unwrap();
        images::build(
            &env.store,
            "img",
            &env.opts(Source::Dir { path: src.clone() }),
            &Silent,
        )
        .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(env.store.versions("img").unwrap().len(), 6);
    let lock = env.store.lock("img").unwrap();
    let removed = env.store.prune(&lock, "img", 2).unwrap();
    assert_eq!(removed.len(), 4);
    assert_eq!(env.store.versions("img").unwrap().len(), 2);
    assert!(dir.join("current/meta.json").is_file());
}

/// Bytes of blocks of inodes under `dir` that no path under `other` shares.
fn new_space(dir: &Path, other: &Path) -> u64 {
    let mut others = std::collections::HashSet::new();
    for e in walkdir::WalkDir::new(other) {
        let md = e.unwrap().path().symlink_metadata().unwrap();
        others.insert(md.ino());
    }
    let mut seen = std::collections::HashSet::new();
    let mut n = 0;
    for e in walkdir::WalkDir::new(dir) {
        let md = e.unwrap().path().symlink_metadata().unwrap();
        if !others.contains(&md.ino()) && seen.insert(md.ino()) {
            n += md.blocks() * 512;
        }
    }
    n
}

#[test]
fn snapshot_change_rollback_and_space() {
    need_root!();
    let env = Env::new();
    let src = env.path("src");
    // A small root: 20 MB across 400 files in 20 directories.
    make_root(&src, 400, 20 << 20);
    let v1 = images::build(
        &env.store,
        "img",
        &env.opts(Source::Dir { path: src.clone() }),
        &Silent,
    )
    .unwrap();
    let before = listing_text(&current_root(&env.store, "img"));

    let snap = images::snapshot(&env.store, "img", Some("before"), &Silent).unwrap();
    assert_eq!(snap.from_version, v1.version);
    let sdir = env.store.snapshot_dir("img", "before");
    let vdir = env.store.version_dir("img", &v1.version);
    let independent = new_space(&sdir, &vdir);
    let image_size = v1.meta.content_bytes;
    println!(
        "snapshot: method {}, unique {} B (reported), {} B (independent), image {} B: {:.2} %",
        snap.method,
        snap.space.unique_bytes,
        independent,
        image_size,
        100.0 * independent as f64 / image_size as f64
    );
    assert!(
        independent * 20 < image_size,
        "snapshot costs {independent} of {image_size}"
    );
    assert!(
        snap.space.unique_bytes * 20 < image_size,
        "{:?}",
        snap.space
    );

    // Change one small file through a new version.
    fs::write(src.join("etc/motd"), "changed\n").unwrap();
    let v2 = images::build(
        &env.store,
        "img",
        &env.opts(Source::Dir { path: src }),
        &Silent,
    )
    .unwrap();
    assert_ne!(v1.meta.content_hash, v2.meta.content_hash);
    assert_eq!(
        fs::read(current_root(&env.store, "img").join("etc/motd")).unwrap(),
        b"changed\n"
    );
    let v2_new = new_space(&env.store.version_dir("img", &v2.version), &vdir);
    println!("update of one file: {v2_new} B new");
    assert!(v2_new * 20 < image_size);

    // The snapshot did not move; the report says so.
    let info = images::info(&env.store, "img").unwrap();
    assert_eq!(info.snapshots.len(), 1);
    assert!(
        info.snapshots[0].changed.is_empty(),
        "{:?}",
        info.snapshots[0].changed
    );

    let rb = images::rollback(&env.store, "img", "before", false, &Silent).unwrap();
    assert_eq!(rb.previous.as_deref(), Some(v2.version.as_str()));
    assert_eq!(env.store.current("img").unwrap().unwrap(), rb.version);
    assert_eq!(
        fs::read(current_root(&env.store, "img").join("etc/motd")).unwrap(),
        b"hello\n"
    );
    assert_eq!(listing_text(&current_root(&env.store, "img")), before);
    let m = env.store.version_meta("img", &rb.version).unwrap();
    assert_eq!(m.content_hash, v1.meta.content_hash);
    assert_eq!(m.rolled_back_from.as_deref(), Some("before"));
    assert_eq!(
        env.store.versions("img").unwrap().len(),
        3,
        "old versions kept"
    );
}

#[test]
fn writing_into_a_shared_inode_is_reported_by_name() {
    need_root!();
    let env = Env::new();
    let src = env.path("src");
    make_root(&src, 10, 10_000);
    let v1 = images::build(
        &env.store,
        "img",
        &env.opts(Source::Dir { path: src }),
        &Silent,
    )
    .unwrap();
    let snap = images::snapshot(&env.store, "img", None, &Silent).unwrap();
    assert_eq!(snap.snapshot, "snap-1");
    if snap.method != "hardlink" {
        eprintln!(
            "skipped: snapshots here use {}, which in-place writes cannot reach",
            snap.method
        );
        return;
    }
    // An in-place write into the version (what an editor saving in place does).
    let f = env
        .store
        .version_dir("img", &v1.version)
        .join("root/etc/motd");
    let mut w = fs::OpenOptions::new().write(true).open(&f).unwrap();
    w.write_all(b"HELLO\n").unwrap();
    drop(w);
    let checks = images::verify(&env.store, "img", &Silent).unwrap();
    let bad: Vec<_> = checks.iter().filter(|c| !c.ok).collect();
    assert_eq!(
        bad.len(),
        2,
        "version and snapshot both changed: {checks:?}"
    );
    assert!(bad.iter().all(|c| c.damage == ["~etc/motd"]), "{bad:?}");
    let info = images::info(&env.store, "img").unwrap();
    assert_eq!(info.snapshots[0].changed, ["~etc/motd"]);
    let e = images::rollback(&env.store, "img", "snap-1", false, &Silent).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("etc/motd") && msg.contains("fix:"), "{msg}");
    // Forced, it publishes the tree as it is now.
    images::rollback(&env.store, "img", "snap-1", true, &Silent).unwrap();
}

#[test]
fn host_image_is_live_and_its_snapshot_is_a_copy() {
    need_root!();
    let env = Env::new();
    // A stand-in for the master's root.
    let host = env.path("host");
    make_root(&host, 10, 10_000);
    fs::write(host.join("etc/machine-id"), "0123\n").unwrap();
    fs::create_dir_all(host.join("etc/ssh")).unwrap();
    fs::write(host.join("etc/ssh/ssh_host_ed25519_key"), "secret").unwrap();
    fs::write(host.join("etc/ssh/sshd_config"), "Port 22\n").unwrap();
    fs::create_dir_all(host.join("proc/1")).unwrap();
    let mut o = env.opts(Source::Host);
    o.host_root = host.clone();
    let r = images::build(&env.store, "host", &o, &Silent).unwrap();
    assert!(r.version.ends_with("-live"));
    let images::Export::Live { root, exclude } = &r.meta.export else {
        panic!("not live")
    };
    assert_eq!(root, &host);
    for x in [
        "proc",
        "etc/machine-id",
        "etc/ssh/ssh_host_ed25519_key",
        "etc/hostname",
    ] {
        assert!(
            exclude.iter().any(|e| e == x),
            "{x} not excluded: {exclude:?}"
        );
    }
    assert!(!exclude.iter().any(|e| e == "etc/ssh/sshd_config"));
    assert!(
        !env.store
            .version_dir("host", &r.version)
            .join("root")
            .exists(),
        "not copied"
    );

    let s = images::snapshot(&env.store, "host", Some("s1"), &Silent).unwrap();
    let sroot = env.store.snapshot_dir("host", "s1").join("root");
    assert!(sroot.join("etc/motd").is_file());
    assert!(sroot.join("etc/ssh/sshd_config").is_file());
    assert!(!sroot.join("etc/machine-id").exists() && !sroot.join("proc").exists());
    assert!(!sroot.join("etc/ssh/ssh_host_ed25519_key").exists());
    assert_ne!(
        fs::metadata(sroot.join("etc/motd")).unwrap().ino(),
        fs::metadata(host.join("etc/motd")).unwrap().ino(),
        "the live tree is never hard-linked"
    );
    // A second snapshot shares unchanged files with the first.
    let s2 = images::snapshot(&env.store, "host", Some("s2"), &Silent).unwrap();
    assert!(
        s2.shared.hardlinked + s2.shared.reflinked > 0,
        "{:?} (first: {:?})",
        s2.shared,
        s.shared
    );
    // Rolling back to it publishes a copied tree.
    let rb = images::rollback(&env.store, "host", "s1", false, &Silent).unwrap();
    let m = env.store.version_meta("host", &rb.version).unwrap();
    assert_eq!(m.export, images::Export::Tree);
}
