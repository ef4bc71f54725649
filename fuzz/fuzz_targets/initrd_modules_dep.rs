//! Hostile `modules.dep` / `modules.alias` / `.modinfo` text: parsing and the closure walk
//! (cycles, deep chains, missing dependencies) must return errors, never panic or recurse.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Input layout: modules.dep text, then optionally 0xFF and modules.alias text, then
    // optionally 0xFF and wanted names (whitespace separated).
    let mut parts = data.splitn(3, |&byte| byte == 0xff);
    let dep = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let alias = parts.next().map(String::from_utf8_lossy);
    let wanted = parts
        .next()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();

    let _ = initrd::modules::parse_modules_builtin(&dep);
    let _ = initrd::modules::parse_builtin_modinfo(data);
    let _ = initrd::modinfo::parse_modinfo(data);
    if let Some(alias) = &alias {
        let _ = initrd::modules::parse_modules_alias(alias);
    }
    let Ok(index) =
        initrd::ModuleIndex::from_modules_dep_text("/nonexistent", &dep, alias.as_deref())
    else {
        return;
    };
    let wanted: Vec<&str> = wanted.split_whitespace().take(64).collect();
    let _ = index.closure(&wanted);
});
