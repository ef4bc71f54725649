//! Progress display: one spinner per build step on a terminal, plain lines otherwise (CI logs),
//! nothing at all in `--json` mode (stdout then carries only the JSON report).

use std::cell::RefCell;
use std::fmt::Display;
use std::time::{Duration, Instant};

use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Spinners on a terminal, plain lines when stderr is not a terminal.
    Human,
    /// No progress output (machine-readable runs and tests).
    Quiet,
}

pub struct Ui {
    mode: Mode,
    total: usize,
    done: usize,
}

/// A running step: its spinner message can be updated, and it can leave a one-line summary.
pub struct Step {
    pb: ProgressBar,
    summary: RefCell<Option<String>>,
}

impl Step {
    /// Replaces the spinner's detail text (e.g. "downloading linux-image-…").
    pub fn progress(&self, msg: impl Display) {
        self.pb.set_message(msg.to_string());
    }

    /// The text shown after the step title once it has finished.
    pub fn summary(&self, msg: impl Display) {
        *self.summary.borrow_mut() = Some(msg.to_string());
    }
}

impl Ui {
    /// `total` is the number of steps, shown as `[n/total]`.
    pub fn new(mode: Mode, total: usize) -> Ui {
        Ui {
            mode,
            total,
            done: 0,
        }
    }

    /// Runs one step under a spinner; prints `✔ [n/N] title: summary (time)` or `✘ …` after it.
    pub fn step<T>(&mut self, title: &str, f: impl FnOnce(&Step) -> Result<T>) -> Result<T> {
        self.done += 1;
        let label = format!("[{}/{}] {title}", self.done, self.total);
        let pb = match self.mode {
            Mode::Human => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            Mode::Quiet => ProgressBar::hidden(),
        };
        pb.set_style(
            ProgressStyle::with_template("{spinner:.cyan} {prefix} {wide_msg:.dim}")
                .expect("static template")
                .tick_chars("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "),
        );
        pb.set_prefix(label.clone());
        pb.enable_steady_tick(Duration::from_millis(100));
        let step = Step {
            pb,
            summary: RefCell::new(None),
        };
        let start = Instant::now();
        let result = f(&step);
        let secs = start.elapsed().as_secs_f64();
        let line = match (&result, step.summary.borrow().as_deref()) {
            (Ok(_), Some(s)) => format!("✔ {label}: {s} ({secs:.1}s)"),
            (Ok(_), None) => format!("✔ {label} ({secs:.1}s)"),
            (Err(_), _) => format!("✘ {label} ({secs:.1}s)"),
        };
        step.pb.finish_and_clear();
        if self.mode == Mode::Human {
            // indicatif hides itself when stderr is not a terminal; the plain line still shows.
            eprintln!("{line}");
        }
        result
    }

    /// A line of information outside any step (suppressed in quiet mode).
    pub fn info(&self, msg: impl Display) {
        if self.mode == Mode::Human {
            eprintln!("{msg}");
        }
    }
}
