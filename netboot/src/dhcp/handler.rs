//! The pure request → reply decision: bytes in, a reply (with where it goes), lease records to
//! persist and events to report out. No sockets, no clock of its own (time is passed in), no
//! file I/O; the server edge (`server.rs`) does the rest.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{self, DhcpOption, Flags, Opcode, OptionCode, UnknownOption};
use dhcproto::{Encodable, Encoder};

use crate::node::{
    BootObserver, BootStage, ClientRef, DiscoveredClient, MacAddr, NodeDirectory, Reservation,
};

use super::boot::{self, BootFile};
use super::classify::{self, Classification};
use super::config::{BootConfig, ConfigError, DhcpConfig, DhcpMode, Ipv4Cidr, ProxyVendorOptions};
use super::journal::MAX_HOSTNAME;
use super::leases::{ClientKey, Lease, LeaseInfo, LeaseRecord, LeaseState, LeaseTable, Secs};
use super::wire::{self, MessageType, Request};

/// The port a request arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenPort {
    /// 67, the DHCP server port.
    Dhcp,
    /// 4011, the PXE boot server port (ProxyDHCP mode).
    Pxe,
}

/// Where a datagram came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecvMeta {
    pub src: SocketAddrV4,
    pub port: ListenPort,
}

/// Where a reply goes (RFC 2131 4.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// 255.255.255.255:68 on the served interface.
    Broadcast,
    /// A plain unicast datagram (relay at giaddr:67, a client at ciaddr:68, a 4011 client).
    Unicast(SocketAddrV4),
    /// Unicast to `ip`:68 for a client that has no address yet: the kernel cannot resolve it
    /// by ARP, so the edge inserts an ARP entry `ip → mac` first (as dnsmasq does), or
    /// broadcasts when it cannot (RFC 2131 allows both).
    UnicastNoArp { ip: Ipv4Addr, mac: MacAddr },
}

/// A reply to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub to: Delivery,
    pub bytes: Vec<u8>,
    /// The reply promises a lease: it may only leave once the journal records are durable.
    pub durable: bool,
}

/// Something to tell the [`BootObserver`] once the reply is out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Stage(ClientRef, BootStage),
    Discovered(DiscoveredClient),
}

impl Event {
    /// Delivers the event.
    pub fn report(self, observer: &dyn BootObserver) {
        match self {
            Event::Stage(c, s) => observer.stage(c, s),
            Event::Discovered(d) => observer.discovered(d),
        }
    }
}

/// What the handler did, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Offered(Ipv4Addr),
    Acked(Ipv4Addr),
    Nak,
    Released(Ipv4Addr),
    Declined(Ipv4Addr),
    Informed,
    /// ProxyDHCP offer (port 67) with boot instructions and no address.
    ProxyOffered,
    /// ProxyDHCP or boot-server ACK (port 67 or 4011).
    ProxyAcked,
    /// No reply, and why.
    Ignored(&'static str),
}

/// The decision for one datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub outcome: Outcome,
    pub reply: Option<Reply>,
    pub events: Vec<Event>,
}

impl Decision {
    fn ignored(why: &'static str) -> Decision {
        Decision {
            outcome: Outcome::Ignored(why),
            reply: None,
            events: Vec::new(),
        }
    }
}

/// A subnet, compiled.
pub(super) struct Subnet {
    pub cidr: Ipv4Cidr,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub domain: Option<String>,
    pub ntp: Vec<Ipv4Addr>,
    pub mtu: Option<u16>,
    pub lease_secs: u32,
}

/// Most MACs remembered for the discovery rate limit.
const MAX_SEEN: usize = 4096;

/// The DHCP protocol core. Owns the lease table; see the module documentation.
pub struct Handler {
    pub(super) mode: DhcpMode,
    pub(super) server_ip: Ipv4Addr,
    pub(super) subnets: Vec<Subnet>,
    /// The subnet of the served interface (contains `server_ip`): non-relayed clients.
    local: Option<usize>,
    pub(super) boot: BootConfig,
    offer_secs: u32,
    decline_secs: u32,
    discovery_secs: u32,
    pub(super) proxy_vendor: ProxyVendorOptions,
    leases: LeaseTable,
    pending: Vec<LeaseRecord>,
    seen: HashMap<MacAddr, Secs>,
}

/// Hostname text from option 12: printable ASCII only, bounded.
fn clean_hostname(h: &[u8]) -> Option<Box<str>> {
    let s: String = h
        .iter()
        .take(MAX_HOSTNAME)
        .filter(|b| b.is_ascii_graphic())
        .map(|&b| b as char)
        .collect();
    (!s.is_empty()).then(|| s.into_boxed_str())
}

impl Handler {
    /// Compiles a validated configuration into a handler with an empty lease table.
    pub fn new(cfg: &DhcpConfig) -> Result<Handler, ConfigError> {
        cfg.validate()?;
        let server_ip = cfg.server_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let subnets: Vec<Subnet> = cfg
            .subnets
            .iter()
            .map(|s| Subnet {
                cidr: s.cidr,
                router: s.router,
                dns: s.dns.clone(),
                domain: s.domain.clone(),
                ntp: s.ntp.clone(),
                mtu: s.mtu,
                lease_secs: s.lease_secs.unwrap_or(cfg.lease_secs),
            })
            .collect();
        let mut excluded = vec![server_ip];
        for s in &subnets {
            excluded.push(s.cidr.network);
            excluded.push(s.cidr.broadcast());
            excluded.extend(s.router);
        }
        let pools = cfg
            .subnets
            .iter()
            .map(|s| s.pools.iter().map(|p| (p.start, p.end)).collect())
            .collect();
        let local = subnets.iter().position(|s| s.cidr.contains(server_ip));
        Ok(Handler {
            mode: cfg.mode,
            server_ip,
            local,
            boot: cfg.boot.clone(),
            offer_secs: cfg.offer_secs,
            decline_secs: cfg.decline_secs,
            discovery_secs: cfg.discovery_interval_secs,
            proxy_vendor: cfg.proxy_vendor_options,
            leases: LeaseTable::new(pools, excluded, cfg.max_leases as usize),
            subnets,
            pending: Vec::new(),
            seen: HashMap::new(),
        })
    }

    /// Loads persisted records (journal replay), dropping those outside today's subnets.
    pub fn restore(&mut self, records: &[LeaseRecord], now: Secs) {
        for rec in records {
            if self.subnet_containing(rec.ip).is_some() {
                self.leases.apply(rec);
            }
        }
        self.leases.expire(now);
        self.leases.requeue_free();
    }

    /// The lease table (read only).
    pub fn table(&self) -> &LeaseTable {
        &self.leases
    }

    /// Takes the records produced since the last call; the caller persists them before sending
    /// the replies marked `durable`.
    pub fn drain_records(&mut self) -> std::vec::Drain<'_, LeaseRecord> {
        self.pending.drain(..)
    }

    /// Offered and bound leases, for `node list` and status. Host names come from the node
    /// directory when the MAC is a member.
    pub fn leases(&self, now: Secs, dir: &dyn NodeDirectory) -> Vec<LeaseInfo> {
        let mut out: Vec<LeaseInfo> = self
            .leases
            .iter()
            .filter_map(|(ip, l)| live_lease_info(ip, l, now, dir))
            .collect();
        out.sort_by_key(|l| u32::from(l.ip));
        out
    }

    /// The offered or bound lease of an address (O(1)): lets the TFTP and HTTP sides, which
    /// only see a client's address, find its MAC.
    pub fn lease_by_ip(
        &self,
        ip: Ipv4Addr,
        now: Secs,
        dir: &dyn NodeDirectory,
    ) -> Option<LeaseInfo> {
        live_lease_info(ip, self.leases.get(ip)?, now, dir)
    }

    fn subnet_containing(&self, ip: Ipv4Addr) -> Option<usize> {
        self.subnets.iter().position(|s| s.cidr.contains(ip))
    }

    /// The subnet a request is about: the relay's (giaddr), else the one of the client's
    /// current address (unicast renewals of relayed clients), else the interface's.
    fn select_subnet(&self, req: &Request<'_>, use_ciaddr: bool) -> Option<usize> {
        if !req.giaddr.is_unspecified() {
            return self.subnet_containing(req.giaddr);
        }
        if use_ciaddr && !req.ciaddr.is_unspecified() {
            if let Some(s) = self.subnet_containing(req.ciaddr) {
                return Some(s);
            }
        }
        self.local
    }

    /// Decides what to do with one datagram. Never panics on any input.
    pub fn handle(
        &mut self,
        packet: &[u8],
        meta: &RecvMeta,
        now: Secs,
        dir: &dyn NodeDirectory,
    ) -> Decision {
        self.leases.expire(now);
        let req = match wire::parse(packet) {
            Ok(r) => r,
            Err(e) => {
                tracing::trace!(src = %meta.src, error = %e, "not a DHCP request");
                return Decision::ignored("unparsable");
            }
        };
        if req.malformed > 0 {
            tracing::debug!(mac = %req.mac, stripped = req.malformed, "malformed options stripped");
        }
        if req.hops > 16 {
            return Decision::ignored("too many relay hops");
        }
        if req.mac == MacAddr([0; 6]) || req.mac.0[0] & 1 == 1 {
            return Decision::ignored("invalid client hardware address");
        }
        let class = classify::classify(&req);
        let reservation = dir.reservation(&req.mac);
        let mut events = Vec::new();
        if matches!(req.msg_type, MessageType::Discover | MessageType::Request) {
            self.maybe_discovered(&req, &class, reservation.is_some(), now, &mut events);
        }
        let mut d = match self.mode {
            DhcpMode::Off => Decision::ignored("dhcp is off"),
            DhcpMode::Proxy => self.proxy(&req, &class, reservation.as_ref(), meta),
            DhcpMode::Server if meta.port == ListenPort::Pxe => {
                Decision::ignored("port 4011 is served in proxy mode only")
            }
            DhcpMode::Server => self.server(&req, &class, reservation.as_ref(), now, dir),
        };
        if !events.is_empty() {
            events.append(&mut d.events);
            d.events = events;
        }
        d
    }

    fn maybe_discovered(
        &mut self,
        req: &Request<'_>,
        class: &Classification,
        known: bool,
        now: Secs,
        events: &mut Vec<Event>,
    ) {
        if known || !class.is_boot_client() {
            return;
        }
        let interval = Secs::from(self.discovery_secs);
        if let Some(&t) = self.seen.get(&req.mac) {
            if now.saturating_sub(t) < interval && t <= now {
                return;
            }
        }
        if self.seen.len() >= MAX_SEEN {
            self.seen.retain(|_, t| now.saturating_sub(*t) < interval);
            if self.seen.len() >= MAX_SEEN {
                self.seen.clear();
            }
        }
        self.seen.insert(req.mac, now);
        events.push(Event::Discovered(DiscoveredClient {
            mac: req.mac,
            arch: class.arch,
            vendor_class: req.vendor_class.map(classify::vendor_class_text),
            uuid: req.uuid.and_then(classify::uuid_hex),
        }));
    }

    // ---- server mode ------------------------------------------------------------------------

    fn server(
        &mut self,
        req: &Request<'_>,
        class: &Classification,
        res: Option<&Reservation>,
        now: Secs,
        dir: &dyn NodeDirectory,
    ) -> Decision {
        let key = ClientKey::new(req.client_id, req.mac);
        match req.msg_type {
            MessageType::Discover => self.discover(req, class, res, &key, now, dir),
            MessageType::Request => self.request(req, class, res, &key, now, dir),
            MessageType::Decline => self.decline(req, &key, now),
            MessageType::Release => self.release(req, &key, now),
            MessageType::Inform => self.inform(req, class, res),
            _ => Decision::ignored("not a client message"),
        }
    }

    /// The reserved address of a client, when it is usable on subnet `s`.
    fn reserved_ip(&self, res: Option<&Reservation>, s: usize) -> Option<Ipv4Addr> {
        let ip = res?.ip?;
        (self.subnets[s].cidr.contains(ip) && !self.leases.is_excluded(ip)).then_some(ip)
    }

    /// Whether `ip` may be bound to this client on subnet `s` now.
    fn may_bind(
        &self,
        ip: Ipv4Addr,
        s: usize,
        key: &ClientKey,
        mac: &MacAddr,
        res: Option<&Reservation>,
        dir: &dyn NodeDirectory,
    ) -> bool {
        if !self.subnets[s].cidr.contains(ip) || self.leases.is_excluded(ip) {
            return false;
        }
        if !self.leases.available_for(ip, key) {
            return false;
        }
        if dir.reserved_by(ip).is_some_and(|m| &m != mac) {
            return false;
        }
        let reserved = self.reserved_ip(res, s);
        if reserved == Some(ip) {
            return true;
        }
        // A client with a reservation moves to it as soon as it is free.
        if let Some(r) = reserved {
            if self.leases.available_for(r, key) {
                return false;
            }
        }
        self.leases.pool_of(ip) == Some(s)
    }

    fn choose_address(
        &mut self,
        req: &Request<'_>,
        s: usize,
        key: &ClientKey,
        res: Option<&Reservation>,
        dir: &dyn NodeDirectory,
    ) -> Option<Ipv4Addr> {
        if let Some(r) = self.reserved_ip(res, s) {
            if self.leases.available_for(r, key) {
                return Some(r);
            }
            tracing::warn!(mac = %req.mac, ip = %r, "reserved address is held by another client; offering a pool address until it is free");
        }
        if let Some((ip, _)) = self.leases.by_key(key) {
            if self.may_bind(ip, s, key, &req.mac, res, dir) {
                return Some(ip);
            }
        }
        if let Some(ip) = req.requested_ip {
            if self.may_bind(ip, s, key, &req.mac, res, dir) {
                return Some(ip);
            }
        }
        let mac = req.mac;
        self.leases
            .allocate(s, |ip| dir.reserved_by(ip).is_none_or(|m| m == mac))
    }

    fn discover(
        &mut self,
        req: &Request<'_>,
        class: &Classification,
        res: Option<&Reservation>,
        key: &ClientKey,
        now: Secs,
        dir: &dyn NodeDirectory,
    ) -> Decision {
        let Some(s) = self.select_subnet(req, false) else {
            return Decision::ignored("no subnet for this client");
        };
        let Some(ip) = self.choose_address(req, s, key, res, dir) else {
            tracing::warn!(mac = %req.mac, subnet = %self.subnets[s].cidr, "address pool exhausted");
            return Decision::ignored("pool exhausted");
        };
        let bound = self
            .leases
            .get(ip)
            .is_some_and(|l| l.state == LeaseState::Bound && l.key.as_ref() == Some(key));
        if !bound
            && !self
                .leases
                .offer(ip, key, req.mac, now + Secs::from(self.offer_secs))
        {
            tracing::warn!(mac = %req.mac, "lease table full");
            return Decision::ignored("lease table full");
        }
        let bytes = self.build(req, MessageType::Offer, ip, Some(s), class, res, true);
        Decision {
            outcome: Outcome::Offered(ip),
            reply: Some(Reply {
                to: delivery(req, ip, false),
                bytes,
                durable: false,
            }),
            events: vec![Event::Stage(
                ClientRef {
                    mac: Some(req.mac),
                    ip: Some(ip),
                },
                BootStage::Offered,
            )],
        }
    }

    fn request(
        &mut self,
        req: &Request<'_>,
        class: &Classification,
        res: Option<&Reservation>,
        key: &ClientKey,
        now: Secs,
        dir: &dyn NodeDirectory,
    ) -> Decision {
        if let Some(sid) = req.server_id {
            // SELECTING: the client answers one OFFER.
            if sid != self.server_ip {
                self.leases.cancel_offer(key, now);
                return Decision::ignored("client chose another server");
            }
            let ip = match req.requested_ip {
                Some(ip) => ip,
                None if !req.ciaddr.is_unspecified() => req.ciaddr,
                None => return Decision::ignored("REQUEST without an address"),
            };
            let Some(s) = self.select_subnet(req, false) else {
                return Decision::ignored("no subnet for this client");
            };
            if self.may_bind(ip, s, key, &req.mac, res, dir) {
                return self.ack(req, class, res, key, ip, s, now);
            }
            return self.nak(req, "requested address not available");
        }
        if let Some(ip) = req.requested_ip.filter(|_| req.ciaddr.is_unspecified()) {
            // INIT-REBOOT: a client that remembers an address (RFC 2131 4.3.2).
            let Some(s) = self.select_subnet(req, false) else {
                return Decision::ignored("no subnet for this client");
            };
            if !self.subnets[s].cidr.contains(ip) {
                return self.nak(req, "address is on the wrong network");
            }
            let known = self.leases.by_key(key).map(|(lip, _)| lip);
            return match known {
                Some(lip) if lip == ip => {
                    if self.may_bind(ip, s, key, &req.mac, res, dir) {
                        self.ack(req, class, res, key, ip, s, now)
                    } else {
                        self.nak(req, "address no longer available")
                    }
                }
                Some(_) => self.nak(req, "client holds another address"),
                None if !self.leases.available_for(ip, key)
                    || dir.reserved_by(ip).is_some_and(|m| m != req.mac) =>
                {
                    self.nak(req, "address belongs to another client")
                }
                None => Decision::ignored("INIT-REBOOT from a client we have no record of"),
            };
        }
        if !req.ciaddr.is_unspecified() {
            // RENEWING (unicast) or REBINDING (broadcast): extend the lease at ciaddr.
            let ip = req.ciaddr;
            let Some(s) = self.select_subnet(req, true) else {
                return Decision::ignored("renewal for a network we do not serve");
            };
            if !self.subnets[s].cidr.contains(ip) {
                return Decision::ignored("renewal for a network we do not serve");
            }
            // Unknown but free addresses are re-granted: that recovers clients after the
            // state directory was lost, instead of cutting them off.
            if self.may_bind(ip, s, key, &req.mac, res, dir) {
                return self.ack(req, class, res, key, ip, s, now);
            }
            return self.nak(req, "lease not renewable");
        }
        Decision::ignored("REQUEST with neither server id, requested address nor ciaddr")
    }

    #[allow(clippy::too_many_arguments)]
    fn ack(
        &mut self,
        req: &Request<'_>,
        class: &Classification,
        res: Option<&Reservation>,
        key: &ClientKey,
        ip: Ipv4Addr,
        s: usize,
        now: Secs,
    ) -> Decision {
        let lease = self.subnets[s].lease_secs;
        let hostname = req.hostname.and_then(clean_hostname);
        let Some(rec) = self
            .leases
            .bind(ip, key, req.mac, now + Secs::from(lease), hostname)
        else {
            tracing::warn!(mac = %req.mac, "lease table full");
            return Decision::ignored("lease table full");
        };
        self.pending.push(rec);
        let bytes = self.build(req, MessageType::Ack, ip, Some(s), class, res, true);
        Decision {
            outcome: Outcome::Acked(ip),
            reply: Some(Reply {
                to: delivery(req, ip, false),
                bytes,
                durable: true,
            }),
            events: vec![Event::Stage(
                ClientRef {
                    mac: Some(req.mac),
                    ip: Some(ip),
                },
                BootStage::Bound,
            )],
        }
    }

    fn nak(&self, req: &Request<'_>, why: &'static str) -> Decision {
        tracing::debug!(mac = %req.mac, why, "NAK");
        let mut m = self.reply_base(req, MessageType::Nak);
        m.set_ciaddr(Ipv4Addr::UNSPECIFIED);
        if !req.giaddr.is_unspecified() {
            // The relay must broadcast a NAK: the client may be on a wrong network.
            m.set_flags(Flags::new(req.flags).set_broadcast());
        }
        m.opts_mut().insert(DhcpOption::Message(why.to_string()));
        let bytes = encode(&m, req.relay_info);
        Decision {
            outcome: Outcome::Nak,
            reply: Some(Reply {
                to: delivery(req, Ipv4Addr::UNSPECIFIED, true),
                bytes,
                durable: false,
            }),
            events: Vec::new(),
        }
    }

    fn decline(&mut self, req: &Request<'_>, key: &ClientKey, now: Secs) -> Decision {
        if req.server_id.is_some_and(|s| s != self.server_ip) {
            return Decision::ignored("DECLINE for another server");
        }
        let Some(ip) = req.requested_ip else {
            return Decision::ignored("DECLINE without an address");
        };
        let mine = self.leases.get(ip).is_some_and(|l| {
            l.key.as_ref() == Some(key) && !matches!(l.state, LeaseState::Declined)
        });
        if !mine {
            return Decision::ignored("DECLINE of an address the client does not hold");
        }
        tracing::warn!(mac = %req.mac, %ip, "client declined the address (in use on the network)");
        if let Some(rec) =
            self.leases
                .decline(ip, key, req.mac, now + Secs::from(self.decline_secs))
        {
            self.pending.push(rec);
        }
        Decision {
            outcome: Outcome::Declined(ip),
            reply: None,
            events: Vec::new(),
        }
    }

    fn release(&mut self, req: &Request<'_>, key: &ClientKey, now: Secs) -> Decision {
        if req.server_id.is_some_and(|s| s != self.server_ip) {
            return Decision::ignored("RELEASE for another server");
        }
        let ip = req.ciaddr;
        let mine = self
            .leases
            .get(ip)
            .is_some_and(|l| l.key.as_ref() == Some(key) && l.state == LeaseState::Bound);
        if !mine {
            return Decision::ignored("RELEASE of an address the client does not hold");
        }
        if let Some(rec) = self.leases.release(ip, now) {
            self.pending.push(rec);
        }
        Decision {
            outcome: Outcome::Released(ip),
            reply: None,
            events: Vec::new(),
        }
    }

    fn inform(
        &mut self,
        req: &Request<'_>,
        class: &Classification,
        res: Option<&Reservation>,
    ) -> Decision {
        if req.ciaddr.is_unspecified() {
            return Decision::ignored("INFORM without ciaddr");
        }
        let Some(s) = self.select_subnet(req, true) else {
            return Decision::ignored("INFORM from a network we do not serve");
        };
        let bytes = self.build(
            req,
            MessageType::Ack,
            Ipv4Addr::UNSPECIFIED,
            Some(s),
            class,
            res,
            false,
        );
        Decision {
            outcome: Outcome::Informed,
            reply: Some(Reply {
                to: delivery(req, Ipv4Addr::UNSPECIFIED, false),
                bytes,
                durable: false,
            }),
            events: Vec::new(),
        }
    }

    // ---- reply building ---------------------------------------------------------------------

    pub(super) fn reply_base(&self, req: &Request<'_>, t: MessageType) -> v4::Message {
        let mut m = v4::Message::default();
        m.set_opcode(Opcode::BootReply)
            .set_xid(req.xid)
            .set_flags(Flags::new(req.flags))
            .set_giaddr(req.giaddr)
            .set_chaddr(&req.mac.0);
        m.opts_mut()
            .insert(DhcpOption::MessageType(v4::MessageType::from(t as u8)));
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(self.server_ip));
        if let Some(id) = req.client_id {
            // RFC 6842: echo the client identifier.
            m.opts_mut()
                .insert(DhcpOption::ClientIdentifier(id.to_vec()));
        }
        m
    }

    /// Adds the boot instructions (server mode and proxy mode).
    pub(super) fn add_boot(
        &self,
        m: &mut v4::Message,
        req: &Request<'_>,
        f: &BootFile,
        proxy: bool,
    ) {
        if f.tftp {
            m.set_siaddr(self.server_ip);
            let name = self.server_ip.to_string();
            m.set_sname(name.as_bytes());
            m.opts_mut()
                .insert(DhcpOption::TFTPServerName(name.into_bytes()));
        }
        if f.file.len() < 128 {
            m.set_fname(f.file.as_bytes());
        }
        m.opts_mut()
            .insert(DhcpOption::BootfileName(f.file.as_bytes().to_vec()));
        if f.http_client {
            m.opts_mut()
                .insert(DhcpOption::ClassIdentifier(b"HTTPClient".to_vec()));
        } else if proxy {
            m.opts_mut()
                .insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
        }
        if let Some(uuid) = req.uuid {
            m.opts_mut()
                .insert(DhcpOption::ClientMachineIdentifier(uuid.to_vec()));
        }
    }

    /// Builds an OFFER or ACK (with `yiaddr`, or none for INFORM). `lease`: include 51/58/59.
    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        req: &Request<'_>,
        t: MessageType,
        yiaddr: Ipv4Addr,
        s: Option<usize>,
        class: &Classification,
        res: Option<&Reservation>,
        lease: bool,
    ) -> Vec<u8> {
        let mut m = self.reply_base(req, t);
        m.set_yiaddr(yiaddr);
        if t == MessageType::Ack && !req.ciaddr.is_unspecified() {
            m.set_ciaddr(req.ciaddr);
        }
        let want_all = req.param_list.is_none();
        if let Some(sub) = s.map(|s| &self.subnets[s]) {
            let o = m.opts_mut();
            if lease {
                let l = sub.lease_secs;
                o.insert(DhcpOption::AddressLeaseTime(l));
                o.insert(DhcpOption::Renewal(l / 2));
                o.insert(DhcpOption::Rebinding((u64::from(l) * 7 / 8) as u32));
            }
            o.insert(DhcpOption::SubnetMask(sub.cidr.mask()));
            if let Some(r) = sub.router {
                o.insert(DhcpOption::Router(vec![r]));
            }
            if !sub.dns.is_empty() {
                o.insert(DhcpOption::DomainNameServer(sub.dns.clone()));
            }
            if let Some(d) = &sub.domain {
                o.insert(DhcpOption::DomainName(d.clone()));
            }
            if let Some(name) = res.map(|r| r.name.as_str()).filter(|n| !n.is_empty()) {
                o.insert(DhcpOption::Hostname(name.chars().take(63).collect()));
            }
            if let Some(mtu) = sub.mtu.filter(|_| want_all || req.requested(26)) {
                o.insert(DhcpOption::InterfaceMtu(mtu));
            }
            if !sub.ntp.is_empty() && (want_all || req.requested(42)) {
                o.insert(DhcpOption::NtpServers(sub.ntp.clone()));
            }
        }
        if let Some(f) = boot::select(&self.boot, class, &req.mac, res) {
            self.add_boot(&mut m, req, &f, false);
            if class.ipxe {
                // ipxe.no-pxedhcp: we are the main server, iPXE need not wait for ProxyDHCP.
                m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
                    OptionCode::from(175),
                    vec![176, 1, 1],
                )));
            }
        }
        let mut bytes = encode(&m, req.relay_info);
        let limit = usize::from(req.max_size.unwrap_or(576)).max(576) - 28;
        if bytes.len() > limit {
            // Drop the least important options rather than send what the client cannot take.
            for code in [
                OptionCode::NtpServers,
                OptionCode::DomainName,
                OptionCode::Hostname,
            ] {
                m.opts_mut().remove(code);
            }
            bytes = encode(&m, req.relay_info);
        }
        bytes
    }
}

/// Encodes a reply with dhcproto, appends option 82 verbatim and pads to 300 bytes.
pub(super) fn encode(m: &v4::Message, relay_info: Option<&[u8]>) -> Vec<u8> {
    let mut buf = Vec::with_capacity(576);
    let mut e = Encoder::new(&mut buf);
    if m.encode(&mut e).is_err() {
        // Only reachable through option values over 255 bytes, which config validation and the
        // parser rule out; an empty reply is dropped by the edge.
        return Vec::new();
    }
    wire::finish_reply(&mut buf, relay_info);
    buf
}

/// RFC 2131 4.1: where a server-mode reply goes.
fn delivery(req: &Request<'_>, yiaddr: Ipv4Addr, nak: bool) -> Delivery {
    if !req.giaddr.is_unspecified() {
        Delivery::Unicast(SocketAddrV4::new(req.giaddr, 67))
    } else if nak {
        Delivery::Broadcast
    } else if !req.ciaddr.is_unspecified() {
        Delivery::Unicast(SocketAddrV4::new(req.ciaddr, 68))
    } else if req.broadcast() || yiaddr.is_unspecified() {
        Delivery::Broadcast
    } else {
        Delivery::UnicastNoArp {
            ip: yiaddr,
            mac: req.mac,
        }
    }
}

/// What a query shows of an offered or bound, unexpired lease; `None` for any other.
fn live_lease_info(
    ip: Ipv4Addr,
    l: &Lease,
    now: Secs,
    dir: &dyn NodeDirectory,
) -> Option<LeaseInfo> {
    if !matches!(l.state, LeaseState::Offered | LeaseState::Bound) || l.until <= now {
        return None;
    }
    Some(LeaseInfo {
        mac: l.mac,
        ip,
        state: l.state,
        expires: l.until,
        hostname: dir
            .reservation(&l.mac)
            .map(|r| r.name)
            .filter(|n| !n.is_empty())
            .or_else(|| l.hostname.as_deref().map(str::to_string)),
    })
}
