//! Hostile archive paths and symlink targets: inserts, lookups through archive symlinks and
//! writing must return errors, never panic or loop. Every stored path must stay a valid
//! archive path.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut archive = initrd::Archive::new();
    // One operation per line: `d PATH`, `f PATH`, `l PATH TARGET`, `r PATH` (resolve).
    for line in text.lines().take(256) {
        let mut words = line.splitn(3, ' ');
        let (op, path, rest) = (words.next(), words.next().unwrap_or(""), words.next());
        match op {
            Some("d") => {
                let _ = archive.add_dir(path, 0o755);
            }
            Some("f") => {
                let _ = archive.add_file(path, 0o644, rest.unwrap_or("").as_bytes().to_vec());
            }
            Some("l") => {
                let _ = archive.add_symlink(path, rest.unwrap_or(""));
            }
            Some("r") => {
                let _ = archive.resolve(path);
            }
            _ => {}
        }
    }
    for (path, _) in archive.iter() {
        assert!(initrd::ArchivePath::new(path.as_str()).is_ok());
    }
    let bytes = archive.to_bytes().expect("in-memory archives always write");
    assert_eq!(bytes.len() % 4, 0);
});
