//! Progress of long steps (walk, copy, hash): counts and bytes. The library reports; the
//! caller decides whether anything is drawn ([`Console`] on a terminal, [`Silent`] otherwise).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Receives progress; methods take `&self` so one reporter can be shared down the call tree.
pub trait Progress {
    /// A new phase starts (`importing`, `hashing`, …); `total_bytes` when known.
    fn phase(&self, name: &str, total_bytes: Option<u64>);
    /// One more entry handled.
    fn item(&self);
    /// Bytes handled (copied, hashed).
    fn bytes(&self, n: u64);
    /// A one-line note (e.g. which kernel was picked).
    fn note(&self, text: &str);
    /// The phase ended.
    fn done(&self);
}

/// Reports nothing (tests, `--json`, no terminal).
pub struct Silent;

impl Progress for Silent {
    fn phase(&self, _: &str, _: Option<u64>) {}
    fn item(&self) {}
    fn bytes(&self, _: u64) {}
    fn note(&self, _: &str) {}
    fn done(&self) {}
}

/// indicatif spinner/bar on standard error.
pub struct Console {
    bar: Mutex<Option<(ProgressBar, u64)>>,
}

impl Console {
    /// A console reporter when standard error is a terminal, else [`Silent`].
    pub fn for_stderr(quiet: bool) -> Box<dyn Progress> {
        if quiet || !std::io::stderr().is_terminal() {
            Box::new(Silent)
        } else {
            Box::new(Console {
                bar: Mutex::new(None),
            })
        }
    }
}

impl Progress for Console {
    fn phase(&self, name: &str, total_bytes: Option<u64>) {
        self.done();
        let bar = match total_bytes {
            Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr())
                .with_style(
                    ProgressStyle::with_template(
                        "{prefix:>10} [{bar:30}] {bytes}/{total_bytes} {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                ),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(
                ProgressStyle::with_template("{prefix:>10} {spinner} {bytes} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_prefix(name.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut b) = self.bar.lock() {
            *b = Some((bar, 0));
        }
    }
    fn item(&self) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some((bar, n)) = b.as_mut() {
                *n += 1;
                if *n % 64 == 0 {
                    bar.set_message(format!("{n} entries"));
                }
            }
        }
    }
    fn bytes(&self, n: u64) {
        if let Ok(b) = self.bar.lock() {
            if let Some((bar, _)) = b.as_ref() {
                bar.inc(n);
            }
        }
    }
    fn note(&self, text: &str) {
        if let Ok(b) = self.bar.lock() {
            match b.as_ref() {
                Some((bar, _)) => bar.println(text),
                None => eprintln!("{text}"),
            }
        }
    }
    fn done(&self) {
        if let Ok(mut b) = self.bar.lock() {
            if let Some((bar, n)) = b.take() {
                // Cleared and replaced by one plain line: later output starts on its own line.
                let bytes = bar.position();
                bar.finish_and_clear();
                let mut line = format!("{:>10} done", bar.prefix());
                if n > 0 {
                    line.push_str(&format!(", {n} entries"));
                }
                if bytes > 0 {
                    line.push_str(&format!(", {}", indicatif::HumanBytes(bytes)));
                }
                eprintln!("{line}");
            }
        }
    }
}
