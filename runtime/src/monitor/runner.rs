//! Runs every monitor as a task on a tokio runtime, each driving its own [`Schedule`], and
//! carries out what the schedules decide: checks, restarts, alert chains, health.

use std::collections::VecDeque;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::check::{self, CheckResult};
use super::schedule::{Decision, Rules, Schedule, State};
use crate::config::{AlertConfig, MonitorConfig};

/// How long an `exec` alert may run.
const ALERT_EXEC_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What the monitors tell the failover core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorEvent {
    /// A `failover` alert fired: hand the group to the peer. Sent by `always` monitors too,
    /// whether or not this master holds the group; the core decides what it means.
    Failover { monitor: String, detail: String },
    /// Whether every `always` monitor passes. Sent only on change; until the first event,
    /// this master counts as fit.
    Health { fit: bool },
}

/// The side effects the monitors need from the rest of the runtime.
pub trait AlertSink: Send + Sync + 'static {
    /// Sends a mail. `to` empty means the configured default recipients (`mail.to`).
    /// Blocking; called on the blocking pool.
    fn mail(&self, to: &[String], subject: &str, body: &str) -> Result<(), String>;
    /// Restarts a service of the group and returns once it is started. Blocking.
    fn restart(&self, service: &str) -> Result<(), String>;
}

/// mon's Time::Period, evaluated by the caller's parser: whether alerts may fire at a time.
pub type Period = Box<dyn Fn(SystemTime) -> bool + Send + Sync>;

/// One monitor as a status display shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MonitorStatus {
    pub name: String,
    /// e.g. `tcp localhost:3306`
    pub check: String,
    pub state: State,
    /// Unix seconds of the last finished check.
    pub last_check: Option<u64>,
    /// What the last check saw.
    pub detail: String,
    pub failures: u32,
    /// Alerts fired in the current failure episode.
    pub alerts_fired: u32,
    /// Milliseconds until the next check; `None` while paused or while a check runs.
    pub next_check_ms: Option<u64>,
}

/// The running monitors. Dropping this stops them.
pub struct Monitors {
    shared: Vec<Arc<Mutex<Shared>>>,
    tasks: Vec<JoinHandle<()>>,
}

/// What a monitor's task publishes for [`Monitors::status`].
struct Shared {
    status: MonitorStatus,
    next_due: Option<Instant>,
}

/// What all monitor tasks share.
struct Ctx {
    sink: Arc<dyn AlertSink>,
    events: mpsc::Sender<MonitorEvent>,
    node: String,
    /// Per monitor: fit (only `always` monitors ever turn false).
    fit: Mutex<Vec<bool>>,
}

impl Monitors {
    /// Starts one task per monitor on `handle`. `holding` says whether this master holds the
    /// group; `events` receives failover requests and health changes.
    pub fn spawn(
        handle: &tokio::runtime::Handle,
        monitors: Vec<(MonitorConfig, Option<Period>)>,
        sink: Arc<dyn AlertSink>,
        holding: watch::Receiver<bool>,
        events: mpsc::Sender<MonitorEvent>,
    ) -> Monitors {
        let node = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "unknown".into());
        let ctx = Arc::new(Ctx {
            sink,
            events,
            node,
            fit: Mutex::new(vec![true; monitors.len()]),
        });
        let base = Instant::now();
        let held = *holding.borrow();
        let mut shared = Vec::new();
        let mut tasks = Vec::new();
        for (index, (config, period)) in monitors.into_iter().enumerate() {
            let schedule = Schedule::new(
                Rules::from(&config),
                base.elapsed(),
                held,
                StdRng::from_entropy(),
            );
            let status = MonitorStatus {
                name: config.name.clone(),
                check: check::describe(&config.check),
                state: schedule.state(),
                last_check: None,
                detail: String::new(),
                failures: 0,
                alerts_fired: 0,
                next_check_ms: None,
            };
            let cell = Arc::new(Mutex::new(Shared {
                status,
                next_due: schedule.next_due().map(|d| base + d),
            }));
            let task = Task {
                index,
                config: Arc::new(config),
                period,
                ctx: ctx.clone(),
                holding: holding.clone(),
                shared: cell.clone(),
                base,
                schedule,
            };
            shared.push(cell);
            tasks.push(handle.spawn(task.run()));
        }
        Monitors { shared, tasks }
    }

    pub fn status(&self) -> Vec<MonitorStatus> {
        let now = Instant::now();
        self.shared
            .iter()
            .map(|cell| {
                let cell = cell.lock().unwrap();
                let mut status = cell.status.clone();
                status.next_check_ms = cell
                    .next_due
                    .map(|due| due.saturating_duration_since(now).as_millis() as u64);
                status
            })
            .collect()
    }
}

impl Drop for Monitors {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct Task {
    index: usize,
    config: Arc<MonitorConfig>,
    period: Option<Period>,
    ctx: Arc<Ctx>,
    holding: watch::Receiver<bool>,
    shared: Arc<Mutex<Shared>>,
    base: Instant,
    schedule: Schedule<StdRng>,
}

impl Task {
    async fn run(mut self) {
        // Once the sender is gone the last value stands; `changed` would only fail again.
        let mut watching = true;
        loop {
            self.publish();
            let due = self.schedule.next_due();
            let sleep = async {
                match due {
                    Some(d) => {
                        tokio::time::sleep_until(tokio::time::Instant::from_std(self.base + d))
                            .await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = self.holding.changed(), if watching => {
                    match changed {
                        Ok(()) => self.sync_holding(),
                        Err(_) => watching = false,
                    }
                }
                () = sleep => {
                    let decisions = self.schedule.poll(self.base.elapsed());
                    self.carry_out(decisions).await;
                }
            }
        }
    }

    /// Tells the schedule the latest holding state (a no-op when unchanged).
    fn sync_holding(&mut self) {
        let held = *self.holding.borrow_and_update();
        self.schedule.set_holding(self.base.elapsed(), held);
    }

    async fn carry_out(&mut self, decisions: Vec<Decision>) {
        let mut pending = VecDeque::from(decisions);
        while let Some(decision) = pending.pop_front() {
            match decision {
                Decision::RunCheck => {
                    self.publish();
                    let result = check::run(&self.config.check, self.config.timeout).await;
                    self.record(&result);
                    // A group lost while the check ran goes first, so that the result from a
                    // service we no longer hold is dropped.
                    self.sync_holding();
                    let inside = self
                        .period
                        .as_ref()
                        .is_none_or(|inside| inside(SystemTime::now()));
                    pending.extend(
                        self.schedule
                            .on_result(self.base.elapsed(), result.ok, inside),
                    );
                    // Status first: whoever reacts to an event may look at it.
                    self.publish();
                }
                Decision::Restart { service } => {
                    warn!(monitor = %self.config.name, %service,
                        "check failing; restarting the service before alerting");
                    let sink = self.ctx.sink.clone();
                    let name = service.clone();
                    let done = tokio::task::spawn_blocking(move || sink.restart(&name))
                        .await
                        .unwrap_or_else(|e| Err(format!("restart task: {e}")));
                    if let Err(e) = done {
                        warn!(monitor = %self.config.name, %service, "restart failed: {e}");
                    }
                    // The re-check is due at once; the main loop hands it out, after any
                    // change of holding that came meanwhile.
                }
                Decision::FireAlerts { failures, nth } => {
                    let detail = self.shared.lock().unwrap().status.detail.clone();
                    warn!(monitor = %self.config.name, failures, nth, %detail, "alerts fire");
                    tokio::spawn(fire(
                        self.ctx.clone(),
                        self.config.clone(),
                        detail,
                        failures,
                        nth,
                    ));
                }
                Decision::Recovered => {
                    info!(monitor = %self.config.name, "recovered");
                }
                Decision::Health { fit } => self.ctx.set_fit(self.index, fit),
            }
        }
    }

    fn record(&self, result: &CheckResult) {
        let mut cell = self.shared.lock().unwrap();
        cell.status.last_check = Some(unix_secs(SystemTime::now()));
        cell.status.detail = result.detail.clone();
    }

    fn publish(&self) {
        let mut cell = self.shared.lock().unwrap();
        cell.status.state = self.schedule.state();
        cell.status.failures = self.schedule.failures();
        cell.status.alerts_fired = self.schedule.alerts_fired();
        cell.next_due = self.schedule.next_due().map(|d| self.base + d);
    }
}

impl Ctx {
    /// Records one monitor's health and tells the core when the overall health changes.
    fn set_fit(&self, index: usize, fit: bool) {
        let mut all = self.fit.lock().unwrap();
        let before = all.iter().all(|f| *f);
        all[index] = fit;
        let after = all.iter().all(|f| *f);
        if before != after {
            info!(fit = after, "health changed");
            let _ = self.events.send(MonitorEvent::Health { fit: after });
        }
    }
}

/// Runs the alert chain of one firing, in configuration order. A failing alert is logged and
/// the chain goes on: a mail server that is down must not prevent the failover.
async fn fire(ctx: Arc<Ctx>, config: Arc<MonitorConfig>, detail: String, failures: u32, nth: u32) {
    let check = check::describe(&config.check);
    let summary = format!(
        "{}: {check} failed {failures} times in a row on {}: {detail}",
        config.name, ctx.node
    );
    for alert in &config.alerts {
        let (kind, result) = match alert {
            AlertConfig::Failover => (
                "failover",
                ctx.events
                    .send(MonitorEvent::Failover {
                        monitor: config.name.clone(),
                        detail: detail.clone(),
                    })
                    .map_err(|_| "nobody receives failover requests".to_string()),
            ),
            AlertConfig::Mail { subject, to } => {
                let body = format!(
                    "Monitor:  {}\nCheck:    {check}\nDetail:   {detail}\n\
                     Failures: {failures} in a row (alert {nth} of this episode)\n\
                     Node:     {}\nTime:     {}\n",
                    config.name,
                    ctx.node,
                    humantime::format_rfc3339_seconds(SystemTime::now()),
                );
                let sink = ctx.sink.clone();
                let (to, subject) = (to.clone(), subject.clone());
                let sent = tokio::task::spawn_blocking(move || sink.mail(&to, &subject, &body))
                    .await
                    .unwrap_or_else(|e| Err(format!("mail task: {e}")));
                ("mail", sent)
            }
            AlertConfig::Exec { command } => {
                let env = [
                    ("CM_MONITOR", config.name.as_str()),
                    ("CM_DETAIL", detail.as_str()),
                    ("CM_SUMMARY", summary.as_str()),
                ];
                let r = check::run_command(command, &env, ALERT_EXEC_TIMEOUT).await;
                ("exec", if r.ok { Ok(()) } else { Err(r.detail) })
            }
        };
        if let Err(e) = result {
            warn!(monitor = %config.name, alert = kind, "alert failed: {e}");
        }
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
