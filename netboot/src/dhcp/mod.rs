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
//! Decisions worth knowing (RFC 2131 leaves them to the server):
//! - **Unicast to a client without an address** (no broadcast flag, no ciaddr, no giaddr): the
//!   edge inserts an ARP entry for `yiaddr → chaddr` with SIOCSARP on the configured interface
//!   (as dnsmasq does) and unicasts; without an interface, or if the ioctl fails, it broadcasts,
//!   which RFC 2131 4.1 allows.
//! - **INIT-REBOOT**: ACK the client's known address; NAK a different address, an address on
//!   the wrong network, or an address bound to another client; stay silent for a client we have
//!   no record of (4.3.2). **RENEWING/REBINDING** of an unknown but free pool address is ACKed,
//!   which re-adopts clients after a lost state directory instead of cutting them off.
//! - **Reservations** (from the node directory, by MAC) win: a reserved address is never given
//!   to another MAC. If another client already holds it, the node gets a pool address for now,
//!   the holder's next renewal is NAKed (so it moves away), and the node moves to its reserved
//!   address at its next renewal (NAK, then rediscovery).
//! - **Leases are keyed** by option 61 when sent, else by chaddr; one address per key.
//! - **Offers** are held `offer_secs` in memory and never persisted; **ACKs** leave only after
//!   their journal record is on disk (group commit, one fdatasync per batch).
//! - **Options**: 1, 3, 6, 12 (reserved node name), 15, 51/58/59 (T1 50 %, T2 87.5 %), 54 and
//!   the boot options always; 26 and 42 when the client asks for them (or sends no list);
//!   61 echoed (RFC 6842); 82 echoed verbatim; replies padded to 300 bytes and trimmed to the
//!   client's maximum message size.
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
