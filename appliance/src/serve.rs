//! `clustermaker serve`: wires the boot services to the node tracker, starts the HA runtime,
//! and runs them until a signal. Any service failing to start stops the whole server with its
//! reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use crate::boot::BootFiles;
use crate::config::Config;
use crate::tracker::Tracker;

pub fn run(config: Config, config_path: Option<std::path::PathBuf>) -> Result<()> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("cannot create state_dir {}", config.state_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, config_path))
}

async fn serve(config: Config, config_path: Option<std::path::PathBuf>) -> Result<()> {
    let ha = if config.ha.enabled {
        Some(start_ha(&config, config_path)?)
    } else {
        None
    };
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    // NFS before the boot services: a node must never get a boot script for a root that is
    // not indexed and listening yet.
    let nfs = start_nfs(&config).await?;
    let tracker = if config.boot.enabled {
        Some(start_boot_services(&config, &mut tasks).await?)
    } else {
        None
    };

    let outcome = tokio::select! {
        failure = first_failure(&mut tasks) => failure,
        _ = shutdown_signal() => {
            tracing::info!("stopping");
            Ok(())
        }
    };
    tasks.abort_all();
    if let Some(nfs) = nfs {
        nfs.shutdown().await;
    }
    if let Some(tracker) = tracker {
        if let Err(e) = tracker.persist() {
            tracing::error!("cannot save node status at exit: {e:#}");
        }
    }
    if let Some((ha, guard)) = ha {
        tokio::task::spawn_blocking(move || {
            ha.stop();
            guard.goodbye();
        })
        .await?;
    }
    outcome
}

/// The embedded NFS server over the image store, or the kernel NFS server's exports file
/// written instead (`nfs.kernel_exports_file`).
async fn start_nfs(config: &Config) -> Result<Option<crate::nfs_serve::NfsService>> {
    if !config.nfs.enabled {
        return Ok(None);
    }
    if let Some(path) = &config.nfs.kernel_exports_file {
        let text = crate::nfs_serve::kernel_exports(config)?;
        crate::statefile::write_atomic(path, text.as_bytes())
            .with_context(|| format!("cannot write nfs.kernel_exports_file {}", path.display()))?;
        tracing::info!(
            file = %path.display(),
            "nfs: wrote the kernel NFS server's exports (run `exportfs -ra` to apply)"
        );
        return Ok(None);
    }
    Ok(Some(crate::nfs_serve::start(config).await?))
}

/// The HA runtime and its guard process.
fn start_ha(
    config: &Config,
    config_path: Option<std::path::PathBuf>,
) -> Result<(runtime::ha::Ha, Guard)> {
    let dir = crate::cli_ha::ha_state_dir(config);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // The guard first: from the moment the group can be up, somebody takes it down if we die.
    let guard = Guard::spawn(config_path)?;
    let ha = runtime::ha::Ha::start(&config.ha, &dir, &tokio::runtime::Handle::current())
        .context("HA runtime")?;
    Ok((ha, guard))
}

/// A child process holding the read end of a pipe: if this process dies without writing
/// "bye", the guard sees the pipe close and takes the resource group down
/// (`runtime::ha::run_guard`).
struct Guard {
    child: std::process::Child,
}

impl Guard {
    fn spawn(config_path: Option<std::path::PathBuf>) -> Result<Guard> {
        let exe = std::env::current_exe().context("cannot find our own executable")?;
        let mut cmd = std::process::Command::new(exe);
        if let Some(p) = config_path {
            cmd.arg("--config").arg(p);
        }
        let child = cmd
            .arg("ha-guard")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .context("cannot start the HA guard process")?;
        Ok(Guard { child })
    }

    fn goodbye(mut self) {
        use std::io::Write;
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"bye");
        }
        let _ = self.child.wait();
    }
}

async fn start_boot_services(
    config: &Config,
    tasks: &mut JoinSet<Result<()>>,
) -> Result<Arc<Tracker>> {
    let config = config.clone();
    let tracker = Tracker::open(&config.state_dir)?;
    let files = Arc::new(BootFiles::new(config.clone(), tracker.clone())?);

    tasks.spawn({
        let tracker = tracker.clone();
        async move {
            tracker.run_persist(Duration::from_millis(300)).await;
            Ok(())
        }
    });

    let http_addr = SocketAddr::from((config.network.address, config.http.port));
    // A template that does not render is refused now, not when the first node boots.
    crate::cli_overlay::templates(&config)?
        .check()
        .context("node overlay templates")?;
    let metrics = Arc::new(crate::metrics::MetricsStore::open(
        &config.state_dir,
        crate::metrics::DEFAULT_CAPACITY,
    )?);
    tasks.spawn({
        let metrics = metrics.clone();
        async move {
            crate::node_api::run_persist(metrics, Duration::from_secs(2)).await;
            Ok(())
        }
    });
    let router = crate::http::router(files.clone()).merge(crate::node_api::routes(
        crate::node_api::NodeApi::new(files.clone(), metrics),
    ));
    tasks.spawn(async move { crate::http::serve(http_addr, router).await });

    let dhcp = netboot::dhcp::DhcpServer::new(
        config.dhcp_effective(),
        &config.state_dir.join("dhcp"),
        tracker.clone(),
        tracker.clone(),
    )
    .context("DHCP server")?;
    tasks.spawn(async move { dhcp.run().await.context("DHCP server") });

    let tftp_files = Arc::new(crate::tftp_files::TftpBootFiles::new(files.clone()));
    let tftp_addr = SocketAddr::from((config.network.address, 69));
    let tftp = netboot::tftp::TftpServer::bind(
        tftp_addr,
        config.tftp.clone(),
        tftp_files.clone(),
        tftp_files,
    )
    .with_context(|| format!("TFTP server on {tftp_addr}"))?;
    tasks.spawn(run_on_own_thread("tftp", move || tftp.run()));

    if config.boot.ipv6_ra {
        let interface = config.network.interface.clone();
        tasks.spawn(async move { netboot::ra::serve(interface).await });
    }

    Ok(tracker)
}

/// Waits until a service fails. A service that ends without error (the DHCP server with
/// `mode = "off"`) leaves the others running.
async fn first_failure(tasks: &mut JoinSet<Result<()>>) -> Result<()> {
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(anyhow::anyhow!("a service task failed: {e}")),
        }
    }
    std::future::pending().await
}

/// Runs a service on a thread of its own with a one-worker runtime, and resolves when it ends.
/// TFTP without windowsize is one datagram per round trip: on a shared multi-threaded runtime
/// every block pays for a cross-thread wake-up, which made lock-step transfers ~1.5x slower
/// than tftpd-hpa (docs/BENCHMARKS.md).
async fn run_on_own_thread<F, Fut, E>(name: &'static str, service: F) -> Result<()>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let (done, finished) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(name)
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("{name}-server"))
        .spawn(move || {
            let result = runtime.block_on(service());
            let _ = done.send(result);
        })?;
    match finished.await {
        Ok(result) => result.with_context(|| format!("{name} server")),
        Err(_) => Err(anyhow::anyhow!(
            "{name} server thread ended without a result"
        )),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
