//! Snapshots on file systems with reflinks (XFS, btrfs), on loop devices made here. Skipped
//! when not root or when mkfs.xfs / mkfs.btrfs are missing, except under CI=true, where a
//! missing tool fails the test (`.ci/run` installs xfsprogs and btrfs-progs).

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{make_root, Env};
use images::{Silent, Source, Store};

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

fn which(tool: &str) -> bool {
    Command::new("sh")
        .args([
            "-c",
            &format!("command -v {tool} || test -x /usr/sbin/{tool} || test -x /sbin/{tool}"),
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// A loop-mounted file system of type `fs`, or `None` (skipped) when that cannot be.
fn loop_fs(dir: &Path, fs_type: &str, mkfs: &str, size_mb: u64) -> Option<Mount> {
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for a loop mount");
        return None;
    }
    if !which(mkfs) {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{mkfs} is missing (fix: apt-get install xfsprogs btrfs-progs)");
        }
        eprintln!("skipped: {mkfs} not installed");
        return None;
    }
    let img = dir.join(format!("{fs_type}.img"));
    let f = fs::File::create(&img).unwrap();
    f.set_len(size_mb << 20).unwrap();
    drop(f);
    let out = Command::new(mkfs).arg("-q").arg(&img).output().unwrap();
    assert!(
        out.status.success(),
        "{mkfs}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mnt = dir.join(format!("{fs_type}-mnt"));
    fs::create_dir_all(&mnt).unwrap();
    let out = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&mnt)
        .output()
        .unwrap();
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).into_owned();
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("cannot loop-mount {fs_type}: {msg}");
        }
        eprintln!("skipped: cannot loop-mount {fs_type}: {msg}");
        return None;
    }
    Some(Mount(mnt))
}

fn reflink_snapshots_on(fs_type: &str, mkfs: &str, size_mb: u64) {
    let env = Env::new();
    let Some(mount) = loop_fs(env.tmp.path(), fs_type, mkfs, size_mb) else {
        return;
    };
    let store = Store::new(mount.0.join("images"));
    let src = env.path("src");
    make_root(&src, 200, 10 << 20);
    let v1 = images::build(
        &store,
        "img",
        &env.opts(Source::Dir { path: src.clone() }),
        &Silent,
    )
    .unwrap();

    let snap = images::snapshot(&store, "img", Some("s"), &Silent).unwrap();
    println!(
        "{fs_type}: snapshot method {}, unique {} B, shared {} B, image {} B ({:.2} % new)",
        snap.method,
        snap.space.unique_bytes,
        snap.space.shared_bytes,
        snap.image_bytes,
        100.0 * snap.space.unique_bytes as f64 / snap.image_bytes as f64
    );
    assert_eq!(snap.method, "reflink", "{:?}", snap.shared);
    assert!(
        snap.space.reflinks_seen,
        "FIEMAP reports shared extents: {:?}",
        snap.space
    );
    assert!(
        snap.space.unique_bytes * 20 < snap.image_bytes,
        "{:?}",
        snap.space
    );

    // An update shares unchanged files by reflink too.
    fs::write(src.join("etc/motd"), "changed\n").unwrap();
    let v2 = images::build(&store, "img", &env.opts(Source::Dir { path: src }), &Silent).unwrap();
    assert!(v2.shared.reflinked > 100, "{:?}", v2.shared);
    assert_eq!(v2.shared.hardlinked, 0);

    // With reflinks an in-place write into a version cannot reach the snapshot.
    let f = store
        .version_dir("img", &v1.version)
        .join("root/usr/bin/user-owned");
    fs::OpenOptions::new()
        .write(true)
        .open(&f)
        .unwrap()
        .write_all(b"Y")
        .unwrap();
    let s = store
        .snapshot_dir("img", "s")
        .join("root/usr/bin/user-owned");
    assert_eq!(fs::read(s).unwrap(), b"x");
    let checks = images::verify(&store, "img", &Silent).unwrap();
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    drop(mount);
}

#[test]
fn xfs_snapshots_use_reflinks() {
    reflink_snapshots_on("xfs", "mkfs.xfs", 320);
}

#[test]
fn btrfs_snapshots_use_reflinks() {
    reflink_snapshots_on("btrfs", "mkfs.btrfs", 200);
}
