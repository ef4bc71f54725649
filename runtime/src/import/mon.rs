//! mon's `mon.cf`: each `watch GROUP` / `service NAME` becomes one monitor per period (one per
//! host for the built-in TCP and HTTP checks).
//!
//! `tcp.monitor -p PORT` and `http.monitor [-p PORT] [-u PATH]` become built-in checks; any
//! other monitor runs as mon ran it (`MONDIR/name args hosts`). `cause_hb_failover.alert`
//! becomes a failover, `mail.alert` a mail, any other alert runs as a command. Global settings
//! other than `mondir` and `alertdir` have no meaning here and are dropped with a warning.

use std::time::Duration;

use super::{
    logical_lines, one_line, shell_join, valid_email, Comment, ImportError, Line, Period, Syntax,
    MAX_DURATION_SECS,
};
use crate::config::{AlertConfig, CheckConfig, HaConfig, MonitorConfig, MonitorScope};

const MON_CF: &str = "mon.cf";
/// Where Debian's mon package keeps its monitor and alert scripts.
pub const DEFAULT_MONDIR: &str = "/usr/lib/mon/mon.d";
pub const DEFAULT_ALERTDIR: &str = "/usr/lib/mon/alert.d";

/// Most hosts in one hostgroup, and most monitors one file may produce.
const MAX_HOSTS: usize = 256;
const MAX_MONITORS: usize = 1024;

struct Group {
    name: String,
    hosts: Vec<String>,
    /// Where it is defined.
    line: usize,
}

/// Every keyword of mon.cf this importer knows (a line starting with one ends a hostgroup).
const KEYWORDS: &[&str] = &[
    "hostgroup",
    "watch",
    "service",
    "interval",
    "randskew",
    "monitor",
    "period",
    "alert",
    "numalerts",
    "alertafter",
    "alertevery",
    "upalert",
    "startupalert",
    "comp_alerts",
    "no_comp_alerts",
    "ackalert",
    "description",
    "allow_empty_group",
    "traptimeout",
    "trapduration",
    "depend",
    "dep_behavior",
    "dep_memory",
    "hostdepend",
    "exclude_hosts",
    "exclude_period",
    "failure_interval",
    "redistribute",
    "unack_summary",
    "mondir",
    "alertdir",
    "cfbasedir",
    "basedir",
    "statedir",
    "logdir",
    "maxprocs",
    "histlength",
    "historicfile",
    "historictime",
    "randstart",
    "authfile",
    "authtype",
    "userfile",
    "serverbind",
    "clientallow",
    "trapbind",
    "serverport",
    "trapport",
    "snmpport",
    "pidfile",
    "syslog_facility",
    "dtlogfile",
    "dtlogging",
    "startupalerts_on_reset",
    "monerrfile",
    "monremote",
    "ocfile",
    "cltimeout",
    "snmp",
    "snmpconfpath",
    "maxkeep",
];

fn add_hosts(group: &mut Group, hosts: &[&str], no: usize) -> Result<(), ImportError> {
    for h in hosts {
        if !valid_host(h) {
            return Err(ImportError::new(
                MON_CF,
                no,
                format!("`{}` is not a host name or address", one_line(h)),
                "list host names or IP addresses",
            ));
        }
        if group.hosts.len() == MAX_HOSTS {
            return Err(ImportError::new(
                MON_CF,
                no,
                format!("hostgroup `{}` has more than {MAX_HOSTS} hosts", group.name),
                "split the group",
            ));
        }
        if !group.hosts.iter().any(|known| known == h) {
            group.hosts.push(h.to_string());
        }
    }
    Ok(())
}

struct Service {
    name: String,
    line: usize,
    group: String,
    hosts: Vec<String>,
    interval: Option<Duration>,
    randskew: Option<(Duration, usize)>,
    /// (line, monitor name, arguments)
    monitor: Option<(usize, String, Vec<String>)>,
    periods: Vec<PeriodBlock>,
}

struct PeriodBlock {
    label: Option<String>,
    spec: Option<String>,
    alerts: Vec<AlertConfig>,
    numalerts: u32,
    alertafter: u32,
}

impl PeriodBlock {
    fn new(label: Option<String>, spec: Option<String>) -> PeriodBlock {
        PeriodBlock {
            label,
            spec,
            alerts: Vec::new(),
            numalerts: 0,
            alertafter: 1,
        }
    }
}

/// Adds the watches of a mon.cf to `into.monitors`.
pub fn import(
    text: &str,
    into: &mut HaConfig,
    warnings: &mut Vec<String>,
) -> Result<(), ImportError> {
    let lines = logical_lines(
        text,
        MON_CF,
        Syntax {
            comment: Comment::LineStart,
            continuation: true,
        },
    )?;
    let err = |no: usize, what: String, fix: &str| ImportError::new(MON_CF, no, what, fix);
    let mut mondir = DEFAULT_MONDIR.to_string();
    let mut alertdir = DEFAULT_ALERTDIR.to_string();
    let mut groups: Vec<Group> = Vec::new();
    let mut open_group: Option<usize> = None;
    let mut watch: Option<(String, Vec<String>)> = None;
    let mut service: Option<Service> = None;
    let mut monitors = std::mem::take(&mut into.monitors);
    let result = (|| {
        for Line {
            no,
            text,
            after_blank,
        } in &lines
        {
            let no = *no;
            let trimmed = text.trim();
            // Non-blank lines after a hostgroup line that start with no keyword are more
            // hosts; a blank line ends the group.
            if let Some(index) = open_group.filter(|_| !after_blank) {
                let first = trimmed.split_whitespace().next().unwrap_or("");
                let first = first.split('=').next().unwrap_or("").to_ascii_lowercase();
                if !KEYWORDS.contains(&first.as_str()) {
                    let hosts: Vec<&str> = trimmed.split_whitespace().collect();
                    add_hosts(&mut groups[index], &hosts, no)?;
                    continue;
                }
            }
            open_group = None;
            let (keyword, rest) = trimmed
                .split_once(char::is_whitespace)
                .map_or((trimmed, ""), |(k, r)| (k, r.trim()));
            // Global settings are written `name = value` (or `name=value`).
            let (keyword, rest) = match keyword.split_once('=') {
                Some((k, v)) => (
                    k,
                    if v.is_empty() {
                        rest
                    } else {
                        trimmed[k.len() + 1..].trim()
                    },
                ),
                None => (
                    keyword,
                    rest.strip_prefix('=').map_or(rest, str::trim_start),
                ),
            };
            let keyword = keyword.to_ascii_lowercase();
            let words: Vec<&str> = rest.split_whitespace().collect();
            let need_service = |s: &mut Option<Service>| -> Result<(), ImportError> {
                if s.is_none() {
                    return Err(err(
                        no,
                        format!("`{keyword}` outside a service"),
                        "put it below `watch GROUP` and `service NAME`",
                    ));
                }
                Ok(())
            };
            match keyword.as_str() {
                "hostgroup" => {
                    finish(service.take(), &mondir, &mut monitors, warnings)?;
                    watch = None;
                    let [name, hosts @ ..] = words.as_slice() else {
                        return Err(err(
                            no,
                            "`hostgroup` without a name".into(),
                            "write `hostgroup NAME HOST...`",
                        ));
                    };
                    let index = match groups.iter().position(|g| g.name == *name) {
                        Some(i) => {
                            note(warnings, no, format!("hostgroup `{name}` redefined"));
                            groups[i].hosts.clear();
                            groups[i].line = no;
                            i
                        }
                        None => {
                            groups.push(Group {
                                name: name.to_string(),
                                hosts: Vec::new(),
                                line: no,
                            });
                            groups.len() - 1
                        }
                    };
                    add_hosts(&mut groups[index], hosts, no)?;
                    open_group = Some(index);
                }
                "watch" => {
                    finish(service.take(), &mondir, &mut monitors, warnings)?;
                    let [name] = words.as_slice() else {
                        return Err(err(
                            no,
                            "`watch` takes one hostgroup".into(),
                            "write `watch GROUP`",
                        ));
                    };
                    let Some(group) = groups.iter().find(|g| g.name == *name) else {
                        return Err(err(
                            no,
                            format!("hostgroup `{}` is not defined", one_line(name)),
                            "define it with `hostgroup NAME HOST...` above the watch",
                        ));
                    };
                    if group.hosts.is_empty() {
                        return Err(err(
                            group.line,
                            format!("hostgroup `{}` has no hosts", one_line(name)),
                            "list the hosts to check, e.g. `hostgroup local_mysql localhost`",
                        ));
                    }
                    watch = Some((name.to_string(), group.hosts.clone()));
                }
                "service" => {
                    finish(service.take(), &mondir, &mut monitors, warnings)?;
                    let Some((group, hosts)) = &watch else {
                        return Err(err(
                            no,
                            "`service` outside a watch".into(),
                            "put `watch GROUP` above it",
                        ));
                    };
                    let [name] = words.as_slice() else {
                        return Err(err(
                            no,
                            "`service` takes one name".into(),
                            "write `service NAME`",
                        ));
                    };
                    if !name.bytes().all(|b| b.is_ascii_graphic()) || name.len() > 64 {
                        return Err(err(
                            no,
                            format!("`{}` is not a service name", one_line(name)),
                            "use a short plain name",
                        ));
                    }
                    service = Some(Service {
                        name: name.to_string(),
                        line: no,
                        group: group.clone(),
                        hosts: hosts.clone(),
                        interval: None,
                        randskew: None,
                        monitor: None,
                        periods: Vec::new(),
                    });
                }
                "interval" | "randskew" => {
                    need_service(&mut service)?;
                    let s = service.as_mut().expect("checked");
                    let [v] = words.as_slice() else {
                        return Err(err(
                            no,
                            format!("`{keyword}` takes one time"),
                            "write e.g. `10s`, `5m`",
                        ));
                    };
                    let d = mon_time(v).ok_or_else(|| {
                        err(
                            no,
                            format!("`{}` is not a time", one_line(v)),
                            "write a number with s, m, h or d, e.g. `10s`",
                        )
                    })?;
                    if keyword == "interval" {
                        if d.is_zero() {
                            return Err(err(no, "interval 0".into(), "use at least 1s"));
                        }
                        s.interval = Some(d);
                    } else {
                        s.randskew = Some((d, no));
                    }
                }
                "monitor" => {
                    need_service(&mut service)?;
                    let s = service.as_mut().expect("checked");
                    let argv = shell_words(rest).map_err(|e| err(no, e, "close the quote"))?;
                    let Some((name, args)) = argv.split_first() else {
                        return Err(err(
                            no,
                            "`monitor` without a name".into(),
                            "write e.g. `monitor tcp.monitor -p 3306`",
                        ));
                    };
                    if s.monitor.is_some() {
                        note(warnings, no, "second `monitor` replaces the first".into());
                    }
                    s.monitor = Some((no, name.clone(), args.to_vec()));
                }
                "period" => {
                    need_service(&mut service)?;
                    let s = service.as_mut().expect("checked");
                    let (label, spec) = match rest.split_once(char::is_whitespace) {
                        Some((l, spec)) if l.ends_with(':') && !l.contains('{') => {
                            (Some(l.trim_end_matches(':').to_string()), spec.trim())
                        }
                        _ if rest.ends_with(':') && !rest.contains('{') => {
                            (Some(rest.trim_end_matches(':').to_string()), "")
                        }
                        _ => (None, rest),
                    };
                    Period::parse(spec).map_err(|e| {
                        err(
                            no,
                            format!("period `{}`: {e}", one_line(spec)),
                            "use wd {Sun-Sat}, hr {9am-5pm}, min {0-29} blocks",
                        )
                    })?;
                    s.periods.push(PeriodBlock::new(
                        label,
                        (!spec.is_empty()).then(|| spec.to_string()),
                    ));
                }
                "alert" | "numalerts" | "alertafter" | "alertevery" | "upalert"
                | "startupalert" | "comp_alerts" | "no_comp_alerts" | "ackalert" => {
                    need_service(&mut service)?;
                    let s = service.as_mut().expect("checked");
                    if s.periods.is_empty() {
                        s.periods.push(PeriodBlock::new(None, None));
                    }
                    let p = s.periods.last_mut().expect("one period at least");
                    match keyword.as_str() {
                        "alert" => {
                            let argv =
                                shell_words(rest).map_err(|e| err(no, e, "close the quote"))?;
                            if p.alerts.len() >= 32 {
                                return Err(err(
                                    no,
                                    "more than 32 alerts".into(),
                                    "keep fewer alerts",
                                ));
                            }
                            p.alerts
                                .push(alert(&argv, no, &alertdir, &s.group, &s.name, warnings)?);
                        }
                        "numalerts" => p.numalerts = count(&words, no, "numalerts")?,
                        "alertafter" => {
                            match words.as_slice() {
                                [n] if n.bytes().all(|b| b.is_ascii_digit()) => {
                                    p.alertafter = count(&words, no, "alertafter")?;
                                }
                                [n, t] if mon_time(t).is_some() => {
                                    p.alertafter = count(&[n], no, "alertafter")?;
                                    note(warnings, no, format!(
                                        "alertafter {n} {t}: the time window is dropped; alerts \
                                         fire after {n} consecutive failures"
                                    ));
                                }
                                _ => note(warnings, no, format!(
                                    "alertafter `{}` dropped: write a count of consecutive failures",
                                    one_line(rest)
                                )),
                            }
                            if p.alertafter == 0 {
                                p.alertafter = 1;
                            }
                        }
                        other => note(
                            warnings,
                            no,
                            format!(
                                "`{other}` dropped: clustermaker alerts on failure only, up to \
                             numalerts times per failure"
                            ),
                        ),
                    }
                }
                "description" | "allow_empty_group" | "traptimeout" | "trapduration" | "depend"
                | "dep_behavior" | "dep_memory" | "hostdepend" | "exclude_hosts"
                | "exclude_period" | "failure_interval" | "redistribute" | "unack_summary" => {
                    need_service(&mut service)?;
                    note(
                        warnings,
                        no,
                        format!("`{keyword}` ignored: clustermaker has no equivalent"),
                    );
                }
                "mondir" | "alertdir" if watch.is_none() => {
                    let Some(dir) = words.first().and_then(|d| d.split(':').next()) else {
                        return Err(err(
                            no,
                            format!("`{keyword}` without a directory"),
                            "write a directory",
                        ));
                    };
                    if !dir.starts_with('/') {
                        note(
                            warnings,
                            no,
                            format!(
                                "{keyword} `{}` is relative to mon's cfbasedir",
                                one_line(dir)
                            ),
                        );
                    }
                    if keyword == "mondir" {
                        mondir = dir.trim_end_matches('/').to_string();
                    } else {
                        alertdir = dir.trim_end_matches('/').to_string();
                    }
                }
                "cfbasedir"
                | "basedir"
                | "statedir"
                | "logdir"
                | "maxprocs"
                | "histlength"
                | "historicfile"
                | "historictime"
                | "randstart"
                | "authfile"
                | "authtype"
                | "userfile"
                | "serverbind"
                | "clientallow"
                | "trapbind"
                | "serverport"
                | "trapport"
                | "snmpport"
                | "pidfile"
                | "syslog_facility"
                | "dtlogfile"
                | "dtlogging"
                | "startupalerts_on_reset"
                | "monerrfile"
                | "monremote"
                | "ocfile"
                | "cltimeout"
                | "snmp"
                | "snmpconfpath"
                | "maxkeep"
                    if watch.is_none() =>
                {
                    note(
                        warnings,
                        no,
                        format!("`{keyword}` ignored: not needed by clustermaker"),
                    );
                }
                other => note(
                    warnings,
                    no,
                    format!("unknown keyword `{}` ignored", one_line(other)),
                ),
            }
            if monitors.len() > MAX_MONITORS {
                return Err(err(
                    no,
                    format!("more than {MAX_MONITORS} monitors"),
                    "split the configuration",
                ));
            }
        }
        finish(service.take(), &mondir, &mut monitors, warnings)
    })();
    into.monitors = monitors;
    result
}

/// Turns a finished `service` block into monitors.
fn finish(
    service: Option<Service>,
    mondir: &str,
    monitors: &mut Vec<MonitorConfig>,
    warnings: &mut Vec<String>,
) -> Result<(), ImportError> {
    let Some(s) = service else {
        return Ok(());
    };
    let err = |no: usize, what: String, fix: &str| ImportError::new(MON_CF, no, what, fix);
    let Some((mon_line, mon_name, args)) = &s.monitor else {
        return Err(err(
            s.line,
            format!("service `{}` has no `monitor`", s.name),
            "add e.g. `monitor tcp.monitor -p 3306`",
        ));
    };
    let interval = match s.interval {
        Some(i) => i,
        None => {
            warnings.push(format!(
                "{MON_CF}:{}: service `{}` has no interval: 10s",
                s.line, s.name
            ));
            Duration::from_secs(10)
        }
    };
    let randskew = match s.randskew {
        Some((r, no)) if r >= interval => {
            return Err(err(
                no,
                format!(
                    "randskew {} is not smaller than interval {}",
                    humantime::format_duration(r),
                    humantime::format_duration(interval)
                ),
                "make randskew smaller than the interval (mon takes about half of it)",
            ))
        }
        Some((r, _)) => r,
        None => Duration::ZERO,
    };

    // The checks: (host suffix, check, timeout)
    let mut checks: Vec<(Option<String>, CheckConfig, Option<Duration>)> = Vec::new();
    let base = mon_name.rsplit('/').next().unwrap_or(mon_name);
    let builtin = match base {
        "tcp.monitor" => builtin_args(args, &["-p", "-t"]).and_then(|o| {
            let port = o.port?;
            Some(
                s.hosts
                    .iter()
                    .map(|h| {
                        (
                            CheckConfig::Tcp {
                                host: h.clone(),
                                port,
                            },
                            h,
                            o.timeout,
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        }),
        "http.monitor" => builtin_args(args, &["-p", "-u", "-t"]).map(|o| {
            let port = o.port.unwrap_or(80);
            let path = o.path.unwrap_or_else(|| "/".into());
            s.hosts
                .iter()
                .map(|h| {
                    let host = if h.contains(':') {
                        format!("[{h}]")
                    } else {
                        h.clone()
                    };
                    let port = if port == 80 {
                        String::new()
                    } else {
                        format!(":{port}")
                    };
                    let sep = if path.starts_with('/') { "" } else { "/" };
                    (
                        CheckConfig::Http {
                            url: format!("http://{host}{port}{sep}{path}"),
                            expect: 200,
                        },
                        h,
                        o.timeout,
                    )
                })
                .collect()
        }),
        _ => None,
    };
    match builtin {
        Some(list) => {
            let several = list.len() > 1;
            for (check, host, timeout) in list {
                checks.push((several.then(|| host.clone()), check, timeout));
            }
        }
        None => {
            let script = if mon_name.contains('/') {
                mon_name.clone()
            } else {
                format!("{mondir}/{mon_name}")
            };
            let mut argv: Vec<&str> = vec![&script];
            let no_hosts = args.last().is_some_and(|a| a == ";;");
            let own = if no_hosts {
                &args[..args.len() - 1]
            } else {
                &args[..]
            };
            argv.extend(own.iter().map(String::as_str));
            if !no_hosts {
                argv.extend(s.hosts.iter().map(String::as_str));
            }
            let command = shell_join(argv);
            warnings.push(format!(
                "{MON_CF}:{mon_line}: monitor `{}` runs as `{}`: mon's monitor scripts must be \
                 there (set `mondir` at the top of mon.cf before importing, or edit the command)",
                one_line(mon_name),
                one_line(&command)
            ));
            checks.push((None, CheckConfig::Exec { command }, None));
        }
    }

    let periods = if s.periods.is_empty() {
        vec![PeriodBlock::new(None, None)]
    } else {
        s.periods
    };
    let several_periods = periods.len() > 1;
    if several_periods {
        warnings.push(format!(
            "{MON_CF}:{}: service `{}` has {} periods: one monitor each, so the check runs once \
             per period",
            s.line,
            s.name,
            periods.len()
        ));
    }
    for (i, p) in periods.iter().enumerate() {
        for (host, check, timeout) in &checks {
            let mut name = s.name.clone();
            if let Some(h) = host {
                name = format!("{name}@{h}");
            }
            if several_periods {
                match &p.label {
                    Some(l) => name = format!("{name}.{l}"),
                    None => name = format!("{name}.{}", i + 1),
                }
            }
            if monitors.iter().any(|m| m.name == name) {
                name = format!("{}/{name}", s.group);
            }
            let mut unique = name.clone();
            let mut n = 1;
            while monitors.iter().any(|m| m.name == unique) {
                n += 1;
                unique = format!("{name}-{n}");
            }
            monitors.push(MonitorConfig {
                name: unique,
                check: check.clone(),
                interval,
                randskew,
                timeout: timeout.unwrap_or(Duration::from_secs(5)),
                period: p.spec.clone(),
                alertafter: p.alertafter,
                numalerts: p.numalerts,
                restart: None,
                when: MonitorScope::Active,
                alerts: p.alerts.clone(),
            });
        }
    }
    Ok(())
}

#[derive(Default)]
struct BuiltinArgs {
    port: Option<u16>,
    path: Option<String>,
    timeout: Option<Duration>,
}

/// The options of mon's tcp.monitor and http.monitor that map onto the built-in checks;
/// `None` when anything else is there (the script then runs as it is).
fn builtin_args(args: &[String], allowed: &[&str]) -> Option<BuiltinArgs> {
    let mut out = BuiltinArgs::default();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !allowed.contains(&flag.as_str()) {
            return None;
        }
        let v = it.next()?;
        match flag.as_str() {
            "-p" => out.port = Some(v.parse().ok().filter(|p| *p != 0)?),
            "-u" => {
                if v.bytes().any(|b| b.is_ascii_control() || b == b' ') {
                    return None;
                }
                out.path = Some(v.clone());
            }
            "-t" => {
                let secs: u64 = v.parse().ok().filter(|s| (1..=3600).contains(s))?;
                out.timeout = Some(Duration::from_secs(secs));
            }
            _ => return None,
        }
    }
    Some(out)
}

fn alert(
    argv: &[String],
    no: usize,
    alertdir: &str,
    group: &str,
    service: &str,
    warnings: &mut Vec<String>,
) -> Result<AlertConfig, ImportError> {
    let Some((name, args)) = argv.split_first() else {
        return Err(ImportError::new(
            MON_CF,
            no,
            "`alert` without a name",
            "write e.g. `alert mail.alert root@localhost`",
        ));
    };
    let base = name.rsplit('/').next().unwrap_or(name);
    let mut warn = |msg: String| warnings.push(format!("{MON_CF}:{no}: {msg}"));
    Ok(match base {
        "cause_hb_failover.alert" => AlertConfig::Failover,
        "mail.alert" => {
            let mut subject = None;
            let mut to = Vec::new();
            let mut it = args.iter();
            while let Some(a) = it.next() {
                if a == "-S" {
                    subject = it.next().cloned();
                } else if a.starts_with('-') {
                    warn(format!("mail.alert option `{}` ignored", one_line(a)));
                } else if valid_email(a) {
                    to.push(a.clone());
                } else {
                    warn(format!(
                        "mail.alert address `{}` is not an e-mail address: dropped; this \
                         alert mails ha.mail.to until you set its `to`",
                        one_line(a)
                    ));
                }
            }
            AlertConfig::Mail {
                subject: subject.unwrap_or_else(|| format!("{group}/{service} failed")),
                to,
            }
        }
        _ => {
            let script = if name.contains('/') {
                name.clone()
            } else {
                format!("{alertdir}/{name}")
            };
            let command =
                shell_join(std::iter::once(script.as_str()).chain(args.iter().map(String::as_str)));
            warn(format!(
                "alert `{}` runs as `{}` with CM_MONITOR and CM_DETAIL set, without mon's \
                 -s/-g/-h arguments: check that the script copes",
                one_line(name),
                one_line(&command)
            ));
            AlertConfig::Exec { command }
        }
    })
}

fn note(warnings: &mut Vec<String>, no: usize, msg: String) {
    warnings.push(format!("{MON_CF}:{no}: {msg}"));
}

fn count(words: &[&str], no: usize, keyword: &str) -> Result<u32, ImportError> {
    match words {
        [n] => n.parse().map_err(|_| {
            ImportError::new(
                MON_CF,
                no,
                format!("`{}` is not a count", one_line(n)),
                format!("write `{keyword} 1`"),
            )
        }),
        _ => Err(ImportError::new(
            MON_CF,
            no,
            format!("`{keyword}` takes one number"),
            format!("write `{keyword} 1`"),
        )),
    }
}

/// mon's times: a number followed by `s`, `m`, `h` or `d` (seconds without a unit).
pub(crate) fn mon_time(v: &str) -> Option<Duration> {
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    if number.is_empty() || number.len() > 9 {
        return None;
    }
    let n: u64 = number.parse().ok()?;
    let secs = n.checked_mul(match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    })?;
    (secs <= MAX_DURATION_SECS).then(|| Duration::from_secs(secs))
}

fn valid_host(h: &str) -> bool {
    (1..=253).contains(&h.len())
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:%".contains(&b))
        && !h.starts_with('-')
}

/// Splits words as the shell mon runs its commands through does: blanks separate, quotes
/// group, a backslash escapes.
fn shell_words(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err("unterminated `'`".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => cur.push(c),
                            Some(c) => {
                                cur.push('\\');
                                cur.push(c);
                            }
                            None => return Err("unterminated `\"`".into()),
                        },
                        Some(c) => cur.push(c),
                        None => return Err("unterminated `\"`".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    cur.push(c);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(mon_time("10s"), Some(Duration::from_secs(10)));
        assert_eq!(mon_time("5m"), Some(Duration::from_secs(300)));
        assert_eq!(mon_time("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(mon_time("30"), Some(Duration::from_secs(30)));
        for bad in ["", "s", "10x", "1.5s", "-1s", "9999999999s", "8d"] {
            assert_eq!(mon_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn words() {
        assert_eq!(
            shell_words(r#"mail.alert -S "MYSQL monitor is requesting failover" EMAILADDRESS"#)
                .unwrap(),
            [
                "mail.alert",
                "-S",
                "MYSQL monitor is requesting failover",
                "EMAILADDRESS"
            ]
        );
        assert_eq!(
            shell_words(r#"a 'b c' d\ e "f\"g""#).unwrap(),
            ["a", "b c", "d e", "f\"g"]
        );
        assert!(shell_words("a 'b").is_err());
        assert!(shell_words("a \"b").is_err());
    }
}
