//! Arbitrary names and paths (bytes) through the pure file-side cores of the NFS server: handle
//! decoding, ids and cookies, building an index from arbitrary relpaths, LOOKUP and READDIR
//! paging on it, cookie collision resolution, and the index cache decoder. Nothing may panic, and
//! every name in an index must be found again by LOOKUP and READDIR.
//!
//! Input layout: `\n`-separated segments. The first byte of each tree segment picks the entry's
//! type; segments after an empty one are used as LOOKUP names and readdir cookies. The whole
//! input is also offered to the handle and cache decoders.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nfs::fs::{FileHandle, FileType, HANDLE_LEN};
use nfs::handle::{self, HandleKey};
use nfs::index::{self, History, Index, Meta, RawTree, ROOT};

fn meta(ftype: FileType, ino: u64) -> Meta {
    Meta {
        ftype,
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: ino,
        rdev: 0,
        mtime_ns: 1,
        dev: 1,
        ino,
        nlink: if ino % 5 == 0 { 2 } else { 1 },
        ctime_ns: 0,
    }
}

fn check_index(key: &HandleKey, ix: &Index, probes: &[&[u8]]) {
    for n in 0..ix.len() as u32 {
        if ix.ftype(n) != FileType::Directory {
            continue;
        }
        let kids = ix.children(n);
        let mut prev = 2;
        for &c in kids {
            assert!(
                ix.cookie(c) > prev,
                "cookies strictly increase and stay above 2"
            );
            prev = ix.cookie(c);
            assert_eq!(
                ix.lookup_child(key, n, ix.name(c)),
                Some(c),
                "every name found by LOOKUP"
            );
            assert_eq!(
                ix.find(&handle::object_id(key, ix.export(), &ix.relpath(c))),
                Some(c)
            );
            let fh = ix.handle(c);
            assert!(handle::decode(&fh).is_ok());
            let _ = ix.attributes(key, c, &fh);
        }
        for p in probes {
            if index::check_name(p).is_ok() {
                if let Some(c) = ix.lookup_child(key, n, p) {
                    assert_eq!(ix.name(c), *p);
                }
            }
            let after = p.iter().fold(0u64, |a, &b| a.rotate_left(8) ^ u64::from(b));
            for &c in ix.children_after(n, after) {
                assert!(ix.cookie(c) > after);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let key = HandleKey([0x42; 32]);
    let export = handle::export_id(&key, "fuzz");

    // Decoders must refuse or accept, never panic.
    for w in data.windows(HANDLE_LEN).take(64) {
        if let Some(fh) = FileHandle::from_slice(w) {
            if let Ok(d) = handle::decode(&fh) {
                let re = handle::encode(d.kind, d.export, d.object, d.generation);
                assert_eq!(re, fh, "decode/encode round trip");
                let _ = handle::fileid(&key, &fh);
            }
        }
    }
    let _ = index::decode_cache(data);

    let mut segs = data.split(|&b| b == b'\n');
    let mut tree = RawTree::default();
    tree.push(b"", b"", meta(FileType::Directory, 1), 0);
    let mut valid = RawTree::default();
    valid.push(b"", b"", meta(FileType::Directory, 1), 0);
    valid.push(b"d", b"", meta(FileType::Directory, 2), 0);
    let mut seen = std::collections::HashSet::new();
    let mut natural: Vec<(u64, Vec<u8>)> = Vec::new();
    for (i, seg) in segs.by_ref().enumerate().take(64) {
        if seg.is_empty() {
            break;
        }
        let (t, path) = (seg[0], &seg[1..]);
        let ino = 10 + i as u64;
        let ftype = if t & 1 == 1 {
            FileType::Directory
        } else {
            FileType::Regular
        };
        tree.push(
            path,
            b"",
            meta(ftype, ino),
            if ftype == FileType::Directory { 0 } else { ino },
        );
        let _ = handle::cookie(&key, path);
        let _ = handle::object_id(&key, export, path);
        // A tree that is valid by construction: the name under `d/` or the root.
        if index::check_name(path).is_ok() && path != b"." && path != b".." {
            let under = if t & 2 == 2 {
                [&b"d/"[..], path].concat()
            } else {
                path.to_vec()
            };
            if under != b"d" && seen.insert(under.clone()) {
                valid.push(&under, b"", meta(FileType::Regular, ino), ino);
            }
        }
        natural.push((u64::from(t % 4), path.to_vec()));
    }
    let probes: Vec<&[u8]> = segs.take(32).collect();

    // Arbitrary relpaths: built or refused, never a panic.
    if let Ok(ix) = Index::build(&key, export, &tree, &History::default()) {
        check_index(&key, &ix, &probes);
    }
    let ix = Index::build(&key, export, &valid, &History::default()).expect("valid tree");
    assert_eq!(ix.len(), valid.entries.len());
    check_index(&key, &ix, &probes);
    assert_eq!(ix.lookup_child(&key, ROOT, b".."), None);
    let cache = index::encode_cache(&valid, &ix);
    let map = index::decode_cache(&cache).expect("own cache decodes");
    assert_eq!(map.len(), valid.entries.len());

    // Forced cookie collisions (natural values 0..3): resolution keeps every name findable.
    natural.sort();
    natural.dedup_by(|a, b| a.1 == b.1);
    let mut by_name: Vec<(u64, Vec<u8>)> =
        natural.iter().map(|(c, n)| (c + 3, n.clone())).collect();
    let originals = by_name.clone();
    index::assign_cookies(&mut by_name, |a, b| a.cmp(b));
    for w in by_name.windows(2) {
        assert!(w[0].0 < w[1].0);
    }
    for (nat, name) in &originals {
        let i = index::find_by_cookie(
            |i| by_name[i].0,
            by_name.len(),
            *nat,
            |i| by_name[i].1 == *name,
        );
        assert_eq!(i.map(|i| &by_name[i].1), Some(name));
    }
});
