//! Hostile ELF files: the loader-view parser, section lookup and `.modinfo` reading must
//! return errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = initrd::elf::parse_elf(data) {
        // Whatever parsed must be usable.
        let _ = info.is_static();
        let _ = info.is_compatible_with(&info);
    }
    let _ = initrd::elf::section_data(data, ".modinfo");
    let _ = initrd::modinfo::read_modinfo(data, "fuzz.ko");
    // A hostile program given to the resolver: the root does not exist, so only the parse and
    // the failure paths run.
    if let Ok(resolver) = initrd::LibraryResolver::new("/nonexistent-fuzz-root") {
        let _ = resolver.closure_of_bytes(data, "fuzz", "/usr/bin");
    }
});
