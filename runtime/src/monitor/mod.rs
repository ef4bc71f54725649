//! Service monitors with mon's semantics: periodic checks with random skew, consecutive
//! failures, alerts after `alertafter` and at most `numalerts` per episode, alert periods —
//! plus restart-before-failover and group-aware scheduling.
//!
//! `schedule` is the pure core (clock and randomness passed in), `check` does the probing,
//! `runner` drives one schedule per monitor on tokio and carries out the decisions.

pub mod check;
pub mod runner;
pub mod schedule;

pub use check::{describe, CheckResult};
pub use runner::{AlertSink, MonitorEvent, MonitorStatus, Monitors, Period};
pub use schedule::{Decision, Rules, Schedule, State};
