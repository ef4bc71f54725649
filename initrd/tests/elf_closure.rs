//! The library closure of this machine's own programs, compared with `ldd`, and proved
//! complete by running the programs chrooted into an extracted initramfs.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::{is_root, run};
use initrd::{Compression, FoundVia, InitramfsBuilder, LibraryResolver};

/// Absolute, because the programs run with an empty environment (no PATH).
const CHROOT: &str = "/usr/sbin/chroot";

/// The sonames `ldd` reports (left of `=>`), plus the interpreter path.
fn ldd_names(program: &str) -> BTreeSet<String> {
    let output = String::from_utf8(run("ldd", &[program], b"", None)).unwrap();
    output
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.starts_with("linux-vdso") {
                return None;
            }
            let name = match line.split_once("=>") {
                Some((name, _)) => name.trim(),
                None => line.split_whitespace().next()?,
            };
            Some(name.to_string())
        })
        .collect()
}

fn programs_present(candidates: &[&'static str]) -> Vec<&'static str> {
    candidates
        .iter()
        .copied()
        .filter(|p| Path::new(p).exists())
        .collect()
}

#[test]
fn closure_of_ls_has_libc_and_the_interpreter() {
    let closure = LibraryResolver::new("/")
        .unwrap()
        .closure_of("/bin/ls")
        .unwrap();
    let interpreter = closure.interpreter.as_ref().expect("ls is dynamic");
    assert_eq!(interpreter.found_via, FoundVia::Interpreter);
    assert!(interpreter.path.contains("ld-linux"), "{interpreter:?}");
    assert!(
        closure.libraries.iter().any(|l| l.name == "libc.so.6"),
        "{closure:?}"
    );
}

#[test]
fn closures_match_ldd() {
    for program in programs_present(&["/bin/ls", "/usr/bin/curl", "/usr/bin/ssh", "/usr/bin/gpg"]) {
        let closure = LibraryResolver::new("/")
            .unwrap()
            .closure_of(program)
            .unwrap();
        let ours: BTreeSet<String> = closure.iter().map(|l| l.name.clone()).collect();
        assert_eq!(ours, ldd_names(program), "{program}");
    }
}

/// Builds an initramfs with `programs` from this machine, extracts it with GNU cpio and runs
/// each program inside it with chroot.
fn build_extract_and_run(builder: &mut InitramfsBuilder, programs: &[&str]) {
    for program in programs {
        builder.add_executable(Path::new("/"), program).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let image = builder.to_bytes(Compression::default()).unwrap();
    let cpio = run("zstd", &["-d", "-c", "-q"], &image, None);
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    run(
        "cpio",
        &["-idm", "--quiet", "--no-absolute-filenames"],
        &cpio,
        Some(&root),
    );
    for program in programs {
        let output = Command::new(CHROOT)
            .arg(&root)
            .arg(program)
            .arg("--version")
            .env_clear()
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{program} does not start inside the initramfs: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let listing = Command::new(CHROOT)
        .arg(&root)
        .args(["/bin/ls", "/"])
        .env_clear()
        .output()
        .unwrap();
    assert!(listing.status.success());
    let names = String::from_utf8_lossy(&listing.stdout);
    assert!(names.lines().any(|n| n == "usr"), "{names}");
}

#[test]
fn programs_run_from_an_extracted_initramfs_with_merged_usr() {
    if !is_root() {
        eprintln!("skipped: chroot needs root");
        return;
    }
    let mut builder = InitramfsBuilder::new();
    builder.mirror_merged_usr(Path::new("/")).unwrap();
    builder.add_base_layout().unwrap();
    build_extract_and_run(
        &mut builder,
        &programs_present(&["/bin/ls", "/usr/bin/curl"]),
    );
}

#[test]
fn programs_run_even_when_the_archive_has_real_lib_and_bin_directories() {
    if !is_root() {
        eprintln!("skipped: chroot needs root");
        return;
    }
    // A layout like a classic initramfs: real /bin, /lib, /lib64 directories, made before the
    // libraries are added. The host's merged-/usr links cannot be mirrored; the libraries must
    // still be found under the names the loader uses.
    let mut builder = InitramfsBuilder::new();
    for dir in ["bin", "sbin", "lib", "lib64", "usr/bin"] {
        builder.archive_mut().add_dir(dir, 0o755).unwrap();
    }
    builder
        .archive_mut()
        .add_file("lib/placeholder", 0o644, "")
        .unwrap();
    build_extract_and_run(
        &mut builder,
        &programs_present(&["/bin/ls", "/usr/bin/curl"]),
    );
}

#[test]
fn a_program_from_outside_the_root_gets_libraries_from_the_root() {
    if !is_root() {
        eprintln!("skipped: chroot needs root");
        return;
    }
    // Like target/release/clustermaker: the binary is a host file, installed under a new name.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("tool");
    fs::copy("/bin/ls", &copy).unwrap();
    let mut builder = InitramfsBuilder::new();
    builder.mirror_merged_usr(Path::new("/")).unwrap();
    let closure = builder
        .add_executable_file(&copy, "usr/bin/clustermaker", Path::new("/"))
        .unwrap();
    assert!(closure.libraries.iter().any(|l| l.name == "libc.so.6"));
    let cpio = builder.to_bytes(Compression::None).unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    run("cpio", &["-idm", "--quiet"], &cpio, Some(&root));
    let output = Command::new(CHROOT)
        .arg(&root)
        .args(["/usr/bin/clustermaker", "/"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
