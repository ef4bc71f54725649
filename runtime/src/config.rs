//! The `[ha]` table of the configuration file: who the two masters are, how they hear each
//! other, the timing, the resource group, the monitors and where alerts go.
//!
//! Durations are written the human way (`"200ms"`, `"10s"`). The importers of Heartbeat and
//! mon files produce this same structure, so an imported setup is an ordinary config file.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default UDP port of the heartbeat links (Heartbeat's `udpport`).
pub const DEFAULT_UDP_PORT: u16 = 694;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// Whether this master runs the HA runtime at all.
    pub enabled: bool,
    /// This master's name; the host name when empty.
    pub node: String,
    /// The other master's name, as it calls itself.
    pub peer: String,
    /// The master that starts the group when both start together with equal data, and that
    /// gets it back when `auto_failback` is on (the first field of a `haresources` line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred: Option<String>,
    /// Shared secret for HMAC-SHA256 of every heartbeat; must be readable by root only.
    pub key_file: PathBuf,
    /// Interval between heartbeats.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// A heartbeat later than this is logged as late.
    #[serde(with = "humantime_serde")]
    pub warntime: Duration,
    /// The peer is dead when no link has heard it for this long. Must exceed 2 × keepalive.
    #[serde(with = "humantime_serde")]
    pub deadtime: Duration,
    /// At start, how long to wait for the peer before acting alone.
    #[serde(with = "humantime_serde")]
    pub initdead: Duration,
    /// Hand the group back to `preferred` when it returns (off: the seed's behaviour).
    pub auto_failback: bool,
    /// Tiebreaker: addresses to ping; a master that reaches none of them neither takes over nor
    /// keeps the group when it loses the peer.
    pub ping_nodes: Vec<IpAddr>,
    /// Optional fencing (e.g. IPMI power-off of the peer) run before a takeover.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fence: Option<FenceConfig>,
    /// After a failed start of the group, how long this master counts as unfit to hold it.
    #[serde(with = "humantime_serde")]
    pub failure_hold: Duration,
    /// Real-time priority and locked memory for the heartbeat path (recommended).
    pub realtime: bool,
    /// Directory of SysV init scripts for `service` resources (Heartbeat also looks in
    /// `/etc/ha.d/resource.d`).
    pub init_dir: PathBuf,
    pub links: Vec<LinkConfig>,
    /// The resource group, started in order and stopped in reverse.
    pub resources: Vec<ResourceConfig>,
    pub monitors: Vec<MonitorConfig>,
    pub mail: MailConfig,
}

impl Default for HaConfig {
    fn default() -> Self {
        HaConfig {
            enabled: false,
            node: String::new(),
            peer: String::new(),
            preferred: None,
            key_file: PathBuf::from("/etc/clustermaker/ha.key"),
            keepalive: Duration::from_millis(100),
            warntime: Duration::from_millis(300),
            deadtime: Duration::from_millis(600),
            initdead: Duration::from_secs(10),
            auto_failback: false,
            ping_nodes: Vec::new(),
            fence: None,
            failure_hold: Duration::from_secs(60),
            realtime: true,
            init_dir: PathBuf::from("/etc/init.d"),
            links: Vec::new(),
            resources: Vec::new(),
            monitors: Vec::new(),
            mail: MailConfig::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceConfig {
    /// Run with `sh -c`; `$CM_PEER` holds the peer's name. Exit 0 means the peer is off.
    pub command: String,
    #[serde(with = "humantime_serde", default = "default_fence_timeout")]
    pub timeout: Duration,
}

fn default_fence_timeout() -> Duration {
    Duration::from_secs(30)
}

/// One heartbeat link. Every link carries every message; the peer is dead only when all
/// links are silent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum LinkConfig {
    /// UDP unicast to the peer's address (Heartbeat's `ucast`).
    Udp {
        peer: IpAddr,
        #[serde(default = "default_udp_port")]
        port: u16,
        /// Local address to send from and listen on; all addresses when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bind: Option<IpAddr>,
        /// Interface to bind to (SO_BINDTODEVICE), so the link follows one NIC.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interface: Option<String>,
    },
    /// UDP multicast on an interface (Heartbeat's `mcast`).
    Mcast {
        group: IpAddr,
        interface: String,
        #[serde(default = "default_udp_port")]
        port: u16,
    },
    /// UDP broadcast on an interface (Heartbeat's `bcast`).
    Bcast {
        interface: String,
        #[serde(default = "default_udp_port")]
        port: u16,
    },
    /// A null-modem serial cable (Heartbeat's `serial` and `baud`).
    Serial {
        #[serde(default = "default_serial_device")]
        device: PathBuf,
        #[serde(default = "default_baud")]
        baud: u32,
    },
}

fn default_udp_port() -> u16 {
    DEFAULT_UDP_PORT
}
fn default_serial_device() -> PathBuf {
    PathBuf::from("/dev/ttyS0")
}
fn default_baud() -> u32 {
    19200
}

impl LinkConfig {
    /// A short name for status and logs: `udp:10.0.0.2:694`, `serial:/dev/ttyS0`.
    pub fn label(&self) -> String {
        match self {
            LinkConfig::Udp { peer, port, .. } => format!("udp:{peer}:{port}"),
            LinkConfig::Mcast {
                group,
                interface,
                port,
            } => format!("mcast:{group}:{port}%{interface}"),
            LinkConfig::Bcast { interface, port } => format!("bcast:{port}%{interface}"),
            LinkConfig::Serial { device, .. } => format!("serial:{}", device.display()),
        }
    }
}

/// One member of the resource group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ResourceConfig {
    /// A virtual IP (v4 or v6) with its prefix, e.g. `192.168.1.49/24` (Heartbeat's `IPaddr`).
    Ipaddr {
        address: String,
        /// The interface to put it on; the one whose subnet contains it when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        interface: Option<String>,
    },
    /// A service: a systemd unit, a SysV init script, or start/stop/status commands.
    Service {
        name: String,
        #[serde(default)]
        manager: ServiceManager,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        start: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        #[serde(with = "humantime_serde", default = "default_service_timeout")]
        timeout: Duration,
    },
    /// Mail on takeover and release (Heartbeat's `MailTo`).
    Mailto {
        to: Vec<String>,
        #[serde(default = "default_mailto_subject")]
        subject: String,
    },
}

fn default_service_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_mailto_subject() -> String {
    "Cluster_Failover_Event".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceManager {
    /// systemd when the unit exists, else an init script in `init_dir` or
    /// `/etc/ha.d/resource.d`.
    #[default]
    Auto,
    Systemd,
    Sysv,
    /// The `start`, `stop` and `status` commands (run with `sh -c`).
    Command,
}

/// A service check with mon semantics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    pub name: String,
    pub check: CheckConfig,
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: Duration,
    /// Each interval is lengthened or shortened by a random amount up to this.
    #[serde(with = "humantime_serde", default)]
    pub randskew: Duration,
    #[serde(with = "humantime_serde", default = "default_check_timeout")]
    pub timeout: Duration,
    /// mon's Time::Period, e.g. `hr {12am-11pm}`: alerts only fire inside it. Always when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<String>,
    /// Consecutive failures before the alerts fire (mon's `alertafter`).
    #[serde(default = "one")]
    pub alertafter: u32,
    /// How many times the alerts fire per failure episode; 0 for no limit (mon's `numalerts`).
    #[serde(default)]
    pub numalerts: u32,
    /// Name of a `service` resource to restart once before the alerts fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    /// `active`: runs only while this master holds the group (a service of the group);
    /// `always`: runs on both, and a failure marks this master unfit to take the group.
    #[serde(default)]
    pub when: MonitorScope,
    pub alerts: Vec<AlertConfig>,
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_check_timeout() -> Duration {
    Duration::from_secs(5)
}
fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MonitorScope {
    #[default]
    Active,
    Always,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum CheckConfig {
    /// Connect to a TCP port (mon's `tcp.monitor`).
    Tcp { host: String, port: u16 },
    /// GET a URL and expect a status code.
    Http {
        url: String,
        #[serde(default = "default_expect")]
        expect: u16,
    },
    /// Run a command (`sh -c`); exit 0 is success.
    Exec { command: String },
}

fn default_expect() -> u16 {
    200
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum AlertConfig {
    /// Hand the group to the peer (mon's `cause_hb_failover.alert`).
    Failover,
    /// Mail with a subject; to `mail.to` when `to` is empty (mon's `mail.alert -S`).
    Mail {
        subject: String,
        #[serde(default)]
        to: Vec<String>,
    },
    /// Run a command (`sh -c`) with `CM_MONITOR`, `CM_DETAIL` in its environment.
    Exec { command: String },
}

/// Where alert mail goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MailConfig {
    pub smtp_host: String,
    pub smtp_port: u16,
    /// Sender address; `clustermaker@<node>` when empty.
    pub from: String,
    /// Default recipients of cluster events (takeover, release, split brain, fencing).
    pub to: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for MailConfig {
    fn default() -> Self {
        MailConfig {
            smtp_host: "127.0.0.1".into(),
            smtp_port: 25,
            from: String::new(),
            to: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A reason the `[ha]` table cannot be used: the key (under `ha.`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfigError {
    pub key: String,
    pub reason: String,
}

impl HaConfig {
    /// Checks what serde cannot: names, timing relations, addresses. `node` may still be
    /// empty (filled from the host name at start).
    pub fn validate(&self) -> Result<(), HaConfigError> {
        let bad = |key: &str, reason: String| {
            Err(HaConfigError {
                key: format!("ha.{key}"),
                reason,
            })
        };
        if !self.enabled {
            return Ok(());
        }
        if self.peer.is_empty() {
            return bad("peer", "the other master's name is required".into());
        }
        for (key, name) in [("node", &self.node), ("peer", &self.peer)] {
            if !name.is_empty() && !valid_node_name(name) {
                return bad(
                    key,
                    format!(
                        "`{name}` is not a node name (1 to 64 of letters, digits, `.`, `-`, `_`)"
                    ),
                );
            }
        }
        if self.node == self.peer {
            return bad("peer", "must differ from `ha.node`".into());
        }
        if let Some(p) = &self.preferred {
            if p != &self.peer && !(self.node.is_empty() || p == &self.node) {
                return bad(
                    "preferred",
                    format!("`{p}` is neither this node nor the peer"),
                );
            }
        }
        if self.keepalive < Duration::from_millis(10) {
            return bad("keepalive", "must be at least 10ms".into());
        }
        if self.deadtime <= self.keepalive * 2 {
            return bad(
                "deadtime",
                format!(
                    "{} must be more than 2 × keepalive ({}), or one lost heartbeat fails over",
                    humantime::format_duration(self.deadtime),
                    humantime::format_duration(self.keepalive)
                ),
            );
        }
        if self.warntime < self.keepalive || self.warntime > self.deadtime {
            return bad("warntime", "must lie between keepalive and deadtime".into());
        }
        if self.initdead < self.deadtime {
            return bad("initdead", "must be at least deadtime".into());
        }
        if self.links.is_empty() {
            return bad(
                "links",
                "at least one heartbeat link is required (two are recommended: udp and serial)"
                    .into(),
            );
        }
        for (i, link) in self.links.iter().enumerate() {
            if let LinkConfig::Serial { baud, .. } = link {
                if !VALID_BAUDS.contains(baud) {
                    return bad(
                        &format!("links[{i}].baud"),
                        format!("{baud} is not a standard baud rate ({VALID_BAUDS:?})"),
                    );
                }
            }
        }
        for (i, r) in self.resources.iter().enumerate() {
            match r {
                ResourceConfig::Ipaddr { address, .. } => {
                    if parse_cidr(address).is_none() {
                        return bad(
                            &format!("resources[{i}].address"),
                            format!("`{address}` is not ADDRESS/PREFIX (e.g. 192.168.1.49/24)"),
                        );
                    }
                }
                ResourceConfig::Service {
                    name,
                    manager,
                    start,
                    stop,
                    ..
                } => {
                    if name.is_empty() || name.contains('/') {
                        return bad(
                            &format!("resources[{i}].name"),
                            format!("`{name}` is not a service name"),
                        );
                    }
                    if *manager == ServiceManager::Command && (start.is_none() || stop.is_none()) {
                        return bad(
                            &format!("resources[{i}]"),
                            "manager `command` needs `start` and `stop`".into(),
                        );
                    }
                }
                ResourceConfig::Mailto { .. } => {}
            }
        }
        for (i, m) in self.monitors.iter().enumerate() {
            if m.interval.is_zero() {
                return bad(
                    &format!("monitors[{i}].interval"),
                    "must not be zero".into(),
                );
            }
            if m.randskew >= m.interval {
                return bad(
                    &format!("monitors[{i}].randskew"),
                    "must be smaller than interval".into(),
                );
            }
            if let Some(r) = &m.restart {
                let known = self
                    .resources
                    .iter()
                    .any(|res| matches!(res, ResourceConfig::Service { name, .. } if name == r));
                if !known {
                    return bad(
                        &format!("monitors[{i}].restart"),
                        format!("`{r}` is not a service resource of the group"),
                    );
                }
            }
        }
        Ok(())
    }
}

pub const VALID_BAUDS: [u32; 8] = [9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600];

/// Node names travel in every heartbeat: short and plain.
pub fn valid_node_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// `ADDRESS/PREFIX` with a prefix that fits the family.
pub fn parse_cidr(text: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = text.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (prefix <= max && !addr.is_unspecified() && !addr.is_multicast()).then_some((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> HaConfig {
        HaConfig {
            enabled: true,
            node: "a".into(),
            peer: "b".into(),
            links: vec![LinkConfig::Serial {
                device: "/dev/ttyS0".into(),
                baud: 19200,
            }],
            ..HaConfig::default()
        }
    }

    #[test]
    fn defaults_validate() {
        minimal().validate().unwrap();
    }

    #[test]
    fn deadtime_must_exceed_twice_keepalive() {
        let mut c = minimal();
        c.keepalive = Duration::from_millis(300);
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "ha.deadtime");
        assert!(e.reason.contains("2 × keepalive"), "{}", e.reason);
    }

    #[test]
    fn parses_toml_with_human_durations() {
        let text = r#"
            enabled = true
            node = "servera"
            peer = "serverb"
            keepalive = "50ms"
            warntime = "150ms"
            deadtime = "200ms"
            initdead = "5s"
            [[links]]
            kind = "udp"
            peer = "10.0.0.2"
            [[links]]
            kind = "serial"
            [[resources]]
            kind = "ipaddr"
            address = "192.168.1.49/24"
            interface = "eth0"
            [[resources]]
            kind = "service"
            name = "mysqld"
            [[monitors]]
            name = "mysql"
            check = { type = "tcp", host = "localhost", port = 3306 }
            interval = "10s"
            randskew = "4s"
            alerts = [{ type = "failover" }, { type = "mail", subject = "MYSQL" }]
        "#;
        let c: HaConfig = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.deadtime, Duration::from_millis(200));
        assert_eq!(
            c.links[1],
            LinkConfig::Serial {
                device: "/dev/ttyS0".into(),
                baud: 19200
            }
        );
        // What the importers write reads back the same.
        let again: HaConfig = toml::from_str(&toml::to_string(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn cidr() {
        assert!(parse_cidr("192.168.1.49/24").is_some());
        assert!(parse_cidr("fd00::49/64").is_some());
        assert!(parse_cidr("192.168.1.49/33").is_none());
        assert!(parse_cidr("192.168.1.49").is_none());
    }
}
