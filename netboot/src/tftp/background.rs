//! Running a [`TftpServer`] on its own thread and runtime, for callers without tokio (end-to-end
//! tests, `cargo xtask bench`). The appliance itself calls [`TftpServer::run`] on its runtime.

use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use super::error::TftpError;
use super::server::{TftpCounters, TftpServer};

/// A server running on a background thread; stopped (transfers aborted) on drop or
/// [`BackgroundServer::stop`].
pub struct BackgroundServer {
    local: SocketAddr,
    counters: TftpCounters,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), TftpError>>>,
}

impl TftpServer {
    /// Starts the server on a new thread with a multi-threaded tokio runtime of `workers` threads
    /// (0 = one per CPU).
    pub fn spawn_background(self, workers: usize) -> std::io::Result<BackgroundServer> {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.enable_all().thread_name("tftp");
        if workers > 0 {
            builder.worker_threads(workers);
        }
        let runtime = builder.build()?;
        let local = self.local_addr();
        let counters = self.counters();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tftp-server".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        r = self.run() => r,
                        _ = stopped => Ok(()),
                    }
                })
            })?;
        Ok(BackgroundServer {
            local,
            counters,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl BackgroundServer {
    /// The request socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The server's counters.
    pub fn counters(&self) -> &TftpCounters {
        &self.counters
    }

    /// Stops the server and waits for its thread; returns the error it stopped on, if any.
    pub fn stop(mut self) -> Result<(), TftpError> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<(), TftpError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(TftpError::Io(std::io::Error::other(
                "TFTP server thread panicked",
            ))),
            None => Ok(()),
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}
