//! `clustermaker image …` as a user runs it, including a build killed with SIGKILL.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_clustermaker");
const KVER: &str = "9.9.9-test";

struct Lab {
    tmp: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path();
        fs::write(
            p.join("c.toml"),
            format!("state_dir = \"{}\"\n", p.join("state").display()),
        )
        .unwrap();
        let m = p.join("modules").join(KVER);
        fs::create_dir_all(m.join("kernel")).unwrap();
        fs::write(m.join("kernel/a.ko"), "A").unwrap();
        fs::write(m.join("modules.dep"), "kernel/a.ko:\n").unwrap();
        fs::write(p.join(format!("vmlinuz-{KVER}")), "kernel").unwrap();
        let list = "sh mount insmod udhcpc ip ifconfig route wget cat cut tr sed grep sleep setsid cttyhack hostname basename uname";
        fs::write(
            p.join("busybox"),
            format!("#!/bin/sh\nprintf '%s\\n' {list}\n"),
        )
        .unwrap();
        fs::set_permissions(p.join("busybox"), fs::Permissions::from_mode(0o755)).unwrap();
        Lab { tmp }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config").arg(self.path("c.toml")).args(args);
        c.env_remove("SOURCE_DATE_EPOCH");
        c
    }

    fn build_args(&self) -> Vec<String> {
        let p = self.tmp.path();
        vec![
            "--kernel".into(),
            p.join(format!("vmlinuz-{KVER}")).display().to_string(),
            "--modules".into(),
            p.join("modules").join(KVER).display().to_string(),
            "--busybox".into(),
            p.join("busybox").display().to_string(),
            "--no-default-modules".into(),
            "--module".into(),
            "a".into(),
            "--no-agent".into(),
            "--compress".into(),
            "none".into(),
        ]
    }

    fn build_cmd(&self, name: &str, src: &Path, json: bool) -> Command {
        let from = format!("dir:{}", src.display());
        let mut args: Vec<String> = vec![
            "image".into(),
            "build".into(),
            name.into(),
            "--from".into(),
            from,
        ];
        args.extend(self.build_args());
        if json {
            args.push("--json".into());
        }
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        self.cmd(&refs)
    }

    fn ok(&self, mut c: Command) -> Output {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(self.cmd(args));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

fn tree(dir: &Path, files: usize, size: usize) {
    for i in 0..files {
        let d = dir.join(format!("usr/share/d{}", i % 50));
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(format!("f{i}")), vec![(i % 251) as u8; size]).unwrap();
    }
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("etc/motd"), "one\n").unwrap();
}

#[test]
fn build_snapshot_update_rollback_verify_rm_with_json() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new();
    let src = lab.path("src");
    tree(&src, 20, 1000);
    let b: serde_json::Value =
        serde_json::from_slice(&lab.ok(lab.build_cmd("img", &src, true)).stdout).unwrap();
    let v1 = b["version"].as_str().unwrap().to_string();
    assert_eq!(b["meta"]["source"]["kind"], "dir");
    assert_eq!(b["meta"]["kernel"]["version"], KVER);
    let s = lab.json(&["image", "snapshot", "img", "good", "--json"]);
    assert_eq!(s["from_version"], v1.as_str());
    fs::write(src.join("etc/motd"), "two\n").unwrap();
    let mut up: Vec<String> = vec![
        "image".into(),
        "update".into(),
        "img".into(),
        "--json".into(),
    ];
    up.extend(lab.build_args());
    let up: Vec<&str> = up.iter().map(|s| s.as_str()).collect();
    let u = lab.json(&up);
    assert_ne!(u["version"], v1.as_str());
    let list = lab.json(&["image", "list", "--json"]);
    assert_eq!(list[0]["name"], "img");
    assert_eq!(list[0]["current"], u["version"]);
    assert_eq!(list[0]["snapshots"][0]["name"], "good");
    assert!(list[0]["snapshots"][0]["space"]["unique_bytes"]
        .as_u64()
        .is_some());
    let r = lab.json(&["image", "rollback", "img@good", "--json"]);
    assert_eq!(r["previous"], u["version"]);
    let cur = lab.path("state/images/img/current/root/etc/motd");
    assert_eq!(fs::read_to_string(cur).unwrap(), "one\n");
    let v = lab.json(&["image", "verify", "img", "--json"]);
    assert_eq!(v["ok"], true);

    // Errors are one line with the fix.
    let out = lab
        .cmd(&["image", "rollback", "img@nosuch"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("fix:") && err.trim().lines().count() == 1,
        "{err}"
    );

    // rm refuses while a node boots the image.
    lab.ok(lab.cmd(&[
        "node",
        "add",
        "n1",
        "--mac",
        "52:54:00:00:00:01",
        "--image",
        "img",
    ]));
    let out = lab.cmd(&["image", "rm", "img"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("n1"));
    lab.ok(lab.cmd(&["image", "rm", "img", "--force"]));
    assert!(!lab.path("state/images/img").exists());
}

#[test]
fn a_build_killed_with_sigkill_leaves_the_current_version_intact() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let lab = Lab::new();
    let src = lab.path("src");
    tree(&src, 20, 1000);
    lab.ok(lab.build_cmd("img", &src, false));
    let dir = lab.path("state/images/img");
    let v1 = fs::read_link(dir.join("current")).unwrap();

    // A bigger tree so the next build takes a while; kill it while it copies.
    let big = lab.path("big");
    tree(&big, 4000, 8192);
    let mut child = lab.build_cmd("img", &big, false).spawn().unwrap();
    let start = Instant::now();
    let staged = loop {
        let found = fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .find(|e| e.file_name().to_string_lossy().starts_with(".build-"))
            .map(|e| e.path());
        if let Some(p) = found {
            if p.join("root/usr/share").exists() {
                break p;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the build never started staging"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "killed mid-build, not finished"
    );
    assert!(
        staged.exists(),
        "the killed build left its staging directory"
    );
    assert_eq!(
        fs::read_link(dir.join("current")).unwrap(),
        v1,
        "current untouched"
    );
    assert!(dir.join("current/meta.json").is_file() && dir.join("current/root/etc/motd").is_file());
    assert_eq!(fs::read_dir(dir.join("versions")).unwrap().count(), 1);

    // The next run cleans up and publishes.
    lab.ok(lab.build_cmd("img", &big, false));
    assert!(!staged.exists(), "leftover removed");
    assert_ne!(fs::read_link(dir.join("current")).unwrap(), v1);
    assert_eq!(fs::read_dir(dir.join("versions")).unwrap().count(), 2);
}
