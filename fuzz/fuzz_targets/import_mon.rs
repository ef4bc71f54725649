//! Hostile mon.cf text and time periods: the importer and `Period` return a result or an
//! error, never panic; accepted monitors validate and survive the TOML round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::config::{HaConfig, LinkConfig};
use runtime::import::{mon, render_toml, Imported, Period};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    // The whole input, and each line, as a period.
    for candidate in std::iter::once(text.as_ref()).chain(text.lines().take(64)) {
        if let Ok(p) = Period::parse(candidate) {
            for (i, b) in data.iter().take(16).enumerate() {
                let _ = p.contains(
                    b % 8,
                    (b >> 3) % 25,
                    (i as u8).wrapping_mul(17).wrapping_add(*b) % 61,
                );
            }
            // Stored periods are re-parsed at run time: same text, same period.
            assert_eq!(Period::parse(candidate).as_ref(), Ok(&p));
        }
    }

    let mut ha = HaConfig {
        enabled: true,
        node: "a".into(),
        peer: "b".into(),
        links: vec![LinkConfig::Serial {
            device: "/dev/ttyS0".into(),
            baud: 19200,
        }],
        ..HaConfig::default()
    };
    let mut warnings = Vec::new();
    match mon::import(&text, &mut ha, &mut warnings) {
        Ok(()) => {
            if let Err(e) = ha.validate() {
                panic!("imported monitors do not validate: {} {}", e.key, e.reason);
            }
            for m in &ha.monitors {
                if let Some(p) = &m.period {
                    assert!(
                        Period::parse(p).is_ok(),
                        "stored period {p:?} does not parse"
                    );
                }
            }
            #[derive(serde::Deserialize)]
            struct Doc {
                ha: HaConfig,
            }
            let imported = Imported {
                ha,
                key: None,
                warnings,
            };
            let text = render_toml(&imported, "fuzz");
            let doc: Doc = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            assert_eq!(doc.ha, imported.ha, "{text}");
        }
        Err(e) => {
            let shown = e.to_string();
            assert!(!shown.contains('\n') && !shown.contains('\r'), "{shown:?}");
        }
    }
});
