//! The HTTP API booting and running nodes talk to (merged into `http::router` by `serve`):
//!
//! | request | what |
//! | --- | --- |
//! | `GET /api/v1/nodes/{mac}/overlay.tar?iface=IF` | the node's overlay (tar), unpacked by its initramfs |
//! | `POST /api/v1/nodes/stage` | a boot event from the initramfs: `{"mac","stage","detail"}` |
//! | `POST /api/v1/nodes/metrics` | the agent's figures; the reply carries `export_generation` |
//! | `GET /api/v1/nodes/{node}/metrics?since=MS` | a node's stored samples (name or MAC) |
//!
//! A member's overlay (it holds the node's SSH host keys) is served only to the node's own
//! address (reserved, or last seen by DHCP); anybody else gets 403.
//!
//! Strangers: a MAC that is neither a member nor ever booted from this master (DHCP, boot
//! files, discovered) gets 404 with the reason, and nothing is recorded for it, so a hostile
//! client cannot grow the master's state. A discovered node that boots the default image gets
//! a minimal overlay (host name from its MAC, no SSH keys) and may post events and metrics.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use netboot::MacAddr;
use serde::Deserialize;

use crate::boot::BootFiles;
use crate::metrics::{MetricsReport, MetricsStore, Sample};
use crate::tracker::now_ms;

pub struct NodeApi {
    pub files: Arc<BootFiles>,
    pub metrics: Arc<MetricsStore>,
    /// Serialises overlay renders: the first render of a member makes its SSH keys.
    render_lock: std::sync::Mutex<()>,
}

impl NodeApi {
    pub fn new(files: Arc<BootFiles>, metrics: Arc<MetricsStore>) -> Arc<NodeApi> {
        Arc::new(NodeApi {
            files,
            metrics,
            render_lock: std::sync::Mutex::new(()),
        })
    }

    fn state_dir(&self) -> PathBuf {
        self.files.config.state_dir.clone()
    }
}

/// The file whose number tells agents the image content changed (written by whoever
/// publishes an image version); missing or unreadable means 0.
pub fn export_generation_path(state_dir: &std::path::Path) -> PathBuf {
    state_dir.join("export-generation")
}

pub fn export_generation(state_dir: &std::path::Path) -> u64 {
    std::fs::read_to_string(export_generation_path(state_dir))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

pub fn routes(api: Arc<NodeApi>) -> Router {
    Router::new()
        .route("/api/v1/nodes/{node}/overlay.tar", get(overlay_tar))
        .route("/api/v1/nodes/{node}/metrics", get(node_metrics))
        .route("/api/v1/nodes/metrics", post(post_metrics))
        .route("/api/v1/nodes/stage", post(post_stage))
        // An agent report is ~1 KB; 16 KiB leaves room for 32 interfaces and nothing more.
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(api)
}

type Api = State<Arc<NodeApi>>;

fn error(code: StatusCode, message: String) -> Response {
    (code, Json(serde_json::json!({ "error": message }))).into_response()
}

fn parse_mac(text: &str) -> Option<MacAddr> {
    text.parse().ok()
}

#[derive(Deserialize)]
struct OverlayQuery {
    iface: Option<String>,
}

async fn overlay_tar(
    State(api): Api,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(node): Path<String>,
    Query(q): Query<OverlayQuery>,
) -> Response {
    let Some(mac) = parse_mac(&node) else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("`{node}` is not a MAC address"),
        );
    };
    if let Some(i) = &q.iface {
        if !crate::cli_overlay::valid_interface(i) {
            return error(
                StatusCode::BAD_REQUEST,
                "iface is not an interface name".into(),
            );
        }
    }
    let tracker = api.files.tracker.clone();
    if !tracker.knows(&mac) {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown MAC {mac}: not a registered node and never seen booting from this master"
            ),
        );
    }
    let peer_ip = match peer.ip() {
        std::net::IpAddr::V4(ip) => Some(ip),
        std::net::IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    };
    // A member's overlay holds its SSH host private keys, and MACs are no secret: it goes only
    // to the address the node has (reserved, or last seen by DHCP), i.e. to the node itself.
    // (On a flat boot network addresses can be spoofed too; that network must be trusted,
    // as PXE itself requires.)
    if let Some(r) = netboot::NodeDirectory::reservation(tracker.as_ref(), &mac) {
        let allowed = [r.ip, tracker.ip_of(&mac)];
        if peer_ip.is_none() || !allowed.contains(&peer_ip) {
            return error(
                StatusCode::FORBIDDEN,
                format!(
                    "the overlay of node {} is only served to the node itself ({})",
                    r.name,
                    allowed
                        .iter()
                        .flatten()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(" or ")
                ),
            );
        }
    }
    let seen_ip = tracker.ip_of(&mac).or(peer_ip);
    let api2 = api.clone();
    let rendered = tokio::task::spawn_blocking(move || {
        let _one = api2.render_lock.lock().unwrap_or_else(|e| e.into_inner());
        let config = &api2.files.config;
        let registry = crate::registry::Registry::load(&config.state_dir)?;
        let files =
            crate::cli_overlay::render_node(config, &registry, mac, seen_ip, q.iface.as_deref())?;
        Ok::<_, anyhow::Error>(images::overlay::to_tar(&files)?)
    })
    .await;
    match rendered {
        Ok(Ok(tar)) => ([(header::CONTENT_TYPE, "application/x-tar")], tar).into_response(),
        Ok(Err(e)) => {
            tracing::error!(%mac, "node overlay: {e:#}");
            error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Deserialize)]
struct StageReport {
    mac: MacAddr,
    stage: String,
    #[serde(default)]
    detail: String,
}

async fn post_stage(State(api): Api, Json(r): Json<StageReport>) -> Response {
    let name_ok = !r.stage.is_empty()
        && r.stage.len() <= 40
        && r.stage
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !name_ok {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "stage must be 1 to 40 of a-z, 0-9, -".into(),
        );
    }
    // Free text from the node: one line, bounded, no control characters.
    let detail: String = r
        .detail
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(512)
        .collect();
    if api.files.tracker.event(r.mac, &r.stage, &detail) {
        Json(serde_json::json!({"ok": true})).into_response()
    } else {
        error(
            StatusCode::NOT_FOUND,
            format!(
                "unknown MAC {}: not a registered node and never seen booting from this master",
                r.mac
            ),
        )
    }
}

async fn post_metrics(State(api): Api, Json(report): Json<MetricsReport>) -> Response {
    if let Err(e) = report.check() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}"));
    }
    let mac = report.mac;
    if !api.files.tracker.knows(&mac) {
        return error(
            StatusCode::NOT_FOUND,
            format!("unknown MAC {mac}: report online first (POST /api/v1/nodes/online)"),
        );
    }
    let sample = Sample {
        at_ms: now_ms(),
        figures: report.figures,
    };
    // Off the async workers: usually one small append, but now and then a compaction
    // (rewrite + fsync of the node's file).
    let store = api.metrics.clone();
    let state_dir = api.state_dir();
    let stored = tokio::task::spawn_blocking(move || {
        store.record(mac, sample)?;
        Ok::<_, anyhow::Error>(export_generation(&state_dir))
    })
    .await;
    let generation = match stored {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => {
            tracing::error!(%mac, "cannot store metrics: {e:#}");
            return error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"));
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    Json(serde_json::json!({"ok": true, "export_generation": generation})).into_response()
}

#[derive(Deserialize)]
struct SinceQuery {
    since: Option<u64>,
}

async fn node_metrics(
    State(api): Api,
    Path(node): Path<String>,
    Query(q): Query<SinceQuery>,
) -> Response {
    let tracker = &api.files.tracker;
    let mac = match tracker.mac_of_name(&node) {
        Some(m) => m,
        None => match parse_mac(&node) {
            Some(m) if tracker.knows(&m) => m,
            _ => return error(StatusCode::NOT_FOUND, format!("no node `{node}`")),
        },
    };
    let samples = api.metrics.since(&mac, q.since.unwrap_or(0));
    Json(serde_json::json!({
        "node": tracker.name_of(&mac),
        "mac": mac,
        "samples": samples,
    }))
    .into_response()
}

/// Writes `latest.json` every `period` (for `node list`) until the task is dropped.
pub async fn run_persist(metrics: Arc<MetricsStore>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let m = metrics.clone();
        match tokio::task::spawn_blocking(move || m.persist_latest()).await {
            Ok(Err(e)) => tracing::error!("cannot save latest metrics: {e:#}"),
            Err(e) => tracing::error!("metrics task failed: {e}"),
            Ok(Ok(())) => {}
        }
    }
}
