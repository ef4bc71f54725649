//! `cargo xtask demo`: a master in a private network namespace PXE-boots one QEMU node into a
//! shared root, and the node's boot stages are shown until the services of the image answer.
//!
//! Steps: install missing Debian packages, build `clustermaker` and the boot files
//! (build-image), build a small busybox root into the master's image store as image `default`
//! (`clustermaker image build default --from dir:…`), make the lab namespace (bridge `br0` at
//! 10.99.0.1/24 with a tap for the node), start the master ([`start_master`]: the one function
//! to adapt when `serve` changes), boot the node and follow its console: it mounts the image
//! from the master's NFS server, puts a tmpfs overlay on top, and runs the image's init, whose
//! web server the demo then asks for a page. Everything it started is stopped and the namespace
//! deleted on every exit path: success, error, panic, or Ctrl-C.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use cm_tests::qemu::{in_netns, Boot, BootLab, NodeOptions, QemuNode};
use cm_tests::{wait_for, ChildGuard};

use crate::build_image::{self, BuildImageArgs};
use crate::ui::{Mode, Ui};
use crate::{agent, ci};

/// What the demo needs beyond the build tools: QEMU with its iPXE option ROMs, the iPXE
/// binaries the master serves over TFTP, OVMF for `--firmware uefi`, iproute2 for the
/// namespace, binutils for `strip`.
pub const DEMO_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "ipxe-qemu",
    "ipxe",
    "ovmf",
    "iproute2",
    "binutils",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Firmware {
    /// Legacy BIOS with QEMU's iPXE option ROM
    Bios,
    /// UEFI (OVMF) with iPXE's EFI driver
    Uefi,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Node firmware
    #[arg(long, value_enum, default_value = "bios")]
    pub firmware: Firmware,
    /// The node's MAC address
    #[arg(long, default_value = "52:54:00:de:00:01")]
    pub mac: String,
    /// Boot files directory; built there unless --skip-build [default: <workspace>/target/cm-boot]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Use the boot files already in --out and target/release/clustermaker as they are
    #[arg(long)]
    pub skip_build: bool,
    /// Do not install missing Debian packages
    #[arg(long)]
    pub no_install: bool,
    /// Give up when the node is not online after this many seconds
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
    /// Keep the master and the node running after the node is online, until Ctrl-C
    #[arg(long)]
    pub stay: bool,
}

/// The boot network inside the namespace (never routed anywhere).
const MASTER_CIDR: &str = "10.99.0.1/24";
const MASTER_CIDR6: &str = "fd99::1/64";
const HTTP_PORT: u16 = 8080;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

pub fn run(args: &DemoArgs, workspace: &Path) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo makes a network namespace and tap devices, which needs root (fix: run it as root)");
    }
    // Ctrl-C stops the wait loops below; the guards then clean up. The children get the same
    // SIGINT from the terminal and exit on their own.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };

    let mut ui = Ui::new(Mode::Human, 6);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| workspace.join("target/cm-boot"));

    ui.step("Debian packages", |s| {
        if args.no_install {
            s.summary("not checked (--no-install)");
        } else {
            ci::ensure_packages(DEMO_PACKAGES)?;
            s.summary(DEMO_PACKAGES.join(" "));
        }
        Ok(())
    })?;

    let binary = ui.step("clustermaker and boot files", |s| {
        let binary = if args.skip_build {
            release_binary(workspace)?
        } else {
            s.progress("cargo build --release -p clustermaker");
            let binary = agent::build_release(workspace)?;
            s.progress("build-image");
            let mut b = BuildImageArgs::with_out(out.clone());
            b.clustermaker = Some(binary.clone());
            build_image::run(&b, workspace, &mut Ui::new(Mode::Quiet, build_image::STEPS))?;
            binary
        };
        build_image::check_output(&out)?;
        let size = fs::metadata(out.join("initramfs.img"))?.len();
        s.summary(format!(
            "{} (initramfs {:.1} MiB)",
            out.display(),
            size as f64 / 1048576.0
        ));
        Ok(binary)
    })?;

    let state = std::env::temp_dir().join("cm-demo-state");
    let _cleanup = RemoveOnDrop(state.clone());
    ui.step("shared root image", |s| {
        let _ = fs::remove_dir_all(&state);
        let root = state.join("src-root");
        let busybox = cm_tests::nfsroot::cached_busybox()?;
        cm_tests::nfsroot::build_busybox_root(&root, &busybox, 0)?;
        let (_, modules) = cm_tests::nfsroot::kernel_and_modules()?;
        let config = state.join("image.toml");
        fs::write(
            &config,
            format!("state_dir = \"{}\"\n", state.join("master").display()),
        )?;
        let out_cmd = Command::new(&binary)
            .arg("--config")
            .arg(&config)
            .args(["image", "build", "default", "--from"])
            .arg(format!("dir:{}", root.display()))
            .arg("--kernel")
            .arg(out.join("vmlinuz"))
            .arg("--modules")
            .arg(&modules)
            .arg("--busybox")
            .arg(&busybox)
            .stdin(Stdio::null())
            .output()?;
        if !out_cmd.status.success() {
            bail!(
                "clustermaker image build failed: {}",
                crate::cmd::last_line(&out_cmd.stderr)
            );
        }
        s.summary(String::from_utf8_lossy(&out_cmd.stdout).trim().to_string());
        Ok(())
    })?;

    let lab = ui.step("lab network namespace", |s| {
        let lab = BootLab::with_addresses(MASTER_CIDR, MASTER_CIDR6)?;
        s.summary(format!("{} with br0 {MASTER_CIDR}", lab.ns.name));
        Ok(lab)
    })?;

    let master = ui.step("master (clustermaker serve)", |s| {
        let m = start_master(&lab, &binary, &state.join("master"))?;
        s.summary(format!(
            "{} in {}, log {}",
            m.url,
            lab.ns.name,
            m.stderr.display()
        ));
        Ok(m)
    })?;

    let mut node = ui.step("node", |s| {
        let boot = match args.firmware {
            Firmware::Bios => Boot::BiosPxe,
            Firmware::Uefi => Boot::UefiPxe { native_pxe: false },
        };
        let node = lab.boot(&NodeOptions::new(&args.mac, boot))?;
        s.summary(format!(
            "{:?} QEMU node {} on {}, console {}",
            args.firmware,
            args.mac,
            node.tap,
            node.console_log.display()
        ));
        Ok(node)
    })?;

    let mut master = master;
    let online = match follow_console(&mut node, &master, Duration::from_secs(args.timeout)) {
        Ok(t) => t,
        Err(e) => {
            // Keep the master's configuration and log for the post-mortem (not after Ctrl-C).
            master.keep = !interrupted();
            return Err(e);
        }
    };
    ui.info(format!(
        "\nnode {} runs the shared root's init {:.1}s after power-on",
        args.mac,
        online.as_secs_f64()
    ));
    if let Some(ip) = node_ip(&node.console()) {
        let page = cm_tests::nfsroot::http_get(
            &lab.ns.name,
            SocketAddr::new(ip.into(), 80),
            "/index.html",
        );
        match page {
            Ok(body) => ui.info(format!("http://{ip}/ on the node says: {}", body.trim())),
            Err(e) => ui.info(format!("the node's web server did not answer: {e:#}")),
        }
    }
    ui.info(master.node_command(&binary, "discovered"));
    ui.info(master.node_command(&binary, "list"));
    if args.stay {
        ui.info("master and node keep running; Ctrl-C to stop and clean up");
        while !interrupted() && node.is_running() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// Removes a scratch directory on every exit path.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A running master; stopped (with its namespace's other processes) when dropped.
pub struct Master {
    pub url: String,
    pub config: PathBuf,
    /// Its standard error: the log (tracing writes there).
    pub stderr: PathBuf,
    dir: PathBuf,
    keep: bool,
    _child: ChildGuard,
}

impl Drop for Master {
    fn drop(&mut self) {
        if !self.keep {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Master {
    /// `clustermaker node SUBCOMMAND` against this master's state, for the closing summary.
    fn node_command(&self, binary: &Path, subcommand: &str) -> String {
        Command::new(binary)
            .arg("--config")
            .arg(&self.config)
            .args(["node", subcommand])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

/// Starts `clustermaker serve` inside the lab with a configuration for the lab's bridge and the
/// boot files in `boot_dir` as the default image, and waits until its HTTP port answers.
/// Starts `clustermaker serve` in the lab with `state` as its state directory (holding the
/// image store with the `default` image).
pub fn start_master(lab: &BootLab, binary: &Path, state: &Path) -> Result<Master> {
    let dir = std::env::temp_dir().join(format!("cm-demo-{}", lab.ns.name));
    fs::create_dir_all(&dir)?;
    let config = dir.join("clustermaker.toml");
    fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n\n[network]\ninterface = \"{}\"\naddress = \"{}\"\nprefix_len = {}\n\n\
             [http]\nport = {HTTP_PORT}\n\n[boot]\ncmdline = \"console=ttyS0 quiet\"\n",
            state.display(),
            lab.bridge,
            lab.addr,
            lab.prefix_len
        ),
    )?;
    let stderr = dir.join("serve.log");
    let child = lab
        .ns
        .command(binary.to_str().context("binary path is not UTF-8")?)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr)?)
        .spawn()
        .context("cannot start clustermaker serve")?;
    let mut guard = ChildGuard(child);
    let addr = SocketAddr::new(lab.addr.into(), HTTP_PORT);
    let ns = lab.ns.name.clone();
    wait_for(
        "clustermaker serve to answer HTTP",
        Duration::from_secs(20),
        || {
            if let Ok(Some(status)) = guard.0.try_wait() {
                return Some(Err(status));
            }
            let ns = ns.clone();
            let up = in_netns(&ns, move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .unwrap_or(false);
            up.then_some(Ok(()))
        },
    )?
    .map_err(|status| {
        let mut err = String::new();
        let _ =
            fs::File::open(dir.join("serve.stderr")).and_then(|mut f| f.read_to_string(&mut err));
        anyhow::anyhow!(
            "clustermaker serve exited ({status}): {} (fix: check {})",
            crate::cmd::last_line(err.as_bytes()),
            config.display()
        )
    })?;
    Ok(Master {
        url: format!("http://{addr}"),
        config,
        stderr,
        dir,
        keep: false,
        _child: guard,
    })
}

/// New complete lines of a growing file.
struct Tail {
    path: PathBuf,
    offset: usize,
}

impl Tail {
    fn new(path: &Path) -> Tail {
        Tail {
            path: path.to_path_buf(),
            offset: 0,
        }
    }

    fn lines(&mut self) -> Vec<String> {
        let data = fs::read(&self.path).unwrap_or_default();
        let Some(end) = data.iter().rposition(|&b| b == b'\n') else {
            return Vec::new();
        };
        if end < self.offset {
            return Vec::new();
        }
        let new = String::from_utf8_lossy(&data[self.offset..=end]).into_owned();
        self.offset = end + 1;
        new.lines().map(str::to_string).collect()
    }
}

/// Prints one timeline of the boot: the master's view of the node (its boot stages: DHCP
/// offer and lease, script, kernel and initramfs sent, online) and the node's console
/// (every `clustermaker-init:` line), with the time since power-on. Returns when the node's
/// /init says it is online.
fn follow_console(node: &mut QemuNode, master: &Master, timeout: Duration) -> Result<Duration> {
    let deadline = Instant::now() + timeout;
    let mut console = Tail::new(&node.console_log);
    let mut serve = Tail::new(&master.stderr);
    let mac = format!("mac={}", node.mac);
    loop {
        let t = node.started.elapsed().as_secs_f64();
        for line in serve.lines() {
            if line.contains("boot stage") && line.contains(&mac) {
                if let Some(stage) = field(&line, "stage=") {
                    eprintln!("  {t:>6.1}s  master: {stage}");
                }
            }
        }
        for line in console.lines() {
            let clean: String = line.chars().filter(|c| !c.is_control()).collect();
            if let Some(i) = clean.find("clustermaker-init:") {
                eprintln!(
                    "  {t:>6.1}s  node:   {}",
                    &clean[i + "clustermaker-init:".len()..].trim()
                );
            }
            if let Some(i) = clean.find("image-init:") {
                eprintln!(
                    "  {t:>6.1}s  image:  {}",
                    clean[i + "image-init:".len()..].trim()
                );
            }
            if clean.contains("image-init: services started") {
                return Ok(node.started.elapsed());
            }
        }
        if interrupted() {
            bail!("interrupted; cleaning up");
        }
        if !node.is_running() {
            bail!(
                "QEMU exited before the node was online\n{}",
                node.post_mortem()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "node not online after {timeout:?} (fix: read the master's log {})\n{}",
                master.stderr.display(),
                node.post_mortem()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The node's address from its `network up ip=…` console line.
fn node_ip(console: &str) -> Option<std::net::Ipv4Addr> {
    console
        .lines()
        .filter(|l| l.contains("clustermaker-init: network up"))
        .find_map(|l| field(l, "ip=")?.parse().ok())
}

/// The value of `key` (e.g. `stage=`) in a tracing log line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(key)? + key.len();
    line[start..].split_whitespace().next()
}

fn release_binary(workspace: &Path) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let bin = target.join("release/clustermaker");
    if !bin.is_file() {
        bail!(
            "{} is missing (fix: run without --skip-build)",
            bin.display()
        );
    }
    Ok(bin)
}
