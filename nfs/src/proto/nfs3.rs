//! NFSv3 (RFC 1813 §2–3) wire types for a read-only server: argument decoders for the
//! procedures we execute, and result encoders with their exact sizes (READDIR paging counts
//! bytes before writing them).

use crate::fs::{Attributes, FileHandle, FsStat, NfsError, NFS3_FHSIZE};
use crate::xdr::{padded, Reader, Writer, XdrError};

pub const PROGRAM: u32 = 100003;
pub const VERSION: u32 = 3;

/// Procedure numbers (RFC 1813 §3.3).
pub mod procs {
    pub const NULL: u32 = 0;
    pub const GETATTR: u32 = 1;
    pub const SETATTR: u32 = 2;
    pub const LOOKUP: u32 = 3;
    pub const ACCESS: u32 = 4;
    pub const READLINK: u32 = 5;
    pub const READ: u32 = 6;
    pub const WRITE: u32 = 7;
    pub const CREATE: u32 = 8;
    pub const MKDIR: u32 = 9;
    pub const SYMLINK: u32 = 10;
    pub const MKNOD: u32 = 11;
    pub const REMOVE: u32 = 12;
    pub const RMDIR: u32 = 13;
    pub const RENAME: u32 = 14;
    pub const LINK: u32 = 15;
    pub const READDIR: u32 = 16;
    pub const READDIRPLUS: u32 = 17;
    pub const FSSTAT: u32 = 18;
    pub const FSINFO: u32 = 19;
    pub const PATHCONF: u32 = 20;
    pub const COMMIT: u32 = 21;
    /// Number of procedures (0..=21).
    pub const COUNT: usize = 22;

    pub const NAMES: [&str; COUNT] = [
        "null",
        "getattr",
        "setattr",
        "lookup",
        "access",
        "readlink",
        "read",
        "write",
        "create",
        "mkdir",
        "symlink",
        "mknod",
        "remove",
        "rmdir",
        "rename",
        "link",
        "readdir",
        "readdirplus",
        "fsstat",
        "fsinfo",
        "pathconf",
        "commit",
    ];
}

/// `NFS3_OK`.
pub const NFS3_OK: u32 = 0;

/// ACCESS bits (RFC 1813 §3.3.4).
pub mod access {
    pub const READ: u32 = 0x01;
    pub const LOOKUP: u32 = 0x02;
    pub const MODIFY: u32 = 0x04;
    pub const EXTEND: u32 = 0x08;
    pub const DELETE: u32 = 0x10;
    pub const EXECUTE: u32 = 0x20;
}

/// Longest name a LOOKUP may carry (`NAME_MAX`, also what PATHCONF announces).
pub const NAME_MAX: usize = 255;
/// Decode bound for `filename3`: the RFC gives none; anything over [`NAME_MAX`] is answered
/// NAMETOOLONG, so this only has to be larger than that and bounded.
pub const FILENAME_DECODE_MAX: u32 = 4096;

/// FSINFO constants (design §1.6).
pub const RTMAX: u32 = 1 << 20;
pub const RTMULT: u32 = 4096;
pub const DTPREF: u32 = 64 << 10;
pub const MAXFILESIZE: u64 = i64::MAX as u64;
const FSF3_LINK: u32 = 0x1;
const FSF3_SYMLINK: u32 = 0x2;
const FSF3_HOMOGENEOUS: u32 = 0x8;

/// Sizes in bytes of the pieces that READDIR paging adds up.
pub const FATTR3_LEN: usize = 84;
pub const POST_OP_ATTR_LEN: usize = 4 + FATTR3_LEN;

/// Decodes an `nfs_fh3`. `Ok(None)`: well-formed XDR but not a handle of ours (BADHANDLE);
/// `Err`: longer than `NFS3_FHSIZE` or truncated (GARBAGE_ARGS).
pub fn decode_fh(r: &mut Reader<'_>) -> Result<Option<FileHandle>, XdrError> {
    let bytes = r.opaque(NFS3_FHSIZE as u32)?;
    Ok(FileHandle::from_slice(bytes))
}

/// `diropargs3`.
pub fn decode_diropargs<'a>(
    r: &mut Reader<'a>,
) -> Result<(Option<FileHandle>, &'a [u8]), XdrError> {
    let dir = decode_fh(r)?;
    let name = r.string(FILENAME_DECODE_MAX)?;
    Ok((dir, name))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadArgs {
    pub fh: Option<FileHandle>,
    pub offset: u64,
    pub count: u32,
}

pub fn decode_read(r: &mut Reader<'_>) -> Result<ReadArgs, XdrError> {
    Ok(ReadArgs {
        fh: decode_fh(r)?,
        offset: r.u64()?,
        count: r.u32()?,
    })
}

/// READDIR and READDIRPLUS arguments (`dircount` = `maxcount` for READDIR, whose single
/// `count` bounds the whole result).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReaddirArgs {
    pub fh: Option<FileHandle>,
    pub cookie: u64,
    pub dircount: u32,
    pub maxcount: u32,
}

pub fn decode_readdir(r: &mut Reader<'_>) -> Result<ReaddirArgs, XdrError> {
    let fh = decode_fh(r)?;
    let cookie = r.u64()?;
    // The verifier is ignored: ours is always zero and cookies never go stale (design §1.4).
    let _verf = r.fixed_opaque(8)?;
    let count = r.u32()?;
    Ok(ReaddirArgs {
        fh,
        cookie,
        dircount: count,
        maxcount: count,
    })
}

pub fn decode_readdirplus(r: &mut Reader<'_>) -> Result<ReaddirArgs, XdrError> {
    let fh = decode_fh(r)?;
    let cookie = r.u64()?;
    let _verf = r.fixed_opaque(8)?;
    Ok(ReaddirArgs {
        fh,
        cookie,
        dircount: r.u32()?,
        maxcount: r.u32()?,
    })
}

/// `fattr3`: exactly [`FATTR3_LEN`] bytes.
pub fn fattr3(w: &mut Writer, a: &Attributes) {
    w.u32(a.ftype as u32);
    w.u32(a.mode & 0o7777);
    w.u32(a.nlink);
    w.u32(a.uid);
    w.u32(a.gid);
    w.u64(a.size);
    w.u64(a.used);
    w.u32(a.rdev.0);
    w.u32(a.rdev.1);
    w.u64(a.fsid);
    w.u64(a.fileid);
    for t in [a.atime, a.mtime, a.ctime] {
        w.u32(t.seconds);
        w.u32(t.nseconds);
    }
}

/// `post_op_attr`: 4 or [`POST_OP_ATTR_LEN`] bytes.
pub fn post_op_attr(w: &mut Writer, a: Option<&Attributes>) {
    match a {
        Some(a) => {
            w.bool(true);
            fattr3(w, a);
        }
        None => w.bool(false),
    }
}

/// `wcc_data` with both halves absent (8 bytes): valid for every ROFS reply.
pub fn wcc_absent(w: &mut Writer) {
    w.bool(false); // pre_op_attr
    w.bool(false); // post_op_attr
}

pub fn nfs_fh3(w: &mut Writer, fh: &FileHandle) {
    w.opaque(fh.as_bytes());
}

/// `post_op_fh3` with a handle.
pub fn post_op_fh3(w: &mut Writer, fh: &FileHandle) {
    w.bool(true);
    nfs_fh3(w, fh);
}

/// Status word for an error.
pub fn status(w: &mut Writer, e: NfsError) {
    w.u32(e as u32);
}

/// The whole result body (status onwards) of a write procedure: NFS3ERR_ROFS with every
/// wcc/post_op part absent, in the layout of that procedure's `resfail`. `None` if `proc_num`
/// is not a write procedure.
pub fn rofs_result(w: &mut Writer, proc_num: u32) -> Option<()> {
    // Number of absent optional items after the status, per resfail layout.
    let absent = match proc_num {
        // wcc_data obj_wcc / file_wcc / dir_wcc
        procs::SETATTR
        | procs::WRITE
        | procs::CREATE
        | procs::MKDIR
        | procs::SYMLINK
        | procs::MKNOD
        | procs::REMOVE
        | procs::RMDIR
        | procs::COMMIT => 2,
        // post_op_attr file_attributes + wcc_data linkdir_wcc
        procs::LINK => 3,
        // wcc_data fromdir_wcc + wcc_data todir_wcc
        procs::RENAME => 4,
        _ => return None,
    };
    status(w, NfsError::Rofs);
    for _ in 0..absent {
        w.bool(false);
    }
    Some(())
}

/// True for the procedures a read-only server refuses with ROFS.
pub fn is_write_proc(proc_num: u32) -> bool {
    matches!(
        proc_num,
        procs::SETATTR
            | procs::WRITE
            | procs::CREATE
            | procs::MKDIR
            | procs::SYMLINK
            | procs::MKNOD
            | procs::REMOVE
            | procs::RMDIR
            | procs::RENAME
            | procs::LINK
            | procs::COMMIT
    )
}

/// Bytes one READDIR `entry3` takes, list marker included.
pub fn entry3_len(name_len: usize) -> u64 {
    (4 + 8 + 4 + padded(name_len) + 8) as u64
}

/// Bytes one READDIRPLUS `entryplus3` takes (list marker, fileid, name, cookie, post_op_attr
/// with attributes, post_op_fh3 with one of our handles).
pub fn entryplus3_len(name_len: usize) -> u64 {
    entry3_len(name_len) + (POST_OP_ATTR_LEN + 4 + 4 + crate::fs::HANDLE_LEN) as u64
}

/// What one entry counts against READDIRPLUS `dircount`: fileid, name, cookie.
pub fn entry_dircount_len(name_len: usize) -> u64 {
    (8 + 4 + padded(name_len) + 8) as u64
}

/// Status + post_op_attr + cookieverf + list end + eof: the fixed part of a READDIR(PLUS)
/// reply. (The status is not part of `resok`; counting it anyway keeps us inside the limit
/// whichever way a client reads RFC 1813.)
pub const READDIR_FIXED_LEN: u64 = (4 + POST_OP_ATTR_LEN + 8 + 4 + 4) as u64;

/// One READDIR entry.
pub fn entry3(w: &mut Writer, fileid: u64, name: &[u8], cookie: u64) {
    w.bool(true);
    w.u64(fileid);
    w.string(name);
    w.u64(cookie);
}

/// One READDIRPLUS entry.
pub fn entryplus3(w: &mut Writer, name: &[u8], cookie: u64, fh: &FileHandle, a: &Attributes) {
    entry3(w, a.fileid, name, cookie);
    post_op_attr(w, Some(a));
    post_op_fh3(w, fh);
}

/// FSINFO3resok after the status.
pub fn fsinfo_resok(w: &mut Writer, a: &Attributes) {
    post_op_attr(w, Some(a));
    w.u32(RTMAX); // rtmax
    w.u32(RTMAX); // rtpref
    w.u32(RTMULT); // rtmult
    w.u32(RTMAX); // wtmax
    w.u32(RTMAX); // wtpref
    w.u32(RTMULT); // wtmult
    w.u32(DTPREF);
    w.u64(MAXFILESIZE);
    w.u32(0); // time_delta: 1 ns
    w.u32(1);
    w.u32(FSF3_LINK | FSF3_SYMLINK | FSF3_HOMOGENEOUS);
}

/// PATHCONF3resok after the status.
pub fn pathconf_resok(w: &mut Writer, a: &Attributes) {
    post_op_attr(w, Some(a));
    w.u32(65000); // linkmax
    w.u32(NAME_MAX as u32);
    w.bool(true); // no_trunc
    w.bool(true); // chown_restricted
    w.bool(false); // case_insensitive
    w.bool(true); // case_preserving
}

/// FSSTAT3resok after the status. `invarsec` 0: the version may switch at any time.
pub fn fsstat_resok(w: &mut Writer, a: &Attributes, s: &FsStat) {
    post_op_attr(w, Some(a));
    for v in [s.tbytes, s.fbytes, s.abytes, s.tfiles, s.ffiles, s.afiles] {
        w.u64(v);
    }
    w.u32(0);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fs::{FileType, NfsTime};

    pub(crate) fn sample_attr() -> Attributes {
        Attributes {
            ftype: FileType::Regular,
            mode: 0o104755, // type bits must not leak into the wire mode
            nlink: 2,
            uid: 0x11,
            gid: 0x22,
            size: 0x0102_0304_0506_0708,
            used: 0x1000,
            rdev: (0x33, 0x44),
            fsid: 0x0a0b_0c0d_0e0f_1011,
            fileid: 0x5555,
            atime: NfsTime {
                seconds: 0x66,
                nseconds: 0x77,
            },
            mtime: NfsTime {
                seconds: 0x88,
                nseconds: 0x99,
            },
            ctime: NfsTime {
                seconds: 0xaa,
                nseconds: 0xbb,
            },
        }
    }

    /// fattr3 written by hand from RFC 1813 §2.5, not by our encoder.
    pub(crate) const FATTR3_GOLDEN: [u8; 84] = [
        0, 0, 0, 1, // type NF3REG
        0, 0, 0x09, 0xed, // mode 04755
        0, 0, 0, 2, // nlink
        0, 0, 0, 0x11, // uid
        0, 0, 0, 0x22, // gid
        1, 2, 3, 4, 5, 6, 7, 8, // size
        0, 0, 0, 0, 0, 0, 0x10, 0, // used
        0, 0, 0, 0x33, 0, 0, 0, 0x44, // rdev
        0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, // fsid
        0, 0, 0, 0, 0, 0, 0x55, 0x55, // fileid
        0, 0, 0, 0x66, 0, 0, 0, 0x77, // atime
        0, 0, 0, 0x88, 0, 0, 0, 0x99, // mtime
        0, 0, 0, 0xaa, 0, 0, 0, 0xbb, // ctime
    ];

    #[test]
    fn fattr3_golden() {
        let mut w = Writer::new();
        fattr3(&mut w, &sample_attr());
        assert_eq!(w.len(), FATTR3_LEN);
        assert_eq!(w.as_slice(), &FATTR3_GOLDEN[..]);
    }

    #[test]
    fn post_op_attr_golden() {
        let mut w = Writer::new();
        post_op_attr(&mut w, None);
        assert_eq!(w.as_slice(), [0, 0, 0, 0]);
        let mut w = Writer::new();
        post_op_attr(&mut w, Some(&sample_attr()));
        assert_eq!(&w.as_slice()[..4], [0, 0, 0, 1]);
        assert_eq!(&w.as_slice()[4..], &FATTR3_GOLDEN[..]);
    }

    #[test]
    fn rofs_layouts() {
        let expect = |p: u32, n: usize| {
            let mut w = Writer::new();
            rofs_result(&mut w, p).unwrap();
            let mut v = vec![0, 0, 0, 30];
            v.extend(std::iter::repeat_n(0u8, 4 * n));
            assert_eq!(w.as_slice(), &v[..], "proc {p}");
        };
        // wcc_data all absent = 8 zero bytes.
        for p in [2, 7, 8, 9, 10, 11, 12, 13, 21] {
            expect(p, 2);
        }
        expect(procs::LINK, 3);
        expect(procs::RENAME, 4);
        for p in [0, 1, 3, 4, 5, 6, 16, 17, 18, 19, 20, 22] {
            assert!(rofs_result(&mut Writer::new(), p).is_none());
            assert!(!is_write_proc(p));
        }
    }

    #[test]
    fn entryplus3_golden() {
        let fh = FileHandle([0x5a; 36]);
        let mut w = Writer::new();
        entryplus3(&mut w, b"abcde", 0x0102, &fh, &sample_attr());
        let mut g = vec![0, 0, 0, 1]; // value follows
        g.extend([0, 0, 0, 0, 0, 0, 0x55, 0x55]); // fileid
        g.extend([0, 0, 0, 5, b'a', b'b', b'c', b'd', b'e', 0, 0, 0]); // name + pad
        g.extend([0, 0, 0, 0, 0, 0, 1, 2]); // cookie
        g.extend([0, 0, 0, 1]);
        g.extend(FATTR3_GOLDEN);
        g.extend([0, 0, 0, 1, 0, 0, 0, 36]);
        g.extend([0x5a; 36]);
        assert_eq!(w.as_slice(), &g[..]);
        assert_eq!(w.len() as u64, entryplus3_len(5));
        let mut w = Writer::new();
        entry3(&mut w, 1, b"abcd", 2);
        assert_eq!(w.len() as u64, entry3_len(4));
    }

    #[test]
    fn handle_lengths() {
        for (len, expect) in [
            (0, Ok(None)),
            (35, Ok(None)),
            (36, Ok(Some(()))),
            (37, Ok(None)),
        ] {
            let mut w = Writer::new();
            w.opaque(&vec![1; len]);
            let got = decode_fh(&mut Reader::new(w.as_slice())).map(|o| o.map(|_| ()));
            assert_eq!(got, expect, "len {len}");
        }
        for len in [65, 1000] {
            let mut w = Writer::new();
            w.opaque(&vec![1; len]);
            assert!(decode_fh(&mut Reader::new(w.as_slice())).is_err());
        }
    }

    #[test]
    fn fsinfo_pathconf_layout() {
        let a = sample_attr();
        let mut w = Writer::new();
        fsinfo_resok(&mut w, &a);
        let b = w.as_slice();
        assert_eq!(b.len(), 88 + 7 * 4 + 8 + 8 + 4);
        assert_eq!(&b[88..92], [0, 0x10, 0, 0]); // rtmax 1 MiB
        assert_eq!(&b[112..116], [0, 1, 0, 0]); // dtpref 64 KiB
        assert_eq!(
            &b[116..124],
            [0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
        assert_eq!(&b[124..132], [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&b[132..], [0, 0, 0, 0x0b]);
        let mut w = Writer::new();
        pathconf_resok(&mut w, &a);
        assert_eq!(
            &w.as_slice()[88..],
            [0, 0, 0xfd, 0xe8, 0, 0, 0, 255, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
        );
    }
}
