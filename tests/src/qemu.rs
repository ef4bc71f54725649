//! QEMU-booted nodes on a lab bridge inside a network namespace.
//!
//! [`BootLab`] makes the namespace with a bridge `br0` (the master side of the boot network)
//! and hands out tap devices on it; [`QemuNode`] is one virtual machine on such a tap, booting
//! from the network with BIOS (QEMU's iPXE ROM) or UEFI (OVMF) firmware, or directly from a
//! kernel and initramfs. Its serial console goes to a file that tests poll with
//! [`QemuNode::wait_for_console`]. The VM is killed when the node is dropped, and the lab's
//! namespace (with every process left in it) when the lab is dropped.
//!
//! Boots run under TCG (`-accel tcg`): KVM is not usable on the CI machines (iPXE hangs), so
//! a boot takes tens of seconds; keep the number of boots per test run small.

use std::fs::{self, File};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{unique_name, wait_for, ChildGuard, Netns};

/// OVMF firmware from the Debian package `ovmf` (4 MiB flash layout).
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Where the node's firmware gets its boot program from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// Legacy BIOS; the virtio-net option ROM (iPXE, package `ipxe-qemu`) network boots.
    BiosPxe,
    /// UEFI (OVMF, package `ovmf`). With the default option ROM, iPXE's EFI driver network
    /// boots; with `native_pxe`, the ROM is disabled and OVMF's own PXE client runs (it must be
    /// given an EFI boot program such as `ipxe.efi`).
    UefiPxe { native_pxe: bool },
    /// No firmware network boot: QEMU loads a kernel and initramfs itself (`-kernel`,
    /// `-initrd`, `-append`). The fastest way to test an initramfs.
    Direct {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
}

/// How to start a node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// The NIC's MAC address, `52:54:00:…` (QEMU's locally administered prefix).
    pub mac: String,
    pub boot: Boot,
    pub memory_mb: u32,
    /// Appended to the QEMU command line as is.
    pub extra_args: Vec<String>,
}

impl NodeOptions {
    pub fn new(mac: &str, boot: Boot) -> NodeOptions {
        NodeOptions {
            mac: mac.to_string(),
            boot,
            memory_mb: 512,
            extra_args: Vec::new(),
        }
    }
}

/// A network namespace holding the boot network: bridge `br0` with an IPv4 address and IPv6
/// enabled, and tap devices for nodes.
///
/// IPv6 stays on: after its DHCP lease iPXE waits about 15 s for router advertisements unless
/// something on the link answers its router solicitation, so a boot server (or dnsmasq
/// standing in for one) needs an IPv6 link-local address on the bridge to answer from. The lab
/// also adds a ULA address (`fd99::1/64` by default) that RA services can advertise.
pub struct BootLab {
    pub ns: Netns,
    pub bridge: String,
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
    pub addr6: String,
    taps: AtomicU32,
}

impl BootLab {
    /// A lab with `br0` at 10.99.0.1/24 and fd99::1/64.
    pub fn new() -> Result<BootLab> {
        BootLab::with_addresses("10.99.0.1/24", "fd99::1/64")
    }

    /// A lab with the bridge at `cidr4` (e.g. `10.99.0.1/24`) and `cidr6`.
    pub fn with_addresses(cidr4: &str, cidr6: &str) -> Result<BootLab> {
        let (ip, len) = cidr4
            .split_once('/')
            .with_context(|| format!("{cidr4} is not ADDRESS/PREFIX"))?;
        let addr: Ipv4Addr = ip.parse().with_context(|| format!("bad address {ip}"))?;
        let prefix_len: u8 = len.parse().with_context(|| format!("bad prefix {len}"))?;
        let ns = Netns::new("cmlab")?;
        let bridge = "br0".to_string();
        // forward_delay 0: with STP off a new port forwards at once; no 15 s listening phase.
        ns.ip(&[
            "link",
            "add",
            &bridge,
            "type",
            "bridge",
            "forward_delay",
            "0",
        ])?;
        // Through /proc rather than sysctl(8): procps is not on every minimal Debian.
        ns.run(
            "sh",
            &[
                "-c",
                &format!("echo 0 > /proc/sys/net/ipv6/conf/{bridge}/disable_ipv6"),
            ],
        )?;
        ns.ip(&["addr", "add", cidr4, "dev", &bridge])?;
        // nodad: the bridge has no carrier until a VM opens its tap, and a tentative address
        // could not be used by an RA service started before that.
        ns.ip(&["-6", "addr", "add", cidr6, "dev", &bridge, "nodad"])?;
        ns.ip(&["link", "set", &bridge, "up"])?;
        Ok(BootLab {
            ns,
            bridge,
            addr,
            prefix_len,
            addr6: cidr6.to_string(),
            taps: AtomicU32::new(0),
        })
    }

    /// A new tap device in the lab, enslaved to the bridge and up.
    pub fn add_tap(&self) -> Result<String> {
        let tap = format!("tap{}", self.taps.fetch_add(1, Ordering::Relaxed));
        self.ns.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.ns.ip(&["link", "set", &tap, "master", &self.bridge])?;
        self.ns.ip(&["link", "set", &tap, "up"])?;
        Ok(tap)
    }

    /// Starts a node on a new tap of this lab.
    pub fn boot(&self, opts: &NodeOptions) -> Result<QemuNode> {
        let tap = self.add_tap()?;
        QemuNode::start(&self.ns, &tap, opts)
    }

    /// A TCP listener bound inside the lab's namespace (e.g. on `10.99.0.1:0`), usable from
    /// any thread of the test.
    pub fn bind_tcp(&self, addr: SocketAddr) -> Result<TcpListener> {
        in_netns(&self.ns.name, move || {
            TcpListener::bind(addr).with_context(|| format!("cannot bind {addr}"))
        })?
    }
}

/// Runs `f` on a thread that has joined network namespace `ns`. Sockets it creates stay in
/// that namespace after it returns; the calling thread's namespace is untouched (setns with
/// CLONE_NEWNET affects only the calling thread).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = PathBuf::from("/var/run/netns").join(ns);
    let handle = std::thread::spawn(move || -> Result<T> {
        let file = File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
        // SAFETY: a plain syscall on a file descriptor we own for the duration of the call.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!(
                "setns {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(f())
    });
    handle
        .join()
        .map_err(|_| anyhow::anyhow!("thread in namespace {ns} panicked"))?
}

/// A QEMU virtual machine, killed when dropped. If the test is panicking at that moment, the
/// tail of the serial console and QEMU's stderr are printed to help the post-mortem.
pub struct QemuNode {
    child: ChildGuard,
    dir: PathBuf,
    pub console_log: PathBuf,
    pub stderr_log: PathBuf,
    pub mac: String,
    pub tap: String,
    /// When QEMU was started (the node's "power on").
    pub started: Instant,
}

static NODES: AtomicU32 = AtomicU32::new(0);

impl QemuNode {
    /// Starts `qemu-system-x86_64` inside `ns` on the existing tap device `tap`.
    pub fn start(ns: &Netns, tap: &str, opts: &NodeOptions) -> Result<QemuNode> {
        let dir = std::env::temp_dir().join(format!(
            "{}-{}",
            unique_name("cmnode"),
            NODES.fetch_add(1, Ordering::Relaxed)
        ));
        fs::create_dir_all(&dir)?;
        let console_log = dir.join("console.log");
        let stderr_log = dir.join("qemu.stderr");
        let args = qemu_args(opts, tap, &console_log, &dir)?;
        let child = ns
            .command("qemu-system-x86_64")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(File::create(dir.join("qemu.stdout"))?)
            .stderr(File::create(&stderr_log)?)
            .spawn()
            .context("cannot start qemu-system-x86_64 (fix: apt-get install -y qemu-system-x86)")?;
        Ok(QemuNode {
            child: ChildGuard(child),
            dir,
            console_log,
            stderr_log,
            mac: opts.mac.clone(),
            tap: tap.to_string(),
            started: Instant::now(),
        })
    }

    /// Everything the node printed on its serial console so far (lossy UTF-8).
    pub fn console(&self) -> String {
        fs::read(&self.console_log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// True while QEMU runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.0.try_wait(), Ok(None))
    }

    /// Waits until `needle` appears on the console; returns the time since QEMU started. Fails
    /// early if QEMU exits; the error carries the console's last lines.
    pub fn wait_for_console(&mut self, needle: &str, timeout: Duration) -> Result<Duration> {
        let mut exited = None;
        let found = wait_for(&format!("{needle:?} on the console"), timeout, || {
            if self.console().contains(needle) {
                return Some(true);
            }
            if let Ok(Some(status)) = self.child.0.try_wait() {
                exited = Some(status);
                return Some(false);
            }
            None
        });
        match (found, exited) {
            (Ok(true), _) => Ok(self.started.elapsed()),
            (_, Some(status)) => bail!(
                "QEMU exited ({status}) before {needle:?} appeared\n{}",
                self.post_mortem()
            ),
            (Err(e), _) => bail!("{e}\n{}", self.post_mortem()),
            (Ok(false), None) => unreachable!("false only when QEMU exited"),
        }
    }

    /// The last console lines and QEMU's stderr, for error messages.
    pub fn post_mortem(&self) -> String {
        let console = self.console();
        let lines: Vec<&str> = console.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        let stderr = fs::read_to_string(&self.stderr_log).unwrap_or_default();
        format!(
            "--- console of node {} (last 40 lines) ---\n{tail}\n--- qemu stderr ---\n{}",
            self.mac,
            stderr.trim()
        )
    }

    /// The directory with this node's logs and firmware variables.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for QemuNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.post_mortem());
        }
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The QEMU command line for a node (without the program name).
fn qemu_args(opts: &NodeOptions, tap: &str, console: &Path, dir: &Path) -> Result<Vec<String>> {
    let mut a: Vec<String> = [
        "-accel",
        "tcg",
        "-m",
        &opts.memory_mb.to_string(),
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-serial",
        &format!("file:{}", console.display()),
        "-netdev",
        &format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // bootindex puts the NIC first for both SeaBIOS and OVMF.
    let mut nic = format!("virtio-net-pci,netdev=n0,mac={},bootindex=1", opts.mac);
    match &opts.boot {
        Boot::BiosPxe => a.extend(["-boot".into(), "n".into()]),
        Boot::UefiPxe { native_pxe } => {
            let vars = dir.join("OVMF_VARS.fd");
            fs::copy(OVMF_VARS, &vars).with_context(|| {
                format!("cannot copy {OVMF_VARS} (fix: apt-get install -y ovmf)")
            })?;
            a.extend([
                "-drive".into(),
                format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"),
                "-drive".into(),
                format!("if=pflash,format=raw,file={}", vars.display()),
            ]);
            if *native_pxe {
                nic.push_str(",romfile=");
            }
        }
        Boot::Direct {
            kernel,
            initrd,
            append,
        } => a.extend([
            "-kernel".into(),
            kernel.display().to_string(),
            "-initrd".into(),
            initrd.display().to_string(),
            "-append".into(),
            append.clone(),
        ]),
    }
    a.extend(["-device".into(), nic]);
    a.extend(opts.extra_args.iter().cloned());
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uefi_uses_a_private_copy_of_the_variables() {
        if !Path::new(OVMF_VARS).exists() {
            eprintln!("skipping: {OVMF_VARS} missing");
            return;
        }
        let dir = std::env::temp_dir().join(unique_name("cmqa"));
        fs::create_dir_all(&dir).unwrap();
        let opts = NodeOptions::new("52:54:00:00:00:01", Boot::UefiPxe { native_pxe: true });
        let args = qemu_args(&opts, "tap0", &dir.join("c.log"), &dir).unwrap();
        let line = args.join(" ");
        assert!(line.contains(&format!("readonly=on,file={OVMF_CODE}")));
        assert!(line.contains(&format!("file={}/OVMF_VARS.fd", dir.display())));
        assert!(line.contains("mac=52:54:00:00:00:01,bootindex=1,romfile="));
        assert!(line.contains("-accel tcg"));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn direct_boot_passes_kernel_initrd_and_cmdline() {
        let opts = NodeOptions::new(
            "52:54:00:00:00:02",
            Boot::Direct {
                kernel: "/k/vmlinuz".into(),
                initrd: "/k/initramfs.img".into(),
                append: "console=ttyS0 cm.master=http://10.99.0.1:8080".into(),
            },
        );
        let args = qemu_args(&opts, "tap1", Path::new("/tmp/c.log"), Path::new("/tmp")).unwrap();
        let at = |flag: &str| {
            args.iter()
                .position(|a| a == flag)
                .map(|i| args[i + 1].as_str())
        };
        assert_eq!(at("-kernel"), Some("/k/vmlinuz"));
        assert_eq!(at("-initrd"), Some("/k/initramfs.img"));
        assert_eq!(
            at("-append"),
            Some("console=ttyS0 cm.master=http://10.99.0.1:8080")
        );
        assert_eq!(at("-serial"), Some("file:/tmp/c.log"));
        assert_eq!(
            at("-netdev"),
            Some("tap,id=n0,ifname=tap1,script=no,downscript=no")
        );
        assert!(!args.contains(&"-boot".to_string()));
    }
}
