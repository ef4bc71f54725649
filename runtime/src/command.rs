//! Bounded runs of external commands: services' start/stop/status, fencing, monitors' exec
//! checks and alerts.
//!
//! Every run gets its own process group, killed as a whole when it outlives its timeout (an
//! init script's children with it). Output goes to an unlinked temporary file, not a pipe:
//! init scripts often leave a daemon holding the script's stdout, and a pipe would then either
//! never reach end-of-file or kill that daemon with SIGPIPE once we close it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

/// How much of the output end we keep for messages.
const TAIL_BYTES: u64 = 4096;

/// What a bounded run produced.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code; None when killed by a signal (including our timeout).
    pub code: Option<i32>,
    pub timed_out: bool,
    /// The last non-empty output line (stdout and stderr interleaved).
    pub last_line: String,
}

impl Outcome {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// `exit 1: mysqld: cannot bind port` and the like, for one-line errors.
    pub fn describe(&self, timeout: Duration) -> String {
        let what = match (self.timed_out, self.code) {
            (true, _) => format!("timed out after {}", humantime::format_duration(timeout)),
            (false, Some(c)) => format!("exit {c}"),
            (false, None) => "killed by a signal".into(),
        };
        if self.last_line.is_empty() {
            what
        } else {
            format!("{what}: {}", self.last_line)
        }
    }
}

/// Runs `cmd` in its own process group with no stdin and the output captured, killing the
/// group if it outlives `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Outcome> {
    let out = tempfile::tempfile().context("cannot create a file for the output")?;
    let err = out.try_clone()?;
    let mut reader = out.try_clone()?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    // A wait(2) in a thread, so the timeout is exact without polling.
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("service-wait".into())
        .spawn(move || {
            let _ = tx.send(child.wait());
        })
        .context("cannot start a waiter thread")?;
    let (status, timed_out) = match rx.recv_timeout(timeout) {
        Ok(status) => (status?, false),
        Err(_) => {
            if let Ok(pgid) = i32::try_from(pid) {
                // The child leads its group (process_group(0)), so its pid is the group id.
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let status = rx
                .recv()
                .map_err(|_| anyhow!("lost the waiter of a killed process"))??;
            (status, true)
        }
    };
    Ok(Outcome {
        code: if timed_out { None } else { status.code() },
        timed_out,
        last_line: last_line(&mut reader),
    })
}

/// The last non-empty line of the output, from its last few KiB, lossy and sanitised.
fn last_line(file: &mut File) -> String {
    let Ok(len) = file.seek(SeekFrom::End(0)) else {
        return String::new();
    };
    if file
        .seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))
        .is_err()
    {
        return String::new();
    }
    let mut buf = Vec::new();
    if file.take(TAIL_BYTES).read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    text.lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect()
}
