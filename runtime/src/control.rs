//! The local control socket of a running master: `clustermaker status`, `standby` and
//! `takeover` talk to `serve` through it. A Unix socket readable by root only: these commands
//! move the cluster's services, so they must not be reachable over the network.
//!
//! Protocol: one JSON request line (`{"cmd":"status"}`), one JSON answer line.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// Longest request we read; anything longer is not ours.
const MAX_REQUEST: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Command {
    Status,
    Standby,
    Takeover,
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    cmd: Command,
}

/// The answer: `ok` with a message or a status document, or an error in one line.
#[derive(Debug, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("ha.sock")
}

/// Serves the socket on a thread of its own; `handle` answers each command.
pub fn serve(
    path: PathBuf,
    handle: impl Fn(Command) -> Answer + Send + Sync + 'static,
) -> anyhow::Result<()> {
    // A socket left by a killed predecessor: remove it, but never steal a live one.
    if UnixStream::connect(&path).is_ok() {
        bail!(
            "{} is in use: another clustermaker serve runs with this state_dir",
            path.display()
        );
    }
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot create the control socket {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let handle = std::sync::Arc::new(handle);
    std::thread::Builder::new()
        .name("ha-control".into())
        .spawn(move || {
            for conn in listener.incoming().flatten() {
                let handle = handle.clone();
                // Short-lived; a thread each keeps a stuck client from blocking the others.
                let _ = std::thread::Builder::new()
                    .name("ha-control-conn".into())
                    .spawn(move || {
                        let _ = answer_one(conn, &*handle);
                    });
            }
        })?;
    Ok(())
}

fn answer_one(conn: UnixStream, handle: &dyn Fn(Command) -> Answer) -> anyhow::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = String::new();
    BufReader::new((&conn).take(MAX_REQUEST)).read_line(&mut line)?;
    let answer = match serde_json::from_str::<Request>(line.trim()) {
        Ok(req) => handle(req.cmd),
        Err(e) => Answer {
            ok: false,
            message: Some(format!("bad request: {e}")),
            status: None,
        },
    };
    let mut out = serde_json::to_vec(&answer)?;
    out.push(b'\n');
    (&conn).write_all(&out)?;
    Ok(())
}

/// Sends one command to the running master and returns its answer.
pub fn request(state_dir: &Path, cmd: Command) -> anyhow::Result<Answer> {
    let path = socket_path(state_dir);
    let conn = UnixStream::connect(&path).with_context(|| {
        format!(
            "cannot reach the HA runtime at {} (is `clustermaker serve` running with [ha] enabled and this state_dir?)",
            path.display()
        )
    })?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = serde_json::to_vec(&Request { cmd })?;
    req.push(b'\n');
    (&conn).write_all(&req)?;
    let mut line = String::new();
    BufReader::new((&conn).take(16 << 20)).read_line(&mut line)?;
    serde_json::from_str(line.trim()).context("the HA runtime gave an unreadable answer")
}
