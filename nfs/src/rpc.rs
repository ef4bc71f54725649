//! ONC RPC v2 messages (RFC 5531 §9, Appendix A): call header decoding with AUTH_SYS, and the
//! reply headers we send.
//!
//! Decoding is strict where the RFC is (rpcvers, auth body limits, AUTH_SYS layout) and
//! distinguishes failures by what can still be answered: without an xid nothing can, so the
//! connection is closed; with one, the client gets the RPC-level error it asked for.

use crate::xdr::{Reader, Writer};

pub const RPC_VERSION: u32 = 2;
const MSG_CALL: u32 = 0;
const MSG_REPLY: u32 = 1;
const MSG_ACCEPTED: u32 = 0;
const MSG_DENIED: u32 = 1;
const RPC_MISMATCH: u32 = 0;
const AUTH_ERROR: u32 = 1;

pub const AUTH_NONE: u32 = 0;
pub const AUTH_SYS: u32 = 1;
/// Largest `opaque_auth` body (RFC 5531 §8.2).
pub const MAX_AUTH_BODY: u32 = 400;
/// AUTH_SYS limits (RFC 5531 Appendix A).
pub const MAX_MACHINENAME: u32 = 255;
pub const MAX_GIDS: usize = 16;
/// Who AUTH_NONE callers are.
pub const NOBODY: u32 = 65534;

/// `accept_stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum AcceptStat {
    Success = 0,
    ProgUnavail = 1,
    ProgMismatch = 2,
    ProcUnavail = 3,
    GarbageArgs = 4,
    SystemErr = 5,
}

/// `auth_stat` values we send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum AuthStat {
    BadCred = 1,
    BadVerf = 3,
}

/// The caller's identity, from AUTH_SYS (or nobody for AUTH_NONE). Spoofable: it only feeds the
/// permission bits, the real access control is the allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    gids: [u32; MAX_GIDS],
    ngids: usize,
}

impl Credentials {
    pub fn nobody() -> Self {
        Self::new(NOBODY, NOBODY, &[])
    }

    /// Supplementary groups beyond [`MAX_GIDS`] are dropped (only tests build these by hand).
    pub fn new(uid: u32, gid: u32, gids: &[u32]) -> Self {
        let mut c = Credentials {
            uid,
            gid,
            gids: [0; MAX_GIDS],
            ngids: gids.len().min(MAX_GIDS),
        };
        c.gids[..c.ngids].copy_from_slice(&gids[..c.ngids]);
        c
    }

    pub fn gids(&self) -> &[u32] {
        &self.gids[..self.ngids]
    }

    /// Parses an AUTH_SYS body: `stamp, machinename<255>, uid, gid, gids<16>`, nothing after.
    pub fn parse_auth_sys(body: &[u8]) -> Option<Self> {
        let mut r = Reader::new(body);
        let _stamp = r.u32().ok()?;
        let _machine = r.string(MAX_MACHINENAME).ok()?;
        let uid = r.u32().ok()?;
        let gid = r.u32().ok()?;
        let n = r.u32().ok()?;
        if n as usize > MAX_GIDS {
            return None;
        }
        let mut gids = [0u32; MAX_GIDS];
        for g in gids.iter_mut().take(n as usize) {
            *g = r.u32().ok()?;
        }
        if !r.is_empty() {
            return None;
        }
        Some(Credentials {
            uid,
            gid,
            gids,
            ngids: n as usize,
        })
    }
}

/// A decoded call header; the procedure's arguments are in `args`.
#[derive(Clone, Debug)]
pub struct Call<'a> {
    pub xid: u32,
    pub prog: u32,
    pub vers: u32,
    pub proc_num: u32,
    pub cred: Credentials,
    pub args: &'a [u8],
}

/// Why a record is not a call we can dispatch, and what (if anything) to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallError {
    /// Not even an xid: close the connection.
    NoXid,
    /// A REPLY or an unknown message type sent to a server: ignored (RFC 5531 has no answer
    /// for it), the connection stays.
    NotACall { xid: u32 },
    /// rpcvers ≠ 2: MSG_DENIED RPC_MISMATCH.
    RpcMismatch { xid: u32 },
    /// MSG_DENIED AUTH_ERROR with this status.
    Auth { xid: u32, stat: AuthStat },
    /// Header cut short: GARBAGE_ARGS.
    Garbage { xid: u32 },
}

impl CallError {
    /// The reply to send, if any.
    pub fn reply(&self) -> Option<Vec<u8>> {
        match *self {
            CallError::NoXid | CallError::NotACall { .. } => None,
            CallError::RpcMismatch { xid } => Some(denied_rpc_mismatch(xid)),
            CallError::Auth { xid, stat } => Some(denied_auth(xid, stat)),
            CallError::Garbage { xid } => Some(accepted_error(xid, AcceptStat::GarbageArgs)),
        }
    }
}

/// The xid of a record, if it has one.
pub fn peek_xid(record: &[u8]) -> Option<u32> {
    Reader::new(record).u32().ok()
}

/// Decodes a call header.
pub fn decode_call(record: &[u8]) -> Result<Call<'_>, CallError> {
    let mut r = Reader::new(record);
    let xid = r.u32().map_err(|_| CallError::NoXid)?;
    let garbage = |_| CallError::Garbage { xid };
    match r.u32().map_err(garbage)? {
        MSG_CALL => {}
        _ => return Err(CallError::NotACall { xid }),
    }
    if r.u32().map_err(garbage)? != RPC_VERSION {
        return Err(CallError::RpcMismatch { xid });
    }
    let prog = r.u32().map_err(garbage)?;
    let vers = r.u32().map_err(garbage)?;
    let proc_num = r.u32().map_err(garbage)?;
    let bad_cred = CallError::Auth {
        xid,
        stat: AuthStat::BadCred,
    };
    let flavor = r.u32().map_err(garbage)?;
    let body = match r.opaque(MAX_AUTH_BODY) {
        Ok(b) => b,
        Err(crate::xdr::XdrError::TooLong { .. }) => return Err(bad_cred),
        Err(_) => return Err(CallError::Garbage { xid }),
    };
    let cred = match flavor {
        AUTH_NONE => Credentials::nobody(),
        AUTH_SYS => Credentials::parse_auth_sys(body).ok_or(bad_cred)?,
        // RPCSEC_GSS and anything else: what knfsd answers for flavors it does not serve.
        _ => return Err(bad_cred),
    };
    let _verf_flavor = r.u32().map_err(garbage)?;
    match r.opaque(MAX_AUTH_BODY) {
        Ok(_) => {}
        Err(crate::xdr::XdrError::TooLong { .. }) => {
            return Err(CallError::Auth {
                xid,
                stat: AuthStat::BadVerf,
            })
        }
        Err(_) => return Err(CallError::Garbage { xid }),
    }
    Ok(Call {
        xid,
        prog,
        vers,
        proc_num,
        cred,
        args: r.rest(),
    })
}

/// Bytes of an accepted reply header (xid, REPLY, ACCEPTED, null verifier, accept_stat).
pub const ACCEPTED_HEADER_LEN: usize = 24;

/// Writes an accepted reply header; for `Success` the procedure's results follow.
pub fn write_accepted(w: &mut Writer, xid: u32, stat: AcceptStat) {
    w.u32(xid);
    w.u32(MSG_REPLY);
    w.u32(MSG_ACCEPTED);
    w.u32(AUTH_NONE);
    w.u32(0);
    w.u32(stat as u32);
}

/// A successful reply's header in a fresh writer, ready for the results.
pub fn success(xid: u32) -> Writer {
    let mut w = Writer::with_capacity(256);
    write_accepted(&mut w, xid, AcceptStat::Success);
    w
}

/// PROG_UNAVAIL, PROC_UNAVAIL, GARBAGE_ARGS or SYSTEM_ERR (no body).
pub fn accepted_error(xid: u32, stat: AcceptStat) -> Vec<u8> {
    let mut w = Writer::with_capacity(ACCEPTED_HEADER_LEN);
    write_accepted(&mut w, xid, stat);
    w.into_inner()
}

/// PROG_MISMATCH with the versions we support.
pub fn prog_mismatch(xid: u32, low: u32, high: u32) -> Vec<u8> {
    let mut w = Writer::with_capacity(ACCEPTED_HEADER_LEN + 8);
    write_accepted(&mut w, xid, AcceptStat::ProgMismatch);
    w.u32(low);
    w.u32(high);
    w.into_inner()
}

pub fn denied_rpc_mismatch(xid: u32) -> Vec<u8> {
    let mut w = Writer::with_capacity(24);
    w.u32(xid);
    w.u32(MSG_REPLY);
    w.u32(MSG_DENIED);
    w.u32(RPC_MISMATCH);
    w.u32(RPC_VERSION);
    w.u32(RPC_VERSION);
    w.into_inner()
}

pub fn denied_auth(xid: u32, stat: AuthStat) -> Vec<u8> {
    let mut w = Writer::with_capacity(20);
    w.u32(xid);
    w.u32(MSG_REPLY);
    w.u32(MSG_DENIED);
    w.u32(AUTH_ERROR);
    w.u32(stat as u32);
    w.into_inner()
}

/// Builds a call (used by our test client, the loopback test and the fuzz seeds).
pub fn encode_call(
    xid: u32,
    prog: u32,
    vers: u32,
    proc_num: u32,
    cred: Option<&Credentials>,
) -> Writer {
    let mut w = Writer::with_capacity(128);
    w.u32(xid);
    w.u32(MSG_CALL);
    w.u32(RPC_VERSION);
    w.u32(prog);
    w.u32(vers);
    w.u32(proc_num);
    match cred {
        None => {
            w.u32(AUTH_NONE);
            w.u32(0);
        }
        Some(c) => {
            let mut body = Writer::new();
            body.u32(0);
            body.string(b"client");
            body.u32(c.uid);
            body.u32(c.gid);
            body.u32(c.ngids as u32);
            for g in c.gids() {
                body.u32(*g);
            }
            w.u32(AUTH_SYS);
            w.opaque(body.as_slice());
        }
    }
    w.u32(AUTH_NONE);
    w.u32(0);
    w
}

/// A decoded reply header (for our test client and the fuzz target's reply check).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplyHeader {
    Accepted {
        xid: u32,
        stat: u32,
        mismatch: Option<(u32, u32)>,
    },
    Denied {
        xid: u32,
        reject: u32,
        detail: (u32, u32),
    },
}

/// Decodes a reply header; returns it and the bytes of the results.
pub fn decode_reply(body: &[u8]) -> Option<(ReplyHeader, &[u8])> {
    let mut r = Reader::new(body);
    let xid = r.u32().ok()?;
    if r.u32().ok()? != MSG_REPLY {
        return None;
    }
    match r.u32().ok()? {
        MSG_ACCEPTED => {
            let _flavor = r.u32().ok()?;
            let _verf = r.opaque(MAX_AUTH_BODY).ok()?;
            let stat = r.u32().ok()?;
            let mismatch = if stat == AcceptStat::ProgMismatch as u32 {
                Some((r.u32().ok()?, r.u32().ok()?))
            } else {
                None
            };
            Some((
                ReplyHeader::Accepted {
                    xid,
                    stat,
                    mismatch,
                },
                r.rest(),
            ))
        }
        MSG_DENIED => {
            let reject = r.u32().ok()?;
            let detail = if reject == RPC_MISMATCH {
                (r.u32().ok()?, r.u32().ok()?)
            } else {
                (r.u32().ok()?, 0)
            };
            Some((
                ReplyHeader::Denied {
                    xid,
                    reject,
                    detail,
                },
                r.rest(),
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth_sys_body(machine: &[u8], ngids_claimed: u32, gids: &[u32], trailing: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(1);
        w.string(machine);
        w.u32(1000);
        w.u32(100);
        w.u32(ngids_claimed);
        for g in gids {
            w.u32(*g);
        }
        let mut v = w.into_inner();
        v.extend_from_slice(trailing);
        v
    }

    fn call_with_cred(flavor: u32, body: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        for v in [42, 0, 2, 100003, 3, 1] {
            w.u32(v);
        }
        w.u32(flavor);
        w.opaque(body);
        w.u32(0);
        w.u32(0);
        w.u32(0xabcd);
        w.into_inner()
    }

    #[test]
    fn auth_sys_edges() {
        let gids16: Vec<u32> = (1..=16).collect();
        let c = Credentials::parse_auth_sys(&auth_sys_body(b"m", 0, &[], b"")).unwrap();
        assert_eq!((c.uid, c.gid, c.gids()), (1000, 100, &[][..]));
        let c = Credentials::parse_auth_sys(&auth_sys_body(b"m", 16, &gids16, b"")).unwrap();
        assert_eq!(c.gids(), &gids16[..]);
        let gids17: Vec<u32> = (1..=17).collect();
        assert!(Credentials::parse_auth_sys(&auth_sys_body(b"m", 17, &gids17, b"")).is_none());
        assert!(Credentials::parse_auth_sys(&auth_sys_body(&[b'a'; 255], 0, &[], b"")).is_some());
        assert!(Credentials::parse_auth_sys(&auth_sys_body(&[b'a'; 256], 0, &[], b"")).is_none());
        assert!(Credentials::parse_auth_sys(&auth_sys_body(b"m", 0, &[], &[0; 4])).is_none());
        // Claims 3 gids, carries 2.
        assert!(Credentials::parse_auth_sys(&auth_sys_body(b"m", 3, &[1, 2], b"")).is_none());
    }

    #[test]
    fn call_decoding() {
        let body = auth_sys_body(b"node", 2, &[5, 6], b"");
        let rec = call_with_cred(AUTH_SYS, &body);
        let call = decode_call(&rec).unwrap();
        assert_eq!(
            (call.xid, call.prog, call.vers, call.proc_num),
            (42, 100003, 3, 1)
        );
        assert_eq!(call.cred.gids(), &[5, 6]);
        assert_eq!(call.args, &[0, 0, 0xab, 0xcd]);

        let none = call_with_cred(AUTH_NONE, b"");
        assert_eq!(decode_call(&none).unwrap().cred, Credentials::nobody());

        let bad = CallError::Auth {
            xid: 42,
            stat: AuthStat::BadCred,
        };
        assert_eq!(decode_call(&call_with_cred(6, b"")).unwrap_err(), bad);
        assert_eq!(
            decode_call(&call_with_cred(AUTH_SYS, &[0; 401])).unwrap_err(),
            bad
        );
        let trailing = auth_sys_body(b"node", 0, &[], &[1, 2, 3, 4]);
        assert_eq!(
            decode_call(&call_with_cred(AUTH_SYS, &trailing)).unwrap_err(),
            bad
        );
        let many = auth_sys_body(b"m", 17, &[0; 17], b"");
        assert_eq!(
            decode_call(&call_with_cred(AUTH_SYS, &many)).unwrap_err(),
            bad
        );
    }

    #[test]
    fn call_errors() {
        assert_eq!(decode_call(&[1, 2, 3]).unwrap_err(), CallError::NoXid);
        assert_eq!(CallError::NoXid.reply(), None);
        let mut rec = call_with_cred(AUTH_NONE, b"");
        rec[11] = 3; // rpcvers 3
        let e = decode_call(&rec).unwrap_err();
        assert_eq!(e, CallError::RpcMismatch { xid: 42 });
        assert_eq!(
            e.reply().unwrap(),
            [0, 0, 0, 42, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 2]
        );
        assert_eq!(
            decode_call(&rec[..10]).unwrap_err(),
            CallError::Garbage { xid: 42 }
        );
        let mut reply = call_with_cred(AUTH_NONE, b"");
        reply[7] = 1;
        assert_eq!(
            decode_call(&reply).unwrap_err(),
            CallError::NotACall { xid: 42 }
        );
        assert_eq!(CallError::NotACall { xid: 42 }.reply(), None);
    }

    #[test]
    fn reply_golden() {
        assert_eq!(
            accepted_error(7, AcceptStat::GarbageArgs),
            [0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4]
        );
        assert_eq!(
            denied_auth(7, AuthStat::BadCred),
            [0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
        );
        let m = prog_mismatch(7, 3, 3);
        assert_eq!(&m[20..], [0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 3]);
        assert_eq!(
            decode_reply(&m).unwrap().0,
            ReplyHeader::Accepted {
                xid: 7,
                stat: 2,
                mismatch: Some((3, 3))
            }
        );
        assert_eq!(success(9).len(), ACCEPTED_HEADER_LEN);
    }

    #[test]
    fn encode_call_round_trips() {
        let cred = Credentials::new(0, 0, &[1, 2, 3]);
        let w = encode_call(5, 100005, 3, 1, Some(&cred));
        let call = decode_call(w.as_slice()).unwrap();
        assert_eq!(call.cred, cred);
        assert!(call.args.is_empty());
    }
}
