//! The archive and its compression, checked with the real tools: GNU `cpio`, libarchive's
//! `bsdtar`, `zstd` and `gzip`.

mod common;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use common::{is_root, parse_bsdtar_listing, run};
use initrd::{Archive, Compression};

/// An archive with one of everything, including awkward sizes and an implicit directory.
fn sample_archive(host_file: &std::path::Path) -> Archive {
    let mut archive = Archive::new();
    archive.set_mtime(1_700_000_000);
    archive
        .add_file("init", 0o755, "#!/bin/sh\necho hi\n")
        .unwrap();
    archive.add_file("etc/empty", 0o644, "").unwrap();
    archive.add_file("etc/odd", 0o600, "12345").unwrap();
    archive.add_file("usr/bin/su", 0o4755, "suid").unwrap();
    archive
        .add_host_file("usr/share/data.bin", 0o644, host_file)
        .unwrap();
    archive.add_dir("tmp", 0o1777).unwrap();
    archive.add_dir("var/empty", 0o700).unwrap();
    archive.add_symlink("bin", "usr/bin").unwrap();
    archive
        .add_symlink("etc/mtab", "/proc/self/mounts")
        .unwrap();
    archive.add_char_device("dev/console", 0o600, 5, 1).unwrap();
    archive.add_block_device("dev/vda", 0o660, 254, 0).unwrap();
    archive
}

fn host_data(dir: &std::path::Path) -> (std::path::PathBuf, Vec<u8>) {
    let contents: Vec<u8> = (0..100_003u32).map(|i| (i * 7 % 256) as u8).collect();
    let path = dir.join("data.bin");
    fs::write(&path, &contents).unwrap();
    (path, contents)
}

const EXPECTED_NAMES: [&str; 17] = [
    "bin",
    "dev",
    "dev/console",
    "dev/vda",
    "etc",
    "etc/empty",
    "etc/mtab",
    "etc/odd",
    "init",
    "tmp",
    "usr",
    "usr/bin",
    "usr/bin/su",
    "usr/share",
    "usr/share/data.bin",
    "var",
    "var/empty",
];

#[test]
fn gnu_cpio_lists_exactly_our_entries() {
    let dir = tempfile::tempdir().unwrap();
    let (host_file, _) = host_data(dir.path());
    let bytes = sample_archive(&host_file).to_bytes().unwrap();
    let listing = String::from_utf8(run("cpio", &["-it", "--quiet"], &bytes, None)).unwrap();
    let names: Vec<&str> = listing.lines().collect();
    assert_eq!(names, EXPECTED_NAMES);
}

#[test]
fn bsdtar_sees_types_modes_owners_and_link_targets() {
    let dir = tempfile::tempdir().unwrap();
    let (host_file, contents) = host_data(dir.path());
    let bytes = sample_archive(&host_file).to_bytes().unwrap();
    let archive_path = dir.path().join("a.cpio");
    fs::write(&archive_path, &bytes).unwrap();
    let listing = String::from_utf8(run(
        "bsdtar",
        &["-tvf", archive_path.to_str().unwrap()],
        b"",
        None,
    ))
    .unwrap();
    let entries = parse_bsdtar_listing(&listing);
    let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, EXPECTED_NAMES);
    let entry = |name: &str| entries.iter().find(|e| e.name == name).unwrap();
    for listed in &entries {
        assert_eq!(
            (listed.uid.as_str(), listed.gid.as_str()),
            ("0", "0"),
            "{listed:?}"
        );
    }
    assert_eq!(entry("bin").mode, "lrwxrwxrwx");
    assert_eq!(entry("bin").link_target.as_deref(), Some("usr/bin"));
    assert_eq!(
        entry("etc/mtab").link_target.as_deref(),
        Some("/proc/self/mounts")
    );
    assert_eq!(entry("dev/console").mode, "crw-------");
    assert_eq!(entry("dev/console").size_or_device, "5,1");
    assert_eq!(entry("dev/vda").mode, "brw-rw----");
    assert_eq!(entry("dev/vda").size_or_device, "254,0");
    assert_eq!(entry("init").mode, "-rwxr-xr-x");
    assert_eq!(entry("usr/bin/su").mode, "-rwsr-xr-x");
    assert_eq!(entry("tmp").mode, "drwxrwxrwt");
    assert_eq!(entry("var/empty").mode, "drwx------");
    assert_eq!(entry("var").mode, "drwxr-xr-x", "implicit parent");
    assert_eq!(entry("etc/odd").size_or_device, "5");
    assert_eq!(
        entry("usr/share/data.bin").size_or_device,
        contents.len().to_string()
    );
}

#[test]
fn gnu_cpio_extracts_identical_content() {
    if !is_root() {
        eprintln!("skipped: extracting device nodes and owners needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (host_file, contents) = host_data(dir.path());
    let bytes = sample_archive(&host_file).to_bytes().unwrap();
    let out = dir.path().join("out");
    fs::create_dir(&out).unwrap();
    run(
        "cpio",
        &["-idm", "--quiet", "--no-absolute-filenames"],
        &bytes,
        Some(&out),
    );
    assert_eq!(fs::read(out.join("usr/share/data.bin")).unwrap(), contents);
    assert_eq!(fs::read(out.join("init")).unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(fs::read(out.join("etc/odd")).unwrap(), b"12345");
    assert!(fs::read(out.join("etc/empty")).unwrap().is_empty());
    assert_eq!(
        fs::read_link(out.join("bin")).unwrap().to_str(),
        Some("usr/bin")
    );
    let su = fs::metadata(out.join("usr/bin/su")).unwrap();
    assert_eq!(su.permissions().mode() & 0o7777, 0o4755);
    assert_eq!((su.uid(), su.gid()), (0, 0));
    assert_eq!(su.mtime(), 1_700_000_000);
    let console = fs::symlink_metadata(out.join("dev/console")).unwrap();
    assert!(console.file_type().is_char_device());
    assert_eq!(console.rdev(), (5 << 8) | 1);
    let vda = fs::symlink_metadata(out.join("dev/vda")).unwrap();
    assert!(vda.file_type().is_block_device());
    assert_eq!(
        fs::metadata(out.join("tmp")).unwrap().permissions().mode() & 0o7777,
        0o1777
    );
}

#[test]
fn building_twice_gives_identical_bytes_compressed_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let (host_file, _) = host_data(dir.path());
    for compression in [
        Compression::None,
        Compression::gzip(9).unwrap(),
        Compression::zstd(3).unwrap(),
        Compression::zstd(19).unwrap(),
    ] {
        let build = || {
            let cpio = sample_archive(&host_file).to_bytes().unwrap();
            compression.compress(&cpio).unwrap()
        };
        assert_eq!(build(), build(), "{compression}");
    }
}

#[test]
fn zstd_and_gzip_tools_decompress_our_output() {
    let dir = tempfile::tempdir().unwrap();
    let (host_file, _) = host_data(dir.path());
    let archive = sample_archive(&host_file);
    let cpio = archive.to_bytes().unwrap();
    let zstd = archive
        .write(Compression::zstd(19).unwrap().writer(Vec::new()).unwrap())
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(run("zstd", &["-d", "-c", "-q"], &zstd, None), cpio);
    let gzip = Compression::gzip(6).unwrap().compress(&cpio).unwrap();
    assert_eq!(run("gzip", &["-d", "-c"], &gzip, None), cpio);
    // gzip -t also checks the CRC and length trailer.
    run("gzip", &["-t"], &gzip, None);
    run("zstd", &["-t", "-q"], &zstd, None);
}

#[test]
fn a_large_archive_streams_through_a_compressor() {
    // 64 MiB of host file content goes through the archive writer and zstd without being
    // held in memory as a whole (only the compressed output is kept).
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    let file = fs::File::create(&big).unwrap();
    file.set_len(64 << 20).unwrap();
    let mut archive = Archive::new();
    archive.add_host_file("big", 0o644, &big).unwrap();
    let compressed = archive
        .write(Compression::default().writer(Vec::new()).unwrap())
        .unwrap()
        .finish()
        .unwrap();
    assert!(compressed.len() < 1 << 20, "zeros compress well");
    let listing = String::from_utf8(run(
        "cpio",
        &["-it", "--quiet"],
        &zstd::decode_all(&compressed[..]).unwrap(),
        None,
    ))
    .unwrap();
    assert_eq!(listing, "big\n");
}
