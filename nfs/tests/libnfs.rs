//! An independent NFSv3 client against our server: libnfs-utils (`nfs-ls`, `nfs-cat`, Debian
//! package `libnfs-utils`) over memfs. The URL's `nfsport`/`mountport` options make libnfs skip
//! rpcbind. libnfs binds a privileged source port when run as root and falls back to an
//! ephemeral one otherwise; the server requires a privileged port only when the test runs as
//! root.
//!
//! Skipped when `nfs-ls` is not installed, except under `CI=true`, where its absence fails.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use nfs::fs::Filesystem;
use nfs::memfs::{MemFs, EXPORT, MANY_FILES};
use nfs::server::{Server, ServerConfig};

const NFS_LS: &str = "/usr/bin/nfs-ls";
const NFS_CAT: &str = "/usr/bin/nfs-cat";

fn tools_present() -> bool {
    let present = Path::new(NFS_LS).exists() && Path::new(NFS_CAT).exists();
    if !present {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {NFS_LS}/{NFS_CAT} are missing: install libnfs-utils"
        );
        eprintln!("skipping: libnfs-utils not installed");
    }
    present
}

fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn libnfs_lists_and_reads() {
    if !tools_present() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fs: Arc<dyn Filesystem> = Arc::new(MemFs::new());
    // As root, libnfs binds a reserved source port: require it, which also checks that knfsd's
    // `secure` rule does not lock such clients out.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let config = ServerConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        require_privileged_port: root,
        ..ServerConfig::default()
    };
    let server = rt.block_on(Server::start(config, fs)).unwrap();
    let port = server.local_addrs()[0].port();
    let export = std::str::from_utf8(EXPORT).unwrap();
    let url = |path: &str| {
        format!("nfs://127.0.0.1{export}{path}?version=3&nfsport={port}&mountport={port}")
    };

    let listing = run(NFS_LS, &["-R", &url("")]);
    let lines: Vec<&str> = listing.lines().collect();
    let find = |name: &str| {
        lines
            .iter()
            .find(|l| l.split_whitespace().last() == Some(name))
            .unwrap_or_else(|| panic!("{name} not in listing:\n{listing}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    // Modes, owners, sizes (one past 4 GiB), symlinks and devices as libnfs 4.0 shows them:
    // its nfs-ls prints names relative to the URL, only the rwx bits (no s/t) and no type
    // letter for FIFOs.
    assert_eq!(find("bin/su")[0], "-rwxr-xr-x");
    assert_eq!(find("bin/prog")[0], "-rwx--x--x");
    let shadow = find("etc/shadow");
    assert_eq!((shadow[0], shadow[2], shadow[3]), ("-rw-r-----", "0", "42"));
    let big = find("big");
    assert_eq!(big[4], ((5u64 << 30) + 3).to_string());
    assert!(find("link")[0].starts_with('l'));
    assert!(find("dev/null")[0].starts_with('c'));
    assert_eq!(find("dev/initctl")[0], "rw-------");
    assert_eq!(find("data/a")[1], "2", "nlink of a hard-linked file");
    let many = lines.iter().filter(|l| l.contains("many/file-")).count();
    assert_eq!(many, MANY_FILES);

    assert_eq!(run(NFS_CAT, &[&url("/etc/hostname")]), "node1\n");
    assert_eq!(run(NFS_CAT, &[&url("/data/b")]), "two names\n");

    let s = server.stats();
    assert_eq!(s.connections_rejected, 0);
    assert!(
        s.calls.nfs[17] > 0 || s.calls.nfs[16] > 0,
        "readdir used: {s:?}"
    );
    rt.block_on(server.shutdown());
}
