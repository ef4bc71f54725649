//! The server over memfs on 127.0.0.1, driven by a small blocking client made of our own XDR
//! and record modules: every procedure, the error paths, and the stream staying usable after
//! hostile input.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use nfs::fs::{FileHandle, Filesystem};
use nfs::memfs::{big_byte, MemFs, BIG_SIZE, EXPORT, MANY_FILES};
use nfs::proto::mount3;
use nfs::proto::nfs3::{self, procs};
use nfs::record::{self, Deframer, Frame};
use nfs::rpc::{self, Credentials, ReplyHeader};
use nfs::server::{Server, ServerConfig, ServerHandle};
use nfs::xdr::{Reader, Writer};

struct Running {
    rt: tokio::runtime::Runtime,
    handle: Option<ServerHandle>,
}

impl Running {
    fn start(config: ServerConfig) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let fs: Arc<dyn Filesystem> = Arc::new(MemFs::new());
        let handle = rt.block_on(Server::start(config, fs)).unwrap();
        Running {
            rt,
            handle: Some(handle),
        }
    }

    fn local() -> Self {
        Self::start(ServerConfig {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            ..ServerConfig::default()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.handle.as_ref().unwrap().local_addrs()[0]
    }

    fn handle(&self) -> &ServerHandle {
        self.handle.as_ref().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

struct Client {
    sock: TcpStream,
    deframer: Deframer,
    pending: Vec<Frame>,
    xid: u32,
    cred: Credentials,
}

impl Client {
    fn connect(addr: SocketAddr) -> Self {
        let sock = TcpStream::connect(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            sock,
            deframer: Deframer::new(),
            pending: Vec::new(),
            xid: 1,
            cred: Credentials::new(0, 0, &[]),
        }
    }

    /// A NULL call on a connection the server may already have refused (write errors are
    /// part of the expected outcome there).
    fn try_null(&mut self) {
        let w = rpc::encode_call(1, nfs3::PROGRAM, 3, 0, None);
        let _ = self.sock.write_all(&record::frame(w.as_slice()));
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).unwrap();
    }

    /// Next reply record, or None when the server closed the connection.
    fn recv(&mut self) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            if !self.pending.is_empty() {
                match self.pending.remove(0) {
                    Frame::Record(r) => return Some(r),
                    Frame::Discarded { .. } => panic!("reply over 64 KiB"),
                }
            }
            // A refused or dropped connection shows as EOF or as a reset.
            let n = match self.sock.read(&mut buf) {
                Ok(0) => return None,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                r => r.unwrap(),
            };
            let mut input = &buf[..n];
            while let Some(f) = self.deframer.feed(&mut input) {
                self.pending.push(f);
            }
        }
    }

    /// Like recv, but large replies (READ) are reassembled by hand since our deframer keeps
    /// only 64 KiB: reads one single-fragment record.
    fn recv_big(&mut self) -> Vec<u8> {
        assert!(self.pending.is_empty());
        let mut mark = [0u8; 4];
        self.sock.read_exact(&mut mark).unwrap();
        let m = u32::from_be_bytes(mark);
        assert!(m & 0x8000_0000 != 0, "single last fragment");
        let mut body = vec![0u8; (m & 0x7fff_ffff) as usize];
        self.sock.read_exact(&mut body).unwrap();
        body
    }

    fn send_call(&mut self, prog: u32, vers: u32, p: u32, args: &[u8]) -> u32 {
        self.xid += 1;
        let mut w = rpc::encode_call(self.xid, prog, vers, p, Some(&self.cred));
        w.fixed_opaque(args);
        let framed = record::frame(w.as_slice());
        self.send_raw(&framed);
        self.xid
    }

    fn call_header(&mut self, prog: u32, vers: u32, p: u32, args: &[u8]) -> (ReplyHeader, Vec<u8>) {
        let xid = self.send_call(prog, vers, p, args);
        let reply = if prog == nfs3::PROGRAM && p == procs::READ {
            self.recv_big()
        } else {
            self.recv().expect("connection closed")
        };
        let (h, rest) = rpc::decode_reply(&reply).unwrap();
        match &h {
            ReplyHeader::Accepted { xid: x, .. } | ReplyHeader::Denied { xid: x, .. } => {
                assert_eq!(*x, xid)
            }
        }
        (h, rest.to_vec())
    }

    /// A successful (accepted) call's results.
    fn nfs(&mut self, p: u32, args: &[u8]) -> Vec<u8> {
        let (h, body) = self.call_header(nfs3::PROGRAM, 3, p, args);
        assert!(matches!(h, ReplyHeader::Accepted { stat: 0, .. }), "{h:?}");
        body
    }

    fn mount(&mut self, p: u32, args: &[u8]) -> Vec<u8> {
        let (h, body) = self.call_header(mount3::PROGRAM, 3, p, args);
        assert!(matches!(h, ReplyHeader::Accepted { stat: 0, .. }), "{h:?}");
        body
    }

    fn mnt(&mut self) -> FileHandle {
        let mut w = Writer::new();
        w.string(EXPORT);
        let body = self.mount(mount3::procs::MNT, w.as_slice());
        let mut r = Reader::new(&body);
        assert_eq!(r.u32().unwrap(), 0);
        let fh = FileHandle::from_slice(r.opaque(64).unwrap()).unwrap();
        assert_eq!(r.u32().unwrap(), 1);
        assert_eq!(r.u32().unwrap(), rpc::AUTH_SYS);
        fh
    }

    fn lookup(&mut self, dir: &FileHandle, name: &[u8]) -> Result<FileHandle, u32> {
        let mut w = fh(dir);
        w.string(name);
        let body = self.nfs(procs::LOOKUP, w.as_slice());
        let mut r = Reader::new(&body);
        match r.u32().unwrap() {
            0 => Ok(FileHandle::from_slice(r.opaque(64).unwrap()).unwrap()),
            e => Err(e),
        }
    }

    fn read(&mut self, f: &FileHandle, offset: u64, count: u32) -> (Vec<u8>, bool) {
        let mut w = fh(f);
        w.u64(offset);
        w.u32(count);
        let body = self.nfs(procs::READ, w.as_slice());
        let mut r = Reader::new(&body);
        assert_eq!(r.u32().unwrap(), 0);
        assert!(r.bool().unwrap());
        r.fixed_opaque(84).unwrap();
        let n = r.u32().unwrap();
        let eof = r.bool().unwrap();
        let data = r.opaque(u32::MAX).unwrap();
        assert_eq!(data.len() as u32, n);
        assert!(r.is_empty());
        (data.to_vec(), eof)
    }

    /// Full READDIRPLUS walk of one directory: (name, handle, ftype).
    fn list(&mut self, dir: &FileHandle, maxcount: u32) -> Vec<(Vec<u8>, FileHandle, u32)> {
        let mut out = Vec::new();
        let mut cookie = 0;
        loop {
            let mut w = fh(dir);
            w.u64(cookie);
            w.u64(0);
            w.u32(maxcount / 8);
            w.u32(maxcount);
            let body = self.nfs(procs::READDIRPLUS, w.as_slice());
            assert!(body.len() <= maxcount as usize);
            let mut r = Reader::new(&body);
            assert_eq!(r.u32().unwrap(), 0);
            assert!(r.bool().unwrap());
            r.fixed_opaque(84).unwrap();
            r.fixed_opaque(8).unwrap();
            while r.bool().unwrap() {
                r.u64().unwrap();
                let name = r.string(255).unwrap().to_vec();
                cookie = r.u64().unwrap();
                assert!(r.bool().unwrap());
                let attr = r.fixed_opaque(84).unwrap();
                let ftype = u32::from_be_bytes(attr[..4].try_into().unwrap());
                assert!(r.bool().unwrap());
                let h = FileHandle::from_slice(r.opaque(64).unwrap()).unwrap();
                out.push((name, h, ftype));
            }
            if r.bool().unwrap() {
                return out;
            }
        }
    }
}

fn fh(h: &FileHandle) -> Writer {
    let mut w = Writer::new();
    nfs3::nfs_fh3(&mut w, h);
    w
}

#[test]
fn every_procedure() {
    let srv = Running::local();
    let mut c = Client::connect(srv.addr());

    // MOUNT.
    assert!(c.mount(mount3::procs::NULL, &[]).is_empty());
    let root = c.mnt();
    let mut w = Writer::new();
    w.string(b"/not-exported");
    assert_eq!(c.mount(mount3::procs::MNT, w.as_slice()), [0, 0, 0, 2]);
    let exports = c.mount(mount3::procs::EXPORT, &[]);
    assert_eq!(&exports[4..16], b"\0\0\0\x07/export\0");
    assert_eq!(c.mount(mount3::procs::DUMP, &[]), [0, 0, 0, 0]);
    let mut w = Writer::new();
    w.string(EXPORT);
    assert!(c.mount(mount3::procs::UMNT, w.as_slice()).is_empty());
    assert!(c.mount(mount3::procs::UMNTALL, &[]).is_empty());

    // The kernel's probe sequence.
    assert!(c.nfs(procs::NULL, &[]).is_empty());
    let fsinfo = c.nfs(procs::FSINFO, fh(&root).as_slice());
    assert_eq!(&fsinfo[..8], [0, 0, 0, 0, 0, 0, 0, 1]);
    assert_eq!(&fsinfo[92..96], [0, 0x10, 0, 0]);
    let pathconf = c.nfs(procs::PATHCONF, fh(&root).as_slice());
    assert_eq!(&pathconf[96..100], [0, 0, 0, 255]);
    let getattr = c.nfs(procs::GETATTR, fh(&root).as_slice());
    assert_eq!(getattr.len(), 4 + 84);
    assert_eq!(&getattr[4..8], [0, 0, 0, 2]); // NF3DIR
    let fsstat = c.nfs(procs::FSSTAT, fh(&root).as_slice());
    assert_eq!(fsstat.len(), 4 + 88 + 48 + 4);

    // LOOKUP, ACCESS, READLINK.
    let etc = c.lookup(&root, b"etc").unwrap();
    let hostname = c.lookup(&etc, b"hostname").unwrap();
    assert_eq!(c.lookup(&etc, b".."), Ok(root));
    assert_eq!(c.lookup(&root, b"missing"), Err(2));
    assert_eq!(c.lookup(&hostname, b"x"), Err(20));
    let mut w = fh(&c.lookup(&root, b"bin").unwrap());
    w.u32(0x3f);
    let access = c.nfs(procs::ACCESS, w.as_slice());
    assert_eq!(&access[92..], [0, 0, 0, 0x03]); // READ | LOOKUP, nothing writable
    let link = c.lookup(&root, b"link").unwrap();
    let rl = c.nfs(procs::READLINK, fh(&link).as_slice());
    assert_eq!(&rl[92..], b"\0\0\0\x0cetc/hostname");

    // READ, including past EOF and across 4 GiB.
    assert_eq!(c.read(&hostname, 0, 100), (b"node1\n".to_vec(), true));
    assert_eq!(c.read(&hostname, 2, 2), (b"de".to_vec(), false));
    assert_eq!(c.read(&hostname, 6, 10), (Vec::new(), true));
    assert_eq!(c.read(&hostname, u64::MAX, 10), (Vec::new(), true));
    let big = c.lookup(&root, b"big").unwrap();
    let off = (4u64 << 30) - 512;
    let (data, eof) = c.read(&big, off, 1 << 20);
    assert!(!eof);
    assert_eq!(data.len(), 1 << 20);
    assert!(data
        .iter()
        .enumerate()
        .all(|(i, b)| *b == big_byte(off + i as u64)));
    let (data, eof) = c.read(&big, BIG_SIZE - 3, 4 << 20);
    assert_eq!((data.len(), eof), (3, true));

    // READDIR (plain), READDIRPLUS full walk of the tree.
    let mut w = fh(&root);
    w.u64(0);
    w.u64(0);
    w.u32(4096);
    let rd = c.nfs(procs::READDIR, w.as_slice());
    assert_eq!(&rd[..4], [0, 0, 0, 0]);
    assert_eq!(&rd[rd.len() - 4..], [0, 0, 0, 1], "root fits in 4 KiB");
    let mut dirs = vec![(b"".to_vec(), root)];
    let mut files = 0;
    while let Some((path, d)) = dirs.pop() {
        let entries = c.list(&d, 4096);
        assert_eq!(entries[0].0, b".");
        assert_eq!(entries[1].0, b"..");
        for (name, h, ftype) in entries.into_iter().skip(2) {
            if ftype == 2 {
                dirs.push(([&path[..], b"/", &name].concat(), h));
            } else {
                files += 1;
            }
        }
    }
    // bin 2, etc 2, dev 2, big, link, data 2, many, private 1.
    assert_eq!(files, 2 + 2 + 2 + 1 + 1 + 2 + MANY_FILES + 1 + 1);

    // Every write procedure: ROFS with its all-absent wcc layout.
    for p in [2, 7, 8, 9, 10, 11, 12, 13, 14, 15, 21] {
        let mut w = fh(&root);
        w.string(b"new");
        let body = c.nfs(p, w.as_slice());
        let absent = match p {
            procs::LINK => 3,
            procs::RENAME => 4,
            _ => 2,
        };
        let mut expect = vec![0, 0, 0, 30];
        expect.resize(4 + 4 * absent, 0);
        assert_eq!(body, expect, "proc {p}");
    }

    let s = srv.handle().stats();
    assert_eq!(s.calls.nfs[procs::READ as usize], 6);
    assert_eq!(s.calls.nfs[procs::WRITE as usize], 1);
    assert_eq!(s.calls.mount[mount3::procs::MNT as usize], 2);
    assert_eq!((s.connections_total, s.connections_active), (1, 1));
}

#[test]
fn errors_and_hostile_input() {
    let srv = Running::local();
    let mut c = Client::connect(srv.addr());
    let root = c.mnt();

    // Bad and stale handles.
    let mut bad = root;
    bad.0[0] = 0xee;
    assert_eq!(
        c.nfs(procs::GETATTR, fh(&bad).as_slice()),
        [0, 0, 0x27, 0x11]
    );
    let mut stale = root;
    stale.0[13] = 0x55;
    assert_eq!(c.nfs(procs::GETATTR, fh(&stale).as_slice()), [0, 0, 0, 70]);
    let mut w = Writer::new();
    w.opaque(&[1; 12]);
    assert_eq!(c.nfs(procs::GETATTR, w.as_slice()), [0, 0, 0x27, 0x11]);
    let mut w = Writer::new();
    w.opaque(&[1; 65]);
    let (h, _) = c.call_header(nfs3::PROGRAM, 3, procs::GETATTR, w.as_slice());
    assert!(matches!(h, ReplyHeader::Accepted { stat: 4, .. }), "{h:?}");

    // Wrong versions, unknown programs and procedures.
    for (prog, vers, p, want) in [
        (nfs3::PROGRAM, 2, 0, (2, Some((3, 3)))),
        (nfs3::PROGRAM, 4, 0, (2, Some((3, 3)))),
        (mount3::PROGRAM, 1, 0, (2, Some((3, 3)))),
        (100227, 3, 0, (1, None)),
        (100000, 2, 3, (1, None)),
        (nfs3::PROGRAM, 3, 22, (3, None)),
        (nfs3::PROGRAM, 3, 1000, (3, None)),
    ] {
        let (h, _) = c.call_header(prog, vers, p, &[]);
        match h {
            ReplyHeader::Accepted { stat, mismatch, .. } => assert_eq!((stat, mismatch), want),
            h => panic!("{h:?}"),
        }
    }
    // RPC version 3 and an unknown auth flavor: MSG_DENIED.
    let mut w = Writer::new();
    for v in [77u32, 0, 3, nfs3::PROGRAM, 3, 0, 0, 0, 0, 0] {
        w.u32(v);
    }
    c.send_raw(&record::frame(w.as_slice()));
    let (h, _) = rpc::decode_reply(&c.recv().unwrap())
        .map(|(h, r)| (h, r.to_vec()))
        .unwrap();
    assert_eq!(
        h,
        ReplyHeader::Denied {
            xid: 77,
            reject: 0,
            detail: (2, 2)
        }
    );
    let mut w = Writer::new();
    for v in [78u32, 0, 2, nfs3::PROGRAM, 3, 0, 6, 0, 0, 0] {
        w.u32(v);
    }
    c.send_raw(&record::frame(w.as_slice()));
    let (h, _) = rpc::decode_reply(&c.recv().unwrap())
        .map(|(h, r)| (h, r.to_vec()))
        .unwrap();
    assert_eq!(
        h,
        ReplyHeader::Denied {
            xid: 78,
            reject: 1,
            detail: (1, 0)
        }
    );

    // Garbage after a valid xid: GARBAGE_ARGS, connection kept.
    c.send_raw(&record::frame(&[0, 0, 0, 79, 9, 9]));
    let (h, _) = rpc::decode_reply(&c.recv().unwrap())
        .map(|(h, r)| (h, r.to_vec()))
        .unwrap();
    assert!(matches!(
        h,
        ReplyHeader::Accepted {
            xid: 79,
            stat: 4,
            ..
        }
    ));

    // A 1 MiB WRITE: discarded, answered ROFS, and the connection is still usable.
    let mut w = rpc::encode_call(80, nfs3::PROGRAM, 3, procs::WRITE, None);
    nfs3::nfs_fh3(&mut w, &root);
    w.u64(0);
    w.u32(1 << 20);
    w.u32(0); // UNSTABLE
    w.opaque(&vec![0xaa; 1 << 20]);
    // Sent as several fragments, like a real client might.
    let body = w.into_inner();
    let mut stream = Vec::new();
    for (i, chunk) in body.chunks(300_000).enumerate() {
        let last = (i + 1) * 300_000 >= body.len();
        let mark = chunk.len() as u32 | if last { 0x8000_0000 } else { 0 };
        stream.extend_from_slice(&mark.to_be_bytes());
        stream.extend_from_slice(chunk);
    }
    c.send_raw(&stream);
    let (h, rest) = rpc::decode_reply(&c.recv().unwrap())
        .map(|(h, r)| (h, r.to_vec()))
        .unwrap();
    assert!(matches!(
        h,
        ReplyHeader::Accepted {
            xid: 80,
            stat: 0,
            ..
        }
    ));
    assert_eq!(rest, [0, 0, 0, 30, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(c.nfs(procs::GETATTR, fh(&root).as_slice()).len(), 88);

    // A huge record that is not a write: GARBAGE_ARGS, still usable.
    let mut w = rpc::encode_call(81, nfs3::PROGRAM, 3, procs::LOOKUP, None);
    w.opaque(&vec![0; 200_000]);
    c.send_raw(&record::frame(w.as_slice()));
    let (h, _) = rpc::decode_reply(&c.recv().unwrap())
        .map(|(h, r)| (h, r.to_vec()))
        .unwrap();
    assert!(matches!(
        h,
        ReplyHeader::Accepted {
            xid: 81,
            stat: 4,
            ..
        }
    ));

    // Pipelined READs come back, each with its xid.
    let etc = c.lookup(&root, b"etc").unwrap();
    let hostname = c.lookup(&etc, b"hostname").unwrap();
    let mut xids = Vec::new();
    for i in 0..20u64 {
        let mut w = fh(&hostname);
        w.u64(i % 6);
        w.u32(1);
        xids.push(c.send_call(nfs3::PROGRAM, 3, procs::READ, w.as_slice()));
    }
    let mut got: Vec<u32> = (0..20)
        .map(|_| rpc::peek_xid(&c.recv().unwrap()).unwrap())
        .collect();
    got.sort();
    assert_eq!(got, xids);
    assert_eq!(c.nfs(procs::NULL, &[]), Vec::<u8>::new());
    assert!(srv.handle().stats().calls.discarded >= 2);

    // Not even an xid: the server closes the connection.
    c.send_raw(&record::frame(&[1, 2]));
    assert_eq!(c.recv(), None);
}

#[test]
fn limits_at_accept() {
    // Allow-list without 127.0.0.1: closed at once.
    let srv = Running::start(ServerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        allow: vec![("10.0.0.0".parse().unwrap(), 8)],
        ..ServerConfig::default()
    });
    let mut c = Client::connect(srv.addr());
    c.try_null();
    assert_eq!(c.recv(), None);
    // Privileged ports required: our source port is ephemeral.
    let srv2 = Running::start(ServerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        require_privileged_port: true,
        ..ServerConfig::default()
    });
    let mut c = Client::connect(srv2.addr());
    c.try_null();
    assert_eq!(c.recv(), None);
    assert_eq!(srv.handle().stats().connections_rejected, 1);
    assert_eq!(srv2.handle().stats().connections_rejected, 1);
    // Connection cap of one: the second is refused, the first keeps working.
    let srv3 = Running::start(ServerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        max_connections: 1,
        ..ServerConfig::default()
    });
    let mut first = Client::connect(srv3.addr());
    assert!(first.nfs(procs::NULL, &[]).is_empty());
    let mut second = Client::connect(srv3.addr());
    second.try_null();
    assert_eq!(second.recv(), None);
    assert!(first.nfs(procs::NULL, &[]).is_empty());
}

#[test]
fn one_client_cannot_take_every_connection() {
    // 32 connections per client address; the 33rd is refused, and a slot frees when one
    // closes.
    let srv = Running::local();
    let mut held: Vec<Client> = (0..32).map(|_| Client::connect(srv.addr())).collect();
    for c in &mut held {
        assert!(c.nfs(procs::NULL, &[]).is_empty());
    }
    let mut extra = Client::connect(srv.addr());
    extra.try_null();
    assert_eq!(extra.recv(), None);
    assert_eq!(srv.handle().stats().connections_rejected, 1);
    held.pop();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = Client::connect(srv.addr());
        again.try_null();
        if again.recv().is_some() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "slot never freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn idle_timeout_closes() {
    let srv = Running::start(ServerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        idle_timeout: Duration::from_millis(200),
        ..ServerConfig::default()
    });
    let mut c = Client::connect(srv.addr());
    assert!(c.nfs(procs::NULL, &[]).is_empty());
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(c.recv(), None);
    // The server's bookkeeping finishes just after the socket closes.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while srv.handle().stats().connections_active != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "connection still counted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn binds_an_address_not_on_the_host() {
    // IP_FREEBIND: the virtual IP may be added after the listener starts (TEST-NET-1).
    let srv = Running::start(ServerConfig {
        listen: vec![
            "192.0.2.77:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        ],
        ..ServerConfig::default()
    });
    assert_eq!(srv.handle().local_addrs().len(), 2);
    assert_eq!(srv.handle().local_addrs()[0].ip().to_string(), "192.0.2.77");
}

#[test]
fn pipelined_big_reads_under_back_pressure() {
    // 200 READs of 1 MiB sent before any reply is read: the server must stop at its in-flight
    // budget (16 MiB per connection), never drop a request, and deliver all 200 MiB once the
    // client reads.
    let srv = Running::local();
    let mut c = Client::connect(srv.addr());
    let root = c.mnt();
    let big = c.lookup(&root, b"big").unwrap();
    let mut xids = std::collections::HashMap::new();
    for i in 0..200u64 {
        let mut w = fh(&big);
        let off = i << 20;
        w.u64(off);
        w.u32(1 << 20);
        xids.insert(
            c.send_call(nfs3::PROGRAM, 3, procs::READ, w.as_slice()),
            off,
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..200 {
        let body = c.recv_big();
        let (h, rest) = rpc::decode_reply(&body).unwrap();
        let ReplyHeader::Accepted { xid, stat: 0, .. } = h else {
            panic!("{h:?}")
        };
        let off = xids.remove(&xid).expect("unknown or repeated xid");
        let mut r = Reader::new(rest);
        assert_eq!(r.u32().unwrap(), 0);
        r.fixed_opaque(88).unwrap();
        assert_eq!(r.u32().unwrap(), 1 << 20);
        assert!(!r.bool().unwrap());
        let data = r.opaque(u32::MAX).unwrap();
        assert_eq!(data[0], big_byte(off));
        assert_eq!(data[(1 << 20) - 1], big_byte(off + (1 << 20) - 1));
    }
    assert!(xids.is_empty());
    assert_eq!(srv.handle().stats().calls.nfs[procs::READ as usize], 200);
}
