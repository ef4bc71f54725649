//! The per-monitor state machine: when the next check runs and what a result leads to.
//!
//! Pure: the caller passes the time (a `Duration` since its own start) and the schedule holds
//! an injected random source for the skew. The rules are mon's:
//!
//! - a check runs every `interval`, lengthened or shortened by a uniform random amount up to
//!   `randskew`, so that many monitors started together do not probe in lockstep;
//! - failures are counted while consecutive; at `alertafter` of them the alerts fire, and again
//!   at every failing check after that, at most `numalerts` times per failure episode
//!   (0 = no limit), and only while the alert period says "inside";
//! - a success ends the episode: counters reset, and if anything failed, "recovered".
//!
//! Two additions of ours:
//!
//! - `restart`: the first time an episode reaches `alertafter` on the master that holds the
//!   group, the service is restarted and re-checked at once; only if that re-check fails do
//!   the alerts fire (Pacemaker's on-fail=restart before a move, which Heartbeat lacked);
//! - scope: an `active` monitor checks a service of the group, so it is paused (no checks, the
//!   episode forgotten) while this master does not hold the group, and after the group is
//!   acquired it waits one interval before its first check, giving the service time to start.
//!   An `always` monitor runs all the time and its state is a health signal: unfit from the
//!   moment its failures reach `alertafter` until it passes again.

use std::time::Duration;

use rand::RngCore;

use crate::config::{MonitorConfig, MonitorScope};

/// The parts of a [`MonitorConfig`] that decide timing and alerting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    pub interval: Duration,
    pub randskew: Duration,
    pub alertafter: u32,
    pub numalerts: u32,
    pub restart: Option<String>,
    pub scope: MonitorScope,
}

impl From<&MonitorConfig> for Rules {
    fn from(c: &MonitorConfig) -> Self {
        Rules {
            interval: c.interval,
            randskew: c.randskew,
            // mon treats `alertafter 0` like 1: the first failure alerts.
            alertafter: c.alertafter.max(1),
            numalerts: c.numalerts,
            restart: c.restart.clone(),
            scope: c.when,
        }
    }
}

/// What the caller must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run the check now and report with [`Schedule::on_result`].
    RunCheck,
    /// Run the alert chain. `failures` consecutive failures so far; this is the `nth` firing
    /// of the episode (from 1).
    FireAlerts { failures: u32, nth: u32 },
    /// Restart the service, then poll again: the re-check is due at once.
    Restart { service: String },
    /// A success after failures: the episode is over.
    Recovered,
    /// This monitor's health changed (`always` monitors only).
    Health { fit: bool },
}

/// How a monitor stands, for status displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// An `active` monitor while this master does not hold the group.
    Paused,
    /// No result yet since start or since the group was acquired.
    Unknown,
    Ok,
    Failing,
}

pub struct Schedule<R> {
    rules: Rules,
    rng: R,
    holding: bool,
    /// When the next check is due; `None` while paused or while a check runs.
    due: Option<Duration>,
    /// A check was handed out and its result is awaited; results that arrive otherwise (the
    /// monitor was paused meanwhile) are stale and ignored.
    checking: bool,
    last_ok: Option<bool>,
    failures: u32,
    /// Alerts fired in this episode.
    alerts: u32,
    /// The restart of this episode was asked for.
    restarted: bool,
    /// Health of an `always` monitor; starts fit, as nothing has failed yet.
    fit: bool,
}

impl<R: RngCore> Schedule<R> {
    /// A schedule starting at `now`. An `always` monitor checks at once, so health is known
    /// early; an `active` one starts paused or, when the group is already held, after the
    /// grace interval.
    pub fn new(rules: Rules, now: Duration, holding: bool, rng: R) -> Self {
        let due = match rules.scope {
            MonitorScope::Always => Some(now),
            MonitorScope::Active => holding.then_some(now + rules.interval),
        };
        Schedule {
            rules,
            rng,
            holding,
            due,
            checking: false,
            last_ok: None,
            failures: 0,
            alerts: 0,
            restarted: false,
            fit: true,
        }
    }

    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// When the caller should poll next; `None`: nothing to do until the holding changes or a
    /// running check reports.
    pub fn next_due(&self) -> Option<Duration> {
        self.due
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Alerts fired in the current episode.
    pub fn alerts_fired(&self) -> u32 {
        self.alerts
    }

    pub fn state(&self) -> State {
        if self.paused() {
            State::Paused
        } else if self.failures > 0 {
            State::Failing
        } else {
            match self.last_ok {
                None => State::Unknown,
                Some(_) => State::Ok,
            }
        }
    }

    fn paused(&self) -> bool {
        self.rules.scope == MonitorScope::Active && !self.holding
    }

    /// Hands out the check when it is due.
    pub fn poll(&mut self, now: Duration) -> Vec<Decision> {
        match self.due {
            Some(due) if now >= due && !self.checking => {
                self.due = None;
                self.checking = true;
                vec![Decision::RunCheck]
            }
            _ => Vec::new(),
        }
    }

    /// The result of the check handed out by [`poll`](Self::poll). `inside_period`: whether
    /// alerts may fire now.
    pub fn on_result(&mut self, now: Duration, ok: bool, inside_period: bool) -> Vec<Decision> {
        if !self.checking {
            return Vec::new();
        }
        self.checking = false;
        self.last_ok = Some(ok);
        let mut out = Vec::new();
        if ok {
            if self.failures > 0 {
                out.push(Decision::Recovered);
            }
            self.end_episode();
            if !self.fit {
                self.fit = true;
                out.push(Decision::Health { fit: true });
            }
            self.due = Some(now + self.skewed_interval());
            return out;
        }

        self.failures = self.failures.saturating_add(1);
        if self.failures < self.rules.alertafter {
            self.due = Some(now + self.skewed_interval());
            return out;
        }
        // Restarting a group service is only ours to do while we hold the group.
        if let Some(service) = &self.rules.restart {
            if !self.restarted && self.holding {
                self.restarted = true;
                self.due = Some(now);
                out.push(Decision::Restart {
                    service: service.clone(),
                });
                return out;
            }
        }
        if self.rules.scope == MonitorScope::Always && self.fit {
            self.fit = false;
            out.push(Decision::Health { fit: false });
        }
        let unlimited = self.rules.numalerts == 0;
        if inside_period && (unlimited || self.alerts < self.rules.numalerts) {
            self.alerts += 1;
            out.push(Decision::FireAlerts {
                failures: self.failures,
                nth: self.alerts,
            });
        }
        self.due = Some(now + self.skewed_interval());
        out
    }

    /// Whether this master holds the group now. Pauses or resumes an `active` monitor.
    pub fn set_holding(&mut self, now: Duration, holding: bool) -> Vec<Decision> {
        if holding == self.holding {
            return Vec::new();
        }
        self.holding = holding;
        if self.rules.scope == MonitorScope::Always {
            return Vec::new();
        }
        // Whatever happened before belongs to the service as it was run by the last holder
        // (or by nobody): start over.
        self.end_episode();
        self.checking = false;
        self.last_ok = None;
        self.due = holding.then_some(now + self.rules.interval);
        Vec::new()
    }

    fn end_episode(&mut self) {
        self.failures = 0;
        self.alerts = 0;
        self.restarted = false;
    }

    /// `interval ± uniform(randskew)`, like mon.
    fn skewed_interval(&mut self) -> Duration {
        let skew = self.rules.randskew.min(self.rules.interval);
        if skew.is_zero() {
            return self.rules.interval;
        }
        // Scale a 64-bit draw onto [0, 2·skew] (multiply-shift: no rejection loop, so any
        // source, even a constant one in tests, ends; the bias is below 2^-30).
        let nanos = u64::try_from(skew.as_nanos())
            .unwrap_or(u64::MAX)
            .min(u64::MAX / 2);
        let span = 2 * u128::from(nanos) + 1;
        let offset = (u128::from(self.rng.next_u64()) * span) >> 64;
        (self.rules.interval - skew) + Duration::from_nanos(offset as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::mock::StepRng;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const I: Duration = Duration::from_millis(1000);

    fn rules() -> Rules {
        Rules {
            interval: I,
            randskew: Duration::ZERO,
            alertafter: 1,
            numalerts: 0,
            restart: None,
            scope: MonitorScope::Always,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Polls at `now` expecting the check, then reports the result.
    fn check<R: RngCore>(s: &mut Schedule<R>, now: Duration, ok: bool) -> Vec<Decision> {
        assert_eq!(
            s.poll(now),
            vec![Decision::RunCheck],
            "check due at {now:?}"
        );
        s.on_result(now, ok, true)
    }

    /// Runs checks at each due time and returns every decision with the time it came.
    fn run<R: RngCore>(
        s: &mut Schedule<R>,
        results: &[bool],
        inside: bool,
    ) -> Vec<(Duration, Decision)> {
        let mut out = Vec::new();
        for &ok in results {
            let now = s.next_due().expect("a check is due");
            assert_eq!(s.poll(now), vec![Decision::RunCheck]);
            for d in s.on_result(now, ok, inside) {
                out.push((now, d));
            }
        }
        out
    }

    fn fired(ds: &[(Duration, Decision)]) -> usize {
        ds.iter()
            .filter(|(_, d)| matches!(d, Decision::FireAlerts { .. }))
            .count()
    }

    #[test]
    fn always_checks_at_start_then_every_interval() {
        let mut s = Schedule::new(rules(), ms(5), false, StepRng::new(0, 0));
        assert_eq!(s.state(), State::Unknown);
        assert_eq!(s.next_due(), Some(ms(5)));
        assert!(s.poll(ms(4)).is_empty());
        assert!(check(&mut s, ms(5), true).is_empty());
        assert_eq!(s.state(), State::Ok);
        assert_eq!(s.next_due(), Some(ms(1005)));
        assert!(s.poll(ms(1004)).is_empty());
        // Nothing is handed out twice while a check runs.
        assert_eq!(s.poll(ms(1005)), vec![Decision::RunCheck]);
        assert!(s.poll(ms(5000)).is_empty());
        assert_eq!(s.next_due(), None);
    }

    #[test]
    fn randskew_stays_within_bounds_and_covers_them() {
        let mut r = rules();
        r.randskew = ms(400);
        let mut s = Schedule::new(r, Duration::ZERO, false, StdRng::seed_from_u64(7));
        let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
        let mut now = Duration::ZERO;
        for _ in 0..10_000 {
            check(&mut s, now, true);
            let due = s.next_due().unwrap();
            let gap = due - now;
            assert!(gap >= ms(600) && gap <= ms(1400), "gap {gap:?}");
            lo = lo.min(gap);
            hi = hi.max(gap);
            now = due;
        }
        // Uniform over ±400 ms: 10 000 draws come close to both ends.
        assert!(lo < ms(610) && hi > ms(1390), "{lo:?}..{hi:?}");
    }

    #[test]
    fn randskew_extremes_of_the_random_source() {
        let mut r = rules();
        r.randskew = ms(400);
        let mut s = Schedule::new(r.clone(), Duration::ZERO, false, StepRng::new(0, 0));
        check(&mut s, Duration::ZERO, true);
        assert_eq!(s.next_due(), Some(ms(600)));
        let mut s = Schedule::new(r, Duration::ZERO, false, StepRng::new(u64::MAX, 0));
        check(&mut s, Duration::ZERO, true);
        assert_eq!(s.next_due(), Some(ms(1400)));
    }

    #[test]
    fn alerts_after_alertafter_consecutive_failures() {
        let mut r = rules();
        r.alertafter = 3;
        let mut s = Schedule::new(r, Duration::ZERO, true, StepRng::new(0, 0));
        // Two failures, a success (count resets), then three failures.
        let ds = run(&mut s, &[false, false, true, false, false], true);
        assert_eq!(fired(&ds), 0);
        assert_eq!(ds, vec![(ms(2000), Decision::Recovered)]);
        assert_eq!(s.state(), State::Failing);
        assert_eq!(s.failures(), 2);
        let ds = run(&mut s, &[false], true);
        assert_eq!(
            ds,
            vec![
                (ms(5000), Decision::Health { fit: false }),
                (
                    ms(5000),
                    Decision::FireAlerts {
                        failures: 3,
                        nth: 1
                    }
                )
            ]
        );
    }

    #[test]
    fn unlimited_alerts_fire_at_every_failing_check() {
        let mut s = Schedule::new(rules(), Duration::ZERO, true, StepRng::new(0, 0));
        let ds = run(&mut s, &[false; 5], true);
        assert_eq!(fired(&ds), 5);
        assert_eq!(s.alerts_fired(), 5);
    }

    #[test]
    fn numalerts_one_fires_once_per_episode() {
        let mut r = rules();
        r.numalerts = 1;
        let mut s = Schedule::new(r, Duration::ZERO, true, StepRng::new(0, 0));
        let ds = run(&mut s, &[false; 10], true);
        assert_eq!(fired(&ds), 1);
        assert_eq!(s.failures(), 10);
        // Recovery ends the episode; the next one alerts again, once.
        let ds = run(&mut s, &[true], true);
        assert_eq!(ds[0].1, Decision::Recovered);
        assert_eq!(s.alerts_fired(), 0);
        let ds = run(&mut s, &[false; 10], true);
        assert_eq!(fired(&ds), 1);
    }

    #[test]
    fn numalerts_limits_to_n() {
        let mut r = rules();
        r.numalerts = 2;
        r.alertafter = 2;
        let mut s = Schedule::new(r, Duration::ZERO, true, StepRng::new(0, 0));
        let ds = run(&mut s, &[false; 8], true);
        let nths: Vec<_> = ds
            .iter()
            .filter_map(|(_, d)| match d {
                Decision::FireAlerts { failures, nth } => Some((*failures, *nth)),
                _ => None,
            })
            .collect();
        assert_eq!(nths, vec![(2, 1), (3, 2)]);
    }

    #[test]
    fn outside_the_period_nothing_fires_and_nothing_is_used_up() {
        let mut r = rules();
        r.numalerts = 1;
        let mut s = Schedule::new(r, Duration::ZERO, true, StepRng::new(0, 0));
        let ds = run(&mut s, &[false; 4], false);
        assert_eq!(fired(&ds), 0);
        assert_eq!(s.failures(), 4);
        // Inside again while still failing: the one alert fires now.
        let ds = run(&mut s, &[false, false], true);
        assert_eq!(fired(&ds), 1);
        assert_eq!(
            ds.last().unwrap().1,
            Decision::FireAlerts {
                failures: 5,
                nth: 1
            }
        );
    }

    fn restart_rules() -> Rules {
        Rules {
            alertafter: 2,
            numalerts: 1,
            restart: Some("mysqld".into()),
            scope: MonitorScope::Active,
            ..rules()
        }
    }

    #[test]
    fn restart_then_immediate_recheck_that_passes_fires_nothing() {
        let mut s = Schedule::new(restart_rules(), Duration::ZERO, true, StepRng::new(0, 0));
        assert!(check(&mut s, ms(1000), false).is_empty());
        assert_eq!(
            check(&mut s, ms(2000), false),
            vec![Decision::Restart {
                service: "mysqld".into()
            }]
        );
        // The re-check does not wait for an interval.
        assert_eq!(s.next_due(), Some(ms(2000)));
        assert_eq!(check(&mut s, ms(2300), true), vec![Decision::Recovered]);
        assert_eq!(s.next_due(), Some(ms(3300)));
    }

    #[test]
    fn restart_then_failing_recheck_fires_and_restarts_once_per_episode() {
        let mut s = Schedule::new(restart_rules(), Duration::ZERO, true, StepRng::new(0, 0));
        check(&mut s, ms(1000), false);
        check(&mut s, ms(2000), false);
        assert_eq!(
            check(&mut s, ms(2300), false),
            vec![Decision::FireAlerts {
                failures: 3,
                nth: 1
            }]
        );
        // Still failing: no second restart, and numalerts=1 keeps quiet.
        let ds = run(&mut s, &[false; 5], true);
        assert!(ds.is_empty(), "{ds:?}");
        // A new episode restarts again.
        run(&mut s, &[true, false], true);
        let ds = run(&mut s, &[false], true);
        assert!(matches!(ds[0].1, Decision::Restart { .. }), "{ds:?}");
    }

    #[test]
    fn no_restart_without_the_group() {
        let mut r = restart_rules();
        r.scope = MonitorScope::Always;
        let mut s = Schedule::new(r, Duration::ZERO, false, StepRng::new(0, 0));
        let ds = run(&mut s, &[false, false], true);
        assert_eq!(
            ds.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>(),
            vec![
                Decision::Health { fit: false },
                Decision::FireAlerts {
                    failures: 2,
                    nth: 1
                }
            ]
        );
    }

    #[test]
    fn active_monitor_is_paused_without_the_group_and_waits_one_interval_after() {
        let mut r = rules();
        r.scope = MonitorScope::Active;
        let mut s = Schedule::new(r, Duration::ZERO, false, StepRng::new(0, 0));
        assert_eq!(s.state(), State::Paused);
        assert_eq!(s.next_due(), None);
        assert!(s.poll(ms(100_000)).is_empty());
        s.set_holding(ms(5000), true);
        assert_eq!(s.state(), State::Unknown);
        assert_eq!(s.next_due(), Some(ms(6000)));
        assert!(s.poll(ms(5999)).is_empty());
        check(&mut s, ms(6000), false);
        assert_eq!(s.failures(), 1);
    }

    #[test]
    fn losing_the_group_resets_the_episode_and_drops_a_running_check() {
        let mut r = rules();
        r.scope = MonitorScope::Active;
        r.alertafter = 2;
        r.numalerts = 1;
        let mut s = Schedule::new(r, Duration::ZERO, true, StepRng::new(0, 0));
        let ds = run(&mut s, &[false, false], true);
        assert_eq!(fired(&ds), 1);
        assert_eq!(s.poll(ms(3000)), vec![Decision::RunCheck]);
        s.set_holding(ms(3100), false);
        assert_eq!(s.state(), State::Paused);
        assert_eq!(s.failures(), 0);
        // The result of the check that ran while the group went away counts for nothing.
        assert!(s.on_result(ms(3200), false, true).is_empty());
        assert_eq!(s.next_due(), None);
        // Back: grace, and a fresh episode that may alert again.
        s.set_holding(ms(4000), true);
        assert_eq!(s.next_due(), Some(ms(5000)));
        let ds = run(&mut s, &[false, false], true);
        assert_eq!(fired(&ds), 1);
    }

    #[test]
    fn always_monitor_ignores_the_group_and_reports_health_changes_once() {
        let mut r = rules();
        r.alertafter = 2;
        let mut s = Schedule::new(r, Duration::ZERO, true, StepRng::new(0, 0));
        run(&mut s, &[true], true);
        assert!(s.set_holding(ms(500), false).is_empty());
        assert_eq!(s.next_due(), Some(ms(1000)));
        let health = |ds: &[(Duration, Decision)]| -> Vec<bool> {
            ds.iter()
                .filter_map(|(_, d)| match d {
                    Decision::Health { fit } => Some(*fit),
                    _ => None,
                })
                .collect()
        };
        // One failure is not yet unfit; at alertafter it is, once.
        let ds = run(&mut s, &[false, false, false, false], true);
        assert_eq!(health(&ds), vec![false]);
        let ds = run(&mut s, &[true, true], true);
        assert_eq!(health(&ds), vec![true]);
        assert_eq!(ds[0].1, Decision::Recovered);
    }
}
