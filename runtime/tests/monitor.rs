//! Monitors running for real on loopback: listeners that go away, a tiny HTTP server, shell
//! commands, and a recording alert sink. Intervals are short; every wait has a generous
//! deadline and no assertion depends on how fast anything happened.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use runtime::config::{AlertConfig, CheckConfig, MonitorConfig, MonitorScope};
use runtime::monitor::{self, AlertSink, MonitorEvent, MonitorStatus, Monitors, Period, State};

const DEADLINE: Duration = Duration::from_secs(10);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn monitor(name: &str, check: CheckConfig, alerts: Vec<AlertConfig>) -> MonitorConfig {
    MonitorConfig {
        name: name.into(),
        check,
        interval: Duration::from_millis(100),
        randskew: Duration::from_millis(20),
        timeout: Duration::from_secs(2),
        period: None,
        alertafter: 1,
        numalerts: 0,
        restart: None,
        when: MonitorScope::Active,
        alerts,
    }
}

fn tcp(port: u16) -> CheckConfig {
    CheckConfig::Tcp {
        host: "localhost".into(),
        port,
    }
}

/// A port nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Listens on `port` and accepts forever on a thread; returns the count of connections.
fn serve_tcp(listener: TcpListener) -> Arc<AtomicUsize> {
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            drop(conn);
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    count
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn only(m: &Monitors) -> MonitorStatus {
    m.status().pop().unwrap()
}

#[derive(Default)]
struct RecordingSink {
    mails: Mutex<Vec<(Vec<String>, String, String)>>,
    restarts: Mutex<Vec<String>>,
    /// What a restart does (re-open a listener).
    on_restart: Mutex<Option<Box<dyn FnMut() + Send>>>,
}

impl AlertSink for RecordingSink {
    fn mail(&self, to: &[String], subject: &str, body: &str) -> Result<(), String> {
        self.mails
            .lock()
            .unwrap()
            .push((to.to_vec(), subject.into(), body.into()));
        Ok(())
    }

    fn restart(&self, service: &str) -> Result<(), String> {
        if let Some(f) = self.on_restart.lock().unwrap().as_mut() {
            f();
        }
        self.restarts.lock().unwrap().push(service.into());
        Ok(())
    }
}

struct Setup {
    monitors: Monitors,
    events: mpsc::Receiver<MonitorEvent>,
    holding: tokio::sync::watch::Sender<bool>,
    _rt: tokio::runtime::Runtime,
}

fn start(configs: Vec<MonitorConfig>, sink: Arc<RecordingSink>, holding: bool) -> Setup {
    start_with_periods(
        configs.into_iter().map(|c| (c, None)).collect(),
        sink,
        holding,
    )
}

fn start_with_periods(
    monitors: Vec<(MonitorConfig, Option<Period>)>,
    sink: Arc<RecordingSink>,
    holding: bool,
) -> Setup {
    let rt = rt();
    let (tx, events) = mpsc::channel();
    let (holding, rx) = tokio::sync::watch::channel(holding);
    let monitors = Monitors::spawn(rt.handle(), monitors, sink, rx, tx);
    Setup {
        monitors,
        events,
        holding,
        _rt: rt,
    }
}

#[test]
fn closed_port_requests_failover_and_runs_exec_alert() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alert");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut m = monitor(
        "mysql",
        tcp(port),
        vec![
            AlertConfig::Failover,
            AlertConfig::Exec {
                command: format!(
                    "printf '%s|%s|%s' \"$CM_MONITOR\" \"$CM_DETAIL\" \"$CM_SUMMARY\" > {}",
                    out.display()
                ),
            },
        ],
    );
    m.alertafter = 2;
    let s = start(vec![m], Arc::default(), true);

    wait_until("the first passing check", || {
        only(&s.monitors).state == State::Ok
    });
    assert_eq!(s.events.try_recv(), Err(mpsc::TryRecvError::Empty));

    drop(listener);
    match s.events.recv_timeout(DEADLINE).unwrap() {
        MonitorEvent::Failover { monitor, detail } => {
            assert_eq!(monitor, "mysql");
            assert!(detail.contains("connect to localhost:"), "{detail}");
        }
        other => panic!("unexpected {other:?}"),
    }
    let st = only(&s.monitors);
    assert_eq!(st.state, State::Failing);
    assert!(st.failures >= 2, "{st:?}");
    assert!(st.last_check.is_some());

    wait_until("the exec alert", || out.exists());
    wait_until("the exec alert's output", || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("localhost"))
    });
    let text = std::fs::read_to_string(&out).unwrap();
    let parts: Vec<_> = text.split('|').collect();
    assert_eq!(parts[0], "mysql");
    assert!(parts[1].contains("connect to localhost:"), "{text}");
    assert!(parts[2].starts_with("mysql: tcp localhost:"), "{text}");
}

/// Answers every request with the status in `status`; records each request's head.
fn http_server(status: Arc<AtomicU16>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                match conn.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            seen.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&head).into_owned());
            let code = status.load(Ordering::SeqCst);
            let reason = if code == 200 {
                "OK"
            } else {
                "Service Unavailable"
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {code} {reason}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi"
            );
        }
    });
    (port, heads)
}

#[test]
fn http_check_sees_200_and_503() {
    let status = Arc::new(AtomicU16::new(200));
    let (port, heads) = http_server(status.clone());
    let rt = rt();
    let check = |expect| CheckConfig::Http {
        url: format!("http://localhost:{port}/health"),
        expect,
    };
    let r = rt.block_on(monitor::check::run(&check(200), Duration::from_secs(5)));
    assert!(r.ok, "{}", r.detail);
    assert_eq!(r.detail, "HTTP 200 OK");
    let head = heads.lock().unwrap()[0].clone();
    assert!(head.starts_with("GET /health HTTP/1.1\r\n"), "{head}");
    assert!(
        head.contains(&format!("\r\nHost: localhost:{port}\r\n")),
        "{head}"
    );

    status.store(503, Ordering::SeqCst);
    let r = rt.block_on(monitor::check::run(&check(200), Duration::from_secs(5)));
    assert!(!r.ok);
    assert_eq!(r.detail, "HTTP 503 Service Unavailable (expected 200)");
    // A check may expect the maintenance answer.
    let r = rt.block_on(monitor::check::run(&check(503), Duration::from_secs(5)));
    assert!(r.ok, "{}", r.detail);

    let https = CheckConfig::Http {
        url: format!("https://localhost:{port}/"),
        expect: 200,
    };
    let r = rt.block_on(monitor::check::run(&https, Duration::from_secs(5)));
    assert!(!r.ok);
    assert!(r.detail.contains("https is not supported"), "{}", r.detail);

    // A server that accepts and never answers is a failure within the timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_check = CheckConfig::Http {
        url: format!("http://127.0.0.1:{}/", silent.local_addr().unwrap().port()),
        expect: 200,
    };
    let r = rt.block_on(monitor::check::run(
        &silent_check,
        Duration::from_millis(300),
    ));
    assert!(!r.ok);
    assert_eq!(r.detail, "no answer within 300ms");
}

#[test]
fn always_exec_monitor_reports_health() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("up");
    let mut m = monitor(
        "disk",
        CheckConfig::Exec {
            command: format!("echo checking; test -e {}", flag.display()),
        },
        vec![],
    );
    m.when = MonitorScope::Always;
    // Not holding the group: an `always` monitor runs anyway.
    let s = start(vec![m], Arc::default(), false);

    assert_eq!(
        s.events.recv_timeout(DEADLINE).unwrap(),
        MonitorEvent::Health { fit: false }
    );
    let st = only(&s.monitors);
    assert_eq!(st.state, State::Failing);
    assert_eq!(st.detail, "exit 1: checking");
    assert_eq!(
        st.check,
        format!("exec echo checking; test -e {}", flag.display())
    );

    std::fs::write(&flag, "").unwrap();
    assert_eq!(
        s.events.recv_timeout(DEADLINE).unwrap(),
        MonitorEvent::Health { fit: true }
    );
    wait_until("state ok", || only(&s.monitors).state == State::Ok);
    assert_eq!(only(&s.monitors).detail, "checking");
}

#[test]
fn restart_that_fixes_the_service_prevents_failover() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sink = Arc::new(RecordingSink::default());
    let accepted = Arc::new(Mutex::new(None));
    let slot = accepted.clone();
    *sink.on_restart.lock().unwrap() = Some(Box::new(move || {
        // The "service" comes back on its port.
        let l = TcpListener::bind(("127.0.0.1", port)).unwrap();
        *slot.lock().unwrap() = Some(serve_tcp(l));
    }));
    let mut m = monitor(
        "mysql",
        tcp(port),
        vec![
            AlertConfig::Failover,
            AlertConfig::Mail {
                subject: "MYSQL monitor is requesting failover".into(),
                to: vec![],
            },
        ],
    );
    m.restart = Some("mysqld".into());
    let s = start(vec![m], sink.clone(), true);
    wait_until("the first passing check", || {
        only(&s.monitors).state == State::Ok
    });

    drop(listener);
    wait_until("the restart", || sink.restarts.lock().unwrap().len() == 1);
    assert_eq!(sink.restarts.lock().unwrap()[0], "mysqld");
    // The re-check and a few regular checks reach the re-opened port.
    let count = accepted.lock().unwrap().clone().unwrap();
    wait_until("checks after the restart", || {
        count.load(Ordering::SeqCst) >= 3
    });
    wait_until("state ok", || only(&s.monitors).state == State::Ok);
    assert_eq!(s.events.try_recv(), Err(mpsc::TryRecvError::Empty));
    assert!(sink.mails.lock().unwrap().is_empty());
    assert_eq!(sink.restarts.lock().unwrap().len(), 1);
}

#[test]
fn restart_that_does_not_help_leads_to_failover() {
    let port = closed_port();
    let sink = Arc::new(RecordingSink::default());
    let mut m = monitor("mysql", tcp(port), vec![AlertConfig::Failover]);
    m.restart = Some("mysqld".into());
    let s = start(vec![m], sink.clone(), true);
    assert!(matches!(
        s.events.recv_timeout(DEADLINE).unwrap(),
        MonitorEvent::Failover { .. }
    ));
    // The restart came first.
    assert_eq!(sink.restarts.lock().unwrap().as_slice(), ["mysqld"]);
}

#[test]
fn numalerts_one_sends_one_mail_per_episode() {
    let sink = Arc::new(RecordingSink::default());
    let mut m = monitor(
        "mysql",
        tcp(closed_port()),
        vec![AlertConfig::Mail {
            subject: "MYSQL monitor is requesting failover".into(),
            to: vec!["admin@example.org".into()],
        }],
    );
    m.numalerts = 1;
    let s = start(vec![m], sink.clone(), true);

    wait_until("the mail", || !sink.mails.lock().unwrap().is_empty());
    let failures = only(&s.monitors).failures;
    wait_until("several more failing checks", || {
        only(&s.monitors).failures >= failures + 5
    });
    let mails = sink.mails.lock().unwrap().clone();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let (to, subject, body) = &mails[0];
    assert_eq!(to, &["admin@example.org".to_string()]);
    assert_eq!(subject, "MYSQL monitor is requesting failover");
    assert!(body.contains("Monitor:  mysql"), "{body}");
    assert!(body.contains("Detail:   connect to localhost:"), "{body}");
    assert!(body.contains("Node:     "), "{body}");
    assert_eq!(only(&s.monitors).alerts_fired, 1);
    assert_eq!(s.events.try_recv(), Err(mpsc::TryRecvError::Empty));
}

#[test]
fn active_monitor_runs_only_while_holding_the_group() {
    let s = start(
        vec![monitor(
            "mysql",
            tcp(closed_port()),
            vec![AlertConfig::Failover],
        )],
        Arc::default(),
        false,
    );
    let st = only(&s.monitors);
    assert_eq!((st.state, st.next_check_ms), (State::Paused, None));
    // Several intervals pass without a check.
    std::thread::sleep(Duration::from_millis(500));
    let st = only(&s.monitors);
    assert_eq!((st.state, st.last_check), (State::Paused, None));
    assert_eq!(s.events.try_recv(), Err(mpsc::TryRecvError::Empty));

    s.holding.send(true).unwrap();
    wait_until("the monitor to resume", || {
        only(&s.monitors).state != State::Paused
    });
    assert!(matches!(
        s.events.recv_timeout(DEADLINE).unwrap(),
        MonitorEvent::Failover { .. }
    ));

    s.holding.send(false).unwrap();
    wait_until("the pause", || {
        let st = only(&s.monitors);
        st.state == State::Paused && st.failures == 0
    });
}

#[test]
fn alerts_wait_for_the_period() {
    let sink = Arc::new(RecordingSink::default());
    let inside = Arc::new(AtomicBool::new(false));
    let flag = inside.clone();
    let period: Period = Box::new(move |_now| flag.load(Ordering::SeqCst));
    let mut m = monitor(
        "mysql",
        tcp(closed_port()),
        vec![AlertConfig::Mail {
            subject: "down".into(),
            to: vec![],
        }],
    );
    m.numalerts = 1;
    let s = start_with_periods(vec![(m, Some(period))], sink.clone(), true);

    wait_until("several failing checks", || only(&s.monitors).failures >= 4);
    assert!(sink.mails.lock().unwrap().is_empty());
    assert_eq!(only(&s.monitors).alerts_fired, 0);

    inside.store(true, Ordering::SeqCst);
    wait_until("the mail", || sink.mails.lock().unwrap().len() == 1);
}
