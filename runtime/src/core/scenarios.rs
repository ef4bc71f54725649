//! The scenario table of the failover core, in the spirit of Pacemaker's scheduler corpus:
//! each case gives a starting setup and a sequence of timed events, and says which actions
//! each event must produce and which role the master must be in afterwards.
//!
//! Times are milliseconds since start. The defaults: node `a`, peer `b`, keepalive 100 ms,
//! warntime 300 ms, deadtime 600 ms, initdead 2 s, two links, failure_hold 10 s.

use std::time::Duration;

use super::*;
use crate::wire::{Flags, Heartbeat};

use AlertKind as A;
use Role::*;

#[derive(Clone, Copy, Default)]
struct Setup {
    auto_failback: bool,
    preferred: Option<&'static str>,
    ping: bool,
    fence: bool,
    data_gen: u64,
}

/// What the peer says in a heartbeat.
#[derive(Clone, Copy)]
struct P {
    role: Role,
    gen: u64,
    boot: u64,
    handover: bool,
    takeover: bool,
    fit: bool,
    ping_ok: bool,
}

fn peer(role: Role) -> P {
    P {
        role,
        gen: 0,
        boot: 1,
        handover: false,
        takeover: false,
        fit: true,
        ping_ok: true,
    }
}

impl P {
    fn gen(mut self, g: u64) -> P {
        self.gen = g;
        self
    }
    fn boot(mut self, b: u64) -> P {
        self.boot = b;
        self
    }
    fn handover(mut self) -> P {
        self.handover = true;
        self
    }
    fn takeover(mut self) -> P {
        self.takeover = true;
        self
    }
    fn unfit(mut self) -> P {
        self.fit = false;
        self
    }
    fn no_ping(mut self) -> P {
        self.ping_ok = false;
        self
    }
}

#[derive(Clone)]
enum In {
    Tick,
    /// One heartbeat on each of these links (the same message: fresh on the first only).
    Hear(&'static [usize], P),
    /// Heartbeats every 100 ms on these links from the step's time up to and including `to`.
    Beats(&'static [usize], P, u64),
    Ping(bool),
    Health(bool),
    Monitor,
    Acquired(bool),
    Released(bool),
    Fenced(bool),
    /// An administrator command and whether it must be accepted.
    Admin(AdminCommand, bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum K {
    Acquire,
    Release,
    Fence,
    Alert(AlertKind),
}

fn al(kind: AlertKind) -> K {
    K::Alert(kind)
}
const ACQ: K = K::Acquire;
const REL: K = K::Release;
const FENCE: K = K::Fence;

struct Step {
    at: u64,
    input: In,
    expect: Vec<K>,
    role: Role,
}

fn s(at: u64, input: In, expect: &[K], role: Role) -> Step {
    Step {
        at,
        input,
        expect: expect.to_vec(),
        role,
    }
}

struct Case {
    name: &'static str,
    setup: Setup,
    steps: Vec<Step>,
}

fn case(name: &'static str, setup: Setup, steps: Vec<Step>) -> Case {
    Case { name, setup, steps }
}

const BOTH: &[usize] = &[0, 1];
const L0: &[usize] = &[0];
const L1: &[usize] = &[1];

fn base() -> Setup {
    Setup::default()
}

/// A master that is already active: started alone and took the group at initdead.
fn active_steps() -> Vec<Step> {
    vec![
        s(2000, In::Tick, &[ACQ], Acquiring),
        s(2010, In::Acquired(true), &[al(A::Takeover)], Active),
    ]
}

/// A master that is standby with the peer active and heard on both links until `to`.
fn standby_steps(to: u64) -> Vec<Step> {
    vec![s(0, In::Beats(BOTH, peer(Active).gen(5), to), &[], Standby)]
}

fn cases() -> Vec<Case> {
    let mut v: Vec<Case> = Vec::with_capacity(64);

    // ---- start-up ----
    v.push(case(
        "alone: waits for initdead, then takes the group",
        base(),
        vec![
            s(1999, In::Tick, &[], Starting),
            s(2000, In::Tick, &[ACQ], Acquiring),
            s(2050, In::Acquired(true), &[al(A::Takeover)], Active),
        ],
    ));
    v.push(case(
        "peer active at start: standby, never takes",
        base(),
        vec![s(
            0,
            In::Beats(BOTH, peer(Active).gen(3), 3000),
            &[],
            Standby,
        )],
    ));
    v.push(case(
        "peer heard late but within initdead: standby",
        base(),
        vec![
            s(1500, In::Hear(BOTH, peer(Active)), &[], Standby),
            s(1600, In::Beats(BOTH, peer(Active), 3000), &[], Standby),
        ],
    ));
    v.push(case(
        "both standby, equal data: the lower name takes",
        base(),
        vec![s(10, In::Hear(BOTH, peer(Standby)), &[ACQ], Acquiring)],
    ));
    v.push(case(
        "both standby, peer has newer data: peer takes",
        base(),
        vec![
            s(10, In::Beats(BOTH, peer(Standby).gen(4), 500), &[], Standby),
            s(
                600,
                In::Beats(BOTH, peer(Active).gen(5), 3000),
                &[],
                Standby,
            ),
        ],
    ));
    v.push(case(
        "both standby, we have newer data: we take",
        Setup {
            data_gen: 9,
            ..base()
        },
        vec![s(
            10,
            In::Hear(BOTH, peer(Standby).gen(4)),
            &[ACQ],
            Acquiring,
        )],
    ));
    v.push(case(
        "both standby, equal data, peer preferred: peer takes",
        Setup {
            preferred: Some("b"),
            ..base()
        },
        vec![s(10, In::Beats(BOTH, peer(Standby), 1000), &[], Standby)],
    ));
    v.push(case(
        "auto_failback: preferred takes even with older data",
        Setup {
            auto_failback: true,
            preferred: Some("a"),
            ..base()
        },
        vec![s(
            10,
            In::Hear(BOTH, peer(Standby).gen(8)),
            &[ACQ],
            Acquiring,
        )],
    ));
    v.push(case(
        "peer still starting: wait for it to say standby",
        base(),
        vec![
            s(10, In::Hear(BOTH, peer(Starting)), &[], Standby),
            s(110, In::Hear(BOTH, peer(Standby)), &[ACQ], Acquiring),
        ],
    ));
    v.push(case(
        "both standby, peer unfit: we take despite older data",
        base(),
        vec![s(
            10,
            In::Hear(BOTH, peer(Standby).gen(6).unfit()),
            &[ACQ],
            Acquiring,
        )],
    ));
    v.push(case(
        "both standby, we are unfit: wait",
        base(),
        vec![
            s(5, In::Health(false), &[], Starting),
            s(
                10,
                In::Beats(BOTH, peer(Standby).gen(0), 1000),
                &[],
                Standby,
            ),
        ],
    ));
    v.push(case(
        "both unfit: nobody takes",
        base(),
        vec![
            s(5, In::Health(false), &[], Starting),
            s(
                10,
                In::Beats(BOTH, peer(Standby).unfit(), 1000),
                &[],
                Standby,
            ),
        ],
    ));
    v.push(case(
        "ping set, no answer yet at initdead: no takeover until it answers",
        Setup {
            ping: true,
            ..base()
        },
        vec![
            s(2000, In::Tick, &[al(A::NoTakeover)], Standby),
            s(2500, In::Tick, &[], Standby),
            s(2600, In::Ping(true), &[ACQ], Acquiring),
        ],
    ));
    v.push(case(
        "out of isolation the peer is heard within initdead: no takeover",
        Setup {
            ping: true,
            ..base()
        },
        vec![
            s(0, In::Ping(true), &[], Starting),
            s(10, In::Beats(BOTH, peer(Active).gen(4), 1000), &[], Standby),
            s(1010, In::Ping(false), &[], Standby),
            s(
                1510,
                In::Tick,
                &[
                    al(A::LinkDown),
                    al(A::LinkDown),
                    al(A::PeerDead),
                    al(A::NoTakeover),
                ],
                Standby,
            ),
            s(2600, In::Ping(true), &[], Standby),
            s(
                3500,
                In::Beats(BOTH, peer(Active).gen(4), 6000),
                &[al(A::PeerBack), al(A::LinkUp), al(A::LinkUp)],
                Standby,
            ),
        ],
    ));
    v.push(case(
        "both standby, only we reach the ping node: we take with older data",
        Setup {
            ping: true,
            ..base()
        },
        vec![
            s(5, In::Ping(true), &[], Starting),
            s(
                10,
                In::Hear(BOTH, peer(Standby).gen(3).no_ping()),
                &[ACQ],
                Acquiring,
            ),
        ],
    ));

    // ---- failure detection ----
    let mut steps = standby_steps(1000);
    steps.push(s(1500, In::Tick, &[], Standby));
    steps.push(s(
        1600,
        In::Tick,
        &[al(A::LinkDown), al(A::LinkDown), al(A::PeerDead), ACQ],
        Acquiring,
    ));
    steps.push(s(1620, In::Acquired(true), &[al(A::Takeover)], Active));
    v.push(case(
        "active peer silent on both links for deadtime: takeover",
        base(),
        steps,
    ));

    let mut steps = standby_steps(1000);
    steps.push(s(1300, In::Tick, &[], Standby));
    steps.push(s(1500, In::Beats(BOTH, peer(Active), 2000), &[], Standby));
    v.push(case(
        "late heartbeats within deadtime: warn, no takeover",
        base(),
        steps,
    ));

    let mut steps = standby_steps(1000);
    steps.push(s(
        1100,
        In::Beats(L1, peer(Active), 3000),
        &[al(A::LinkDown)],
        Standby,
    ));
    v.push(case(
        "one link cut (udp), the other alive: no failover",
        base(),
        steps,
    ));

    let mut steps = standby_steps(1000);
    steps.push(s(
        1100,
        In::Beats(L0, peer(Active), 3000),
        &[al(A::LinkDown)],
        Standby,
    ));
    v.push(case(
        "serial link cut, udp alive: no failover",
        base(),
        steps,
    ));

    let mut steps = standby_steps(1000);
    steps.push(s(
        1100,
        In::Beats(L1, peer(Active), 2000),
        &[al(A::LinkDown)],
        Standby,
    ));
    steps.push(s(
        2100,
        In::Beats(BOTH, peer(Active), 2500),
        &[al(A::LinkUp)],
        Standby,
    ));
    steps.push(s(
        2600,
        In::Beats(L1, peer(Active), 3500),
        &[al(A::LinkDown)],
        Standby,
    ));
    v.push(case("one link flapping: link alerts only", base(), steps));

    let mut steps = standby_steps(1000);
    steps.push(s(
        1100,
        In::Beats(L1, peer(Active), 1700),
        &[al(A::LinkDown)],
        Standby,
    ));
    steps.push(s(
        2300,
        In::Tick,
        &[al(A::LinkDown), al(A::PeerDead), ACQ],
        Acquiring,
    ));
    v.push(case(
        "both links lost one after the other: takeover after the last",
        base(),
        steps,
    ));

    let mut steps = standby_steps(1000);
    steps.push(s(
        1600,
        In::Tick,
        &[al(A::LinkDown), al(A::LinkDown), al(A::PeerDead), FENCE],
        Fencing,
    ));
    steps.push(s(1700, In::Fenced(true), &[ACQ], Acquiring));
    steps.push(s(1710, In::Acquired(true), &[al(A::Takeover)], Active));
    v.push(case(
        "fencing configured: fence first, then take",
        Setup {
            fence: true,
            ..base()
        },
        steps,
    ));

    let mut steps = standby_steps(1000);
    steps.push(s(
        1600,
        In::Tick,
        &[al(A::LinkDown), al(A::LinkDown), al(A::PeerDead), FENCE],
        Fencing,
    ));
    steps.push(s(
        1700,
        In::Fenced(false),
        &[al(A::FenceFailed), al(A::NoTakeover)],
        Standby,
    ));
    steps.push(s(3000, In::Tick, &[], Standby));
    steps.push(s(6700, In::Tick, &[FENCE], Fencing));
    v.push(case(
        "fencing fails: no takeover, retried later",
        Setup {
            fence: true,
            ..base()
        },
        steps,
    ));

    let mut steps = vec![s(0, In::Ping(true), &[], Starting)];
    steps.extend(standby_steps(1000));
    steps.push(s(1050, In::Ping(false), &[], Standby));
    steps.push(s(
        1600,
        In::Tick,
        &[
            al(A::LinkDown),
            al(A::LinkDown),
            al(A::PeerDead),
            al(A::NoTakeover),
        ],
        Standby,
    ));
    steps.push(s(2000, In::Tick, &[], Standby));
    v.push(case(
        "peer silent but our ping node too: we are the isolated one, no takeover",
        Setup {
            ping: true,
            ..base()
        },
        steps,
    ));

    let mut steps = active_steps();
    steps.push(s(2100, In::Beats(BOTH, peer(Standby), 3000), &[], Active));
    steps.push(s(
        3600,
        In::Tick,
        &[al(A::LinkDown), al(A::LinkDown), al(A::PeerDead)],
        Active,
    ));
    v.push(case(
        "active loses the standby peer, ping fine: keeps the group",
        base(),
        steps,
    ));

    let mut steps = vec![s(5, In::Ping(true), &[], Starting)];
    steps.extend(active_steps());
    steps.push(s(2100, In::Beats(BOTH, peer(Standby), 3000), &[], Active));
    steps.push(s(3050, In::Ping(false), &[], Active));
    steps.push(s(
        3600,
        In::Tick,
        &[
            al(A::LinkDown),
            al(A::LinkDown),
            al(A::PeerDead),
            al(A::Isolated),
            al(A::Release),
            REL,
        ],
        Releasing,
    ));
    steps.push(s(3650, In::Released(true), &[al(A::NoTakeover)], Standby));
    v.push(case(
        "active isolated (peer and ping node lost): releases",
        Setup {
            ping: true,
            ..base()
        },
        steps,
    ));

    // ---- the peer returns ----
    let mut steps = active_steps();
    steps.push(s(
        2100,
        In::Beats(BOTH, peer(Starting).gen(3).boot(2), 2200),
        &[],
        Active,
    ));
    steps.push(s(
        2300,
        In::Beats(BOTH, peer(Standby).gen(3).boot(2), 5000),
        &[],
        Active,
    ));
    v.push(case(
        "old primary returns standby: no failback",
        base(),
        steps,
    ));

    let mut steps = active_steps();
    steps.push(s(
        2100,
        In::Beats(BOTH, peer(Standby).gen(0).boot(2), 5000),
        &[],
        Active,
    ));
    v.push(case(
        "old primary returns with wiped state (generation 0): no failback",
        base(),
        steps,
    ));

    let mut steps = active_steps();
    steps.push(s(
        2100,
        In::Beats(BOTH, peer(Standby).gen(40), 5000),
        &[],
        Active,
    ));
    v.push(case(
        "peer returns standby with a higher data generation: still no failback",
        base(),
        steps,
    ));

    let mut steps = active_steps();
    steps.push(s(2100, In::Hear(BOTH, peer(Standby)), &[], Active));
    steps.push(s(
        2200,
        In::Beats(BOTH, peer(Standby), 2700),
        &[al(A::Release), REL],
        Releasing,
    ));
    steps.push(s(2750, In::Released(true), &[], Standby));
    steps.push(s(
        2800,
        In::Beats(BOTH, peer(Active).gen(2), 3500),
        &[],
        Standby,
    ));
    v.push(case(
        "auto_failback: returns the group to the preferred peer once it is stable",
        Setup {
            auto_failback: true,
            preferred: Some("b"),
            ..base()
        },
        steps,
    ));

    let mut steps = active_steps();
    steps.push(s(
        2100,
        In::Beats(BOTH, peer(Standby).unfit(), 4000),
        &[],
        Active,
    ));
    v.push(case(
        "auto_failback: not to an unfit preferred peer",
        Setup {
            auto_failback: true,
            preferred: Some("b"),
            ..base()
        },
        steps,
    ));

    let mut steps = active_steps();
    steps.push(s(
        2100,
        In::Hear(BOTH, peer(Active).gen(0)),
        &[al(A::SplitBrain)],
        Active,
    ));
    steps.push(s(
        2200,
        In::Beats(BOTH, peer(Active).gen(0), 2500),
        &[],
        Active,
    ));
    steps.push(s(
        2600,
        In::Beats(BOTH, peer(Releasing).gen(0), 2700),
        &[],
        Active,
    ));
    v.push(case(
        "partition heals, both active, our data newer: we keep it, peer releases",
        base(),
        steps,
    ));

    let mut steps = active_steps();
    steps.push(s(
        2100,
        In::Hear(BOTH, peer(Active).gen(7)),
        &[al(A::SplitBrain), al(A::Release), REL],
        Releasing,
    ));
    steps.push(s(2150, In::Released(true), &[], Standby));
    steps.push(s(
        2200,
        In::Beats(BOTH, peer(Active).gen(7), 4000),
        &[],
        Standby,
    ));
    v.push(case(
        "partition heals, both active, peer data newer: we release",
        base(),
        steps,
    ));

    let mut steps = active_steps();
    steps.push(s(
        2100,
        In::Hear(BOTH, peer(Active).gen(1)),
        &[al(A::SplitBrain), al(A::Release), REL],
        Releasing,
    ));
    v.push(case(
        "partition heals, equal data, peer preferred: we release",
        Setup {
            preferred: Some("b"),
            ..base()
        },
        steps,
    ));

    let mut steps = vec![s(5, In::Ping(true), &[], Starting)];
    steps.extend(active_steps());
    steps.push(s(
        2100,
        In::Hear(BOTH, peer(Active).gen(0)),
        &[al(A::SplitBrain)],
        Active,
    ));
    steps.push(s(
        2150,
        In::Ping(false),
        &[al(A::SplitBrain), al(A::Release), REL],
        Releasing,
    ));
    v.push(case(
        "partition heals, only the peer reaches the ping node: we release",
        Setup {
            ping: true,
            ..base()
        },
        steps,
    ));

    let mut steps = active_steps();
    steps.push(s(
        2100,
        In::Beats(BOTH, peer(Standby).boot(1), 2300),
        &[],
        Active,
    ));
    steps.push(s(
        2400,
        In::Hear(BOTH, peer(Starting).boot(2)),
        &[al(A::PeerRestarted)],
        Active,
    ));
    v.push(case(
        "peer restarts while we are active: noted, nothing else",
        base(),
        steps,
    ));

    // ---- monitors ----
    let mut steps = active_steps();
    steps.push(s(2100, In::Beats(BOTH, peer(Standby), 2500), &[], Active));
    steps.push(s(
        2550,
        In::Monitor,
        &[al(A::MonitorFailover), al(A::Release), REL],
        Releasing,
    ));
    steps.push(s(2600, In::Released(true), &[], Standby));
    steps.push(s(2700, In::Beats(BOTH, peer(Standby), 2800), &[], Standby));
    steps.push(s(
        2900,
        In::Beats(BOTH, peer(Active).gen(2), 3500),
        &[],
        Standby,
    ));
    v.push(case(
        "monitor fails on the active: group handed to the standby peer",
        base(),
        steps,
    ));

    let mut steps = active_steps();
    steps.push(s(2100, In::Monitor, &[al(A::MonitorFailover)], Active));
    v.push(case(
        "monitor fails, peer dead: keep the group",
        base(),
        steps,
    ));

    let mut steps = active_steps();
    steps.push(s(
        2100,
        In::Beats(BOTH, peer(Standby).unfit(), 2500),
        &[],
        Active,
    ));
    steps.push(s(2550, In::Monitor, &[al(A::MonitorFailover)], Active));
    v.push(case(
        "monitor fails, peer unfit: keep the group",
        base(),
        steps,
    ));

    let mut steps = standby_steps(1000);
    steps.push(s(1050, In::Monitor, &[], Standby));
    v.push(case(
        "monitor failure on the standby side is ignored",
        base(),
        steps,
    ));

    let mut steps = standby_steps(1000);
    steps.push(s(1050, In::Health(false), &[], Standby));
    steps.push(s(
        1650,
        In::Tick,
        &[
            al(A::LinkDown),
            al(A::LinkDown),
            al(A::PeerDead),
            al(A::NoTakeover),
        ],
        Standby,
    ));
    steps.push(s(1700, In::Health(true), &[ACQ], Acquiring));
    v.push(case(
        "always-monitor fails on the standby, then the active dies: wait until fit",
        base(),
        steps,
    ));

    v.push(case(
        "peer hands over (its monitor failed): we take",
        base(),
        vec![
            s(0, In::Beats(BOTH, peer(Active).gen(3), 500), &[], Standby),
            s(
                600,
                In::Hear(BOTH, peer(Releasing).gen(3).handover()),
                &[],
                Standby,
            ),
            s(
                700,
                In::Hear(BOTH, peer(Standby).gen(3).handover()),
                &[ACQ],
                Acquiring,
            ),
            s(750, In::Acquired(true), &[al(A::Takeover)], Active),
        ],
    ));

    // ---- the group fails to start or stop ----
    v.push(case(
        "start fails: release, hand over, unfit for failure_hold",
        base(),
        vec![
            s(2000, In::Tick, &[ACQ], Acquiring),
            s(
                2100,
                In::Acquired(false),
                &[al(A::AcquireFailed), al(A::Release), REL],
                Releasing,
            ),
            s(2200, In::Released(true), &[al(A::NoTakeover)], Standby),
            s(
                2300,
                In::Beats(BOTH, peer(Standby).gen(0), 2600),
                &[],
                Standby,
            ),
            s(
                2700,
                In::Beats(BOTH, peer(Active).gen(2), 3000),
                &[],
                Standby,
            ),
        ],
    ));
    v.push(case(
        "start fails with the peer dead: retry after failure_hold",
        base(),
        vec![
            s(2000, In::Tick, &[ACQ], Acquiring),
            s(
                2100,
                In::Acquired(false),
                &[al(A::AcquireFailed), al(A::Release), REL],
                Releasing,
            ),
            s(2200, In::Released(true), &[al(A::NoTakeover)], Standby),
            s(7200, In::Tick, &[al(A::RequestExpired)], Standby),
            s(12100, In::Tick, &[ACQ], Acquiring),
        ],
    ));
    let mut steps = active_steps();
    steps.push(s(2100, In::Beats(BOTH, peer(Standby), 2500), &[], Active));
    steps.push(s(
        2550,
        In::Admin(AdminCommand::Standby, true),
        &[al(A::Release), REL],
        Releasing,
    ));
    steps.push(s(
        2600,
        In::Released(false),
        &[al(A::ReleaseFailed)],
        Standby,
    ));
    v.push(case(
        "release with errors: alert, standby anyway",
        base(),
        steps,
    ));

    // ---- administrator commands ----
    let mut steps = active_steps();
    steps.push(s(2100, In::Beats(BOTH, peer(Standby), 2500), &[], Active));
    steps.push(s(
        2550,
        In::Admin(AdminCommand::Standby, true),
        &[al(A::Release), REL],
        Releasing,
    ));
    steps.push(s(2600, In::Released(true), &[], Standby));
    steps.push(s(
        2700,
        In::Beats(BOTH, peer(Active).gen(2), 4000),
        &[],
        Standby,
    ));
    v.push(case(
        "standby command: the group moves to the peer and stays",
        base(),
        steps,
    ));

    let mut steps = active_steps();
    steps.push(s(
        2100,
        In::Admin(AdminCommand::Standby, false),
        &[],
        Active,
    ));
    v.push(case(
        "standby command with the peer dead: refused",
        base(),
        steps,
    ));

    v.push(case(
        "standby command while starting the group: busy",
        base(),
        vec![
            s(2000, In::Tick, &[ACQ], Acquiring),
            s(
                2010,
                In::Admin(AdminCommand::Standby, false),
                &[],
                Acquiring,
            ),
            s(
                2020,
                In::Admin(AdminCommand::Takeover, false),
                &[],
                Acquiring,
            ),
        ],
    ));

    let mut steps = active_steps();
    steps.push(s(2100, In::Beats(BOTH, peer(Standby), 2500), &[], Active));
    steps.push(s(
        2550,
        In::Admin(AdminCommand::Standby, true),
        &[al(A::Release), REL],
        Releasing,
    ));
    steps.push(s(
        2560,
        In::Admin(AdminCommand::Standby, false),
        &[],
        Releasing,
    ));
    v.push(case(
        "standby command during the release: busy",
        base(),
        steps,
    ));

    let mut steps = standby_steps(1000);
    steps.push(s(
        1050,
        In::Admin(AdminCommand::Takeover, true),
        &[],
        Standby,
    ));
    steps.push(s(
        1100,
        In::Hear(BOTH, peer(Releasing).gen(5)),
        &[],
        Standby,
    ));
    steps.push(s(
        1200,
        In::Hear(BOTH, peer(Standby).gen(5).handover()),
        &[ACQ],
        Acquiring,
    ));
    v.push(case(
        "takeover command: the peer releases, we take",
        base(),
        steps,
    ));

    let mut steps = standby_steps(1000);
    steps.push(s(
        1050,
        In::Admin(AdminCommand::Takeover, true),
        &[],
        Standby,
    ));
    steps.push(s(
        1100,
        In::Beats(BOTH, peer(Active).gen(5), 7000),
        &[al(A::RequestExpired)],
        Standby,
    ));
    v.push(case(
        "takeover command the peer ignores: the request expires",
        base(),
        steps,
    ));

    let mut steps = standby_steps(1000);
    steps.push(s(
        1600,
        In::Tick,
        &[al(A::LinkDown), al(A::LinkDown), al(A::PeerDead), ACQ],
        Acquiring,
    ));
    steps.push(s(
        1650,
        In::Admin(AdminCommand::Takeover, false),
        &[],
        Acquiring,
    ));
    v.push(case(
        "takeover command while the takeover after the peer's death runs: busy",
        base(),
        steps,
    ));

    v.push(case(
        "takeover command with the peer never heard: refused",
        base(),
        vec![s(
            100,
            In::Admin(AdminCommand::Takeover, false),
            &[],
            Starting,
        )],
    ));

    let mut steps = active_steps();
    steps.push(s(2100, In::Beats(BOTH, peer(Standby), 2500), &[], Active));
    steps.push(s(
        2600,
        In::Hear(BOTH, peer(Standby).takeover()),
        &[al(A::Release), REL],
        Releasing,
    ));
    v.push(case(
        "the peer's takeover request: we release to it",
        base(),
        steps,
    ));

    let mut steps = active_steps();
    steps.push(s(2100, In::Beats(BOTH, peer(Standby), 2500), &[], Active));
    steps.push(s(
        2550,
        In::Admin(AdminCommand::Standby, true),
        &[al(A::Release), REL],
        Releasing,
    ));
    steps.push(s(2600, In::Released(true), &[], Standby));
    steps.push(s(
        2700,
        In::Beats(BOTH, peer(Standby), 7600),
        &[al(A::RequestExpired), ACQ],
        Acquiring,
    ));
    v.push(case(
        "handover nobody takes: expires, then the start rule gives it back to us",
        base(),
        steps,
    ));

    let mut steps = active_steps();
    steps.push(s(
        2100,
        In::Admin(AdminCommand::Takeover, true),
        &[],
        Active,
    ));
    v.push(case(
        "takeover command on the active: nothing to do",
        base(),
        steps,
    ));

    v.push(case(
        "standby command on a standby: nothing to do",
        base(),
        vec![
            s(0, In::Beats(BOTH, peer(Active), 500), &[], Standby),
            s(550, In::Admin(AdminCommand::Standby, true), &[], Standby),
        ],
    ));

    v.push(case(
        "duplicate over the second link proves the link, not a new view",
        base(),
        vec![
            s(0, In::Beats(BOTH, peer(Active).gen(5), 500), &[], Standby),
            s(600, In::Beats(L0, peer(Active).gen(5), 1000), &[], Standby),
        ],
    ));
    v
}

fn beat(p: P, seq: u64) -> Heartbeat {
    Heartbeat {
        node: "b".into(),
        role: p.role,
        flags: Flags {
            handover: p.handover,
            takeover: p.takeover,
            fit: p.fit,
            ping_ok: p.ping_ok,
        },
        boot_gen: p.boot,
        seq,
        data_gen: p.gen,
        keepalive_ms: 100,
    }
}

fn config(setup: Setup) -> CoreConfig {
    CoreConfig {
        node: "a".into(),
        peer: "b".into(),
        preferred: setup.preferred.map(String::from),
        keepalive: Duration::from_millis(100),
        warntime: Duration::from_millis(300),
        deadtime: Duration::from_millis(600),
        initdead: Duration::from_secs(2),
        auto_failback: setup.auto_failback,
        ping_configured: setup.ping,
        fence_configured: setup.fence,
        links: 2,
        failure_hold: Duration::from_secs(10),
    }
}

fn kinds(actions: &[Action]) -> Vec<K> {
    let mut k: Vec<K> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Acquire { .. } => Some(ACQ),
            Action::Release { .. } => Some(REL),
            Action::Fence => Some(FENCE),
            // Late heartbeats are log lines; `late_heartbeat_is_noted_once` covers them.
            Action::Alert(a) if a.kind == AlertKind::LinkLate => None,
            Action::Alert(a) => Some(al(a.kind)),
            Action::SendNow => None,
        })
        .collect();
    k.sort();
    k
}

fn run(c: &Case) -> Result<(), String> {
    let mut core = Core::new(config(c.setup), Duration::ZERO, c.setup.data_gen);
    let mut seq = 0u64;
    let mut last_at = 0u64;
    for (i, step) in c.steps.iter().enumerate() {
        if step.at < last_at {
            return Err(format!(
                "step {i} goes back in time (t={} after {last_at})",
                step.at
            ));
        }
        // Time passes between steps: ticks at every keepalive, like the engine.
        let mut t = last_at;
        let mut got = Vec::new();
        let mut between = Vec::new();
        while t + 100 < step.at {
            t += 100;
            between.extend(core.handle(Duration::from_millis(t), Event::Tick));
        }
        if !kinds(&between).is_empty() {
            return Err(format!(
                "step {i}: unexpected actions before t={} ms: {:?}",
                step.at,
                kinds(&between)
            ));
        }
        let now = |ms: u64| Duration::from_millis(ms);
        let mut admin_answer = None;
        match &step.input {
            In::Tick => got.extend(core.handle(now(step.at), Event::Tick)),
            In::Hear(links, p) => {
                seq += 1;
                for (n, &link) in links.iter().enumerate() {
                    got.extend(core.handle(
                        now(step.at),
                        Event::Heard {
                            link,
                            beat: beat(*p, seq),
                            fresh: n == 0,
                        },
                    ));
                }
            }
            In::Beats(links, p, to) => {
                let mut t = step.at;
                while t <= *to {
                    seq += 1;
                    for (n, &link) in links.iter().enumerate() {
                        got.extend(core.handle(
                            now(t),
                            Event::Heard {
                                link,
                                beat: beat(*p, seq),
                                fresh: n == 0,
                            },
                        ));
                    }
                    got.extend(core.handle(now(t), Event::Tick));
                    t += 100;
                }
                last_at = *to;
            }
            In::Ping(r) => got.extend(core.handle(now(step.at), Event::Ping { reachable: *r })),
            In::Health(f) => got.extend(core.handle(now(step.at), Event::Health { fit: *f })),
            In::Monitor => got.extend(core.handle(
                now(step.at),
                Event::MonitorFailover {
                    monitor: "mysql".into(),
                    detail: "connection refused".into(),
                },
            )),
            In::Acquired(ok) => got.extend(core.handle(
                now(step.at),
                Event::AcquireDone {
                    result: if *ok {
                        Ok(())
                    } else {
                        Err("mysqld: exit 1".into())
                    },
                },
            )),
            In::Released(ok) => got.extend(core.handle(
                now(step.at),
                Event::ReleaseDone {
                    result: if *ok {
                        Ok(())
                    } else {
                        Err("smb: exit 1".into())
                    },
                },
            )),
            In::Fenced(ok) => got.extend(core.handle(
                now(step.at),
                Event::FenceDone {
                    result: if *ok {
                        Ok(())
                    } else {
                        Err("ipmitool: timeout".into())
                    },
                },
            )),
            In::Admin(cmd, accept) => {
                let (answer, actions) = core.admin(now(step.at), *cmd);
                got.extend(actions);
                admin_answer = Some((answer, *accept));
            }
        }
        if !matches!(step.input, In::Beats(..)) {
            last_at = step.at;
        }
        let mut want = step.expect.clone();
        want.sort();
        let have = kinds(&got);
        if have != want {
            return Err(format!(
                "step {i} (t={}): actions {have:?}, expected {want:?}",
                step.at
            ));
        }
        if core.role() != step.role {
            return Err(format!(
                "step {i} (t={}): role {:?}, expected {:?}",
                step.at,
                core.role(),
                step.role
            ));
        }
        if let Some((answer, accept)) = admin_answer {
            if answer.is_ok() != accept {
                return Err(format!("step {i}: admin answer {answer:?}"));
            }
        }
    }
    Ok(())
}

#[test]
fn scenario_table() {
    let cases = cases();
    assert!(cases.len() >= 40, "the table has {} cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| run(c).err().map(|e| format!("{}: {e}", c.name)))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn takeover_raises_the_data_generation_above_both() {
    let mut core = Core::new(config(base()), Duration::ZERO, 3);
    let actions = core.handle(
        Duration::from_millis(10),
        Event::Heard {
            link: 0,
            beat: beat(peer(Standby).handover().gen(7), 1),
            fresh: true,
        },
    );
    assert!(actions.contains(&Action::Acquire {
        reason: "b handed the group over".into(),
        data_gen: 8
    }));
}

#[test]
fn next_deadline_wakes_at_the_exact_death() {
    let mut core = Core::new(config(base()), Duration::ZERO, 0);
    core.handle(
        Duration::from_millis(1000),
        Event::Heard {
            link: 0,
            beat: beat(peer(Active), 1),
            fresh: true,
        },
    );
    // Warntime first (300 ms after), then deadtime (600 ms after); never later than keepalive.
    assert_eq!(
        core.next_deadline(Duration::from_millis(1250)),
        Duration::from_millis(1300)
    );
    assert_eq!(
        core.next_deadline(Duration::from_millis(1550)),
        Duration::from_millis(1600)
    );
}

#[test]
fn late_heartbeat_is_noted_once() {
    let mut core = Core::new(config(base()), Duration::ZERO, 0);
    let hear = |core: &mut Core, ms, seq| {
        core.handle(
            Duration::from_millis(ms),
            Event::Heard {
                link: 0,
                beat: beat(peer(Active), seq),
                fresh: true,
            },
        )
    };
    hear(&mut core, 0, 1);
    let late = |a: &Vec<Action>| {
        a.iter()
            .filter(|a| matches!(a, Action::Alert(x) if x.kind == AlertKind::LinkLate))
            .count()
    };
    assert_eq!(
        late(&core.handle(Duration::from_millis(299), Event::Tick)),
        0
    );
    assert_eq!(
        late(&core.handle(Duration::from_millis(300), Event::Tick)),
        1
    );
    assert_eq!(
        late(&core.handle(Duration::from_millis(400), Event::Tick)),
        0
    );
    hear(&mut core, 450, 2);
    assert_eq!(
        late(&core.handle(Duration::from_millis(750), Event::Tick)),
        1
    );
}

#[test]
fn out_of_isolation_takes_over_after_initdead_when_the_peer_stays_silent() {
    let mut core = Core::new(
        CoreConfig {
            ping_configured: true,
            ..config(base())
        },
        Duration::ZERO,
        0,
    );
    let at = Duration::from_millis;
    core.handle(at(0), Event::Ping { reachable: true });
    core.handle(
        at(10),
        Event::Heard {
            link: 0,
            beat: beat(peer(Active), 1),
            fresh: true,
        },
    );
    core.handle(at(100), Event::Ping { reachable: false });
    core.handle(at(700), Event::Tick);
    assert_eq!(core.role(), Role::Standby);
    core.handle(at(1000), Event::Ping { reachable: true });
    assert_eq!(core.next_deadline(at(2900)), at(3000));
    assert!(!core
        .handle(at(2999), Event::Tick)
        .iter()
        .any(|a| matches!(a, Action::Acquire { .. })));
    assert!(core
        .handle(at(3000), Event::Tick)
        .iter()
        .any(|a| matches!(a, Action::Acquire { .. })));
}
