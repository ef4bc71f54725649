//! The in-memory index of ONE tree version (design §2.3, §2.6, §3.2, §3.3, §1.4).
//!
//! Split in two: [`Index::build`] is pure (a [`RawTree`] of walked entries with their
//! generations in, the index out: hard-link groups, cookies, attributes, listing digests), and
//! [`build_from_disk`] is the edge (walk with lstat, content hashing, reuse of hashes from the
//! previous version or from the index cache file). Nothing stored here that a client can see
//! depends on inode numbers or on the order a copy was written in.
//!
//! Memory: one [`Node`] per name (88 bytes), names and symlink targets in one arena, children
//! as `u32` slices in one array, the object-id lookup as one sorted `u32` array (binary search,
//! no hash map overhead). `index_memory_per_entry` in the tests prints the measured figure.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::fs::{Attributes, FileHandle, FileType, NfsError, NfsTime};
use crate::handle::{self, ExportId, HandleKey, Kind, ObjectId};

/// Index into [`Index`] nodes. Node 0 is the root.
pub type NodeId = u32;

pub const ROOT: NodeId = 0;

/// NFSv3 `name_max` we advertise and enforce on LOOKUP.
pub const NAME_MAX: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("object id collision between {a:?} and {b:?}: refusing this version")]
    Collision { a: String, b: String },
    #[error("malformed tree entry {path:?}: {why}")]
    Malformed { path: String, why: &'static str },
    #[error("walking {path}: {source}")]
    Walk { path: String, source: io::Error },
    #[error("tree has more entries than an index can hold")]
    TooLarge,
}

/// lstat facts of one entry, as taken from the walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub ftype: FileType,
    /// Full `st_mode & 0o7777`.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub rdev: u64,
    pub mtime_ns: i64,
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub ctime_ns: i64,
}

impl Meta {
    pub fn from_std(md: &fs::Metadata) -> Option<Meta> {
        let ft = md.file_type();
        use std::os::unix::fs::FileTypeExt;
        let ftype = if ft.is_file() {
            FileType::Regular
        } else if ft.is_dir() {
            FileType::Directory
        } else if ft.is_symlink() {
            FileType::Symlink
        } else if ft.is_char_device() {
            FileType::CharDevice
        } else if ft.is_block_device() {
            FileType::BlockDevice
        } else if ft.is_fifo() {
            FileType::Fifo
        } else if ft.is_socket() {
            FileType::Socket
        } else {
            return None;
        };
        Some(Meta {
            ftype,
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
            size: md.size(),
            rdev: md.rdev(),
            mtime_ns: md
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(md.mtime_nsec()),
            dev: md.dev(),
            ino: md.ino(),
            nlink: md.nlink(),
            ctime_ns: md
                .ctime()
                .saturating_mul(1_000_000_000)
                .saturating_add(md.ctime_nsec()),
        })
    }

    /// The served facts are equal (design §2.6 comparison: kind, size, mtime, mode, owner,
    /// rdev). Used to trust a content hash from another copy's index file.
    pub fn same_served(&self, o: &Meta) -> bool {
        self.ftype == o.ftype
            && self.size == o.size
            && self.mtime_ns == o.mtime_ns
            && self.mode == o.mode
            && self.uid == o.uid
            && self.gid == o.gid
            && self.rdev == o.rdev
    }

    /// Local identity: changes whenever the inode is replaced or its content/metadata touched
    /// (ctime cannot be set by tools, mtime can). Only compared on the same host, never served.
    /// 0 = "racily clean" (see [`walk`]): matches nothing, so the content is hashed again.
    pub fn local_tag(&self) -> u64 {
        if self.ctime_ns == RACY {
            return 0;
        }
        let t =
            self.ino.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (self.ctime_ns as u64).rotate_left(29);
        t.max(1)
    }
}

/// One walked entry; paths and targets live in the tree's arena.
#[derive(Clone, Debug)]
pub struct RawEntry {
    path: (u32, u32),
    target: (u32, u32),
    pub meta: Meta,
    /// Content generation (0 for directories; filled by the hasher for regular files).
    pub generation: u64,
}

/// The walk's output, in pre-order (every directory before its contents).
#[derive(Default, Debug)]
pub struct RawTree {
    arena: Vec<u8>,
    pub entries: Vec<RawEntry>,
}

impl RawTree {
    pub fn push(&mut self, relpath: &[u8], target: &[u8], meta: Meta, generation: u64) {
        let p = self.store(relpath);
        let t = self.store(target);
        self.entries.push(RawEntry {
            path: p,
            target: t,
            meta,
            generation,
        });
    }

    fn store(&mut self, b: &[u8]) -> (u32, u32) {
        let off = self.arena.len() as u32;
        self.arena.extend_from_slice(b);
        (off, b.len() as u32)
    }

    pub fn path(&self, e: &RawEntry) -> &[u8] {
        &self.arena[e.path.0 as usize..(e.path.0 + e.path.1) as usize]
    }

    pub fn target(&self, e: &RawEntry) -> &[u8] {
        &self.arena[e.target.0 as usize..(e.target.0 + e.target.1) as usize]
    }
}

/// One name in the tree. Attributes of a hard-link group are read from its canonical node.
#[derive(Clone, Debug)]
struct Node {
    /// This name's own path hash (a handle computed from any name resolves).
    object: ObjectId,
    generation: u64,
    /// Regular: size. Char/Block: raw `st_rdev`. Directory: index into `dirs`. Else 0.
    data: u64,
    mtime_ns: i64,
    /// Cookie of this name in its parent (resolved for collisions).
    cookie: u64,
    local: u64,
    parent: NodeId,
    /// Canonical name of the inode (smallest relpath of the hard-link group); itself if alone.
    canon: NodeId,
    name_off: u32,
    /// Directory: slice of `children`. Symlink: target in the arena.
    span_off: u32,
    span_len: u32,
    uid: u32,
    gid: u32,
    nlink: u32,
    name_len: u16,
    mode: u16,
    ftype: u8,
}

#[derive(Clone, Debug)]
struct DirInfo {
    size: u64,
    digest: [u8; 16],
    listing_since_ns: i64,
}

/// Where a directory's `listing_since` comes from (design §3.3): a cache/index file entry with
/// the same listing digest, else the previous version with the same digest, else — if there is
/// a previous version, the listing changed now — `now_ns`, else (no history) `st_mtime`.
#[derive(Default)]
pub struct History<'a> {
    pub cache: Option<&'a CacheMap>,
    pub previous: Option<&'a Index>,
    pub now_ns: i64,
}

pub struct Index {
    export: ExportId,
    nodes: Vec<Node>,
    arena: Vec<u8>,
    children: Vec<NodeId>,
    by_object: Vec<NodeId>,
    dirs: Vec<DirInfo>,
    total_used: u64,
    digest: [u8; 32],
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("entries", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

fn ftype_from_u8(v: u8) -> FileType {
    match v {
        1 => FileType::Regular,
        2 => FileType::Directory,
        3 => FileType::BlockDevice,
        4 => FileType::CharDevice,
        5 => FileType::Symlink,
        6 => FileType::Socket,
        _ => FileType::Fifo,
    }
}

/// NoEnt for names that can never be in a directory (empty, `/`, NUL), NameTooLong over 255.
pub fn check_name(name: &[u8]) -> Result<(), NfsError> {
    if name.is_empty() || name.contains(&b'/') || name.contains(&0) {
        return Err(NfsError::NoEnt);
    }
    if name.len() > NAME_MAX {
        return Err(NfsError::NameTooLong);
    }
    Ok(())
}

fn nfs_time(ns: i64) -> NfsTime {
    if ns <= 0 {
        return NfsTime::default();
    }
    let secs = ns / 1_000_000_000;
    if secs > u32::MAX as i64 {
        return NfsTime {
            seconds: u32::MAX,
            nseconds: 999_999_999,
        };
    }
    NfsTime {
        seconds: secs as u32,
        nseconds: (ns % 1_000_000_000) as u32,
    }
}

/// Canonical directory size (design §3.2): 4096 × ceil(Σ(24 + name_len) / 4096), at least one
/// block (an empty directory of 0 bytes surprises tools; real file systems report a block).
pub fn dir_size(name_lens: impl Iterator<Item = usize>) -> u64 {
    let sum: u64 = name_lens.map(|l| 24 + l as u64).sum();
    sum.div_ceil(4096).max(1) * 4096
}

/// Sort `entries` (natural cookie, name) and make cookies strictly increasing: on equal
/// hashes the later name in byte order takes the next free value (design §1.4). Deterministic
/// on every copy because it only depends on the names.
/// `cmp_names` orders two entries by their name bytes.
pub fn assign_cookies<T>(
    entries: &mut [(u64, T)],
    cmp_names: impl Fn(&T, &T) -> std::cmp::Ordering,
) {
    entries.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| cmp_names(&a.1, &b.1)));
    for i in 1..entries.len() {
        if entries[i].0 <= entries[i - 1].0 {
            entries[i].0 = entries[i - 1].0 + 1;
        }
    }
}

/// Position of `name` among `cookies` (strictly increasing): its natural cookie `h`, or a
/// successor inside the run of consecutive values starting at `h` (where collisions put it).
pub fn find_by_cookie(
    cookies: impl Fn(usize) -> u64,
    len: usize,
    natural: u64,
    is_name: impl Fn(usize) -> bool,
) -> Option<usize> {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if cookies(mid) < natural {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    let mut i = lo;
    if i >= len || cookies(i) != natural {
        return None;
    }
    loop {
        if is_name(i) {
            return Some(i);
        }
        if i + 1 >= len || cookies(i + 1) != cookies(i) + 1 {
            return None;
        }
        i += 1;
    }
}

impl Index {
    /// Build the index of one version from walked entries (pure).
    pub fn build(
        key: &HandleKey,
        export: ExportId,
        tree: &RawTree,
        history: &History<'_>,
    ) -> Result<Index, IndexError> {
        let n = tree.entries.len();
        if n >= u32::MAX as usize / 2 || tree.arena.len() >= u32::MAX as usize {
            return Err(IndexError::TooLarge);
        }
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let malformed = |p: &[u8], why| IndexError::Malformed {
            path: lossy(p),
            why,
        };
        let root = tree.entries.first().ok_or(IndexError::Malformed {
            path: String::new(),
            why: "empty tree",
        })?;
        if !tree.path(root).is_empty() || root.meta.ftype != FileType::Directory {
            return Err(malformed(
                tree.path(root),
                "first entry must be the root directory",
            ));
        }

        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        let mut arena: Vec<u8> = Vec::new();
        let mut dir_of_path: HashMap<&[u8], NodeId> = HashMap::new();
        let mut links: HashMap<(u64, u64), Vec<NodeId>> = HashMap::new();
        for (i, e) in tree.entries.iter().enumerate() {
            let path = tree.path(e);
            let (parent, name) = if i == 0 {
                (ROOT, &b""[..])
            } else {
                let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
                    // "/y" would be a child of the root whose object id is not that of "y".
                    Some(0) => return Err(malformed(path, "leading slash")),
                    Some(p) => (&path[..p], &path[p + 1..]),
                    None => (&b""[..], path),
                };
                if check_name(name).is_err() || name == b"." || name == b".." {
                    return Err(malformed(path, "invalid name"));
                }
                let parent = *dir_of_path
                    .get(dir)
                    .ok_or_else(|| malformed(path, "parent not a directory before it"))?;
                (parent, name)
            };
            let id = i as NodeId;
            if e.meta.ftype == FileType::Directory {
                if dir_of_path.insert(path, id).is_some() {
                    return Err(malformed(path, "duplicate path"));
                }
            } else if e.meta.nlink > 1 {
                links.entry((e.meta.dev, e.meta.ino)).or_default().push(id);
            }
            let name_off = arena.len() as u32;
            arena.extend_from_slice(name);
            let (span_off, span_len) = if e.meta.ftype == FileType::Symlink {
                let t = tree.target(e);
                let off = arena.len() as u32;
                arena.extend_from_slice(t);
                (off, t.len() as u32)
            } else {
                (0, 0)
            };
            let data = match e.meta.ftype {
                FileType::Regular => e.meta.size,
                FileType::CharDevice | FileType::BlockDevice => e.meta.rdev,
                _ => 0,
            };
            nodes.push(Node {
                object: handle::object_id(key, export, path),
                generation: if e.meta.ftype == FileType::Directory {
                    0
                } else {
                    e.generation
                },
                data,
                mtime_ns: e.meta.mtime_ns,
                cookie: if i == 0 { 0 } else { handle::cookie(key, name) },
                local: e.meta.local_tag(),
                parent,
                canon: id,
                name_off,
                span_off,
                span_len,
                uid: e.meta.uid,
                gid: e.meta.gid,
                nlink: 1,
                name_len: name.len() as u16,
                mode: e.meta.mode as u16,
                ftype: e.meta.ftype as u8,
            });
        }

        // Hard links: one object per (dev, ino) of this walk; canonical = smallest relpath.
        for group in links.values() {
            let canon = *group
                .iter()
                .min_by(|&&a, &&b| {
                    tree.path(&tree.entries[a as usize])
                        .cmp(tree.path(&tree.entries[b as usize]))
                })
                .unwrap_or(&group[0]);
            let gen = nodes[canon as usize].generation;
            for &m in group {
                let node = &mut nodes[m as usize];
                node.canon = canon;
                node.nlink = group.len().min(u32::MAX as usize) as u32;
                node.generation = gen;
            }
        }

        // Children: counting sort by parent, then each directory's slice by cookie.
        let mut count = vec![0u32; n];
        for node in nodes.iter().skip(1) {
            count[node.parent as usize] += 1;
        }
        let mut start = vec![0u32; n];
        let mut acc = 0u32;
        for i in 0..n {
            start[i] = acc;
            acc += count[i];
        }
        let mut children = vec![0 as NodeId; n.saturating_sub(1)];
        let mut fill = start.clone();
        for (i, node) in nodes.iter().enumerate().skip(1) {
            let p = node.parent as usize;
            children[fill[p] as usize] = i as NodeId;
            fill[p] += 1;
        }
        let mut dirs = Vec::new();
        let mut scratch: Vec<(u64, NodeId)> = Vec::new();
        for d in 0..n {
            if nodes[d].ftype != FileType::Directory as u8 {
                continue;
            }
            let (s, c) = (start[d] as usize, count[d] as usize);
            scratch.clear();
            scratch.extend(
                children[s..s + c]
                    .iter()
                    .map(|&k| (nodes[k as usize].cookie, k)),
            );
            let name_of = |k: &NodeId| {
                let nd = &nodes[*k as usize];
                &arena[nd.name_off as usize..nd.name_off as usize + nd.name_len as usize]
            };
            assign_cookies(&mut scratch, |a, b| name_of(a).cmp(name_of(b)));
            let mut subdirs = 0u32;
            let mut listing = blake3::Hasher::new();
            for (j, &(cookie, k)) in scratch.iter().enumerate() {
                children[s + j] = k;
                let kn = &nodes[k as usize];
                if kn.ftype == FileType::Directory as u8 {
                    subdirs += 1;
                }
                let cn = &nodes[kn.canon as usize];
                let fh = handle::encode(kind_of(cn.ftype), export, cn.object, cn.generation);
                let name =
                    &arena[kn.name_off as usize..kn.name_off as usize + kn.name_len as usize];
                listing.update(&(name.len() as u32).to_le_bytes());
                listing.update(name);
                listing.update(&fh.0);
                nodes[k as usize].cookie = cookie;
            }
            let size = dir_size(
                scratch
                    .iter()
                    .map(|&(_, k)| nodes[k as usize].name_len as usize),
            );
            let mut digest = [0u8; 16];
            digest.copy_from_slice(&listing.finalize().as_bytes()[..16]);
            let node = &mut nodes[d];
            node.span_off = s as u32;
            node.span_len = c as u32;
            node.nlink = 2 + subdirs;
            node.data = dirs.len() as u64;
            dirs.push(DirInfo {
                size,
                digest,
                listing_since_ns: 0,
            });
        }

        // Lookup by object id: a sorted array; adjacent equal ids are a collision.
        let mut by_object: Vec<NodeId> = (0..n as NodeId).collect();
        by_object
            .sort_unstable_by(|&a, &b| nodes[a as usize].object.cmp(&nodes[b as usize].object));
        for w in by_object.windows(2) {
            if nodes[w[0] as usize].object == nodes[w[1] as usize].object {
                let a = lossy(tree.path(&tree.entries[w[0] as usize]));
                let b = lossy(tree.path(&tree.entries[w[1] as usize]));
                return Err(IndexError::Collision { a, b });
            }
        }

        let mut index = Index {
            export,
            nodes,
            arena,
            children,
            by_object,
            dirs,
            total_used: 0,
            digest: [0; 32],
        };

        // listing_since from history (needs the lookup array above for the previous version).
        for d in 0..n {
            if index.nodes[d].ftype != FileType::Directory as u8 {
                continue;
            }
            let di = index.nodes[d].data as usize;
            let digest = index.dirs[di].digest;
            let path = tree.path(&tree.entries[d]);
            let from_cache = history
                .cache
                .and_then(|c| c.get(path))
                .filter(|c| c.meta.ftype == FileType::Directory && c.listing_digest == digest)
                .map(|c| c.listing_since_ns);
            let since = from_cache.or_else(|| {
                let prev = history.previous?;
                match prev.find(&index.nodes[d].object) {
                    Some(p) if prev.ftype(p) == FileType::Directory => {
                        let pd = &prev.dirs[prev.nodes[p as usize].data as usize];
                        Some(if pd.digest == digest {
                            pd.listing_since_ns
                        } else {
                            history.now_ns
                        })
                    }
                    _ => Some(history.now_ns),
                }
            });
            index.dirs[di].listing_since_ns = since.unwrap_or(index.nodes[d].mtime_ns);
        }

        // Version digest over everything served; and totals.
        let mut h = blake3::Hasher::new();
        let mut used = 0u64;
        for (i, nd) in index.nodes.iter().enumerate() {
            let cn = &index.nodes[nd.canon as usize];
            h.update(&nd.object.0);
            h.update(&cn.object.0);
            h.update(&[nd.ftype]);
            h.update(&nd.mode.to_le_bytes());
            h.update(&nd.uid.to_le_bytes());
            h.update(&nd.gid.to_le_bytes());
            h.update(&nd.mtime_ns.to_le_bytes());
            h.update(&nd.generation.to_le_bytes());
            h.update(&nd.nlink.to_le_bytes());
            if nd.ftype == FileType::Directory as u8 {
                h.update(&index.dirs[nd.data as usize].listing_since_ns.to_le_bytes());
            } else {
                h.update(&nd.data.to_le_bytes());
            }
            if nd.canon as usize == i {
                used = used.saturating_add(index.used_of(i as NodeId));
            }
        }
        index.digest = *h.finalize().as_bytes();
        index.total_used = used;
        index.arena.shrink_to_fit();
        index.dirs.shrink_to_fit();
        Ok(index)
    }

    pub fn export(&self) -> ExportId {
        self.export
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Hash of everything a client can see; equal digests = nothing to switch.
    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }

    /// Sum of `used` over objects (FSSTAT tbytes).
    pub fn total_used(&self) -> u64 {
        self.total_used
    }

    /// Heap bytes held by this index.
    pub fn memory_bytes(&self) -> usize {
        self.nodes.capacity() * std::mem::size_of::<Node>()
            + self.arena.capacity()
            + (self.children.capacity() + self.by_object.capacity()) * 4
            + self.dirs.capacity() * std::mem::size_of::<DirInfo>()
    }

    /// The node whose own path hash is `object` (any name of a hard-link group).
    pub fn find(&self, object: &ObjectId) -> Option<NodeId> {
        self.by_object
            .binary_search_by(|&i| self.nodes[i as usize].object.cmp(object))
            .ok()
            .map(|p| self.by_object[p])
    }

    pub fn canonical(&self, n: NodeId) -> NodeId {
        self.nodes[n as usize].canon
    }

    pub fn ftype(&self, n: NodeId) -> FileType {
        ftype_from_u8(self.nodes[n as usize].ftype)
    }

    pub fn kind(&self, n: NodeId) -> Kind {
        kind_of(self.nodes[n as usize].ftype)
    }

    pub fn generation(&self, n: NodeId) -> u64 {
        self.nodes[self.canonical(n) as usize].generation
    }

    pub fn parent(&self, n: NodeId) -> NodeId {
        self.nodes[n as usize].parent
    }

    pub fn name(&self, n: NodeId) -> &[u8] {
        let nd = &self.nodes[n as usize];
        &self.arena[nd.name_off as usize..nd.name_off as usize + nd.name_len as usize]
    }

    pub fn cookie(&self, n: NodeId) -> u64 {
        self.nodes[n as usize].cookie
    }

    /// Served size (design §3.2).
    pub fn size(&self, n: NodeId) -> u64 {
        let nd = &self.nodes[self.canonical(n) as usize];
        match ftype_from_u8(nd.ftype) {
            FileType::Regular => nd.data,
            FileType::Directory => self.dirs[nd.data as usize].size,
            FileType::Symlink => nd.span_len as u64,
            _ => 0,
        }
    }

    fn used_of(&self, n: NodeId) -> u64 {
        let size = self.size(n);
        if self.ftype(n) == FileType::Regular {
            size.div_ceil(4096).saturating_mul(4096)
        } else {
            size
        }
    }

    /// Local identity tag captured at the walk (for rescans on this host only).
    pub fn local_tag(&self, n: NodeId) -> u64 {
        self.nodes[n as usize].local
    }

    /// Symlink target bytes as stored.
    pub fn target(&self, n: NodeId) -> Option<&[u8]> {
        let nd = &self.nodes[n as usize];
        (nd.ftype == FileType::Symlink as u8)
            .then(|| &self.arena[nd.span_off as usize..(nd.span_off + nd.span_len) as usize])
    }

    /// Children of a directory in cookie order (empty for non-directories).
    pub fn children(&self, dir: NodeId) -> &[NodeId] {
        let nd = &self.nodes[dir as usize];
        if nd.ftype != FileType::Directory as u8 {
            return &[];
        }
        &self.children[nd.span_off as usize..(nd.span_off + nd.span_len) as usize]
    }

    /// Children with cookie > `after`.
    pub fn children_after(&self, dir: NodeId, after: u64) -> &[NodeId] {
        let c = self.children(dir);
        let p = c.partition_point(|&k| self.nodes[k as usize].cookie <= after);
        &c[p..]
    }

    /// The child called `name` (validated by the caller) of `dir`.
    pub fn lookup_child(&self, key: &HandleKey, dir: NodeId, name: &[u8]) -> Option<NodeId> {
        let c = self.children(dir);
        let natural = handle::cookie(key, name);
        find_by_cookie(
            |i| self.nodes[c[i] as usize].cookie,
            c.len(),
            natural,
            |i| self.name(c[i]) == name,
        )
        .map(|i| c[i])
    }

    /// Path below the root, `/`-joined (root = empty).
    pub fn relpath(&self, n: NodeId) -> Vec<u8> {
        let mut parts = Vec::new();
        let mut cur = n;
        while cur != ROOT {
            parts.push(cur);
            cur = self.parent(cur);
        }
        let mut out = Vec::new();
        for (i, p) in parts.iter().rev().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend_from_slice(self.name(*p));
        }
        out
    }

    /// The handle LOOKUP/READDIRPLUS hand out for `n`: its canonical object.
    pub fn handle(&self, n: NodeId) -> FileHandle {
        let c = &self.nodes[self.canonical(n) as usize];
        handle::encode(kind_of(c.ftype), self.export, c.object, c.generation)
    }

    /// Attributes of `n` (design §3.2) with the fileid of the handle presented, `fh`.
    pub fn attributes(&self, key: &HandleKey, n: NodeId, fh: &FileHandle) -> Attributes {
        let c = self.canonical(n);
        let nd = &self.nodes[c as usize];
        let ftype = ftype_from_u8(nd.ftype);
        let size = self.size(c);
        let rdev = match ftype {
            FileType::CharDevice | FileType::BlockDevice => {
                let d = nd.data as libc::dev_t;
                (libc::major(d), libc::minor(d))
            }
            _ => (0, 0),
        };
        let mtime_ns = if ftype == FileType::Directory {
            nd.mtime_ns
                .max(self.dirs[nd.data as usize].listing_since_ns)
        } else {
            nd.mtime_ns
        };
        let t = nfs_time(mtime_ns);
        Attributes {
            ftype,
            mode: nd.mode as u32,
            nlink: nd.nlink,
            uid: nd.uid,
            gid: nd.gid,
            size,
            used: self.used_of(c),
            rdev,
            fsid: self.export.fsid(),
            fileid: handle::fileid(key, fh),
            atime: t,
            mtime: t,
            ctime: t,
        }
    }

    /// True when a fresh walk of the same root shows exactly the entries this index was built
    /// from, with the same lstat facts and local identities: nothing to hash, nothing to build.
    /// Relies on both being in walk order (sorted names, pre-order), which [`walk`] guarantees.
    pub fn matches_walk(&self, tree: &RawTree) -> bool {
        if tree.entries.len() != self.nodes.len() {
            return false;
        }
        tree.entries
            .iter()
            .zip(&self.nodes)
            .enumerate()
            .all(|(i, (e, nd))| {
                let m = &e.meta;
                let path = tree.path(e);
                let same_place = if i == 0 {
                    path.is_empty()
                } else {
                    let parent = tree.path(&tree.entries[nd.parent as usize]);
                    let name = &self.arena
                        [nd.name_off as usize..nd.name_off as usize + nd.name_len as usize];
                    let sep = usize::from(!parent.is_empty());
                    (nd.parent as usize) < i
                        && path.len() == parent.len() + sep + name.len()
                        && path.starts_with(parent)
                        && path.ends_with(name)
                        && (sep == 0 || path[parent.len()] == b'/')
                };
                let data = match m.ftype {
                    FileType::Regular => m.size,
                    FileType::CharDevice | FileType::BlockDevice => m.rdev,
                    _ => nd.data,
                };
                same_place
                    && nd.ftype == m.ftype as u8
                    && nd.mode as u32 == m.mode
                    && nd.uid == m.uid
                    && nd.gid == m.gid
                    && nd.data == data
                    && nd.mtime_ns == m.mtime_ns
                    && nd.local != 0
                    && nd.local == m.local_tag()
                    && (m.ftype != FileType::Symlink
                        || self.target(i as NodeId) == Some(tree.target(e)))
            })
    }

    pub fn listing_since_ns(&self, dir: NodeId) -> Option<i64> {
        let nd = &self.nodes[dir as usize];
        (nd.ftype == FileType::Directory as u8)
            .then(|| self.dirs[nd.data as usize].listing_since_ns)
    }

    fn listing_digest(&self, n: NodeId) -> [u8; 16] {
        let nd = &self.nodes[n as usize];
        if nd.ftype == FileType::Directory as u8 {
            self.dirs[nd.data as usize].digest
        } else {
            [0; 16]
        }
    }
}

fn kind_of(ftype: u8) -> Kind {
    if ftype == FileType::Directory as u8 {
        Kind::Directory
    } else {
        Kind::Other
    }
}

// ---------------------------------------------------------------------------------------------
// The edge: walking and hashing a tree on disk.

/// What a build did, for logs and stats.
#[derive(Clone, Debug, Default)]
pub struct BuildReport {
    pub entries: usize,
    pub hashed_files: u64,
    pub hashed_bytes: u64,
    pub reused_hashes: u64,
    pub walk: Duration,
    pub hash: Duration,
    pub total: Duration,
}

pub struct BuildOptions<'a> {
    /// Relative paths not to descend into nor list (e.g. `proc`, `sys`, a state dir).
    pub exclude: &'a [PathBuf],
    /// The version currently served: unchanged files (same lstat facts and local identity)
    /// keep their hash; dir listings keep their `listing_since`.
    pub previous: Option<&'a Index>,
    /// Entries of the index cache file.
    pub cache: Option<&'a CacheMap>,
    pub now_ns: i64,
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

/// `ctime_ns` of an entry changed too recently to trust its lstat facts later.
const RACY: i64 = i64::MIN;

/// Entries whose ctime is this close to the walk are re-hashed by the next rescan.
const RACY_WINDOW_NS: i64 = 2_000_000_000;

fn normalize(p: &Path) -> Vec<u8> {
    let b = p.as_os_str().as_bytes();
    let b = b.strip_prefix(b"/").unwrap_or(b);
    b.strip_suffix(b"/").unwrap_or(b).to_vec()
}

/// Walk `root` with lstat (no symlink followed, one file system, sorted names) into a
/// [`RawTree`] whose regular files still have generation 0.
pub fn walk(root: &Path, exclude: &[PathBuf]) -> Result<RawTree, IndexError> {
    let exclude: Vec<Vec<u8>> = exclude
        .iter()
        .map(|p| normalize(p))
        .filter(|p| !p.is_empty())
        .collect();
    let rel = |p: &Path| -> Vec<u8> {
        p.strip_prefix(root)
            .map(|r| r.as_os_str().as_bytes().to_vec())
            .unwrap_or_default()
    };
    let mut tree = RawTree::default();
    let started_ns = now_ns();
    let it = walkdir::WalkDir::new(root)
        .follow_links(false)
        .same_file_system(true)
        .sort_by(|a, b| a.file_name().cmp(b.file_name()))
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !exclude.iter().any(|x| rel(e.path()) == *x));
    let mut it = it;
    while let Some(item) = it.next() {
        let entry = match item {
            Ok(e) => e,
            Err(e) => {
                if e.depth() == 0 {
                    let source = e
                        .into_io_error()
                        .unwrap_or_else(|| io::Error::other("walk loop"));
                    return Err(IndexError::Walk {
                        path: root.display().to_string(),
                        source,
                    });
                }
                tracing::warn!(path = ?e.path(), error = %e, "nfs index: entry skipped");
                continue;
            }
        };
        let md = match entry.metadata() {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(path = ?entry.path(), error = %e, "nfs index: lstat failed, entry skipped");
                // A directory that vanished mid-walk: its children must go too, or they would
                // be orphans and fail the whole build.
                if entry.file_type().is_dir() {
                    it.skip_current_dir();
                }
                continue;
            }
        };
        let Some(mut meta) = Meta::from_std(&md) else {
            continue;
        };
        if meta.ctime_ns > started_ns.saturating_sub(RACY_WINDOW_NS) {
            // Changed just before or during this walk: timestamps are coarse (a jiffy), so a
            // second same-size write could leave every lstat fact as it is now. Record a local
            // identity that will not match, so the next rescan hashes it again (git's "racily
            // clean" entries). The ctime is never served.
            meta.ctime_ns = RACY;
        }
        let relpath = rel(entry.path());
        let (target, generation) = match meta.ftype {
            FileType::Symlink => match fs::read_link(entry.path()) {
                Ok(t) => {
                    let t = t.as_os_str().as_bytes().to_vec();
                    let g = handle::generation_of_symlink(&t);
                    (t, g)
                }
                Err(e) => {
                    tracing::warn!(path = ?entry.path(), error = %e, "nfs index: readlink failed, entry skipped");
                    continue;
                }
            },
            FileType::CharDevice | FileType::BlockDevice => {
                let d = meta.rdev as libc::dev_t;
                (
                    Vec::new(),
                    handle::generation_of_device(
                        meta.ftype == FileType::BlockDevice,
                        libc::major(d),
                        libc::minor(d),
                    ),
                )
            }
            FileType::Fifo => (Vec::new(), handle::generation_of_special(false)),
            FileType::Socket => (Vec::new(), handle::generation_of_special(true)),
            _ => (Vec::new(), 0),
        };
        tree.push(&relpath, &target, meta, generation);
    }
    Ok(tree)
}

/// BLAKE3 of a file's content, opened beneath `root` without following symlinks.
pub fn hash_file(root: BorrowedFd<'_>, relpath: &[u8]) -> io::Result<(blake3::Hash, u64)> {
    let fd = crate::io::open_beneath(root, relpath)?;
    let mut f = fs::File::from(fd);
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((h.finalize(), total))
}

/// Walk, fill in content generations (reusing what `opts` allows), build the index.
pub fn build_from_disk(
    key: &HandleKey,
    export: ExportId,
    root: &Path,
    root_fd: BorrowedFd<'_>,
    opts: &BuildOptions<'_>,
) -> Result<(Index, RawTree, BuildReport), IndexError> {
    let t0 = Instant::now();
    let tree = walk(root, opts.exclude)?;
    let walked = t0.elapsed();
    build_from_tree(key, export, tree, root_fd, opts, walked)
}

/// Second half of [`build_from_disk`] for a tree already walked (`walked` = time it took).
pub fn build_from_tree(
    key: &HandleKey,
    export: ExportId,
    mut tree: RawTree,
    root_fd: BorrowedFd<'_>,
    opts: &BuildOptions<'_>,
    walked: Duration,
) -> Result<(Index, RawTree, BuildReport), IndexError> {
    let t0 = Instant::now();
    let mut report = BuildReport {
        walk: walked,
        ..Default::default()
    };
    let t1 = Instant::now();
    let mut by_inode: HashMap<(u64, u64), u64> = HashMap::new();
    for i in 0..tree.entries.len() {
        let meta = tree.entries[i].meta;
        if meta.ftype != FileType::Regular {
            continue;
        }
        let path = tree.path(&tree.entries[i]).to_vec();
        if meta.nlink > 1 {
            if let Some(&g) = by_inode.get(&(meta.dev, meta.ino)) {
                tree.entries[i].generation = g;
                continue;
            }
        }
        let reuse_prev = opts.previous.and_then(|prev| {
            let n = prev.find(&handle::object_id(key, export, &path))?;
            let same = prev.ftype(n) == FileType::Regular
                && prev.local_tag(n) != 0
                && prev.local_tag(n) == meta.local_tag()
                && prev.size(n) == meta.size
                && prev.nodes[n as usize].mtime_ns == meta.mtime_ns
                && prev.nodes[n as usize].mode as u32 == meta.mode
                && prev.nodes[n as usize].uid == meta.uid
                && prev.nodes[n as usize].gid == meta.gid;
            same.then(|| prev.generation(n))
        });
        let reuse = reuse_prev.or_else(|| {
            let c = opts.cache?.get(&path[..])?;
            // Same served facts; and if it is the same inode, it must not have been touched
            // since (a content change with a clamped mtime still moves ctime).
            let trusted = c.meta.same_served(&meta)
                && (c.meta.ino != meta.ino
                    || (c.meta.ctime_ns == meta.ctime_ns && c.meta.ctime_ns != RACY));
            (trusted && c.generation != 0).then_some(c.generation)
        });
        let g = match reuse {
            Some(g) => {
                report.reused_hashes += 1;
                g
            }
            None => match hash_file(root_fd, &path) {
                Ok((h, bytes)) => {
                    report.hashed_files += 1;
                    report.hashed_bytes += bytes;
                    handle::generation_of_hash(&h)
                }
                Err(e) => {
                    // Still deterministic across copies with the same facts; READ will answer
                    // IO and log again.
                    tracing::warn!(path = %String::from_utf8_lossy(&path), error = %e, "nfs index: cannot hash file");
                    let mut h = blake3::Hasher::new();
                    h.update(b"unreadable\0");
                    h.update(&meta.size.to_le_bytes());
                    h.update(&meta.mtime_ns.to_le_bytes());
                    handle::generation_of_hash(&h.finalize())
                }
            },
        };
        if meta.nlink > 1 {
            by_inode.insert((meta.dev, meta.ino), g);
        }
        tree.entries[i].generation = g;
    }
    report.hash = t1.elapsed();
    let history = History {
        cache: opts.cache,
        previous: opts.previous,
        now_ns: opts.now_ns,
    };
    let index = Index::build(key, export, &tree, &history)?;
    report.entries = index.len();
    report.total = t0.elapsed() + walked;
    Ok((index, tree, report))
}

// ---------------------------------------------------------------------------------------------
// The index cache file (design §2.6): next to the tree, never inside it.

const CACHE_MAGIC: &[u8; 8] = b"CMNFSIX1";

/// One cached entry: lstat facts, the content generation (the first 8 bytes of the BLAKE3
/// content hash — all a handle uses of it), and for directories the listing digest and
/// `listing_since`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    pub meta: Meta,
    pub generation: u64,
    pub listing_digest: [u8; 16],
    pub listing_since_ns: i64,
}

pub type CacheMap = HashMap<Vec<u8>, CacheEntry>;

/// Serialise the cache of a built version, entries sorted by relpath (pure).
pub fn encode_cache(tree: &RawTree, index: &Index) -> Vec<u8> {
    let mut order: Vec<usize> = (0..tree.entries.len()).collect();
    order.sort_by(|&a, &b| tree.path(&tree.entries[a]).cmp(tree.path(&tree.entries[b])));
    let mut out = Vec::with_capacity(16 + tree.entries.len() * 96);
    out.extend_from_slice(CACHE_MAGIC);
    out.extend_from_slice(&(tree.entries.len() as u64).to_le_bytes());
    for i in order {
        let e = &tree.entries[i];
        let path = tree.path(e);
        let m = &e.meta;
        let n = i as NodeId;
        out.extend_from_slice(&(path.len() as u32).to_le_bytes());
        out.extend_from_slice(path);
        out.push(m.ftype as u8);
        for v in [m.mode, m.uid, m.gid] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [m.size, m.rdev, m.dev, m.ino, m.nlink, index.generation(n)] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in [
            m.mtime_ns,
            m.ctime_ns,
            index.listing_since_ns(n).unwrap_or(0),
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&index.listing_digest(n));
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
        self.u64().map(|v| v as i64)
    }
}

/// Parse a cache file (pure). `None` if it is corrupt in any way: then everything is hashed.
pub fn decode_cache(bytes: &[u8]) -> Option<CacheMap> {
    if bytes.len() < 8 + 8 + 32 {
        return None;
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    let mut c = Cursor(body);
    if c.take(8)? != CACHE_MAGIC {
        return None;
    }
    let count = c.u64()?;
    // Each entry is at least 89 bytes: bounds the allocation by the file size.
    if count > (body.len() / 89) as u64 {
        return None;
    }
    let mut map = CacheMap::with_capacity(count as usize);
    for _ in 0..count {
        let plen = c.u32()? as usize;
        let path = c.take(plen)?.to_vec();
        let ft = c.u8()?;
        if !(1..=7).contains(&ft) {
            return None;
        }
        let (mode, uid, gid) = (c.u32()?, c.u32()?, c.u32()?);
        let (size, rdev, dev, ino, nlink, generation) =
            (c.u64()?, c.u64()?, c.u64()?, c.u64()?, c.u64()?, c.u64()?);
        let (mtime_ns, ctime_ns, listing_since_ns) = (c.i64()?, c.i64()?, c.i64()?);
        let mut listing_digest = [0u8; 16];
        listing_digest.copy_from_slice(c.take(16)?);
        let meta = Meta {
            ftype: ftype_from_u8(ft),
            mode,
            uid,
            gid,
            size,
            rdev,
            mtime_ns,
            dev,
            ino,
            nlink,
            ctime_ns,
        };
        map.insert(
            path,
            CacheEntry {
                meta,
                generation,
                listing_digest,
                listing_since_ns,
            },
        );
    }
    if !c.0.is_empty() {
        return None;
    }
    Some(map)
}

/// Load the cache file; missing or corrupt = `None` (logged), never an error.
pub fn load_cache(path: &Path) -> Option<CacheMap> {
    match fs::read(path) {
        Ok(b) => {
            let m = decode_cache(&b);
            if m.is_none() {
                tracing::warn!(path = %path.display(), "nfs index cache corrupt; hashing everything");
            }
            m
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "nfs index cache unreadable; hashing everything");
            None
        }
    }
}

/// Write the cache atomically: temp file in the same directory, fsync, rename, fsync the
/// directory. A kill -9 at any point leaves either the old file or the new one.
pub fn write_cache(path: &Path, tree: &RawTree, index: &Index) -> io::Result<()> {
    let bytes = encode_cache(tree, index);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".nfs-index.tmp.{}.{seq}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HandleKey {
        HandleKey([3u8; 32])
    }

    fn meta(ftype: FileType) -> Meta {
        Meta {
            ftype,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            rdev: 0,
            mtime_ns: 1_700_000_000_000_000_000,
            dev: 1,
            ino: 0,
            nlink: 1,
            ctime_ns: 0,
        }
    }

    pub(crate) fn small_tree(names: &[&[u8]]) -> RawTree {
        let mut t = RawTree::default();
        t.push(b"", b"", meta(FileType::Directory), 0);
        t.push(b"d", b"", meta(FileType::Directory), 0);
        for (i, n) in names.iter().enumerate() {
            let mut m = meta(FileType::Regular);
            m.size = i as u64 * 10;
            m.ino = 100 + i as u64;
            t.push(n, b"", m, 1000 + i as u64);
        }
        t
    }

    #[test]
    fn cookies_resolve_collisions_deterministically() {
        let mut v: Vec<(u64, &[u8])> =
            vec![(10, b"b"), (10, b"a"), (11, b"c"), (5, b"z"), (10, b"d")];
        assign_cookies(&mut v, |a, b| a.cmp(b));
        let got: Vec<(u64, &[u8])> = v.clone();
        assert_eq!(
            got,
            vec![
                (5, &b"z"[..]),
                (10, b"a"),
                (11, b"b"),
                (12, b"d"),
                (13, b"c")
            ]
        );
        let cookies: Vec<u64> = v.iter().map(|x| x.0).collect();
        // a (natural 10), b, d (natural 10), c (natural 11) are all found.
        for (name, natural) in [
            (&b"a"[..], 10),
            (b"b", 10),
            (b"d", 10),
            (b"c", 11),
            (b"z", 5),
        ] {
            let i = find_by_cookie(|i| cookies[i], cookies.len(), natural, |i| v[i].1 == name);
            assert_eq!(i.map(|i| v[i].1), Some(name));
        }
        assert_eq!(
            find_by_cookie(|i| cookies[i], cookies.len(), 10, |i| v[i].1 == b"q"),
            None
        );
        assert_eq!(
            find_by_cookie(|i| cookies[i], cookies.len(), 6, |_| true),
            None
        );
    }

    #[test]
    fn build_small_tree_lookup_readdir() {
        let k = key();
        let e = handle::export_id(&k, "t");
        let t = small_tree(&[b"a", b"d/x", b"d/y"]);
        let ix = Index::build(&k, e, &t, &History::default()).unwrap();
        assert_eq!(ix.len(), 5);
        let d = ix.lookup_child(&k, ROOT, b"d").unwrap();
        assert_eq!(ix.ftype(d), FileType::Directory);
        let x = ix.lookup_child(&k, d, b"x").unwrap();
        assert_eq!(ix.relpath(x), b"d/x");
        assert_eq!(ix.lookup_child(&k, d, b"a"), None);
        assert_eq!(
            ix.find(&handle::object_id(&k, e, b"d/y")),
            ix.lookup_child(&k, d, b"y")
        );
        let fh = ix.handle(x);
        let a = ix.attributes(&k, x, &fh);
        assert_eq!(a.size, 10);
        assert_eq!(a.used, 4096);
        assert_eq!(a.nlink, 1);
        let ra = ix.attributes(&k, ROOT, &ix.handle(ROOT));
        assert_eq!(ra.nlink, 3, "root has one subdir");
        assert_eq!(ra.size, 4096);
        let cs: Vec<u64> = ix.children(d).iter().map(|&c| ix.cookie(c)).collect();
        assert!(cs.windows(2).all(|w| w[0] < w[1]) && cs[0] >= 3);
        assert_eq!(ix.children_after(d, cs[0]).len(), 1);
        assert_eq!(ix.children_after(d, u64::MAX).len(), 0);
    }

    #[test]
    fn malformed_trees_are_refused() {
        let k = key();
        let e = handle::export_id(&k, "t");
        for bad in [
            &b"x/y"[..],
            b"d/.",
            b"d/..",
            b"d//z",
            b"d/a\0b",
            b"/d",
            b"d/",
        ] {
            let t = small_tree(&[bad]);
            assert!(
                matches!(
                    Index::build(&k, e, &t, &History::default()),
                    Err(IndexError::Malformed { .. })
                ),
                "{bad:?}"
            );
        }
        let mut t = small_tree(&[]);
        t.push(b"d", b"", meta(FileType::Directory), 0);
        assert!(Index::build(&k, e, &t, &History::default()).is_err());
        assert!(Index::build(&k, e, &RawTree::default(), &History::default()).is_err());
    }

    #[test]
    fn hard_links_share_canonical_object() {
        let k = key();
        let e = handle::export_id(&k, "t");
        let mut t = small_tree(&[]);
        let mut m = meta(FileType::Regular);
        m.ino = 42;
        m.nlink = 3;
        m.size = 7;
        t.push(b"zz", b"", m, 9);
        t.push(b"d/b", b"", m, 9);
        t.push(b"c", b"", m, 9);
        let ix = Index::build(&k, e, &t, &History::default()).unwrap();
        let zz = ix.lookup_child(&k, ROOT, b"zz").unwrap();
        let c = ix.lookup_child(&k, ROOT, b"c").unwrap();
        let d = ix.lookup_child(&k, ROOT, b"d").unwrap();
        let b = ix.lookup_child(&k, d, b"b").unwrap();
        assert_eq!(ix.handle(zz), ix.handle(b));
        assert_eq!(ix.handle(c), ix.handle(b));
        assert_eq!(
            ix.relpath(ix.canonical(zz)),
            b"c",
            "smallest relpath in byte order"
        );
        assert_eq!(
            ix.attributes(&k, zz, &ix.handle(zz)).nlink,
            3,
            "three names"
        );
        // Every name's own path hash resolves to the group.
        assert_eq!(
            ix.canonical(ix.find(&handle::object_id(&k, e, b"d/b")).unwrap()),
            c
        );
    }

    #[test]
    fn cache_round_trip_and_corruption() {
        let k = key();
        let e = handle::export_id(&k, "t");
        let t = small_tree(&[b"a", b"d/x"]);
        let ix = Index::build(&k, e, &t, &History::default()).unwrap();
        let bytes = encode_cache(&t, &ix);
        let m = decode_cache(&bytes).unwrap();
        assert_eq!(m.len(), 4);
        assert_eq!(m[&b"d/x"[..]].generation, 1001);
        assert_eq!(
            m[&b"d"[..]].listing_since_ns,
            ix.listing_since_ns(1).unwrap()
        );
        for i in [0, 9, 20, bytes.len() / 2, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(decode_cache(&b).is_none(), "flip at {i}");
        }
        assert!(decode_cache(&bytes[..bytes.len() - 1]).is_none());
        assert!(decode_cache(b"").is_none());
    }

    #[test]
    fn object_id_collision_refuses_the_version_naming_both_paths() {
        // Two entries with one path are the only way to get equal 128-bit ids on purpose.
        let k = key();
        let e = handle::export_id(&k, "t");
        let t = small_tree(&[b"d/same", b"d/same"]);
        match Index::build(&k, e, &t, &History::default()) {
            Err(err @ IndexError::Collision { .. }) => {
                let msg = err.to_string();
                assert_eq!(msg.matches("d/same").count(), 2, "{msg}");
            }
            other => panic!("expected a collision, got {other:?}"),
        }
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(check_name(b""), Err(NfsError::NoEnt));
        assert_eq!(check_name(b"a/b"), Err(NfsError::NoEnt));
        assert_eq!(check_name(b"a\0"), Err(NfsError::NoEnt));
        assert_eq!(check_name(&[b'x'; 256]), Err(NfsError::NameTooLong));
        assert!(check_name(&[b'x'; 255]).is_ok());
        assert!(check_name(&[0xff, 0xfe]).is_ok());
    }

    #[test]
    fn index_memory_per_entry() {
        let k = key();
        let e = handle::export_id(&k, "t");
        let mut t = RawTree::default();
        t.push(b"", b"", meta(FileType::Directory), 0);
        let mut n = 1;
        for d in 0..500 {
            let dn = format!("dir{d:03}");
            t.push(dn.as_bytes(), b"", meta(FileType::Directory), 0);
            n += 1;
            for f in 0..99 {
                let mut m = meta(FileType::Regular);
                m.ino = n as u64;
                t.push(format!("{dn}/file-{f:05}.so").as_bytes(), b"", m, n as u64);
                n += 1;
            }
        }
        let t0 = Instant::now();
        let ix = Index::build(&k, e, &t, &History::default()).unwrap();
        let el = t0.elapsed();
        let per = ix.memory_bytes() as f64 / ix.len() as f64;
        println!(
            "index of {} entries: {} bytes, {per:.1} B/entry (node {} B), built in {el:?}",
            ix.len(),
            ix.memory_bytes(),
            std::mem::size_of::<Node>()
        );
        assert_eq!(ix.len(), 50_001);
        assert!(per < 140.0, "{per} B/entry");
    }
}
