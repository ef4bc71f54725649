//! The `[dhcp]` table of the appliance configuration, its validation, and the compiled form the
//! packet path uses.
//!
//! Everything the packet path needs is checked once here, so the handler never has to cope with
//! an inverted pool or an unparsable CIDR at run time.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::node::MacAddr;

/// Directory (relative to the TFTP root and to `http_base`) that holds the per-node iPXE scripts.
/// The HTTP and TFTP servers serve the same path: see [`BootConfig::script_path`].
pub const SCRIPT_DIR: &str = "boot";

/// Largest total number of pool addresses accepted, so the lease table stays bounded in memory.
pub const MAX_POOL_ADDRESSES: u64 = 1 << 22;

/// What the DHCP server does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DhcpMode {
    /// Full DHCP server: hands out addresses and boot instructions.
    #[default]
    Server,
    /// ProxyDHCP: another server hands out addresses; we answer PXE clients with boot
    /// instructions only (no address, no leases).
    Proxy,
    /// No DHCP at all (the site's own server is configured for PXE by hand).
    Off,
}

/// Which PXE clients get option 43 (PXE discovery control = 8, "boot from the file name") in a
/// ProxyDHCP offer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProxyVendorOptions {
    /// pixiecore's behaviour: BIOS clients get 43; UEFI clients get none, which makes their
    /// firmware ask the boot server on port 4011 (more UEFI firmwares accept that path).
    #[default]
    BiosOnly,
    /// smee's behaviour: every PXE client gets 43 with discovery control 8.
    All,
}

/// An IPv4 network in CIDR notation (`10.0.0.0/24`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Cidr {
    /// The network address (host bits cleared).
    pub network: Ipv4Addr,
    /// The prefix length, 0–32.
    pub prefix: u8,
}

impl Ipv4Cidr {
    /// The netmask (`255.255.255.0` for a /24).
    pub fn mask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask_bits(self.prefix))
    }

    /// The broadcast address of the network.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask_bits(self.prefix))
    }

    /// Whether `ip` is inside the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask_bits(self.prefix) == u32::from(self.network)
    }
}

fn mask_bits(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;
    /// Parses `a.b.c.d/n`; host bits must be zero (a typo there usually means a wrong prefix).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not in CIDR form (expected e.g. 10.0.0.0/24)"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("`{prefix}` is not a prefix length (0-32)"))?;
        let network = Ipv4Addr::from(u32::from(addr) & mask_bits(prefix));
        if network != addr {
            return Err(format!(
                "`{s}` has host bits set (the network is {network}/{prefix})"
            ));
        }
        Ok(Ipv4Cidr { network, prefix })
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One inclusive address range of a pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolRange {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
}

/// A subnet served by this server: the one of the interface, or one reached through a relay
/// (selected by the relay's `giaddr`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetConfig {
    /// The network, e.g. `10.0.0.0/24`. Sent as option 1 (subnet mask).
    pub cidr: Ipv4Cidr,
    /// Dynamic ranges. Reserved addresses may be inside or outside them (outside is cleaner).
    #[serde(default)]
    pub pools: Vec<PoolRange>,
    /// Default gateway (option 3).
    #[serde(default)]
    pub router: Option<Ipv4Addr>,
    /// DNS servers (option 6).
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// DNS domain (option 15).
    #[serde(default)]
    pub domain: Option<String>,
    /// NTP servers (option 42).
    #[serde(default)]
    pub ntp: Vec<Ipv4Addr>,
    /// Interface MTU (option 26).
    #[serde(default)]
    pub mtu: Option<u16>,
    /// Lease time for this subnet; defaults to `dhcp.lease_secs`.
    #[serde(default)]
    pub lease_secs: Option<u32>,
}

/// Boot file names and URLs. The one place that knows the path convention shared by the DHCP,
/// TFTP and HTTP sides: loaders at the root, per-node scripts at `boot/{mac-dashed}.ipxe`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootConfig {
    /// Base URL of the appliance's HTTP boot server (`http://10.0.0.1:8080`), without a trailing
    /// slash. When set, iPXE fetches its script over HTTP and UEFI HTTP boot is offered.
    #[serde(default)]
    pub http_base: Option<String>,
    /// Loader for BIOS PXE clients (option 93 = 0).
    #[serde(default = "default_bios_loader")]
    pub bios_loader: String,
    /// Default loader for x86 UEFI clients (93 = 6, 7, 9); a node's `Reservation::efi_loader`
    /// overrides it. `snponly.efi` works better on some NICs (e.g. ConnectX).
    #[serde(default = "default_efi_loader")]
    pub efi_loader: String,
    /// Loader for arm64 UEFI clients (93 = 11, and 19 over HTTP).
    #[serde(default = "default_arm64_loader")]
    pub arm64_loader: String,
}

fn default_bios_loader() -> String {
    "undionly.kpxe".into()
}
fn default_efi_loader() -> String {
    "ipxe.efi".into()
}
fn default_arm64_loader() -> String {
    "ipxe-arm64.efi".into()
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            http_base: None,
            bios_loader: default_bios_loader(),
            efi_loader: default_efi_loader(),
            arm64_loader: default_arm64_loader(),
        }
    }
}

impl BootConfig {
    /// The per-node iPXE script path relative to the TFTP root and to `http_base`:
    /// `boot/52-54-00-12-34-56.ipxe`.
    pub fn script_path(mac: &MacAddr) -> String {
        format!("{SCRIPT_DIR}/{}.ipxe", mac.dashed())
    }

    /// What an iPXE client is told to load: the script URL over HTTP when `http_base` is set,
    /// else the TFTP path.
    pub fn script_location(&self, mac: &MacAddr) -> String {
        match self.http_base() {
            Some(base) => format!("{base}/{}", Self::script_path(mac)),
            None => Self::script_path(mac),
        }
    }

    /// `http_base` without trailing slashes.
    pub fn http_base(&self) -> Option<&str> {
        self.http_base.as_deref().map(|b| b.trim_end_matches('/'))
    }

    /// The URL of a loader for UEFI HTTP boot clients, when HTTP is configured.
    pub fn loader_url(&self, loader: &str) -> Option<String> {
        self.http_base().map(|base| format!("{base}/{loader}"))
    }
}

/// The `[dhcp]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpConfig {
    /// `server` (default), `proxy` or `off`.
    #[serde(default)]
    pub mode: DhcpMode,
    /// The interface to serve (SO_BINDTODEVICE; broadcasts and ARP entries go there). Without
    /// it the server listens on every interface and falls back to broadcast replies where the
    /// RFC would unicast to a client that has no address yet.
    #[serde(default)]
    pub interface: Option<String>,
    /// This server's address: server identifier (54), next-server (siaddr), TFTP server (66).
    /// Required unless `mode = "off"`.
    #[serde(default)]
    pub server_ip: Option<Ipv4Addr>,
    /// Subnets served (server mode). The one that contains `server_ip` serves clients on the
    /// interface; the others are reached through relays.
    #[serde(default)]
    pub subnets: Vec<SubnetConfig>,
    /// fdatasync the lease journal before any ACK leaves (crash safety). Default true.
    #[serde(default = "default_true")]
    pub fsync: bool,
    /// Default lease time in seconds (option 51). T1 = 50 %, T2 = 87.5 %.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u32,
    /// How long an offered address is held for the client it was offered to.
    #[serde(default = "default_offer_secs")]
    pub offer_secs: u32,
    /// How long an address declined by a client (DHCPDECLINE: in use) is kept out of the pool.
    #[serde(default = "default_decline_secs")]
    pub decline_secs: u32,
    /// Report an unknown boot client to the observer at most once per this many seconds.
    #[serde(default = "default_discovery_secs")]
    pub discovery_interval_secs: u32,
    /// Upper bound on leases and held offers kept in memory (and so on the journal).
    #[serde(default = "default_max_leases")]
    pub max_leases: u32,
    /// ProxyDHCP: which PXE clients get option 43 (see [`ProxyVendorOptions`]).
    #[serde(default)]
    pub proxy_vendor_options: ProxyVendorOptions,
    /// Boot files and URLs.
    #[serde(default)]
    pub boot: BootConfig,
}

fn default_true() -> bool {
    true
}
fn default_lease_secs() -> u32 {
    3600
}
fn default_offer_secs() -> u32 {
    30
}
fn default_decline_secs() -> u32 {
    600
}
fn default_discovery_secs() -> u32 {
    300
}
fn default_max_leases() -> u32 {
    200_000
}

impl Default for DhcpConfig {
    fn default() -> Self {
        DhcpConfig {
            mode: DhcpMode::default(),
            interface: None,
            server_ip: None,
            subnets: Vec::new(),
            fsync: true,
            lease_secs: default_lease_secs(),
            offer_secs: default_offer_secs(),
            decline_secs: default_decline_secs(),
            discovery_interval_secs: default_discovery_secs(),
            max_leases: default_max_leases(),
            proxy_vendor_options: ProxyVendorOptions::default(),
            boot: BootConfig::default(),
        }
    }
}

/// A configuration error naming the key: `dhcp.subnets[0].pools[0]: start 10.0.0.200 is after
/// end 10.0.0.100`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    /// The dotted key, starting at `dhcp`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

fn err(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

fn check_file_name(key: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 100 {
        return Err(err(key, "must be 1 to 100 characters"));
    }
    if name.starts_with('/') || name.split('/').any(|c| c == ".." || c.is_empty()) {
        return Err(err(
            key,
            format!("`{name}` must be a relative path without `..` or empty components"),
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-/+".contains(&b))
    {
        return Err(err(
            key,
            format!("`{name}` has characters other than A-Z a-z 0-9 . _ - + /"),
        ));
    }
    Ok(())
}

impl DhcpConfig {
    /// Checks everything the packet path relies on. Errors name the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mode == DhcpMode::Off {
            return Ok(());
        }
        let server_ip = self
            .server_ip
            .ok_or_else(|| err("dhcp.server_ip", "is required unless mode = \"off\""))?;
        if server_ip.is_unspecified() || server_ip.is_broadcast() || server_ip.is_multicast() {
            return Err(err(
                "dhcp.server_ip",
                format!("{server_ip} is not a usable unicast address"),
            ));
        }
        if let Some(ifname) = &self.interface {
            if ifname.is_empty() || ifname.len() > 15 || ifname.contains(['/', ' ', '\0']) {
                return Err(err(
                    "dhcp.interface",
                    format!("`{ifname}` is not an interface name (1-15 characters)"),
                ));
            }
        }
        if self.lease_secs < 10 {
            return Err(err("dhcp.lease_secs", "must be at least 10"));
        }
        if self.offer_secs == 0 || self.offer_secs > 600 {
            return Err(err("dhcp.offer_secs", "must be between 1 and 600"));
        }
        if self.max_leases == 0 {
            return Err(err("dhcp.max_leases", "must be at least 1"));
        }
        self.validate_boot()?;
        if self.mode == DhcpMode::Server && self.subnets.is_empty() {
            return Err(err(
                "dhcp.subnets",
                "server mode needs at least one subnet (or use mode = \"proxy\")",
            ));
        }
        let mut total: u64 = 0;
        let mut ranges: Vec<(u32, u32, String)> = Vec::new();
        for (i, s) in self.subnets.iter().enumerate() {
            let key = format!("dhcp.subnets[{i}]");
            if s.cidr.prefix < 8 || s.cidr.prefix > 30 {
                return Err(err(
                    format!("{key}.cidr"),
                    format!("{} must have a prefix between /8 and /30", s.cidr),
                ));
            }
            for (j, other) in self.subnets[..i].iter().enumerate() {
                if other.cidr.contains(s.cidr.network) || s.cidr.contains(other.cidr.network) {
                    return Err(err(
                        format!("{key}.cidr"),
                        format!("{} overlaps dhcp.subnets[{j}] ({})", s.cidr, other.cidr),
                    ));
                }
            }
            for (j, p) in s.pools.iter().enumerate() {
                let pkey = format!("{key}.pools[{j}]");
                if u32::from(p.start) > u32::from(p.end) {
                    return Err(err(
                        pkey,
                        format!("start {} is after end {}", p.start, p.end),
                    ));
                }
                for ip in [p.start, p.end] {
                    if !s.cidr.contains(ip) {
                        return Err(err(pkey, format!("{ip} is outside {}", s.cidr)));
                    }
                }
                let (a, b) = (u32::from(p.start), u32::from(p.end));
                if let Some((_, _, k)) = ranges.iter().find(|(x, y, _)| a <= *y && *x <= b) {
                    return Err(err(pkey, format!("overlaps {k}")));
                }
                ranges.push((a, b, pkey));
                total += u64::from(b - a) + 1;
            }
            if total > MAX_POOL_ADDRESSES {
                return Err(err(
                    format!("{key}.pools"),
                    format!("pools hold more than {MAX_POOL_ADDRESSES} addresses in total"),
                ));
            }
            if let Some(r) = s.router {
                if !s.cidr.contains(r) {
                    return Err(err(
                        format!("{key}.router"),
                        format!("{r} is outside {}", s.cidr),
                    ));
                }
            }
            if let Some(d) = &s.domain {
                let ok = !d.is_empty()
                    && d.len() <= 253
                    && d.split('.').all(|l| {
                        !l.is_empty()
                            && l.len() <= 63
                            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    });
                if !ok {
                    return Err(err(
                        format!("{key}.domain"),
                        format!("`{d}` is not a DNS domain name"),
                    ));
                }
            }
            if s.dns.len() > 8 {
                return Err(err(format!("{key}.dns"), "at most 8 servers"));
            }
            if s.ntp.len() > 8 {
                return Err(err(format!("{key}.ntp"), "at most 8 servers"));
            }
            if let Some(m) = s.mtu {
                if m < 68 {
                    return Err(err(format!("{key}.mtu"), format!("{m} is below 68")));
                }
            }
            if let Some(l) = s.lease_secs {
                if l < 10 {
                    return Err(err(format!("{key}.lease_secs"), "must be at least 10"));
                }
            }
        }
        Ok(())
    }

    fn validate_boot(&self) -> Result<(), ConfigError> {
        let b = &self.boot;
        check_file_name("dhcp.boot.bios_loader", &b.bios_loader)?;
        check_file_name("dhcp.boot.efi_loader", &b.efi_loader)?;
        check_file_name("dhcp.boot.arm64_loader", &b.arm64_loader)?;
        if let Some(base) = &b.http_base {
            let rest = base
                .strip_prefix("http://")
                .or_else(|| base.strip_prefix("https://"));
            let ok = match rest {
                Some(r) => {
                    !r.is_empty()
                        && !r.starts_with('/')
                        && r.bytes().all(|c| c.is_ascii_graphic())
                        && base.len() <= 160
                }
                None => false,
            };
            if !ok {
                return Err(err(
                    "dhcp.boot.http_base",
                    format!("`{base}` is not an http:// or https:// URL of at most 160 characters"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> DhcpConfig {
        DhcpConfig {
            server_ip: Some("10.0.0.1".parse().unwrap()),
            subnets: vec![SubnetConfig {
                cidr: "10.0.0.0/24".parse().unwrap(),
                pools: vec![PoolRange {
                    start: "10.0.0.100".parse().unwrap(),
                    end: "10.0.0.200".parse().unwrap(),
                }],
                router: None,
                dns: vec![],
                domain: None,
                ntp: vec![],
                mtu: None,
                lease_secs: None,
            }],
            ..DhcpConfig::default()
        }
    }

    #[test]
    fn cidr_parses_and_rejects_host_bits() {
        let c: Ipv4Cidr = "10.1.0.0/16".parse().unwrap();
        assert_eq!(c.mask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 1, 255, 255));
        assert!(c.contains(Ipv4Addr::new(10, 1, 2, 3)));
        assert!(!c.contains(Ipv4Addr::new(10, 2, 0, 0)));
        assert!("10.1.0.1/16".parse::<Ipv4Cidr>().is_err());
        assert!("10.1.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("10.1.0.0".parse::<Ipv4Cidr>().is_err());
    }

    #[test]
    fn validate_names_the_key() {
        assert_eq!(base().validate(), Ok(()));
        let mut c = base();
        c.subnets[0].pools[0] = PoolRange {
            start: "10.0.0.200".parse().unwrap(),
            end: "10.0.0.100".parse().unwrap(),
        };
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "dhcp.subnets[0].pools[0]: start 10.0.0.200 is after end 10.0.0.100"
        );
        let mut c = base();
        c.server_ip = None;
        assert_eq!(c.validate().unwrap_err().key, "dhcp.server_ip");
        let mut c = base();
        c.boot.efi_loader = "../x.efi".into();
        assert_eq!(c.validate().unwrap_err().key, "dhcp.boot.efi_loader");
        let mut c = base();
        c.subnets.push(c.subnets[0].clone());
        assert_eq!(c.validate().unwrap_err().key, "dhcp.subnets[1].cidr");
        let mut c = base();
        c.subnets[0].pools[0].end = "10.0.1.5".parse().unwrap();
        assert_eq!(c.validate().unwrap_err().key, "dhcp.subnets[0].pools[0]");
        let mut c = base();
        c.boot.http_base = Some("ftp://x".into());
        assert_eq!(c.validate().unwrap_err().key, "dhcp.boot.http_base");
    }

    #[test]
    fn deserializes_with_defaults_and_denies_unknown_fields() {
        let c: DhcpConfig = serde_json::from_str(
            r#"{"server_ip":"10.0.0.1","subnets":[{"cidr":"10.0.0.0/24","pools":[{"start":"10.0.0.10","end":"10.0.0.20"}]}]}"#,
        )
        .unwrap();
        assert!(c.fsync);
        assert_eq!(c.mode, DhcpMode::Server);
        assert_eq!(c.boot.bios_loader, "undionly.kpxe");
        c.validate().unwrap();
        assert!(
            serde_json::from_str::<DhcpConfig>(r#"{"server_ip":"10.0.0.1","bogus":1}"#).is_err()
        );
        let p: DhcpConfig =
            serde_json::from_str(r#"{"mode":"proxy","server_ip":"10.0.0.1"}"#).unwrap();
        assert_eq!(p.mode, DhcpMode::Proxy);
        p.validate().unwrap();
    }

    #[test]
    fn boot_paths() {
        let mac: MacAddr = "52:54:00:12:34:56".parse().unwrap();
        let mut b = BootConfig::default();
        assert_eq!(b.script_location(&mac), "boot/52-54-00-12-34-56.ipxe");
        b.http_base = Some("http://10.0.0.1:8080/".into());
        assert_eq!(
            b.script_location(&mac),
            "http://10.0.0.1:8080/boot/52-54-00-12-34-56.ipxe"
        );
        assert_eq!(
            b.loader_url("ipxe.efi").unwrap(),
            "http://10.0.0.1:8080/ipxe.efi"
        );
    }
}
