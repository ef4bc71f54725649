//! ProxyDHCP (PXE specification, "proxyDHCP on port 67" and the boot server on port 4011):
//! another server hands out addresses; we answer PXE clients with boot instructions only, no
//! address, and never record a lease.
//!
//! Both known client behaviours are served:
//! - pixiecore style (default): BIOS clients get option 43 with PXE discovery control 8 ("boot
//!   the file named here"); UEFI clients get no 43, which makes the firmware send a REQUEST to
//!   port 4011, answered with an ACK unicast back to its source.
//! - smee style (`proxy_vendor_options = "all"`): every PXE client gets 43 = 6:8.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::DhcpOption;

use crate::node::{BootStage, ClientArch, ClientRef, Reservation};

use super::boot;
use super::classify::Classification;
use super::config::ProxyVendorOptions;
use super::handler::{
    encode, Decision, Delivery, Event, Handler, ListenPort, Outcome, RecvMeta, Reply,
};
use super::wire::{MessageType, Request};

/// Option 43 value: PXE_DISCOVERY_CONTROL (6) = 8, then end.
const PXE_DISCOVERY_CONTROL: [u8; 4] = [6, 1, 8, 255];

impl Handler {
    pub(super) fn proxy(
        &mut self,
        req: &Request<'_>,
        class: &Classification,
        res: Option<&Reservation>,
        meta: &RecvMeta,
    ) -> Decision {
        if !class.is_boot_client() {
            return Decision {
                outcome: Outcome::Ignored("proxy mode answers boot clients only"),
                reply: None,
                events: Vec::new(),
            };
        }
        let Some(file) = boot::select(&self.boot, class, &req.mac, res) else {
            return Decision {
                outcome: Outcome::Ignored("no boot file for this client"),
                reply: None,
                events: Vec::new(),
            };
        };
        let (t, to, stage) = match (meta.port, req.msg_type) {
            (ListenPort::Dhcp, MessageType::Discover) => {
                let to = if req.giaddr.is_unspecified() {
                    Delivery::Broadcast
                } else {
                    Delivery::Unicast(SocketAddrV4::new(req.giaddr, 67))
                };
                (MessageType::Offer, to, BootStage::Offered)
            }
            // A client that picked our (address-less) offer on port 67.
            (ListenPort::Dhcp, MessageType::Request) if req.server_id == Some(self.server_ip) => {
                let to = if !req.giaddr.is_unspecified() {
                    Delivery::Unicast(SocketAddrV4::new(req.giaddr, 67))
                } else if !req.ciaddr.is_unspecified() {
                    Delivery::Unicast(SocketAddrV4::new(req.ciaddr, 68))
                } else {
                    Delivery::Broadcast
                };
                (MessageType::Ack, to, BootStage::Bound)
            }
            // The boot server: answer to wherever the request came from.
            (ListenPort::Pxe, MessageType::Request | MessageType::Inform) => (
                MessageType::Ack,
                Delivery::Unicast(meta.src),
                BootStage::Bound,
            ),
            _ => {
                return Decision {
                    outcome: Outcome::Ignored("proxy mode: not a message we answer"),
                    reply: None,
                    events: Vec::new(),
                }
            }
        };
        let mut m = self.reply_base(req, t);
        if t == MessageType::Ack {
            m.set_ciaddr(req.ciaddr);
        }
        self.add_boot(&mut m, req, &file, true);
        let bios = matches!(class.arch, Some(ClientArch::Bios) | None);
        // On port 4011 the client already found its boot server: no discovery control there
        // (as pixiecore, whose 4011 replies are known to work with edk2 and vendor firmwares).
        let vendor43 = !file.http_client
            && meta.port == ListenPort::Dhcp
            && (bios || self.proxy_vendor == ProxyVendorOptions::All || class.ipxe);
        if vendor43 {
            m.opts_mut()
                .insert(DhcpOption::VendorExtensions(PXE_DISCOVERY_CONTROL.to_vec()));
        }
        let bytes = encode(&m, req.relay_info);
        let ip = Some(req.ciaddr).filter(|a| *a != Ipv4Addr::UNSPECIFIED);
        Decision {
            outcome: if t == MessageType::Offer {
                Outcome::ProxyOffered
            } else {
                Outcome::ProxyAcked
            },
            reply: Some(Reply {
                to,
                bytes,
                durable: false,
            }),
            events: vec![Event::Stage(
                ClientRef {
                    mac: Some(req.mac),
                    ip,
                },
                stage,
            )],
        }
    }
}
