//! The contenders and their settings: keepalived (VRRP), Linux-HA Heartbeat 3 (haresources
//! mode) and `clustermaker serve` with an `[ha]` table — each configured for the same pair
//! (A preferred, B backup), the same VIP and the same interface, and started inside the
//! masters' namespaces.
//!
//! - keepalived runs in the foreground (`--dont-fork`) with its pid files in the scratch
//!   directory and without syslog; plain MASTER/BACKUP with priorities 150/100 (preemption
//!   on, keepalived's default), multicast adverts.
//! - Heartbeat has no option for its configuration directory and names nodes by `uname -n`:
//!   each node runs under `unshare -m -u` with its own copy of /etc/ha.d and
//!   /var/lib/heartbeat bind-mounted, a private tmpfs on /run and its own host name. Nothing
//!   leaks into the host: the mounts die with the mount namespace.
//! - Ours: `clustermaker --config FILE serve` with `[boot] enabled = false` and `[ha]`.
//!
//! Every daemon gets an unlimited RLIMIT_MEMLOCK (Heartbeat and ours lock themselves into
//! memory by default; Heartbeat logs an error and carries on unlocked otherwise).

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use super::lab::{Lab, Node, CLIENT, IFACE, PREFIX, VIP};
use crate::bench::ours::Ours;
use crate::bench::sys::{self, run_cmd, Server};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Keepalived,
    Heartbeat,
    Ours,
}

impl Kind {
    pub fn who(self) -> &'static str {
        match self {
            Kind::Keepalived => "keepalived",
            Kind::Heartbeat => "Heartbeat 3",
            Kind::Ours => "clustermaker",
        }
    }
}

/// Defaults, tuned for speed, or ours at the same timers as one anchor setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Default,
    Tuned,
    Equal,
}

/// A contender at one setting.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Setting {
    pub kind: Kind,
    pub tier: Tier,
    /// `advert_int 1`, `keepalive 2 s / deadtime 30 s` …
    pub label: String,
    /// Short id for files and JSON: `keepalived-1`, `heartbeat-200ms` …
    pub id: String,
    /// keepalived: advert_int; Heartbeat and ours: keepalive, warntime, deadtime, initdead
    /// (as written in their configuration files).
    pub params: Vec<(String, String)>,
    /// Roughly how long the backup needs to notice (for timeouts only).
    pub detection: Duration,
    /// Between two adverts / heartbeats: t0 is put at a random point of one such interval,
    /// so the failover does not always hit the same phase of the sender's timer.
    pub interval: Duration,
    /// For `Tier::Equal`: the id of the anchor setting whose timers this one copies.
    pub equal_to: Option<String>,
}

impl Setting {
    fn param(&self, key: &str) -> &str {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }

    /// How long to wait for the first answer from B before calling a run failed.
    pub fn failover_timeout(&self) -> Duration {
        self.detection * 3 + Duration::from_secs(15)
    }

    /// How long the pair may take from start until A holds the VIP.
    pub fn start_timeout(&self) -> Duration {
        match self.kind {
            // Heartbeat acquires its resources ~10 s after both nodes are up.
            Kind::Heartbeat => Duration::from_secs(60),
            _ => self.detection * 2 + Duration::from_secs(20),
        }
    }
}

fn params(kv: &[(&str, &str)]) -> Vec<(String, String)> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn keepalived(advert: &str, tier: Tier) -> Setting {
    let secs: f64 = advert.parse().unwrap_or(1.0);
    Setting {
        kind: Kind::Keepalived,
        tier,
        label: format!("advert_int {advert}"),
        id: format!("keepalived-{advert}"),
        params: params(&[("advert_int", advert)]),
        // Master down after 3 × advert + skew ((256 − 100) / 256 × advert).
        detection: Duration::from_secs_f64(secs * 3.61),
        interval: Duration::from_secs_f64(secs),
        equal_to: None,
    }
}

pub fn heartbeat(
    keepalive: &str,
    warntime: &str,
    deadtime: &str,
    initdead: &str,
    every: Duration,
    dead: Duration,
    tier: Tier,
) -> Setting {
    Setting {
        kind: Kind::Heartbeat,
        tier,
        label: format!("keepalive {keepalive} / deadtime {deadtime}"),
        id: format!("heartbeat-{keepalive}"),
        params: params(&[
            ("keepalive", keepalive),
            ("warntime", warntime),
            ("deadtime", deadtime),
            ("initdead", initdead),
        ]),
        detection: dead,
        interval: every,
        equal_to: None,
    }
}

pub fn ours(
    keepalive: &str,
    warntime: &str,
    deadtime: &str,
    every: Duration,
    dead: Duration,
    tier: Tier,
) -> Setting {
    Setting {
        kind: Kind::Ours,
        tier,
        label: format!("keepalive {keepalive} / warntime {warntime} / deadtime {deadtime}"),
        id: format!("ours-{keepalive}-{deadtime}"),
        params: params(&[
            ("keepalive", keepalive),
            ("warntime", warntime),
            ("deadtime", deadtime),
            // initdead must be at least deadtime (the configuration refuses less).
            (
                "initdead",
                if dead > Duration::from_secs(2) {
                    deadtime
                } else {
                    "2s"
                },
            ),
        ]),
        detection: dead,
        interval: every,
        equal_to: None,
    }
}

/// Ours with the timers of an anchor setting: the keepalive is its advert or keepalive
/// interval, the deadtime what it waits before declaring the master dead (keepalived: 3
/// adverts; Heartbeat: its deadtime).
fn ours_equal_to(
    anchor: &str,
    keepalive: &str,
    warntime: &str,
    deadtime: &str,
    every: Duration,
    dead: Duration,
) -> Setting {
    let mut s = ours(keepalive, warntime, deadtime, every, dead, Tier::Equal);
    s.equal_to = Some(anchor.to_string());
    s
}

/// The settings measured, in order.
pub fn all() -> Vec<Setting> {
    vec![
        keepalived("1", Tier::Default),
        heartbeat(
            "2",
            "10",
            "30",
            "60",
            Duration::from_secs(2),
            Duration::from_secs(30),
            Tier::Default,
        ),
        ours(
            "100ms",
            "300ms",
            "600ms",
            Duration::from_millis(100),
            Duration::from_millis(600),
            Tier::Default,
        ),
        keepalived("0.1", Tier::Tuned),
        heartbeat(
            "200ms",
            "500ms",
            "1",
            "10",
            Duration::from_millis(200),
            Duration::from_secs(1),
            Tier::Tuned,
        ),
        ours(
            "30ms",
            "90ms",
            "150ms",
            Duration::from_millis(30),
            Duration::from_millis(150),
            Tier::Tuned,
        ),
        ours_equal_to(
            "keepalived-1",
            "1s",
            "2s",
            "3s",
            Duration::from_secs(1),
            Duration::from_secs(3),
        ),
        ours_equal_to(
            "keepalived-0.1",
            "100ms",
            "200ms",
            "300ms",
            Duration::from_millis(100),
            Duration::from_millis(300),
        ),
        ours_equal_to(
            "heartbeat-200ms",
            "200ms",
            "500ms",
            "1s",
            Duration::from_millis(200),
            Duration::from_secs(1),
        ),
    ]
}

/// Our binary, checked to accept the configuration, and the shared key.
pub struct OursSetup<'a> {
    pub ours: &'a Ours,
    pub key_file: PathBuf,
    /// It knows `[boot] enabled` (see [`ours_available`]).
    pub boot_off: bool,
}

/// Where the programs are.
pub struct Tools {
    pub keepalived: Option<PathBuf>,
    pub heartbeat: Option<PathBuf>,
    pub unshare: PathBuf,
    pub stress_ng: Option<PathBuf>,
}

impl Tools {
    pub fn find() -> Result<Tools> {
        sys::require_program("nft", "nftables")?;
        let heartbeat = [
            "/usr/libexec/heartbeat/heartbeat",
            "/usr/lib/heartbeat/heartbeat",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
        Ok(Tools {
            keepalived: sys::find_program("keepalived"),
            heartbeat,
            unshare: sys::require_program("unshare", "util-linux")?,
            stress_ng: sys::find_program("stress-ng"),
        })
    }

    /// Why `kind` cannot run here, if it cannot.
    pub fn missing(&self, kind: Kind) -> Option<String> {
        match kind {
            Kind::Keepalived if self.keepalived.is_none() => {
                Some("keepalived is not installed (fix: apt-get install -y keepalived)".into())
            }
            Kind::Heartbeat if self.heartbeat.is_none() => {
                Some("Heartbeat is not installed (fix: apt-get install -y heartbeat)".into())
            }
            _ => None,
        }
    }
}

/// A daemon command: unlimited locked memory (set between fork and exec).
fn unlimited_memlock(cmd: &mut Command) {
    unsafe {
        cmd.pre_exec(|| {
            let r = libc::rlimit {
                rlim_cur: libc::RLIM_INFINITY,
                rlim_max: libc::RLIM_INFINITY,
            };
            libc::setrlimit(libc::RLIMIT_MEMLOCK, &r);
            Ok(())
        });
    }
}

/// Starts `setting`'s daemon for `node` in its namespace, with its files under `dir` (made
/// fresh by the caller).
pub fn start(
    setting: &Setting,
    tools: &Tools,
    ours: Option<&OursSetup>,
    lab: &Lab,
    node: Node,
    dir: &Path,
) -> Result<Server> {
    let ns = lab.ns(node);
    let log = dir.join("daemon.log");
    match setting.kind {
        Kind::Keepalived => {
            let conf = dir.join("keepalived.conf");
            sys::write_readable(&conf, keepalived_conf(setting, node).as_bytes())?;
            let bin = tools.keepalived.as_ref().context("keepalived missing")?;
            let mut cmd = ns.command(bin);
            cmd.args([
                "--dont-fork",
                "--log-console",
                "--no-syslog",
                "--vrrp",
                "-f",
            ])
            .arg(&conf)
            .arg("-p")
            .arg(dir.join("keepalived.pid"))
            .arg("-r")
            .arg(dir.join("vrrp.pid"))
            .arg("-c")
            .arg(dir.join("checkers.pid"))
            .arg("-b")
            .arg(dir.join("bfd.pid"));
            unlimited_memlock(&mut cmd);
            Server::spawn(&format!("keepalived {}", node.name()), cmd, &log)
        }
        Kind::Heartbeat => {
            let script = heartbeat_files(setting, tools, node, dir)?;
            let mut cmd = ns.command(&tools.unshare);
            cmd.args(["--mount", "--uts", "--propagation", "private", "sh"])
                .arg(script);
            unlimited_memlock(&mut cmd);
            Server::spawn(&format!("heartbeat {}", node.name()), cmd, &log)
        }
        Kind::Ours => {
            let ours = ours.context("no clustermaker binary")?;
            let conf = dir.join("clustermaker.toml");
            std::fs::create_dir_all(dir.join("state"))?;
            std::fs::write(
                &conf,
                ours_conf(setting, node, dir, &ours.key_file, ours.boot_off),
            )?;
            let mut cmd = ns.command(ours.ours.bin()?);
            cmd.arg("--config")
                .arg(&conf)
                .arg("serve")
                .env("CLUSTERMAKER_LOG", "info");
            unlimited_memlock(&mut cmd);
            Server::spawn(&format!("clustermaker {}", node.name()), cmd, &log)
        }
    }
}

pub fn keepalived_conf(setting: &Setting, node: Node) -> String {
    let advert = setting.param("advert_int");
    let sub_second = advert.parse::<f64>().map(|a| a < 1.0).unwrap_or(false);
    let (state, prio) = match node {
        Node::A => ("MASTER", 150),
        Node::B => ("BACKUP", 100),
    };
    let mut t = String::new();
    let _ = writeln!(t, "# written by cargo xtask bench failover");
    let _ = writeln!(t, "global_defs {{\n  router_id {}", node.name());
    if sub_second {
        // Sub-second adverts exist only in VRRPv3.
        let _ = writeln!(t, "  vrrp_version 3");
    }
    let _ = writeln!(t, "}}");
    let _ = writeln!(
        t,
        "vrrp_instance VI_bench {{\n  state {state}\n  interface {IFACE}\n  virtual_router_id 77\n  priority {prio}\n  advert_int {advert}\n  virtual_ipaddress {{\n    {VIP}/{PREFIX} dev {IFACE}\n  }}\n}}"
    );
    t
}

/// Writes Heartbeat's files for `node` under `dir` and returns the start script.
fn heartbeat_files(setting: &Setting, tools: &Tools, node: Node, dir: &Path) -> Result<PathBuf> {
    let etc = dir.join("ha.d");
    let lib = dir.join("lib");
    for d in [&etc, &lib] {
        std::fs::create_dir_all(d)?;
    }
    // The packaged resource scripts (IPaddr, harc, shellfuncs …) with our three files.
    run_cmd(Command::new("cp").args(["-a", "/etc/ha.d/."]).arg(&etc))?;
    run_cmd(
        Command::new("cp")
            .args(["-a", "/var/lib/heartbeat/."])
            .arg(&lib),
    )?;
    let mut cf = String::new();
    let _ = writeln!(cf, "# written by cargo xtask bench failover");
    let _ = writeln!(cf, "logfile {}", dir.join("ha.log").display());
    let _ = writeln!(cf, "use_logd no");
    for k in ["keepalive", "warntime", "deadtime", "initdead"] {
        let _ = writeln!(cf, "{k} {}", setting.param(k));
    }
    let _ = writeln!(cf, "ucast {IFACE} {}", node.peer().address());
    let _ = writeln!(cf, "auto_failback off");
    let _ = writeln!(cf, "node {}\nnode {}", Node::A.name(), Node::B.name());
    let _ = writeln!(cf, "crm no");
    std::fs::write(etc.join("ha.cf"), cf)?;
    let authkeys = etc.join("authkeys");
    std::fs::write(&authkeys, "auth 1\n1 sha1 cm-bench-failover-secret\n")?;
    std::fs::set_permissions(&authkeys, std::fs::Permissions::from_mode(0o600))?;
    std::fs::write(
        etc.join("haresources"),
        format!("{} IPaddr::{VIP}/{PREFIX}/{IFACE}\n", Node::A.name()),
    )?;
    let hb = tools.heartbeat.as_ref().context("heartbeat missing")?;
    let script = dir.join("start.sh");
    std::fs::write(
        &script,
        format!(
            "# Runs under unshare --mount --uts (private propagation): nothing below reaches the host.\n\
             set -e\n\
             mount --bind {etc} /etc/ha.d\n\
             mount --bind {lib} /var/lib/heartbeat\n\
             mount -t tmpfs -o mode=0755 cmb-run /run\n\
             mkdir -p /run/heartbeat/ccm /run/heartbeat/dopd /run/resource-agents /run/lock\n\
             hostname {node}\n\
             exec {hb} -f\n",
            etc = etc.display(),
            lib = lib.display(),
            node = node.name(),
            hb = hb.display(),
        ),
    )?;
    Ok(script)
}

/// Our configuration for `node`. `boot_off`: write `[boot] enabled = false` (HA only); a build
/// that does not know that key yet runs its boot services too, harmlessly, inside the lab.
pub fn ours_conf(
    setting: &Setting,
    node: Node,
    dir: &Path,
    key_file: &Path,
    boot_off: bool,
) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "# written by cargo xtask bench failover");
    let _ = writeln!(
        t,
        "state_dir = {:?}",
        dir.join("state").display().to_string()
    );
    let _ = writeln!(
        t,
        "\n[network]\ninterface = \"{IFACE}\"\naddress = \"{}\"\nprefix_len = {PREFIX}",
        node.address()
    );
    if boot_off {
        let _ = writeln!(t, "\n[boot]\nenabled = false");
    }
    let _ = writeln!(
        t,
        "\n[ha]\nenabled = true\nnode = \"{}\"\npeer = \"{}\"\npreferred = \"{}\"\nkey_file = {:?}",
        node.name(),
        node.peer().name(),
        Node::A.name(),
        key_file.display().to_string()
    );
    for k in ["keepalive", "warntime", "deadtime", "initdead"] {
        let _ = writeln!(t, "{k} = \"{}\"", setting.param(k));
    }
    let _ = writeln!(t, "ping_nodes = [\"{CLIENT}\"]");
    let _ = writeln!(
        t,
        "\n[[ha.links]]\nkind = \"udp\"\npeer = \"{}\"",
        node.peer().address()
    );
    let _ = writeln!(
        t,
        "\n[[ha.resources]]\nkind = \"ipaddr\"\naddress = \"{VIP}/{PREFIX}\"\ninterface = \"{IFACE}\""
    );
    t
}

/// Writes a 32-byte random key, mode 0600.
pub fn write_key(path: &Path) -> Result<()> {
    let mut key = [0u8; 32];
    let got = unsafe { libc::getrandom(key.as_mut_ptr().cast(), key.len(), 0) };
    if got != key.len() as isize {
        anyhow::bail!("getrandom failed");
    }
    std::fs::write(path, key).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Whether this clustermaker build accepts our `[ha]` configuration: `Ok(boot_off)` when it
/// does (`boot_off` false: it does not know `[boot] enabled` yet, so that line is left out),
/// else why not.
pub fn ours_available(ours: &Ours, dir: &Path, key_file: &Path) -> Result<bool, String> {
    ours.bin().map_err(|e| format!("{e:#}"))?;
    let setting = all()
        .into_iter()
        .find(|s| s.kind == Kind::Ours)
        .expect("ours is a contender");
    let conf = dir.join("clustermaker-check.toml");
    let mut why = String::new();
    for boot_off in [true, false] {
        std::fs::write(&conf, ours_conf(&setting, Node::A, dir, key_file, boot_off))
            .map_err(|e| format!("cannot write {}: {e}", conf.display()))?;
        match ours.check_config(&conf) {
            Ok(None) => return Ok(boot_off),
            Ok(Some(w)) => {
                let line = w.lines().next().unwrap_or("").trim();
                // `clustermaker: error: /tmp/…/clustermaker-check.toml: key …`: the key part.
                why = line
                    .split_once(".toml: ")
                    .map(|(_, rest)| rest)
                    .unwrap_or(line)
                    .to_string();
                if !why.contains("boot.enabled") {
                    break;
                }
            }
            Err(e) => return Err(format!("{e:#}")),
        }
    }
    Err(format!(
        "this build of clustermaker does not know the configuration yet: {why}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_v3_only_for_sub_second_adverts() {
        let one = keepalived_conf(&keepalived("1", Tier::Default), Node::A);
        assert!(!one.contains("vrrp_version"));
        assert!(one.contains("state MASTER") && one.contains("priority 150"));
        let fast = keepalived_conf(&keepalived("0.1", Tier::Tuned), Node::B);
        assert!(fast.contains("vrrp_version 3") && fast.contains("advert_int 0.1"));
        assert!(fast.contains("state BACKUP") && fast.contains("10.77.0.100/24 dev eth0"));
    }

    #[test]
    fn ours_config_names_the_pair_and_the_timers() {
        let s = ours(
            "30ms",
            "90ms",
            "150ms",
            Duration::from_millis(30),
            Duration::from_millis(150),
            Tier::Tuned,
        );
        let t = ours_conf(&s, Node::B, Path::new("/x"), Path::new("/k"), true);
        for want in [
            "node = \"b\"",
            "peer = \"a\"",
            "preferred = \"a\"",
            "keepalive = \"30ms\"",
            "deadtime = \"150ms\"",
            "peer = \"10.77.0.1\"",
            "ping_nodes = [\"10.77.0.3\"]",
            "enabled = false",
        ] {
            assert!(t.contains(want), "{want} missing in\n{t}");
        }
        assert!(
            !ours_conf(&s, Node::B, Path::new("/x"), Path::new("/k"), false).contains("[boot]")
        );
    }

    #[test]
    fn equal_timer_settings_name_an_anchor_and_ids_are_unique() {
        let all = all();
        for s in all.iter().filter(|s| s.tier == Tier::Equal) {
            let anchor = s.equal_to.as_deref().expect("equal_to");
            assert!(
                all.iter().any(|a| a.id == anchor && a.kind != Kind::Ours),
                "{anchor}"
            );
        }
        let mut ids: Vec<&String> = all.iter().map(|s| &s.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
    }
}
