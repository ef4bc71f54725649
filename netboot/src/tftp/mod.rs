//! A read-only TFTP server (RFC 1350, with the option extensions of RFC 2347, 2348, 2349 and the
//! windowing of RFC 7440), built for serving boot loaders, kernels and initramfs to PXE clients.
//!
//! # Why not async-tftp
//!
//! The crate the project first named, async-tftp 0.4, keeps re-sending its OACK for about five
//! minutes after a client answers with ERROR (oblique/async-tftp-rs#18) — which PXE ROMs do on
//! every boot, after a tsize probe — follows symlinks out of its root, and runs its own smol
//! executor beside our tokio runtime. The protocol is small; owning it lets the core be pure and
//! tested with a fake clock, and lets transfers end the moment a client gives up.
//!
//! # Layout
//!
//! Pure cores (no sockets, no clock):
//! - [`packet`]: the wire format.
//! - [`path`]: file name rules ([`TftpPath`]).
//! - [`options`]: option negotiation.
//! - [`request`]: serve / refuse / drop, for one datagram on the request port.
//! - [`transfer`]: the state machine of one transfer (windows, retransmissions, rollover).
//!
//! Edges:
//! - [`TftpSource`] / [`TftpContent`]: where bytes come from; [`RootDir`] serves a directory with
//!   the kernel enforcing confinement (`openat2` + `RESOLVE_BENEATH`).
//! - [`TftpServer`]: sockets and tasks on tokio; [`TransferObserver`] hears of completed
//!   transfers.
//!
//! # Decisions
//!
//! - Leading `/` in names is stripped and the rest resolved beneath the root (PXE ROMs often send
//!   `/pxelinux.0`); `..`, backslashes, control characters, non-UTF-8 and names over 255 bytes
//!   are refused with ERROR 2 (see [`path`]).
//! - Symlinks are followed only while they stay inside the root (see [`RootDir`]).
//! - `netascii` is accepted and served byte for byte like `octet` (see [`request`]).
//! - Only regular files are served.
//! - Replies come from the address the request was sent to, from a fresh port per transfer.
//!
//! # Wiring
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use netboot::tftp::{NoTransferObserver, RootDir, TftpConfig, TftpServer};
//!
//! let config = TftpConfig::default();
//! let source = Arc::new(RootDir::new(&config.root)?);
//! let server = TftpServer::bind(
//!     "10.0.0.1:69".parse()?,
//!     config,
//!     source,
//!     Arc::new(NoTransferObserver),
//! )?;
//! let counters = server.counters();
//! tokio::spawn(server.run());
//! # let _ = counters; Ok(()) }
//! ```

mod background;
mod config;
mod error;
mod observer;
pub mod options;
pub mod packet;
pub mod path;
mod reader;
pub mod request;
mod rootdir;
mod server;
mod source;
pub mod transfer;

pub use background::BackgroundServer;
pub use config::{ConfigError, TftpConfig};
pub use error::TftpError;
pub use observer::{CompletedTransfer, NoTransferObserver, TransferObserver};
pub use packet::ErrorCode;
pub use path::{PathError, TftpPath};
pub use rootdir::RootDir;
pub use server::{TftpCounters, TftpServer};
pub use source::{SourceError, TftpContent, TftpSource};
