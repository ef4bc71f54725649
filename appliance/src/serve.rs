//! `clustermaker serve`: wires the boot services to the node tracker and runs them until a
//! signal. Any service failing to start stops the whole server with its reason.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use crate::boot::BootFiles;
use crate::config::Config;
use crate::tracker::Tracker;

pub fn run(config: Config) -> Result<()> {
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("cannot create state_dir {}", config.state_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> Result<()> {
    let tracker = Tracker::open(&config.state_dir)?;
    let files = Arc::new(BootFiles::new(config.clone(), tracker.clone())?);
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();

    tasks.spawn({
        let tracker = tracker.clone();
        async move {
            tracker.run_persist(Duration::from_millis(300)).await;
            Ok(())
        }
    });

    let http_addr = SocketAddr::from((config.network.address, config.http.port));
    let router = crate::http::router(files.clone());
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

    let outcome = tokio::select! {
        failure = first_failure(&mut tasks) => failure,
        _ = shutdown_signal() => {
            tracing::info!("stopping");
            Ok(())
        }
    };
    tasks.abort_all();
    if let Err(e) = tracker.persist() {
        tracing::error!("cannot save node status at exit: {e:#}");
    }
    outcome
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
