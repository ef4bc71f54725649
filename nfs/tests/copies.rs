//! The file side end to end, through the `Filesystem` trait only: handles, fileids, attributes
//! and readdir pages must be identical on copies of a tree (design §6.1), version switches keep
//! old handles working, in-place edits are picked up, nothing escapes the root.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nfs::exports::{ExportSource, ExportSpec, Exports, ExportsConfig, RescanOutcome};
use nfs::fs::{Attributes, DirEntry, FileHandle, FileType, Filesystem, MountError, NfsError};
use nfs::handle::HandleKey;

const GIB: u64 = 1 << 30;

fn key() -> HandleKey {
    HandleKey([0x5a; 32])
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn sh(cmd: &str, args: &[&OsStr]) {
    let st = Command::new(cmd).args(args).status().unwrap();
    assert!(st.success(), "{cmd} {args:?} failed");
}

fn cp_a(src: &Path, dst: &Path) {
    sh("cp", &[OsStr::new("-a"), src.as_os_str(), dst.as_os_str()]);
}

/// A tree with every kind of entry the design names (§3.4, §6.1).
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("etc")).unwrap();
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("usr/lib")).unwrap();
    fs::create_dir_all(root.join("hl")).unwrap();
    fs::create_dir_all(root.join("dev")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("etc/passwd"), b"root:x:0:0:root:/root:/bin/sh\n").unwrap();
    fs::write(root.join("etc/empty"), b"").unwrap();
    fs::write(root.join("usr/bin/prog"), vec![0x7fu8; 10_000]).unwrap();
    fs::set_permissions(
        root.join("usr/bin/prog"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::write(
        root.join("usr/lib/libx.so"),
        (0..200_000u32).map(|i| i as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    fs::write(root.join("usr/lib/a-link"), b"linked content").unwrap();
    fs::hard_link(root.join("usr/lib/a-link"), root.join("hl/b-link")).unwrap();
    fs::write(
        root.join(OsStr::from_bytes(b"etc/raw-\xff\xfe")),
        b"raw name",
    )
    .unwrap();
    fs::write(root.join("etc/owned"), b"owned").unwrap();
    std::os::unix::fs::chown(root.join("etc/owned"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::symlink("prog", root.join("usr/bin/rel")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("abs")).unwrap();
    std::os::unix::fs::symlink("nowhere/at/all", root.join("dangling")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc", root.join("escape")).unwrap();
    // SAFETY: valid C strings.
    unsafe {
        assert_eq!(
            libc::mknod(
                cstr(&root.join("dev/null")).as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(1, 3)
            ),
            0
        );
        assert_eq!(
            libc::mknod(
                cstr(&root.join("dev/loop0")).as_ptr(),
                libc::S_IFBLK | 0o660,
                libc::makedev(7, 0)
            ),
            0
        );
        assert_eq!(
            libc::mkfifo(cstr(&root.join("dev/fifo")).as_ptr(), 0o644),
            0
        );
    }
    // mknod/mkfifo modes went through the umask; set them exactly.
    for (p, m) in [
        ("dev/null", 0o666),
        ("dev/loop0", 0o660),
        ("dev/fifo", 0o644),
    ] {
        fs::set_permissions(root.join(p), fs::Permissions::from_mode(m)).unwrap();
    }
    drop(std::os::unix::net::UnixListener::bind(root.join("dev/sock")).unwrap());
    let big = fs::File::create(root.join("big.sparse")).unwrap();
    big.set_len(5 * GIB).unwrap();
    use std::os::unix::fs::FileExt;
    big.write_at(b"A", 4 * GIB - 1).unwrap();
    big.write_at(b"B", 4 * GIB).unwrap();
    big.write_at(b"C", 5 * GIB - 1).unwrap();
}

fn dir_exports(name: &str, dir: &Path) -> Exports {
    let spec = ExportSpec::new(
        name,
        format!("/images/{name}").as_bytes(),
        ExportSource::Directory(dir.to_path_buf()),
    );
    Exports::new(key(), vec![spec], ExportsConfig::default()).unwrap()
}

struct Walked {
    by_path: BTreeMap<Vec<u8>, DirEntry>,
    pages: Vec<(Vec<u8>, Vec<DirEntry>, bool)>,
}

/// Every entry reachable from the export root, via READDIR pages of `page` entries.
fn walk(fs: &dyn Filesystem, mount: &[u8], page: usize) -> Walked {
    let root = fs.mount(mount).unwrap();
    let mut w = Walked {
        by_path: BTreeMap::new(),
        pages: Vec::new(),
    };
    let mut stack = vec![(Vec::new(), root)];
    while let Some((path, dir)) = stack.pop() {
        let mut after = 0;
        let mut seen = 0;
        loop {
            let (entries, eof) = fs.readdir(&dir, after, page).unwrap();
            assert!(entries.len() <= page);
            w.pages.push((path.clone(), entries.clone(), eof));
            for e in &entries {
                assert!(e.cookie > after, "cookies increase");
                after = e.cookie;
                seen += 1;
                if e.name == b"." || e.name == b".." {
                    continue;
                }
                let mut p = path.clone();
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(&e.name);
                if e.attr.ftype == FileType::Directory {
                    stack.push((p.clone(), e.handle));
                }
                assert!(
                    w.by_path.insert(p, e.clone()).is_none(),
                    "no duplicate names"
                );
            }
            if eof {
                break;
            }
            assert!(!entries.is_empty(), "progress");
        }
        assert!(seen >= 2);
    }
    w
}

fn read_all(fs: &dyn Filesystem, fh: &FileHandle, size: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let (n, eof, _) = fs.read(fh, out.len() as u64, &mut buf).unwrap();
        out.extend_from_slice(&buf[..n]);
        if eof {
            break;
        }
        assert!(n > 0);
    }
    assert_eq!(out.len() as u64, size);
    out
}

fn without_nlink(a: &Attributes) -> Attributes {
    Attributes { nlink: 0, ..*a }
}

#[test]
fn copies_serve_identical_handles_attributes_and_listings() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src);
    let copy = tmp.path().join("copy");
    cp_a(&src, &copy);
    // The variant whose replication broke hard links: the second name becomes its own file
    // (same content, owner, mode, mtime), and its directory keeps its mtime.
    let broken = tmp.path().join("broken");
    cp_a(&src, &broken);
    let hl = broken.join("hl");
    let dir_times = fs::metadata(&hl).unwrap();
    sh(
        "cp",
        &[
            OsStr::new("-p"),
            broken.join("hl/b-link").as_os_str(),
            broken.join("hl/b-tmp").as_os_str(),
        ],
    );
    fs::rename(broken.join("hl/b-tmp"), broken.join("hl/b-link")).unwrap();
    let t = fs::FileTimes::new()
        .set_modified(dir_times.modified().unwrap())
        .set_accessed(dir_times.accessed().unwrap());
    fs::File::open(&hl).unwrap().set_times(t).unwrap();
    assert_eq!(fs::metadata(broken.join("hl/b-link")).unwrap().nlink(), 1);

    // The test would prove nothing if the copies shared inodes.
    let mut compared = 0;
    for e in walkdir::WalkDir::new(&src).min_depth(1) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(&src).unwrap();
        let a = fs::symlink_metadata(e.path()).unwrap().ino();
        assert_ne!(
            a,
            fs::symlink_metadata(copy.join(rel)).unwrap().ino(),
            "{rel:?}"
        );
        assert_ne!(
            a,
            fs::symlink_metadata(broken.join(rel)).unwrap().ino(),
            "{rel:?}"
        );
        compared += 1;
    }
    assert!(compared >= 20);

    let t0 = Instant::now();
    let exps: Vec<Exports> = [&src, &copy, &broken]
        .iter()
        .map(|d| dir_exports("img", d))
        .collect();
    // Built side by side (each hashes the 5 GiB file itself: no shared cache file).
    std::thread::scope(|s| {
        for e in &exps {
            s.spawn(move || assert_eq!(e.rescan("img").unwrap(), RescanOutcome::Ready));
        }
    });
    let st = exps[0].stats("img").unwrap();
    println!(
        "3 indexes of {} entries (incl. a 5 GiB sparse file hashed each time) built in parallel in {:?}; hashed {} files, {} bytes in {:?} for the first",
        st.entries,
        t0.elapsed(),
        st.hashed_files,
        st.hashed_bytes,
        st.index_build
    );
    let (a, b, c) = (&exps[0], &exps[1], &exps[2]);
    let mount = b"/images/img";

    for page in [1, 3, 1000] {
        let wa = walk(a, mount, page);
        let wb = walk(b, mount, page);
        assert_eq!(
            wa.pages, wb.pages,
            "cp -a copy: identical readdir pages (page size {page})"
        );
        assert_eq!(wa.by_path, wb.by_path);
        if page == 1000 {
            let names: Vec<String> = wa
                .by_path
                .keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            assert!(names.len() >= 24, "{names:?}");
        }
        let wc = walk(c, mount, page);
        assert_eq!(
            wa.by_path.keys().collect::<Vec<_>>(),
            wc.by_path.keys().collect::<Vec<_>>()
        );
        for (p, ea) in &wa.by_path {
            let ec = &wc.by_path[p];
            assert_eq!(ea.cookie, ec.cookie);
            match &p[..] {
                // Canonical name of the broken group: same handle, only nlink differs.
                b"hl/b-link" => {
                    assert_eq!(ea.handle, ec.handle);
                    assert_eq!((ea.attr.nlink, ec.attr.nlink), (2, 1));
                    assert_eq!(without_nlink(&ea.attr), without_nlink(&ec.attr));
                }
                // The other name now is its own object: a new LOOKUP gets another handle
                // (design §2.3) — but the handle a client already holds still resolves there.
                b"usr/lib/a-link" => {
                    assert_ne!(ea.handle, ec.handle);
                    let held = c.getattr(&ea.handle).unwrap();
                    assert_eq!(without_nlink(&held), without_nlink(&ea.attr));
                    assert_eq!(held.fileid, ea.attr.fileid);
                }
                _ => assert_eq!(ea, ec, "{}", String::from_utf8_lossy(p)),
            }
        }
    }

    // Every handle from copy A: same attributes from B and C via GETATTR, same LOOKUP result.
    let wa = walk(a, mount, 1000);
    let root = a.mount(mount).unwrap();
    assert_eq!(root, b.mount(mount).unwrap());
    for (p, e) in &wa.by_path {
        let ga = a.getattr(&e.handle).unwrap();
        assert_eq!(ga, e.attr);
        assert_eq!(b.getattr(&e.handle).unwrap(), ga);
        assert_eq!(
            without_nlink(&c.getattr(&e.handle).unwrap()),
            without_nlink(&ga)
        );
        // LOOKUP along the path gives the same handle and attributes.
        let mut dir = root;
        let comps: Vec<&[u8]> = p.split(|&x| x == b'/').collect();
        for (i, comp) in comps.iter().enumerate() {
            let (ha, aa) = a.lookup(&dir, comp).unwrap();
            let (hb, ab) = b.lookup(&dir, comp).unwrap();
            assert_eq!((ha, aa), (hb, ab));
            if i + 1 == comps.len() {
                assert_eq!(ha, e.handle);
            }
            dir = ha;
        }
        match e.attr.ftype {
            FileType::Symlink => {
                assert_eq!(
                    a.readlink(&e.handle).unwrap(),
                    b.readlink(&e.handle).unwrap()
                );
                assert_eq!(
                    a.readlink(&e.handle).unwrap(),
                    fs::read_link(src.join(OsStr::from_bytes(p)))
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                );
                assert_eq!(e.attr.size, a.readlink(&e.handle).unwrap().len() as u64);
                let mut buf = [0u8; 8];
                assert_eq!(
                    a.read(&e.handle, 0, &mut buf),
                    Err(NfsError::Inval),
                    "symlinks are never followed by READ"
                );
            }
            FileType::Regular if e.attr.size < GIB => {
                let data = read_all(a, &e.handle, e.attr.size);
                assert_eq!(data, fs::read(src.join(OsStr::from_bytes(p))).unwrap());
                assert_eq!(read_all(b, &e.handle, e.attr.size), data);
                assert_eq!(read_all(c, &e.handle, e.attr.size), data);
            }
            FileType::Regular => {}
            _ => {
                let mut buf = [0u8; 8];
                assert_eq!(a.read(&e.handle, 0, &mut buf), Err(NfsError::Inval));
                assert_eq!(a.readlink(&e.handle), Err(NfsError::Inval));
            }
        }
    }

    // Attributes by the rules of design §3.2.
    let at = |p: &str| wa.by_path[p.as_bytes()].attr;
    let md = |p: &str| fs::symlink_metadata(src.join(p)).unwrap();
    let prog = at("usr/bin/prog");
    assert_eq!(
        (prog.ftype, prog.mode, prog.size, prog.used, prog.nlink),
        (FileType::Regular, 0o4755, 10_000, 12_288, 1)
    );
    assert_eq!(prog.atime, prog.mtime);
    assert_eq!(prog.ctime, prog.mtime);
    assert_eq!(
        (prog.mtime.seconds as i64, prog.mtime.nseconds as i64),
        (md("usr/bin/prog").mtime(), md("usr/bin/prog").mtime_nsec())
    );
    assert_eq!((at("etc/empty").size, at("etc/empty").used), (0, 0));
    assert_eq!((at("etc/owned").uid, at("etc/owned").gid), (1234, 5678));
    let null = at("dev/null");
    assert_eq!(
        (null.ftype, null.rdev, null.size, null.mode),
        (FileType::CharDevice, (1, 3), 0, 0o666)
    );
    assert_eq!(
        (at("dev/loop0").ftype, at("dev/loop0").rdev),
        (FileType::BlockDevice, (7, 0))
    );
    assert_eq!(at("dev/fifo").ftype, FileType::Fifo);
    assert_eq!(at("dev/sock").ftype, FileType::Socket);
    assert_eq!(
        (at("dangling").ftype, at("dangling").size),
        (FileType::Symlink, 14)
    );
    assert_eq!((at("hl/b-link").nlink, at("usr/lib/a-link").nlink), (2, 2));
    assert_eq!(
        wa.by_path[&b"hl/b-link"[..]].handle,
        wa.by_path[&b"usr/lib/a-link"[..]].handle,
        "one object, canonical handle"
    );
    assert_eq!(at("hl/b-link").fileid, at("usr/lib/a-link").fileid);
    let rootattr = a.getattr(&root).unwrap();
    assert_eq!(rootattr.nlink, 2 + 5, "etc usr hl dev empty");
    assert_eq!(at("empty").size, 4096);
    assert_eq!(at("usr").nlink, 4);
    assert_eq!(rootattr.fsid, at("etc/passwd").fsid);
    let fileids: std::collections::HashSet<u64> =
        wa.by_path.values().map(|e| e.attr.fileid).collect();
    assert_eq!(
        fileids.len(),
        wa.by_path.len() - 1,
        "distinct fileids except the link pair"
    );
    assert!(
        wa.by_path.contains_key(&b"etc/raw-\xff\xfe"[..]),
        "raw byte names"
    );

    // The sparse 5 GiB file: reads around 4 GiB and at/after the end.
    let big = wa.by_path[&b"big.sparse"[..]].handle;
    for fs_ in [a as &dyn Filesystem, b, c] {
        let mut buf = [0u8; 2];
        assert_eq!(fs_.read(&big, 4 * GIB - 1, &mut buf).unwrap().0, 2);
        assert_eq!(&buf, b"AB");
        let (n, eof, attr) = fs_.read(&big, 4 * GIB, &mut buf[..1]).unwrap();
        assert_eq!((n, eof, buf[0], attr.size), (1, false, b'B', 5 * GIB));
        let mut buf = [0u8; 10];
        let (n, eof, _) = fs_.read(&big, 5 * GIB - 1, &mut buf).unwrap();
        assert_eq!((n, eof, buf[0]), (1, true, b'C'));
        let (n, eof, _) = fs_.read(&big, 5 * GIB, &mut buf).unwrap();
        assert_eq!((n, eof), (0, true));
        let (n, eof, _) = fs_.read(&big, 5 * GIB + 10, &mut buf).unwrap();
        assert_eq!((n, eof), (0, true));
        let (n, eof, _) = fs_.read(&big, u64::MAX, &mut buf).unwrap();
        assert_eq!((n, eof), (0, true));
        let (n, eof, _) = fs_.read(&big, 1000, &mut buf).unwrap();
        assert_eq!((n, eof, buf), (10, false, [0u8; 10]));
    }
    let passwd = wa.by_path[&b"etc/passwd"[..]].handle;
    let mut buf = [0u8; 100];
    let (n, eof, _) = a.read(&passwd, 0, &mut buf).unwrap();
    assert_eq!((n, eof), (30, true));
    let (n, eof, _) = a.read(&passwd, 0, &mut buf[..30]).unwrap();
    assert_eq!(
        (n, eof),
        (30, true),
        "eof when offset + count reaches the size"
    );
    let (n, eof, _) = a.read(&passwd, 0, &mut buf[..29]).unwrap();
    assert_eq!((n, eof), (29, false));
    assert_eq!(a.read(&root, 0, &mut buf), Err(NfsError::Inval));

    // FSSTAT totals are the same on every copy.
    assert_eq!(a.fsstat(&root).unwrap(), b.fsstat(&root).unwrap());
    let (_, st) = a.fsstat(&root).unwrap();
    assert_eq!(st.tfiles, wa.by_path.len() as u64 + 1);
    assert!(st.tbytes >= 5 * GIB);
}

#[test]
fn lookup_names_dot_dotdot_and_bad_handles() {
    let tmp = tempfile::tempdir().unwrap();
    let root_dir = tmp.path().join("t");
    fs::create_dir_all(root_dir.join("a/b")).unwrap();
    fs::write(root_dir.join("a/f"), b"f").unwrap();
    let e = dir_exports("t", &root_dir);
    let root = e.mount(b"/images/t").unwrap();
    assert_eq!(e.mount(b"/images/t/").unwrap(), root);
    assert_eq!(e.mount(b"/images/nope"), Err(MountError::NoEnt));
    assert_eq!(e.mount(&[b'/'; 1025]), Err(MountError::NameTooLong));
    assert_eq!(e.export_paths(), vec![b"/images/t".to_vec()]);

    // Not ready yet: JUKEBOX, the client retries.
    assert_eq!(e.getattr(&root), Err(NfsError::Jukebox));
    assert_eq!(e.lookup(&root, b"a").map(|x| x.0), Err(NfsError::Jukebox));
    assert_eq!(e.generation("t"), Some(0));
    assert!(!e.is_ready("t"));
    assert_eq!(e.rescan("t").unwrap(), RescanOutcome::Ready);
    assert_eq!(e.generation("t"), Some(1));
    assert_eq!(e.rescan("t").unwrap(), RescanOutcome::Unchanged);
    assert_eq!(e.generation("t"), Some(1));

    let (a, _) = e.lookup(&root, b"a").unwrap();
    let (bdir, _) = e.lookup(&a, b"b").unwrap();
    let (f, _) = e.lookup(&a, b"f").unwrap();
    assert_eq!(e.lookup(&a, b".").unwrap().0, a);
    assert_eq!(e.lookup(&bdir, b"..").unwrap().0, a);
    assert_eq!(
        e.lookup(&root, b"..").unwrap().0,
        root,
        "the root's .. is the root"
    );
    assert_eq!(e.lookup(&root, b".").unwrap().0, root);
    assert_eq!(e.lookup(&a, b""), Err(NfsError::NoEnt));
    assert_eq!(e.lookup(&a, b"b/"), Err(NfsError::NoEnt));
    assert_eq!(e.lookup(&a, b"f\0"), Err(NfsError::NoEnt));
    assert_eq!(e.lookup(&a, &[b'x'; 256]), Err(NfsError::NameTooLong));
    assert_eq!(e.lookup(&a, b"missing"), Err(NfsError::NoEnt));
    assert_eq!(e.lookup(&f, b"x"), Err(NfsError::NotDir));
    assert_eq!(e.readdir(&f, 0, 10).map(|x| x.1), Err(NfsError::NotDir));

    // readdir starts with . and .., resumes after any cookie, and is exhausted correctly.
    let (all, eof) = e.readdir(&a, 0, 100).unwrap();
    assert!(eof);
    assert_eq!(
        all.iter().map(|d| d.name.as_slice()).collect::<Vec<_>>()[..2],
        [&b"."[..], b".."]
    );
    assert_eq!((all[0].cookie, all[1].cookie), (1, 2));
    assert_eq!(all[1].handle, root);
    assert_eq!(all.len(), 4);
    assert_eq!(e.readdir(&a, 1, 100).unwrap().0.len(), 3);
    assert_eq!(e.readdir(&a, 2, 100).unwrap().0.len(), 2);
    assert_eq!(
        e.readdir(&a, all[2].cookie, 100).unwrap(),
        (vec![all[3].clone()], true)
    );
    assert_eq!(e.readdir(&a, all[3].cookie, 100).unwrap(), (vec![], true));
    assert_eq!(e.readdir(&a, 0, 0).unwrap(), (vec![], false));
    assert!(e.readdir(&a, 0, 4).unwrap().1);
    assert!(!e.readdir(&a, 0, 3).unwrap().1);

    // Bad handles.
    let mut bad = f;
    bad.0[0] = 0x02;
    assert_eq!(e.getattr(&bad), Err(NfsError::BadHandle));
    let mut bad = f;
    bad.0[2] = 1;
    assert_eq!(e.getattr(&bad), Err(NfsError::BadHandle));
    let mut bad = f;
    bad.0[1] = 9;
    assert_eq!(e.getattr(&bad), Err(NfsError::BadHandle));
    let mut unknown_export = f;
    unknown_export.0[5] ^= 0xff;
    assert_eq!(e.getattr(&unknown_export), Err(NfsError::Stale));
    let mut unknown_object = f;
    unknown_object.0[20] ^= 0xff;
    assert_eq!(e.getattr(&unknown_object), Err(NfsError::Stale));
    let mut wrong_kind = f;
    wrong_kind.0[1] = 1;
    wrong_kind.0[28..36].copy_from_slice(&[0; 8]);
    assert_eq!(
        e.getattr(&wrong_kind),
        Err(NfsError::Stale),
        "a file's path with kind directory"
    );
    // Another cluster key: nothing resolves.
    let other = Exports::new(
        HandleKey([1; 32]),
        vec![ExportSpec::new(
            "t",
            b"/images/t",
            ExportSource::Directory(root_dir.clone()),
        )],
        ExportsConfig::default(),
    )
    .unwrap();
    other.rescan("t").unwrap();
    assert_eq!(other.getattr(&f), Err(NfsError::Stale));
    assert!(Exports::new(
        key(),
        vec![ExportSpec::new(
            "t",
            b"rel",
            ExportSource::Directory(root_dir.clone())
        )],
        ExportsConfig::default()
    )
    .is_err());
    assert!(Exports::new(
        key(),
        vec![
            ExportSpec::new("t", b"/a", ExportSource::Directory(root_dir.clone())),
            ExportSpec::new("t", b"/b", ExportSource::Directory(root_dir.clone()))
        ],
        ExportsConfig::default()
    )
    .is_err());
}

fn publish(images: &Path, from: &str, vid: &str, edit: impl FnOnce(&Path)) {
    let versions = images.join("versions");
    cp_a(&versions.join(from), &versions.join(vid));
    edit(&versions.join(vid).join("root"));
    // Switch `current` atomically: new link beside it, rename over.
    let tmp = images.join("current.tmp");
    std::os::unix::fs::symlink(format!("versions/{vid}"), &tmp).unwrap();
    fs::rename(&tmp, images.join("current")).unwrap();
}

#[test]
fn version_switch_keeps_old_handles_until_retention_runs_out() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images/deb");
    let r1 = images.join("versions/v1/root");
    fs::create_dir_all(r1.join("sub")).unwrap();
    fs::write(r1.join("same"), b"unchanged").unwrap();
    fs::write(r1.join("changed"), b"old").unwrap();
    fs::write(r1.join("gone"), b"deleted in v2").unwrap();
    fs::write(r1.join("sub/keep"), b"keep").unwrap();
    std::os::unix::fs::symlink("versions/v1", images.join("current")).unwrap();
    let spec = ExportSpec::new(
        "deb",
        b"/images/deb",
        ExportSource::Current(images.join("current")),
    );
    let e = Exports::new(key(), vec![spec], ExportsConfig::default()).unwrap();
    assert_eq!(e.rescan("deb").unwrap(), RescanOutcome::Ready);
    assert!(
        images.join("versions/v1/nfs-index").exists(),
        "index cache written beside the tree"
    );
    assert!(!r1.join("nfs-index").exists());
    assert_eq!(e.stats("deb").unwrap().version, "v1");
    let root = e.mount(b"/images/deb").unwrap();
    let h = |name: &[u8]| e.lookup(&root, name).unwrap();
    let (h_same, a_same) = h(b"same");
    let (h_changed, a_changed) = h(b"changed");
    let (h_gone, _) = h(b"gone");
    let (h_sub, _) = h(b"sub");
    let root_mtime_v1 = e.getattr(&root).unwrap().mtime;
    assert_eq!(e.generation("deb"), Some(1));

    publish(&images, "v1", "v2", |r| {
        fs::write(r.join("changed"), b"new content!").unwrap();
        fs::remove_file(r.join("gone")).unwrap();
        fs::write(r.join("sub/newfile"), b"fresh").unwrap();
    });
    assert_eq!(e.rescan("deb").unwrap(), RescanOutcome::Switched);
    assert_eq!(e.generation("deb"), Some(2));
    let st = e.stats("deb").unwrap();
    assert_eq!((st.version.as_str(), st.retained), ("v2", 1));
    assert_eq!(
        st.hashed_files, 2,
        "only the changed and the new file are hashed: {st:?}"
    );

    assert_eq!(
        h(b"same"),
        (h_same, a_same),
        "unchanged file: same handle and attributes"
    );
    assert_eq!(
        e.lookup(&root, b"sub").unwrap().0,
        h_sub,
        "directories keep their handle"
    );
    let (h_changed2, a_changed2) = h(b"changed");
    assert_ne!(h_changed2, h_changed);
    assert_eq!(
        h_changed2.0[..28],
        h_changed.0[..28],
        "same path, new generation"
    );
    assert_ne!(a_changed2.fileid, a_changed.fileid);
    let mut buf = [0u8; 64];
    let (n, eof, attr) = e.read(&h_changed, 0, &mut buf).unwrap();
    assert_eq!(
        (&buf[..n], eof, attr),
        (&b"old"[..], true, a_changed),
        "old handle reads the retained version"
    );
    let (n, _, _) = e.read(&h_changed2, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"new content!");
    assert!(
        e.getattr(&h_gone).is_ok(),
        "deleted path still served by the retained version"
    );
    assert_eq!(e.lookup(&root, b"gone"), Err(NfsError::NoEnt));
    let (h_new, _) = e.lookup(&h_sub, b"newfile").unwrap();
    let (n, _, _) = e.read(&h_new, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"fresh");
    let names: Vec<Vec<u8>> = e
        .readdir(&h_sub, 0, 100)
        .unwrap()
        .0
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert!(names.contains(&b"newfile".to_vec()));
    assert!(e.getattr(&root).unwrap().mtime >= root_mtime_v1);

    // Republish the same content twice: the switches happen, content generation stays, and
    // v1 falls out of retention (keep_versions = 2).
    publish(&images, "v2", "v3", |_| {});
    assert_eq!(e.rescan("deb").unwrap(), RescanOutcome::Switched);
    assert_eq!(
        e.stats("deb").unwrap().hashed_files,
        0,
        "v3 reuses v2's index file (copied with the version)"
    );
    assert!(e.getattr(&h_gone).is_ok(), "v1 still retained");
    publish(&images, "v3", "v4", |_| {});
    assert_eq!(e.rescan("deb").unwrap(), RescanOutcome::Switched);
    assert_eq!(
        e.generation("deb"),
        Some(2),
        "same content, same generation"
    );
    assert_eq!(e.stats("deb").unwrap().retained, 2);
    assert_eq!(
        e.getattr(&h_gone),
        Err(NfsError::Stale),
        "deleted path STALE once retention ran out"
    );
    // The changed file's old handle falls back to the current node at that path.
    let a = e.getattr(&h_changed).unwrap();
    assert_eq!((a.size, a.fileid), (12, a_changed.fileid));
    let (n, _, _) = e.read(&h_changed, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"new content!");
    assert_eq!(h(b"same"), (h_same, a_same));
    assert_eq!(e.rescan("deb").unwrap(), RescanOutcome::Unchanged);
}

#[test]
fn in_place_edits_are_picked_up_by_rescans() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("host");
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::create_dir_all(dir.join("proc/self")).unwrap();
    fs::create_dir_all(dir.join("var/state")).unwrap();
    fs::write(dir.join("etc/conf"), b"aaaa").unwrap();
    fs::write(dir.join("etc/del"), b"bye").unwrap();
    fs::write(dir.join("var/state/x"), b"state").unwrap();
    let cache = tmp.path().join("host.nfs-index");
    let mut spec = ExportSpec::new("host", b"/host", ExportSource::Directory(dir.clone()));
    spec.exclude = vec![PathBuf::from("proc"), PathBuf::from("/var/state/")];
    spec.index_file = Some(cache.clone());
    let e = Arc::new(
        Exports::new(
            key(),
            vec![spec.clone()],
            ExportsConfig {
                rescan_interval: Duration::from_millis(50),
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let rescanner = e.start_rescanner().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !e.is_ready("host") {
        assert!(
            Instant::now() < deadline,
            "background rescanner never built the index"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let root = e.mount(b"/host").unwrap();
    assert_eq!(e.lookup(&root, b"proc"), Err(NfsError::NoEnt), "excluded");
    let (var, _) = e.lookup(&root, b"var").unwrap();
    assert_eq!(e.lookup(&var, b"state"), Err(NfsError::NoEnt), "excluded");
    let (etc, _) = e.lookup(&root, b"etc").unwrap();
    let (conf, conf_attr) = e.lookup(&etc, b"conf").unwrap();
    let (del, _) = e.lookup(&etc, b"del").unwrap();
    let g0 = e.generation("host").unwrap();

    // Same size, mtime put back afterwards: only the ctime/inode identity shows the change.
    let old_mtime = fs::metadata(dir.join("etc/conf"))
        .unwrap()
        .modified()
        .unwrap();
    fs::write(dir.join("etc/conf"), b"bbbb").unwrap();
    fs::File::options()
        .write(true)
        .open(dir.join("etc/conf"))
        .unwrap()
        .set_modified(old_mtime)
        .unwrap();
    fs::remove_file(dir.join("etc/del")).unwrap();
    fs::write(dir.join("etc/new"), b"new file").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while e.lookup(&etc, b"new").is_err() {
        assert!(Instant::now() < deadline, "new file never became visible");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(rescanner);
    assert!(e.generation("host").unwrap() > g0);
    let (conf2, conf2_attr) = e.lookup(&etc, b"conf").unwrap();
    assert_ne!(conf2, conf, "content changed: new generation");
    assert_eq!(conf2_attr.mtime, conf_attr.mtime);
    let mut buf = [0u8; 16];
    let (n, _, attr) = e.read(&conf, 0, &mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"bbbb",
        "an old handle of an edited-in-place file reads the current content"
    );
    assert_eq!(
        attr.fileid, conf_attr.fileid,
        "fileid follows the handle presented"
    );
    assert_eq!(e.getattr(&del), Err(NfsError::Stale));
    assert_eq!(e.lookup(&etc, b"del"), Err(NfsError::NoEnt));

    // Files changed less than 2 s before a walk are hashed again by the next rescan (their
    // timestamps are too coarse to trust); after that, rescans take the fast path.
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(e.rescan("host").unwrap(), RescanOutcome::Unchanged);
    assert!(!e.stats("host").unwrap().last_rescan_fast);
    assert_eq!(e.rescan("host").unwrap(), RescanOutcome::Unchanged);
    assert!(e.stats("host").unwrap().last_rescan_fast);

    // The index cache: a new server reuses every hash; a corrupt one hashes everything.
    assert!(cache.exists());
    let e2 = Exports::new(key(), vec![spec.clone()], ExportsConfig::default()).unwrap();
    e2.rescan("host").unwrap();
    assert_eq!(e2.stats("host").unwrap().hashed_files, 0);
    assert_eq!(e2.getattr(&conf2).unwrap(), e.getattr(&conf2).unwrap());
    let mut bytes = fs::read(&cache).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(&cache, &bytes).unwrap();
    let e3 = Exports::new(key(), vec![spec], ExportsConfig::default()).unwrap();
    e3.rescan("host").unwrap();
    assert_eq!(e3.stats("host").unwrap().hashed_files, 2);
    assert_eq!(e3.getattr(&conf2).unwrap(), e.getattr(&conf2).unwrap());
    assert_eq!(
        fs::read_dir(tmp.path()).unwrap().count(),
        2,
        "no temp files left beside the cache"
    );
}

#[test]
fn reads_never_leave_the_root() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(dir.join("d")).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(dir.join("d/secret"), b"inside!").unwrap();
    fs::write(outside.join("secret"), b"OUTSIDE").unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("out")).unwrap();
    // The configured path may itself be a symlink (followed once, at the top).
    let via_link = tmp.path().join("t-link");
    std::os::unix::fs::symlink(&dir, &via_link).unwrap();
    let e = dir_exports("t", &via_link);
    e.rescan("t").unwrap();
    let root = e.mount(b"/images/t").unwrap();
    let (out, attr) = e.lookup(&root, b"out").unwrap();
    assert_eq!(attr.ftype, FileType::Symlink);
    assert_eq!(
        e.lookup(&out, b"secret"),
        Err(NfsError::NotDir),
        "no lookup through a symlink"
    );
    let (d, _) = e.lookup(&root, b"d").unwrap();
    let (secret, _) = e.lookup(&d, b"secret").unwrap();
    // Swap the indexed directory for a symlink pointing outside, behind the index's back.
    fs::rename(dir.join("d"), dir.join("d.old")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("d")).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        e.read(&secret, 0, &mut buf),
        Err(NfsError::Io),
        "the symlink is not followed"
    );
}

#[test]
fn rescan_of_unchanged_tree_and_hash_throughput() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("t");
    for d in 0..150 {
        let sub = dir.join(format!("d{d:03}"));
        fs::create_dir_all(&sub).unwrap();
        for f in 0..100 {
            fs::write(sub.join(format!("file-{f:03}")), format!("{d}/{f}")).unwrap();
        }
    }
    let mut big = fs::File::create(dir.join("big")).unwrap();
    let chunk: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    for _ in 0..256 {
        big.write_all(&chunk).unwrap();
    }
    drop(big);
    let e = dir_exports("t", &dir);
    e.rescan("t").unwrap();
    let st = e.stats("t").unwrap();
    println!(
        "first index: {} entries, {} files / {} MiB hashed in {:?} ({:.0} MiB/s overall), index memory {} B ({:.0} B/entry)",
        st.entries,
        st.hashed_files,
        st.hashed_bytes >> 20,
        st.index_build,
        st.hashed_bytes as f64 / (1 << 20) as f64 / st.index_build.as_secs_f64(),
        st.index_memory,
        st.index_memory as f64 / st.entries as f64
    );
    assert_eq!(st.entries, 15_152);
    // Let the just-written files leave the "racily clean" window, settle once.
    std::thread::sleep(Duration::from_millis(2100));
    e.rescan("t").unwrap();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(e.rescan("t").unwrap(), RescanOutcome::Unchanged);
        times.push(t.elapsed());
        assert!(e.stats("t").unwrap().last_rescan_fast);
    }
    times.sort();
    println!(
        "rescan of an unchanged {}-entry tree: median {:?} (min {:?}, max {:?})",
        st.entries, times[2], times[0], times[4]
    );
    // Start-up with the index cache file present (design §2.6 budget: < 0.3 s for ~15k).
    let mut spec = ExportSpec::new("t", b"/t", ExportSource::Directory(dir.clone()));
    spec.index_file = Some(tmp.path().join("t.nfs-index"));
    let first = Exports::new(key(), vec![spec.clone()], ExportsConfig::default()).unwrap();
    first.rescan("t").unwrap();
    let warm = Exports::new(key(), vec![spec], ExportsConfig::default()).unwrap();
    let t = Instant::now();
    warm.rescan("t").unwrap();
    let ws = warm.stats("t").unwrap();
    println!(
        "start-up with the index cache file: {} entries in {:?}, {} files hashed",
        ws.entries,
        t.elapsed(),
        ws.hashed_files
    );
    assert_eq!(ws.hashed_files, 0);
    assert_eq!(
        warm.getattr(&warm.root_handle("t").unwrap()),
        e.getattr(&e.root_handle("t").unwrap())
    );

    let t = Instant::now();
    let dir_fd = nfs::io::open_dir(&dir).unwrap();
    let (h, n) = nfs::index::hash_file(dir_fd.as_fd(), b"big").unwrap();
    let el = t.elapsed();
    println!(
        "BLAKE3 of a 256 MiB file (warm cache, one thread): {:?} = {:.0} MiB/s",
        el,
        n as f64 / (1 << 20) as f64 / el.as_secs_f64()
    );
    assert_eq!(h, blake3::hash(&fs::read(dir.join("big")).unwrap()));
}

#[test]
fn reads_continue_across_version_switches() {
    let tmp = tempfile::tempdir().unwrap();
    let images = tmp.path().join("images/x");
    let r1 = images.join("versions/v1/root");
    fs::create_dir_all(&r1).unwrap();
    fs::write(r1.join("bin"), vec![1u8; 300_000]).unwrap();
    fs::write(r1.join("conf"), b"v1").unwrap();
    std::os::unix::fs::symlink("versions/v1", images.join("current")).unwrap();
    let spec = ExportSpec::new("x", b"/x", ExportSource::Current(images.join("current")));
    let e = Arc::new(Exports::new(key(), vec![spec], ExportsConfig::default()).unwrap());
    e.rescan("x").unwrap();
    let root = e.mount(b"/x").unwrap();
    let (bin, _) = e.lookup(&root, b"bin").unwrap();
    let (conf_v1, _) = e.lookup(&root, b"conf").unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (e, stop) = (e.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65536];
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // A running program's binary and an old config handle: never an error.
                    let (n, _, _) = e.read(&bin, 65536, &mut buf).unwrap();
                    assert!(n == 65536 && buf.iter().all(|&b| b == 1));
                    let (n, _, _) = e.read(&conf_v1, 0, &mut buf).unwrap();
                    assert!(n > 0);
                    let names = e.readdir(&root, 0, 100).unwrap().0;
                    assert!(names.len() >= 4);
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for v in 2..=6 {
        publish(&images, &format!("v{}", v - 1), &format!("v{v}"), |r| {
            fs::write(r.join("conf"), format!("v{v}")).unwrap();
        });
        assert_eq!(e.rescan("x").unwrap(), RescanOutcome::Switched);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total: u64 = readers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(total > 0);
    assert_eq!(e.generation("x"), Some(6));
    let (conf, _) = e.lookup(&root, b"conf").unwrap();
    let mut buf = [0u8; 8];
    let (n, _, _) = e.read(&conf, 0, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"v6");
}
