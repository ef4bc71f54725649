//! Service resources: a systemd unit, a SysV init script, or start/stop/status commands.
//!
//! Every run is bounded by the resource's timeout (`crate::command::run`).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use super::ResourceState;
use crate::command::{run, Outcome};
use crate::config::ServiceManager;

/// Heartbeat's own directory of resource scripts, searched after `init_dir`.
pub const HA_RESOURCE_DIR: &str = "/etc/ha.d/resource.d";
/// Upper bound for status checks: status must stay cheap.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// How a service is run, once resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    Systemd,
    Sysv(PathBuf),
    Command {
        start: String,
        stop: String,
        status: Option<String>,
    },
}

impl Backend {
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Systemd => "systemd",
            Backend::Sysv(_) => "sysv",
            Backend::Command { .. } => "command",
        }
    }
}

/// Where to look for a service and how to ask systemd about it; a seam for tests.
pub struct Lookup<'a> {
    pub init_dir: &'a Path,
    pub resource_dir: &'a Path,
    /// Whether systemd is running this host and knows the unit.
    pub systemd_knows: &'a dyn Fn(&str) -> bool,
}

pub struct ServiceSpec {
    pub name: String,
    pub manager: ServiceManager,
    pub start: Option<String>,
    pub stop: Option<String>,
    pub status: Option<String>,
    pub timeout: Duration,
}

/// Picks the backend. `auto` with `start`/`stop` given means those commands (an admin who
/// wrote them meant them); otherwise systemd when it knows the unit, else an executable
/// script in `init_dir`, else in Heartbeat's resource directory.
pub fn resolve(spec: &ServiceSpec, lookup: &Lookup) -> Result<Backend> {
    let commands = || match (&spec.start, &spec.stop) {
        (Some(start), Some(stop)) => Ok(Backend::Command {
            start: start.clone(),
            stop: stop.clone(),
            status: spec.status.clone(),
        }),
        _ => bail!("needs both `start` and `stop` commands"),
    };
    let script = || {
        [lookup.init_dir, lookup.resource_dir]
            .iter()
            .map(|d| d.join(&spec.name))
            .find(|p| is_executable(p))
    };
    match spec.manager {
        ServiceManager::Command => commands(),
        ServiceManager::Systemd => Ok(Backend::Systemd),
        ServiceManager::Sysv => script().map(Backend::Sysv).ok_or_else(|| {
            anyhow!(
                "no executable init script {} in {} or {}",
                spec.name,
                lookup.init_dir.display(),
                lookup.resource_dir.display()
            )
        }),
        ServiceManager::Auto => {
            if spec.start.is_some() || spec.stop.is_some() {
                return commands();
            }
            if (lookup.systemd_knows)(&spec.name) {
                return Ok(Backend::Systemd);
            }
            script().map(Backend::Sysv).ok_or_else(|| {
                anyhow!(
                    "systemd does not know {0}, and there is no executable {1}/{0} or {2}/{0}",
                    spec.name,
                    lookup.init_dir.display(),
                    lookup.resource_dir.display()
                )
            })
        }
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Whether `systemctl` is installed and `systemctl cat NAME` knows the unit. On a host not
/// booted with systemd `systemctl cat` fails, which is the right answer.
pub fn systemd_knows(name: &str) -> bool {
    let installed = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| is_executable(&d.join("systemctl"))))
        .unwrap_or(false);
    installed
        && run(
            Command::new("systemctl").args(["cat", "--", name]),
            STATUS_TIMEOUT,
        )
        .map(|o| o.success())
        .unwrap_or(false)
}

pub struct ServiceResource {
    spec: ServiceSpec,
    init_dir: PathBuf,
}

impl ServiceResource {
    pub fn new(spec: ServiceSpec, init_dir: PathBuf) -> ServiceResource {
        ServiceResource { spec, init_dir }
    }

    /// For logs on the critical path: no lookup.
    pub fn label(&self) -> String {
        format!("service {}", self.spec.name)
    }

    pub fn service_name(&self) -> &str {
        &self.spec.name
    }

    /// Resolved at every use: a unit or script installed after start-up is found.
    pub fn backend(&self) -> Result<Backend> {
        resolve(
            &self.spec,
            &Lookup {
                init_dir: &self.init_dir,
                resource_dir: Path::new(HA_RESOURCE_DIR),
                systemd_knows: &systemd_knows,
            },
        )
    }

    /// `service mysqld (sysv)`.
    pub fn name(&self) -> String {
        match self.backend() {
            Ok(b) => format!("service {} ({})", self.spec.name, b.kind()),
            Err(_) => format!("service {} (not found)", self.spec.name),
        }
    }

    fn command(&self, backend: &Backend, action: Action) -> Option<Command> {
        let shell = |line: &str| {
            let mut c = Command::new("sh");
            c.arg("-c").arg(line);
            c
        };
        Some(match backend {
            Backend::Systemd => {
                let mut c = Command::new("systemctl");
                let verb = match action {
                    Action::Start => "start",
                    Action::Stop => "stop",
                    Action::Status => "is-active",
                };
                c.args([verb, "--", &self.spec.name]);
                c
            }
            Backend::Sysv(script) => {
                let mut c = Command::new(script);
                c.arg(action.verb());
                c
            }
            Backend::Command {
                start,
                stop,
                status,
            } => match action {
                Action::Start => shell(start),
                Action::Stop => shell(stop),
                Action::Status => shell(status.as_deref()?),
            },
        })
    }

    fn act(&self, action: Action) -> Result<()> {
        let backend = self.backend()?;
        let Some(mut cmd) = self.command(&backend, action) else {
            return Ok(());
        };
        let outcome = run(&mut cmd, self.spec.timeout)?;
        if !outcome.success() {
            bail!("{} {}", action.verb(), outcome.describe(self.spec.timeout));
        }
        Ok(())
    }

    pub fn start(&self) -> Result<()> {
        self.act(Action::Start)
    }

    pub fn stop(&self) -> Result<()> {
        self.act(Action::Stop)
    }

    /// Name, state and detail, resolving the backend once.
    pub fn status(&self) -> (String, ResourceState, String) {
        let backend = match self.backend() {
            Ok(b) => b,
            Err(e) => {
                let name = format!("service {} (not found)", self.spec.name);
                return (name, ResourceState::Unknown, format!("{e:#}"));
            }
        };
        let name = format!("service {} ({})", self.spec.name, backend.kind());
        let Some(mut cmd) = self.command(&backend, Action::Status) else {
            return (name, ResourceState::Unknown, "no status command".into());
        };
        let timeout = self.spec.timeout.min(STATUS_TIMEOUT);
        match run(&mut cmd, timeout) {
            Ok(o) => (name, status_state(&backend, &o), o.describe(timeout)),
            Err(e) => (name, ResourceState::Unknown, format!("{e:#}")),
        }
    }
}

/// Reads a status run. LSB init scripts: 0 running, 1–3 not running (dead with a pid or lock
/// file, or stopped), 4 unknown. systemctl is-active: 0 active, else down unless the unit is
/// between states. Commands: 0 up, anything else down.
fn status_state(backend: &Backend, o: &Outcome) -> ResourceState {
    match (backend, o.code) {
        (_, None) => ResourceState::Unknown,
        (_, Some(0)) => ResourceState::Up,
        (Backend::Sysv(_), Some(1..=3)) => ResourceState::Down,
        (Backend::Sysv(_), Some(_)) => ResourceState::Unknown,
        (Backend::Systemd, Some(_)) => {
            if ["activating", "deactivating", "reloading", "refreshing"]
                .contains(&o.last_line.as_str())
            {
                ResourceState::Unknown
            } else {
                ResourceState::Down
            }
        }
        (Backend::Command { .. }, Some(_)) => ResourceState::Down,
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Start,
    Stop,
    Status,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Status => "status",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn spec(name: &str, manager: ServiceManager) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            manager,
            start: None,
            stop: None,
            status: None,
            timeout: Duration::from_secs(5),
        }
    }

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    #[test]
    fn resolution_order() {
        let init = tempfile::tempdir().unwrap();
        let hard = tempfile::tempdir().unwrap();
        let knows_httpd = |n: &str| n == "httpd";
        let lookup = Lookup {
            init_dir: init.path(),
            resource_dir: hard.path(),
            systemd_knows: &knows_httpd,
        };
        let auto = |n: &str| resolve(&spec(n, ServiceManager::Auto), &lookup);

        // systemd first, even when a script exists too.
        script(init.path(), "httpd", "exit 0");
        assert_eq!(auto("httpd").unwrap(), Backend::Systemd);
        // Then init_dir, then Heartbeat's resource.d.
        let mysqld = script(init.path(), "mysqld", "exit 0");
        assert_eq!(auto("mysqld").unwrap(), Backend::Sysv(mysqld));
        let smb = script(hard.path(), "smb", "exit 0");
        assert_eq!(auto("smb").unwrap(), Backend::Sysv(smb));
        // A file that is not executable is no init script.
        std::fs::write(init.path().join("dhcpd"), "#!/bin/sh\n").unwrap();
        let e = auto("dhcpd").unwrap_err().to_string();
        assert!(e.contains("systemd does not know dhcpd"), "{e}");
        // Explicit managers.
        assert_eq!(
            resolve(&spec("x", ServiceManager::Systemd), &lookup).unwrap(),
            Backend::Systemd
        );
        assert!(resolve(&spec("httpd2", ServiceManager::Sysv), &lookup).is_err());
        assert!(resolve(&spec("x", ServiceManager::Command), &lookup).is_err());
        let mut cmd = spec("x", ServiceManager::Auto);
        cmd.start = Some("true".into());
        cmd.stop = Some("true".into());
        assert!(matches!(
            resolve(&cmd, &lookup).unwrap(),
            Backend::Command { .. }
        ));
    }

    #[test]
    fn run_captures_last_line_and_code() {
        let o = run(
            Command::new("sh").args(["-c", "echo one; echo two >&2; echo; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(o.code, Some(3));
        assert_eq!(o.last_line, "two");
        assert_eq!(o.describe(Duration::from_secs(5)), "exit 3: two");
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let started = Instant::now();
        // The grandchild would write the marker after 2 s unless its group is killed.
        let line = format!(
            "(sleep 2; touch {}) & echo waiting; sleep 30",
            marker.display()
        );
        let o = run(
            Command::new("sh").args(["-c", &line]),
            Duration::from_millis(300),
        )
        .unwrap();
        assert!(o.timed_out);
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(o
            .describe(Duration::from_millis(300))
            .contains("timed out after 300ms: waiting"));
        std::thread::sleep(Duration::from_millis(2500));
        assert!(
            !marker.exists(),
            "a child of the timed-out command survived"
        );
    }

    #[test]
    fn a_daemon_holding_stdout_does_not_block() {
        let started = Instant::now();
        let o = run(
            Command::new("sh").args(["-c", "setsid sleep 3 & echo started"]),
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(o.success());
        assert_eq!(o.last_line, "started");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn sysv_status_codes() {
        let sysv = Backend::Sysv("/x".into());
        let o = |code| Outcome {
            code: Some(code),
            timed_out: false,
            last_line: String::new(),
        };
        assert_eq!(status_state(&sysv, &o(0)), ResourceState::Up);
        assert_eq!(status_state(&sysv, &o(3)), ResourceState::Down);
        assert_eq!(status_state(&sysv, &o(4)), ResourceState::Unknown);
    }

    #[test]
    fn sysv_script_gets_start_and_stop() {
        let init = tempfile::tempdir().unwrap();
        let log = init.path().join("log");
        script(
            init.path(),
            "mysqld",
            &format!(
                "echo \"$1\" >> {}; [ \"$1\" = status ] && exit 3; exit 0",
                log.display()
            ),
        );
        let mut s = spec("mysqld", ServiceManager::Sysv);
        s.timeout = Duration::from_secs(5);
        let r = ServiceResource::new(s, init.path().into());
        assert_eq!(r.name(), "service mysqld (sysv)");
        r.start().unwrap();
        r.stop().unwrap();
        assert_eq!(r.status().1, ResourceState::Down);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "start\nstop\nstatus\n"
        );
    }

    #[test]
    fn failed_start_names_the_cause() {
        let mut s = spec("web", ServiceManager::Command);
        s.start = Some("echo 'port 80 in use' >&2; exit 1".into());
        s.stop = Some("true".into());
        let r = ServiceResource::new(s, "/nonexistent".into());
        let e = r.start().unwrap_err().to_string();
        assert_eq!(e, "start exit 1: port 80 in use");
        assert_eq!(r.status().2, "no status command");
    }
}
