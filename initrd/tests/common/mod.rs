//! Helpers shared by the integration tests: running the real tools, finding test inputs.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `program` with `args`, feeding `stdin`, and returns stdout; panics with stderr and an
/// install hint on failure.
pub fn run(program: &str, args: &[&str], stdin: &[u8], cwd: Option<&Path>) -> Vec<u8> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let mut child = command.spawn().unwrap_or_else(|error| {
        panic!(
            "cannot run {program}: {error} (install it: apt-get install -y {})",
            package_of(program)
        )
    });
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().expect("wait for child");
    feeder.join().expect("stdin feeder");
    assert!(
        output.status.success(),
        "{program} {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn package_of(program: &str) -> &'static str {
    match program {
        "cpio" => "cpio",
        "bsdtar" => "libarchive-tools",
        "zstd" => "zstd",
        "gzip" => "gzip",
        "depmod" => "kmod",
        _ => "(the package providing it)",
    }
}

/// True when the tests run as root (needed for chroot and for extracting device nodes).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .map(|line| line.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// The modules directory of an unpacked Debian cloud kernel, if one is present:
/// `$INITRD_TEST_MODULES_DIR`, or `/work/cache/**/lib/modules/*-cloud-amd64` (depth-limited).
pub fn cloud_kernel_modules_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("INITRD_TEST_MODULES_DIR") {
        return Some(PathBuf::from(dir));
    }
    find_modules_dir(Path::new("/work/cache"), 0)
}

fn find_modules_dir(dir: &Path, depth: usize) -> Option<PathBuf> {
    if depth > 5 {
        return None;
    }
    let modules = dir.join("lib/modules");
    if let Ok(entries) = std::fs::read_dir(&modules) {
        let mut versions: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.ends_with("-cloud-amd64"))
                    && path.join("kernel").is_dir()
            })
            .collect();
        versions.sort();
        if let Some(last) = versions.pop() {
            return Some(last);
        }
    }
    let mut children: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.path())
        .collect();
    children.sort();
    children
        .into_iter()
        .find_map(|child| find_modules_dir(&child, depth + 1))
}

/// One line of `bsdtar -tvf` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub mode: String,
    pub uid: String,
    pub gid: String,
    pub size_or_device: String,
    pub name: String,
    pub link_target: Option<String>,
}

pub fn parse_bsdtar_listing(text: &str) -> Vec<Listed> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 9, "unexpected bsdtar line {line:?}");
            let rest = fields[8..].join(" ");
            let (name, link_target) = match rest.split_once(" -> ") {
                Some((name, target)) => (name.to_string(), Some(target.to_string())),
                None => (rest, None),
            };
            Listed {
                mode: fields[0].to_string(),
                uid: fields[2].to_string(),
                gid: fields[3].to_string(),
                size_or_device: fields[4].to_string(),
                name,
                link_target,
            }
        })
        .collect()
}
