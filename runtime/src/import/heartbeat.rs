//! Heartbeat's `ha.cf`, `haresources` and `authkeys` (Heartbeat 1, 2 and 3 without a CRM).
//!
//! Follows Heartbeat's own reading of the files (heartbeat/config.c, auth.c, ResourceManager):
//! `#` starts a comment anywhere in ha.cf; times are seconds unless suffixed `ms` or `us`
//! (fractions allowed); node names are case-insensitive; `udpport` and `baud` apply to every
//! link of their kind wherever they appear. Directives without an equivalent are dropped with a
//! warning; what cannot work (three nodes, a second resource group, `crc` authentication, a
//! deadtime not above twice the keepalive) is refused.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{
    at_path, logical_lines, one_line, read_bounded, rename_warning, shell_join, valid_email,
    Comment, ImportError, Imported, Line, Syntax, MAX_DURATION_SECS,
};
use crate::config::{
    parse_cidr, valid_node_name, HaConfig, LinkConfig, ResourceConfig, ServiceManager,
    DEFAULT_UDP_PORT, VALID_BAUDS,
};

const HA_CF: &str = "ha.cf";
const HARESOURCES: &str = "haresources";
const AUTHKEYS: &str = "authkeys";

/// Where Heartbeat keeps the resource scripts that take arguments.
pub const RESOURCE_DIR: &str = "/etc/ha.d/resource.d";

/// Prefix of the hashed secret, so the heartbeat key differs from anything else derived from it.
const KEY_CONTEXT: &[u8] = b"clustermaker-authkeys:";

/// Imports `ha.cf`, `haresources` and (when present) `authkeys` from a Heartbeat configuration
/// directory (usually `/etc/ha.d`), for this machine (its host name names this master).
pub fn import_dir(dir: &Path) -> Result<Imported, ImportError> {
    import_dir_as(dir, None)
}

/// Like `import_dir`, for the master named `this_node` (one of ha.cf's two `node` names); this
/// machine's host name when `None`.
pub fn import_dir_as(dir: &Path, this_node: Option<&str>) -> Result<Imported, ImportError> {
    let ha_cf = dir.join(HA_CF);
    let this = match this_node {
        Some(name) => name.to_string(),
        None => nix::unistd::gethostname()
            .map_err(|e| {
                ImportError::new(
                    &ha_cf.display().to_string(),
                    0,
                    format!("cannot read this machine's host name: {e}"),
                    "name this master with --node NAME",
                )
            })?
            .to_string_lossy()
            .into_owned(),
    };
    let mut ha = HaConfig {
        node: this,
        ..HaConfig::default()
    };
    let mut warnings = Vec::new();

    let name = ha_cf.display().to_string();
    let text = read_bounded(&ha_cf)?;
    let mut w = Vec::new();
    parse_ha_cf(&text, &mut ha, &mut w).map_err(|e| at_path(e, &name))?;
    warnings.extend(w.into_iter().map(|w| rename_warning(w, HA_CF, &name)));

    let path = dir.join(HARESOURCES);
    let name = path.display().to_string();
    let text = read_bounded(&path)?;
    let mut w = Vec::new();
    parse_haresources(&text, &mut ha, &mut w).map_err(|e| at_path(e, &name))?;
    warnings.extend(w.into_iter().map(|w| rename_warning(w, HARESOURCES, &name)));

    let path = dir.join(AUTHKEYS);
    let name = path.display().to_string();
    let key = if path.exists() {
        let text = read_bounded(&path)?;
        let key = parse_authkeys(&text).map_err(|e| at_path(e, &name))?;
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(&path) {
            if meta.permissions().mode() & 0o077 != 0 {
                warnings.push(format!(
                    "{name}: readable by other users; Heartbeat refused that. The key derived \
                     from it goes to {} with mode 0600; consider changing the secret",
                    ha.key_file.display()
                ));
            }
        }
        Some(key)
    } else {
        warnings.push(format!(
            "{name}: not found; create the heartbeat key with \
             `head -c 32 /dev/urandom > {0}; chmod 600 {0}` and copy it to the peer",
            ha.key_file.display()
        ));
        None
    };
    let mut imported = Imported { ha, key, warnings };
    super::warn_unaddressed_mail(&mut imported);
    Ok(imported)
}

/// A link before `udpport` and `baud` (which may come later in the file) are known.
enum PendingLink {
    Udp {
        peer: IpAddr,
        interface: String,
    },
    Bcast {
        interface: String,
    },
    Mcast {
        group: IpAddr,
        interface: String,
        port: u16,
    },
    Serial {
        device: String,
    },
}

/// Reads ha.cf into `into`. `into.node` must name this master on entry (one of the two `node`
/// lines, compared case-insensitively); on return `node` and `peer` hold the two names as
/// ha.cf spells them (lower case, as Heartbeat uses them).
pub fn parse_ha_cf(
    text: &str,
    into: &mut HaConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ImportError> {
    let lines = logical_lines(
        text,
        HA_CF,
        Syntax {
            comment: Comment::Anywhere,
            continuation: false,
        },
    )?;
    let err = |no: usize, what: String, fix: &str| ImportError::new(HA_CF, no, what, fix);
    let mut warn = |no: usize, msg: String| warnings.push(format!("{HA_CF}:{no}: {msg}"));

    let mut nodes: Vec<(String, usize)> = Vec::new();
    let mut links: Vec<PendingLink> = Vec::new();
    let mut ucasts = 0usize;
    let mut udpport: Option<u16> = None;
    let mut baud: Option<u32> = None;
    let mut keepalive: Option<(Duration, usize)> = None;
    let mut deadtime: Option<(Duration, usize)> = None;
    let mut warntime: Option<(Duration, usize)> = None;
    let mut initdead: Option<(Duration, usize)> = None;
    let mut failback_seen = false;

    for Line { no, text, .. } in &lines {
        let no = *no;
        let mut words = text.split_whitespace();
        let Some(directive) = words.next() else {
            continue;
        };
        let args: Vec<&str> = words.collect();
        // Option directives take values separated by blanks or commas.
        let values: Vec<&str> = args
            .iter()
            .flat_map(|a| a.split(','))
            .filter(|v| !v.is_empty())
            .collect();
        let one = |what: &str| -> Result<&str, ImportError> {
            match values.as_slice() {
                [v] => Ok(v),
                [] => Err(err(no, format!("`{directive}` without a value"), what)),
                _ => Err(err(no, format!("`{directive}` takes one value"), what)),
            }
        };
        let time = |fix: &str| -> Result<(Duration, usize), ImportError> {
            let v = one(fix)?;
            let d = heartbeat_time(v).ok_or_else(|| {
                err(
                    no,
                    format!("`{v}` is not a time"),
                    "write seconds (`2`, `0.5`) or milliseconds (`500ms`)",
                )
            })?;
            Ok((d, no))
        };
        match directive.to_ascii_lowercase().as_str() {
            "node" => {
                if values.is_empty() {
                    return Err(err(no, "`node` without a name".into(), "write `node NAME`"));
                }
                for v in &values {
                    let name = v.to_ascii_lowercase();
                    if !valid_node_name(&name) {
                        return Err(err(
                            no,
                            format!("`{v}` is not a node name"),
                            "use the master's `uname -n` (letters, digits, `.`, `-`, `_`)",
                        ));
                    }
                    if nodes.iter().any(|(n, _)| *n == name) {
                        warn(no, format!("node `{name}` listed twice"));
                        continue;
                    }
                    if nodes.len() == 2 {
                        return Err(err(
                            no,
                            format!("a third node `{name}`"),
                            "clustermaker runs exactly two masters: keep two `node` lines",
                        ));
                    }
                    nodes.push((name, no));
                }
            }
            "keepalive" => keepalive = Some(time("write `keepalive 1` or `keepalive 200ms`")?),
            "deadtime" => deadtime = Some(time("write `deadtime 10` or `deadtime 800ms`")?),
            "warntime" => warntime = Some(time("write `warntime 5` or `warntime 400ms`")?),
            "initdead" => initdead = Some(time("write `initdead 60` or `initdead 10s`")?),
            "udpport" => {
                let v = one("write `udpport 694`")?;
                udpport = Some(v.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                    err(
                        no,
                        format!("`{v}` is not a UDP port"),
                        "use 1..65535 (694 is the default)",
                    )
                })?);
            }
            "baud" => {
                let v = one("write `baud 19200`")?;
                baud = Some(
                    v.parse()
                        .ok()
                        .filter(|b| VALID_BAUDS.contains(b))
                        .ok_or_else(|| {
                            err(
                                no,
                                format!("`{v}` is not a standard baud rate"),
                                &format!("use one of {VALID_BAUDS:?}"),
                            )
                        })?,
                );
            }
            "bcast" => {
                if args.is_empty() {
                    return Err(err(
                        no,
                        "`bcast` without an interface".into(),
                        "write `bcast eth0`",
                    ));
                }
                for iface in &args {
                    links.push(PendingLink::Bcast {
                        interface: interface(iface, no)?,
                    });
                }
            }
            "mcast" => {
                let [iface, group, port, ttl, lp] = args.as_slice() else {
                    return Err(err(
                        no,
                        format!("`mcast` takes 5 values, not {}", args.len()),
                        "write `mcast IFACE GROUP PORT TTL LOOP`, e.g. `mcast eth0 225.0.0.1 694 1 0`",
                    ));
                };
                let group: IpAddr =
                    group
                        .parse()
                        .ok()
                        .filter(IpAddr::is_multicast)
                        .ok_or_else(|| {
                            err(
                                no,
                                format!("`{group}` is not a multicast group"),
                                "use an address in 224.0.0.0/4 (e.g. 225.0.0.1) or ff00::/8",
                            )
                        })?;
                let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(|| {
                    err(no, format!("`{port}` is not a UDP port"), "use 1..65535")
                })?;
                match (ttl.parse::<u8>(), *lp) {
                    (Ok(1), "0") => {}
                    (Ok(t), "0" | "1") if t > 0 => warn(
                        no,
                        format!("mcast ttl {t} / loop {lp} ignored: clustermaker sends with ttl 1, no loop"),
                    ),
                    _ => {
                        return Err(err(
                            no,
                            format!("`{ttl} {lp}` are not a TTL (1..255) and a loop flag (0 or 1)"),
                            "write e.g. `mcast eth0 225.0.0.1 694 1 0`",
                        ))
                    }
                }
                links.push(PendingLink::Mcast {
                    group,
                    interface: interface(iface, no)?,
                    port,
                });
            }
            "ucast" => {
                let [iface, peers @ ..] = args.as_slice() else {
                    return Err(err(
                        no,
                        "`ucast` without values".into(),
                        "write `ucast eth0 10.0.0.2`",
                    ));
                };
                if peers.is_empty() {
                    return Err(err(
                        no,
                        "`ucast` without an address".into(),
                        "write `ucast eth0 10.0.0.2`",
                    ));
                }
                let iface = interface(iface, no)?;
                for p in peers {
                    let peer: IpAddr = p.parse().map_err(|_| {
                        err(
                            no,
                            format!("`{p}` is not an IP address"),
                            "write the peer's address, not a host name",
                        )
                    })?;
                    ucasts += 1;
                    links.push(PendingLink::Udp {
                        peer,
                        interface: iface.clone(),
                    });
                }
            }
            "serial" => {
                if args.is_empty() {
                    return Err(err(
                        no,
                        "`serial` without a device".into(),
                        "write `serial /dev/ttyS0`",
                    ));
                }
                for dev in &args {
                    if !dev.starts_with("/dev/") || dev.contains("..") {
                        return Err(err(
                            no,
                            format!("`{dev}` is not a serial device"),
                            "write the device path, e.g. `serial /dev/ttyS0`",
                        ));
                    }
                    links.push(PendingLink::Serial {
                        device: dev.to_string(),
                    });
                }
            }
            "auto_failback" => {
                let v = one("write `auto_failback off`")?;
                failback_seen = true;
                into.auto_failback = match v.to_ascii_lowercase().as_str() {
                    "legacy" => {
                        warn(
                            no,
                            "auto_failback legacy imported as off: the group stays where it \
                             is when the other master returns"
                                .into(),
                        );
                        false
                    }
                    other => boolean(other).ok_or_else(|| {
                        err(
                            no,
                            format!("`{v}` is not on, off or legacy"),
                            "write `auto_failback off`",
                        )
                    })?,
                };
            }
            "nice_failback" => {
                let v = one("write `auto_failback off` instead")?;
                let nice = boolean(&v.to_ascii_lowercase()).ok_or_else(|| {
                    err(
                        no,
                        format!("`{v}` is not on or off"),
                        "write `auto_failback off` instead",
                    )
                })?;
                if !failback_seen {
                    into.auto_failback = !nice;
                }
                failback_seen = true;
                warn(
                    no,
                    format!(
                        "nice_failback {v} imported as auto_failback {}",
                        if nice { "off" } else { "on" }
                    ),
                );
            }
            "ping" => {
                if values.is_empty() {
                    return Err(err(
                        no,
                        "`ping` without an address".into(),
                        "write `ping 10.0.0.254`",
                    ));
                }
                for v in &values {
                    let ip: IpAddr = v.parse().map_err(|_| {
                        err(
                            no,
                            format!("`{v}` is not an IP address"),
                            "write the ping node's address (e.g. the router's), not a host name",
                        )
                    })?;
                    if !into.ping_nodes.contains(&ip) {
                        into.ping_nodes.push(ip);
                    }
                }
            }
            "ping_group" => {
                let [_, members @ ..] = values.as_slice() else {
                    return Err(err(
                        no,
                        "`ping_group` without a name".into(),
                        "write `ping_group NAME IP...`",
                    ));
                };
                for v in members {
                    let ip: IpAddr = v.parse().map_err(|_| {
                        err(
                            no,
                            format!("`{v}` is not an IP address"),
                            "write addresses, not host names",
                        )
                    })?;
                    if !into.ping_nodes.contains(&ip) {
                        into.ping_nodes.push(ip);
                    }
                }
                warn(
                    no,
                    "ping_group members became ping nodes: a master that reaches none of the ping \
                     nodes neither takes over nor keeps the group"
                        .into(),
                );
            }
            "realtime" => {
                let v = one("write `realtime on`")?;
                into.realtime = boolean(&v.to_ascii_lowercase()).ok_or_else(|| {
                    err(no, format!("`{v}` is not on or off"), "write `realtime on`")
                })?;
            }
            "stonith" | "stonith_host" => warn(
                no,
                format!(
                    "`{directive}` not imported: set fencing as ha.fence.command (run with sh -c, \
                     $CM_PEER names the peer, exit 0 means it is off), e.g. an ipmitool power off"
                ),
            ),
            "respawn" => {
                if args
                    .iter()
                    .any(|a| a.ends_with("/ipfail") || *a == "ipfail")
                {
                    warn(
                        no,
                        "ipfail dropped: the ping tiebreaker is built in (ha.ping_nodes)".into(),
                    );
                } else {
                    warn(
                        no,
                        format!(
                            "`respawn {}` dropped: clustermaker does not supervise other \
                             programs; run it as a systemd service",
                            args.join(" ")
                        ),
                    );
                }
            }
            "debugfile" | "logfile" | "logfacility" | "use_logd" | "conn_logd_time"
            | "syslogmsgfmt" | "debug" | "log_badpack" => warn(
                no,
                format!("`{directive}` ignored: clustermaker logs to stderr/the journal"),
            ),
            "crm"
            | "pacemaker"
            | "crm_daemon_dir"
            | "crmd_spawns_pengine"
            | "record_config_changes"
            | "record_pengine_inputs"
            | "enable_config_writes" => warn(
                no,
                format!("`{directive}` ignored: there is no CRM; the group comes from haresources"),
            ),
            "compression" | "compression_threshold" | "traditional_compression" | "msgfmt" => warn(
                no,
                format!("`{directive}` ignored: heartbeats are small fixed-size messages"),
            ),
            "watchdog" | "apiauth" | "use_apphbd" | "coredumps" | "coreroot" | "memreserve"
            | "hbgenmethod" | "uuidfrom" | "hopfudge" | "max_rexmit_delay" | "rtprio"
            | "normalpoll" | "env" | "cluster" | "quorum_server" | "autojoin" | "deadping"
            | "failfast" => warn(
                no,
                format!("`{directive}` ignored: clustermaker has no equivalent"),
            ),
            _ => warn(
                no,
                format!("unknown directive `{}` ignored", one_line(directive)),
            ),
        }
    }

    // The two masters.
    match nodes.as_slice() {
        [_, _] => {}
        [] => {
            return Err(err(
                0,
                "no `node` lines".into(),
                "add `node NAME` for each of the two masters (their `uname -n`)",
            ))
        }
        [(n, no)] => {
            return Err(err(
                *no,
                format!("only one node (`{n}`)"),
                "add a `node` line for the other master",
            ))
        }
        _ => unreachable!("a third node is refused where it appears"),
    }
    let this = into.node.to_ascii_lowercase();
    let names = format!("`{}` and `{}`", nodes[0].0, nodes[1].0);
    if this.is_empty() {
        return Err(err(
            0,
            format!("cannot tell which of {names} is this master"),
            "name it with --node NAME",
        ));
    }
    let (mine, other) = if nodes[0].0 == this {
        (0, 1)
    } else if nodes[1].0 == this {
        (1, 0)
    } else {
        return Err(err(
            nodes[0].1,
            format!(
                "this master `{}` is neither of the nodes {names}",
                one_line(&into.node)
            ),
            "run the import with --node NAME naming this master",
        ));
    };
    into.node = nodes[mine].0.clone();
    into.peer = nodes[other].0.clone();
    warnings.push(format!(
        "{HA_CF}: imported for `{}` with peer `{}`; on `{}` import again with --node {} \
         (or swap ha.node and ha.peer)",
        into.node, into.peer, into.peer, into.peer
    ));

    // Timing: a file that says nothing keeps clustermaker's fast defaults; one that sets any
    // value gets Heartbeat's defaults and rules for the others.
    if keepalive.is_none() && deadtime.is_none() && warntime.is_none() && initdead.is_none() {
        warnings.push(format!(
            "{HA_CF}: no keepalive/deadtime: clustermaker's defaults apply (keepalive {}, \
             deadtime {}; Heartbeat's were 1s and 30s)",
            humantime::format_duration(into.keepalive),
            humantime::format_duration(into.deadtime)
        ));
    } else {
        let k = keepalive.map_or(Duration::from_secs(1), |t| t.0);
        let d = deadtime.map_or(Duration::from_secs(30), |t| t.0);
        if k < Duration::from_millis(10) {
            return Err(err(
                keepalive.map_or(0, |t| t.1),
                format!("keepalive {} is below 10ms", humantime::format_duration(k)),
                "use at least 10ms",
            ));
        }
        if d <= k * 2 {
            return Err(err(
                deadtime.or(keepalive).map_or(0, |t| t.1),
                format!(
                    "deadtime {} is not more than twice keepalive {}",
                    humantime::format_duration(d),
                    humantime::format_duration(k)
                ),
                "raise deadtime (or lower keepalive): one lost heartbeat must not fail over",
            ));
        }
        let mut w = warntime.map_or(d / 2, |t| t.0);
        if w < k || w > d {
            let clamped = w.clamp(k, d);
            warnings.push(format!(
                "{HA_CF}:{}: warntime {} lies outside keepalive..deadtime; using {}",
                warntime.map_or(0, |t| t.1),
                humantime::format_duration(w),
                humantime::format_duration(clamped)
            ));
            w = clamped;
        }
        let i = match initdead {
            Some((i, no)) if i < d => {
                return Err(err(
                    no,
                    format!(
                        "initdead {} is less than deadtime {}",
                        humantime::format_duration(i),
                        humantime::format_duration(d)
                    ),
                    "make initdead at least deadtime (Heartbeat advises twice)",
                ))
            }
            Some((i, _)) => i,
            // Heartbeat's rule.
            None if d > Duration::from_secs(10) => d,
            None if d < Duration::from_secs(6) => Duration::from_secs(12),
            None => d * 2,
        };
        into.keepalive = k;
        into.deadtime = d;
        into.warntime = w;
        into.initdead = i;
        if d >= Duration::from_secs(5) {
            warnings.push(format!(
                "{HA_CF}:{}: deadtime {} kept: a failover waits that long; clustermaker detects \
                 a dead peer in well under a second (e.g. keepalive 100ms, deadtime 600ms)",
                deadtime.map_or(0, |t| t.1),
                humantime::format_duration(d)
            ));
        }
    }

    // Links, with the port and baud rate that apply to them.
    if links.is_empty() {
        return Err(err(
            0,
            "no heartbeat links".into(),
            "add `ucast IFACE PEER-IP` (or bcast/mcast) and `serial /dev/ttyS0`",
        ));
    }
    let port = udpport.unwrap_or(DEFAULT_UDP_PORT);
    let baud = baud.unwrap_or(19200);
    into.links = links
        .into_iter()
        .map(|l| match l {
            PendingLink::Udp { peer, interface } => LinkConfig::Udp {
                peer,
                port,
                bind: None,
                interface: Some(interface),
            },
            PendingLink::Bcast { interface } => LinkConfig::Bcast { interface, port },
            PendingLink::Mcast {
                group,
                interface,
                port,
            } => LinkConfig::Mcast {
                group,
                interface,
                port,
            },
            PendingLink::Serial { device } => LinkConfig::Serial {
                device: device.into(),
                baud,
            },
        })
        .collect();
    if ucasts > 1 {
        warnings.push(format!(
            "{HA_CF}: {ucasts} ucast links kept (ha.cf is shared, so some point at this master's \
             own addresses); at run time each master skips the links to its own addresses"
        ));
    }
    if !failback_seen {
        warnings.push(format!(
            "{HA_CF}: no auto_failback: off (the group stays where it is when the other master \
             returns)"
        ));
        into.auto_failback = false;
    }
    into.enabled = true;
    Ok(())
}

fn interface(name: &str, no: usize) -> Result<String, ImportError> {
    let ok = (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
    if ok {
        Ok(name.to_string())
    } else {
        Err(ImportError::new(
            HA_CF,
            no,
            format!("`{}` is not a network interface name", one_line(name)),
            "write the interface, e.g. eth0",
        ))
    }
}

/// Heartbeat's boolean words.
fn boolean(v: &str) -> Option<bool> {
    match v {
        "on" | "yes" | "y" | "true" | "1" => Some(true),
        "off" | "no" | "n" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// Heartbeat's times: a decimal number of seconds, or of milliseconds (`ms`, `msec`) or
/// microseconds (`us`, `usec`); `s`/`sec` accepted too. Rounded to the millisecond.
pub(crate) fn heartbeat_time(v: &str) -> Option<Duration> {
    let lower = v.to_ascii_lowercase();
    let split = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let micros_per_unit: u64 = match unit {
        "" | "s" | "sec" => 1_000_000,
        "ms" | "msec" => 1_000,
        "us" | "usec" => 1,
        _ => return None,
    };
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || int.len() > 12 || frac.len() > 9 {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac_micros = if frac.is_empty() {
        0
    } else {
        // frac/10^len units, in microseconds.
        let f: u64 = frac.parse().ok()?;
        let scale = 10u64.pow(frac.len() as u32);
        (f as u128 * micros_per_unit as u128 / scale as u128) as u64
    };
    let micros = int.checked_mul(micros_per_unit)?.checked_add(frac_micros)?;
    let ms = (micros + 500) / 1000;
    (ms <= MAX_DURATION_SECS * 1000).then(|| Duration::from_millis(ms))
}

/// Reads the resource group of `haresources` into `into.preferred` and `into.resources`.
pub fn parse_haresources(
    text: &str,
    into: &mut HaConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ImportError> {
    let lines = logical_lines(
        text,
        HARESOURCES,
        Syntax {
            comment: Comment::WordStart,
            continuation: true,
        },
    )?;
    let err = |no: usize, what: String, fix: &str| ImportError::new(HARESOURCES, no, what, fix);
    let Some(line) = lines.first() else {
        warnings.push(format!(
            "{HARESOURCES}: no resource group; add resources under ha.resources"
        ));
        return Ok(());
    };
    if let Some(second) = lines.get(1) {
        return Err(err(
            second.no,
            "a second resource group".into(),
            "clustermaker runs one group on the active master: merge the lines into one",
        ));
    }
    let no = line.no;
    let words: Vec<&str> = line.text.split_whitespace().collect();
    let preferred = words[0].to_ascii_lowercase();
    if !valid_node_name(&preferred) {
        return Err(err(
            no,
            format!("`{}` is not a node name", one_line(words[0])),
            "start the line with the preferred master's `uname -n`",
        ));
    }
    if !into.peer.is_empty()
        && preferred != into.peer
        && preferred != into.node.to_ascii_lowercase()
    {
        return Err(err(
            no,
            format!(
                "preferred node `{preferred}` is neither `{}` nor `{}` of ha.cf",
                into.node, into.peer
            ),
            "start the line with one of ha.cf's node names",
        ));
    }
    into.preferred = Some(preferred);

    let mut resources: Vec<ResourceConfig> = Vec::new();
    let mut i = 1;
    while i < words.len() {
        let word = words[i];
        i += 1;
        let (name, rest) = match word.split_once("::") {
            Some((n, r)) => (n, Some(r)),
            None => (word, None),
        };
        match name {
            "IPaddr" | "IPaddr2" | "IPv6addr" => {
                let arg = rest.unwrap_or("");
                resources.push(ipaddr(arg, no, warnings)?);
            }
            _ if rest.is_none() && looks_like_ip(word) => {
                resources.push(ipaddr(word, no, warnings)?);
            }
            "MailTo" => {
                let mut rest = rest.unwrap_or("").to_string();
                // A mangled address ("MailTo:: This e-mail address is ... it ::Subject"):
                // join the words up to the one that starts the subject.
                if !rest.contains("::") {
                    let end = words[i..]
                        .iter()
                        .position(|w| w.contains("::"))
                        .filter(|&k| words[i + k].starts_with("::"));
                    if let Some(k) = end {
                        let mut joined: Vec<&str> = Vec::new();
                        if !rest.is_empty() {
                            joined.push(&rest);
                        }
                        joined.extend_from_slice(&words[i..i + k]);
                        rest = format!("{}{}", joined.join(" "), words[i + k]);
                        i += k + 1;
                    }
                }
                let mut parts = rest.split("::");
                let addrs = parts.next().unwrap_or("").trim();
                let subject = parts.next().unwrap_or("").trim();
                if parts.next().is_some() {
                    warnings.push(format!(
                        "{HARESOURCES}:{no}: MailTo takes an address and a subject; the rest is ignored"
                    ));
                }
                let mut to = Vec::new();
                for a in addrs.split(',').map(str::trim).filter(|a| !a.is_empty()) {
                    if valid_email(a) {
                        to.push(a.to_string());
                    } else {
                        warnings.push(format!(
                            "{HARESOURCES}:{no}: MailTo address `{}` is not an e-mail address: \
                             dropped; set it in the MailTo resource's `to` (failover mail goes \
                             to ha.mail.to meanwhile)",
                            one_line(a)
                        ));
                    }
                }
                if to.is_empty() && addrs.is_empty() {
                    warnings.push(format!(
                        "{HARESOURCES}:{no}: MailTo without an address: failover mail goes to \
                         ha.mail.to; set it there or in the resource's `to`"
                    ));
                }
                resources.push(ResourceConfig::Mailto {
                    to,
                    subject: if subject.is_empty() {
                        "Cluster_Failover_Event".into()
                    } else {
                        subject.to_string()
                    },
                });
            }
            "mon" if rest.is_none() => warnings.push(format!(
                "{HARESOURCES}:{no}: `mon` dropped: clustermaker runs the mon.cf watches itself \
                 (import mon.cf as well)"
            )),
            _ => {
                if !valid_service_name(name) {
                    return Err(err(
                        no,
                        format!("`{}` is not a resource name", one_line(word)),
                        "write NAME or NAME::ARG::ARG (an init script or /etc/ha.d/resource.d script)",
                    ));
                }
                let mut unique = name.to_string();
                let mut n = 1;
                while resources
                    .iter()
                    .any(|r| matches!(r, ResourceConfig::Service { name, .. } if *name == unique))
                {
                    n += 1;
                    unique = format!("{name}-{n}");
                }
                if n > 1 {
                    warnings.push(format!(
                        "{HARESOURCES}:{no}: a second `{name}` resource is named `{unique}`"
                    ));
                }
                let resource = match rest {
                    None => ResourceConfig::Service {
                        name: unique,
                        manager: ServiceManager::Auto,
                        start: None,
                        stop: None,
                        status: None,
                        timeout: Duration::from_secs(60),
                    },
                    Some(rest) => {
                        let script = format!("{RESOURCE_DIR}/{name}");
                        let args: Vec<&str> = rest.split("::").collect();
                        let cmd = |action: &str| {
                            shell_join(
                                std::iter::once(script.as_str())
                                    .chain(args.iter().copied())
                                    .chain(std::iter::once(action)),
                            )
                        };
                        ResourceConfig::Service {
                            name: unique,
                            manager: ServiceManager::Command,
                            start: Some(cmd("start")),
                            stop: Some(cmd("stop")),
                            status: Some(cmd("status")),
                            timeout: Duration::from_secs(60),
                        }
                    }
                };
                resources.push(resource);
            }
        }
    }
    into.resources = resources;
    Ok(())
}

fn valid_service_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with(['-', '.'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
}

/// Heartbeat treats a resource that starts with an IPv4 address as `IPaddr`.
fn looks_like_ip(word: &str) -> bool {
    let first = word.split('/').next().unwrap_or("");
    first.parse::<Ipv4Addr>().is_ok()
}

/// `IP[/PREFIX-or-NETMASK[/IFACE[/BROADCAST]]]`
fn ipaddr(arg: &str, no: usize, warnings: &mut Vec<String>) -> Result<ResourceConfig, ImportError> {
    let err = |what: String| {
        ImportError::new(
            HARESOURCES,
            no,
            what,
            "write IPaddr::ADDRESS/PREFIX/IFACE, e.g. IPaddr::192.168.1.49/24/eth0",
        )
    };
    let mut parts = arg.split('/');
    let addr_text = parts.next().unwrap_or("");
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| err(format!("`{}` is not an IP address", one_line(addr_text))))?;
    let prefix = match parts.next() {
        None | Some("") => {
            let p = if addr.is_ipv4() { 32 } else { 128 };
            warnings.push(format!(
                "{HARESOURCES}:{no}: {addr} has no prefix: imported as /{p}; write the subnet's \
                 prefix (e.g. {addr}/24) if clients must reach it through the subnet route"
            ));
            p
        }
        Some(p) if p.contains('.') => {
            let mask: Ipv4Addr = p
                .parse()
                .map_err(|_| err(format!("`{}` is not a netmask", one_line(p))))?;
            let bits = u32::from(mask);
            if bits.leading_ones() + bits.trailing_zeros() != 32 {
                return Err(err(format!("netmask `{p}` is not contiguous")));
            }
            bits.leading_ones() as u8
        }
        Some(p) => p
            .parse::<u8>()
            .map_err(|_| err(format!("`{}` is not a prefix length", one_line(p))))?,
    };
    let address = format!("{addr}/{prefix}");
    if parse_cidr(&address).is_none() {
        return Err(err(format!(
            "`{address}` is not a usable address and prefix"
        )));
    }
    let interface = match parts.next() {
        None | Some("") => None,
        Some(iface) => {
            let base = match iface.split_once(':') {
                Some((base, _)) => {
                    warnings.push(format!(
                        "{HARESOURCES}:{no}: interface alias `{iface}` imported as `{base}`"
                    ));
                    base
                }
                None => iface,
            };
            Some(interface(base, no).map_err(|mut e| {
                e.file = HARESOURCES.into();
                e
            })?)
        }
    };
    if let Some(b) = parts.next() {
        warnings.push(format!(
            "{HARESOURCES}:{no}: broadcast `{}` ignored: derived from the prefix",
            one_line(b)
        ));
    }
    if parts.next().is_some() {
        warnings.push(format!(
            "{HARESOURCES}:{no}: IPaddr values after the broadcast address ignored"
        ));
    }
    Ok(ResourceConfig::Ipaddr { address, interface })
}

/// The heartbeat key from `authkeys`: SHA-256 of `clustermaker-authkeys:` and the secret of
/// the active (`auth N`) method, so both masters importing the same file share a key.
pub fn parse_authkeys(text: &str) -> Result<Vec<u8>, ImportError> {
    let lines = logical_lines(
        text,
        AUTHKEYS,
        Syntax {
            comment: Comment::LineStart,
            continuation: false,
        },
    )?;
    let err = |no: usize, what: String, fix: &str| ImportError::new(AUTHKEYS, no, what, fix);
    let mut active: Option<(u8, usize)> = None;
    let mut methods: [Option<(String, Option<String>, usize)>; 16] = Default::default();
    for Line { no, text, .. } in &lines {
        let no = *no;
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["auth", n, ..] => {
                let n = n.parse::<u8>().ok().filter(|n| *n < 16).ok_or_else(|| {
                    err(
                        no,
                        format!("`auth {}`: not a key number", one_line(n)),
                        "write `auth 1`",
                    )
                })?;
                active = Some((n, no));
            }
            [n, method, rest @ ..] if n.bytes().all(|b| b.is_ascii_digit()) => {
                let n = n.parse::<u8>().ok().filter(|n| *n < 16).ok_or_else(|| {
                    err(no, format!("key number {n} is out of range"), "use 0..15")
                })?;
                let method = method.to_ascii_lowercase();
                if !matches!(method.as_str(), "sha1" | "md5" | "crc") {
                    return Err(err(
                        no,
                        format!("unknown method `{}`", one_line(&method)),
                        "use `sha1 SECRET` (or md5)",
                    ));
                }
                methods[usize::from(n)] = Some((method, rest.first().map(|s| s.to_string()), no));
            }
            _ => {
                return Err(err(
                    no,
                    format!("`{}` is not an authkeys line", one_line(text.trim())),
                    "write `auth N` and `N sha1 SECRET`",
                ))
            }
        }
    }
    let Some((n, auth_no)) = active else {
        return Err(err(
            0,
            "no `auth N` line".into(),
            "add `auth 1` naming the key in use",
        ));
    };
    let Some((method, secret, no)) = &methods[usize::from(n)] else {
        return Err(err(
            auth_no,
            format!("`auth {n}` names no key"),
            &format!("add a line `{n} sha1 SECRET`"),
        ));
    };
    if method == "crc" {
        return Err(err(
            *no,
            "`crc` has no secret: anyone on the network could forge heartbeats".into(),
            &format!("use `{n} sha1 SECRET` with a long random secret on both masters"),
        ));
    }
    let Some(secret) = secret else {
        return Err(err(
            *no,
            format!("`{method}` without a secret"),
            &format!("write `{n} {method} SECRET`"),
        ));
    };
    let mut h = Sha256::new();
    h.update(KEY_CONTEXT);
    h.update(secret.as_bytes());
    Ok(h.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(heartbeat_time("2"), Some(Duration::from_secs(2)));
        assert_eq!(heartbeat_time("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(heartbeat_time("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(heartbeat_time("1.25s"), Some(Duration::from_millis(1250)));
        assert_eq!(heartbeat_time("1500us"), Some(Duration::from_millis(2)));
        assert_eq!(heartbeat_time("10MS"), Some(Duration::from_millis(10)));
        for bad in ["", "ms", ".", "1.2.3", "-1", "1m", "99999999999999", "1e3"] {
            assert_eq!(heartbeat_time(bad), None, "{bad}");
        }
    }
}
