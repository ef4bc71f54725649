//! Running external programs with errors that fit on one line and say how to fix them.

use std::io::ErrorKind;
use std::process::{Command, Output};

use anyhow::{anyhow, Result};

/// A program this tool runs, with the Debian package that provides it (for the hint).
#[derive(Clone, Copy, Debug)]
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

pub const APT_GET: Tool = Tool {
    program: "apt-get",
    package: "apt",
};
pub const APT_CACHE: Tool = Tool {
    program: "apt-cache",
    package: "apt",
};
pub const DPKG_DEB: Tool = Tool {
    program: "dpkg-deb",
    package: "dpkg",
};
pub const STRIP: Tool = Tool {
    program: "strip",
    package: "binutils",
};

impl Tool {
    pub fn command(&self) -> Command {
        Command::new(self.program)
    }

    /// Runs `cmd` (built from [`Tool::command`]) to completion. On failure the error names the
    /// command, the last line of its stderr, and `fix`.
    pub fn run(&self, cmd: &mut Command, fix: &str) -> Result<Output> {
        let shown = show(cmd);
        let out = cmd.output().map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                anyhow!(
                    "`{}` is not installed (fix: apt-get install -y {})",
                    self.program,
                    self.package
                )
            } else {
                anyhow!("cannot run `{shown}`: {e}")
            }
        })?;
        if !out.status.success() {
            return Err(anyhow!(
                "`{shown}` failed ({}): {} (fix: {fix})",
                out.status,
                last_line(&out.stderr)
            ));
        }
        Ok(out)
    }
}

/// The command line, for messages.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The last non-empty line of a program's output: errors stay on one line.
pub fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no error output")
        .trim()
        .to_string()
}
