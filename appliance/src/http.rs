//! The master's HTTP server: per-node iPXE scripts, image files (kernel, initramfs) with Range
//! support and never a redirect (UEFI HTTP boot does not follow them), the iPXE binaries, and
//! the node API (`POST /api/v1/nodes/online`, `GET /api/v1/nodes`).

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http_body::{Body as HttpBody, Frame, SizeHint};
use netboot::{BootObserver, ClientRef};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::boot::{script_mac, stage_of, BootFiles};
use crate::tracker::OnlineReport;

pub fn router(files: Arc<BootFiles>) -> Router {
    Router::new()
        .route("/boot/{name}", get(script))
        .route("/images/{*path}", get(image_file))
        .route("/api/v1/nodes/online", post(online))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/discovered", get(discovered))
        .route("/{name}", get(loader))
        .layer(DefaultBodyLimit::max(16 * 1024))
        .with_state(files)
}

type Files = State<Arc<BootFiles>>;

fn client_ip(addr: SocketAddr) -> Option<std::net::Ipv4Addr> {
    match addr.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(ip) => ip.to_ipv4_mapped(),
    }
}

async fn script(
    State(files): Files,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
) -> Response {
    let path = format!("boot/{name}");
    let Some(mac) = script_mac(&path) else {
        return (
            StatusCode::NOT_FOUND,
            "no such boot script: expected /boot/<mac>.ipxe\n",
        )
            .into_response();
    };
    match files.script(mac) {
        Ok(text) => {
            files.tracker.stage(
                ClientRef {
                    mac: Some(mac),
                    ip: client_ip(peer),
                },
                netboot::BootStage::ScriptSent,
            );
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
        }
        Err(e) => {
            tracing::error!("boot script for {mac}: {e:#}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("#!ipxe\necho clustermaker: {e}\nexit 1\n"),
            )
                .into_response()
        }
    }
}

/// Serves a file under `dir` (ServeDir refuses `..` and never redirects here since directories
/// are not served), and marks the boot stage once a full (non-Range) response was sent.
async fn serve_from(
    files: Arc<BootFiles>,
    dir: std::path::PathBuf,
    rel: String,
    stage: Option<netboot::BootStage>,
    peer: SocketAddr,
    req: Request,
) -> Response {
    let service = ServeDir::new(dir).append_index_html_on_directories(false);
    let uri_path = format!("/{}", rel.trim_start_matches('/'));
    let mut inner = Request::builder().uri(uri_path.as_str());
    for (k, v) in req.headers() {
        inner = inner.header(k, v);
    }
    let Ok(inner) = inner.method(req.method().clone()).body(Body::empty()) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let response = match service.oneshot(inner).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    if response.status().is_redirection() {
        // A directory: we never redirect (UEFI HTTP boot cannot follow it).
        return StatusCode::NOT_FOUND.into_response();
    }
    let (parts, body) = response.into_parts();
    let body = Body::new(body);
    if parts.status == StatusCode::OK {
        if let Some(stage) = stage {
            let client = ClientRef {
                mac: None,
                ip: client_ip(peer),
            };
            let tracker = files.tracker.clone();
            let length = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let body = NotifyOnEnd::new(body, length, move || tracker.stage(client, stage));
            return Response::from_parts(parts, Body::new(body));
        }
    }
    Response::from_parts(parts, body)
}

async fn image_file(
    State(files): Files,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(path): Path<String>,
    req: Request,
) -> Response {
    let stage = stage_of(&format!("images/{path}"));
    let Some((image, file)) = path.split_once('/') else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    if !crate::registry::valid_image_name(image) {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    let dir = crate::boot::image_boot_dir(&files.config.boot.images_dir, image);
    serve_from(files, dir, file.to_string(), stage, peer, req).await
}

async fn loader(
    State(files): Files,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    if stage_of(&name).is_none() {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    let dir = files.config.boot.ipxe_dir.clone();
    let stage = stage_of(&name);
    serve_from(files, dir, name, stage, peer, req).await
}

async fn online(State(files): Files, Json(report): Json<OnlineReport>) -> impl IntoResponse {
    files.tracker.online(report);
    (StatusCode::OK, Json(serde_json::json!({"ok": true})))
}

async fn nodes(State(files): Files) -> impl IntoResponse {
    Json(files.tracker.status())
}

async fn discovered(State(files): Files) -> impl IntoResponse {
    Json(files.tracker.discovered_now())
}

/// A response body that calls `on_end` once, after its last frame was handed to the connection.
struct NotifyOnEnd {
    inner: Body,
    on_end: Option<Box<dyn FnOnce() + Send>>,
    /// Bytes still to send when the length is known: hyper stops polling a body once
    /// Content-Length bytes went out, without waiting for its end-of-stream.
    remaining: Option<u64>,
}

impl NotifyOnEnd {
    fn new(inner: Body, length: Option<u64>, on_end: impl FnOnce() + Send + 'static) -> Self {
        let remaining = length.or(inner.size_hint().exact());
        NotifyOnEnd {
            inner,
            on_end: Some(Box::new(on_end)),
            remaining,
        }
    }
}

impl HttpBody for NotifyOnEnd {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if let Some(r) = this.remaining.as_mut() {
                    *r = r.saturating_sub(len);
                }
                this.remaining == Some(0) || this.inner.is_end_stream()
            }
            _ => false,
        };
        if ended {
            if let Some(f) = this.on_end.take() {
                f();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `router` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, router: Router) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is another server using http.port?)"))?;
    tracing::info!("HTTP boot and API on http://{addr}");
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
