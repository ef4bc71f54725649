//! Errors of the server itself (not of one transfer: those are logged and counted).

use std::io;
use std::net::SocketAddr;

use super::config::ConfigError;

/// Why the TFTP server cannot start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum TftpError {
    /// The configuration is invalid.
    #[error("invalid TFTP configuration: {0}")]
    Config(#[from] ConfigError),
    /// The request socket cannot be bound (address not local, port taken, no permission).
    #[error("cannot bind the TFTP socket to {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    /// The request socket failed.
    #[error("TFTP socket error: {0}")]
    Io(#[from] io::Error),
}
