//! Assembles the HA runtime of one master from its `[ha]` configuration: key, generations,
//! resource group, links, pinger, monitors, engine, worker, alerts and the control socket.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::config::{HaConfig, LinkConfig};
use crate::control::{Answer, Command};
use crate::core::{AdminCommand, Alert, Core, CoreConfig, Event};
use crate::engine::{Engine, Input, Job};
use crate::links::ReceiveContext;
use crate::mail::Mailer;
use crate::monitor::{AlertSink, MonitorEvent, Monitors};
use crate::resources::ResourceGroup;
use crate::state::{next_boot_gen, HaState, StateFile};
use crate::wire::{Key, ReplayFilter};

/// A running HA runtime.
pub struct Ha {
    inputs: SyncSender<Input>,
}

impl Ha {
    /// Starts everything; returns once heartbeats are going out. `runtime` runs the monitors.
    pub fn start(
        config: &HaConfig,
        state_dir: &Path,
        runtime: &tokio::runtime::Handle,
    ) -> anyhow::Result<Ha> {
        let node = node_name(config)?;
        let key = read_key(&config.key_file)?;
        if config.realtime {
            lock_memory();
        }

        let state_file = StateFile::new(state_dir);
        let mut state = state_file.load()?;
        state.boot_gen = next_boot_gen(state.boot_gen, unix_secs());
        state_file
            .save(&state)
            .context("cannot save the HA state")?;

        let mailer = Arc::new(Mailer::new(&config.mail, &node));
        let group = Arc::new(ResourceGroup::new(config, &node, mailer.clone())?);
        // Whatever a killed predecessor left up (the guard normally removed it) goes first:
        // this master holds nothing until the core says so.
        group.cleanup();

        let (inputs, inbox) = sync_channel::<Input>(1024);
        let ctx = ReceiveContext {
            key: key.clone(),
            node: node.clone(),
            peer: config.peer.clone(),
            to_engine: inputs.clone(),
            realtime: config.realtime,
        };
        let own = local_addresses();
        let mut links = Vec::new();
        for link in &config.links {
            if let LinkConfig::Udp { peer, .. } = link {
                if own.contains(peer) {
                    tracing::info!(
                        "heartbeat link {}: that is this master's own address, skipped",
                        link.label()
                    );
                    continue;
                }
            }
            links.push(
                crate::links::open(links.len(), link, ctx.clone())
                    .with_context(|| format!("heartbeat link {}", link.label()))?,
            );
        }
        if links.is_empty() {
            bail!("no heartbeat link left to the peer (every udp link points at this master's own address)");
        }

        let core = Core::new(
            CoreConfig {
                node: node.clone(),
                peer: config.peer.clone(),
                preferred: config.preferred.clone(),
                keepalive: config.keepalive,
                warntime: config.warntime,
                deadtime: config.deadtime,
                initdead: config.initdead,
                auto_failback: config.auto_failback,
                ping_configured: !config.ping_nodes.is_empty(),
                fence_configured: config.fence.is_some(),
                links: links.len(),
                failure_hold: config.failure_hold,
            },
            Duration::ZERO,
            state.data_gen,
        );
        tracing::info!(
            "HA: node {node}, peer {}, generation {}, data generation {}, {} link(s), keepalive {} ms, deadtime {} ms",
            config.peer,
            state.boot_gen,
            state.data_gen,
            links.len(),
            config.keepalive.as_millis(),
            config.deadtime.as_millis()
        );

        let (jobs, job_queue) = channel::<Job>();
        spawn_worker(
            job_queue,
            inputs.clone(),
            group.clone(),
            state_file,
            state,
            config.fence.clone(),
            config.peer.clone(),
        )?;
        let (alerts, alert_queue) = channel::<Alert>();
        spawn_alerts(alert_queue, mailer.clone(), node.clone())?;

        if !config.ping_nodes.is_empty() {
            let to_engine = inputs.clone();
            crate::ping::spawn(
                config.ping_nodes.clone(),
                config.keepalive,
                config.deadtime,
                config.realtime,
                move |reachable| {
                    to_engine
                        .send(Input::Core(Event::Ping { reachable }))
                        .is_ok()
                },
            )
            .context("ping tiebreaker (raw ICMP sockets need root)")?;
        }

        let (holding_tx, holding_rx) = tokio::sync::watch::channel(false);
        let monitors = if config.monitors.is_empty() {
            None
        } else {
            let (events, monitor_events) = channel::<MonitorEvent>();
            let to_engine = inputs.clone();
            std::thread::Builder::new()
                .name("ha-monitor-events".into())
                .spawn(move || {
                    for e in monitor_events {
                        let event = match e {
                            MonitorEvent::Failover { monitor, detail } => {
                                Event::MonitorFailover { monitor, detail }
                            }
                            MonitorEvent::Health { fit } => Event::Health { fit },
                        };
                        if to_engine.send(Input::Core(event)).is_err() {
                            return;
                        }
                    }
                })?;
            let sink: Arc<dyn AlertSink> = Arc::new(MonitorSink {
                mailer: mailer.clone(),
                group: group.clone(),
            });
            let monitors = config
                .monitors
                .iter()
                .map(|m| {
                    let period = m
                        .period
                        .as_deref()
                        .map(|p| {
                            crate::import::period::Period::parse(p)
                                .map_err(|e| anyhow::anyhow!("monitor {}: period: {e}", m.name))
                        })
                        .transpose()?
                        .map(|p| {
                            Box::new(move |t: std::time::SystemTime| {
                                let (wd, h, m) = local_time(t);
                                p.contains(wd, h, m)
                            })
                                as Box<dyn Fn(std::time::SystemTime) -> bool + Send + Sync>
                        });
                    Ok((m.clone(), period))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Some(Monitors::spawn(runtime, monitors, sink, holding_rx, events))
        };
        let monitors = Arc::new(monitors);

        let engine = Engine {
            core,
            key,
            node: node.clone(),
            boot_gen: state.boot_gen,
            keepalive: config.keepalive,
            deadtime: config.deadtime,
            replay: ReplayFilter::new(links.len(), state.peer_boot_gen),
            links,
            jobs,
            alerts,
            on_holding: Box::new(move |h| {
                let _ = holding_tx.send(h);
            }),
            origin: Instant::now(),
        };
        let realtime = config.realtime;
        std::thread::Builder::new()
            .name("ha-engine".into())
            .spawn(move || {
                if realtime {
                    crate::links::make_realtime("heartbeat engine");
                }
                engine.run(inbox)
            })?;

        let to_engine = inputs.clone();
        let peer = config.peer.clone();
        crate::control::serve(crate::control::socket_path(state_dir), move |cmd| {
            answer(cmd, &to_engine, &group, &monitors, &node, &peer)
        })?;
        Ok(Ha { inputs })
    }

    /// Orderly stop: releases the group if held and tells the peer to take it at once.
    pub fn stop(&self) {
        let (reply, done) = channel();
        if self.inputs.send(Input::Stop { reply }).is_ok() {
            let _ = done.recv_timeout(Duration::from_secs(310));
        }
    }
}

fn answer(
    cmd: Command,
    to_engine: &SyncSender<Input>,
    group: &ResourceGroup,
    monitors: &Option<Monitors>,
    node: &str,
    peer: &str,
) -> Answer {
    let fail = |message: String| Answer {
        ok: false,
        message: Some(message),
        status: None,
    };
    match cmd {
        Command::Status => {
            let (reply, status) = channel();
            if to_engine.send(Input::Status { reply }).is_err() {
                return fail("the heartbeat engine has stopped".into());
            }
            let Ok(engine) = status.recv_timeout(Duration::from_secs(5)) else {
                return fail("the heartbeat engine does not answer".into());
            };
            let holder = if engine.core.role == crate::core::Role::Active {
                Some(node.to_string())
            } else if engine.core.peer.alive
                && engine.core.peer.role == Some(crate::core::Role::Active)
            {
                Some(peer.to_string())
            } else {
                None
            };
            let mut doc = serde_json::to_value(&engine).unwrap_or_default();
            doc["group_holder"] = serde_json::json!(holder);
            doc["resources"] = serde_json::to_value(group.status()).unwrap_or_default();
            doc["monitors"] = monitors
                .as_ref()
                .map(|m| serde_json::to_value(m.status()).unwrap_or_default())
                .unwrap_or_else(|| serde_json::json!([]));
            Answer {
                ok: true,
                message: None,
                status: Some(doc),
            }
        }
        Command::Standby | Command::Takeover => {
            let cmd = if cmd == Command::Standby {
                AdminCommand::Standby
            } else {
                AdminCommand::Takeover
            };
            let (reply, answer) = channel();
            if to_engine.send(Input::Admin { cmd, reply }).is_err() {
                return fail("the heartbeat engine has stopped".into());
            }
            match answer.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(message)) => Answer {
                    ok: true,
                    message: Some(message),
                    status: None,
                },
                Ok(Err(message)) => fail(message),
                Err(_) => fail("the heartbeat engine does not answer".into()),
            }
        }
    }
}

struct MonitorSink {
    mailer: Arc<Mailer>,
    group: Arc<ResourceGroup>,
}

impl AlertSink for MonitorSink {
    fn mail(&self, to: &[String], subject: &str, body: &str) -> Result<(), String> {
        self.mailer
            .send(to, subject, body)
            .map_err(|e| format!("{e:#}"))
    }
    fn restart(&self, service: &str) -> Result<(), String> {
        self.group
            .restart_service(service)
            .map_err(|e| format!("{e:#}"))
    }
}

/// The worker: starts and stops the group, fences, persists generations. One job at a time,
/// in order; the core never asks for two group changes at once.
fn spawn_worker(
    jobs: Receiver<Job>,
    to_engine: SyncSender<Input>,
    group: Arc<ResourceGroup>,
    state_file: StateFile,
    mut state: HaState,
    fence: Option<crate::config::FenceConfig>,
    peer: String,
) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("ha-worker".into())
        .spawn(move || {
            for job in jobs {
                let event = match job {
                    Job::Acquire { reason, data_gen } => {
                        state.data_gen = data_gen;
                        // The generation is on disk before any data can be written under it.
                        let result = state_file
                            .save(&state)
                            .map_err(|e| format!("cannot persist the data generation: {e:#}"))
                            .and_then(|()| group.acquire(&reason).map_err(|e| format!("{e:#}")));
                        Event::AcquireDone { result }
                    }
                    Job::Release { reason } => Event::ReleaseDone {
                        result: group.release(&reason).map_err(|e| format!("{e:#}")),
                    },
                    Job::Fence => Event::FenceDone {
                        result: match &fence {
                            Some(f) => run_fence(&f.command, f.timeout, &peer),
                            None => Ok(()),
                        },
                    },
                    Job::SavePeerGen(g) => {
                        state.peer_boot_gen = state.peer_boot_gen.max(g);
                        if let Err(e) = state_file.save(&state) {
                            tracing::error!("cannot persist the peer's generation: {e:#}");
                        }
                        continue;
                    }
                };
                if to_engine.send(Input::Core(event)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

fn run_fence(command: &str, timeout: Duration, peer: &str) -> Result<(), String> {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(command).env("CM_PEER", peer);
    match crate::command::run(&mut cmd, timeout) {
        Ok(o) if o.success() => Ok(()),
        Ok(o) => Err(format!("fence command: {}", o.describe(timeout))),
        Err(e) => Err(format!("cannot run the fence command: {e:#}")),
    }
}

/// Alerts become log lines, and mail for the events an administrator must know about.
fn spawn_alerts(alerts: Receiver<Alert>, mailer: Arc<Mailer>, node: String) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("ha-alerts".into())
        .spawn(move || {
            for alert in alerts {
                let kind = serde_json::to_value(alert.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                if alert.kind.is_mailworthy() {
                    tracing::warn!(event = %kind, "{}", alert.text);
                    let subject = format!("[clustermaker] {node}: {kind}");
                    if let Err(e) = mailer.send(&[], &subject, &alert.text) {
                        tracing::warn!("alert mail not sent: {e:#}");
                    }
                } else {
                    tracing::info!(event = %kind, "{}", alert.text);
                }
            }
        })?;
    Ok(())
}

/// This master's name: `ha.node`, or the host name.
pub fn node_name(config: &HaConfig) -> anyhow::Result<String> {
    if !config.node.is_empty() {
        return Ok(config.node.clone());
    }
    let host = nix::unistd::gethostname()
        .context("cannot read the host name")?
        .to_string_lossy()
        .into_owned();
    if !crate::config::valid_node_name(&host) {
        bail!("host name `{host}` cannot be a node name; set `ha.node`");
    }
    if host == config.peer {
        bail!("this host is named `{host}` like `ha.peer`; set `ha.node` or fix the host name");
    }
    Ok(host)
}

/// Reads the shared key; refuses a file others can read, since it lets them forge heartbeats.
pub fn read_key(path: &Path) -> anyhow::Result<Key> {
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "cannot read the HA key {} (create it with `clustermaker ha keygen` and copy it to the peer)",
            path.display()
        )
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "the HA key {} is readable by others (mode {mode:o}); run `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
    let text = std::fs::read(path)?;
    let trimmed = text.trim_ascii().to_vec();
    Key::new(trimmed).with_context(|| {
        format!(
            "the HA key {} is shorter than 16 bytes; make a new one with `clustermaker ha keygen`",
            path.display()
        )
    })
}

/// Writes a new random key (64 hex characters), readable by root only. Refuses to overwrite.
pub fn write_new_key(path: &Path) -> anyhow::Result<()> {
    let mut bytes = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    write_key_bytes(path, hex(&bytes).as_bytes())
}

/// Writes key material (e.g. derived from an imported authkeys), readable by root only.
pub fn write_key_bytes(path: &Path, material: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    f.write_all(material)?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn local_addresses() -> Vec<std::net::IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|ifa| {
            let a = ifa.address?;
            a.as_sockaddr_in()
                .map(|s| std::net::IpAddr::V4(s.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|s| std::net::IpAddr::V6(s.ip())))
        })
        .collect()
}

/// Locks the process's memory so a heartbeat never waits for a page to come back from swap.
fn lock_memory() {
    // SAFETY: plain syscall with valid flags.
    if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
        tracing::warn!(
            "cannot lock memory ({}); heartbeats may be late when the machine swaps",
            std::io::Error::last_os_error()
        );
    }
}

/// The guard: a small process `serve` starts beside itself with a pipe on its standard input.
/// When `serve` dies without saying goodbye (`kill -9`, a crash), the pipe closes and the
/// guard takes the group down, so the peer's takeover never meets a second holder of the
/// virtual IP. A clean exit writes "bye" first.
pub fn run_guard(config: &HaConfig) -> anyhow::Result<()> {
    // Signals meant for `serve` (Ctrl-C on the terminal, `pkill clustermaker`) must not take
    // the guard with it: it ends when its pipe closes.
    // SAFETY: setting the disposition of two signals to "ignore" has no preconditions.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
    }
    let node = node_name(config)?;
    let mailer = Arc::new(Mailer::new(&config.mail, &node));
    let group = ResourceGroup::new(config, &node, mailer)?;
    let mut said = String::new();
    let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut said);
    if said.trim() == "bye" {
        return Ok(());
    }
    tracing::warn!("clustermaker serve ended without a goodbye: taking the group down");
    group.cleanup();
    Ok(())
}

/// Weekday (Sunday = 0), hour and minute of `t` in the local time zone, as mon's periods use.
fn local_time(t: std::time::SystemTime) -> (u8, u8, u8) {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as libc::time_t)
        .unwrap_or(0);
    // SAFETY: localtime_r writes only into the `tm` we own.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        tm
    };
    (tm.tm_wday as u8, tm.tm_hour as u8, tm.tm_min as u8)
}
