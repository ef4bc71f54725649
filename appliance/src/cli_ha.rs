//! `clustermaker status`, `standby`, `takeover`, `ha keygen` and `import`: the administrator's
//! side of the HA runtime. They talk to the running `serve` through its control socket.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use runtime::control::{self, Command};
use serde_json::Value;

use crate::config::Config;

#[derive(Subcommand, Debug)]
pub enum HaCommand {
    /// Creates the shared heartbeat key (random, readable by root only); copy it to the peer.
    Keygen {
        /// Where to write it; `ha.key_file` of the configuration when absent.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImportCommand {
    /// Converts a Heartbeat configuration directory (ha.cf, haresources, authkeys) into an
    /// `[ha]` table; with `--mon`, mon.cf watches become monitors.
    Heartbeat {
        /// The directory, usually /etc/ha.d.
        dir: PathBuf,
        /// This master's name among ha.cf's `node` lines; the host name when absent.
        #[arg(long)]
        node: Option<String>,
        /// A mon.cf whose watches become the group's monitors.
        #[arg(long)]
        mon: Option<PathBuf>,
        /// Write the configuration here instead of standard output (refuses to overwrite).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Write the key derived from authkeys here (mode 600); `ha.key_file` points to it.
        #[arg(long)]
        key_out: Option<PathBuf>,
    },
    /// Converts a mon.cf into `[[ha.monitors]]` tables.
    Mon {
        file: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn ha_state_dir(config: &Config) -> PathBuf {
    config.state_dir.join("ha")
}

pub fn keygen(config: &Config, out: Option<PathBuf>) -> Result<()> {
    let path = out.unwrap_or_else(|| config.ha.key_file.clone());
    runtime::ha::write_new_key(&path)?;
    println!(
        "wrote a new heartbeat key to {} (mode 600); copy it to the peer with the same path",
        path.display()
    );
    Ok(())
}

pub fn status(config: &Config, json: bool) -> Result<()> {
    let answer = control::request(&ha_state_dir(config), Command::Status)?;
    if !answer.ok {
        bail!("{}", answer.message.unwrap_or_default());
    }
    let doc = answer.status.unwrap_or_default();
    if json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render_status(&doc));
    }
    Ok(())
}

pub fn admin(config: &Config, cmd: Command, json: bool) -> Result<()> {
    let answer = control::request(&ha_state_dir(config), cmd)?;
    let message = answer.message.clone().unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::json!({"ok": answer.ok, "message": message})
        );
    }
    if !answer.ok {
        bail!("{message}");
    }
    if !json {
        println!("{message}");
    }
    Ok(())
}

fn ms(v: &Value) -> String {
    match v.as_u64() {
        Some(n) if n < 10_000 => format!("{n} ms"),
        Some(n) => format!("{:.1} s", n as f64 / 1000.0),
        None => "never".into(),
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// The human form of the status document.
pub fn render_status(d: &Value) -> String {
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str(&l);
        out.push('\n');
    };
    line(format!(
        "node {}: {} for {} (data generation {}, {}, {})",
        s(&d["node"]),
        s(&d["role"]),
        ms(&d["role_for_ms"]),
        d["data_gen"],
        if d["fit"].as_bool() == Some(true) {
            "fit"
        } else {
            "UNFIT"
        },
        if d["ping_ok"].as_bool() == Some(true) {
            "ping nodes reached"
        } else {
            "NO PING NODE ANSWERS"
        },
    ));
    let p = &d["peer"];
    let alive = p["alive"].as_bool() == Some(true);
    line(format!(
        "peer {}: {}, last heard {} ago",
        s(&p["name"]),
        match (alive, p["role"].as_str()) {
            (true, Some(role)) => format!("alive, {role}"),
            (true, None) => "alive".into(),
            (false, Some(role)) => format!("DEAD (was {role})"),
            (false, None) => "never heard".into(),
        },
        ms(&p["last_heard_ms"]),
    ));
    line(format!(
        "group holder: {}",
        d["group_holder"].as_str().unwrap_or("nobody")
    ));
    line("links:".into());
    for l in d["links"].as_array().into_iter().flatten() {
        let dropped: Vec<String> = l["dropped"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        line(format!(
            "  {:<28} {:<4} last heard {} ago, received {}, sent {}{}",
            s(&l["label"]),
            if l["up"].as_bool() == Some(true) {
                "up"
            } else {
                "DOWN"
            },
            ms(&l["last_heard_ms"]),
            l["received"],
            l["sent"],
            if dropped.is_empty() {
                String::new()
            } else {
                format!(", dropped: {}", dropped.join(", "))
            }
        ));
    }
    let resources = d["resources"].as_array().cloned().unwrap_or_default();
    if !resources.is_empty() {
        line("resources:".into());
        for r in &resources {
            line(format!(
                "  {:<40} {}{}",
                s(&r["name"]),
                s(&r["state"]),
                r["detail"]
                    .as_str()
                    .filter(|t| !t.is_empty())
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default()
            ));
        }
    }
    let monitors = d["monitors"].as_array().cloned().unwrap_or_default();
    if !monitors.is_empty() {
        line("monitors:".into());
        for m in &monitors {
            line(format!(
                "  {:<20} {:<8} {}",
                s(&m["name"]),
                s(&m["state"]),
                m["detail"].as_str().unwrap_or("")
            ));
        }
    }
    if let Some(t) = d["last_transition"].as_object() {
        line(format!(
            "last change: {} {} ago: {}",
            t.get("what").and_then(|v| v.as_str()).unwrap_or("-"),
            ms(t.get("at_ms").unwrap_or(&Value::Null)),
            t.get("cause").and_then(|v| v.as_str()).unwrap_or("-"),
        ));
    }
    out
}

pub fn import(cmd: ImportCommand) -> Result<()> {
    use runtime::import;
    match cmd {
        ImportCommand::Heartbeat {
            dir,
            node,
            mon,
            out,
            key_out,
        } => {
            let mut imported = import::import_files(&dir, mon.as_deref(), node.as_deref())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            match (&key_out, &imported.key) {
                (Some(path), Some(key)) => {
                    runtime::ha::write_key_bytes(path, runtime::ha::hex(key).as_bytes())?;
                    imported.ha.key_file = path.clone();
                    eprintln!("wrote the key derived from authkeys to {}", path.display());
                }
                (None, Some(_)) => imported.warnings.push(format!(
                    "the key derived from authkeys was not written: pass --key-out {} (both masters need the same key)",
                    imported.ha.key_file.display()
                )),
                _ => {}
            }
            let source = match &mon {
                Some(m) => format!("{} and {}", dir.display(), m.display()),
                None => dir.display().to_string(),
            };
            emit(
                &import::render_toml(&imported, &source),
                &imported.warnings,
                out.as_deref(),
            )
        }
        ImportCommand::Mon { file, out } => {
            let text = import::read_bounded(&file).map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut imported = import::Imported {
                ha: runtime::config::HaConfig::default(),
                key: None,
                warnings: Vec::new(),
            };
            import::mon::import(&text, &mut imported.ha, &mut imported.warnings)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            emit(
                &import::render_toml(&imported, &file.display().to_string()),
                &imported.warnings,
                out.as_deref(),
            )
        }
    }
}

fn emit(toml: &str, warnings: &[String], out: Option<&Path>) -> Result<()> {
    // An imported master runs only the HA runtime until the boot network is configured.
    let text = format!("{toml}\n[boot]\nenabled = false\n");
    for w in warnings {
        eprintln!("warning: {w}");
    }
    match out {
        Some(path) => {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| {
                    format!("cannot create {} (it must not exist yet)", path.display())
                })?;
            f.write_all(text.as_bytes())?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{text}"),
    }
    Ok(())
}
