//! The two-master lab: masters A and B and a client C as network namespaces on a bridge (the
//! bridge in a namespace of its own), a serial null-modem cable as a `socat` pseudo-terminal
//! pair, and an SMTP sink in C. Everything is removed when the lab drops.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{clustermaker_bin, veth, wait_for, ChildGuard, Netns};

pub const VIP: &str = "10.88.0.100";
pub const C_IP: &str = "10.88.0.3";
pub const SERVICE_PORT: u16 = 7000;
pub const SMTP_PORT: u16 = 2525;

/// What the masters' configuration varies on.
#[derive(Clone)]
pub struct LabOptions {
    pub keepalive_ms: u64,
    pub warntime_ms: u64,
    pub deadtime_ms: u64,
    pub initdead_ms: u64,
    pub serial: bool,
    pub monitor: bool,
    /// The network link: unicast to the peer, broadcast, or multicast on eth0.
    pub net_link: NetLink,
    /// B's service cannot start (its start command exits 1).
    pub b_start_fails: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum NetLink {
    Ucast,
    Bcast,
    Mcast,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            keepalive_ms: 100,
            warntime_ms: 300,
            deadtime_ms: 600,
            initdead_ms: 2000,
            serial: true,
            monitor: true,
            net_link: NetLink::Ucast,
            b_start_fails: false,
        }
    }
}

pub struct Master {
    pub name: String,
    pub ip: String,
    pub ns: Netns,
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    process: Option<ChildGuard>,
}

impl Master {
    /// Starts `clustermaker serve` in the namespace, logging to `log` (appended).
    pub fn start(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = self
            .ns
            .command(clustermaker_bin().to_str().expect("utf-8 path"))
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env("CLUSTERMAKER_LOG", "info,runtime=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start clustermaker serve")?;
        self.process = Some(ChildGuard(child));
        Ok(())
    }

    /// The PID of `clustermaker serve` itself (not the guard, not `ip netns exec`).
    pub fn serve_pid(&self) -> Option<i32> {
        let out = Command::new("pgrep")
            .args(["-f", &format!("{} serve", self.config.display())])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .find(|pid: &i32| self.ns.pids().contains(pid))
    }

    /// `kill -9` of the serve process: no goodbye, the guard must take the group down.
    pub fn kill9(&mut self) -> Result<()> {
        let pid = self
            .serve_pid()
            .context("clustermaker serve is not running")?;
        // SAFETY: plain kill(2).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        if let Some(mut p) = self.process.take() {
            let _ = p.0.wait();
            std::mem::forget(p);
        }
        Ok(())
    }

    /// SIGTERM and wait: the orderly stop.
    pub fn stop(&mut self) {
        if let Some(pid) = self.serve_pid() {
            // SAFETY: plain kill(2).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if let Some(mut p) = self.process.take() {
            let _ = p.0.wait();
            std::mem::forget(p);
        }
    }

    /// Runs a `clustermaker` subcommand against this master's configuration.
    pub fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        let out = self
            .ns
            .command(clustermaker_bin().to_str().expect("utf-8 path"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()?;
        Ok(out)
    }

    pub fn status(&self) -> Result<serde_json::Value> {
        let out = self.cli(&["status", "--json"])?;
        if !out.status.success() {
            bail!(
                "status of {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    pub fn role(&self) -> Option<String> {
        self.status()
            .ok()
            .and_then(|s| s["role"].as_str().map(String::from))
    }

    /// Whether the virtual IP is on this master's eth0.
    pub fn holds_vip(&self) -> bool {
        self.ns
            .ip(&["-4", "-o", "addr", "show", "dev", "eth0"])
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!(" {VIP}/")))
            .unwrap_or(false)
    }

    pub fn mac(&self) -> String {
        let out = self
            .ns
            .ip(&["-o", "link", "show", "dev", "eth0"])
            .expect("ip link");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    }

    /// Drops everything on eth0, ARP included (the "network cable pulled" case).
    pub fn cut_network(&self) -> Result<()> {
        self.nft(
            r#"table inet cmcut {
  chain i { type filter hook input priority -300; policy accept; iifname "eth0" drop; }
  chain o { type filter hook output priority -300; policy accept; oifname "eth0" drop; }
}
table arp cmcut {
  chain i { type filter hook input priority -300; policy drop; }
  chain o { type filter hook output priority -300; policy drop; }
}
"#,
        )
    }

    /// Drops only the UDP heartbeats on eth0; with the serial cable cut too, the masters lose
    /// each other while both still reach the ping node (a true partition).
    pub fn cut_udp_heartbeats(&self) -> Result<()> {
        self.nft(
            r#"table inet cmcut {
  chain i { type filter hook input priority -300; policy accept; iifname "eth0" udp dport 694 drop; }
  chain o { type filter hook output priority -300; policy accept; oifname "eth0" udp dport 694 drop; }
}
"#,
        )
    }

    /// Removes the cuts of `cut_network` and `cut_udp_heartbeats`.
    pub fn heal_network(&self) -> Result<()> {
        let _ = self.ns.run("nft", &["delete", "table", "inet", "cmcut"]);
        let _ = self.ns.run("nft", &["delete", "table", "arp", "cmcut"]);
        Ok(())
    }

    fn nft(&self, rules: &str) -> Result<()> {
        use std::io::Write;
        let mut child = self
            .ns
            .command("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(rules.as_bytes())?;
        if !child.wait()?.success() {
            bail!("nft refused the rules in {}", self.name);
        }
        Ok(())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An Ethernet switch: a bridge in a namespace of its own, so the lab's hosts share a segment
/// without touching the host's network.
pub struct Switch {
    ns: Netns,
}

impl Switch {
    pub fn new(prefix: &str) -> Result<Switch> {
        let ns = Netns::new(prefix)?;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(Switch { ns })
    }

    /// A tap device on the switch for a QEMU guest, and the namespace it lives in.
    pub fn add_tap(&self, name: &str) -> Result<(&Netns, String)> {
        self.ns.ip(&["tuntap", "add", "dev", name, "mode", "tap"])?;
        self.ns.ip(&["link", "set", name, "master", "br0"])?;
        self.ns.ip(&["link", "set", name, "up"])?;
        Ok((&self.ns, name.to_string()))
    }

    /// Plugs `host` in: its end of the cable is `eth0` with address `cidr`.
    pub fn attach(&self, host: &Netns, cidr: &str) -> Result<()> {
        let (inside, port) = veth(host, &self.ns)?;
        host.ip(&["link", "set", &inside, "name", "eth0"])?;
        host.addr("eth0", cidr)?;
        self.ns.ip(&["link", "set", &port, "master", "br0"])?;
        self.ns.ip(&["link", "set", &port, "up"])?;
        Ok(())
    }
}

pub struct HaLab {
    pub dir: tempfile::TempDir,
    pub a: Master,
    pub b: Master,
    pub c: Netns,
    switch: Switch,
    serial: Option<ChildGuard>,
    smtp: Option<ChildGuard>,
    pub smtp_log: PathBuf,
    pub options: LabOptions,
}

impl HaLab {
    pub fn new(options: LabOptions) -> Result<HaLab> {
        let dir = tempfile::tempdir()?;
        let switch = Switch::new("hsw")?;
        let a_ns = Netns::new("ha")?;
        let b_ns = Netns::new("hb")?;
        let c = Netns::new("hc")?;
        switch.attach(&a_ns, "10.88.0.1/24")?;
        switch.attach(&b_ns, "10.88.0.2/24")?;
        switch.attach(&c, "10.88.0.3/24")?;
        // Fast ARP aging in C would hide a missing gratuitous ARP; keep the kernel defaults.

        let key = dir.path().join("ha.key");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&key)?;
            f.write_all(b"0123456789abcdef0123456789abcdef-test-lab-key\n")?;
        }

        let master =
            |name: &str, ip: &str, ns: Netns, peer: &str, peer_ip: &str| -> Result<Master> {
                let state_dir = dir.path().join(format!("{name}-state"));
                let config = dir.path().join(format!("{name}.toml"));
                std::fs::write(
                    &config,
                    master_config(dir.path(), name, peer, peer_ip, &options),
                )?;
                Ok(Master {
                    name: name.into(),
                    ip: ip.into(),
                    ns,
                    config,
                    state_dir,
                    log: dir.path().join(format!("{name}.log")),
                    process: None,
                })
            };
        let a = master("a", "10.88.0.1", a_ns, "b", "10.88.0.2")?;
        let b = master("b", "10.88.0.2", b_ns, "a", "10.88.0.1")?;
        let smtp_log = dir.path().join("smtp.log");
        let mut lab = HaLab {
            dir,
            a,
            b,
            c,
            switch,
            serial: None,
            smtp: None,
            smtp_log,
            options,
        };
        if lab.options.serial {
            lab.connect_serial()?;
        }
        lab.start_smtp_sink()?;
        Ok(lab)
    }

    /// Replaces A's namespace by a new one (new interface, new MAC) and wipes A's state
    /// directory: the master comes back as after a reinstall.
    pub fn recreate_a(&mut self) -> Result<()> {
        self.a.stop();
        let fresh = Netns::new("ha")?;
        self.switch.attach(&fresh, "10.88.0.1/24")?;
        self.a.ns = fresh; // the old namespace drops here, with everything in it
        let _ = std::fs::remove_dir_all(&self.a.state_dir);
        Ok(())
    }

    fn tty(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("tty-{name}"))
    }

    /// Plugs the null-modem cable: a socat pty pair whose ends are linked at tty-a and tty-b.
    pub fn connect_serial(&mut self) -> Result<()> {
        let (ta, tb) = (self.tty("a"), self.tty("b"));
        let child = Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", ta.display()))
            .arg(format!("pty,raw,echo=0,link={}", tb.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("socat")?;
        self.serial = Some(ChildGuard(child));
        wait_for("the serial pty pair", Duration::from_secs(5), || {
            (ta.exists() && tb.exists()).then_some(())
        })
    }

    /// Unplugs the cable: both ptys close.
    pub fn cut_serial(&mut self) {
        self.serial = None;
        let _ = std::fs::remove_file(self.tty("a"));
        let _ = std::fs::remove_file(self.tty("b"));
    }

    fn start_smtp_sink(&mut self) -> Result<()> {
        let log = std::fs::File::create(&self.smtp_log)?;
        let child = self
            .c
            .command("/usr/bin/python3")
            .args([
                "-u",
                "-W",
                "ignore",
                "-m",
                "smtpd",
                "-n",
                "-c",
                "DebuggingServer",
                &format!("{C_IP}:{SMTP_PORT}"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("SMTP sink (python3 smtpd)")?;
        self.smtp = Some(ChildGuard(child));
        Ok(())
    }

    /// The lab's switch (to plug QEMU guests in).
    pub fn switch(&self) -> &Switch {
        &self.switch
    }

    pub fn fence_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fence.log")).unwrap_or_default()
    }

    pub fn smtp_text(&self) -> String {
        std::fs::read_to_string(&self.smtp_log).unwrap_or_default()
    }

    /// Which masters hold the VIP right now.
    pub fn holders(&self) -> Vec<&str> {
        let mut h = Vec::new();
        if self.a.holds_vip() {
            h.push("a");
        }
        if self.b.holds_vip() {
            h.push("b");
        }
        h
    }

    /// Waits until exactly `name` holds the VIP.
    pub fn wait_holder(&self, name: &str, timeout: Duration) -> Result<()> {
        wait_for(&format!("{name} to hold the VIP alone"), timeout, || {
            (self.holders() == [name]).then_some(())
        })
        .with_context(|| self.diagnostics())
    }

    /// Samples the holders for `span`: exactly `name`, every time.
    pub fn assert_steady_holder(&self, name: &str, span: Duration) -> Result<()> {
        let until = Instant::now() + span;
        while Instant::now() < until {
            let h = self.holders();
            if h != [name] {
                bail!(
                    "VIP holders {h:?}, expected only {name}\n{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        Ok(())
    }

    /// What C gets from the service through the VIP (the holder's name), if anything.
    pub fn service_via_vip(&self) -> Option<String> {
        let out = self
            .c
            .command("socat")
            .args([
                "-T1",
                "-",
                &format!("TCP:{VIP}:{SERVICE_PORT},connect-timeout=1"),
            ])
            .stdin(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (!text.is_empty()).then_some(text)
    }

    pub fn wait_service(&self, name: &str, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("C to reach {name}'s service via the VIP"),
            timeout,
            || (self.service_via_vip().as_deref() == Some(name)).then_some(()),
        )
        .with_context(|| self.diagnostics())
    }

    /// C's neighbour entry for the VIP: the MAC address, if any.
    pub fn c_arp_for_vip(&self) -> Option<String> {
        let out = self.c.ip(&["neigh", "show", VIP]).ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        text.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .map(String::from)
    }

    pub fn diagnostics(&self) -> String {
        let tail = |t: String| {
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "holders: {:?}\n--- a.log ---\n{}\n--- b.log ---\n{}",
            self.holders(),
            tail(self.a.log_text()),
            tail(self.b.log_text())
        )
    }
}

impl Drop for HaLab {
    fn drop(&mut self) {
        self.a.stop();
        self.b.stop();
    }
}

/// A master's configuration in the lab: VIP, an echo service answering the master's name on
/// port 7000 (started and stopped with the group), its monitor, MailTo to C's SMTP sink.
pub fn master_config(dir: &Path, name: &str, peer: &str, peer_ip: &str, o: &LabOptions) -> String {
    let d = dir.display();
    let mut text = format!(
        r#"state_dir = "{d}/{name}-state"
[boot]
enabled = false
[ha]
enabled = true
node = "{name}"
peer = "{peer}"
key_file = "{d}/ha.key"
keepalive = "{}ms"
warntime = "{}ms"
deadtime = "{}ms"
initdead = "{}ms"
ping_nodes = ["{C_IP}"]
fence = {{ command = "echo \"$(date +%s.%N) {name} fenced $CM_PEER\" >> {d}/fence.log" }}
"#,
        o.keepalive_ms, o.warntime_ms, o.deadtime_ms, o.initdead_ms
    );
    text += &match o.net_link {
        NetLink::Ucast => format!("[[ha.links]]\nkind = \"udp\"\npeer = \"{peer_ip}\"\n"),
        NetLink::Bcast => "[[ha.links]]\nkind = \"bcast\"\ninterface = \"eth0\"\n".into(),
        NetLink::Mcast => {
            "[[ha.links]]\nkind = \"mcast\"\ngroup = \"239.0.0.94\"\ninterface = \"eth0\"\n".into()
        }
    };
    if o.serial {
        text += &format!(
            r#"[[ha.links]]
kind = "serial"
device = "{d}/tty-{name}"
baud = 19200
"#
        );
    }
    let start = if o.b_start_fails && name == "b" {
        "echo 'echo: port 7000 busy' >&2; exit 1".to_string()
    } else {
        format!("setsid socat TCP-LISTEN:{SERVICE_PORT},fork,reuseaddr SYSTEM:'echo {name}' </dev/null >/dev/null 2>&1 & echo $! > {d}/{name}-echo.pid")
    };
    text += &format!(
        r#"[[ha.resources]]
kind = "ipaddr"
address = "{VIP}/24"
interface = "eth0"
[[ha.resources]]
kind = "service"
name = "echo"
manager = "command"
start = "{start}"
stop = "kill $(cat {d}/{name}-echo.pid) 2>/dev/null; rm -f {d}/{name}-echo.pid; true"
status = "kill -0 $(cat {d}/{name}-echo.pid)"
timeout = "10s"
[[ha.resources]]
kind = "mailto"
to = ["admin@cluster.test"]
subject = "Cluster_Failover_Event"
[ha.mail]
smtp_host = "{C_IP}"
smtp_port = {SMTP_PORT}
from = "{name}@cluster.test"
"#
    );
    if o.monitor {
        text += &format!(
            r#"[[ha.monitors]]
name = "echo"
check = {{ type = "tcp", host = "127.0.0.1", port = {SERVICE_PORT} }}
interval = "300ms"
randskew = "100ms"
timeout = "500ms"
alerts = [{{ type = "failover" }}]
"#
        );
    }
    text
}
