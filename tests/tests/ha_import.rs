//! The seed's Heartbeat + mon setup, imported with `clustermaker import` and run as it is:
//! its haresources line (with the mail address a web page mangled), its mon.cf snippet, a
//! Heartbeat 3 ha.cf with ucast and serial links, and authkeys. Each master is a network
//! namespace plus a mount and UTS namespace, so it has its own host name, /etc/init.d (the
//! services of the haresources line as SysV scripts), /var/lib/clustermaker and /dev/ttyS0 (a
//! socat pty), as on two real machines. When mysqld stops answering on port 3306, mon's
//! `cause_hb_failover.alert` moves the group to the backup.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cm_tests::ha::Switch;
use cm_tests::{clustermaker_bin, require_program, require_root, wait_for, ChildGuard, Netns};

const HA_CF: &str = "\
# Heartbeat 3 configuration of the two masters
logfacility local0
keepalive 100ms
warntime 300ms
deadtime 1
initdead 3
udpport 694
ucast eth0 192.168.1.1
ucast eth0 192.168.1.2
serial /dev/ttyS0
baud 19200
auto_failback off
ping 192.168.1.3
node sqlmaster.local
node sqlbackup.local
";

/// The seed's haresources line, verbatim.
const HARESOURCES: &str = "sqlmaster.local IPaddr::192.168.1.49/24/eth0 MailTo:: This e-mail address is being protected from spambots. You need JavaScript enabled to view it ::Cluster_Failover_Event mon syslog ipvsadm smb dhcpd tftpd watcher mysqld\n";

/// The seed's mon.cf lines, verbatim.
const MON_CF: &str = "hostgroup local_mysql localhost
watch local_mysql
service mysql
interval 10s
randskew 4s
monitor tcp.monitor -p 3306
period hr {12am-11pm}
alert cause_hb_failover.alert
alert mail.alert -S \"MYSQL monitor is requesting failover\" EMAILADDRESS
numalerts 1
";

/// A SysV script for the stand-in services: logs its calls; mysqld listens on 3306 and
/// answers with the host name.
const INIT_SCRIPT: &str = r#"#!/bin/sh
NAME=$(basename "$0")
STATE=/var/lib/clustermaker
echo "$NAME $1" >> $STATE/init-calls.log
[ "$NAME" = mysqld ] || exit 0
PIDF=$STATE/mysqld.pid
case "$1" in
  start) setsid socat TCP-LISTEN:3306,fork,reuseaddr SYSTEM:hostname </dev/null >/dev/null 2>&1 &
         echo $! > $PIDF ;;
  stop) [ -f $PIDF ] && kill $(cat $PIDF) 2>/dev/null; rm -f $PIDF; exit 0 ;;
  status) [ -f $PIDF ] && kill -0 $(cat $PIDF) 2>/dev/null ;;
esac
"#;

struct Master {
    ns: Netns,
    name: &'static str,
    state: std::path::PathBuf,
    _process: Option<ChildGuard>,
}

fn holds_vip(ns: &Netns) -> bool {
    ns.ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(" 192.168.1.49/"))
        .unwrap_or(false)
}

fn write_exec(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn seed_heartbeat_and_mon_configuration_imports_and_fails_over() {
    let test = "imported seed configuration";
    if !(require_root(test) && require_program(test, "socat") && require_program(test, "unshare")) {
        return;
    }
    assert!(
        Path::new("/dev/ttyS0").exists(),
        "{test}: needs /dev/ttyS0 as a mount point for the per-master serial line"
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ha_d = d.join("ha.d");
    std::fs::create_dir(&ha_d).unwrap();
    std::fs::write(ha_d.join("ha.cf"), HA_CF).unwrap();
    std::fs::write(ha_d.join("haresources"), HARESOURCES).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(ha_d.join("authkeys"), "auth 1\n1 sha1 render-farm-secret\n").unwrap();
        std::fs::set_permissions(
            ha_d.join("authkeys"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    }
    std::fs::write(d.join("mon.cf"), MON_CF).unwrap();
    let init_d = d.join("init.d");
    std::fs::create_dir(&init_d).unwrap();
    for svc in [
        "syslog", "ipvsadm", "smb", "dhcpd", "tftpd", "watcher", "mysqld",
    ] {
        write_exec(&init_d.join(svc), INIT_SCRIPT);
    }

    // Import on each master, as an administrator would.
    for (node, short) in [("sqlmaster.local", "a"), ("sqlbackup.local", "b")] {
        let out = Command::new(clustermaker_bin())
            .args(["import", "heartbeat"])
            .arg(&ha_d)
            .args(["--node", node, "--mon"])
            .arg(d.join("mon.cf"))
            .arg("--out")
            .arg(d.join(format!("{short}.toml")))
            .arg("--key-out")
            .arg(d.join(format!("{short}.key")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(warnings.contains("MailTo address"), "{warnings}");
    }

    // The lab: a switch, two masters, client C (also the ping node).
    let switch = Switch::new("isw").unwrap();
    let attach = |ns: &Netns, cidr: &str| switch.attach(ns, cidr).unwrap();
    let c = Netns::new("ic").unwrap();
    attach(&c, "192.168.1.3/24");
    let tty = |n: &str| d.join(format!("tty-{n}"));
    let _cable = ChildGuard(
        Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", tty("a").display()))
            .arg(format!("pty,raw,echo=0,link={}", tty("b").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for("the serial cable", Duration::from_secs(5), || {
        (tty("a").exists() && tty("b").exists()).then_some(())
    })
    .unwrap();
    std::fs::create_dir_all("/var/lib/clustermaker").unwrap();

    let mut masters = Vec::new();
    for (name, short, cidr) in [
        ("sqlmaster.local", "a", "192.168.1.1/24"),
        ("sqlbackup.local", "b", "192.168.1.2/24"),
    ] {
        let ns = Netns::new(&format!("i{short}")).unwrap();
        attach(&ns, cidr);
        let state = d.join(format!("{short}-state"));
        std::fs::create_dir(&state).unwrap();
        let pty = std::fs::canonicalize(tty(short)).unwrap();
        let script = format!(
            "set -e; hostname {name}; mount --bind {init} /etc/init.d; \
             mount --bind {state} /var/lib/clustermaker; mount --bind {pty} /dev/ttyS0; \
             exec {bin} --config {config} serve",
            init = init_d.display(),
            state = state.display(),
            pty = pty.display(),
            bin = clustermaker_bin().display(),
            config = d.join(format!("{short}.toml")).display(),
        );
        let log = std::fs::File::create(d.join(format!("{short}.log"))).unwrap();
        let child = ns
            .command("unshare")
            .args([
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "sh",
                "-c",
                &script,
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        masters.push(Master {
            ns,
            name,
            state,
            _process: Some(ChildGuard(child)),
        });
        std::thread::sleep(Duration::from_millis(300));
    }
    let logs = || {
        ["a", "b"]
            .iter()
            .map(|s| {
                format!(
                    "--- {s}.log ---\n{}",
                    std::fs::read_to_string(d.join(format!("{s}.log"))).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mysql_via_vip = || {
        let out = c
            .command("socat")
            .args(["-T1", "-", "TCP:192.168.1.49:3306,connect-timeout=1"])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!text.is_empty()).then_some(text)
    };
    let (a, b) = (&masters[0], &masters[1]);

    // The preferred master of the haresources line starts the group.
    wait_for(
        "sqlmaster.local to hold 192.168.1.49",
        Duration::from_secs(20),
        || (holds_vip(&a.ns) && !holds_vip(&b.ns)).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    wait_for(
        "mysqld of sqlmaster.local via the VIP",
        Duration::from_secs(10),
        || (mysql_via_vip().as_deref() == Some(a.name)).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    let calls = std::fs::read_to_string(a.state.join("init-calls.log")).unwrap();
    let starts: Vec<&str> = calls
        .lines()
        .filter(|l| l.ends_with(" start"))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        starts,
        ["syslog", "ipvsadm", "smb", "dhcpd", "tftpd", "watcher", "mysqld"],
        "haresources order: {calls}"
    );

    // mysqld dies on the primary: mon's tcp.monitor (interval 10s, randskew 4s) fails and
    // cause_hb_failover.alert hands the group over.
    let pid = std::fs::read_to_string(a.state.join("mysqld.pid")).unwrap();
    cm_tests::run("kill", &[pid.trim()]).unwrap();
    wait_for(
        "sqlbackup.local to hold the VIP",
        Duration::from_secs(40),
        || (holds_vip(&b.ns) && !holds_vip(&a.ns)).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    wait_for(
        "mysqld of sqlbackup.local via the VIP",
        Duration::from_secs(10),
        || (mysql_via_vip().as_deref() == Some(b.name)).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    // The primary stopped its group in reverse order.
    let calls = std::fs::read_to_string(a.state.join("init-calls.log")).unwrap();
    let stops: Vec<&str> = calls
        .lines()
        .filter(|l| l.ends_with(" stop"))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert!(
        stops.ends_with(&["mysqld", "watcher", "tftpd", "dhcpd", "smb", "ipvsadm", "syslog"]),
        "{calls}"
    );
    for m in &mut masters {
        m._process = None;
    }
}
