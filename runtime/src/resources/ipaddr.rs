//! The virtual IP: added and removed over netlink, announced after adding.
//!
//! Reads (which interface, is the VIP there, the MAC) go through getifaddrs(3), which is
//! synchronous and cheap enough for status polls. Writes go through rtnetlink on a private
//! current-thread tokio runtime, created per operation on the calling thread so the netlink
//! socket lives in that thread's network namespace.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use rtnetlink::{AddressMessageBuilder, Handle};

use super::announce::{self, Mac};
use super::ResourceState;
use crate::config::parse_cidr;

/// Netlink answers in microseconds; this only guards against a wedged kernel or socket.
const NETLINK_TIMEOUT: Duration = Duration::from_secs(5);

/// One address of one interface, as getifaddrs reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddr {
    pub interface: String,
    pub addr: IpAddr,
    pub prefix: u8,
}

/// One interface's link layer: index and MAC (when it has a 6-byte one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfLink {
    pub interface: String,
    pub index: u32,
    pub mac: Option<Mac>,
}

/// The interfaces of the current network namespace.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub addrs: Vec<IfAddr>,
    pub links: Vec<IfLink>,
}

impl Snapshot {
    pub fn read() -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        for ifa in nix::ifaddrs::getifaddrs().context("cannot list interface addresses")? {
            let Some(address) = ifa.address else { continue };
            // IPv4 entries carry the address label (`eth0:1`); the device is before the colon.
            let interface = match ifa.interface_name.split_once(':') {
                Some((dev, _)) => dev.to_string(),
                None => ifa.interface_name.clone(),
            };
            if let Some(link) = address.as_link_addr() {
                let Ok(index) = u32::try_from(link.ifindex()) else {
                    continue;
                };
                snap.links.push(IfLink {
                    interface,
                    index,
                    mac: link.addr(),
                });
            } else if let Some(sin) = address.as_sockaddr_in() {
                let prefix = ifa
                    .netmask
                    .as_ref()
                    .and_then(|m| m.as_sockaddr_in())
                    .map_or(32, |m| u32::from(m.ip()).leading_ones() as u8);
                snap.addrs.push(IfAddr {
                    interface,
                    addr: IpAddr::V4(sin.ip()),
                    prefix,
                });
            } else if let Some(sin6) = address.as_sockaddr_in6() {
                let prefix = ifa
                    .netmask
                    .as_ref()
                    .and_then(|m| m.as_sockaddr_in6())
                    .map_or(128, |m| u128::from(m.ip()).leading_ones() as u8);
                snap.addrs.push(IfAddr {
                    interface,
                    addr: IpAddr::V6(sin6.ip()),
                    prefix,
                });
            }
        }
        Ok(snap)
    }

    pub fn link(&self, interface: &str) -> Option<&IfLink> {
        self.links.iter().find(|l| l.interface == interface)
    }

    /// Where `vip` is configured now (normally one place).
    pub fn holders(&self, vip: IpAddr) -> impl Iterator<Item = &IfAddr> {
        self.addrs.iter().filter(move |a| a.addr == vip)
    }

    /// The interface to put `vip` on when none is configured: the one that has it already,
    /// else the one with the most specific existing subnet containing it (Heartbeat's
    /// `findif`). Link-local subnets do not count.
    pub fn find_interface(&self, vip: IpAddr) -> Option<&str> {
        if let Some(a) = self.holders(vip).next() {
            return Some(&a.interface);
        }
        self.addrs
            .iter()
            .filter(|a| !is_link_local(a.addr) && contains(a.addr, a.prefix, vip))
            .max_by_key(|a| a.prefix)
            .map(|a| a.interface.as_str())
    }

    /// A link-local address of `interface`, the usual source of neighbour advertisements.
    fn link_local(&self, interface: &str) -> Option<Ipv6Addr> {
        self.addrs.iter().find_map(|a| match a.addr {
            IpAddr::V6(v6) if a.interface == interface && is_link_local(a.addr) => Some(v6),
            _ => None,
        })
    }
}

fn is_link_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// Whether `net/prefix` contains `ip` (same family only).
pub fn contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
        let prefix = u32::from(prefix).min(width);
        if prefix == 0 {
            0
        } else {
            bits >> (width - prefix)
        }
    }
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            masked(u32::from(n).into(), 32, prefix) == masked(u32::from(i).into(), 32, prefix)
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            masked(n.into(), 128, prefix) == masked(i.into(), 128, prefix)
        }
        _ => false,
    }
}

pub struct IpAddrResource {
    addr: IpAddr,
    prefix: u8,
    interface: Option<String>,
    /// The second announcement burst, cancelled on release.
    pending: Mutex<Option<announce::Pending>>,
}

impl IpAddrResource {
    pub fn new(address: &str, interface: Option<String>) -> Result<IpAddrResource> {
        let (addr, prefix) =
            parse_cidr(address).ok_or_else(|| anyhow!("`{address}` is not ADDRESS/PREFIX"))?;
        Ok(IpAddrResource {
            addr,
            prefix,
            interface,
            pending: Mutex::new(None),
        })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// `ipaddr 192.168.1.49/24 on eth0`; an automatic interface is looked up now.
    pub fn name(&self) -> String {
        self.name_in(Snapshot::read().ok().as_ref())
    }

    fn name_in(&self, snap: Option<&Snapshot>) -> String {
        let interface = self.interface.clone().or_else(|| {
            snap.and_then(|s| s.find_interface(self.addr))
                .map(str::to_string)
        });
        match interface {
            Some(i) => format!("ipaddr {}/{} on {i}", self.addr, self.prefix),
            None => format!("ipaddr {}/{}", self.addr, self.prefix),
        }
    }

    fn resolve_interface(&self, snap: &Snapshot) -> Result<String> {
        match &self.interface {
            Some(i) => Ok(i.clone()),
            None => snap
                .find_interface(self.addr)
                .map(str::to_string)
                .ok_or_else(|| {
                    anyhow!(
                        "no interface has a subnet containing {}; set `interface`",
                        self.addr
                    )
                }),
        }
    }

    /// Adds the address (already there is fine) and announces it.
    pub fn start(&self) -> Result<()> {
        let snap = Snapshot::read()?;
        let interface = self.resolve_interface(&snap)?;
        let link = snap
            .link(&interface)
            .ok_or_else(|| anyhow!("interface {interface} does not exist"))?
            .clone();
        if snap.holders(self.addr).any(|a| a.interface == interface) {
            tracing::debug!("{} already on {interface}", self.addr);
        } else {
            self.add(link.index).with_context(|| {
                format!("cannot add {}/{} to {interface}", self.addr, self.prefix)
            })?;
        }
        self.announce(&snap, &link);
        Ok(())
    }

    fn add(&self, index: u32) -> Result<()> {
        let (addr, prefix) = (self.addr, self.prefix);
        with_netlink(move |handle| async move {
            let mut req = handle.address().add(index, addr, prefix);
            if addr.is_ipv6() {
                // Without NODAD the address stays tentative for a second or more (duplicate
                // address detection) and cannot be used: too slow for a failover, and the
                // peer that had it is gone or has released it.
                let msg = req.message_mut();
                msg.header.flags |= AddressHeaderFlags::Nodad;
                msg.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            ignore_errno(req.execute().await, libc::EEXIST)
        })
    }

    /// Announcing is best effort: the address works without it, neighbours just take longer
    /// to notice. A failure is logged, never fatal.
    fn announce(&self, snap: &Snapshot, link: &IfLink) {
        let Some(mac) = link.mac else {
            tracing::warn!(
                "{} has no Ethernet address: {} not announced",
                link.interface,
                self.addr
            );
            return;
        };
        let frames = match self.addr {
            IpAddr::V4(v4) => vec![
                announce::garp_request(mac, v4),
                announce::garp_reply(mac, v4),
            ],
            IpAddr::V6(v6) => {
                let source = snap.link_local(&link.interface).unwrap_or(v6);
                vec![announce::unsolicited_na(mac, source, v6)]
            }
        };
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // A re-acquire restarts the schedule.
        if let Some(old) = pending.take() {
            old.cancel();
        }
        match announce::announce(link.index, frames, self.addr.to_string()) {
            Ok(p) => *pending = Some(p),
            Err(e) => tracing::warn!("cannot announce {} on {}: {e}", self.addr, link.interface),
        }
    }

    /// Removes the address wherever it is (absent is fine) and cancels the pending announcement.
    pub fn stop(&self) -> Result<()> {
        if let Some(p) = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            p.cancel();
        }
        let snap = Snapshot::read()?;
        for held in snap.holders(self.addr) {
            let Some(link) = snap.link(&held.interface) else {
                continue;
            };
            let (index, addr, prefix) = (link.index, self.addr, held.prefix);
            with_netlink(move |handle| async move {
                let msg = match addr {
                    IpAddr::V4(v4) => AddressMessageBuilder::<Ipv4Addr>::new()
                        .index(index)
                        .address(v4, prefix)
                        .build(),
                    IpAddr::V6(v6) => AddressMessageBuilder::<Ipv6Addr>::new()
                        .index(index)
                        .address(v6, prefix)
                        .build(),
                };
                ignore_errno(
                    handle.address().del(msg).execute().await,
                    libc::EADDRNOTAVAIL,
                )
            })
            .with_context(|| format!("cannot remove {} from {}", self.addr, held.interface))?;
        }
        Ok(())
    }

    /// Name, state and detail from one look at the interfaces.
    pub fn status(&self) -> (String, ResourceState, String) {
        let snap = match Snapshot::read() {
            Ok(s) => s,
            Err(e) => return (self.name_in(None), ResourceState::Unknown, format!("{e:#}")),
        };
        let (state, detail) = self.state_in(&snap);
        (self.name_in(Some(&snap)), state, detail)
    }

    fn state_in(&self, snap: &Snapshot) -> (ResourceState, String) {
        let holders: Vec<&str> = snap
            .holders(self.addr)
            .map(|a| a.interface.as_str())
            .collect();
        if holders.is_empty() {
            return (ResourceState::Down, "address not configured".into());
        }
        let detail = format!("configured on {}", holders.join(", "));
        match &self.interface {
            Some(want) if !holders.contains(&want.as_str()) => {
                (ResourceState::Unknown, format!("{detail}, not on {want}"))
            }
            _ => (ResourceState::Up, detail),
        }
    }
}

/// A netlink error with this errno counts as success (idempotent add and remove).
fn ignore_errno(result: Result<(), rtnetlink::Error>, errno: i32) -> Result<(), rtnetlink::Error> {
    match result {
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == errno => Ok(()),
        other => other,
    }
}

/// Runs one netlink exchange on a private current-thread runtime, on a short-lived thread of
/// its own: callers stay blocking, and may even sit inside another runtime (where `block_on`
/// would panic). A new thread shares its creator's network namespace, so the socket is made
/// in the caller's namespace.
fn with_netlink<F, Fut>(f: F) -> Result<()>
where
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<(), rtnetlink::Error>>,
{
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("netlink".into())
            .spawn_scoped(scope, || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("cannot start a runtime for netlink")?;
                rt.block_on(async {
                    let (connection, handle, _) =
                        rtnetlink::new_connection().context("cannot open a netlink socket")?;
                    let task = tokio::spawn(connection);
                    let result = tokio::time::timeout(NETLINK_TIMEOUT, f(handle)).await;
                    task.abort();
                    match result {
                        Ok(Ok(())) => Ok(()),
                        Ok(Err(rtnetlink::Error::NetlinkError(e))) => {
                            Err(anyhow::Error::new(e.to_io()))
                        }
                        Ok(Err(e)) => Err(anyhow::Error::new(e)),
                        Err(_) => bail!("netlink did not answer within {NETLINK_TIMEOUT:?}"),
                    }
                })
            })
            .context("cannot start a netlink thread")?
            .join()
            .map_err(|_| anyhow!("the netlink thread panicked"))?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(interface: &str, cidr: &str) -> IfAddr {
        let (addr, prefix) = parse_cidr(cidr).unwrap();
        IfAddr {
            interface: interface.into(),
            addr,
            prefix,
        }
    }

    #[test]
    fn subnet_membership() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(contains(ip("192.168.1.10"), 24, ip("192.168.1.49")));
        assert!(!contains(ip("192.168.1.10"), 24, ip("192.168.2.49")));
        assert!(contains(ip("10.0.0.1"), 0, ip("192.168.2.49")));
        assert!(contains(ip("10.0.0.1"), 32, ip("10.0.0.1")));
        assert!(contains(ip("fd00::1"), 64, ip("fd00::49")));
        assert!(!contains(ip("fd00::1"), 64, ip("fd01::49")));
        assert!(
            !contains(ip("fd00::1"), 0, ip("10.0.0.1")),
            "families differ"
        );
        // Out-of-range prefixes from a hostile source do not panic.
        assert!(contains(ip("10.0.0.1"), 200, ip("10.0.0.1")));
    }

    #[test]
    fn finds_most_specific_interface() {
        let snap = Snapshot {
            addrs: vec![
                a("eth0", "192.168.0.10/16"),
                a("eth1", "192.168.1.10/24"),
                a("eth2", "fe80::1/64"),
                a("eth3", "fd00::1/64"),
            ],
            links: vec![],
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(snap.find_interface(ip("192.168.1.49")), Some("eth1"));
        assert_eq!(snap.find_interface(ip("192.168.7.49")), Some("eth0"));
        assert_eq!(snap.find_interface(ip("fd00::49")), Some("eth3"));
        assert_eq!(snap.find_interface(ip("10.1.1.1")), None);
        assert_eq!(snap.link_local("eth2"), Some("fe80::1".parse().unwrap()));
    }

    #[test]
    fn interface_already_holding_the_vip_wins() {
        let snap = Snapshot {
            addrs: vec![a("eth1", "192.168.1.10/24"), a("eth9", "192.168.1.49/32")],
            links: vec![],
        };
        assert_eq!(
            snap.find_interface("192.168.1.49".parse().unwrap()),
            Some("eth9")
        );
    }

    #[test]
    fn netlink_works_from_inside_an_async_runtime() {
        use futures_util::TryStreamExt;
        // A caller on a runtime thread must get an answer, not a nested-runtime panic.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let links = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let seen = links.clone();
        rt.block_on(async move {
            with_netlink(|handle| async move {
                let all: Vec<_> = handle.link().get().execute().try_collect().await?;
                seen.store(all.len(), std::sync::atomic::Ordering::SeqCst);
                Ok(())
            })
            .unwrap();
        });
        assert!(
            links.load(std::sync::atomic::Ordering::SeqCst) >= 1,
            "at least lo"
        );
    }

    #[test]
    fn no_interface_is_a_clear_error() {
        let r = IpAddrResource::new("203.0.113.77/24", None).unwrap();
        let e = r.resolve_interface(&Snapshot::default()).unwrap_err();
        assert!(e.to_string().contains("set `interface`"), "{e}");
    }
}
