//! Hostile root tarballs and OCI image tars: import must return errors, never panic, never
//! write outside the staging root, and keep memory bounded. The first byte picks the path:
//! even → a root tarball (plain or gzip), odd → an OCI / `docker save` image tar.
#![no_main]

use std::io::Cursor;

use images::import::{apply_tar, decompressed, from_oci, TarOptions};
use images::tree::TreeWriter;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else { return };
    let Ok(tmp) = tempfile::tempdir() else { return };
    let root = tmp.path().join("root");
    let sentinel = tmp.path().join("outside");
    if std::fs::create_dir(&root).is_err() || std::fs::create_dir(&sentinel).is_err() {
        return;
    }
    let mut tree = TreeWriter::new(&root);
    if mode % 2 == 0 {
        if let Ok(mut r) = decompressed(Cursor::new(body)) {
            let _ = apply_tar(&mut r, &mut tree, TarOptions { whiteouts: mode % 4 == 2 }, &images::Silent);
        }
    } else {
        let file = tmp.path().join("image.tar");
        if std::fs::write(&file, body).is_ok() {
            let _ = from_oci(&file, &mut tree, &images::Silent);
        }
    }
    let _ = tree.finish();
    // Nothing may appear beside the root.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    for n in &names {
        let n = n.to_string_lossy();
        assert!(n == "root" || n == "outside" || n == "image.tar", "wrote {n} outside the root");
    }
    assert_eq!(std::fs::read_dir(&sentinel).map(|r| r.count()).unwrap_or(0), 0);
});
