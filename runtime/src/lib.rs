//! High-availability runtime: heartbeat links (UDP, serial), the failover state machine,
//! the resource group (virtual IP, services, mail), monitors, and the importers of Heartbeat
//! and mon configurations.
//!
//! The protocol codec (`wire`) and the failover core (`core`) are pure: bytes or events and a
//! clock in, decisions out. Everything that touches sockets, devices, processes or disks lives
//! at the edges and feeds the core through events.

pub mod command;
pub mod config;
pub mod control;
pub mod core;
pub mod engine;
pub mod ha;
pub mod import;
pub mod links;
pub mod mail;
pub mod monitor;
pub mod ping;
pub mod resources;
pub mod state;
pub mod wire;
