//! Helpers for end-to-end tests: network namespaces that always clean up after themselves, veth
//! links between them, and processes run inside them.
//!
//! Tests that need root (namespaces, QEMU) call [`require_root`]: outside CI they are skipped on a
//! machine without root, but with `CI=true` they fail, because CI must run them.

pub mod ganesha;
pub mod ha;
pub mod master;
pub mod nfsroot;

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

pub mod qemu;

/// True when the test may run: root is available. Panics under `CI=true` when it is not.
pub fn require_root(test: &str) -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
            panic!("{test} needs root (network namespaces), and CI must run it");
        }
        eprintln!("skipping {test}: needs root");
    }
    root
}

/// Panics under `CI=true` when `program` is missing (so CI cannot pass without it); outside CI
/// prints a note and returns false.
pub fn require_program(test: &str, program: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
            panic!("{test} needs `{program}`; .ci/run must install it");
        }
        eprintln!("skipping {test}: `{program}` is not installed");
    }
    found
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short name (interface names are limited to 15 bytes).
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    format!("{prefix}{pid}x{n}")
}

/// Runs a command, failing with its stderr when it does not succeed.
pub fn run(program: &str, args: &[&str]) -> Result<Output> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A network namespace, deleted (with every process still inside it killed) when dropped.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(prefix: &str) -> Result<Netns> {
        let name = unique_name(prefix);
        run("ip", &["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// A command that will run inside the namespace (not started).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command inside the namespace to completion, failing on a non-zero exit.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<Output> {
        let out = self.command(program).args(args).output()?;
        if !out.status.success() {
            bail!(
                "{program} {} in {} failed: {}",
                args.join(" "),
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out)
    }

    /// Starts a command inside the namespace; it is killed when the returned guard drops.
    pub fn spawn(&self, program: &str, args: &[&str]) -> Result<ChildGuard> {
        let child = self
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {program} in {}", self.name))?;
        Ok(ChildGuard(child))
    }

    /// Adds an address to an interface of this namespace and brings it up.
    pub fn addr(&self, dev: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "add", cidr, "dev", dev])?;
        self.ip(&["link", "set", dev, "up"])?;
        Ok(())
    }

    /// The PIDs of the processes inside the namespace.
    pub fn pids(&self) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Connects two namespaces with a veth pair; returns the interface names (in `a`, in `b`).
pub fn veth(a: &Netns, b: &Netns) -> Result<(String, String)> {
    let ia = unique_name("va");
    let ib = unique_name("vb");
    run(
        "ip",
        &[
            "link", "add", &ia, "netns", &a.name, "type", "veth", "peer", "name", &ib, "netns",
            &b.name,
        ],
    )?;
    Ok((ia, ib))
}

/// A child process killed (and reaped) on drop.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout`. For waiting on
/// readiness, never as a performance assertion.
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if std::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Calls `f` until it returns Ok or `timeout` has passed (every 500 ms); then its last error,
/// with `what` and the timeout as context. For checks whose failure says why (unlike
/// [`wait_for`], which only knows "not yet").
pub fn retry<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> Result<T>,
) -> Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(e.context(format!("{what}: still failing after {timeout:?}")))
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(500)),
        }
    }
}

/// The `clustermaker` binary built by cargo for these tests.
pub fn clustermaker_bin() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("CLUSTERMAKER_BIN") {
        return p.into();
    }
    // tests/ is a workspace member; its target dir holds the appliance binary after a workspace build.
    let exe = std::env::current_exe().expect("current exe");
    let target_profile = exe.parent().and_then(|d| d.parent()).expect("target dir");
    target_profile.join("clustermaker")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_removed_on_drop() {
        if !require_root("namespaces_are_removed_on_drop") {
            return;
        }
        let a = Netns::new("cmt").unwrap();
        let b = Netns::new("cmt").unwrap();
        let (ia, ib) = veth(&a, &b).unwrap();
        a.addr(&ia, "10.231.0.1/24").unwrap();
        b.addr(&ib, "10.231.0.2/24").unwrap();
        b.run("ping", &["-c1", "-W2", "10.231.0.1"]).unwrap();
        let name = a.name.clone();
        drop(a);
        let list = String::from_utf8(run("ip", &["netns", "list"]).unwrap().stdout).unwrap();
        assert!(!list.contains(&name));
    }
}
