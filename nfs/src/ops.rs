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
use crate::proto::nfs3::{self, access, procs};
use crate::proto::mount3;
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
        return Err(Action::Reply(rpc::prog_mismatch(call.xid, low_high, low_high)));
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
        let want = usize::try_from(room).unwrap_or(READDIR_BATCH).min(READDIR_BATCH);
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
            if let Some(slot) = w.buf_mut().get_mut(rpc::ACCEPTED_HEADER_LEN..READ_HEADER_LEN) {
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
