//! File handles, fileids and readdir cookies as pure functions of (key, export name, relpath,
//! content) — design §2.2, §3.1, §1.4. Nothing here looks at inode numbers or storage, so two
//! copies of a tree produce the same bytes. The only I/O is loading/generating the key file.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::fs::{FileHandle, NfsError, HANDLE_LEN};

/// First byte of every handle we issue. A future layout gets another value, so old handles can
/// be told apart instead of being misread.
pub const FORMAT: u8 = 0x01;

/// Reserved cookies: 0 = start of listing, 1 = `.`, 2 = `..`.
pub const COOKIE_DOT: u64 = 1;
pub const COOKIE_DOTDOT: u64 = 2;
pub const FIRST_COOKIE: u64 = 3;

/// Handle kind byte. Only directory vs. other: a path that changes between the two is a
/// different object (STALE), while e.g. file ↔ symlink changes are caught by the generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Directory = 1,
    Other = 2,
}

/// `K("export" ‖ name)[0..8]`: the export's identity in handles, and its fsid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExportId(pub [u8; 8]);

impl ExportId {
    /// The value reported as `fsid` (little-endian reading of the handle bytes).
    pub fn fsid(&self) -> u64 {
        u64::from_le_bytes(self.0)
    }
}

/// `K("path" ‖ export id ‖ relpath)[0..16]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ObjectId(pub [u8; 16]);

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "obj:")?;
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// A decoded handle (design §2.2 layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Decoded {
    pub kind: Kind,
    pub export: ExportId,
    pub object: ObjectId,
    /// 0 for directories; first 8 bytes (LE) of the content hash otherwise.
    pub generation: u64,
}

pub fn encode(kind: Kind, export: ExportId, object: ObjectId, generation: u64) -> FileHandle {
    let mut b = [0u8; HANDLE_LEN];
    b[0] = FORMAT;
    b[1] = kind as u8;
    // b[2..4] reserved, zero.
    b[4..12].copy_from_slice(&export.0);
    b[12..28].copy_from_slice(&object.0);
    b[28..36].copy_from_slice(&generation.to_le_bytes());
    FileHandle(b)
}

/// Structural check only; whether the export/object exist is the caller's question.
pub fn decode(fh: &FileHandle) -> Result<Decoded, NfsError> {
    let b = &fh.0;
    if b[0] != FORMAT || b[2] != 0 || b[3] != 0 {
        return Err(NfsError::BadHandle);
    }
    let kind = match b[1] {
        1 => Kind::Directory,
        2 => Kind::Other,
        _ => return Err(NfsError::BadHandle),
    };
    let mut export = [0u8; 8];
    export.copy_from_slice(&b[4..12]);
    let mut object = [0u8; 16];
    object.copy_from_slice(&b[12..28]);
    let mut gen = [0u8; 8];
    gen.copy_from_slice(&b[28..36]);
    let generation = u64::from_le_bytes(gen);
    if kind == Kind::Directory && generation != 0 {
        // We never issue such a handle; refusing it keeps "one handle per directory" true.
        return Err(NfsError::BadHandle);
    }
    Ok(Decoded {
        kind,
        export: ExportId(export),
        object: ObjectId(object),
        generation,
    })
}

/// `fileid = K("fileid" ‖ object id ‖ generation)[0..8]`, 0 → 1: a function of the handle
/// bytes alone, so the client's "fileid changed" check can never fire (design §3.1).
pub fn fileid(key: &HandleKey, fh: &FileHandle) -> u64 {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(b"fileid");
    h.update(&fh.0[12..36]);
    let v = first_u64(h.finalize().as_bytes());
    if v == 0 {
        1
    } else {
        v
    }
}

/// Natural readdir cookie of `name`: 63-bit keyed hash, values below 3 raised to 3. Collisions
/// inside one directory are resolved by [`crate::index`] (next free value).
pub fn cookie(key: &HandleKey, name: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(b"cookie");
    h.update(name);
    let v = first_u64(h.finalize().as_bytes()) >> 1;
    v.max(FIRST_COOKIE)
}

pub fn export_id(key: &HandleKey, name: &str) -> ExportId {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(b"export");
    h.update(name.as_bytes());
    let mut out = [0u8; 8];
    out.copy_from_slice(&h.finalize().as_bytes()[..8]);
    ExportId(out)
}

/// Object id of `relpath` (components joined by `/`, no leading slash, root = empty).
pub fn object_id(key: &HandleKey, export: ExportId, relpath: &[u8]) -> ObjectId {
    let mut h = blake3::Hasher::new_keyed(&key.0);
    h.update(b"path");
    h.update(&export.0);
    h.update(relpath);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    ObjectId(out)
}

/// Generation of a regular file from its BLAKE3 content hash.
pub fn generation_of_hash(hash: &blake3::Hash) -> u64 {
    nonzero(first_u64(hash.as_bytes()))
}

/// Generation of a symlink: hash of its target bytes, domain-separated from file content so a
/// file replaced by a symlink with the same bytes is a new object.
pub fn generation_of_symlink(target: &[u8]) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(b"symlink\0");
    h.update(target);
    nonzero(first_u64(h.finalize().as_bytes()))
}

/// Generation of a device node: hash of (type, major, minor).
pub fn generation_of_device(is_block: bool, major: u32, minor: u32) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(if is_block { b"blk\0" } else { b"chr\0" });
    h.update(&major.to_le_bytes());
    h.update(&minor.to_le_bytes());
    nonzero(first_u64(h.finalize().as_bytes()))
}

/// FIFOs and sockets have no content: a constant per type.
pub fn generation_of_special(is_socket: bool) -> u64 {
    let h = blake3::hash(if is_socket { b"socket" } else { b"fifo" });
    nonzero(first_u64(h.as_bytes()))
}

/// Non-directories never get generation 0, which is reserved for directories (decode refuses
/// a directory handle with another value, and the two must not meet).
fn nonzero(v: u64) -> u64 {
    if v == 0 {
        1
    } else {
        v
    }
}

fn first_u64(b: &[u8; 32]) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[..8]);
    u64::from_le_bytes(x)
}

/// The cluster's 32-byte handle key (design §2.2). Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct HandleKey(pub [u8; 32]);

impl fmt::Debug for HandleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HandleKey({})", self.fingerprint())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("handle key {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("handle key {path}: mode {mode:04o} gives group/others access; chmod 600 it")]
    Permissions { path: String, mode: u32 },
    #[error(
        "handle key {path}: expected exactly 32 bytes or 64 hex characters, found {len} bytes"
    )]
    Format { path: String, len: usize },
    #[error(
        "handle key {path}: already exists; refusing to replace it (every handle would go stale)"
    )]
    Exists { path: String },
}

impl HandleKey {
    /// Parse file contents: exactly 32 raw bytes, or 64 hex characters (one trailing newline
    /// allowed, since editors add one).
    pub fn parse(bytes: &[u8]) -> Option<HandleKey> {
        if bytes.len() == 32 {
            let mut k = [0u8; 32];
            k.copy_from_slice(bytes);
            return Some(HandleKey(k));
        }
        let hex = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        if hex.len() != 64 {
            return None;
        }
        let mut k = [0u8; 32];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            k[i] = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
        }
        Some(HandleKey(k))
    }

    /// Load the key file, refusing one that group or others can access: anyone who reads the
    /// key can forge handles and bypass directory permissions.
    pub fn load(path: &Path) -> Result<HandleKey, KeyError> {
        let p = path.display().to_string();
        let io_err = |source| KeyError::Io {
            path: p.clone(),
            source,
        };
        let md = fs::metadata(path).map_err(io_err)?;
        let mode = md.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: p, mode });
        }
        let bytes = fs::read(path).map_err(io_err)?;
        HandleKey::parse(&bytes).ok_or(KeyError::Format {
            path: p,
            len: bytes.len(),
        })
    }

    /// Write a new random key (hex) with mode 0600, atomically: written to a temporary file in
    /// the same directory, fsynced, then hard-linked into place (which, unlike rename, refuses
    /// to replace an existing key).
    pub fn generate(path: &Path) -> Result<HandleKey, KeyError> {
        let p = path.display().to_string();
        let io_err = |source| KeyError::Io {
            path: p.clone(),
            source,
        };
        let mut k = [0u8; 32];
        fill_random(&mut k).map_err(io_err)?;
        let key = HandleKey(k);
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".handle-key.tmp.{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let result = (|| -> io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut hex = String::with_capacity(65);
            for b in &key.0 {
                hex.push_str(&format!("{b:02x}"));
            }
            hex.push('\n');
            f.write_all(hex.as_bytes())?;
            f.sync_all()?;
            fs::hard_link(&tmp, path)?;
            fs::File::open(dir)?.sync_all()
        })();
        let _ = fs::remove_file(&tmp);
        match result {
            Ok(()) => Ok(key),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(KeyError::Exists { path: p }),
            Err(e) => Err(io_err(e)),
        }
    }

    /// Short, one-way identifier for logs and the HA status exchange (the two masters must
    /// agree on it).
    pub fn fingerprint(&self) -> String {
        let h = blake3::keyed_hash(&self.0, b"clustermaker nfs handle key fingerprint");
        h.as_bytes()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn fill_random(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[done..].as_mut_ptr().cast(), buf.len() - done, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HandleKey {
        HandleKey([7u8; 32])
    }

    #[test]
    fn encode_decode_round_trip_and_layout() {
        let k = key();
        let e = export_id(&k, "debian12");
        let o = object_id(&k, e, b"usr/bin/ls");
        let fh = encode(Kind::Other, e, o, 0x1122334455667788);
        assert_eq!(fh.0[0], 0x01);
        assert_eq!(fh.0[1], 2);
        assert_eq!(&fh.0[2..4], &[0, 0]);
        assert_eq!(&fh.0[4..12], &e.0);
        assert_eq!(&fh.0[12..28], &o.0);
        assert_eq!(&fh.0[28..36], &0x1122334455667788u64.to_le_bytes());
        let d = decode(&fh).unwrap();
        assert_eq!(
            d,
            Decoded {
                kind: Kind::Other,
                export: e,
                object: o,
                generation: 0x1122334455667788
            }
        );
    }

    #[test]
    fn decode_refuses_bad_format_reserved_and_kind() {
        let k = key();
        let e = export_id(&k, "x");
        let good = encode(Kind::Directory, e, object_id(&k, e, b""), 0);
        assert!(decode(&good).is_ok());
        for (i, v) in [(0, 0x02u8), (0, 0), (1, 0), (1, 3), (2, 1), (3, 0x80)] {
            let mut b = good;
            b.0[i] = v;
            assert_eq!(decode(&b), Err(NfsError::BadHandle), "byte {i} = {v}");
        }
        let mut dir_with_gen = good;
        dir_with_gen.0[30] = 1;
        assert_eq!(decode(&dir_with_gen), Err(NfsError::BadHandle));
    }

    #[test]
    fn ids_depend_on_key_export_and_path_only() {
        let k = key();
        let e1 = export_id(&k, "a");
        let e2 = export_id(&k, "b");
        assert_ne!(e1, e2);
        assert_eq!(
            object_id(&k, e1, b"etc/passwd"),
            object_id(&k, e1, b"etc/passwd")
        );
        assert_ne!(
            object_id(&k, e1, b"etc/passwd"),
            object_id(&k, e2, b"etc/passwd")
        );
        let other = HandleKey([8u8; 32]);
        assert_ne!(
            object_id(&k, e1, b"etc/passwd"),
            object_id(&other, export_id(&other, "a"), b"etc/passwd")
        );
    }

    #[test]
    fn fileid_is_function_of_handle_and_nonzero() {
        let k = key();
        let e = export_id(&k, "a");
        let fh1 = encode(Kind::Other, e, object_id(&k, e, b"f"), 5);
        let fh2 = encode(Kind::Other, e, object_id(&k, e, b"f"), 6);
        assert_eq!(fileid(&k, &fh1), fileid(&k, &fh1));
        assert_ne!(fileid(&k, &fh1), fileid(&k, &fh2));
        assert_ne!(fileid(&k, &fh1), 0);
    }

    #[test]
    fn cookies_are_63_bit_and_at_least_3() {
        let k = key();
        for i in 0..10_000u32 {
            let c = cookie(&k, format!("name{i}").as_bytes());
            assert!((FIRST_COOKIE..(1 << 63)).contains(&c));
        }
    }

    #[test]
    fn key_parse_raw_and_hex() {
        assert_eq!(HandleKey::parse(&[9u8; 32]), Some(HandleKey([9u8; 32])));
        let hex = "ab".repeat(32);
        assert_eq!(
            HandleKey::parse(hex.as_bytes()),
            Some(HandleKey([0xab; 32]))
        );
        assert_eq!(
            HandleKey::parse(format!("{hex}\n").as_bytes()),
            Some(HandleKey([0xab; 32]))
        );
        assert_eq!(
            HandleKey::parse("AB".repeat(32).as_bytes()),
            Some(HandleKey([0xab; 32]))
        );
        assert_eq!(HandleKey::parse(&[1u8; 31]), None);
        assert_eq!(HandleKey::parse(&[1u8; 33]), None);
        assert_eq!(HandleKey::parse("zz".repeat(32).as_bytes()), None);
        assert_eq!(HandleKey::parse(format!("{hex}\n\n").as_bytes()), None);
    }

    #[test]
    fn key_generate_load_and_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handle.key");
        let k = HandleKey::generate(&path).unwrap();
        let md = fs::metadata(&path).unwrap();
        assert_eq!(md.mode() & 0o7777, 0o600);
        assert_eq!(HandleKey::load(&path).unwrap(), k);
        assert_eq!(k.fingerprint().len(), 12);
        let full: String = k.0.iter().map(|b| format!("{b:02x}")).collect();
        assert!(
            !format!("{k:?}").contains(&full),
            "Debug must not print the key"
        );
        // Never replaced.
        assert!(matches!(
            HandleKey::generate(&path),
            Err(KeyError::Exists { .. })
        ));
        assert_eq!(HandleKey::load(&path).unwrap(), k);
        // No temp files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            HandleKey::load(&path),
            Err(KeyError::Permissions { mode: 0o640, .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, b"short").unwrap();
        assert!(matches!(
            HandleKey::load(&path),
            Err(KeyError::Format { len: 5, .. })
        ));
        let g = HandleKey::generate(&dir.path().join("k2")).unwrap();
        assert_ne!(g, k, "keys are random");
    }
}
