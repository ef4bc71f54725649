//! Network boot for clustermaker: the DHCPv4 server (PXE, iPXE, UEFI, relay, ProxyDHCP, leases),
//! the TFTP server, and the per-node boot scripts served over TFTP and HTTP.
//!
//! Protocol cores are pure (bytes in, decisions out, the clock passed in); sockets live at the
//! edges. The types every part shares (MAC addresses, boot stages, the node directory the servers
//! consult) are in [`node`].

pub mod dhcp;
pub mod node;
pub mod ra;
pub mod script;
pub mod tftp;

pub use node::{
    BootObserver, BootStage, ClientArch, ClientRef, DiscoveredClient, MacAddr, NodeDirectory,
    Reservation,
};
