//! What every benchmark stands on: network namespaces, server processes and scratch
//! directories that are always removed (when dropped, when a benchmark fails, and on Ctrl-C or
//! SIGTERM), and client processes timed from spawn to exit.
//!
//! Cleanup on a signal: [`install_signal_cleanup`] blocks SIGINT/SIGTERM/SIGHUP in the process
//! and waits for them on a dedicated thread, which kills every registered process, deletes
//! every registered namespace and directory, and exits. Children run in their own process
//! group (a Ctrl-C on the terminal reaches only us, and we clean up in order) and with
//! `PR_SET_PDEATHSIG` (if we are killed outright they die with us); namespaces left by a
//! process that was SIGKILLed are removed at the next start ([`remove_stale_namespaces`]).

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// Prefix of every namespace this harness creates: `cmb-<pid>-<n>`.
const NETNS_PREFIX: &str = "cmb-";

// ---------------------------------------------------------------------------------------------
// The cleanup registry
// ---------------------------------------------------------------------------------------------

enum Item {
    Pid(i32),
    Netns(String),
    Dir(PathBuf),
}

struct Registry {
    next: u64,
    items: Vec<(u64, Item)>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    next: 0,
    items: Vec::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

fn register(item: Item) -> u64 {
    let mut r = registry();
    r.next += 1;
    let id = r.next;
    r.items.push((id, item));
    id
}

fn unregister(id: u64) {
    registry().items.retain(|(i, _)| *i != id);
}

/// Kills every registered process, deletes every registered namespace and directory (newest
/// first), and exits — all while holding the registry lock, so the main thread, which
/// registers everything before creating it, cannot start anything new meanwhile.
fn cleanup_all_and_exit(code: i32) -> ! {
    let mut r = registry();
    let items = std::mem::take(&mut r.items);
    for (_, item) in items.into_iter().rev() {
        match item {
            Item::Pid(pid) => unsafe {
                libc::kill(pid, libc::SIGKILL);
                // Reap it (bounded: SIGKILL is prompt unless the process is stuck in the kernel).
                for _ in 0..100 {
                    if libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) != 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            },
            Item::Netns(name) => delete_netns(&name),
            Item::Dir(path) => {
                let _ = fs::remove_dir_all(path);
            }
        }
    }
    std::process::exit(code)
}

/// Blocks SIGINT, SIGTERM and SIGHUP and handles them on a thread that cleans up and exits
/// with 128 + the signal number. Call before any other thread is started (the mask is
/// inherited by threads; child processes get a clean mask from `std::process`).
pub fn install_signal_cleanup() -> Result<()> {
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            bail!("pthread_sigmask: {}", std::io::Error::from_raw_os_error(rc));
        }
        let set_copy = set;
        std::thread::Builder::new()
            .name("bench-signals".into())
            .spawn(move || {
                let mut sig: libc::c_int = 0;
                if libc::sigwait(&set_copy, &mut sig) == 0 {
                    eprintln!("\nbench: signal {sig}: stopping servers, deleting namespaces and scratch directories");
                    cleanup_all_and_exit(128 + sig);
                }
            })
            .context("cannot start the signal thread")?;
    }
    Ok(())
}

pub fn require_root() -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks need root (they create network namespaces); run as root, e.g. `sudo -E cargo xtask bench`");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Network namespaces
// ---------------------------------------------------------------------------------------------

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn next_n() -> u32 {
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

fn delete_netns(name: &str) {
    // Kill whatever still runs inside, then delete (`ip netns del` only unmounts the handle).
    if let Ok(out) = Command::new("ip").args(["netns", "pids", name]).output() {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// Deletes namespaces named `cmb-<pid>-…` whose process no longer exists (a bench run that was
/// killed with SIGKILL could not clean up).
pub fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("bench: removing namespace {name} left by an earlier run");
            delete_netns(name);
        }
    }
}

/// Runs a command to completion; fails with its stderr.
pub fn run_cmd(cmd: &mut Command) -> Result<std::process::Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{:?} failed ({}): {}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// A network namespace, deleted (with every process inside killed) on drop.
pub struct Netns {
    pub name: String,
    handle: File,
    reg: u64,
    /// False for an adopted namespace: its owner deletes it (we only do on a signal).
    owned: bool,
}

impl Netns {
    /// Takes over a namespace somebody else made (e.g. the QEMU lab of cm-tests) for running
    /// commands in it and for the Ctrl-C cleanup; its owner deletes it otherwise.
    pub fn adopt(name: &str) -> Result<Netns> {
        let handle = File::open(format!("/run/netns/{name}"))
            .with_context(|| format!("cannot open /run/netns/{name}"))?;
        let reg = register(Item::Netns(name.to_string()));
        Ok(Netns {
            name: name.to_string(),
            handle,
            reg,
            owned: false,
        })
    }

    pub fn new() -> Result<Netns> {
        let name = format!("{NETNS_PREFIX}{}-{}", std::process::id(), next_n());
        // Registered before it exists (see cleanup_all_and_exit).
        let reg = register(Item::Netns(name.clone()));
        let made = run_cmd(Command::new("ip").args(["netns", "add", &name])).and_then(|_| {
            File::open(format!("/run/netns/{name}"))
                .with_context(|| format!("cannot open /run/netns/{name}"))
        });
        let handle = match made {
            Ok(f) => f,
            Err(e) => {
                delete_netns(&name);
                unregister(reg);
                return Err(e);
            }
        };
        let ns = Netns {
            name,
            handle,
            reg,
            owned: true,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) -> Result<()> {
        run_cmd(Command::new("ip").arg("-n").arg(&self.name).args(args))?;
        Ok(())
    }

    /// A command that runs inside this namespace. It enters with `setns` between fork and
    /// exec: no `ip netns exec` process (and its mount work) in front of the timed program.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let fd = self.handle.as_raw_fd();
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Moves the calling thread into this namespace (threads it starts afterwards inherit it).
    /// For a thread made for this purpose only: it stays there.
    pub fn enter_current_thread(&self) -> Result<()> {
        if unsafe { libc::setns(self.handle.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setns into {}", self.name));
        }
        Ok(())
    }

    /// The PIDs of the processes inside (`ip netns pids`).
    pub fn pids(&self) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .stderr(Stdio::null())
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
        if self.owned {
            delete_netns(&self.name);
        }
        unregister(self.reg);
    }
}

/// A unique interface name (at most 15 bytes).
pub fn ifname(prefix: &str) -> String {
    format!("{prefix}{}x{}", std::process::id() % 100_000, next_n())
}

/// Joins two namespaces with a veth pair, an address on each end; returns the interface
/// names (in `a`, in `b`).
pub fn veth(a: &Netns, a_cidr: &str, b: &Netns, b_cidr: &str) -> Result<(String, String)> {
    let a_if = ifname("cba");
    let b_if = ifname("cbb");
    run_cmd(Command::new("ip").args([
        "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
        &b.name,
    ]))?;
    a.ip(&["addr", "add", a_cidr, "dev", &a_if])?;
    b.ip(&["addr", "add", b_cidr, "dev", &b_if])?;
    a.ip(&["link", "set", &a_if, "up"])?;
    b.ip(&["link", "set", &b_if, "up"])?;
    Ok((a_if, b_if))
}

// ---------------------------------------------------------------------------------------------
// Scratch directories
// ---------------------------------------------------------------------------------------------

/// A scratch directory, removed on drop. `on_disk` chooses the system temp dir (a real disk,
/// where fsync costs what it costs); otherwise `/dev/shm` when present, so served files and
/// downloads never wait on a disk.
pub struct TempDir {
    pub path: PathBuf,
    reg: u64,
}

impl TempDir {
    pub fn new(tag: &str, on_disk: bool) -> Result<TempDir> {
        let base = if !on_disk && Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let path = base.join(format!(
            "cm-bench-{}-{}-{tag}",
            std::process::id(),
            next_n()
        ));
        // Registered before it exists (see cleanup_all_and_exit); the guard removes it on error.
        let reg = register(Item::Dir(path.clone()));
        let dir = TempDir { path, reg };
        fs::create_dir(&dir.path)
            .with_context(|| format!("cannot create {}", dir.path.display()))?;
        // Servers that drop privileges (tftpd-hpa, atftpd, dnsmasq) must be able to read.
        fs::set_permissions(&dir.path, fs::Permissions::from_mode(0o755))?;
        Ok(dir)
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
        unregister(self.reg);
    }
}

/// A directory somebody else made, removed on drop and on Ctrl-C.
pub struct AdoptedDir {
    path: PathBuf,
    reg: u64,
}

impl AdoptedDir {
    pub fn new(path: &Path) -> AdoptedDir {
        AdoptedDir {
            path: path.to_path_buf(),
            reg: register(Item::Dir(path.to_path_buf())),
        }
    }
}

impl Drop for AdoptedDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
        unregister(self.reg);
    }
}

/// Creates a world-readable directory (and parents).
pub fn mkdir_readable(path: &Path) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Writes a world-readable file.
pub fn write_readable(path: &Path, data: &[u8]) -> Result<()> {
    fs::write(path, data).with_context(|| format!("cannot write {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// The last `max` bytes of a log file, for error messages.
pub fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(max)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    s.trim().to_string()
}

fn prepare(cmd: &mut Command, log: &Path) -> Result<()> {
    let out = File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
    Ok(())
}

/// A server process: output to a log file; SIGTERM, then SIGKILL, on drop.
pub struct Server {
    pub name: String,
    pub log: PathBuf,
    child: Option<Child>,
    reg: u64,
}

impl Server {
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Server> {
        prepare(&mut cmd, log)?;
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        let reg = register(Item::Pid(child.id() as i32));
        Ok(Server {
            name: name.to_string(),
            log: log.to_path_buf(),
            child: Some(child),
            reg,
        })
    }

    /// Fails (with the end of its log) when the server has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited ({}) — its log:\n{}",
                    self.name,
                    describe(status),
                    tail(&self.log, 3000)
                );
            }
        }
        Ok(())
    }

    /// Error text for "started but does not serve": the end of its log.
    pub fn not_serving(&mut self, what: &str) -> anyhow::Error {
        if let Err(e) = self.check_running() {
            return e;
        }
        anyhow!(
            "{} is running but {what} — its log:\n{}",
            self.name,
            tail(&self.log, 3000)
        )
    }

    /// SIGTERM, up to `grace` for it to exit, then SIGKILL.
    pub fn stop(mut self, grace: Duration) {
        self.stop_inner(grace);
    }

    fn stop_inner(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
        }
        let _ = child.wait();
        unregister(self.reg);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_inner(Duration::from_secs(2));
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (_, Some(s)) => format!("signal {s}"),
        _ => status.to_string(),
    }
}

/// A client run: its exit status and its output.
pub struct ClientRun {
    pub status: ExitStatus,
    pub log: PathBuf,
}

/// Starts every command at once and waits for all of them, at most `timeout` (then kills the
/// rest and fails). Returns the wall time from before the first spawn to the last exit, and
/// each client's own time. Exit is observed with `waitid(WNOWAIT)` on a thread per client, so
/// a client is never reaped (its PID never reused) before the timeout logic is done with it.
pub fn run_clients(
    cmds: Vec<(Command, PathBuf)>,
    timeout: Duration,
) -> Result<(Duration, Vec<ClientRun>)> {
    let mut children: Vec<(Child, PathBuf, u64)> = Vec::with_capacity(cmds.len());
    let (tx, rx) = mpsc::channel::<(usize, Instant)>();
    let mut prepared = Vec::with_capacity(cmds.len());
    for (mut cmd, log) in cmds {
        prepare(&mut cmd, &log)?;
        prepared.push((cmd, log));
    }
    let start = Instant::now();
    let mut spawn_error = None;
    for (i, (mut cmd, log)) in prepared.into_iter().enumerate() {
        match cmd.spawn() {
            Ok(child) => {
                let pid = child.id();
                let reg = register(Item::Pid(pid as i32));
                children.push((child, log, reg));
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
                    loop {
                        let rc = unsafe {
                            libc::waitid(
                                libc::P_PID,
                                pid as libc::id_t,
                                &mut info,
                                libc::WEXITED | libc::WNOWAIT,
                            )
                        };
                        if rc == 0
                            || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
                        {
                            break;
                        }
                    }
                    let _ = tx.send((i, Instant::now()));
                });
            }
            Err(e) => {
                spawn_error = Some(anyhow!("cannot start {cmd:?}: {e}"));
                break;
            }
        }
    }
    drop(tx);
    let n = children.len();
    let mut ended: Vec<Option<Instant>> = vec![None; n];
    let deadline = start + timeout;
    let mut remaining = if spawn_error.is_some() { 0 } else { n };
    while remaining > 0 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok((i, at)) => {
                ended[i] = Some(at);
                remaining -= 1;
            }
            Err(_) => break,
        }
    }
    let timed_out = remaining > 0;
    let mut runs = Vec::with_capacity(n);
    for (i, (mut child, log, reg)) in children.into_iter().enumerate() {
        if ended[i].is_none() {
            let _ = child.kill();
        }
        let status = child.wait()?;
        unregister(reg);
        runs.push(ClientRun { status, log });
    }
    if let Some(e) = spawn_error {
        return Err(e);
    }
    if timed_out {
        let stuck = runs
            .iter()
            .zip(&ended)
            .find(|(_, e)| e.is_none())
            .map(|(r, _)| r);
        bail!(
            "{remaining} of {n} clients did not finish within {timeout:?}{}",
            stuck
                .map(|r| format!(" — log of one:\n{}", tail(&r.log, 1500)))
                .unwrap_or_default()
        );
    }
    let wall = ended
        .iter()
        .flatten()
        .max()
        .map(|t| *t - start)
        .unwrap_or_default();
    Ok((wall, runs))
}

/// Runs one command with a timeout; fails when it exits non-zero (with its log).
pub fn run_one(cmd: Command, log: &Path, timeout: Duration) -> Result<Duration> {
    let (wall, runs) = run_clients(vec![(cmd, log.to_path_buf())], timeout)?;
    check_success(&runs)?;
    Ok(wall)
}

/// Fails when a client exited non-zero.
pub fn check_success(runs: &[ClientRun]) -> Result<()> {
    for r in runs {
        if !r.status.success() {
            bail!(
                "client failed ({}) — its output:\n{}",
                describe(r.status),
                tail(&r.log, 1500)
            );
        }
    }
    Ok(())
}

/// Polls `check` until it succeeds or `timeout` passes; the last error is returned. For
/// readiness only, never a performance assertion.
pub fn wait_until<T>(
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Result<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(interval),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Programs
// ---------------------------------------------------------------------------------------------

/// The full path of `program` on PATH (plus /usr/sbin and /sbin, often missing for non-login
/// shells).
pub fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(program))
        .find(|p| {
            p.is_file()
                && fs::metadata(p)
                    .map(|m| m.permissions().mode() & 0o111 != 0)
                    .unwrap_or(false)
        })
}

/// Like [`find_program`], failing with the Debian package to install.
pub fn require_program(program: &str, package: &str) -> Result<PathBuf> {
    find_program(program)
        .ok_or_else(|| anyhow!("`{program}` is not installed (fix: apt-get install -y {package})"))
}

/// First line of a program's version output (`--version` or whatever `args` say).
pub fn version_line(program: &Path, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let mut text = String::from_utf8_lossy(&o.stdout).to_string();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            let line = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("");
            // `curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/7.88.1 OpenSSL/…`: up to the first
            // word with a digit (the version).
            if line.len() > 60 {
                let mut words = Vec::new();
                for w in line.split_whitespace().take(6) {
                    words.push(w);
                    if w.chars().any(|c| c.is_ascii_digit()) {
                        break;
                    }
                }
                words.join(" ")
            } else {
                line.to_string()
            }
        })
        .unwrap_or_default()
}

/// blake3 of a file, hex.
pub fn hash_file(path: &Path) -> Result<String> {
    let mut hasher = blake3::Hasher::new();
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    hasher.update_reader(&mut f)?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// Fails unless `path` has exactly the expected size and blake3 hash.
pub fn verify_download(path: &Path, expected: &Payload, who: &str) -> Result<()> {
    let len = fs::metadata(path)
        .with_context(|| format!("{who}: no output file {}", path.display()))?
        .len();
    if len != expected.len {
        bail!(
            "{who}: CORRUPT TRANSFER: {} has {len} bytes, expected {}",
            path.display(),
            expected.len
        );
    }
    let h = hash_file(path)?;
    if h != expected.blake3 {
        bail!(
            "{who}: CORRUPT TRANSFER: {} has blake3 {h}, expected {}",
            path.display(),
            expected.blake3
        );
    }
    Ok(())
}

/// A file served in a benchmark: where it is, its size and checksum, and where it came from.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Payload {
    pub len: u64,
    pub blake3: String,
    pub origin: String,
}

impl Payload {
    pub fn from_file(path: &Path, origin: String) -> Result<Payload> {
        Ok(Payload {
            len: fs::metadata(path)
                .with_context(|| format!("cannot stat {}", path.display()))?
                .len(),
            blake3: hash_file(path)?,
            origin,
        })
    }

    /// `len` pseudo-random bytes (xorshift: incompressible enough, and fast).
    pub fn random(path: &Path, len: usize, seed: u64) -> Result<Payload> {
        let mut data = vec![0u8; len];
        let mut x = seed | 1;
        for chunk in data.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        write_readable(path, &data)?;
        Payload::from_file(path, format!("{} random bytes", len))
    }
}
