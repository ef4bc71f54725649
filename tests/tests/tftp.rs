//! End-to-end tests of `netboot::tftp`: the server on loopback (random ports), real clients
//! (tftp-hpa, curl, atftp) and raw hostile datagrams.
//!
//! Side-by-side timings against tftpd-hpa: `cargo test -p cm-tests --release --test tftp --
//! --ignored --nocapture` (needs `in.tftpd`, `curl`, `atftp`).

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use cm_tests::{require_program, wait_for};
use netboot::tftp::{
    BackgroundServer, CompletedTransfer, RootDir, TftpConfig, TftpContent, TftpPath, TftpServer,
    TftpSource,
};

const SECRET: &[u8] = b"TOP-SECRET-OUTSIDE-THE-ROOT";
const MIB: usize = 1024 * 1024;
/// Generous caps for waiting on replies; never performance assertions.
const REPLY_WAIT: Duration = Duration::from_secs(10);

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "cm-tftp-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic pseudo-random bytes (xorshift), so a corrupted block cannot go unnoticed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A served tree and an "outside" directory holding a secret next to it:
///
/// ROOT/empty, 511, 512, 513, big.bin (5 MiB), sub/b.txt, link.bin -> big.bin (inside),
/// escape -> OUTSIDE/secret (absolute), escape-rel -> ../outside/secret, dir-out -> ../outside,
/// fifo; OUTSIDE/secret.
struct Lab {
    dir: Scratch,
    root: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let dir = Scratch::new("lab");
        let root = dir.0.join("root");
        let outside = dir.0.join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), SECRET).unwrap();
        std::fs::write(root.join("empty"), b"").unwrap();
        for n in [511usize, 512, 513] {
            std::fs::write(root.join(n.to_string()), noise(n, n as u64)).unwrap();
        }
        std::fs::write(root.join("big.bin"), noise(5 * MIB + 77, 5)).unwrap();
        std::fs::write(root.join("sub/b.txt"), b"inside\n").unwrap();
        std::os::unix::fs::symlink("big.bin", root.join("link.bin")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret"), root.join("escape")).unwrap();
        std::os::unix::fs::symlink("../outside/secret", root.join("escape-rel")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("dir-out")).unwrap();
        let fifo = std::ffi::CString::new(root.join("fifo").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        Lab { dir, root }
    }

    fn file(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.root.join(name)).unwrap()
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }
}

type Seen = Arc<Mutex<Vec<(SocketAddr, String, u64)>>>;

/// Serves `source` on `listen` with `config`; returns the server and what the observer saw.
fn serve_source(
    listen: SocketAddr,
    config: TftpConfig,
    source: Arc<dyn TftpSource>,
) -> (BackgroundServer, Seen) {
    let seen: Seen = Arc::default();
    let log = Arc::clone(&seen);
    let observer = move |t: &CompletedTransfer<'_>| {
        log.lock()
            .unwrap()
            .push((t.client, t.path.as_str().to_owned(), t.bytes));
    };
    let server = TftpServer::bind(listen, config, source, Arc::new(observer)).unwrap();
    (server.spawn_background(2).unwrap(), seen)
}

fn serve(root: &Path, config: TftpConfig) -> (BackgroundServer, Seen) {
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    serve_source(local, config, Arc::new(RootDir::new(root).unwrap()))
}

fn config(root: &Path) -> TftpConfig {
    TftpConfig {
        root: root.to_owned(),
        ..TftpConfig::default()
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

fn curl(port: u16, file: &str, out: &Path, blksize: u16) -> Result<()> {
    run(Command::new("curl")
        .args(["-sS", "--max-time", "120", "--tftp-blksize"])
        .arg(blksize.to_string())
        .arg("-o")
        .arg(out)
        .arg(format!("tftp://127.0.0.1:{port}/{file}")))
}

fn tftp_hpa(port: u16, file: &str, out: &Path) -> Result<()> {
    run(Command::new("tftp")
        .args([
            "-m",
            "binary",
            "127.0.0.1",
            &port.to_string(),
            "-c",
            "get",
            file,
        ])
        .arg(out))
}

fn atftp(port: u16, file: &str, out: &Path, blksize: u16, window: u16) -> Result<()> {
    run(Command::new("atftp")
        .args(["--option", &format!("blksize {blksize}")])
        .args(["--option", &format!("windowsize {window}")])
        .args(["-g", "-r", file, "-l"])
        .arg(out)
        .args(["127.0.0.1", &port.to_string()]))
}

fn same(lab: &Lab, name: &str, out: &Path) {
    let got = std::fs::read(out).unwrap_or_default();
    let want = lab.file(name);
    assert!(
        got == want,
        "{name}: got {} bytes, want {} (first difference at {:?})",
        got.len(),
        want.len(),
        got.iter().zip(&want).position(|(a, b)| a != b)
    );
}

#[test]
fn tftp_hpa_fetches_small_files_intact() {
    if !require_program("tftp_hpa_fetches_small_files_intact", "tftp") {
        return;
    }
    let lab = Lab::new();
    let (server, seen) = serve(&lab.root, config(&lab.root));
    let port = server.local_addr().port();
    for name in ["empty", "511", "512", "513", "sub/b.txt", "link.bin"] {
        let out = lab.out(&format!("hpa-{}", name.replace('/', "_")));
        tftp_hpa(port, name, &out).unwrap();
        same(&lab, name, &out);
    }
    // tftp-hpa's client sends no options: pure RFC 1350 lock-step at 512 bytes.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(seen
        .iter()
        .any(|(_, p, b)| p == "link.bin" && *b == 5 * MIB as u64 + 77));
}

#[test]
fn curl_fetches_files_intact_and_rolls_over_block_numbers() {
    if !require_program("curl_fetches_files_intact", "curl") {
        return;
    }
    let lab = Lab::new();
    // 33 MiB + a bit at 512-byte blocks: 67,585 blocks, past 65535.
    let huge = 33 * MIB + 300;
    std::fs::write(lab.root.join("huge.bin"), noise(huge, 33)).unwrap();
    let (server, seen) = serve(&lab.root, config(&lab.root));
    let port = server.local_addr().port();
    // No empty file here: curl 7.88 fails every empty TFTP download ("getpeername() failed with
    // errno 107"), with tftpd-hpa as well; tftp-hpa and atftp cover it.
    for (name, blksize) in [
        ("511", 512),
        ("512", 512),
        ("513", 512),
        ("big.bin", 1468),
        ("big.bin", 8),
        ("/sub/b.txt", 1468),
        ("huge.bin", 512),
    ] {
        let out = lab.out("curl-out");
        curl(port, name, &out, blksize).unwrap();
        same(&lab, name.trim_start_matches('/'), &out);
    }
    assert_eq!(server.counters().completed(), 7);
    let seen = seen.lock().unwrap();
    assert!(seen
        .iter()
        .any(|(_, p, b)| p == "huge.bin" && *b == huge as u64));
    assert!(seen.iter().any(|(_, p, _)| p == "sub/b.txt"));
}

#[test]
fn atftp_fetches_with_windows() {
    if !require_program("atftp_fetches_with_windows", "atftp") {
        return;
    }
    let lab = Lab::new();
    let (server, _) = serve(&lab.root, config(&lab.root));
    let port = server.local_addr().port();
    for (name, blksize, window) in [
        ("empty", 1468, 16),
        ("511", 512, 4),
        ("512", 512, 1),
        ("513", 512, 64),
        ("big.bin", 1468, 16),
        ("big.bin", 1468, 64),
        ("big.bin", 512, 3),
    ] {
        let out = lab.out("atftp-out");
        let _ = std::fs::remove_file(&out);
        atftp(port, name, &out, blksize, window).unwrap();
        same(&lab, name, &out);
    }
    assert_eq!(server.counters().completed(), 7);
}

#[test]
fn twenty_parallel_curl_clients() {
    if !require_program("twenty_parallel_curl_clients", "curl") {
        return;
    }
    let lab = Lab::new();
    let (server, seen) = serve(&lab.root, config(&lab.root));
    let port = server.local_addr().port();
    let mut children = Vec::new();
    for i in 0..20 {
        let out = lab.out(&format!("par-{i}"));
        let child = Command::new("curl")
            .args(["-sS", "--max-time", "120", "--tftp-blksize", "1468", "-o"])
            .arg(&out)
            .arg(format!("tftp://127.0.0.1:{port}/big.bin"))
            .spawn()
            .unwrap();
        children.push((child, out));
    }
    for (mut child, out) in children {
        assert!(child.wait().unwrap().success());
        same(&lab, "big.bin", &out);
    }
    assert_eq!(seen.lock().unwrap().len(), 20);
    wait_for("transfers to end", REPLY_WAIT, || {
        (server.counters().active() == 0).then_some(())
    })
    .unwrap();
}

/// A raw client socket on loopback.
fn client() -> UdpSocket {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    s.set_read_timeout(Some(REPLY_WAIT)).unwrap();
    s
}

fn recv(s: &UdpSocket) -> Result<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 70_000];
    let (n, from) = s.recv_from(&mut buf).context("no reply")?;
    buf.truncate(n);
    Ok((buf, from))
}

fn rrq(name: &[u8], mode: &[u8], options: &[(&str, &str)]) -> Vec<u8> {
    let mut v = vec![0, 1];
    for field in [name, mode].into_iter().chain(
        options
            .iter()
            .flat_map(|(n, v)| [n.as_bytes(), v.as_bytes()]),
    ) {
        v.extend_from_slice(field);
        v.push(0);
    }
    v
}

fn opcode(p: &[u8]) -> u16 {
    u16::from_be_bytes([p[0], p[1]])
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    /// An ERROR packet with this code.
    Error(u16),
    /// An OACK (then aborted by us).
    Oack,
    /// No reply: checked by sending a good request right after and seeing its answer first.
    Silence,
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn hostile_requests_are_refused_and_never_leak() {
    let lab = Lab::new();
    let (server, _) = serve(&lab.root, config(&lab.root));
    let addr = server.local_addr();
    let long = vec![b'a'; 300];
    let mut many_digits = String::from("1");
    many_digits.push_str(&"0".repeat(24));
    let cases: Vec<(&str, Vec<u8>, Expect)> = vec![
        (
            "dot-dot",
            rrq(b"../etc/passwd", b"octet", &[]),
            Expect::Error(2),
        ),
        // Resolved beneath the root: there is no ROOT/etc/passwd.
        (
            "absolute",
            rrq(b"/etc/passwd", b"octet", &[]),
            Expect::Error(1),
        ),
        (
            "inner dot-dot",
            rrq(b"a/../../x", b"octet", &[]),
            Expect::Error(2),
        ),
        (
            "absolute symlink out",
            rrq(b"escape", b"octet", &[]),
            Expect::Error(2),
        ),
        (
            "relative symlink out",
            rrq(b"escape-rel", b"octet", &[]),
            Expect::Error(2),
        ),
        (
            "symlinked dir out",
            rrq(b"dir-out/secret", b"octet", &[]),
            Expect::Error(2),
        ),
        (
            "backslash dot-dot",
            rrq(b"..\\x", b"octet", &[]),
            Expect::Error(2),
        ),
        (
            "backslash",
            rrq(b"sub\\b.txt", b"octet", &[]),
            Expect::Error(2),
        ),
        // The NUL ends the name early; what follows is read as a bad mode.
        (
            "NUL in name",
            rrq(b"511\x00../escape", b"octet", &[]),
            Expect::Error(4),
        ),
        (
            "control char",
            rrq(b"sub/\nb.txt", b"octet", &[]),
            Expect::Error(2),
        ),
        ("300-char name", rrq(&long, b"octet", &[]), Expect::Error(2)),
        (
            "non-UTF-8 name",
            rrq(b"\xff\xfe\xfd", b"octet", &[]),
            Expect::Error(2),
        ),
        ("empty name", rrq(b"", b"octet", &[]), Expect::Error(2)),
        ("directory", rrq(b"sub", b"octet", &[]), Expect::Error(2)),
        ("fifo", rrq(b"fifo", b"octet", &[]), Expect::Error(2)),
        (
            "missing file",
            rrq(b"nope", b"octet", &[]),
            Expect::Error(1),
        ),
        ("mode mail", rrq(b"511", b"mail", &[]), Expect::Error(4)),
        (
            "mode missing",
            b"\x00\x01511\x00".to_vec(),
            Expect::Error(4),
        ),
        (
            "truncated",
            b"\x00\x01511\x00oct".to_vec(),
            Expect::Error(4),
        ),
        (
            "WRQ",
            {
                let mut p = rrq(b"new", b"octet", &[]);
                p[1] = 2;
                p
            },
            Expect::Error(2),
        ),
        (
            "opcode 9",
            b"\x00\x09511\x00octet\x00".to_vec(),
            Expect::Error(4),
        ),
        (
            "ACK on port 69",
            b"\x00\x04\x00\x01".to_vec(),
            Expect::Error(4),
        ),
        (
            "option without value",
            {
                let mut p = rrq(b"511", b"octet", &[]);
                p.extend_from_slice(b"blksize\x00");
                p
            },
            Expect::Error(4),
        ),
        (
            "blksize 0",
            rrq(b"511", b"octet", &[("blksize", "0")]),
            Expect::Error(8),
        ),
        (
            "blksize 7",
            rrq(b"511", b"octet", &[("blksize", "7")]),
            Expect::Error(8),
        ),
        (
            "blksize not a number",
            rrq(b"511", b"octet", &[("blksize", "lots")]),
            Expect::Error(8),
        ),
        // Too big is not an error: the server answers with what it grants (RFC 2348).
        (
            "blksize 99999",
            rrq(b"511", b"octet", &[("blksize", "99999")]),
            Expect::Oack,
        ),
        (
            "huge tsize",
            rrq(b"511", b"octet", &[("tsize", &many_digits)]),
            Expect::Error(8),
        ),
        (
            "oversized request",
            {
                let mut p = rrq(b"511", b"octet", &[]);
                p.extend(std::iter::repeat_n(b'x', 2000));
                p.push(0);
                p
            },
            Expect::Error(4),
        ),
        ("zero-length datagram", Vec::new(), Expect::Silence),
        ("one byte", vec![0], Expect::Silence),
        (
            "ERROR on port 69",
            b"\x00\x05\x00\x00bye\x00".to_vec(),
            Expect::Silence,
        ),
    ];
    assert!(cases.len() >= 15);
    for (what, payload, expect) in cases {
        let s = client();
        s.send_to(&payload, addr).unwrap();
        match expect {
            Expect::Error(code) => {
                let (reply, from) = recv(&s).with_context(|| what.to_owned()).unwrap();
                assert_eq!(from.ip(), addr.ip(), "{what}");
                assert_eq!(opcode(&reply), 5, "{what}: {reply:?}");
                assert_eq!(
                    u16::from_be_bytes([reply[2], reply[3]]),
                    code,
                    "{what}: {}",
                    String::from_utf8_lossy(&reply)
                );
                assert!(!contains(&reply, SECRET), "{what} leaked");
            }
            Expect::Oack => {
                let (reply, from) = recv(&s).unwrap();
                assert_eq!(opcode(&reply), 6, "{what}: {reply:?}");
                assert_eq!(&reply[2..], b"blksize\x001468\x00", "{what}");
                s.send_to(b"\x00\x05\x00\x08\x00", from).unwrap();
            }
            Expect::Silence => {
                s.send_to(&rrq(b"nope", b"octet", &[]), addr).unwrap();
                let (reply, _) = recv(&s).unwrap();
                assert_eq!(
                    &reply[..4],
                    b"\x00\x05\x00\x01",
                    "{what}: the first reply must be the probe's"
                );
            }
        }
    }
    wait_for("transfers to end", REPLY_WAIT, || {
        (server.counters().active() == 0).then_some(())
    })
    .unwrap();
    assert_eq!(server.counters().completed(), 0);
}

/// Runs a transfer of `name` by hand to the end, acking each block; returns the bytes.
fn raw_fetch(s: &UdpSocket, addr: SocketAddr, name: &[u8]) -> Result<Vec<u8>> {
    s.send_to(&rrq(name, b"octet", &[]), addr)?;
    let mut data = Vec::new();
    loop {
        let (p, from) = recv(s)?;
        if opcode(&p) != 3 {
            bail!("expected DATA, got {p:?}");
        }
        data.extend_from_slice(&p[4..]);
        s.send_to(&[0, 4, p[2], p[3]], from)?;
        if p.len() < 4 + 512 {
            return Ok(data);
        }
    }
}

#[test]
fn client_error_frees_the_transfer_at_once() {
    let lab = Lab::new();
    // A timeout of a minute: if the slot comes back well within the wait below, it was the
    // client's ERROR that freed it, not the retry timer.
    let cfg = TftpConfig {
        timeout_ms: 60_000,
        retries: 5,
        ..config(&lab.root)
    };
    let (server, _) = serve(&lab.root, cfg);
    let addr = server.local_addr();
    let s = client();
    s.send_to(
        &rrq(b"big.bin", b"octet", &[("tsize", "0"), ("blksize", "1468")]),
        addr,
    )
    .unwrap();
    let (oack, tid) = recv(&s).unwrap();
    assert_eq!(opcode(&oack), 6);
    assert!(contains(
        &oack,
        format!("tsize\0{}\0", 5 * MIB + 77).as_bytes()
    ));
    assert_eq!(server.counters().active(), 1);
    // What a PXE ROM does after its tsize probe.
    s.send_to(b"\x00\x05\x00\x08aborted\x00", tid).unwrap();
    wait_for(
        "the aborted transfer to be freed",
        Duration::from_secs(20),
        || (server.counters().active() == 0).then_some(()),
    )
    .unwrap();
    assert_eq!(server.counters().failed(), 1);
    assert_eq!(server.counters().completed(), 0);
}

#[test]
fn wrong_tid_gets_error_5_and_the_transfer_goes_on() {
    let lab = Lab::new();
    let (server, _) = serve(&lab.root, config(&lab.root));
    let addr = server.local_addr();
    let s = client();
    s.send_to(&rrq(b"513", b"octet", &[]), addr).unwrap();
    let (first, tid) = recv(&s).unwrap();
    assert_eq!(&first[..4], b"\x00\x03\x00\x01");
    assert_ne!(tid.port(), addr.port(), "a transfer has its own port");
    // Someone else acks block 1 to the transfer's port.
    let intruder = client();
    intruder.send_to(b"\x00\x04\x00\x01", tid).unwrap();
    let (err, _) = recv(&intruder).unwrap();
    assert_eq!(&err[..4], b"\x00\x05\x00\x05");
    // The real client finishes.
    s.send_to(b"\x00\x04\x00\x01", tid).unwrap();
    let (second, _) = recv(&s).unwrap();
    assert_eq!(&second[..4], b"\x00\x03\x00\x02");
    assert_eq!(second.len(), 4 + 1);
    let mut got = first[4..].to_vec();
    got.extend_from_slice(&second[4..]);
    assert_eq!(got, lab.file("513"));
    s.send_to(b"\x00\x04\x00\x02", tid).unwrap();
    wait_for("completion", REPLY_WAIT, || {
        (server.counters().completed() == 1).then_some(())
    })
    .unwrap();
}

#[test]
fn transfers_beyond_the_limit_are_refused() {
    let lab = Lab::new();
    let cfg = TftpConfig {
        max_transfers: 1,
        timeout_ms: 60_000,
        ..config(&lab.root)
    };
    let (server, _) = serve(&lab.root, cfg);
    let addr = server.local_addr();
    let first = client();
    first
        .send_to(&rrq(b"big.bin", b"octet", &[]), addr)
        .unwrap();
    let (_, tid) = recv(&first).unwrap();
    let second = client();
    second.send_to(&rrq(b"511", b"octet", &[]), addr).unwrap();
    let (busy, _) = recv(&second).unwrap();
    assert_eq!(&busy[..4], b"\x00\x05\x00\x00", "{busy:?}");
    // Free the slot; the next request is served.
    first.send_to(b"\x00\x05\x00\x00stop\x00", tid).unwrap();
    wait_for("the slot", REPLY_WAIT, || {
        (server.counters().active() == 0).then_some(())
    })
    .unwrap();
    assert_eq!(raw_fetch(&second, addr, b"511").unwrap(), lab.file("511"));
}

#[test]
fn repeated_request_does_not_start_a_second_transfer() {
    let lab = Lab::new();
    let (server, _) = serve(
        &lab.root,
        TftpConfig {
            timeout_ms: 60_000,
            ..config(&lab.root)
        },
    );
    let addr = server.local_addr();
    let s = client();
    s.send_to(&rrq(b"513", b"octet", &[]), addr).unwrap();
    let (_, tid) = recv(&s).unwrap();
    s.send_to(&rrq(b"513", b"octet", &[]), addr).unwrap();
    // The request port is served in order: once a later probe is answered, the repeated
    // request has been handled (while the first transfer still runs).
    // (A name refused by the request port itself, so no transfer slot is involved.)
    let probe = client();
    probe
        .send_to(&rrq(b"../probe", b"octet", &[]), addr)
        .unwrap();
    recv(&probe).unwrap();
    assert_eq!(server.counters().active(), 1, "no second transfer");
    // Acknowledge the whole file; the only datagrams we get are from the one transfer.
    s.send_to(b"\x00\x04\x00\x01", tid).unwrap();
    let (p, from) = recv(&s).unwrap();
    assert_eq!((&p[..4], from), (&b"\x00\x03\x00\x02"[..], tid));
    s.send_to(b"\x00\x04\x00\x02", tid).unwrap();
    wait_for("completion", REPLY_WAIT, || {
        (server.counters().active() == 0).then_some(())
    })
    .unwrap();
    assert_eq!(server.counters().completed(), 1);
}

#[test]
fn wildcard_listener_answers_from_the_address_asked() {
    let lab = Lab::new();
    let listen = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
    let (server, _) = serve_source(
        listen,
        config(&lab.root),
        Arc::new(RootDir::new(&lab.root).unwrap()),
    );
    let port = server.local_addr().port();
    for ip in [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2)] {
        let s = client();
        s.send_to(&rrq(b"513", b"octet", &[]), (ip, port)).unwrap();
        let (p, from) = recv(&s).unwrap();
        assert_eq!(opcode(&p), 3);
        assert_eq!(
            from.ip(),
            ip,
            "the reply must come from the address the request went to"
        );
        s.send_to(b"\x00\x05\x00\x00done\x00", from).unwrap();
        // Refusals too.
        s.send_to(&rrq(b"../x", b"octet", &[]), (ip, port)).unwrap();
        let (p, from) = recv(&s).unwrap();
        assert_eq!((opcode(&p), from.ip()), (5, ip.into()));
    }
}

#[test]
fn ipv6_loopback_specific_and_wildcard() {
    use std::net::Ipv6Addr;
    if UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_err() {
        eprintln!("skipping ipv6_loopback_specific_and_wildcard: no IPv6 on loopback");
        return;
    }
    let lab = Lab::new();
    for listen in [Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED] {
        let (server, _) = serve_source(
            SocketAddr::from((listen, 0)),
            config(&lab.root),
            Arc::new(RootDir::new(&lab.root).unwrap()),
        );
        let to = SocketAddr::from((Ipv6Addr::LOCALHOST, server.local_addr().port()));
        let s = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
        s.set_read_timeout(Some(REPLY_WAIT)).unwrap();
        assert_eq!(
            raw_fetch(&s, to, b"513").unwrap(),
            lab.file("513"),
            "{listen}"
        );
        s.send_to(&rrq(b"../x", b"octet", &[]), to).unwrap();
        let (p, from) = recv(&s).unwrap();
        assert_eq!((opcode(&p), from.ip()), (5, Ipv6Addr::LOCALHOST.into()));
    }
}

/// The appliance's pattern: per-node scripts from memory, the rest from the directory.
struct Scripts {
    disk: RootDir,
}

impl TftpSource for Scripts {
    fn open(
        &self,
        path: &TftpPath,
        client: SocketAddr,
    ) -> Result<TftpContent, netboot::tftp::SourceError> {
        match path
            .as_str()
            .strip_prefix("boot/")
            .and_then(|p| p.strip_suffix(".ipxe"))
        {
            Some(mac) => Ok(TftpContent::from_bytes(
                format!("#!ipxe\necho {mac} from {}\n", client.ip()).into_bytes(),
            )),
            None => self.disk.open(path, client),
        }
    }
}

#[test]
fn wrapped_source_serves_memory_and_disk() {
    let lab = Lab::new();
    let source = Arc::new(Scripts {
        disk: RootDir::new(&lab.root).unwrap(),
    });
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let (server, seen) = serve_source(local, config(&lab.root), source);
    let addr = server.local_addr();
    let s = client();
    let script = raw_fetch(&s, addr, b"/boot/52-54-00-12-34-56.ipxe").unwrap();
    assert_eq!(script, b"#!ipxe\necho 52-54-00-12-34-56 from 127.0.0.1\n");
    assert_eq!(raw_fetch(&s, addr, b"sub/b.txt").unwrap(), b"inside\n");
    wait_for("both reported", REPLY_WAIT, || {
        (seen.lock().unwrap().len() == 2).then_some(())
    })
    .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].1, "boot/52-54-00-12-34-56.ipxe");
    assert_eq!(seen[0].2, script.len() as u64);
    assert_eq!(seen[0].0, s.local_addr().unwrap());
}
