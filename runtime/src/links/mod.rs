//! Heartbeat links: UDP (unicast, multicast, broadcast) and serial lines.
//!
//! Each link has a receiver thread that reads, authenticates and decodes what arrives and
//! hands authentic heartbeats to the engine; anything else is counted and dropped there, so a
//! flood of forged packets costs the link's thread, never the engine's. Sending never blocks:
//! a UDP send is one non-blocking syscall, and a serial frame goes through a small queue that
//! drops when the line is stuck (a stuck line is a dead link; the next heartbeat supersedes).

pub mod frame;
mod serial;
mod udp;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use serde::Serialize;

use crate::config::LinkConfig;
use crate::engine::Input;
use crate::wire::{Key, Reject};

/// Per-link counters, shared between the link's threads and the status report.
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub oversized: AtomicU64,
    pub malformed: AtomicU64,
    pub bad_auth: AtomicU64,
    pub replayed: AtomicU64,
    pub unknown_sender: AtomicU64,
    pub reflected: AtomicU64,
    /// The serial device is open (always true for UDP once bound).
    pub open: std::sync::atomic::AtomicBool,
}

impl LinkCounters {
    pub fn count(&self, reject: Reject) {
        let c = match reject {
            Reject::Oversized => &self.oversized,
            Reject::Malformed => &self.malformed,
            Reject::BadAuth => &self.bad_auth,
            Reject::Replayed => &self.replayed,
            Reject::UnknownSender => &self.unknown_sender,
            Reject::Reflected => &self.reflected,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CounterSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CounterSnapshot {
            received: g(&self.received),
            sent: g(&self.sent),
            send_errors: g(&self.send_errors),
            dropped: DroppedSnapshot {
                oversized: g(&self.oversized),
                malformed: g(&self.malformed),
                bad_auth: g(&self.bad_auth),
                replayed: g(&self.replayed),
                unknown_sender: g(&self.unknown_sender),
                reflected: g(&self.reflected),
            },
            open: self.open.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CounterSnapshot {
    pub received: u64,
    pub sent: u64,
    pub send_errors: u64,
    pub dropped: DroppedSnapshot,
    pub open: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct DroppedSnapshot {
    pub oversized: u64,
    pub malformed: u64,
    pub bad_auth: u64,
    pub replayed: u64,
    pub unknown_sender: u64,
    pub reflected: u64,
}

/// The sending half of a link, owned by the engine.
pub trait LinkSender: Send {
    /// Sends one encoded heartbeat; never blocks.
    fn send(&mut self, message: &[u8]);
}

/// Everything a receiver needs to judge what arrives.
#[derive(Clone)]
pub struct ReceiveContext {
    pub key: Key,
    pub node: String,
    pub peer: String,
    pub to_engine: SyncSender<Input>,
    /// Whether receiver threads ask for real-time priority.
    pub realtime: bool,
}

impl ReceiveContext {
    /// Authenticates one message and passes it on; counts it when refused.
    pub(crate) fn accept(&self, link: usize, bytes: &[u8], counters: &LinkCounters) {
        match crate::wire::decode(bytes, &self.key) {
            Ok(beat) if beat.node == self.node => counters.count(Reject::Reflected),
            Ok(beat) if beat.node != self.peer => counters.count(Reject::UnknownSender),
            Ok(beat) => {
                counters.received.fetch_add(1, Ordering::Relaxed);
                // A full queue means the engine is far behind; dropping is right, the next
                // heartbeat carries the same state.
                let _ = self.to_engine.try_send(Input::Heard { link, beat });
            }
            Err(reject) => counters.count(reject),
        }
    }
}

/// An opened link: its label, its counters and its sender.
pub struct OpenLink {
    pub label: String,
    pub counters: Arc<LinkCounters>,
    pub sender: Box<dyn LinkSender>,
}

/// Opens a link and starts its receiver thread. `index` is the link's number for the engine.
pub fn open(index: usize, config: &LinkConfig, ctx: ReceiveContext) -> anyhow::Result<OpenLink> {
    let counters = Arc::new(LinkCounters::default());
    let sender: Box<dyn LinkSender> = match config {
        LinkConfig::Serial { device, baud } => Box::new(serial::open(
            index,
            device.clone(),
            *baud,
            ctx,
            counters.clone(),
        )?),
        udp_like => Box::new(udp::open(index, udp_like, ctx, counters.clone())?),
    };
    Ok(OpenLink {
        label: config.label(),
        counters,
        sender,
    })
}

/// Asks the kernel to run the calling thread before ordinary work (SCHED_FIFO), so a
/// saturated machine still hears and sends heartbeats on time. Needs root (CAP_SYS_NICE).
pub fn make_realtime(what: &str) {
    let param = libc::sched_param { sched_priority: 50 };
    // SAFETY: plain syscall on the calling thread with a valid parameter block.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        tracing::warn!(
            "{what}: cannot get real-time priority ({}); heartbeats may be late under load",
            std::io::Error::last_os_error()
        );
    }
}
