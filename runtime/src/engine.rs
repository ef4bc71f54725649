//! The heartbeat engine: one thread that owns the failover core, sends heartbeats on every
//! link at each keepalive, feeds the core what the links, the pinger, the monitors and the
//! resource worker report, and hands the core's actions to the threads that carry them out.
//!
//! Nothing on this thread blocks on I/O: sends are non-blocking, starting and stopping the
//! group, fencing and persisting generations run on the worker thread, alerts (log lines and
//! mail) on the alert thread. With real-time priority and locked memory the engine keeps its
//! rhythm on a saturated machine.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::core::{Action, AdminCommand, Alert, Core, CoreStatus, Event, Role};
use crate::links::{CounterSnapshot, OpenLink};
use crate::wire::{self, Flags, Heartbeat, Key, ReplayFilter, Verdict};

pub enum Input {
    /// An authentic heartbeat from the peer (links check the HMAC and the sender's name).
    Heard {
        link: usize,
        beat: Heartbeat,
    },
    Core(Event),
    Admin {
        cmd: AdminCommand,
        reply: Sender<Result<String, String>>,
    },
    Status {
        reply: Sender<EngineStatus>,
    },
    /// Orderly stop: release the group if held, tell the peer, end the thread.
    Stop {
        reply: Sender<()>,
    },
}

/// Work the engine hands to the worker thread; each answers with an `Input::Core` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job {
    Acquire {
        reason: String,
        data_gen: u64,
    },
    Release {
        reason: String,
    },
    Fence,
    /// Persist the newest peer boot generation (no answer).
    SavePeerGen(u64),
}

#[derive(Debug, Clone, Serialize)]
pub struct LinkReport {
    pub label: String,
    pub up: bool,
    pub last_heard_ms: Option<u64>,
    #[serde(flatten)]
    pub counters: CounterSnapshot,
}

#[derive(Debug, Clone, Serialize)]
pub struct EngineStatus {
    #[serde(flatten)]
    pub core: CoreStatus,
    pub boot_gen: u64,
    pub keepalive_ms: u64,
    pub deadtime_ms: u64,
    pub links: Vec<LinkReport>,
}

pub struct Engine {
    pub core: Core,
    pub key: Key,
    pub node: String,
    pub boot_gen: u64,
    pub keepalive: Duration,
    pub deadtime: Duration,
    pub links: Vec<OpenLink>,
    pub replay: ReplayFilter,
    pub jobs: Sender<Job>,
    pub alerts: Sender<Alert>,
    /// Told whenever "this master holds the group" changes (monitors pause on standby).
    pub on_holding: Box<dyn FnMut(bool) + Send>,
    /// The instant the core's clock counts from.
    pub origin: Instant,
}

impl Engine {
    pub fn run(mut self, inputs: Receiver<Input>) {
        let mut seq: u64 = 0;
        let mut next_send = Instant::now();
        let mut holding = false;
        (self.on_holding)(false);
        loop {
            let now = self.now();
            let deadline = self.origin + self.core.next_deadline(now);
            let wake = deadline.min(next_send);
            let timeout = wake.saturating_duration_since(Instant::now());
            let mut send_now = false;
            let actions = match inputs.recv_timeout(timeout) {
                Ok(Input::Heard { link, beat }) => self.heard(link, beat),
                Ok(Input::Core(event)) => self.core.handle(self.now(), event),
                Ok(Input::Admin { cmd, reply }) => {
                    let (answer, actions) = self.core.admin(self.now(), cmd);
                    let _ = reply.send(answer);
                    actions
                }
                Ok(Input::Status { reply }) => {
                    let _ = reply.send(self.status());
                    Vec::new()
                }
                Ok(Input::Stop { reply }) => {
                    self.stop(&inputs, &mut seq);
                    let _ = reply.send(());
                    return;
                }
                Err(RecvTimeoutError::Timeout) => self.core.handle(self.now(), Event::Tick),
                Err(RecvTimeoutError::Disconnected) => return,
            };
            for action in actions {
                match action {
                    Action::SendNow => send_now = true,
                    Action::Acquire { reason, data_gen } => {
                        let _ = self.jobs.send(Job::Acquire { reason, data_gen });
                    }
                    Action::Release { reason } => {
                        let _ = self.jobs.send(Job::Release { reason });
                    }
                    Action::Fence => {
                        let _ = self.jobs.send(Job::Fence);
                    }
                    Action::Alert(alert) => {
                        let _ = self.alerts.send(alert);
                    }
                }
            }
            let now_holding = self.core.role() == Role::Active;
            if now_holding != holding {
                holding = now_holding;
                (self.on_holding)(holding);
            }
            if send_now || Instant::now() >= next_send {
                seq += 1;
                self.send(seq, None);
                next_send = Instant::now() + self.keepalive;
            }
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn heard(&mut self, link: usize, beat: Heartbeat) -> Vec<Action> {
        let before = self.replay.newest_boot_gen();
        match self.replay.check(link, &beat) {
            Ok(verdict) => {
                let newest = self.replay.newest_boot_gen();
                if newest > before {
                    let _ = self.jobs.send(Job::SavePeerGen(newest));
                }
                self.core.handle(
                    self.now(),
                    Event::Heard {
                        link,
                        beat,
                        fresh: verdict == Verdict::Fresh,
                    },
                )
            }
            Err(reject) => {
                if let Some(l) = self.links.get(link) {
                    l.counters.count(reject);
                }
                Vec::new()
            }
        }
    }

    fn send(&mut self, seq: u64, override_state: Option<(Role, Flags)>) {
        let (role, flags, data_gen) = self.core.outgoing(self.now());
        let (role, flags) = override_state.unwrap_or((role, flags));
        let beat = Heartbeat {
            node: self.node.clone(),
            role,
            flags,
            boot_gen: self.boot_gen,
            seq,
            data_gen,
            keepalive_ms: u32::try_from(self.keepalive.as_millis()).unwrap_or(u32::MAX),
        };
        let bytes = wire::encode(&beat, &self.key);
        for l in &mut self.links {
            l.sender.send(&bytes);
        }
    }

    /// Releases the group if held, then tells the peer we are standby and hand over, so it
    /// takes over at once instead of after deadtime.
    fn stop(&mut self, inputs: &Receiver<Input>, seq: &mut u64) {
        let role = self.core.role();
        if role.holds() {
            let _ = self.jobs.send(Job::Release {
                reason: "clustermaker is stopping".into(),
            });
            let until = Instant::now() + Duration::from_secs(300);
            // Keep heartbeating while the group stops, so the peer does not declare us dead
            // and start the group while ours still runs.
            loop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                *seq += 1;
                let (_, flags, _) = self.core.outgoing(self.now());
                self.send(*seq, Some((Role::Releasing, flags)));
                match inputs.recv_timeout(self.keepalive.min(left)) {
                    Ok(Input::Core(Event::ReleaseDone { .. })) => break,
                    Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        let (_, mut flags, _) = self.core.outgoing(self.now());
        flags.handover = true;
        for _ in 0..3 {
            *seq += 1;
            self.send(*seq, Some((Role::Standby, flags)));
        }
    }

    fn status(&self) -> EngineStatus {
        let core = self.core.status(self.now());
        let links = self
            .links
            .iter()
            .zip(core.links.iter())
            .map(|(l, s)| LinkReport {
                label: l.label.clone(),
                up: s.up,
                last_heard_ms: s.last_heard_ms,
                counters: l.counters.snapshot(),
            })
            .collect();
        EngineStatus {
            core,
            boot_gen: self.boot_gen,
            keepalive_ms: self.keepalive.as_millis() as u64,
            deadtime_ms: self.deadtime.as_millis() as u64,
            links,
        }
    }
}
