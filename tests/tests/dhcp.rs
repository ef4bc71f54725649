//! End-to-end tests of `netboot::dhcp` with real clients (busybox udhcpc, ISC dhclient, Kea
//! perfdhcp, dnsmasq as the "other" server for ProxyDHCP) in network namespaces made here.
//!
//! The server runs as a child process: this test binary re-executed with `CM_DHCP_CHILD` set
//! (see [`dhcp_child_server`]), inside the server namespace, so it can be `kill -9`ed. It dumps
//! its lease table (the query API) to a JSON file every 100 ms and appends observer events to a
//! JSON-lines file.

use std::collections::HashMap;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cm_tests::{require_program, require_root, veth, wait_for, ChildGuard, Netns};
use netboot::dhcp::{journal, wire, DhcpConfig, DhcpServer};
use netboot::{
    BootObserver, BootStage, ClientRef, DiscoveredClient, MacAddr, NodeDirectory, Reservation,
};

// ---- the child server --------------------------------------------------------------------------

struct FileDirectory(HashMap<MacAddr, Reservation>);

impl NodeDirectory for FileDirectory {
    fn reservation(&self, mac: &MacAddr) -> Option<Reservation> {
        self.0.get(mac).cloned()
    }
    fn reserved_by(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.0
            .iter()
            .find(|(_, r)| r.ip == Some(ip))
            .map(|(m, _)| *m)
    }
}

struct FileObserver(Mutex<std::fs::File>);

impl FileObserver {
    fn write(&self, v: serde_json::Value) {
        if let Ok(mut f) = self.0.lock() {
            let _ = writeln!(f, "{v}");
        }
    }
}

impl BootObserver for FileObserver {
    fn stage(&self, client: ClientRef, stage: BootStage) {
        self.write(serde_json::json!({
            "stage": stage.as_str(),
            "mac": client.mac.map(|m| m.to_string()),
            "ip": client.ip.map(|i| i.to_string()),
        }));
    }
    fn discovered(&self, c: DiscoveredClient) {
        self.write(serde_json::json!({ "discovered": c }));
    }
}

/// Not a test of its own: the server process of the other tests (does nothing unless
/// `CM_DHCP_CHILD` names a work directory holding `config.json` and `reservations.json`).
#[test]
fn dhcp_child_server() {
    let Ok(work) = std::env::var("CM_DHCP_CHILD") else {
        return;
    };
    let work = PathBuf::from(work);
    let cfg: DhcpConfig =
        serde_json::from_slice(&std::fs::read(work.join("config.json")).unwrap()).unwrap();
    let mut reservations = HashMap::new();
    if let Ok(bytes) = std::fs::read(work.join("reservations.json")) {
        let v: Vec<serde_json::Value> = serde_json::from_slice(&bytes).unwrap();
        for r in v {
            let mac: MacAddr = r["mac"].as_str().unwrap().parse().unwrap();
            reservations.insert(
                mac,
                Reservation {
                    name: r["name"].as_str().unwrap_or_default().to_string(),
                    ip: r["ip"].as_str().map(|s| s.parse().unwrap()),
                    image: None,
                    efi_loader: None,
                },
            );
        }
    }
    let events = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(work.join("events.jsonl"))
        .unwrap();
    let server = DhcpServer::new(
        cfg,
        &work.join("state"),
        Arc::new(FileDirectory(reservations)),
        Arc::new(FileObserver(Mutex::new(events))),
    )
    .unwrap();
    let status = server.status();
    let status_path = work.join("leases.json");
    std::thread::spawn(move || loop {
        let tmp = status_path.with_extension("tmp");
        let _ = std::fs::write(&tmp, serde_json::to_vec(&status.leases()).unwrap());
        let _ = std::fs::rename(&tmp, &status_path);
        std::thread::sleep(Duration::from_millis(100));
    });
    server.run_blocking().unwrap();
}

// ---- helpers -----------------------------------------------------------------------------------

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(cm_tests::unique_name("cmdhcp"));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A server process in `ns` with `config` (JSON) and reservations; killed on drop.
fn start_server(ns: &Netns, work: &Path, config: &serde_json::Value) -> ChildGuard {
    std::fs::write(work.join("config.json"), config.to_string()).unwrap();
    spawn_server(ns, work)
}

fn spawn_server(ns: &Netns, work: &Path) -> ChildGuard {
    let exe = std::env::current_exe().unwrap();
    let child = ns
        .command(exe.to_str().unwrap())
        .args([
            "--exact",
            "dhcp_child_server",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("CM_DHCP_CHILD", work)
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("server.log")).unwrap())
        .spawn()
        .unwrap();
    let guard = ChildGuard(child);
    wait_for("the DHCP server to listen", Duration::from_secs(20), || {
        let out = ns.run("ss", &["-H", "-uln", "sport = :67"]).ok()?;
        (!out.stdout.is_empty()).then_some(())
    })
    .unwrap();
    guard
}

fn leases(work: &Path) -> Vec<serde_json::Value> {
    std::fs::read(work.join("leases.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn lease_of(work: &Path, mac: &str) -> Option<serde_json::Value> {
    leases(work)
        .into_iter()
        .find(|l| l["mac"] == mac && l["state"] == "bound")
}

fn events(work: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(work.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Runs `f` on a thread inside network namespace `ns`.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on this thread only; the fd is valid for the call.
        let r = unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}");
        f()
    })
    .join()
    .unwrap()
}

/// A raw DHCP request.
#[allow(clippy::too_many_arguments)]
fn packet(
    t: u8,
    mac: [u8; 6],
    xid: u32,
    flags: u16,
    ciaddr: Ipv4Addr,
    giaddr: Ipv4Addr,
    opts: &[(u8, &[u8])],
) -> Vec<u8> {
    let mut p = vec![0u8; 236];
    p[0] = 1;
    p[1] = 1;
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10..12].copy_from_slice(&flags.to_be_bytes());
    p[12..16].copy_from_slice(&ciaddr.octets());
    p[24..28].copy_from_slice(&giaddr.octets());
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&wire::MAGIC);
    p.extend_from_slice(&[53, 1, t]);
    for (c, v) in opts {
        p.push(*c);
        p.push(v.len() as u8);
        p.extend_from_slice(v);
    }
    p.push(255);
    p
}

fn yiaddr(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(p[16], p[17], p[18], p[19])
}

fn msg_type(p: &[u8]) -> Option<u8> {
    wire::find_option(p, 53).and_then(|v| v.first().copied())
}

/// Receives datagrams until `want` accepts one (by xid), or times out.
fn recv_matching(
    sock: &UdpSocket,
    xid: u32,
    timeout: Duration,
    mut want: impl FnMut(&[u8], SocketAddrV4) -> bool,
) -> Option<(Vec<u8>, SocketAddrV4)> {
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    while std::time::Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        if let Ok((n, std::net::SocketAddr::V4(from))) = sock.recv_from(&mut buf) {
            let p = &buf[..n];
            if n >= 240 && p[0] == 2 && p[4..8] == xid.to_be_bytes() && want(p, from) {
                return Some((p.to_vec(), from));
            }
        }
    }
    None
}

struct Pair {
    srv: Netns,
    cli: Netns,
    srv_if: String,
    cli_if: String,
    work: PathBuf,
}

/// Server and client namespaces joined by a veth; the server side has 10.77.0.1/24.
fn pair(client_mac: &str) -> Pair {
    let srv = Netns::new("cmds").unwrap();
    let cli = Netns::new("cmdc").unwrap();
    let (srv_if, cli_if) = veth(&srv, &cli).unwrap();
    srv.addr(&srv_if, "10.77.0.1/24").unwrap();
    cli.ip(&["link", "set", "dev", &cli_if, "address", client_mac])
        .unwrap();
    cli.ip(&["link", "set", &cli_if, "up"]).unwrap();
    Pair {
        srv,
        cli,
        srv_if,
        cli_if,
        work: tempdir(),
    }
}

fn server_config(iface: &str, lease_secs: u32) -> serde_json::Value {
    serde_json::json!({
        "interface": iface,
        "server_ip": "10.77.0.1",
        "lease_secs": lease_secs,
        "subnets": [{
            "cidr": "10.77.0.0/24",
            "pools": [{"start": "10.77.0.100", "end": "10.77.0.150"}],
            "router": "10.77.0.254",
            "dns": ["10.77.0.53"],
            "domain": "cluster.test",
            "ntp": ["10.77.0.123"],
            "mtu": 1400
        }]
    })
}

/// SO_BINDTODEVICE: lets a socket without any address broadcast out of `dev`.
fn bind_to_device(sock: &UdpSocket, dev: &str) {
    // SAFETY: valid fd; the option value is a byte string of the given length.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            dev.as_ptr().cast(),
            dev.len() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_BINDTODEVICE {dev}");
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    Command::new("chmod").arg("+x").arg(path).status().unwrap();
}

fn can_run(test: &str, programs: &[&str]) -> bool {
    require_root(test) && programs.iter().all(|p| require_program(test, p))
}

// ---- tests -------------------------------------------------------------------------------------

#[test]
fn udhcpc_gets_a_reserved_lease_renews_and_releases() {
    if !can_run("udhcpc_lease", &["udhcpc", "busybox", "ss"]) {
        return;
    }
    let mac = "52:54:00:77:00:05";
    let p = pair(mac);
    std::fs::write(
        p.work.join("reservations.json"),
        serde_json::json!([{"mac": mac, "name": "node05", "ip": "10.77.0.5"}]).to_string(),
    )
    .unwrap();
    let _server = start_server(&p.srv, &p.work, &server_config(&p.srv_if, 120));
    let out = p.work.join("udhcpc.out");
    let script = p.work.join("udhcpc.sh");
    write_script(
        &script,
        &format!(
            "echo \"$1 ip=$ip subnet=$subnet router=$router dns=$dns domain=$domain hostname=$hostname mtu=$mtu lease=$lease serverid=$serverid ntpsrv=$ntpsrv\" >> {out}\n\
             case \"$1\" in bound|renew) busybox ifconfig \"$interface\" \"$ip\" netmask \"$subnet\" ;; esac",
            out = out.display()
        ),
    );
    let client = p
        .cli
        .spawn(
            "udhcpc",
            &[
                "-f",
                "-i",
                &p.cli_if,
                "-s",
                script.to_str().unwrap(),
                "-t",
                "5",
                "-T",
                "1",
                "-n",
                "-R",
                "-O",
                "mtu",
                "-O",
                "hostname",
                "-O",
                "ntpsrv",
            ],
        )
        .unwrap();
    let bound = wait_for("udhcpc bound", Duration::from_secs(20), || {
        let s = std::fs::read_to_string(&out).ok()?;
        s.lines()
            .find(|l| l.starts_with("bound"))
            .map(str::to_string)
    })
    .unwrap();
    for want in [
        "ip=10.77.0.5 ",
        "subnet=255.255.255.0 ",
        "router=10.77.0.254 ",
        "dns=10.77.0.53 ",
        "domain=cluster.test ",
        "hostname=node05 ",
        "mtu=1400 ",
        "lease=120 ",
        "serverid=10.77.0.1 ",
        "ntpsrv=10.77.0.123",
    ] {
        assert!(bound.contains(want), "{want} missing in `{bound}`");
    }
    let first = wait_for(
        "the lease in the server's table",
        Duration::from_secs(5),
        || lease_of(&p.work, mac),
    )
    .unwrap();
    assert_eq!(first["ip"], "10.77.0.5");
    assert_eq!(first["hostname"], "node05");
    // Renew (SIGUSR1): a unicast REQUEST from 10.77.0.5; the expiry moves forward.
    std::thread::sleep(Duration::from_millis(1100));
    unsafe { libc::kill(client.id() as i32, libc::SIGUSR1) };
    wait_for("udhcpc renew", Duration::from_secs(10), || {
        let s = std::fs::read_to_string(&out).ok()?;
        s.lines()
            .any(|l| l.starts_with("renew") && l.contains("ip=10.77.0.5 "))
            .then_some(())
    })
    .unwrap();
    wait_for("the renewed expiry", Duration::from_secs(5), || {
        let l = lease_of(&p.work, mac)?;
        (l["expires"].as_u64()? > first["expires"].as_u64()?).then_some(())
    })
    .unwrap();
    let ev = events(&p.work);
    assert!(ev
        .iter()
        .any(|e| e["stage"] == "offered" && e["ip"] == "10.77.0.5"));
    assert!(ev.iter().any(|e| e["stage"] == "bound" && e["mac"] == mac));
    // Release on exit (-R): the lease disappears from the table.
    unsafe { libc::kill(client.id() as i32, libc::SIGTERM) };
    wait_for("the release", Duration::from_secs(10), || {
        lease_of(&p.work, mac).is_none().then_some(())
    })
    .unwrap();
    drop(client);
    let _ = std::fs::remove_dir_all(&p.work);
}

#[test]
fn dhclient_gets_a_pool_lease_and_releases() {
    if !can_run("dhclient_lease", &["dhclient", "ss"]) {
        return;
    }
    let mac = "52:54:00:77:00:66";
    let p = pair(mac);
    let _server = start_server(&p.srv, &p.work, &server_config(&p.srv_if, 300));
    let out = p.work.join("dhclient.out");
    let script = p.work.join("dhclient.sh");
    write_script(
        &script,
        &format!(
            "echo \"$reason ip=$new_ip_address mask=$new_subnet_mask routers=$new_routers dns=$new_domain_name_servers domain=$new_domain_name mtu=$new_interface_mtu lease=$new_dhcp_lease_time ntp=$new_ntp_servers\" >> {out}\n\
             case \"$reason\" in BOUND|RENEW|REBOOT) ip addr add \"$new_ip_address/$new_subnet_mask\" dev \"$interface\" ;; esac",
            out = out.display()
        ),
    );
    let conf = p.work.join("dhclient.conf");
    std::fs::write(
        &conf,
        "request subnet-mask, routers, domain-name-servers, domain-name, host-name, interface-mtu, ntp-servers;\n",
    )
    .unwrap();
    let lf = p.work.join("dhclient.leases");
    let pf = p.work.join("dhclient.pid");
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        for (k, v) in [("-lf", &lf), ("-pf", &pf), ("-sf", &script), ("-cf", &conf)] {
            a.push(k.into());
            a.push(v.display().to_string());
        }
        a.push(p.cli_if.clone());
        a
    };
    let a = args(&["-v", "-1"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = p
        .cli
        .command("dhclient")
        .args(&a)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
        .wait_with_output()
        .unwrap();
    assert!(
        r.status.success(),
        "dhclient: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let s = std::fs::read_to_string(&out).unwrap();
    let bound = s.lines().find(|l| l.starts_with("BOUND")).expect("BOUND");
    for want in [
        "mask=255.255.255.0 ",
        "routers=10.77.0.254 ",
        "dns=10.77.0.53 ",
        "domain=cluster.test ",
        "mtu=1400 ",
        "lease=300 ",
        "ntp=10.77.0.123",
    ] {
        assert!(bound.contains(want), "{want} missing in `{bound}`");
    }
    let ip: Ipv4Addr = bound
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ip="))
        .unwrap()
        .parse()
        .unwrap();
    assert!((Ipv4Addr::new(10, 77, 0, 100)..=Ipv4Addr::new(10, 77, 0, 150)).contains(&ip));
    let l = wait_for(
        "the lease in the server's table",
        Duration::from_secs(5),
        || lease_of(&p.work, mac),
    )
    .unwrap();
    assert_eq!(l["ip"], ip.to_string());
    // An unknown MAC that is not a boot client is not "discovered".
    assert!(!events(&p.work)
        .iter()
        .any(|e| e.get("discovered").is_some()));
    // INIT-REBOOT: stop dhclient without releasing (-x), drop the address, start it again:
    // it asks for its remembered address (REQUEST with option 50, no server id) and gets it.
    let a = args(&["-x"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    p.cli.run("dhclient", &a).unwrap();
    p.cli.ip(&["addr", "flush", "dev", &p.cli_if]).unwrap();
    let a = args(&["-v", "-1"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    p.cli.run("dhclient", &a).unwrap();
    let s = std::fs::read_to_string(&out).unwrap();
    let reboot = s.lines().find(|l| l.starts_with("REBOOT")).expect("REBOOT");
    assert!(reboot.contains(&format!("ip={ip} ")), "{reboot}");
    // Release.
    let a = args(&["-v", "-r"]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    p.cli.run("dhclient", &a).unwrap();
    wait_for("the release", Duration::from_secs(10), || {
        lease_of(&p.work, mac).is_none().then_some(())
    })
    .unwrap();
    let _ = std::fs::remove_dir_all(&p.work);
}

#[test]
fn relayed_requests_are_answered_to_the_relay() {
    if !can_run("dhcp_relay", &["ss"]) {
        return;
    }
    // srv 10.77.0.1 --- relay 10.77.0.2 (+ 10.78.0.1, the relayed network's gateway).
    let p = pair("52:54:00:77:00:02");
    p.cli.addr(&p.cli_if, "10.77.0.2/24").unwrap();
    p.cli.addr(&p.cli_if, "10.78.0.1/24").unwrap();
    p.srv
        .ip(&["route", "add", "10.78.0.0/24", "via", "10.77.0.2"])
        .unwrap();
    let mut cfg = server_config(&p.srv_if, 600);
    cfg["subnets"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "cidr": "10.78.0.0/24",
            "pools": [{"start": "10.78.0.10", "end": "10.78.0.20"}],
            "router": "10.78.0.1"
        }));
    let _server = start_server(&p.srv, &p.work, &cfg);
    let giaddr = Ipv4Addr::new(10, 78, 0, 1);
    let client = [0x52, 0x54, 0, 0x78, 0, 9];
    let agent: Vec<u8> = vec![1, 5, b'p', b'o', b'r', b't', b'7', 2, 3, 1, 2, 3];
    let (offer, ack) = in_netns(&p.cli.name.clone(), move || {
        let sock = UdpSocket::bind("0.0.0.0:67").unwrap();
        let server = "10.77.0.1:67";
        let d = packet(
            1,
            client,
            7,
            0,
            Ipv4Addr::UNSPECIFIED,
            giaddr,
            &[(82, &agent)],
        );
        sock.send_to(&d, server).unwrap();
        let (offer, from) = recv_matching(&sock, 7, Duration::from_secs(5), |p, _| {
            msg_type(p) == Some(2)
        })
        .expect("an OFFER at the relay");
        assert_eq!(from.ip(), &Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(
            wire::find_option(&offer, 82),
            Some(&agent[..]),
            "option 82 echoed"
        );
        let yi = yiaddr(&offer).octets();
        let r = packet(
            3,
            client,
            8,
            0,
            Ipv4Addr::UNSPECIFIED,
            giaddr,
            &[(54, &[10, 77, 0, 1]), (50, &yi), (82, &agent)],
        );
        sock.send_to(&r, server).unwrap();
        let (ack, _) = recv_matching(&sock, 8, Duration::from_secs(5), |p, _| {
            msg_type(p).is_some()
        })
        .expect("a reply to the REQUEST");
        (offer, ack)
    });
    let ip = yiaddr(&offer);
    assert!((Ipv4Addr::new(10, 78, 0, 10)..=Ipv4Addr::new(10, 78, 0, 20)).contains(&ip));
    assert_eq!(&offer[24..28], &giaddr.octets());
    assert_eq!(wire::find_option(&offer, 3), Some(&[10, 78, 0, 1][..]));
    assert_eq!(msg_type(&ack), Some(5));
    assert_eq!(yiaddr(&ack), ip);
    let l = wait_for("the relayed lease", Duration::from_secs(5), || {
        lease_of(&p.work, "52:54:00:78:00:09")
    })
    .unwrap();
    assert_eq!(l["ip"], ip.to_string());
    let _ = std::fs::remove_dir_all(&p.work);
}

#[test]
fn proxy_dhcp_beside_dnsmasq() {
    if !can_run("proxy_dhcp", &["dnsmasq", "ss"]) {
        return;
    }
    // cli --- [br in srv] --- dns: one L2 segment; dnsmasq hands out addresses, we boot.
    let srv = Netns::new("cmps").unwrap();
    let cli = Netns::new("cmpc").unwrap();
    let dns = Netns::new("cmpd").unwrap();
    let (s1, c1) = veth(&srv, &cli).unwrap();
    let (s2, d1) = veth(&srv, &dns).unwrap();
    srv.ip(&["link", "add", "br0", "type", "bridge"]).unwrap();
    for i in [&s1, &s2] {
        srv.ip(&["link", "set", i, "master", "br0"]).unwrap();
        srv.ip(&["link", "set", i, "up"]).unwrap();
    }
    srv.addr("br0", "10.77.0.1/24").unwrap();
    dns.addr(&d1, "10.77.0.2/24").unwrap();
    cli.ip(&["link", "set", &c1, "up"]).unwrap();
    let work = tempdir();
    let _dnsmasq = dns
        .spawn(
            "dnsmasq",
            &[
                "--no-daemon",
                "--port=0",
                "--conf-file=/dev/null",
                "--user=root",
                "--no-ping",
                "--bind-interfaces",
                &format!("--interface={d1}"),
                "--dhcp-range=10.77.0.100,10.77.0.150,1h",
                &format!("--dhcp-leasefile={}", work.join("dnsmasq.leases").display()),
                &format!("--pid-file={}", work.join("dnsmasq.pid").display()),
            ],
        )
        .unwrap();
    let _server = start_server(
        &srv,
        &work,
        &serde_json::json!({"mode": "proxy", "interface": "br0", "server_ip": "10.77.0.1"}),
    );
    wait_for("dnsmasq to listen", Duration::from_secs(10), || {
        let out = dns.run("ss", &["-H", "-uln", "sport = :67"]).ok()?;
        (!out.stdout.is_empty()).then_some(())
    })
    .unwrap();
    let mac_text = String::from_utf8(
        cli.run("cat", &[&format!("/sys/class/net/{c1}/address")])
            .unwrap()
            .stdout,
    )
    .unwrap();
    let mac: MacAddr = mac_text.trim().parse().unwrap();
    let mut uuid = vec![0u8];
    uuid.extend([0x42; 16]);
    let cli_name = cli.name.clone();
    let c1_for_thread = c1.clone();
    let (main_offer, proxy_offer, pxe_ack) = in_netns(&cli_name, move || {
        let sock = UdpSocket::bind("0.0.0.0:68").unwrap();
        sock.set_broadcast(true).unwrap();
        bind_to_device(&sock, &c1_for_thread);
        let opts: Vec<(u8, &[u8])> = vec![
            (60, b"PXEClient:Arch:00007:UNDI:003016"),
            (93, &[0, 7]),
            (94, &[1, 3, 16]),
            (97, &uuid),
            (55, &[1, 3, 43, 60, 66, 67, 97]),
        ];
        let d = packet(
            1,
            mac.0,
            99,
            0x8000,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &opts,
        );
        sock.send_to(&d, "255.255.255.255:67").unwrap();
        let mut main = None;
        let mut proxy = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while (main.is_none() || proxy.is_none()) && std::time::Instant::now() < deadline {
            if let Some((p, from)) = recv_matching(&sock, 99, Duration::from_secs(1), |p, _| {
                msg_type(p) == Some(2)
            }) {
                if from.ip() == &Ipv4Addr::new(10, 77, 0, 2) {
                    main = Some(p);
                } else if from.ip() == &Ipv4Addr::new(10, 77, 0, 1) {
                    proxy = Some(p);
                }
            }
        }
        let main = main.expect("an address offer from dnsmasq");
        let proxy = proxy.expect("a boot offer from the ProxyDHCP server");
        // As UEFI firmware does after the proxy offer without option 43: ask port 4011.
        let ip = yiaddr(&main);
        let status = Command::new("ip")
            .args(["addr", "add", &format!("{ip}/24"), "dev", &c1_for_thread])
            .status()
            .unwrap();
        assert!(status.success());
        let s = UdpSocket::bind(SocketAddrV4::new(ip, 0)).unwrap();
        let r = packet(3, mac.0, 100, 0, ip, Ipv4Addr::UNSPECIFIED, &opts);
        s.send_to(&r, "10.77.0.1:4011").unwrap();
        let (ack, _) = recv_matching(&s, 100, Duration::from_secs(5), |p, _| {
            msg_type(p) == Some(5)
        })
        .expect("an ACK from port 4011");
        (main, proxy, ack)
    });
    assert!(!yiaddr(&main_offer).is_unspecified());
    assert!(
        yiaddr(&proxy_offer).is_unspecified(),
        "the proxy offers no address"
    );
    assert_eq!(wire::find_option(&proxy_offer, 60), Some(&b"PXEClient"[..]));
    assert_eq!(
        wire::find_option(&proxy_offer, 54),
        Some(&[10, 77, 0, 1][..])
    );
    assert_eq!(wire::find_option(&proxy_offer, 67), Some(&b"ipxe.efi"[..]));
    assert_eq!(&proxy_offer[20..24], &[10, 77, 0, 1], "siaddr");
    assert!(wire::find_option(&proxy_offer, 97).is_some());
    assert_eq!(wire::find_option(&pxe_ack, 67), Some(&b"ipxe.efi"[..]));
    assert_eq!(wire::find_option(&pxe_ack, 60), Some(&b"PXEClient"[..]));
    // Never a lease in proxy mode; the unknown PXE client was reported.
    assert!(leases(&work).is_empty());
    let ev = events(&work);
    assert!(ev.iter().any(|e| e["discovered"]["mac"] == mac.to_string()
        && e["discovered"]["uuid"] == "42424242424242424242424242424242"
        && e["discovered"]["arch"] == "efi-bc"));
    assert!(!work.join("state").join(journal::JOURNAL_FILE).exists());
    let _ = std::fs::remove_dir_all(&work);
}

/// Replays a journal image and checks that no address was ever bound to two clients at once.
/// Bound records carry their expiry; with a fixed lease time the bind time is expiry − lease.
fn check_journal(image: &[u8], lease_secs: u64) -> (usize, u64) {
    let replay = journal::decode(image).expect("a journal header");
    // A torn tail can only be part of one record (the last write in flight).
    assert!(
        replay.tail_len < 8 + 512,
        "tail of {} bytes",
        replay.tail_len
    );
    let mut held: HashMap<Ipv4Addr, (MacAddr, u64)> = HashMap::new();
    for r in &replay.records {
        match r.state {
            netboot::dhcp::leases::RecordState::Bound => {
                let bound_at = r.until - lease_secs;
                if let Some((m, until)) = held.get(&r.ip) {
                    assert!(
                        *m == r.mac || *until <= bound_at,
                        "{} bound to {m} until {until} and to {} at {bound_at}",
                        r.ip,
                        r.mac
                    );
                }
                // A client holds one address: binding it elsewhere frees its previous one
                // (the server's replay does the same).
                held.retain(|ip, (m, _)| *m != r.mac || *ip == r.ip);
                held.insert(r.ip, (r.mac, r.until));
            }
            _ => {
                held.remove(&r.ip);
            }
        }
    }
    (replay.records.len(), replay.tail_len)
}

#[test]
fn leases_survive_kill_9_under_load() {
    if !can_run("dhcp_kill9", &["perfdhcp", "ss"]) {
        return;
    }
    let p = pair("52:54:00:77:00:02");
    p.cli.addr(&p.cli_if, "10.77.0.2/24").unwrap();
    let mut cfg = server_config(&p.srv_if, 3600);
    cfg["subnets"][0]["cidr"] = "10.77.0.0/16".into();
    cfg["subnets"][0]["pools"] =
        serde_json::json!([{"start": "10.77.1.0", "end": "10.77.200.255"}]);
    // Different netmask: move the server address to the /16.
    p.srv.ip(&["addr", "flush", "dev", &p.srv_if]).unwrap();
    p.srv.addr(&p.srv_if, "10.77.0.1/16").unwrap();
    p.cli.ip(&["addr", "flush", "dev", &p.cli_if]).unwrap();
    p.cli.addr(&p.cli_if, "10.77.0.2/16").unwrap();
    std::fs::write(p.work.join("config.json"), cfg.to_string()).unwrap();
    let journal_path = p.work.join("state").join(journal::JOURNAL_FILE);
    let mut seed = std::process::id() as u64;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut last_records = 0;
    for round in 0..4 {
        let server = spawn_server(&p.srv, &p.work);
        let mut perf = p
            .cli
            .command("perfdhcp")
            .args([
                "-4",
                "-r",
                "500",
                "-R",
                "2000",
                "-p",
                "5",
                "-l",
                &p.cli_if,
                "10.77.0.1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500 + rand() % 1500));
        // kill -9 at a random moment under load.
        unsafe { libc::kill(server.id() as i32, libc::SIGKILL) };
        drop(server);
        let _ = perf.kill();
        let _ = perf.wait();
        let image = std::fs::read(&journal_path).unwrap();
        let (records, tail) = check_journal(&image, 3600);
        eprintln!("round {round}: {records} journal records, torn tail {tail} bytes");
        // The server's own replay of it is consistent too.
        let dcfg: DhcpConfig = serde_json::from_value(cfg.clone()).unwrap();
        let mut h = netboot::dhcp::Handler::new(&dcfg).unwrap();
        h.restore(
            &journal::decode(&image).unwrap().records,
            netboot::dhcp::unix_now(),
        );
        h.table().check_invariants().unwrap();
        assert!(records >= last_records, "round {round}: records lost");
        last_records = records;
    }
    assert!(
        last_records > 100,
        "the load produced only {last_records} leases"
    );
    // A restart cuts a torn tail away, replays, and serves on.
    let _server = spawn_server(&p.srv, &p.work);
    let image = std::fs::read(&journal_path).unwrap();
    let (_, tail) = check_journal(&image, 3600);
    assert_eq!(tail, 0, "the restarted server truncated the torn tail");
    let l = wait_for("the replayed lease table", Duration::from_secs(5), || {
        let l = leases(&p.work);
        (!l.is_empty()).then_some(l)
    })
    .unwrap();
    let mut ips: Vec<&str> = l.iter().filter_map(|x| x["ip"].as_str()).collect();
    let n = ips.len();
    ips.sort_unstable();
    ips.dedup();
    assert_eq!(ips.len(), n);
    let _ = std::fs::remove_dir_all(&p.work);
}
