//! DHCPv4 server (RFC 2131/2132) with PXE, iPXE and UEFI HTTP boot selection, relay support
//! (giaddr, option 82), ProxyDHCP (ports 67 and 4011) and crash-safe leases.
//!
//! Layers, from the wire inwards:
//! - [`wire`]: bounds-checked request parser (hostile input never panics; malformed options are
//!   stripped), reply finishing (verbatim option 82, 300-byte padding).
//! - [`classify`] and [`boot`]: what kind of boot client it is and which file or URL it gets.
//! - [`leases`]: the pure lease table (O(1)/O(log n) per operation, bounded).
//! - [`handler`]: the pure decision for one datagram, clock passed in.
//! - [`journal`]: append-only, CRC-checked lease journal with group commit and compaction.
//! - [`server`]: the tokio edge (sockets, ARP entries, batching, fsync before ACK).
//!
//! The appliance builds a [`DhcpServer`] from its `[dhcp]` table ([`DhcpConfig`]), a state
//! directory, its [`NodeDirectory`](crate::node::NodeDirectory) and
//! [`BootObserver`](crate::node::BootObserver), keeps a [`DhcpStatus`] for `node list`, and
//! awaits [`DhcpServer::run`].

pub mod boot;
pub mod classify;
pub mod config;
pub mod handler;
pub mod journal;
pub mod leases;
mod proxy;
pub mod server;
pub mod wire;

pub use config::{
    BootConfig, ConfigError, DhcpConfig, DhcpMode, Ipv4Cidr, PoolRange, ProxyVendorOptions,
    SubnetConfig,
};
pub use handler::{Decision, Delivery, Event, Handler, ListenPort, Outcome, RecvMeta, Reply};
pub use journal::{Journal, JournalError};
pub use leases::{ClientKey, LeaseInfo, LeaseRecord, LeaseState, LeaseTable, Secs};
pub use server::{unix_now, DhcpError, DhcpServer, DhcpStatus};

#[cfg(test)]
mod tests;
