//! Importers of legacy Heartbeat (1, 2 and 3 in haresources mode) and mon configurations into
//! the `[ha]` table.
//!
//! `heartbeat::import_dir` reads `ha.cf`, `haresources` and `authkeys`; `mon::import` adds the
//! watches of a `mon.cf` as monitors; `render_toml` writes the result as an ordinary `[ha]`
//! table with the importer's warnings as comments above it.
//!
//! The parsers are pure (text in, configuration and warnings out) and bounded: they refuse
//! inputs over 1 MiB and lines over 4 KiB, and never panic, whatever the text.
//!
//! ha.cf is the same file on both masters, while `[ha]` names this master (`node`) and the
//! other one (`peer`). The importer is therefore told which of the two `node` lines is this
//! master (`this_node`, the CLI's `--node`, by default this machine's host name, compared
//! case-insensitively like Heartbeat does) and makes the other one the peer. Run the import on
//! each master, or swap `node` and `peer` in the copy for the other master.

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use crate::config::HaConfig;

pub mod heartbeat;
pub mod mon;
pub mod period;

pub use period::Period;

/// Largest configuration file accepted.
pub const MAX_INPUT: usize = 1 << 20;
/// Longest line accepted (after joining continued lines).
pub const MAX_LINE: usize = 4096;

/// What an import produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub ha: HaConfig,
    /// The shared heartbeat key derived from `authkeys`, to be written to `ha.key_file`
    /// (mode 0600) on both masters; `None` when there was no `authkeys`.
    pub key: Option<Vec<u8>>,
    /// What was dropped, changed or needs the user's attention; each names its file and line.
    pub warnings: Vec<String>,
}

/// Why a file cannot be imported: where, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    /// The file (its name, or its path when read from disk).
    pub file: String,
    /// 1-based line; 0 when the problem is the file as a whole.
    pub line: usize,
    pub what: String,
    pub fix: String,
}

impl ImportError {
    pub(crate) fn new(
        file: &str,
        line: usize,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) -> ImportError {
        ImportError {
            file: file.to_string(),
            line,
            what: one_line(&what.into()),
            fix: one_line(&fix.into()),
        }
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}; {}", self.file, self.what, self.fix)
        } else {
            write!(
                f,
                "{}:{}: {}; {}",
                self.file, self.line, self.what, self.fix
            )
        }
    }
}

impl std::error::Error for ImportError {}

/// Imports a whole legacy setup: `ha.cf`, `haresources` and `authkeys` from `ha_dir`, then the
/// watches of `mon_cf` when given. `this_node` is this master's name; this machine's host name
/// when `None`.
pub fn import_files(
    ha_dir: &Path,
    mon_cf: Option<&Path>,
    this_node: Option<&str>,
) -> Result<Imported, ImportError> {
    let mut imported = heartbeat::import_dir_as(ha_dir, this_node)?;
    if let Some(path) = mon_cf {
        let text = read_bounded(path)?;
        let name = path.display().to_string();
        let mut warnings = Vec::new();
        mon::import(&text, &mut imported.ha, &mut warnings).map_err(|e| at_path(e, &name))?;
        imported.warnings.extend(
            warnings
                .into_iter()
                .map(|w| rename_warning(w, "mon.cf", &name)),
        );
    }
    warn_unaddressed_mail(&mut imported);
    Ok(imported)
}

/// Mail without its own recipients goes to `ha.mail.to`; say so when that is empty too.
pub(crate) fn warn_unaddressed_mail(imported: &mut Imported) {
    use crate::config::{AlertConfig, ResourceConfig};
    let ha = &imported.ha;
    let resource = ha
        .resources
        .iter()
        .any(|r| matches!(r, ResourceConfig::Mailto { to, .. } if to.is_empty()));
    let alert = ha.monitors.iter().any(|m| {
        m.alerts
            .iter()
            .any(|a| matches!(a, AlertConfig::Mail { to, .. } if to.is_empty()))
    });
    let note = "ha.mail.to is empty: set it (e.g. to = [\"admin@example.com\"]), or failover and \
                alert mail without its own `to` reaches nobody";
    if ha.mail.to.is_empty() && (resource || alert) && !imported.warnings.iter().any(|w| w == note)
    {
        imported.warnings.push(note.to_string());
    }
}

/// The `[ha]` table of an import, preceded by `# imported from SOURCE` and one
/// `# warning: ...` comment per warning. Parsing it back gives the same `HaConfig`.
pub fn render_toml(imported: &Imported, source: &str) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        ha: &'a HaConfig,
    }
    let mut out = format!("# imported from {}\n", one_line(source));
    for w in &imported.warnings {
        out.push_str("# warning: ");
        out.push_str(&one_line(w));
        out.push('\n');
    }
    match toml::to_string(&Doc { ha: &imported.ha }) {
        Ok(body) => out.push_str(&body),
        // Only non-string map keys or out-of-range values can fail; HaConfig has neither.
        Err(e) => out.push_str(&format!("# cannot serialize the [ha] table: {e}\n")),
    }
    out
}

/// Reads a configuration file of at most `MAX_INPUT` bytes (text; bytes that are not UTF-8
/// become U+FFFD and fail wherever they matter).
pub fn read_bounded(path: &Path) -> Result<String, ImportError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path)
        .map_err(|e| ImportError::new(&name, 0, format!("cannot open: {e}"), "check the path"))?;
    let mut bytes = Vec::new();
    file.take(MAX_INPUT as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ImportError::new(&name, 0, format!("cannot read: {e}"), "check the file"))?;
    if bytes.len() > MAX_INPUT {
        return Err(too_big(&name));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn too_big(file: &str) -> ImportError {
    ImportError::new(
        file,
        0,
        format!("larger than {} KiB", MAX_INPUT / 1024),
        "this is not a configuration file; check the path",
    )
}

pub(crate) fn at_path(mut e: ImportError, path: &str) -> ImportError {
    e.file = path.to_string();
    e
}

pub(crate) fn rename_warning(w: String, short: &str, path: &str) -> String {
    match w.strip_prefix(short) {
        Some(rest) if rest.starts_with(':') => format!("{path}{rest}"),
        _ => w,
    }
}

/// One logical line of a configuration file: its 1-based number and its words.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub no: usize,
    pub text: String,
    /// A blank line (not a comment) comes between this line and the previous one.
    pub after_blank: bool,
}

/// How a format writes comments and continued lines.
#[derive(Clone, Copy)]
pub(crate) struct Syntax {
    /// `#` starts a comment anywhere (ha.cf) rather than only at the start of a word
    /// (haresources) or only as the first non-blank character (mon.cf, authkeys).
    pub comment: Comment,
    /// A trailing backslash joins the next line.
    pub continuation: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comment {
    Anywhere,
    WordStart,
    LineStart,
}

/// Splits text into logical, non-empty lines with comments removed, enforcing the size limits.
pub(crate) fn logical_lines(
    text: &str,
    file: &str,
    syntax: Syntax,
) -> Result<Vec<Line>, ImportError> {
    if text.len() > MAX_INPUT {
        return Err(too_big(file));
    }
    let mut out = Vec::new();
    let mut pending: Option<Line> = None;
    let mut blank = false;
    for (i, raw) in text.split('\n').enumerate() {
        let no = i + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if raw.len() > MAX_LINE {
            return Err(ImportError::new(
                file,
                no,
                format!("line longer than {MAX_LINE} bytes"),
                "shorten it (or check that this is the right file)",
            ));
        }
        if pending.is_none() && raw.trim().is_empty() {
            blank = true;
            continue;
        }
        let mut content = strip_comment(raw, syntax.comment);
        let continued = syntax.continuation && content.trim_end().ends_with('\\');
        if continued {
            let t = content.trim_end();
            content = &t[..t.len() - 1];
        }
        let line = match pending.take() {
            Some(mut l) => {
                l.text.push(' ');
                l.text.push_str(content);
                if l.text.len() > MAX_LINE {
                    return Err(ImportError::new(
                        file,
                        l.no,
                        format!("continued line longer than {MAX_LINE} bytes"),
                        "split it",
                    ));
                }
                l
            }
            None => Line {
                no,
                text: content.to_string(),
                after_blank: blank,
            },
        };
        if continued {
            pending = Some(line);
        } else if !line.text.trim().is_empty() {
            out.push(line);
            blank = false;
        }
    }
    if let Some(l) = pending {
        if !l.text.trim().is_empty() {
            out.push(l);
        }
    }
    Ok(out)
}

fn strip_comment(raw: &str, comment: Comment) -> &str {
    match comment {
        Comment::Anywhere => raw.split('#').next().unwrap_or(""),
        Comment::LineStart => {
            if raw.trim_start().starts_with('#') {
                ""
            } else {
                raw
            }
        }
        Comment::WordStart => {
            let mut prev_space = true;
            for (i, c) in raw.char_indices() {
                if c == '#' && prev_space {
                    return &raw[..i];
                }
                prev_space = c.is_whitespace();
            }
            raw
        }
    }
}

/// A plain `local@domain` address that an SMTP server accepts.
pub fn valid_email(addr: &str) -> bool {
    let Some((local, domain)) = addr.rsplit_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~.".contains(&b))
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..");
    let domain_ok = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    local_ok && domain_ok
}

/// Quotes a word for `sh -c` when it needs it.
pub(crate) fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b));
    if safe {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

pub(crate) fn shell_join<'a>(words: impl IntoIterator<Item = &'a str>) -> String {
    words
        .into_iter()
        .map(shell_quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Warnings and errors quote user text: keep them on one line.
pub(crate) fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Durations are bounded so that arithmetic on them cannot overflow.
pub(crate) const MAX_DURATION_SECS: u64 = 7 * 24 * 3600;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email() {
        assert!(valid_email("root@localhost"));
        assert!(valid_email("ops+ha@example.com"));
        assert!(!valid_email("EMAILADDRESS"));
        assert!(!valid_email("a b@example.com"));
        assert!(!valid_email("@example.com"));
        assert!(!valid_email("x@-bad.com"));
        assert!(!valid_email("x@a..b"));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/dev/sda1"), "/dev/sda1");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn lines_and_comments() {
        let syntax = Syntax {
            comment: Comment::WordStart,
            continuation: true,
        };
        let text = "# c\n a b#c \\\n  c # d\n\ne\r\n";
        let lines = logical_lines(text, "f", syntax).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].no, 2);
        assert_eq!(
            lines[0].text.split_whitespace().collect::<Vec<_>>(),
            ["a", "b#c", "c"]
        );
        assert_eq!(lines[1].no, 5);
        let long = "x".repeat(MAX_LINE + 1);
        let e = logical_lines(&format!("a\n{long}\n"), "f", syntax).unwrap_err();
        assert_eq!(e.line, 2);
    }
}
