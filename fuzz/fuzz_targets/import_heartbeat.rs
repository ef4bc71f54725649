//! Hostile Heartbeat files: the ha.cf, haresources and authkeys parsers return a result or an
//! error, never panic; whatever they accept validates and survives the TOML round trip.
//!
//! Input layout: ha.cf text, then optionally 0xFF and haresources text, then optionally 0xFF
//! and authkeys text (bytes that are not UTF-8 become U+FFFD, as when reading files).
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::config::HaConfig;
use runtime::import::{heartbeat, render_toml, Imported};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0xff);
    let ha_cf = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let haresources = parts.next().map(String::from_utf8_lossy);
    let authkeys = parts.next().map(String::from_utf8_lossy);

    if let Some(text) = &authkeys {
        if let Ok(key) = heartbeat::parse_authkeys(text) {
            assert_eq!(key.len(), 32);
        }
    }

    let mut ha = HaConfig {
        node: "a".into(),
        ..HaConfig::default()
    };
    let mut warnings = Vec::new();
    let cf = heartbeat::parse_ha_cf(&ha_cf, &mut ha, &mut warnings);
    check_error(&cf);
    let res = match &haresources {
        Some(text) => {
            let r = heartbeat::parse_haresources(text, &mut ha, &mut warnings);
            check_error(&r);
            r
        }
        None => Ok(()),
    };
    // haresources on its own, against a config that knows no peer yet.
    if let Some(text) = &haresources {
        let _ = heartbeat::parse_haresources(text, &mut HaConfig::default(), &mut Vec::new());
    }
    if cf.is_ok() && res.is_ok() {
        if let Err(e) = ha.validate() {
            panic!("imported config does not validate: {} {}", e.key, e.reason);
        }
        round_trip(Imported {
            ha,
            key: None,
            warnings,
        });
    }
});

fn check_error(r: &Result<(), runtime::import::ImportError>) {
    if let Err(e) = r {
        let shown = e.to_string();
        assert!(!shown.contains('\n') && !shown.contains('\r'), "{shown:?}");
    }
}

fn round_trip(imported: Imported) {
    #[derive(serde::Deserialize)]
    struct Doc {
        ha: HaConfig,
    }
    let text = render_toml(&imported, "fuzz");
    let doc: Doc = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(doc.ha, imported.ha, "{text}");
}
