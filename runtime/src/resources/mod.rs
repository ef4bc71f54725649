//! The resource group (Heartbeat's `haresources` line): virtual IPs, services and mail,
//! started in order on takeover and stopped in reverse on release.
//!
//! The API is blocking: a resource-worker thread calls it, so a slow init script never stalls
//! the heartbeat path. Calls that change state are serialised; `status` is not, and stays
//! cheap enough to poll.

pub mod announce;
pub mod ipaddr;
pub mod service;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;

use crate::config::{HaConfig, ResourceConfig};
use crate::mail::Mailer;
use ipaddr::IpAddrResource;
use service::{ServiceResource, ServiceSpec};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceState {
    Up,
    Down,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceStatus {
    /// `ipaddr 192.168.1.49/24 on eth0`, `service mysqld (sysv)`, `mailto`.
    pub name: String,
    pub state: ResourceState,
    pub detail: String,
}

enum Resource {
    Ipaddr(IpAddrResource),
    Service(ServiceResource),
    Mailto(MailtoResource),
}

impl Resource {
    fn name(&self) -> String {
        match self {
            Resource::Ipaddr(r) => r.name(),
            Resource::Service(r) => r.name(),
            Resource::Mailto(_) => "mailto".into(),
        }
    }

    /// A cheap name for logs: no interface or service lookup.
    fn label(&self) -> String {
        match self {
            Resource::Ipaddr(r) => format!("ipaddr {}", r.addr()),
            Resource::Service(r) => r.label(),
            Resource::Mailto(_) => "mailto".into(),
        }
    }

    fn start(&self, reason: &str) -> Result<()> {
        match self {
            Resource::Ipaddr(r) => r.start(),
            Resource::Service(r) => r.start(),
            Resource::Mailto(r) => {
                r.notify(true, reason);
                Ok(())
            }
        }
    }

    fn stop(&self, reason: &str) -> Result<()> {
        match self {
            Resource::Ipaddr(r) => r.stop(),
            Resource::Service(r) => r.stop(),
            Resource::Mailto(r) => {
                r.notify(false, reason);
                Ok(())
            }
        }
    }

    fn status(&self) -> ResourceStatus {
        let (name, state, detail) = match self {
            Resource::Ipaddr(r) => r.status(),
            Resource::Service(r) => r.status(),
            Resource::Mailto(r) => {
                let (state, detail) = r.status();
                ("mailto".into(), state, detail)
            }
        };
        ResourceStatus {
            name,
            state,
            detail,
        }
    }
}

/// Mail on takeover and release. Sent from a background thread: a slow or dead mail relay
/// must not hold up the services after it in the group, nor fail the takeover.
struct MailtoResource {
    node: String,
    to: Vec<String>,
    subject: String,
    mailer: Arc<Mailer>,
    held: AtomicBool,
    last: Arc<Mutex<String>>,
    sending: Mutex<Vec<JoinHandle<()>>>,
}

impl MailtoResource {
    fn notify(&self, took_over: bool, reason: &str) {
        self.held.store(took_over, Ordering::SeqCst);
        let what = if took_over {
            "took over the group"
        } else {
            "released the group"
        };
        let text = format!("{} {what}: {reason}", self.node);
        let subject = format!("{} {text}", self.subject);
        let body = format!("{text}\n");
        let (mailer, to, last) = (self.mailer.clone(), self.to.clone(), self.last.clone());
        let spawned = std::thread::Builder::new()
            .name("mailto".into())
            .spawn(move || {
                let outcome = match mailer.send(&to, &subject, &body) {
                    Ok(()) => format!("sent \"{subject}\""),
                    Err(e) => {
                        tracing::warn!("mail \"{subject}\" not sent: {e:#}");
                        format!("failed \"{subject}\": {e:#}")
                    }
                };
                *last.lock().unwrap_or_else(|e| e.into_inner()) = outcome;
            });
        match spawned {
            Ok(handle) => {
                let mut sending = lock(&self.sending);
                sending.retain(|h| !h.is_finished());
                sending.push(handle);
            }
            Err(e) => tracing::warn!("cannot start a thread to send mail: {e}"),
        }
    }

    fn status(&self) -> (ResourceState, String) {
        let state = if self.held.load(Ordering::SeqCst) {
            ResourceState::Up
        } else {
            ResourceState::Down
        };
        let to = self.mailer.recipients(&self.to).join(", ");
        let last = lock(&self.last).clone();
        let detail = match (to.is_empty(), last.is_empty()) {
            (true, _) => "no recipients".to_string(),
            (false, true) => format!("to {to}"),
            (false, false) => format!("to {to}; last mail {last}"),
        };
        (state, detail)
    }

    /// Waits until the mails sent so far are out (or failed), at most until `deadline`.
    fn flush(&self, deadline: Instant) -> bool {
        loop {
            let mut sending = lock(&self.sending);
            sending.retain(|h| !h.is_finished());
            if sending.is_empty() {
                return true;
            }
            drop(sending);
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A poisoned lock only means another thread panicked mid-call; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace(['\n', '\r'], " ")
}

pub struct ResourceGroup {
    resources: Vec<Resource>,
    /// Serialises acquire, release, cleanup and restarts.
    op: Mutex<()>,
}

impl ResourceGroup {
    pub fn new(ha: &HaConfig, node: &str, mailer: Arc<Mailer>) -> Result<ResourceGroup> {
        let mut resources = Vec::with_capacity(ha.resources.len());
        for (i, r) in ha.resources.iter().enumerate() {
            let resource = match r {
                ResourceConfig::Ipaddr { address, interface } => Resource::Ipaddr(
                    IpAddrResource::new(address, interface.clone())
                        .with_context(|| format!("ha.resources[{i}].address"))?,
                ),
                ResourceConfig::Service {
                    name,
                    manager,
                    start,
                    stop,
                    status,
                    timeout,
                } => {
                    if name.is_empty() || name.contains('/') {
                        bail!("ha.resources[{i}].name: `{name}` is not a service name");
                    }
                    Resource::Service(ServiceResource::new(
                        ServiceSpec {
                            name: name.clone(),
                            manager: *manager,
                            start: start.clone(),
                            stop: stop.clone(),
                            status: status.clone(),
                            timeout: *timeout,
                        },
                        ha.init_dir.clone(),
                    ))
                }
                ResourceConfig::Mailto { to, subject } => Resource::Mailto(MailtoResource {
                    node: node.to_string(),
                    to: to.clone(),
                    subject: subject.clone(),
                    mailer: mailer.clone(),
                    held: AtomicBool::new(false),
                    last: Arc::new(Mutex::new(String::new())),
                    sending: Mutex::new(Vec::new()),
                }),
            };
            resources.push(resource);
        }
        Ok(ResourceGroup {
            resources,
            op: Mutex::new(()),
        })
    }

    /// Starts every resource in order. On the first failure stops what was started, the
    /// failed one included (a start that timed out may have left half a service behind), in
    /// reverse, and returns one line naming the failed resource and its cause.
    pub fn acquire(&self, reason: &str) -> Result<()> {
        let _op = lock(&self.op);
        tracing::info!("acquiring the resource group: {reason}");
        for (i, r) in self.resources.iter().enumerate() {
            let t0 = Instant::now();
            let Err(e) = r.start(reason) else {
                tracing::info!("started {} in {:?}", r.label(), t0.elapsed());
                continue;
            };
            let name = r.name();
            let cause = one_line(&e);
            tracing::error!("cannot start {name}: {cause}; stopping the group again");
            let why = format!("start of {name} failed");
            let mut not_stopped = Vec::new();
            for (j, done) in self.resources[..=i].iter().enumerate().rev() {
                if let Err(e) = done.stop(&why) {
                    let n = done.name();
                    tracing::warn!("rollback: cannot stop {n}: {}", one_line(&e));
                    if j != i {
                        not_stopped.push(n);
                    }
                }
            }
            if not_stopped.is_empty() {
                bail!("cannot start {name}: {cause}");
            }
            bail!(
                "cannot start {name}: {cause} (and could not stop again: {})",
                not_stopped.join(", ")
            );
        }
        Ok(())
    }

    /// Stops every resource in reverse order, going on past failures; the error lists each
    /// resource that did not stop, with its cause.
    pub fn release(&self, reason: &str) -> Result<()> {
        let _op = lock(&self.op);
        tracing::info!("releasing the resource group: {reason}");
        let mut failed = Vec::new();
        for r in self.resources.iter().rev() {
            match r.stop(reason) {
                Ok(()) => tracing::info!("stopped {}", r.label()),
                Err(e) => {
                    let line = format!("{}: {}", r.name(), one_line(&e));
                    tracing::error!("cannot stop {line}");
                    failed.push(line);
                }
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(anyhow!("cannot stop {}", failed.join("; ")))
        }
    }

    /// Release without mail, for start-up and for the guard after the daemon was killed:
    /// whatever a previous run left behind goes away. Never fails; problems are logged.
    pub fn cleanup(&self) {
        let _op = lock(&self.op);
        for r in self.resources.iter().rev() {
            let result = match r {
                Resource::Mailto(m) => {
                    m.held.store(false, Ordering::SeqCst);
                    Ok(())
                }
                other => other.stop("cleanup"),
            };
            if let Err(e) = result {
                tracing::warn!("cleanup: cannot stop {}: {}", r.name(), one_line(&e));
            }
        }
    }

    /// Every resource's state, in group order.
    pub fn status(&self) -> Vec<ResourceStatus> {
        self.resources.iter().map(Resource::status).collect()
    }

    /// Stops and starts one service of the group (a monitor's attempt before failing over).
    /// A failed stop is logged and the start still tried; the start decides the result.
    pub fn restart_service(&self, name: &str) -> Result<()> {
        let service = self
            .resources
            .iter()
            .find_map(|r| match r {
                Resource::Service(s) if s.service_name() == name => Some(s),
                _ => None,
            })
            .ok_or_else(|| anyhow!("`{name}` is not a service of the resource group"))?;
        let _op = lock(&self.op);
        tracing::info!("restarting {}", service.name());
        if let Err(e) = service.stop() {
            tracing::warn!("restart of {name}: stop failed: {}", one_line(&e));
        }
        service
            .start()
            .map_err(|e| anyhow!("cannot restart {}: {}", service.name(), one_line(&e)))
    }

    /// Waits up to `timeout` for the takeover/release mails sent so far; true when all are
    /// out (or failed). For a daemon about to exit, and for tests.
    pub fn flush_mail(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.resources.iter().all(|r| match r {
            Resource::Mailto(m) => m.flush(deadline),
            _ => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{MailConfig, ServiceManager};
    use std::path::Path;

    fn service(name: &str, log: &Path, fail_start: bool) -> ResourceConfig {
        let log = log.display();
        let start = if fail_start {
            format!("echo start {name} >> {log}; echo {name} is broken >&2; exit 1")
        } else {
            format!("echo start {name} >> {log}")
        };
        ResourceConfig::Service {
            name: name.into(),
            manager: ServiceManager::Command,
            start: Some(start),
            stop: Some(format!("echo stop {name} >> {log}")),
            status: Some(format!("grep -q 'start {name}' {log}")),
            timeout: Duration::from_secs(5),
        }
    }

    fn group(resources: Vec<ResourceConfig>) -> ResourceGroup {
        let ha = HaConfig {
            resources,
            ..HaConfig::default()
        };
        let mailer = Arc::new(Mailer::new(&MailConfig::default(), "servera"));
        ResourceGroup::new(&ha, "servera", mailer).unwrap()
    }

    fn log_lines(log: &Path) -> Vec<String> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn starts_in_order_and_stops_in_reverse() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let g = group(vec![
            service("a", &log, false),
            service("b", &log, false),
            service("c", &log, false),
        ]);
        g.acquire("test").unwrap();
        let st = g.status();
        assert_eq!(st[0].name, "service a (command)");
        assert!(st.iter().all(|s| s.state == ResourceState::Up), "{st:?}");
        g.release("test").unwrap();
        assert_eq!(
            log_lines(&log),
            ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
        );
    }

    #[test]
    fn failed_start_rolls_back_in_reverse() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let g = group(vec![
            service("a", &log, false),
            service("b", &log, false),
            service("c", &log, true),
            service("d", &log, false),
        ]);
        let e = g.acquire("test").unwrap_err().to_string();
        assert_eq!(
            e,
            "cannot start service c (command): start exit 1: c is broken"
        );
        // The failed one is stopped too (it may be half up); d is never touched.
        assert_eq!(
            log_lines(&log),
            ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
        );
    }

    #[test]
    fn release_goes_on_past_failures_and_lists_them() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut b = service("b", &log, false);
        if let ResourceConfig::Service { stop, .. } = &mut b {
            *stop = Some("echo still busy; exit 2".into());
        }
        let g = group(vec![
            service("a", &log, false),
            b,
            service("c", &log, false),
        ]);
        let e = g.release("test").unwrap_err().to_string();
        assert_eq!(
            e,
            "cannot stop service b (command): stop exit 2: still busy"
        );
        assert_eq!(log_lines(&log), ["stop c", "stop a"]);
    }

    #[test]
    fn restart_service_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let g = group(vec![service("a", &log, false), service("b", &log, false)]);
        g.restart_service("b").unwrap();
        assert_eq!(log_lines(&log), ["stop b", "start b"]);
        let e = g.restart_service("zz").unwrap_err().to_string();
        assert!(e.contains("`zz` is not a service"), "{e}");
    }

    #[test]
    fn cleanup_stops_silently() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let mut b = service("b", &log, false);
        if let ResourceConfig::Service { stop, .. } = &mut b {
            *stop = Some("exit 1".into());
        }
        let g = group(vec![
            service("a", &log, false),
            b,
            ResourceConfig::Mailto {
                to: vec!["ops@example.org".into()],
                subject: "X".into(),
            },
        ]);
        g.cleanup();
        assert_eq!(log_lines(&log), ["stop a"]);
        let mail = &g.status()[2];
        assert_eq!(mail.name, "mailto");
        assert_eq!(mail.state, ResourceState::Down);
        assert_eq!(mail.detail, "to ops@example.org", "no mail was attempted");
    }

    #[test]
    fn mail_failure_does_not_fail_acquire() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let ha = HaConfig {
            resources: vec![
                ResourceConfig::Mailto {
                    to: vec!["ops@example.org".into()],
                    subject: "Cluster_Failover_Event".into(),
                },
                service("a", &log, false),
            ],
            ..HaConfig::default()
        };
        // Port 9 on loopback: nothing listens, the connection is refused at once.
        let mail = MailConfig {
            smtp_port: 9,
            timeout: Duration::from_secs(2),
            ..MailConfig::default()
        };
        let g =
            ResourceGroup::new(&ha, "servera", Arc::new(Mailer::new(&mail, "servera"))).unwrap();
        g.acquire("peer dead").unwrap();
        assert!(g.flush_mail(Duration::from_secs(5)));
        let st = &g.status()[0];
        assert_eq!(st.state, ResourceState::Up);
        assert!(
            st.detail.contains(
                "failed \"Cluster_Failover_Event servera took over the group: peer dead\""
            ),
            "{}",
            st.detail
        );
        assert_eq!(log_lines(&log), ["start a"]);
    }

    #[test]
    fn bad_address_is_rejected_with_its_key() {
        let ha = HaConfig {
            resources: vec![ResourceConfig::Ipaddr {
                address: "10.0.0.1".into(),
                interface: None,
            }],
            ..HaConfig::default()
        };
        let mailer = Arc::new(Mailer::new(&MailConfig::default(), "a"));
        let e = ResourceGroup::new(&ha, "a", mailer).err().unwrap();
        assert!(
            format!("{e:#}").starts_with("ha.resources[0].address"),
            "{e:#}"
        );
    }
}
