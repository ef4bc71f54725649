//! The failover core: a pure state machine. Events and the time come in, actions go out; it
//! never touches a socket, a process or a disk, so every decision can be replayed in a test
//! (see `scenarios.rs`, the table of cases that runs as unit tests).
//!
//! Rules, in words:
//! - A master starts as `Starting`, holding nothing, and listens for the peer for `initdead`.
//!   Hearing it, it becomes `Standby`; not hearing it, it acts as if the peer were dead.
//! - The peer is dead only when every link has been silent for `deadtime`.
//! - A standby whose peer is dead takes the group: unless it reaches none of the ping nodes
//!   (then it is probably the isolated one), and after fencing the peer when fencing is set.
//! - An active master that loses the peer and reaches no ping node releases the group: it is
//!   the isolated side, and the other one takes over.
//! - No auto-failback: a returning master sees the active peer and stays standby, whatever its
//!   persisted state says (or does not say, after a reinstall). With `auto_failback`, the
//!   active hands the group back to the preferred master once that one is up and fit.
//! - When both are standby (cluster start, a handover that nobody took), one rule picks the
//!   holder: fit before unfit, reaching the ping nodes before not, then (unless
//!   `auto_failback`, where the preferred master wins) the higher data generation, then the
//!   preferred master, then the lower name.
//! - When both hold the group (a healed partition), the same order picks who keeps it; the
//!   other releases it and an alert says so.
//! - The data generation rises at every takeover above both masters' values, so it names the
//!   master whose data is newest; replication uses it to choose the direction.

#[cfg(test)]
mod scenarios;

use std::time::Duration;

use serde::Serialize;

pub use crate::wire::WireRole as Role;
use crate::wire::{Flags, Heartbeat};

/// Time since an arbitrary origin (the engine's start); the only clock the core knows.
pub type Now = Duration;

#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub node: String,
    pub peer: String,
    pub preferred: Option<String>,
    pub keepalive: Duration,
    pub warntime: Duration,
    pub deadtime: Duration,
    pub initdead: Duration,
    pub auto_failback: bool,
    pub ping_configured: bool,
    pub fence_configured: bool,
    pub links: usize,
    pub failure_hold: Duration,
}

impl CoreConfig {
    /// How long a handover or a takeover request waits for the peer to act.
    fn request_timeout(&self) -> Duration {
        (self.deadtime * 4).max(Duration::from_secs(5))
    }
    fn fence_retry(&self) -> Duration {
        (self.deadtime * 4).max(Duration::from_secs(5))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Time passed (the engine wakes at `next_deadline` and at every keepalive).
    Tick,
    /// An authentic, non-replayed heartbeat from the peer on `link`. `fresh` is false when
    /// another link already delivered the same message (it then only proves this link).
    Heard {
        link: usize,
        beat: Heartbeat,
        fresh: bool,
    },
    /// Result of the ping-node tiebreaker (only sent when ping nodes are configured).
    Ping {
        reachable: bool,
    },
    /// All `always` monitors pass (`true`) or one fails.
    Health {
        fit: bool,
    },
    /// A monitor of the group's services asks to hand the group over.
    MonitorFailover {
        monitor: String,
        detail: String,
    },
    AcquireDone {
        result: Result<(), String>,
    },
    ReleaseDone {
        result: Result<(), String>,
    },
    FenceDone {
        result: Result<(), String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminCommand {
    /// Give the group to the peer (`clustermaker standby`, Heartbeat's hb_standby).
    Standby,
    /// Take the group from the peer (`clustermaker takeover`, hb_takeover).
    Takeover,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Persist `data_gen`, then start the group in order; answer with `AcquireDone`.
    Acquire {
        reason: String,
        data_gen: u64,
    },
    /// Stop the group in reverse order; answer with `ReleaseDone`.
    Release {
        reason: String,
    },
    /// Run the fencing command against the peer; answer with `FenceDone`.
    Fence,
    /// The role or the flags changed: send a heartbeat now rather than at the next keepalive.
    SendNow,
    Alert(Alert),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alert {
    pub kind: AlertKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    Takeover,
    Release,
    SplitBrain,
    PeerDead,
    PeerBack,
    PeerRestarted,
    LinkDown,
    LinkUp,
    LinkLate,
    /// The peer is dead but this master may not take over (ping nodes, unfit).
    NoTakeover,
    /// Lost the peer and the ping nodes: released the group.
    Isolated,
    FenceFailed,
    AcquireFailed,
    ReleaseFailed,
    MonitorFailover,
    RequestExpired,
}

impl AlertKind {
    /// Events an administrator wants in the mailbox, not only in the log.
    pub fn is_mailworthy(self) -> bool {
        !matches!(
            self,
            AlertKind::LinkLate
                | AlertKind::LinkUp
                | AlertKind::PeerBack
                | AlertKind::PeerRestarted
        )
    }
}

#[derive(Debug, Clone)]
struct LinkHealth {
    last_heard: Option<Now>,
    up: bool,
    late_noted: bool,
}

#[derive(Debug, Clone)]
struct PeerView {
    beat: Heartbeat,
    /// When the peer became alive this time (for auto_failback's stability wait).
    alive_since: Now,
}

/// The last change of holder seen from here, with its cause.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Transition {
    pub at_ms: u64,
    pub what: String,
    pub cause: String,
}

#[derive(Debug, Clone)]
pub struct Core {
    cfg: CoreConfig,
    role: Role,
    role_since: Now,
    started_at: Now,
    links: Vec<LinkHealth>,
    peer: Option<PeerView>,
    peer_alive: bool,
    /// Whether the peer was ever alive before (the first contact is not a return).
    peer_was_alive: bool,
    data_gen: u64,
    ping_ok: bool,
    /// When the ping nodes last started answering: a master that comes out of isolation
    /// listens for the peer for `initdead`, as at start, before it may take over. The network
    /// is back, but the peer's heartbeats may need an ARP resolution or a serial reopen.
    ping_ok_since: Option<Now>,
    ping_ever_ok: bool,
    monitors_fit: bool,
    unfit_until: Option<Now>,
    /// We gave the group up and wait for the peer to take it, until this time.
    handover_until: Option<Now>,
    /// We asked the peer to release the group to us, until this time.
    takeover_until: Option<Now>,
    /// Whether the release under way is a handover to the peer.
    releasing_for_handover: bool,
    fence_retry_at: Option<Now>,
    /// Alerts that are said once per episode.
    no_takeover_noted: bool,
    split_brain_noted: bool,
    last_transition: Option<Transition>,
}

impl Core {
    /// A core that starts at `now` with the persisted data generation.
    pub fn new(cfg: CoreConfig, now: Now, data_gen: u64) -> Core {
        let links = vec![
            LinkHealth {
                last_heard: None,
                up: false,
                late_noted: false,
            };
            cfg.links
        ];
        Core {
            ping_ok: !cfg.ping_configured,
            ping_ok_since: None,
            ping_ever_ok: false,
            cfg,
            role: Role::Starting,
            role_since: now,
            started_at: now,
            links,
            peer: None,
            peer_alive: false,
            peer_was_alive: false,
            data_gen,
            monitors_fit: true,
            unfit_until: None,
            handover_until: None,
            takeover_until: None,
            releasing_for_handover: false,
            fence_retry_at: None,
            no_takeover_noted: false,
            split_brain_noted: false,
            last_transition: None,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn data_gen(&self) -> u64 {
        self.data_gen
    }

    pub fn peer_alive(&self) -> bool {
        self.peer_alive
    }

    /// Whether this master may hold the group: no recent failed start, `always` monitors pass.
    pub fn fit(&self, now: Now) -> bool {
        self.monitors_fit && self.unfit_until.is_none_or(|u| now >= u)
    }

    /// What the next heartbeat says about us.
    pub fn outgoing(&self, now: Now) -> (Role, Flags, u64) {
        let flags = Flags {
            handover: self.handover_until.is_some() || self.releasing_for_handover,
            takeover: self.takeover_until.is_some(),
            fit: self.fit(now),
            ping_ok: self.ping_ok,
        };
        (self.role, flags, self.data_gen)
    }

    /// The latest time the engine must call `handle(Tick)` by, if nothing else happens.
    pub fn next_deadline(&self, now: Now) -> Now {
        let mut next = now + self.cfg.keepalive;
        let mut consider = |t: Now| {
            if t > now && t < next {
                next = t;
            }
        };
        for l in &self.links {
            if let Some(h) = l.last_heard {
                if l.up {
                    consider(h + self.cfg.deadtime);
                }
                if !l.late_noted {
                    consider(h + self.cfg.warntime);
                }
            }
        }
        if self.role == Role::Starting {
            consider(self.started_at + self.cfg.initdead);
        }
        for t in [
            self.ping_ok_since.map(|t| t + self.cfg.initdead),
            self.unfit_until,
            self.handover_until,
            self.takeover_until,
            self.fence_retry_at,
        ]
        .into_iter()
        .flatten()
        {
            consider(t);
        }
        next
    }

    pub fn handle(&mut self, now: Now, event: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Tick => {}
            Event::Heard { link, beat, fresh } => self.heard(now, link, beat, fresh, &mut out),
            Event::Ping { reachable } => {
                if reachable != self.ping_ok {
                    self.ping_ok = reachable;
                    // The first answer after start is not a return from isolation.
                    self.ping_ok_since = (reachable && self.ping_ever_ok).then_some(now);
                    self.ping_ever_ok |= reachable;
                    self.no_takeover_noted = false;
                    out.push(Action::SendNow);
                }
            }
            Event::Health { fit } => {
                if fit != self.monitors_fit {
                    self.monitors_fit = fit;
                    out.push(Action::SendNow);
                }
            }
            Event::MonitorFailover { monitor, detail } => {
                self.monitor_failover(now, &monitor, &detail, &mut out)
            }
            Event::AcquireDone { result } => self.acquire_done(now, result, &mut out),
            Event::ReleaseDone { result } => self.release_done(now, result, &mut out),
            Event::FenceDone { result } => self.fence_done(now, result, &mut out),
        }
        self.reconcile(now, &mut out);
        out
    }

    /// An administrator's request; the text answers the command line.
    pub fn admin(&mut self, now: Now, cmd: AdminCommand) -> (Result<String, String>, Vec<Action>) {
        let mut out = Vec::new();
        self.reconcile(now, &mut out);
        let answer = match cmd {
            AdminCommand::Standby => self.admin_standby(now, &mut out),
            AdminCommand::Takeover => self.admin_takeover(now, &mut out),
        };
        self.reconcile(now, &mut out);
        (answer, out)
    }

    fn admin_standby(&mut self, now: Now, out: &mut Vec<Action>) -> Result<String, String> {
        match self.role {
            Role::Starting | Role::Standby => Ok("this master is already standby".into()),
            Role::Active => match self.peer_can_take() {
                Ok(()) => {
                    self.release(
                        now,
                        true,
                        "standby requested by the administrator".into(),
                        out,
                    );
                    Ok(format!(
                        "releasing the group; {} takes it over",
                        self.cfg.peer
                    ))
                }
                Err(why) => Err(format!("refused: {why}; the group stays here")),
            },
            other => Err(format!(
                "busy ({}); try again in a moment",
                role_name(other)
            )),
        }
    }

    fn admin_takeover(&mut self, now: Now, out: &mut Vec<Action>) -> Result<String, String> {
        match self.role {
            Role::Active => Ok("this master already holds the group".into()),
            Role::Starting | Role::Standby => {
                if !self.peer_alive {
                    return Err(format!(
                        "{} is not heard; this master takes over by itself when it may{}",
                        self.cfg.peer,
                        if self.ping_ok {
                            ""
                        } else {
                            " (no ping node answers)"
                        }
                    ));
                }
                self.takeover_until = Some(now + self.cfg.request_timeout());
                out.push(Action::SendNow);
                Ok(format!(
                    "asked {} to release the group to this master",
                    self.cfg.peer
                ))
            }
            other => Err(format!(
                "busy ({}); try again in a moment",
                role_name(other)
            )),
        }
    }

    /// Why the peer cannot take the group now, if it cannot.
    fn peer_can_take(&self) -> Result<(), String> {
        let Some(p) = self.peer.as_ref().filter(|_| self.peer_alive) else {
            return Err(format!("{} is not alive", self.cfg.peer));
        };
        if !p.beat.flags.fit {
            return Err(format!("{} reports itself unfit", self.cfg.peer));
        }
        if matches!(p.beat.role, Role::Standby | Role::Starting) {
            Ok(())
        } else {
            Err(format!("{} is {}", self.cfg.peer, role_name(p.beat.role)))
        }
    }

    fn heard(
        &mut self,
        now: Now,
        link: usize,
        beat: Heartbeat,
        fresh: bool,
        out: &mut Vec<Action>,
    ) {
        let Some(l) = self.links.get_mut(link) else {
            return;
        };
        let heard_before = l.last_heard.is_some();
        l.last_heard = Some(now);
        l.late_noted = false;
        if !l.up {
            l.up = true;
            if heard_before {
                out.push(alert(
                    AlertKind::LinkUp,
                    format!("link {link} hears the peer again"),
                ));
            }
        }
        if !fresh {
            return;
        }
        let alive_since = match &self.peer {
            Some(old) if self.peer_alive => {
                if old.beat.boot_gen != beat.boot_gen {
                    out.push(alert(
                        AlertKind::PeerRestarted,
                        format!("{} restarted (generation {})", beat.node, beat.boot_gen),
                    ));
                }
                old.alive_since
            }
            _ => now,
        };
        self.peer = Some(PeerView { beat, alive_since });
    }

    fn monitor_failover(&mut self, now: Now, monitor: &str, detail: &str, out: &mut Vec<Action>) {
        if self.role != Role::Active {
            return;
        }
        match self.peer_can_take() {
            Ok(()) => {
                out.push(alert(
                    AlertKind::MonitorFailover,
                    format!(
                        "monitor {monitor} failed ({detail}): handing the group to {}",
                        self.cfg.peer
                    ),
                ));
                self.release(
                    now,
                    true,
                    format!("monitor {monitor} failed: {detail}"),
                    out,
                );
            }
            Err(why) => out.push(alert(
                AlertKind::MonitorFailover,
                format!("monitor {monitor} failed ({detail}) but the group stays here: {why}"),
            )),
        }
    }

    fn acquire_done(&mut self, now: Now, result: Result<(), String>, out: &mut Vec<Action>) {
        if self.role != Role::Acquiring {
            return;
        }
        match result {
            Ok(()) => {
                self.set_role(now, Role::Active, out);
                self.takeover_until = None;
                let cause = self
                    .last_transition
                    .as_ref()
                    .map(|t| t.cause.clone())
                    .unwrap_or_default();
                out.push(alert(
                    AlertKind::Takeover,
                    format!("{} holds the group: {cause}", self.cfg.node),
                ));
                self.note_transition(now, "took over", cause);
            }
            Err(e) => {
                out.push(alert(
                    AlertKind::AcquireFailed,
                    format!("the group failed to start here: {e}; handing it over"),
                ));
                self.unfit_until = Some(now + self.cfg.failure_hold);
                self.release(now, true, format!("start failed: {e}"), out);
            }
        }
    }

    fn release_done(&mut self, now: Now, result: Result<(), String>, out: &mut Vec<Action>) {
        if self.role != Role::Releasing {
            return;
        }
        if let Err(e) = result {
            out.push(alert(
                AlertKind::ReleaseFailed,
                format!("stopping the group left errors: {e}"),
            ));
        }
        if std::mem::take(&mut self.releasing_for_handover) {
            self.handover_until = Some(now + self.cfg.request_timeout());
        }
        self.set_role(now, Role::Standby, out);
    }

    fn fence_done(&mut self, now: Now, result: Result<(), String>, out: &mut Vec<Action>) {
        if self.role != Role::Fencing {
            return;
        }
        match result {
            Ok(()) => self.acquire(now, format!("{} fenced and silent", self.cfg.peer), out),
            Err(e) => {
                out.push(alert(
                    AlertKind::FenceFailed,
                    format!(
                        "fencing {} failed ({e}); not taking over, retrying",
                        self.cfg.peer
                    ),
                ));
                self.fence_retry_at = Some(now + self.cfg.fence_retry());
                self.set_role(now, Role::Standby, out);
            }
        }
    }

    /// Re-evaluates everything that depends on time and on the views of both sides.
    fn reconcile(&mut self, now: Now, out: &mut Vec<Action>) {
        self.update_links(now, out);
        self.expire_timers(now, out);
        if self.role == Role::Starting {
            let initdead_over = now >= self.started_at + self.cfg.initdead;
            if self.peer_alive || initdead_over {
                self.set_role(now, Role::Standby, out);
            } else {
                return;
            }
        }
        match self.role {
            Role::Standby => self.standby_rules(now, out),
            Role::Active => self.active_rules(now, out),
            Role::Starting | Role::Fencing | Role::Acquiring | Role::Releasing => {}
        }
    }

    fn update_links(&mut self, now: Now, out: &mut Vec<Action>) {
        for (i, l) in self.links.iter_mut().enumerate() {
            let Some(h) = l.last_heard else { continue };
            let silent = now.saturating_sub(h);
            if l.up && silent >= self.cfg.deadtime {
                l.up = false;
                out.push(alert(
                    AlertKind::LinkDown,
                    format!("link {i} silent for {} ms", silent.as_millis()),
                ));
            } else if l.up && !l.late_noted && silent >= self.cfg.warntime {
                l.late_noted = true;
                out.push(alert(
                    AlertKind::LinkLate,
                    format!("late heartbeat on link {i}: {} ms", silent.as_millis()),
                ));
            }
        }
        let alive = self.links.iter().any(|l| l.up);
        if alive != self.peer_alive {
            self.peer_was_alive |= self.peer_alive;
            self.peer_alive = alive;
            self.no_takeover_noted = false;
            self.split_brain_noted = false;
            if alive {
                if let Some(p) = &mut self.peer {
                    p.alive_since = now;
                }
            }
            if alive && self.peer_was_alive {
                out.push(alert(
                    AlertKind::PeerBack,
                    format!("{} is heard again", self.cfg.peer),
                ));
            } else if !alive {
                out.push(alert(
                    AlertKind::PeerDead,
                    format!(
                        "{} is dead: silent on every link for {} ms",
                        self.cfg.peer,
                        self.cfg.deadtime.as_millis()
                    ),
                ));
            }
        }
    }

    fn expire_timers(&mut self, now: Now, out: &mut Vec<Action>) {
        if self.unfit_until.is_some_and(|u| now >= u) {
            self.unfit_until = None;
            out.push(Action::SendNow);
        }
        if self.handover_until.is_some_and(|u| now >= u) {
            self.handover_until = None;
            out.push(alert(
                AlertKind::RequestExpired,
                format!("{} did not take the group over in time", self.cfg.peer),
            ));
        }
        if self.takeover_until.is_some_and(|u| now >= u) {
            self.takeover_until = None;
            out.push(alert(
                AlertKind::RequestExpired,
                format!("{} did not release the group in time", self.cfg.peer),
            ));
        }
        if self.fence_retry_at.is_some_and(|u| now >= u) {
            self.fence_retry_at = None;
        }
        // A handover is done once the peer holds the group.
        if self.peer_alive
            && self
                .peer
                .as_ref()
                .is_some_and(|p| matches!(p.beat.role, Role::Acquiring | Role::Active))
        {
            self.handover_until = None;
        }
    }

    fn standby_rules(&mut self, now: Now, out: &mut Vec<Action>) {
        if !self.peer_alive {
            return self.peer_dead_while_standby(now, out);
        }
        let p = self
            .peer
            .as_ref()
            .expect("alive implies heard")
            .beat
            .clone();
        if p.role.holds() || p.role == Role::Fencing {
            return;
        }
        // Both hold nothing.
        if self.handover_until.is_some() && !p.flags.handover {
            return; // we handed over: the peer takes it (or the request expires)
        }
        // A handover from the peer is ours to take, unless we handed over too: then the
        // start rule decides, as if nobody had asked.
        if p.flags.handover && self.handover_until.is_none() && self.fit(now) {
            return self.acquire(now, format!("{} handed the group over", p.node), out);
        }
        if p.flags.takeover && self.takeover_until.is_none() {
            return; // the peer asked for it and takes it
        }
        if self.takeover_until.is_some() {
            return self.acquire(now, "takeover requested by the administrator".into(), out);
        }
        if p.role == Role::Standby {
            if let Some(why) = self.wins_start(now, &p) {
                self.acquire(now, format!("both masters standby; {why}"), out);
            }
        }
    }

    fn peer_dead_while_standby(&mut self, now: Now, out: &mut Vec<Action>) {
        let cause = if self.peer.is_some() {
            format!(
                "{} silent on every link for {} ms",
                self.cfg.peer,
                self.cfg.deadtime.as_millis()
            )
        } else {
            format!(
                "{} not heard within initdead ({} ms)",
                self.cfg.peer,
                self.cfg.initdead.as_millis()
            )
        };
        if self
            .ping_ok_since
            .is_some_and(|t| now < t + self.cfg.initdead)
        {
            return; // just out of isolation: give the peer's heartbeats time to arrive
        }
        let blocker = if !self.ping_ok {
            Some("no ping node answers (this master may be the isolated one)".to_string())
        } else if !self.fit(now) {
            Some("this master is unfit (a recent start failed or a monitor fails)".to_string())
        } else if self.fence_retry_at.is_some() {
            Some("fencing failed; waiting to retry".to_string())
        } else {
            None
        };
        if let Some(why) = blocker {
            if !self.no_takeover_noted {
                self.no_takeover_noted = true;
                out.push(alert(
                    AlertKind::NoTakeover,
                    format!("{cause}, but not taking over: {why}"),
                ));
            }
            return;
        }
        if self.cfg.fence_configured {
            self.set_role(now, Role::Fencing, out);
            self.note_transition(now, "fencing", cause);
            out.push(Action::Fence);
        } else {
            self.acquire(now, cause, out);
        }
    }

    fn active_rules(&mut self, now: Now, out: &mut Vec<Action>) {
        if !self.peer_alive {
            if !self.ping_ok {
                out.push(alert(
                    AlertKind::Isolated,
                    format!(
                        "{} and every ping node are unreachable: this master is isolated, releasing the group",
                        self.cfg.peer
                    ),
                ));
                self.release(
                    now,
                    false,
                    "isolated: peer and ping nodes unreachable".into(),
                    out,
                );
            }
            return;
        }
        let p = self.peer.as_ref().expect("alive implies heard");
        let beat = p.beat.clone();
        let alive_for = now.saturating_sub(p.alive_since);
        if matches!(beat.role, Role::Acquiring | Role::Active) {
            let keeps_here = self.wins_keep(&beat);
            if !self.split_brain_noted || !keeps_here.0 {
                self.split_brain_noted = true;
                let text = if keeps_here.0 {
                    format!(
                        "both masters hold the group; this one keeps it ({}), {} releases",
                        keeps_here.1, beat.node
                    )
                } else {
                    format!(
                        "both masters hold the group; {} keeps it ({}), releasing here",
                        beat.node, keeps_here.1
                    )
                };
                out.push(alert(AlertKind::SplitBrain, text));
            }
            if !keeps_here.0 {
                self.release(
                    now,
                    false,
                    format!("split brain resolved in favour of {}", beat.node),
                    out,
                );
            }
            return;
        }
        if !matches!(beat.role, Role::Standby | Role::Starting) || !beat.flags.fit {
            return;
        }
        if beat.flags.takeover {
            return self.release(
                now,
                true,
                format!("{} asked to take the group over", beat.node),
                out,
            );
        }
        let failback = self.cfg.auto_failback
            && self.cfg.preferred.as_deref() == Some(beat.node.as_str())
            && beat.role == Role::Standby
            && !beat.flags.handover
            && alive_for >= self.cfg.deadtime;
        if failback {
            self.release(
                now,
                true,
                format!("auto_failback: returning the group to {}", beat.node),
                out,
            );
        }
    }

    /// Whether we take the group when both masters are standby; the reason when we do.
    fn wins_start(&self, now: Now, p: &Heartbeat) -> Option<String> {
        let (me_fit, peer_fit) = (self.fit(now), p.flags.fit);
        if me_fit != peer_fit {
            return me_fit.then(|| format!("{} is unfit", p.node));
        }
        if !me_fit {
            return None;
        }
        if self.ping_ok != p.flags.ping_ok {
            return self
                .ping_ok
                .then(|| format!("{} reaches no ping node", p.node));
        }
        if self.cfg.auto_failback {
            if let Some(pref) = &self.cfg.preferred {
                return (pref == &self.cfg.node).then(|| "this is the preferred master".into());
            }
        }
        let (won, why) = self.tiebreak(p);
        won.then_some(why)
    }

    /// Whether we keep the group when both hold it, and why.
    fn wins_keep(&self, p: &Heartbeat) -> (bool, String) {
        if self.ping_ok != p.flags.ping_ok {
            return (self.ping_ok, "only one side reaches the ping nodes".into());
        }
        self.tiebreak(p)
    }

    fn tiebreak(&self, p: &Heartbeat) -> (bool, String) {
        if self.data_gen != p.data_gen {
            return (
                self.data_gen > p.data_gen,
                format!(
                    "newer data: generation {} against {}",
                    self.data_gen.max(p.data_gen),
                    self.data_gen.min(p.data_gen)
                ),
            );
        }
        if let Some(pref) = &self.cfg.preferred {
            if pref == &self.cfg.node || pref == &p.node {
                return (
                    pref == &self.cfg.node,
                    format!("{pref} is the preferred master"),
                );
            }
        }
        (
            self.cfg.node < p.node,
            "equal data; the lower name wins".into(),
        )
    }

    fn acquire(&mut self, now: Now, reason: String, out: &mut Vec<Action>) {
        let peer_gen = self.peer.as_ref().map_or(0, |p| p.beat.data_gen);
        self.data_gen = self.data_gen.max(peer_gen) + 1;
        self.handover_until = None;
        self.no_takeover_noted = false;
        self.set_role(now, Role::Acquiring, out);
        self.note_transition(now, "taking over", reason.clone());
        out.push(Action::Acquire {
            reason,
            data_gen: self.data_gen,
        });
    }

    fn release(&mut self, now: Now, handover: bool, reason: String, out: &mut Vec<Action>) {
        self.releasing_for_handover = handover;
        self.set_role(now, Role::Releasing, out);
        out.push(alert(
            AlertKind::Release,
            format!("{} releases the group: {reason}", self.cfg.node),
        ));
        self.note_transition(now, "released", reason.clone());
        out.push(Action::Release { reason });
    }

    fn set_role(&mut self, now: Now, role: Role, out: &mut Vec<Action>) {
        if self.role != role {
            self.role = role;
            self.role_since = now;
            out.push(Action::SendNow);
        }
    }

    fn note_transition(&mut self, now: Now, what: &str, cause: String) {
        self.last_transition = Some(Transition {
            at_ms: now.as_millis() as u64,
            what: what.into(),
            cause,
        });
    }

    pub fn status(&self, now: Now) -> CoreStatus {
        let ago = |t: Now| now.saturating_sub(t).as_millis() as u64;
        CoreStatus {
            node: self.cfg.node.clone(),
            role: self.role,
            role_for_ms: ago(self.role_since),
            data_gen: self.data_gen,
            fit: self.fit(now),
            ping_ok: self.ping_ok,
            handover_pending: self.handover_until.is_some(),
            takeover_pending: self.takeover_until.is_some(),
            peer: PeerStatus {
                name: self.cfg.peer.clone(),
                alive: self.peer_alive,
                role: self.peer.as_ref().map(|p| p.beat.role),
                data_gen: self.peer.as_ref().map(|p| p.beat.data_gen),
                boot_gen: self.peer.as_ref().map(|p| p.beat.boot_gen),
                fit: self.peer.as_ref().map(|p| p.beat.flags.fit),
                last_heard_ms: self
                    .links
                    .iter()
                    .filter_map(|l| l.last_heard)
                    .max()
                    .map(ago),
            },
            links: self
                .links
                .iter()
                .map(|l| LinkStatus {
                    up: l.up,
                    last_heard_ms: l.last_heard.map(ago),
                })
                .collect(),
            last_transition: self.last_transition.clone().map(|mut t| {
                t.at_ms = now.as_millis() as u64 - t.at_ms.min(now.as_millis() as u64);
                t
            }),
        }
    }
}

/// The core's part of `clustermaker status`. `last_transition.at_ms` is how long ago.
#[derive(Debug, Clone, Serialize)]
pub struct CoreStatus {
    pub node: String,
    pub role: Role,
    pub role_for_ms: u64,
    pub data_gen: u64,
    pub fit: bool,
    pub ping_ok: bool,
    pub handover_pending: bool,
    pub takeover_pending: bool,
    pub peer: PeerStatus,
    pub links: Vec<LinkStatus>,
    pub last_transition: Option<Transition>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub name: String,
    pub alive: bool,
    pub role: Option<Role>,
    pub data_gen: Option<u64>,
    pub boot_gen: Option<u64>,
    pub fit: Option<bool>,
    pub last_heard_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkStatus {
    pub up: bool,
    pub last_heard_ms: Option<u64>,
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Starting => "starting",
        Role::Standby => "standby",
        Role::Fencing => "fencing",
        Role::Acquiring => "acquiring",
        Role::Active => "active",
        Role::Releasing => "releasing",
    }
}

fn alert(kind: AlertKind, text: String) -> Action {
    Action::Alert(Alert { kind, text })
}
