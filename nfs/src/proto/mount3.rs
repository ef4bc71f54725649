//! MOUNT v3 (RFC 1813 §5) wire types.

use crate::fs::{FileHandle, MountError};
use crate::rpc::AUTH_SYS;
use crate::xdr::{Reader, Writer, XdrError};

pub const PROGRAM: u32 = 100005;
pub const VERSION: u32 = 3;
/// `MNTPATHLEN`.
pub const MNTPATHLEN: u32 = 1024;

pub mod procs {
    pub const NULL: u32 = 0;
    pub const MNT: u32 = 1;
    pub const DUMP: u32 = 2;
    pub const UMNT: u32 = 3;
    pub const UMNTALL: u32 = 4;
    pub const EXPORT: u32 = 5;
    pub const COUNT: usize = 6;
    pub const NAMES: [&str; COUNT] = ["null", "mnt", "dump", "umnt", "umntall", "export"];
}

/// A `dirpath` argument: `Ok(Err(NameTooLong))` when it is well-formed XDR but over
/// `MNTPATHLEN` (answered with a mount status, not GARBAGE_ARGS).
pub fn decode_dirpath<'a>(r: &mut Reader<'a>) -> Result<Result<&'a [u8], MountError>, XdrError> {
    match r.string(MNTPATHLEN) {
        Ok(p) => Ok(Ok(p)),
        Err(XdrError::TooLong { .. }) => Ok(Err(MountError::NameTooLong)),
        Err(e) => Err(e),
    }
}

/// `mountres3` for MNT. Only AUTH_SYS is offered: a Linux client would otherwise consider
/// AUTH_NULL (design §1.1).
pub fn mnt_result(w: &mut Writer, res: Result<&FileHandle, MountError>) {
    match res {
        Ok(fh) => {
            w.u32(0);
            w.opaque(fh.as_bytes());
            w.u32(1);
            w.u32(AUTH_SYS);
        }
        Err(e) => w.u32(e as u32),
    }
}

/// `exports`: a linked list of (dirpath, empty group list).
pub fn export_result(w: &mut Writer, paths: &[Vec<u8>]) {
    for p in paths {
        w.bool(true);
        // Longer paths cannot be mounted anyway; clamp so the reply stays valid XDR for
        // clients that enforce MNTPATHLEN on decode.
        let n = p.len().min(MNTPATHLEN as usize);
        w.string(&p[..n]);
        w.bool(false); // groups: none (access is decided by the allow-list)
    }
    w.bool(false);
}

/// `mountlist` for DUMP: always empty (we keep no mount table; it is advisory).
pub fn dump_result(w: &mut Writer) {
    w.bool(false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mnt_golden() {
        let fh = FileHandle([7; 36]);
        let mut w = Writer::new();
        mnt_result(&mut w, Ok(&fh));
        let mut g = vec![0, 0, 0, 0, 0, 0, 0, 36];
        g.extend([7; 36]);
        g.extend([0, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(w.as_slice(), &g[..]);
        let mut w = Writer::new();
        mnt_result(&mut w, Err(MountError::NoEnt));
        assert_eq!(w.as_slice(), [0, 0, 0, 2]);
    }

    #[test]
    fn export_golden() {
        let mut w = Writer::new();
        export_result(&mut w, &[b"/a".to_vec()]);
        assert_eq!(
            w.as_slice(),
            [0, 0, 0, 1, 0, 0, 0, 2, b'/', b'a', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn dirpath_limits() {
        let mut w = Writer::new();
        w.string(&[b'a'; 1025]);
        assert_eq!(
            decode_dirpath(&mut Reader::new(w.as_slice())),
            Ok(Err(MountError::NameTooLong))
        );
        assert!(decode_dirpath(&mut Reader::new(&[0, 0, 0, 9, 1])).is_err());
    }
}
