//! One RPC record in, one action out: the pure dispatcher of the server.
//!
//! Everything but READ is answered here and now (the file side answers from memory). READ is
//! returned as [`Action::Read`] so the server can run the possibly blocking file read on a
//! blocking thread and encode the reply there with [`read_reply`], which reads straight into the
//! reply buffer (one copy of the data in user space).
//!
//! Nothing here panics on input: every decode error with a readable xid becomes GARBAGE_ARGS;
//! only a record without even an xid closes the connection.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::fs::{Attributes, DirEntry, FileHandle, FileType, Filesystem, NfsError};
use crate::proto::mount3;
use crate::proto::nfs3::{self, access, procs};
use crate::record::Frame;
use crate::rpc::{self, AcceptStat, Call, CallError, Credentials};
use crate::xdr::{pad, Reader, Writer, XdrError};

/// Largest READ we serve (FSINFO rtmax); larger requests are shortened, as RFC 1813 allows.
pub const MAX_READ: u32 = nfs3::RTMAX;
/// Cap on a READDIR(PLUS) reply whatever the client asks for (it asked for at most its
/// `dtsize`, which it caps by our dtpref and rsize: anything above is hostile or a bug).
pub const MAX_READDIR_REPLY: u64 = nfs3::RTMAX as u64;
/// Entries asked of the file side per batch while filling a READDIR(PLUS) reply.
const READDIR_BATCH: usize = 1024;
/// READ reply bytes before the data: RPC header, status, post_op_attr, count, eof, length.
const READ_HEADER_LEN: usize = rpc::ACCEPTED_HEADER_LEN + 4 + nfs3::POST_OP_ATTR_LEN + 12;
/// Upper bound of any reply we produce (the fuzz target checks it).
pub const MAX_REPLY_LEN: usize = READ_HEADER_LEN + MAX_READ as usize + 4;

/// What the server should do with a record.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Send this reply body (the server adds the record mark).
    Reply(Vec<u8>),
    /// Run [`read_reply`] on a blocking thread and send its result.
    Read(ReadRequest),
    /// Nothing to answer (a REPLY message sent to us); keep the connection.
    Ignore,
    /// Not even an xid: the stream cannot be trusted, close the connection.
    Close,
}

/// A READ that passed every check but the read itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadRequest {
    pub xid: u32,
    pub fh: FileHandle,
    pub offset: u64,
    /// Already capped at [`MAX_READ`].
    pub count: u32,
}

/// Calls per procedure and RPC-level outcomes. Shared by all connections (relaxed atomics: they
/// are statistics, not synchronisation).
#[derive(Debug, Default)]
pub struct Stats {
    nfs: [AtomicU64; procs::COUNT],
    mount: [AtomicU64; mount3::procs::COUNT],
    garbage_args: AtomicU64,
    prog_unavail: AtomicU64,
    prog_mismatch: AtomicU64,
    proc_unavail: AtomicU64,
    denied: AtomicU64,
    discarded: AtomicU64,
}

/// A copy of [`Stats`] at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Indexed by NFSv3 procedure number (names in [`procs::NAMES`]).
    pub nfs: [u64; procs::COUNT],
    /// Indexed by MOUNT procedure number (names in [`mount3::procs::NAMES`]).
    pub mount: [u64; mount3::procs::COUNT],
    pub garbage_args: u64,
    pub prog_unavail: u64,
    pub prog_mismatch: u64,
    pub proc_unavail: u64,
    /// MSG_DENIED replies (RPC version or credentials).
    pub denied: u64,
    /// Records over the size or fragment limit.
    pub discarded: u64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Stats {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            nfs: std::array::from_fn(|i| load(&self.nfs[i])),
            mount: std::array::from_fn(|i| load(&self.mount[i])),
            garbage_args: load(&self.garbage_args),
            prog_unavail: load(&self.prog_unavail),
            prog_mismatch: load(&self.prog_mismatch),
            proc_unavail: load(&self.proc_unavail),
            denied: load(&self.denied),
            discarded: load(&self.discarded),
        }
    }

    fn count_error(&self, e: &CallError) {
        match e {
            CallError::RpcMismatch { .. } | CallError::Auth { .. } => bump(&self.denied),
            CallError::Garbage { .. } => bump(&self.garbage_args),
            CallError::NoXid | CallError::NotACall { .. } => {}
        }
    }

    fn garbage(&self, xid: u32) -> Action {
        bump(&self.garbage_args);
        Action::Reply(rpc::accepted_error(xid, AcceptStat::GarbageArgs))
    }
}

/// Handles one frame from the deframer.
pub fn handle_frame(frame: &Frame, fs: &dyn Filesystem, stats: &Stats) -> Action {
    match frame {
        Frame::Record(rec) => handle_call(rec, fs, stats),
        Frame::Discarded { head, .. } => handle_discarded(head, stats),
    }
}

/// Where a call goes once its program, version and procedure are known good.
enum Route {
    Nfs(u32),
    Mount(u32),
}

/// Program/version/procedure checks common to whole and discarded records.
fn route(call: &Call<'_>, stats: &Stats) -> Result<Route, Action> {
    let (low_high, count) = match call.prog {
        nfs3::PROGRAM => (nfs3::VERSION, procs::COUNT),
        mount3::PROGRAM => (mount3::VERSION, mount3::procs::COUNT),
        _ => {
            bump(&stats.prog_unavail);
            return Err(Action::Reply(rpc::accepted_error(
                call.xid,
                AcceptStat::ProgUnavail,
            )));
        }
    };
    if call.vers != low_high {
        bump(&stats.prog_mismatch);
        return Err(Action::Reply(rpc::prog_mismatch(
            call.xid, low_high, low_high,
        )));
    }
    if call.proc_num as usize >= count {
        bump(&stats.proc_unavail);
        return Err(Action::Reply(rpc::accepted_error(
            call.xid,
            AcceptStat::ProcUnavail,
        )));
    }
    let p = call.proc_num as usize;
    if call.prog == nfs3::PROGRAM {
        bump(&stats.nfs[p]);
        Ok(Route::Nfs(call.proc_num))
    } else {
        bump(&stats.mount[p]);
        Ok(Route::Mount(call.proc_num))
    }
}

fn decode<'a>(record: &'a [u8], stats: &Stats) -> Result<Call<'a>, Action> {
    rpc::decode_call(record).map_err(|e| {
        stats.count_error(&e);
        match e {
            CallError::NoXid => Action::Close,
            e => e.reply().map_or(Action::Ignore, Action::Reply),
        }
    })
}

/// Handles one whole record.
pub fn handle_call(record: &[u8], fs: &dyn Filesystem, stats: &Stats) -> Action {
    let call = match decode(record, stats) {
        Ok(c) => c,
        Err(a) => return a,
    };
    let result = match route(&call, stats) {
        Err(a) => return a,
        Ok(Route::Nfs(p)) => nfs_proc(p, &call, fs),
        Ok(Route::Mount(p)) => mount_proc(p, &call, fs),
    };
    result.unwrap_or_else(|_| stats.garbage(call.xid))
}

/// Answers a record too large to keep from its head: a write procedure gets ROFS (a confused
/// client's 1 MiB WRITE), anything else GARBAGE_ARGS.
pub fn handle_discarded(head: &[u8], stats: &Stats) -> Action {
    bump(&stats.discarded);
    let call = match decode(head, stats) {
        Ok(c) => c,
        Err(a) => return a,
    };
    match route(&call, stats) {
        Err(a) => a,
        Ok(Route::Nfs(p)) if nfs3::is_write_proc(p) => {
            let mut w = rpc::success(call.xid);
            nfs3::rofs_result(&mut w, p);
            Action::Reply(w.into_inner())
        }
        Ok(_) => stats.garbage(call.xid),
    }
}

fn mount_proc(p: u32, call: &Call<'_>, fs: &dyn Filesystem) -> Result<Action, XdrError> {
    let mut r = Reader::new(call.args);
    let mut w = rpc::success(call.xid);
    match p {
        mount3::procs::MNT => {
            let res = match mount3::decode_dirpath(&mut r)? {
                Ok(path) => fs.mount(path),
                Err(e) => Err(e),
            };
            mount3::mnt_result(&mut w, res.as_ref().map_err(|e| *e));
        }
        mount3::procs::DUMP => mount3::dump_result(&mut w),
        mount3::procs::UMNT => {
            let _too_long_is_fine = mount3::decode_dirpath(&mut r)?;
        }
        mount3::procs::EXPORT => mount3::export_result(&mut w, &fs.export_paths()),
        // NULL, UMNTALL: void.
        _ => {}
    }
    Ok(Action::Reply(w.into_inner()))
}

/// ACCESS bits a local `generic_permission` would grant, minus every write bit (design §1.5).
/// Root is not squashed: it reads everything, looks up every directory and executes files that
/// have at least one execute bit.
pub fn access_granted(a: &Attributes, cred: &Credentials) -> u32 {
    let is_dir = a.ftype == FileType::Directory;
    let (r, x) = if cred.uid == 0 {
        (true, is_dir || a.mode & 0o111 != 0)
    } else {
        let class = if cred.uid == a.uid {
            (a.mode >> 6) & 7
        } else if cred.gid == a.gid || cred.gids().contains(&a.gid) {
            (a.mode >> 3) & 7
        } else {
            a.mode & 7
        };
        (class & 4 != 0, class & 1 != 0)
    };
    let mut granted = 0;
    if r {
        granted |= access::READ;
    }
    if x {
        granted |= if is_dir {
            access::LOOKUP
        } else {
            access::EXECUTE
        };
    }
    granted
}

/// READ/READLINK permission, knfsd's rule: read or execute permission (a 0711 binary must be
/// readable to be executed over NFS), and the owner may always read (a file opened before a
/// chmod keeps working).
fn may_read(a: &Attributes, cred: &Credentials) -> bool {
    cred.uid == a.uid || access_granted(a, cred) & (access::READ | access::EXECUTE) != 0
}

fn handle(o: Option<FileHandle>) -> Result<FileHandle, NfsError> {
    o.ok_or(NfsError::BadHandle)
}

/// Writes an error status followed by a post_op_attr (the resfail layout of most procedures).
fn fail_with_attr(w: &mut Writer, e: NfsError, a: Option<&Attributes>) {
    nfs3::status(w, e);
    nfs3::post_op_attr(w, a);
}

fn nfs_proc(p: u32, call: &Call<'_>, fs: &dyn Filesystem) -> Result<Action, XdrError> {
    let mut r = Reader::new(call.args);
    let mut w = rpc::success(call.xid);
    match p {
        procs::NULL => {}
        procs::GETATTR => match handle(nfs3::decode_fh(&mut r)?).and_then(|fh| fs.getattr(&fh)) {
            Ok(a) => {
                w.u32(nfs3::NFS3_OK);
                nfs3::fattr3(&mut w, &a);
            }
            Err(e) => nfs3::status(&mut w, e),
        },
        procs::LOOKUP => {
            let (dir, name) = nfs3::decode_diropargs(&mut r)?;
            lookup(&mut w, dir, name, &call.cred, fs);
        }
        procs::ACCESS => {
            let fh = nfs3::decode_fh(&mut r)?;
            let requested = r.u32()?;
            match handle(fh).and_then(|fh| fs.getattr(&fh)) {
                Ok(a) => {
                    w.u32(nfs3::NFS3_OK);
                    nfs3::post_op_attr(&mut w, Some(&a));
                    w.u32(access_granted(&a, &call.cred) & requested);
                }
                Err(e) => fail_with_attr(&mut w, e, None),
            }
        }
        procs::READLINK => {
            let fh = nfs3::decode_fh(&mut r)?;
            readlink(&mut w, fh, &call.cred, fs);
        }
        procs::READ => {
            let args = nfs3::decode_read(&mut r)?;
            let checked = check_read(args.fh, &call.cred, fs);
            match checked {
                Ok(fh) => {
                    return Ok(Action::Read(ReadRequest {
                        xid: call.xid,
                        fh,
                        offset: args.offset,
                        count: args.count.min(MAX_READ),
                    }))
                }
                Err((e, a)) => fail_with_attr(&mut w, e, a.as_ref()),
            }
        }
        procs::READDIR => {
            let args = nfs3::decode_readdir(&mut r)?;
            readdir(&mut w, &args, false, &call.cred, fs);
        }
        procs::READDIRPLUS => {
            let args = nfs3::decode_readdirplus(&mut r)?;
            readdir(&mut w, &args, true, &call.cred, fs);
        }
        procs::FSSTAT => {
            let fh = nfs3::decode_fh(&mut r)?;
            match handle(fh).and_then(|fh| fs.fsstat(&fh)) {
                Ok((a, s)) => {
                    w.u32(nfs3::NFS3_OK);
                    nfs3::fsstat_resok(&mut w, &a, &s);
                }
                Err(e) => {
                    let a = handle(fh).ok().and_then(|fh| fs.getattr(&fh).ok());
                    fail_with_attr(&mut w, e, a.as_ref());
                }
            }
        }
        procs::FSINFO | procs::PATHCONF => {
            let fh = nfs3::decode_fh(&mut r)?;
            match handle(fh).and_then(|fh| fs.getattr(&fh)) {
                Ok(a) => {
                    w.u32(nfs3::NFS3_OK);
                    if p == procs::FSINFO {
                        nfs3::fsinfo_resok(&mut w, &a);
                    } else {
                        nfs3::pathconf_resok(&mut w, &a);
                    }
                }
                Err(e) => fail_with_attr(&mut w, e, None),
            }
        }
        // Every other procedure in 0..=21 is a write procedure. Their arguments are not even
        // decoded: the answer does not depend on them.
        _ => {
            if nfs3::rofs_result(&mut w, p).is_none() {
                // Unreachable by `route`; answer like it would rather than panic.
                return Ok(Action::Reply(rpc::accepted_error(
                    call.xid,
                    AcceptStat::ProcUnavail,
                )));
            }
        }
    }
    Ok(Action::Reply(w.into_inner()))
}

/// The checks READ makes before the (possibly blocking) read: a regular file the caller may
/// read. Errors carry the attributes to return beside them.
fn check_read(
    fh: Option<FileHandle>,
    cred: &Credentials,
    fs: &dyn Filesystem,
) -> Result<FileHandle, (NfsError, Option<Attributes>)> {
    let fh = handle(fh).map_err(|e| (e, None))?;
    let a = fs.getattr(&fh).map_err(|e| (e, None))?;
    if a.ftype != FileType::Regular {
        Err((NfsError::Inval, Some(a)))
    } else if !may_read(&a, cred) {
        Err((NfsError::Acces, Some(a)))
    } else {
        Ok(fh)
    }
}

fn lookup(
    w: &mut Writer,
    dir: Option<FileHandle>,
    name: &[u8],
    cred: &Credentials,
    fs: &dyn Filesystem,
) {
    let dir = match handle(dir) {
        Ok(d) => d,
        Err(e) => return fail_with_attr(w, e, None),
    };
    let dattr = match fs.getattr(&dir) {
        Ok(a) => a,
        Err(e) => return fail_with_attr(w, e, None),
    };
    let pre = if dattr.ftype != FileType::Directory {
        Err(NfsError::NotDir)
    } else if access_granted(&dattr, cred) & access::LOOKUP == 0 {
        Err(NfsError::Acces)
    } else if name.len() > nfs3::NAME_MAX {
        Err(NfsError::NameTooLong)
    } else {
        Ok(())
    };
    match pre.and_then(|()| fs.lookup(&dir, name)) {
        Ok((fh, a)) => {
            w.u32(nfs3::NFS3_OK);
            nfs3::nfs_fh3(w, &fh);
            nfs3::post_op_attr(w, Some(&a));
            nfs3::post_op_attr(w, Some(&dattr));
        }
        Err(e) => fail_with_attr(w, e, Some(&dattr)),
    }
}

fn readlink(w: &mut Writer, fh: Option<FileHandle>, cred: &Credentials, fs: &dyn Filesystem) {
    let fh = match handle(fh) {
        Ok(f) => f,
        Err(e) => return fail_with_attr(w, e, None),
    };
    let a = match fs.getattr(&fh) {
        Ok(a) => a,
        Err(e) => return fail_with_attr(w, e, None),
    };
    let target = if a.ftype != FileType::Symlink {
        Err(NfsError::Inval)
    } else if !may_read(&a, cred) {
        Err(NfsError::Acces)
    } else {
        fs.readlink(&fh)
    };
    match target {
        Ok(t) => {
            w.u32(nfs3::NFS3_OK);
            nfs3::post_op_attr(w, Some(&a));
            w.string(&t);
        }
        Err(e) => fail_with_attr(w, e, Some(&a)),
    }
}

/// READDIR and READDIRPLUS, with the byte accounting of design §1.4: the reply (status
/// included) never exceeds `maxcount` (clamped to [`MAX_READDIR_REPLY`]); for READDIRPLUS the
/// name/fileid/cookie bytes stay within `dircount`, except that the first entry is always
/// allowed by `dircount` (it is a hint; `maxcount` alone decides TOOSMALL). All sums are u64
/// and start from the fixed part, so a tiny or zero limit cannot underflow anything.
fn readdir(
    w: &mut Writer,
    args: &nfs3::ReaddirArgs,
    plus: bool,
    cred: &Credentials,
    fs: &dyn Filesystem,
) {
    let dir = match handle(args.fh) {
        Ok(d) => d,
        Err(e) => return fail_with_attr(w, e, None),
    };
    let dattr = match fs.getattr(&dir) {
        Ok(a) => a,
        Err(e) => return fail_with_attr(w, e, None),
    };
    if dattr.ftype != FileType::Directory {
        return fail_with_attr(w, NfsError::NotDir, Some(&dattr));
    }
    if access_granted(&dattr, cred) & access::READ == 0 {
        return fail_with_attr(w, NfsError::Acces, Some(&dattr));
    }
    let maxcount = u64::from(args.maxcount).min(MAX_READDIR_REPLY);
    let dircount = u64::from(args.dircount);
    let status_at = w.len();
    w.u32(nfs3::NFS3_OK);
    nfs3::post_op_attr(w, Some(&dattr));
    w.zeros(8); // cookieverf: always zero, cookies never go stale
    let entry_len = |e: &DirEntry| {
        if plus {
            nfs3::entryplus3_len(e.name.len())
        } else {
            nfs3::entry3_len(e.name.len())
        }
    };
    let smallest = if plus {
        nfs3::entryplus3_len(1)
    } else {
        nfs3::entry3_len(1)
    };
    let mut used = nfs3::READDIR_FIXED_LEN;
    let mut dir_used = 0u64;
    let mut entries = 0usize;
    let mut after = args.cookie;
    let mut eof = false;
    'fill: while used < maxcount {
        let room = (maxcount - used) / smallest + 1;
        let want = usize::try_from(room)
            .unwrap_or(READDIR_BATCH)
            .min(READDIR_BATCH);
        let (batch, exhausted) = match fs.readdir(&dir, after, want) {
            Ok(b) => b,
            Err(e) => {
                w.buf_mut().truncate(status_at);
                return fail_with_attr(w, e, Some(&dattr));
            }
        };
        for e in &batch {
            let len = entry_len(e);
            let dlen = nfs3::entry_dircount_len(e.name.len());
            let over_max = used.saturating_add(len) > maxcount;
            let over_dir = plus && entries > 0 && dir_used.saturating_add(dlen) > dircount;
            if over_max || over_dir {
                break 'fill;
            }
            if plus {
                nfs3::entryplus3(w, &e.name, e.cookie, &e.handle, &e.attr);
            } else {
                nfs3::entry3(w, e.attr.fileid, &e.name, e.cookie);
            }
            used += len;
            dir_used = dir_used.saturating_add(dlen);
            entries += 1;
            after = e.cookie;
        }
        if exhausted {
            eof = true;
            break;
        }
        if batch.is_empty() {
            // A file side that says "more" but returns nothing: stop rather than spin.
            break;
        }
    }
    if entries == 0 && !eof {
        w.buf_mut().truncate(status_at);
        return fail_with_attr(w, NfsError::TooSmall, Some(&dattr));
    }
    w.bool(false); // end of list
    w.bool(eof);
}

/// Performs a READ checked by [`handle_call`] and encodes its reply: header first with room
/// for the attributes, then the file side reads straight into the reply buffer. May block.
pub fn read_reply(req: &ReadRequest, fs: &dyn Filesystem) -> Vec<u8> {
    // pread takes an off_t: offsets past i64::MAX are past any end of file.
    let count = if req.offset > i64::MAX as u64 {
        0
    } else {
        req.count.min(MAX_READ) as usize
    };
    let mut w = Writer::with_capacity(READ_HEADER_LEN + count + 4);
    rpc::write_accepted(&mut w, req.xid, AcceptStat::Success);
    w.zeros(READ_HEADER_LEN - rpc::ACCEPTED_HEADER_LEN);
    w.zeros(count);
    let result = if count == 0 && req.offset > i64::MAX as u64 {
        fs.getattr(&req.fh).map(|a| (0, true, a))
    } else {
        fs.read(&req.fh, req.offset, &mut w.buf_mut()[READ_HEADER_LEN..])
    };
    match result {
        Ok((n, eof, a)) => {
            let n = n.min(count);
            // RFC 1813: eof also when this read reached the end (the file side may only say so
            // on the next call).
            let eof = eof || req.offset.saturating_add(n as u64) >= a.size;
            w.buf_mut().truncate(READ_HEADER_LEN + n);
            w.zeros(pad(n));
            let mut mid = Writer::with_capacity(READ_HEADER_LEN - rpc::ACCEPTED_HEADER_LEN);
            mid.u32(nfs3::NFS3_OK);
            nfs3::post_op_attr(&mut mid, Some(&a));
            mid.u32(n as u32);
            mid.bool(eof);
            mid.u32(n as u32);
            if let Some(slot) = w
                .buf_mut()
                .get_mut(rpc::ACCEPTED_HEADER_LEN..READ_HEADER_LEN)
            {
                slot.copy_from_slice(mid.as_slice());
            }
            w.into_inner()
        }
        Err(e) => {
            let mut w = rpc::success(req.xid);
            fail_with_attr(&mut w, e, fs.getattr(&req.fh).ok().as_ref());
            w.into_inner()
        }
    }
}

/// Runs any action to its reply synchronously (tests and the fuzz target).
pub fn reply_now(action: Action, fs: &dyn Filesystem) -> Option<Vec<u8>> {
    match action {
        Action::Reply(r) => Some(r),
        Action::Read(req) => Some(read_reply(&req, fs)),
        Action::Ignore | Action::Close => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::NfsTime;
    use crate::memfs::{big_byte, MemFs, BIG_SIZE, MANY_FILES};
    use crate::rpc::ReplyHeader;
    use std::collections::HashSet;

    fn root() -> Credentials {
        Credentials::new(0, 0, &[])
    }

    fn call(prog: u32, vers: u32, p: u32, cred: &Credentials, args: &[u8]) -> Vec<u8> {
        let mut w = rpc::encode_call(0x1234, prog, vers, p, Some(cred));
        w.fixed_opaque(args);
        w.into_inner()
    }

    /// Runs a call; returns the accept_stat and the result bytes.
    fn run_as(fs: &MemFs, p: u32, cred: &Credentials, args: &[u8]) -> (u32, Vec<u8>) {
        let rec = call(nfs3::PROGRAM, 3, p, cred, args);
        let reply = reply_now(handle_call(&rec, fs, &Stats::new()), fs).unwrap();
        assert!(reply.len() <= MAX_REPLY_LEN);
        match rpc::decode_reply(&reply).unwrap() {
            (
                ReplyHeader::Accepted {
                    xid: 0x1234, stat, ..
                },
                rest,
            ) => (stat, rest.to_vec()),
            h => panic!("unexpected {h:?}"),
        }
    }

    fn run(fs: &MemFs, p: u32, args: &[u8]) -> Vec<u8> {
        let (stat, body) = run_as(fs, p, &root(), args);
        assert_eq!(stat, 0);
        body
    }

    fn fh_arg(fh: &FileHandle) -> Writer {
        let mut w = Writer::new();
        nfs3::nfs_fh3(&mut w, fh);
        w
    }

    fn attr(ftype: FileType, mode: u32, uid: u32, gid: u32) -> Attributes {
        Attributes {
            ftype,
            mode,
            nlink: 1,
            uid,
            gid,
            size: 0,
            used: 0,
            rdev: (0, 0),
            fsid: 0,
            fileid: 1,
            atime: NfsTime::default(),
            mtime: NfsTime::default(),
            ctime: NfsTime::default(),
        }
    }

    #[test]
    fn access_truth_table() {
        use access::*;
        const F: FileType = FileType::Regular;
        const D: FileType = FileType::Directory;
        let root = Credentials::new(0, 0, &[]);
        let owner = Credentials::new(1000, 1000, &[]);
        let group = Credentials::new(2000, 2000, &[7, 50]);
        let other = Credentials::new(3000, 3000, &[7]);
        let nobody = Credentials::nobody();
        let all = READ | LOOKUP | MODIFY | EXTEND | DELETE | EXECUTE;
        // (attributes, [root, owner, group (via gids), other, nobody])
        let table = [
            (
                attr(F, 0o4755, 1000, 50),
                [
                    READ | EXECUTE,
                    READ | EXECUTE,
                    READ | EXECUTE,
                    READ | EXECUTE,
                    READ | EXECUTE,
                ],
            ),
            (
                attr(F, 0o711, 1000, 50),
                [READ | EXECUTE, READ | EXECUTE, EXECUTE, EXECUTE, EXECUTE],
            ),
            (attr(F, 0o640, 1000, 50), [READ, READ, READ, 0, 0]),
            (attr(F, 0o000, 1000, 50), [READ, 0, 0, 0, 0]),
            (
                attr(F, 0o070, 1000, 50),
                [READ | EXECUTE, 0, READ | EXECUTE, 0, 0],
            ),
            (
                attr(D, 0o700, 1000, 50),
                [READ | LOOKUP, READ | LOOKUP, 0, 0, 0],
            ),
            (
                attr(D, 0o711, 1000, 50),
                [READ | LOOKUP, READ | LOOKUP, LOOKUP, LOOKUP, LOOKUP],
            ),
            (attr(D, 0o000, 1000, 50), [READ | LOOKUP, 0, 0, 0, 0]),
            (attr(D, 0o755, 1000, 50), [READ | LOOKUP; 5]),
        ];
        for (a, expect) in table {
            for (cred, want) in [&root, &owner, &group, &other, &nobody].iter().zip(expect) {
                assert_eq!(
                    access_granted(&a, cred) & all,
                    want,
                    "mode {:o} {:?} uid {}",
                    a.mode,
                    a.ftype,
                    cred.uid
                );
            }
        }
        // Through the wire: only requested bits, never a write bit.
        let fs = MemFs::new();
        let mut args = fh_arg(&fs.handle_of("bin/prog").unwrap());
        args.u32(all);
        let body = run_as(&fs, procs::ACCESS, &other, args.as_slice()).1;
        assert_eq!(&body[..8], [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&body[92..], [0, 0, 0, EXECUTE as u8]);
        let mut args = fh_arg(&fs.handle_of("bin/prog").unwrap());
        args.u32(READ);
        let body = run_as(&fs, procs::ACCESS, &other, args.as_slice()).1;
        assert_eq!(&body[92..], [0, 0, 0, 0]);
    }

    #[test]
    fn read3resok_padding_golden() {
        let fs = MemFs::new();
        let fh = fs.handle_of("etc/hostname").unwrap(); // "node1\n"
        let a = fs.getattr(&fh).unwrap();
        for (count, tail) in [
            (0u32, &[0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]),
            (1, &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, b'n', 0, 0, 0][..]),
            (
                3,
                &[0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 3, b'n', b'o', b'd', 0][..],
            ),
            (
                4,
                &[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 4, b'n', b'o', b'd', b'e'][..],
            ),
            (
                5,
                &[
                    0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 5, b'n', b'o', b'd', b'e', b'1', 0, 0, 0,
                ][..],
            ),
            (
                6,
                &[
                    0, 0, 0, 6, 0, 0, 0, 1, 0, 0, 0, 6, b'n', b'o', b'd', b'e', b'1', b'\n', 0, 0,
                ][..],
            ),
        ] {
            let mut args = fh_arg(&fh);
            args.u64(0);
            args.u32(count);
            let body = run(&fs, procs::READ, args.as_slice());
            let mut head = Writer::new();
            head.u32(0);
            nfs3::post_op_attr(&mut head, Some(&a));
            assert_eq!(&body[..92], head.as_slice());
            assert_eq!(&body[92..], tail, "count {count}");
        }
    }

    #[test]
    fn read_edges() {
        let fs = MemFs::new();
        let big = fs.handle_of("big").unwrap();
        let read = |fh: &FileHandle, offset: u64, count: u32, cred: &Credentials| {
            let mut args = fh_arg(fh);
            args.u64(offset);
            args.u32(count);
            run_as(&fs, procs::READ, cred, args.as_slice()).1
        };
        // Past EOF, at EOF, and beyond i64::MAX: count 0, eof.
        for off in [BIG_SIZE, BIG_SIZE + 1, u64::MAX, i64::MAX as u64 + 1] {
            let b = read(&big, off, 100, &root());
            assert_eq!(
                &b[92..],
                [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0],
                "offset {off}"
            );
        }
        // Count capped at 1 MiB; data right across the 4 GiB boundary.
        let off = (4 << 30) - 3;
        let b = read(&big, off, u32::MAX, &root());
        assert_eq!(&b[92..96], [0, 0x10, 0, 0]);
        assert_eq!(b.len(), 92 + 12 + (1 << 20));
        for i in 0..8u64 {
            assert_eq!(b[104 + i as usize], big_byte(off + i));
        }
        // Last bytes: eof set although count was not reduced to zero.
        let b = read(&big, BIG_SIZE - 2, 2, &root());
        assert_eq!(&b[92..104], [0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2]);
        // Non-regular: INVAL with attributes.
        let b = read(&fs.handle_of("dev/null").unwrap(), 0, 1, &root());
        assert_eq!(&b[..8], [0, 0, 0, 22, 0, 0, 0, 1]);
        assert_eq!(b.len(), 92);
        // Execute-only binary is readable by others; a 0600 file of uid 1000 is not.
        let other = Credentials::new(3000, 3000, &[]);
        let b = read(&fs.handle_of("bin/prog").unwrap(), 0, 4, &other);
        assert_eq!(&b[..4], [0, 0, 0, 0]);
        let b = read(&fs.handle_of("private/secret").unwrap(), 0, 4, &other);
        assert_eq!(&b[..4], [0, 0, 0, 13]);
        let owner = Credentials::new(1000, 1000, &[]);
        let b = read(&fs.handle_of("private/secret").unwrap(), 0, 4, &owner);
        assert_eq!(
            &b[92..],
            [0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 4, b's', b'3', b'c', b'r']
        );
    }

    /// Pages through a directory with READDIR(PLUS); checks sizes and returns the names.
    fn walk(
        fs: &MemFs,
        dir: &FileHandle,
        plus: bool,
        dircount: u32,
        maxcount: u32,
    ) -> Result<Vec<Vec<u8>>, u32> {
        let mut cookie = 0u64;
        let mut names = Vec::new();
        for _round in 0..10_000 {
            let mut args = fh_arg(dir);
            args.u64(cookie);
            args.u64(0);
            if plus {
                args.u32(dircount);
            }
            args.u32(maxcount);
            let p = if plus {
                procs::READDIRPLUS
            } else {
                procs::READDIR
            };
            let body = run(fs, p, args.as_slice());
            let mut r = Reader::new(&body);
            let status = r.u32().unwrap();
            if status == 0 {
                let len = body.len() as u64;
                assert!(
                    len <= u64::from(maxcount),
                    "reply {len} > maxcount {maxcount}"
                );
            }
            assert!(r.bool().unwrap());
            r.fixed_opaque(84).unwrap();
            if status != 0 {
                assert!(r.is_empty());
                return Err(status);
            }
            assert_eq!(r.fixed_opaque(8).unwrap(), [0; 8]);
            let mut got = 0;
            while r.bool().unwrap() {
                let fileid = r.u64().unwrap();
                let name = r.string(255).unwrap().to_vec();
                cookie = r.u64().unwrap();
                if plus {
                    assert!(r.bool().unwrap());
                    let a = r.fixed_opaque(84).unwrap();
                    assert_eq!(u64::from_be_bytes(a[52..60].try_into().unwrap()), fileid);
                    assert!(r.bool().unwrap());
                    assert_eq!(r.opaque(64).unwrap().len(), 36);
                }
                names.push(name);
                got += 1;
            }
            let eof = r.bool().unwrap();
            assert!(r.is_empty());
            if eof {
                return Ok(names);
            }
            assert!(got > 0, "no progress without eof");
        }
        panic!("listing never ended");
    }

    #[test]
    fn readdir_paging() {
        let fs = MemFs::new();
        let many = fs.handle_of("many").unwrap();
        let expect = MANY_FILES + 1 + 2;
        for plus in [true, false] {
            for maxcount in [0u32, 100, 500, 1024, 4096, 65536, u32::MAX] {
                for dircount in [0, maxcount / 8, maxcount] {
                    match walk(&fs, &many, plus, dircount, maxcount) {
                        Ok(names) => {
                            let set: HashSet<_> = names.iter().collect();
                            assert_eq!(
                                names.len(),
                                expect,
                                "plus {plus} max {maxcount} dir {dircount}"
                            );
                            assert_eq!(set.len(), names.len(), "duplicates");
                            assert_eq!(&names[..2], [b".".to_vec(), b"..".to_vec()]);
                        }
                        // Not even "." fits. (500 does hold one entryplus3 of "." but not the
                        // 255-byte name: that one answers TOOSMALL mid-listing.)
                        Err(s) => {
                            assert_eq!(s, NfsError::TooSmall as u32);
                            assert!(maxcount <= 500, "plus {plus} max {maxcount}");
                        }
                    }
                    if !plus {
                        break; // dircount means nothing to READDIR
                    }
                }
            }
        }
        // A listing that fits whole in one reply says eof; an empty resume past the end too.
        let etc = fs.handle_of("etc").unwrap();
        assert_eq!(walk(&fs, &etc, true, 8192, 8192).unwrap().len(), 4);
        let mut args = fh_arg(&etc);
        args.u64(u64::MAX);
        args.u64(0);
        args.u32(4096);
        args.u32(4096);
        let body = run(&fs, procs::READDIRPLUS, args.as_slice());
        assert_eq!(&body[body.len() - 8..], [0, 0, 0, 0, 0, 0, 0, 1]);
        // READDIR of a file: NOTDIR with its attributes.
        let mut args = fh_arg(&fs.handle_of("big").unwrap());
        args.u64(0);
        args.u64(0);
        args.u32(4096);
        let body = run(&fs, procs::READDIR, args.as_slice());
        assert_eq!(&body[..8], [0, 0, 0, 20, 0, 0, 0, 1]);
    }

    /// A directory whose listing changes between READDIRPLUS pages (design §6.1): entries are
    /// added and removed after every call. Paging by cookie must still list every entry that
    /// existed throughout exactly once, and nothing twice.
    struct Shifting {
        entries: std::sync::Mutex<std::collections::BTreeMap<u64, Vec<u8>>>,
        rng: std::sync::Mutex<u64>,
    }

    impl Shifting {
        fn dir() -> FileHandle {
            FileHandle([1; 36])
        }

        fn next(&self) -> u64 {
            let mut x = self.rng.lock().unwrap();
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *x
        }
    }

    impl Filesystem for Shifting {
        fn mount(&self, _: &[u8]) -> Result<FileHandle, crate::fs::MountError> {
            Ok(Self::dir())
        }
        fn export_paths(&self) -> Vec<Vec<u8>> {
            Vec::new()
        }
        fn getattr(&self, _: &FileHandle) -> Result<Attributes, NfsError> {
            Ok(attr(FileType::Directory, 0o755, 0, 0))
        }
        fn lookup(&self, _: &FileHandle, _: &[u8]) -> Result<(FileHandle, Attributes), NfsError> {
            Err(NfsError::NoEnt)
        }
        fn readlink(&self, _: &FileHandle) -> Result<Vec<u8>, NfsError> {
            Err(NfsError::Inval)
        }
        fn readdir(
            &self,
            _: &FileHandle,
            after: u64,
            max: usize,
        ) -> Result<(Vec<DirEntry>, bool), NfsError> {
            let map = self.entries.lock().unwrap();
            let page: Vec<DirEntry> = map
                .range(after.saturating_add(1)..)
                .take(max)
                .map(|(c, n)| DirEntry {
                    cookie: *c,
                    name: n.clone(),
                    handle: FileHandle([2; 36]),
                    attr: attr(FileType::Regular, 0o644, 0, 0),
                })
                .collect();
            let done = page
                .last()
                .is_none_or(|l| map.range(l.cookie + 1..).next().is_none());
            drop(map);
            // Churn: one new name, one removed "temp-" name.
            let c = self.next() >> 1 | 3;
            let mut map = self.entries.lock().unwrap();
            map.insert(c, format!("temp-{c}").into_bytes());
            let victim = map
                .iter()
                .find(|(_, n)| n.starts_with(b"temp-"))
                .map(|(k, _)| *k);
            if let (Some(v), true) = (victim, self.next() & 1 == 0) {
                map.remove(&v);
            }
            Ok((page, done))
        }
        fn read(
            &self,
            _: &FileHandle,
            _: u64,
            _: &mut [u8],
        ) -> Result<(usize, bool, Attributes), NfsError> {
            Err(NfsError::Inval)
        }
        fn fsstat(&self, _: &FileHandle) -> Result<(Attributes, crate::fs::FsStat), NfsError> {
            Err(NfsError::NotSupp)
        }
    }

    #[test]
    fn readdirplus_paging_under_changes() {
        let mut fixed = std::collections::BTreeMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..400 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            fixed.insert(x >> 1 | 3, format!("stable-{i}").into_bytes());
        }
        for maxcount in [1024u32, 4096, 65536] {
            let fs = Shifting {
                entries: std::sync::Mutex::new(fixed.clone()),
                rng: std::sync::Mutex::new(u64::from(maxcount) | 1),
            };
            let mut cookie = 0;
            let mut seen = Vec::new();
            loop {
                let mut args = fh_arg(&Shifting::dir());
                args.u64(cookie);
                args.u64(0);
                args.u32(maxcount);
                args.u32(maxcount);
                let rec = call(
                    nfs3::PROGRAM,
                    3,
                    procs::READDIRPLUS,
                    &root(),
                    args.as_slice(),
                );
                let Action::Reply(reply) = handle_call(&rec, &fs, &Stats::new()) else {
                    panic!()
                };
                let body = rpc::decode_reply(&reply).unwrap().1;
                assert!(body.len() <= maxcount as usize);
                let mut r = Reader::new(body);
                assert_eq!(r.u32().unwrap(), 0);
                assert!(r.bool().unwrap());
                r.fixed_opaque(84 + 8).unwrap();
                while r.bool().unwrap() {
                    r.u64().unwrap();
                    seen.push(r.string(255).unwrap().to_vec());
                    cookie = r.u64().unwrap();
                    r.fixed_opaque(88 + 4 + 40).unwrap();
                }
                if r.bool().unwrap() {
                    break;
                }
            }
            let set: HashSet<_> = seen.iter().collect();
            assert_eq!(set.len(), seen.len(), "duplicates at maxcount {maxcount}");
            for name in fixed.values() {
                assert!(set.contains(name), "lost {name:?} at maxcount {maxcount}");
            }
        }
    }

    #[test]
    fn lookup_and_friends() {
        let fs = MemFs::new();
        let root_fh = fs.mount(crate::memfs::EXPORT).unwrap();
        let mut args = fh_arg(&root_fh);
        args.string(b"etc");
        let body = run(&fs, procs::LOOKUP, args.as_slice());
        assert_eq!(&body[..8], [0, 0, 0, 0, 0, 0, 0, 36]);
        assert_eq!(&body[8..44], fs.handle_of("etc").unwrap().as_bytes());
        assert_eq!(body.len(), 4 + 40 + 88 + 88);
        for (name, status) in [
            (&b"nope"[..], 2u8),
            (&[b'x'; 256][..], 63),
            (b"", 2),
            (b"a/b", 2),
        ] {
            let mut args = fh_arg(&root_fh);
            args.string(name);
            let body = run(&fs, procs::LOOKUP, args.as_slice());
            assert_eq!(
                &body[..8],
                [0, 0, 0, status, 0, 0, 0, 1],
                "dir attrs on failure"
            );
            assert_eq!(body.len(), 92);
        }
        // Other users cannot look up in a 0700 directory.
        let mut args = fh_arg(&fs.handle_of("private").unwrap());
        args.string(b"secret");
        let body = run_as(
            &fs,
            procs::LOOKUP,
            &Credentials::new(5, 5, &[]),
            args.as_slice(),
        )
        .1;
        assert_eq!(&body[..4], [0, 0, 0, 13]);
        // READLINK.
        let body = run(
            &fs,
            procs::READLINK,
            fh_arg(&fs.handle_of("link").unwrap()).as_slice(),
        );
        assert_eq!(&body[92..], b"\0\0\0\x0cetc/hostname");
        let body = run(&fs, procs::READLINK, fh_arg(&root_fh).as_slice());
        assert_eq!(&body[..8], [0, 0, 0, 22, 0, 0, 0, 1]);
        // Bad and stale handles: status, no attributes.
        let mut bad = root_fh;
        bad.0[0] = 7;
        let body = run(&fs, procs::GETATTR, fh_arg(&bad).as_slice());
        assert_eq!(body, (NfsError::BadHandle as u32).to_be_bytes());
        let mut stale = root_fh;
        stale.0[12] = 0x7f;
        for p in [procs::FSINFO, procs::PATHCONF, procs::FSSTAT, procs::ACCESS] {
            let mut args = fh_arg(&stale);
            args.u32(1);
            let body = run(&fs, p, args.as_slice());
            assert_eq!(
                body,
                [0, 0, 0, 70, 0, 0, 0, 0],
                "proc {p}: status + post_op_attr"
            );
        }
        let mut w = Writer::new();
        w.opaque(&[1; 35]);
        assert_eq!(
            run(&fs, procs::GETATTR, w.as_slice()),
            [0x00, 0x00, 0x27, 0x11]
        );
        // FSSTAT, FSINFO sizes.
        assert_eq!(
            run(&fs, procs::FSSTAT, fh_arg(&root_fh).as_slice()).len(),
            4 + 88 + 48 + 4
        );
        assert_eq!(
            run(&fs, procs::FSINFO, fh_arg(&root_fh).as_slice()).len(),
            4 + 88 + 48
        );
        assert_eq!(
            run(&fs, procs::PATHCONF, fh_arg(&root_fh).as_slice()).len(),
            4 + 88 + 24
        );
        assert_eq!(run(&fs, procs::NULL, &[]).len(), 0);
    }

    #[test]
    fn write_procs_are_rofs() {
        let fs = MemFs::new();
        for p in 0..22 {
            if !nfs3::is_write_proc(p) {
                continue;
            }
            // Arguments are irrelevant, even absent ones.
            let body = run(&fs, p, &[]);
            assert_eq!(&body[..4], [0, 0, 0, 30]);
            let n = match p {
                procs::LINK => 3,
                procs::RENAME => 4,
                _ => 2,
            };
            assert_eq!(body.len(), 4 + 4 * n);
            assert!(body[4..].iter().all(|b| *b == 0));
        }
    }

    #[test]
    fn rpc_level_answers() {
        let fs = MemFs::new();
        let stats = Stats::new();
        let go = |rec: &[u8]| handle_call(rec, &fs, &stats);
        let header = |a: Action| match a {
            Action::Reply(r) => rpc::decode_reply(&r).unwrap().0,
            a => panic!("unexpected {a:?}"),
        };
        let accepted = |stat, mismatch| ReplyHeader::Accepted {
            xid: 0x1234,
            stat,
            mismatch,
        };
        for v in [2, 4] {
            assert_eq!(
                header(go(&call(nfs3::PROGRAM, v, 0, &root(), &[]))),
                accepted(2, Some((3, 3)))
            );
        }
        for v in [1, 2] {
            assert_eq!(
                header(go(&call(mount3::PROGRAM, v, 0, &root(), &[]))),
                accepted(2, Some((3, 3)))
            );
        }
        for prog in [100227, 100000, 100021, 0] {
            assert_eq!(
                header(go(&call(prog, 3, 0, &root(), &[]))),
                accepted(1, None)
            );
        }
        assert_eq!(
            header(go(&call(nfs3::PROGRAM, 3, 22, &root(), &[]))),
            accepted(3, None)
        );
        assert_eq!(
            header(go(&call(mount3::PROGRAM, 3, 6, &root(), &[]))),
            accepted(3, None)
        );
        // Truncated or oversized arguments: GARBAGE_ARGS.
        assert_eq!(
            header(go(&call(
                nfs3::PROGRAM,
                3,
                procs::GETATTR,
                &root(),
                &[0, 0, 0, 36, 1, 2]
            ))),
            accepted(4, None)
        );
        let mut w = Writer::new();
        w.opaque(&[1; 65]);
        assert_eq!(
            header(go(&call(
                nfs3::PROGRAM,
                3,
                procs::GETATTR,
                &root(),
                w.as_slice()
            ))),
            accepted(4, None)
        );
        assert_eq!(go(&[1, 2]), Action::Close);
        let mut reply = call(nfs3::PROGRAM, 3, 0, &root(), &[]);
        reply[7] = 1;
        assert_eq!(go(&reply), Action::Ignore);
        // Discarded records.
        let write = call(nfs3::PROGRAM, 3, procs::WRITE, &root(), &[0; 100]);
        match handle_discarded(&write, &stats) {
            Action::Reply(r) => {
                let (h, rest) = rpc::decode_reply(&r).unwrap();
                assert_eq!(h, accepted(0, None));
                assert_eq!(rest, [0, 0, 0, 30, 0, 0, 0, 0, 0, 0, 0, 0]);
            }
            a => panic!("{a:?}"),
        }
        let read = call(nfs3::PROGRAM, 3, procs::READ, &root(), &[0; 100]);
        assert_eq!(header(handle_discarded(&read, &stats)), accepted(4, None));
        assert_eq!(handle_discarded(&[], &stats), Action::Close);
        let s = stats.snapshot();
        assert_eq!(s.discarded, 3);
        assert_eq!(s.nfs[procs::WRITE as usize], 1);
        assert_eq!(s.prog_mismatch, 4);
        assert_eq!(s.prog_unavail, 4);
        assert_eq!(s.proc_unavail, 2);
        assert_eq!(s.garbage_args, 3);
    }

    #[test]
    fn mount_procs() {
        let fs = MemFs::new();
        let stats = Stats::new();
        let mount = |p: u32, args: &[u8]| {
            let rec = call(mount3::PROGRAM, 3, p, &root(), args);
            let Action::Reply(r) = handle_call(&rec, &fs, &stats) else {
                panic!()
            };
            rpc::decode_reply(&r).unwrap().1.to_vec()
        };
        let mut w = Writer::new();
        w.string(crate::memfs::EXPORT);
        let body = mount(mount3::procs::MNT, w.as_slice());
        assert_eq!(&body[..8], [0, 0, 0, 0, 0, 0, 0, 36]);
        assert_eq!(&body[44..], [0, 0, 0, 1, 0, 0, 0, 1]);
        let mut w = Writer::new();
        w.string(b"/nope");
        assert_eq!(mount(mount3::procs::MNT, w.as_slice()), [0, 0, 0, 2]);
        let mut w = Writer::new();
        w.string(&[b'/'; 1100]);
        assert_eq!(mount(mount3::procs::MNT, w.as_slice()), [0, 0, 0, 63]);
        assert!(mount(mount3::procs::NULL, &[]).is_empty());
        assert_eq!(mount(mount3::procs::DUMP, &[]), [0, 0, 0, 0]);
        assert!(mount(mount3::procs::UMNTALL, &[]).is_empty());
        assert_eq!(
            mount(mount3::procs::EXPORT, &[]),
            b"\0\0\0\x01\0\0\0\x07/export\0\0\0\0\0\0\0\0\0"
        );
        assert_eq!(stats.snapshot().mount, [1, 3, 1, 0, 1, 1]);
    }
}
