//! The importers against real-world files: the seed how-to's haresources line and mon.cf
//! snippet as they are, a Heartbeat 3 ha.cf with every kind of link, authkeys with each
//! method; malformed inputs give a one-line error at the right line and never panic; the
//! rendered `[ha]` table reads back the same.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use runtime::config::{
    AlertConfig, CheckConfig, HaConfig, LinkConfig, MonitorScope, ResourceConfig, ServiceManager,
};
use runtime::import::{self, heartbeat, mon, render_toml, ImportError, Imported, Period};
use sha2::{Digest, Sha256};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixtures().join(name)).unwrap()
}

fn key_of(secret: &str) -> Vec<u8> {
    Sha256::digest(format!("clustermaker-authkeys:{secret}")).to_vec()
}

fn has_warning(warnings: &[String], needle: &str) -> bool {
    warnings.iter().any(|w| w.contains(needle))
}

fn service(name: &str) -> ResourceConfig {
    ResourceConfig::Service {
        name: name.into(),
        manager: ServiceManager::Auto,
        start: None,
        stop: None,
        status: None,
        timeout: Duration::from_secs(60),
    }
}

fn seed_import(node: &str) -> Imported {
    import::import_files(
        &fixtures().join("heartbeat3"),
        Some(&fixtures().join("mon.cf")),
        Some(node),
    )
    .unwrap()
}

#[test]
fn heartbeat3_directory_with_the_seed_haresources() {
    let imported =
        heartbeat::import_dir_as(&fixtures().join("heartbeat3"), Some("SQLMaster.local")).unwrap();
    let ha = &imported.ha;
    let w = &imported.warnings;
    assert!(ha.enabled);
    assert_eq!(ha.node, "sqlmaster.local");
    assert_eq!(ha.peer, "sqlbackup.local");
    assert_eq!(ha.preferred.as_deref(), Some("sqlmaster.local"));
    assert_eq!(ha.keepalive, Duration::from_secs(2));
    assert_eq!(ha.deadtime, Duration::from_secs(30));
    assert_eq!(ha.warntime, Duration::from_secs(10));
    assert_eq!(ha.initdead, Duration::from_secs(120));
    assert!(!ha.auto_failback);
    assert_eq!(ha.ping_nodes, ["192.168.1.1".parse::<IpAddr>().unwrap()]);
    assert_eq!(
        ha.links,
        [
            LinkConfig::Serial {
                device: "/dev/ttyS0".into(),
                baud: 19200
            },
            LinkConfig::Bcast {
                interface: "eth1".into(),
                port: 694
            },
            LinkConfig::Udp {
                peer: "192.168.1.47".parse().unwrap(),
                port: 694,
                bind: None,
                interface: Some("eth0".into())
            },
            LinkConfig::Udp {
                peer: "192.168.1.48".parse().unwrap(),
                port: 694,
                bind: None,
                interface: Some("eth0".into())
            },
        ]
    );
    let mut expected = vec![
        ResourceConfig::Ipaddr {
            address: "192.168.1.49/24".into(),
            interface: Some("eth0".into()),
        },
        ResourceConfig::Mailto {
            to: vec![],
            subject: "Cluster_Failover_Event".into(),
        },
    ];
    for s in [
        "syslog", "ipvsadm", "smb", "dhcpd", "tftpd", "watcher", "mysqld",
    ] {
        expected.push(service(s));
    }
    assert_eq!(ha.resources, expected);
    assert!(ha.monitors.is_empty());
    assert_eq!(
        imported.key.as_deref(),
        Some(&key_of("ChangeThisSecret4711")[..])
    );
    ha.validate().unwrap();

    for needle in [
        "`mon` dropped",
        "This e-mail address is being protected from spambots. You need JavaScript enabled to view it` is not an e-mail address",
        "ipfail dropped",
        "ha.fence.command",
        "`logfile` ignored",
        "`compression` ignored",
        "`apiauth` ignored",
        "2 ucast links kept",
        "import again with --node sqlbackup.local",
        "deadtime 30s kept",
        "ha.mail.to is empty",
    ] {
        assert!(has_warning(w, needle), "no warning with {needle:?} in {w:#?}");
    }
    // Warnings name their file and line.
    let mon_warning = w.iter().find(|w| w.contains("`mon` dropped")).unwrap();
    assert!(mon_warning.contains("haresources:5:"), "{mon_warning}");
}

#[test]
fn seed_mon_cf_snippet() {
    let mut ha = HaConfig::default();
    let mut w = Vec::new();
    mon::import(&fixture("mon.cf"), &mut ha, &mut w).unwrap();
    assert_eq!(ha.monitors.len(), 1);
    let m = &ha.monitors[0];
    assert_eq!(m.name, "mysql");
    assert_eq!(
        m.check,
        CheckConfig::Tcp {
            host: "localhost".into(),
            port: 3306
        }
    );
    assert_eq!(m.interval, Duration::from_secs(10));
    assert_eq!(m.randskew, Duration::from_secs(4));
    assert_eq!(m.timeout, Duration::from_secs(5));
    assert_eq!(m.period.as_deref(), Some("hr {12am-11pm}"));
    assert!(Period::parse(m.period.as_deref().unwrap())
        .unwrap()
        .is_always());
    assert_eq!(m.numalerts, 1);
    assert_eq!(m.alertafter, 1);
    assert_eq!(m.restart, None);
    assert_eq!(m.when, MonitorScope::Active);
    assert_eq!(
        m.alerts,
        [
            AlertConfig::Failover,
            AlertConfig::Mail {
                subject: "MYSQL monitor is requesting failover".into(),
                to: vec![]
            }
        ]
    );
    assert!(
        has_warning(&w, "mon.cf:9: mail.alert address `EMAILADDRESS`"),
        "{w:#?}"
    );
}

#[test]
fn the_whole_seed_setup_validates_from_either_master() {
    for (node, peer) in [
        ("sqlmaster.local", "sqlbackup.local"),
        ("sqlbackup.local", "sqlmaster.local"),
    ] {
        let imported = seed_import(node);
        assert_eq!(imported.ha.node, node);
        assert_eq!(imported.ha.peer, peer);
        assert_eq!(imported.ha.preferred.as_deref(), Some("sqlmaster.local"));
        assert_eq!(imported.ha.monitors.len(), 1);
        imported.ha.validate().unwrap();
        let note = |w: &&String| w.starts_with("ha.mail.to is empty");
        assert_eq!(imported.warnings.iter().filter(note).count(), 1);
        // Warnings from files on disk carry their paths.
        assert!(imported
            .warnings
            .iter()
            .any(|w| w.contains("fixtures/import/mon.cf:9:")));
    }
}

#[test]
fn render_toml_round_trip() {
    let imported = seed_import("sqlmaster.local");
    let text = render_toml(&imported, "/etc/ha.d and /cluster/mon/mon.cf");
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("# imported from /etc/ha.d and /cluster/mon/mon.cf")
    );
    for w in &imported.warnings {
        assert!(text.contains(&format!("# warning: {w}\n")), "{w}");
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        ha: HaConfig,
    }
    let doc: Doc = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(doc.ha, imported.ha);
    doc.ha.validate().unwrap();

    // A fuller import reads back too.
    let mut ha = imported.ha.clone();
    let mut w = Vec::new();
    mon::import(&fixture("mon-full.cf"), &mut ha, &mut w).unwrap();
    let again = Imported {
        ha,
        key: None,
        warnings: vec!["multi\nline".into()],
    };
    let text = render_toml(&again, "x\ny");
    assert!(text.starts_with("# imported from x y\n# warning: multi line\n"));
    let doc: Doc = toml::from_str(&text).unwrap();
    assert_eq!(doc.ha, again.ha);
}

#[test]
fn authkeys_methods() {
    let sha1 = heartbeat::parse_authkeys(&fixture("heartbeat3/authkeys")).unwrap();
    assert_eq!(sha1, key_of("ChangeThisSecret4711"));
    assert_eq!(sha1.len(), 32);
    let md5 = heartbeat::parse_authkeys(&fixture("authkeys-md5")).unwrap();
    assert_eq!(md5, key_of("Hello!"));
    let e = heartbeat::parse_authkeys(&fixture("authkeys-crc")).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.to_string().contains("`crc` has no secret"), "{e}");
    assert!(e.to_string().contains("1 sha1 SECRET"), "{e}");
    // The same file gives the same key on both masters; another secret another key.
    assert_eq!(
        heartbeat::parse_authkeys("auth 3\n3 sha1 Hello!\n").unwrap(),
        md5
    );
}

fn ha_for(node: &str) -> HaConfig {
    HaConfig {
        node: node.into(),
        ..HaConfig::default()
    }
}

#[test]
fn other_haresources_forms() {
    let mut ha = ha_for("alpha");
    let mut w = Vec::new();
    heartbeat::parse_ha_cf(
        "node alpha beta\nucast eth0 10.0.0.2\nkeepalive 200ms\ndeadtime 1\n",
        &mut ha,
        &mut w,
    )
    .unwrap();
    assert_eq!(ha.warntime, Duration::from_millis(500));
    assert_eq!(ha.initdead, Duration::from_secs(12));
    let text = "# group\nbeta 192.168.1.10 IPaddr::10.0.0.5 \\\n  IPaddr2::10.0.0.6/255.255.255.0/eth1:0/10.0.0.255 \\\n  IPv6addr::fd00::49/64/eth0 Filesystem::/dev/drbd0::/data::ext3 \\\n  MailTo::ops@example.com,bad,dba@example.org::DB_failover httpd httpd drbddisk::r0 # tail\n";
    heartbeat::parse_haresources(text, &mut ha, &mut w).unwrap();
    assert_eq!(ha.preferred.as_deref(), Some("beta"));
    let r = &ha.resources;
    assert_eq!(
        r[0],
        ResourceConfig::Ipaddr {
            address: "192.168.1.10/32".into(),
            interface: None
        }
    );
    assert_eq!(
        r[1],
        ResourceConfig::Ipaddr {
            address: "10.0.0.5/32".into(),
            interface: None
        }
    );
    assert_eq!(
        r[2],
        ResourceConfig::Ipaddr {
            address: "10.0.0.6/24".into(),
            interface: Some("eth1".into())
        }
    );
    assert_eq!(
        r[3],
        ResourceConfig::Ipaddr {
            address: "fd00::49/64".into(),
            interface: Some("eth0".into())
        }
    );
    assert_eq!(
        r[4],
        ResourceConfig::Service {
            name: "Filesystem".into(),
            manager: ServiceManager::Command,
            start: Some("/etc/ha.d/resource.d/Filesystem /dev/drbd0 /data ext3 start".into()),
            stop: Some("/etc/ha.d/resource.d/Filesystem /dev/drbd0 /data ext3 stop".into()),
            status: Some("/etc/ha.d/resource.d/Filesystem /dev/drbd0 /data ext3 status".into()),
            timeout: Duration::from_secs(60),
        }
    );
    assert_eq!(
        r[5],
        ResourceConfig::Mailto {
            to: vec!["ops@example.com".into(), "dba@example.org".into()],
            subject: "DB_failover".into()
        }
    );
    assert_eq!(r[6], service("httpd"));
    assert_eq!(r[7], service("httpd-2"));
    assert!(
        matches!(&r[8], ResourceConfig::Service { name, manager: ServiceManager::Command, start: Some(s), .. }
        if name == "drbddisk" && s == "/etc/ha.d/resource.d/drbddisk r0 start")
    );
    assert_eq!(r.len(), 9);
    for needle in [
        "haresources:2: 192.168.1.10 has no prefix",
        "alias `eth1:0`",
        "broadcast `10.0.0.255` ignored",
        "`bad` is not an e-mail address",
        "second `httpd`",
    ] {
        assert!(has_warning(&w, needle), "{needle}: {w:#?}");
    }
    ha.validate().unwrap();
}

#[test]
fn ha_cf_without_timing_keeps_fast_defaults() {
    let mut ha = ha_for("b");
    let mut w = Vec::new();
    heartbeat::parse_ha_cf(
        "node a\nnode B\nserial /dev/ttyUSB0\nbaud 115200\nmcast eth2 239.1.2.3 6940 1 0\nudpport 700\nbcast eth3 eth4\nauto_failback legacy\n",
        &mut ha,
        &mut w,
    )
    .unwrap();
    let d = HaConfig::default();
    assert_eq!((ha.node.as_str(), ha.peer.as_str()), ("b", "a"));
    assert_eq!(ha.keepalive, d.keepalive);
    assert_eq!(ha.deadtime, d.deadtime);
    assert!(!ha.auto_failback);
    assert_eq!(
        ha.links,
        [
            LinkConfig::Serial {
                device: "/dev/ttyUSB0".into(),
                baud: 115200
            },
            LinkConfig::Mcast {
                group: "239.1.2.3".parse().unwrap(),
                interface: "eth2".into(),
                port: 6940
            },
            LinkConfig::Bcast {
                interface: "eth3".into(),
                port: 700
            },
            LinkConfig::Bcast {
                interface: "eth4".into(),
                port: 700
            },
        ]
    );
    assert!(has_warning(&w, "clustermaker's defaults apply"));
    assert!(has_warning(
        &w,
        "ha.cf:8: auto_failback legacy imported as off"
    ));
    ha.validate().unwrap();

    let mut ha = ha_for("a");
    heartbeat::parse_ha_cf(
        "node a b\nserial /dev/ttyS1\nauto_failback on\nnice_failback on\nrealtime off\n",
        &mut ha,
        &mut w,
    )
    .unwrap();
    assert!(ha.auto_failback);
    assert!(!ha.realtime);
}

#[test]
fn fuller_mon_cf() {
    let mut ha = HaConfig::default();
    let mut w = Vec::new();
    mon::import(&fixture("mon-full.cf"), &mut ha, &mut w).unwrap();
    let names: Vec<&str> = ha.monitors.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "http@www1.1",
            "http@www2.1",
            "http@www1.NIGHT",
            "http@www2.NIGHT",
            "ping",
            "mysql",
            "local_mysql/ping"
        ]
    );
    let m = &ha.monitors[0];
    assert_eq!(
        m.check,
        CheckConfig::Http {
            url: "http://www1:8080/health".into(),
            expect: 200
        }
    );
    assert_eq!(m.interval, Duration::from_secs(60));
    assert_eq!(m.period.as_deref(), Some("wd {Mon-Fri} hr {7am-10pm}"));
    assert_eq!(m.alertafter, 2);
    assert_eq!(m.numalerts, 3);
    assert_eq!(
        m.alerts,
        [AlertConfig::Mail {
            subject: "web down".into(),
            to: vec!["ops@example.com".into()]
        }]
    );
    let night = &ha.monitors[2];
    assert_eq!(night.period.as_deref(), Some("wd {Sat-Sun}"));
    assert_eq!(
        night.alerts,
        [AlertConfig::Exec {
            command: "/cluster/mon/alert.d/page.alert oncall@example.com".into()
        }]
    );
    assert_eq!(
        ha.monitors[4].check,
        CheckConfig::Exec {
            command: "/cluster/mon/mon.d/fping.monitor -a www1 www2".into()
        }
    );
    assert_eq!(ha.monitors[5].timeout, Duration::from_secs(3));
    assert_eq!(
        ha.monitors[6].check,
        CheckConfig::Exec {
            command: "/cluster/mon/mon.d/ping.monitor".into()
        }
    );
    for needle in [
        "`maxprocs` ignored",
        "`alertevery` dropped",
        "`upalert` dropped",
        "runs as `/cluster/mon/mon.d/fping.monitor -a www1 www2`",
        "has 2 periods",
    ] {
        assert!(has_warning(&w, needle), "{needle}: {w:#?}");
    }
    // Monitors need a valid [ha] around them to validate.
    let mut ha2 = seed_import("sqlmaster.local").ha;
    ha2.monitors = ha.monitors;
    ha2.validate().unwrap();
}

#[derive(Clone, Copy, Debug)]
enum Parser {
    HaCf,
    Haresources,
    Authkeys,
    Mon,
}

fn run(parser: Parser, text: &str) -> Result<(), ImportError> {
    let mut ha = ha_for("a");
    let mut w = Vec::new();
    match parser {
        Parser::HaCf => heartbeat::parse_ha_cf(text, &mut ha, &mut w),
        Parser::Haresources => {
            ha.peer = "b".into();
            heartbeat::parse_haresources(text, &mut ha, &mut w)
        }
        Parser::Authkeys => heartbeat::parse_authkeys(text).map(|_| ()),
        Parser::Mon => mon::import(text, &mut ha, &mut w),
    }
}

#[test]
fn malformed_inputs_name_their_line() {
    use Parser::*;
    const OK_CF: &str = "node a b\nserial /dev/ttyS0\n";
    let cases: Vec<(Parser, String, usize, &str)> = vec![
        (
            HaCf,
            "node a\nnode b\nnode c\nserial /dev/ttyS0\n".into(),
            3,
            "third node",
        ),
        (
            HaCf,
            "node a\nserial /dev/ttyS0\n".into(),
            1,
            "only one node",
        ),
        (HaCf, "serial /dev/ttyS0\n".into(), 0, "no `node` lines"),
        (
            HaCf,
            "node x y\nserial /dev/ttyS0\n".into(),
            1,
            "neither of the nodes",
        ),
        (HaCf, "node a b\n".into(), 0, "no heartbeat links"),
        (
            HaCf,
            format!("{OK_CF}keepalive 2\ndeadtime 3\n"),
            4,
            "not more than twice",
        ),
        (HaCf, format!("{OK_CF}keepalive 5ms\n"), 3, "below 10ms"),
        (
            HaCf,
            format!("{OK_CF}deadtime 30\ninitdead 10\n"),
            4,
            "initdead",
        ),
        (
            HaCf,
            format!("{OK_CF}keepalive two\n"),
            3,
            "`two` is not a time",
        ),
        (HaCf, format!("{OK_CF}keepalive\n"), 3, "without a value"),
        (HaCf, format!("{OK_CF}deadtime 1 2\n"), 3, "takes one value"),
        (HaCf, format!("{OK_CF}udpport 70000\n"), 3, "not a UDP port"),
        (HaCf, format!("{OK_CF}baud 12345\n"), 3, "baud"),
        (
            HaCf,
            format!("{OK_CF}ucast eth0 peerhost\n"),
            3,
            "not an IP address",
        ),
        (
            HaCf,
            format!("{OK_CF}ucast eth0\n"),
            3,
            "without an address",
        ),
        (
            HaCf,
            format!("{OK_CF}mcast eth0 10.0.0.1 694 1 0\n"),
            3,
            "not a multicast group",
        ),
        (
            HaCf,
            format!("{OK_CF}mcast eth0 225.0.0.1 694\n"),
            3,
            "5 values",
        ),
        (
            HaCf,
            format!("{OK_CF}mcast eth0 225.0.0.1 694 0 7\n"),
            3,
            "TTL",
        ),
        (HaCf, format!("{OK_CF}bcast\n"), 3, "without an interface"),
        (HaCf, format!("{OK_CF}bcast eth0;rm\n"), 3, "interface"),
        (
            HaCf,
            format!("{OK_CF}serial ttyS0\n"),
            3,
            "not a serial device",
        ),
        (
            HaCf,
            format!("{OK_CF}auto_failback maybe\n"),
            3,
            "on, off or legacy",
        ),
        (
            HaCf,
            format!("{OK_CF}ping router\n"),
            3,
            "not an IP address",
        ),
        (
            HaCf,
            "node a b!\nserial /dev/ttyS0\n".into(),
            1,
            "not a node name",
        ),
        (
            Haresources,
            "a IPaddr::1.2.3.4/24\nb httpd\n".into(),
            2,
            "second resource group",
        ),
        (
            Haresources,
            "\n\nc IPaddr::1.2.3.4/24\n".into(),
            3,
            "neither",
        ),
        (
            Haresources,
            "a IPaddr::1.2.3.400/24\n".into(),
            1,
            "not an IP address",
        ),
        (
            Haresources,
            "a IPaddr::1.2.3.4/33\n".into(),
            1,
            "not a usable address",
        ),
        (
            Haresources,
            "a IPaddr::1.2.3.4/255.0.255.0\n".into(),
            1,
            "not contiguous",
        ),
        (Haresources, "a IPaddr::1.2.3.4/x\n".into(), 1, "prefix"),
        (
            Haresources,
            "a \\\n httpd ../evil\n".into(),
            1,
            "not a resource name",
        ),
        (
            Haresources,
            "IPaddr::1.2.3.4 httpd\n".into(),
            1,
            "not a node name",
        ),
        (Authkeys, "1 sha1 x\n".into(), 0, "no `auth N`"),
        (Authkeys, "auth 2\n1 sha1 x\n".into(), 1, "names no key"),
        (Authkeys, "auth 1\n1 sha1\n".into(), 2, "without a secret"),
        (Authkeys, "auth 1\n1 sha256 x\n".into(), 2, "unknown method"),
        (Authkeys, "auth 1\n16 sha1 x\n".into(), 2, "out of range"),
        (
            Authkeys,
            "auth 1\nsha1 x\n".into(),
            2,
            "not an authkeys line",
        ),
        (Authkeys, "auth x\n".into(), 1, "not a key number"),
        (Mon, "watch nogroup\n".into(), 1, "not defined"),
        (Mon, "service x\n".into(), 1, "outside a watch"),
        (Mon, "interval 10s\n".into(), 1, "outside a service"),
        (Mon, "hostgroup g\n\nwatch g\n".into(), 1, "no hosts"),
        (Mon, "hostgroup g a\n  b c;d\n".into(), 2, "not a host name"),
        (Mon, "hostgroup g h;rm\n".into(), 1, "not a host name"),
        (
            Mon,
            "hostgroup g h\nwatch g\nservice s\ninterval 10s\n".into(),
            3,
            "no `monitor`",
        ),
        (
            Mon,
            "hostgroup g h\nwatch g\nservice s\ninterval 10x\n".into(),
            4,
            "not a time",
        ),
        (
            Mon,
            "hostgroup g h\nwatch g\nservice s\ninterval 0s\n".into(),
            4,
            "interval 0",
        ),
        (
            Mon,
            "hostgroup g h\nwatch g\nservice s\ninterval 5s\nrandskew 5s\nmonitor x\n".into(),
            5,
            "randskew",
        ),
        (
            Mon,
            "hostgroup g h\nwatch g\nservice s\nmonitor x\nperiod mo {jan}\n".into(),
            5,
            "scale `mo`",
        ),
        (
            Mon,
            "hostgroup g h\nwatch g\nservice s\nmonitor x\nperiod hr {9am-5xm}\n".into(),
            5,
            "5xm",
        ),
        (
            Mon,
            "hostgroup g h\nwatch g\nservice s\nmonitor x 'open\n".into(),
            4,
            "unterminated",
        ),
        (
            Mon,
            "hostgroup g h\nwatch g\nservice s\nmonitor x\nnumalerts many\n".into(),
            5,
            "not a count",
        ),
        (
            Mon,
            "hostgroup g h\nwatch g\nservice s\nmonitor x\nalert\n".into(),
            5,
            "without a name",
        ),
    ];
    for (parser, text, line, needle) in cases {
        let e = run(parser, &text).expect_err(&format!("{parser:?} accepted {text:?}"));
        let shown = e.to_string();
        assert_eq!(e.line, line, "{parser:?} {text:?}: {shown}");
        assert!(shown.contains(needle), "{parser:?} {text:?}: {shown}");
        assert!(!shown.contains('\n'), "{shown}");
        assert!(shown.contains("; "), "no fix in {shown}");
        if line > 0 {
            assert!(shown.contains(&format!(":{line}: ")), "{shown}");
        }
    }
}

#[test]
fn size_limits() {
    for parser in [
        Parser::HaCf,
        Parser::Haresources,
        Parser::Authkeys,
        Parser::Mon,
    ] {
        let big = "# padding padding padding padding padding padding padding\n".repeat(20_000);
        let e = run(parser, &big).unwrap_err();
        assert_eq!(e.line, 0, "{e}");
        assert!(e.to_string().contains("larger than 1024 KiB"), "{e}");
        let long = format!("# ok\n{}\n", "x".repeat(5000));
        let e = run(parser, &long).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.to_string().contains("longer than 4096"), "{e}");
    }
}

#[test]
fn this_master_must_be_a_node() {
    let e =
        heartbeat::import_dir_as(&fixtures().join("heartbeat3"), Some("otherhost")).unwrap_err();
    assert!(e.file.ends_with("heartbeat3/ha.cf"), "{e}");
    assert!(e.to_string().contains("--node"), "{e}");
    let mut ha = HaConfig::default();
    let e = heartbeat::parse_ha_cf("node a b\nserial /dev/ttyS0\n", &mut ha, &mut Vec::new())
        .unwrap_err();
    assert!(e.to_string().contains("cannot tell which"), "{e}");
}

#[test]
fn truncated_and_mangled_fixtures_never_panic() {
    let files = [
        (Parser::HaCf, fixture("heartbeat3/ha.cf")),
        (Parser::Haresources, fixture("heartbeat3/haresources")),
        (Parser::Authkeys, fixture("heartbeat3/authkeys")),
        (Parser::Mon, fixture("mon.cf")),
        (Parser::Mon, fixture("mon-full.cf")),
    ];
    for (parser, text) in files {
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            let _ = run(parser, &String::from_utf8_lossy(&bytes[..cut]));
            let mut mangled = bytes.to_vec();
            mangled[cut] = b"\\\"'{}:#/\n\t\0"[cut % 11];
            let _ = run(parser, &String::from_utf8_lossy(&mangled));
        }
    }
}
