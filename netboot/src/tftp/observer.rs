//! Telling the appliance about finished transfers (to mark boot stages: boot file sent, kernel
//! sent…).

use std::net::SocketAddr;
use std::time::Duration;

use super::path::TftpPath;

/// A transfer the client acknowledged to the last block.
#[derive(Clone, Copy, Debug)]
pub struct CompletedTransfer<'a> {
    /// The client's address and port (its TID).
    pub client: SocketAddr,
    /// The path served, normalized (no leading slash).
    pub path: &'a TftpPath,
    /// Bytes of content sent (the file size).
    pub bytes: u64,
    /// From the request to the last ACK.
    pub duration: Duration,
}

/// Receives completed transfers. Called on the transfer's task: implementations must not block
/// (update memory or queue the event; persist elsewhere).
pub trait TransferObserver: Send + Sync + 'static {
    fn completed(&self, transfer: &CompletedTransfer<'_>);
}

impl<F> TransferObserver for F
where
    F: Fn(&CompletedTransfer<'_>) + Send + Sync + 'static,
{
    fn completed(&self, transfer: &CompletedTransfer<'_>) {
        self(transfer)
    }
}

/// An observer that ignores everything (tests, benchmarks).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoTransferObserver;

impl TransferObserver for NoTransferObserver {
    fn completed(&self, _: &CompletedTransfer<'_>) {}
}
