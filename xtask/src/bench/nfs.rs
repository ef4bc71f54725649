//! The NFS root: our embedded NFSv3 server against nfs-ganesha 4.3 (FSAL VFS) on the same
//! tree, and the image build that makes such a tree.
//!
//! `--only image` ([`run_image`]): `clustermaker image build` from a Debian minbase root
//! (debootstrap `--variant=minbase --include=systemd-sysv,udev bookworm`; `CM_DEBROOT`, else
//! made once in the download cache): first build and unchanged rebuild times, the image and
//! initramfs sizes. No anchor builds the same thing, so the figures are absolute.
//!
//! `--only nfs` ([`run`]), one lab (cm-tests' `BootLab`, bridge br0 at 10.99.0.1/24 with a
//! second address 10.99.0.2 for ganesha) and one `clustermaker serve` master for the whole run:
//!
//! - a busybox root with a 100 MiB file (`/data/big`) is built into the store and exported by
//!   ours (`/images/busy`, `nfs.listen = 10.99.0.1:2049`) and by ganesha (the version root's
//!   real path, `Bind_addr = 10.99.0.2`), so both serve the very same files from the same page
//!   cache;
//! - per round: the big file read with libnfs `nfs-cat` from a client namespace (no TCG in the
//!   way), then one BIOS PXE boot of a node on the busybox root with the time of every
//!   console marker up to the image's HTTP service answering, then, in that node, `dd` of the
//!   big file from a mount of each server after `drop_caches`;
//! - after the last round, the handle-survival check on that node: loops over both mounts,
//!   both servers stopped, the tree replaced by a file-by-file copy (new inodes), both started
//!   again on the same addresses: ours must keep serving every handle, ganesha is expected to
//!   answer ESTALE;
//! - a Debian 12 + systemd root (the image of `--only image`, plus a unit printing
//!   `CM-BOOTED` on ttyS0 after multi-user.target) booted with its own kernel and initramfs
//!   (QEMU `-kernel/-initrd`), the root from ours or from ganesha in alternating order; the
//!   master gives DHCP and the node overlay in both cases. The unit also prints the guest's
//!   NFSv3 client call counts per procedure.

use std::fmt::Write as _;
use std::fs;
use std::io::Read as _;
use std::net::SocketAddr;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use cm_tests::ganesha::{Ganesha, GANESHA_MOUNT_PORT};
use cm_tests::nfsroot::{build_busybox_root, guest_sh, http_get, write_pattern_file};
use cm_tests::qemu::{Boot, BootLab, NodeOptions, QemuNode};

use super::ours::Config as OursConfig;
use super::report::{fmt_num, fmt_summary, Better, Measure, Row, Section, Summary};
use super::sys::{self, AdoptedDir, Netns, Server, TempDir};
use super::Ctx;

const CIDR4: &str = "10.99.0.1/24";
const CIDR6: &str = "fd99::1/64";
const OURS_IP: &str = "10.99.0.1";
const GANESHA_IP: &str = "10.99.0.2";
const GANESHA_CIDR: &str = "10.99.0.2/24";
const CLIENT_CIDR: &str = "10.99.0.250/24";
const HTTP_PORT: u16 = 8080;
/// Size of the busybox image's `/data/big`, in MiB.
const BIG_MB: u64 = 100;
/// The small file the handle-survival loops hash every second.
const SMALL_BYTES: u64 = 1 << 20;
const BUSY: &str = "busy";
const DEB: &str = "deb";
/// (name, MAC, reserved address) of the busybox node and of the Debian node.
const BUSY_NODE: (&str, &str, &str) = ("bench1", "52:54:00:be:01:01", "10.99.0.21");
const DEB_NODE: (&str, &str, &str) = ("bench2", "52:54:00:be:01:02", "10.99.0.22");
const GUEST_SHELL: u16 = cm_tests::nfsroot::GUEST_SHELL_PORT;
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const DEB_TIMEOUT: Duration = Duration::from_secs(420);
const OURS: &str = "clustermaker";
const GANESHA: &str = "nfs-ganesha 4.3 (FSAL VFS)";

/// Console markers of a node on the NFS root, in boot order (init.sh and the image's rcS).
const STAGES: &[(&str, &str)] = &[
    ("clustermaker-init: starting", "/init started"),
    ("clustermaker-init: network up", "network up"),
    ("clustermaker-init: nfs root mounted", "NFS root mounted"),
    ("clustermaker-init: overlay applied", "node overlay applied"),
    ("clustermaker-init: switching to", "switch_root"),
    ("image-init: services started", "image services started"),
];

/// Console markers of the Debian boot.
const DEB_STAGES: &[(&str, &str)] = &[
    ("clustermaker-init: network up", "network up"),
    ("clustermaker-init: nfs root mounted", "NFS root mounted"),
    ("clustermaker-init: switching to", "switch_root to systemd"),
    ("CM-BOOTED", "CM-BOOTED (after multi-user.target)"),
];

/// NFSv3 procedure names in /proc/net/rpc/nfs `proc3` order.
const NFS3_PROCS: [&str; 22] = [
    "NULL",
    "GETATTR",
    "SETATTR",
    "LOOKUP",
    "ACCESS",
    "READLINK",
    "READ",
    "WRITE",
    "CREATE",
    "MKDIR",
    "SYMLINK",
    "MKNOD",
    "REMOVE",
    "RMDIR",
    "RENAME",
    "LINK",
    "READDIR",
    "READDIRPLUS",
    "FSSTAT",
    "FSINFO",
    "PATHCONF",
    "COMMIT",
];

// ---------------------------------------------------------------------------------------------
// Inputs: the kernel, its modules, busybox, the Debian root
// ---------------------------------------------------------------------------------------------

struct Inputs {
    kernel: PathBuf,
    modules: PathBuf,
    busybox: PathBuf,
}

fn find_in_unpacked(ctx: &Ctx, prefix: &str) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(ctx.cache.join("unpacked"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    found.sort();
    found.pop()
}

fn first_dir(dir: &Path) -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v.pop()
}

/// The Debian cloud kernel with its modules and the static busybox from the download cache
/// (filled by `cargo xtask build-image` when empty).
fn inputs(ctx: &Ctx) -> Result<Inputs> {
    let look = || -> Option<Inputs> {
        let kernel = ctx.find_kernel()?;
        let modules = first_dir(&find_in_unpacked(ctx, "linux-image-")?.join("lib/modules"))?;
        let busybox = find_in_unpacked(ctx, "busybox-static_")?.join("bin/busybox");
        busybox.is_file().then_some(Inputs {
            kernel,
            modules,
            busybox,
        })
    };
    if let Some(i) = look() {
        return Ok(i);
    }
    super::boot::boot_files(ctx)?;
    look().ok_or_else(|| {
        anyhow!(
            "no linux-image and busybox-static in {} after cargo xtask build-image (set CM_CACHE_DIR)",
            ctx.cache.display()
        )
    })
}

/// The Debian minbase root: `CM_DEBROOT`, else `<cache>/debroot/bookworm`, made once with
/// debootstrap when missing.
fn debian_root(ctx: &Ctx) -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("CM_DEBROOT") {
        let p = PathBuf::from(p);
        if !p.join("usr/lib/os-release").exists() && !p.join("etc/os-release").exists() {
            bail!("CM_DEBROOT={} is not a Debian root", p.display());
        }
        return Ok(p);
    }
    let dest = ctx.cache.join("debroot/bookworm");
    if dest.join("usr/lib/os-release").exists() {
        return Ok(dest);
    }
    let debootstrap = sys::require_program("debootstrap", "debootstrap")?;
    let partial = ctx.cache.join("debroot/.bookworm.partial");
    if partial.exists() {
        fs::remove_dir_all(&partial)?;
    }
    fs::create_dir_all(&partial)?;
    ctx.progress.set(format!(
        "debootstrap --variant=minbase --include=systemd-sysv,udev bookworm {} (once, ~2 min)",
        dest.display()
    ));
    let mirror =
        std::env::var("CM_DEBIAN_MIRROR").unwrap_or_else(|_| "http://deb.debian.org/debian".into());
    sys::run_cmd(
        Command::new(debootstrap)
            .args([
                "--variant=minbase",
                "--include=systemd-sysv,udev",
                "bookworm",
            ])
            .arg(&partial)
            .arg(&mirror),
    )
    .context("debootstrap of the Debian root (or set CM_DEBROOT to an existing one)")?;
    fs::rename(&partial, &dest)?;
    Ok(dest)
}

/// The unit that says on the serial console that the Debian node has finished booting (and how
/// many NFS calls of each kind it made to get there).
const BOOTED_UNIT: &str = "[Unit]
Description=clustermaker bench: multi-user.target reached
After=multi-user.target
# Without this a target's automatic After= on what it wants would make an ordering cycle.
DefaultDependencies=no

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/cm-booted

[Install]
WantedBy=multi-user.target
";
const BOOTED_SCRIPT: &str = "#!/bin/sh
echo \"CM-RPC $(grep '^proc3' /proc/net/rpc/nfs)\" > /dev/ttyS0
echo CM-BOOTED > /dev/ttyS0
";

/// A copy of the Debian root with the CM-BOOTED unit enabled.
fn prepare_debian_tree(src: &Path, dest: &Path) -> Result<()> {
    sys::run_cmd(Command::new("cp").arg("-a").arg(src).arg(dest))
        .context("copying the Debian root")?;
    let unit_dir = dest.join("etc/systemd/system");
    fs::create_dir_all(unit_dir.join("multi-user.target.wants"))?;
    fs::write(unit_dir.join("cm-booted.service"), BOOTED_UNIT)?;
    let _ = fs::remove_file(unit_dir.join("multi-user.target.wants/cm-booted.service"));
    symlink(
        "/etc/systemd/system/cm-booted.service",
        unit_dir.join("multi-user.target.wants/cm-booted.service"),
    )?;
    let script = dest.join("usr/local/sbin/cm-booted");
    fs::create_dir_all(script.parent().unwrap())?;
    fs::write(&script, BOOTED_SCRIPT)?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// The NFS mount options of the node initramfs (`NFS_OPTS=` in init.sh), so the guest's
/// benchmark mounts are what a node's root mount is.
fn node_mount_options(ctx: &Ctx) -> Result<String> {
    let path = ctx.workspace.join("images/templates/initramfs/init.sh");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("NFS_OPTS=\""))
        .and_then(|l| l.strip_suffix('"'))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no NFS_OPTS=\"…\" in {}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// The master
// ---------------------------------------------------------------------------------------------

struct Master {
    bin: PathBuf,
    config: PathBuf,
    images: PathBuf,
    scratch: PathBuf,
    server: Option<Server>,
    starts: usize,
}

impl Master {
    fn new(ctx: &Ctx, scratch: &Path, check: bool) -> Result<Master> {
        let bin = ctx.ours().bin()?.to_path_buf();
        let images = scratch.join("images");
        fs::create_dir_all(&images)?;
        let mut cfg = OursConfig::new(&scratch.join("state"), "br0", OURS_IP.parse()?, &images);
        cfg.prefix_len = Some(24);
        cfg.http_port = HTTP_PORT;
        cfg.ipv6_ra = true;
        cfg.cmdline = Some("console=ttyS0".into());
        cfg.extra = format!("[nfs]\nlisten = [\"{OURS_IP}:2049\"]\n");
        let config = cfg.write(&scratch.join("clustermaker.toml"))?;
        if check {
            if let Some(why) = ctx.ours().check_config(&config)? {
                bail!("clustermaker refuses the NFS bench configuration: {why}");
            }
        }
        Ok(Master {
            bin,
            config,
            images,
            scratch: scratch.to_path_buf(),
            server: None,
            starts: 0,
        })
    }

    fn cli(&self, args: &[&str]) -> Result<String> {
        let out = sys::run_cmd(
            Command::new(&self.bin)
                .arg("--config")
                .arg(&self.config)
                .args(args)
                .env("CLUSTERMAKER_LOG", "warn"),
        )?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `image build NAME --from SOURCE` with the bench kernel, modules and busybox: (wall
    /// seconds, the `--json` report).
    fn build(&self, name: &str, from: &str, inputs: &Inputs) -> Result<(f64, serde_json::Value)> {
        let t0 = Instant::now();
        let out = self.cli(&[
            "image",
            "build",
            name,
            "--from",
            from,
            "--kernel",
            &inputs.kernel.to_string_lossy(),
            "--modules",
            &inputs.modules.to_string_lossy(),
            "--busybox",
            &inputs.busybox.to_string_lossy(),
            "--json",
        ])?;
        let wall = t0.elapsed().as_secs_f64();
        let start = out.find('{').unwrap_or(0);
        let report: serde_json::Value = serde_json::from_str(&out[start..])
            .with_context(|| format!("image build --json printed no report: {out}"))?;
        Ok((wall, report))
    }

    /// The current version directory of an image (real path).
    fn version_dir(&self, name: &str) -> Result<PathBuf> {
        let p = self.images.join(name).join("current");
        fs::canonicalize(&p).with_context(|| format!("{} has no current version", p.display()))
    }

    fn log(&self) -> PathBuf {
        self.scratch
            .join(format!("clustermaker-serve-{}.log", self.starts))
    }

    /// Starts `serve` in `ns`; returns when its HTTP API and its NFS port answer.
    fn start(&mut self, ctx: &Ctx, ns: &Netns) -> Result<()> {
        self.starts += 1;
        let log = self.log();
        let mut server = ctx.ours().serve(ns, &self.config, &log, &[])?;
        let url = format!("http://{OURS_IP}:{HTTP_PORT}/api/v1/nodes");
        let probe = self.scratch.join("probe.log");
        let nfs: SocketAddr = format!("{OURS_IP}:2049").parse()?;
        let r = sys::wait_until(Duration::from_secs(60), Duration::from_millis(100), || {
            server.check_running()?;
            let mut c = ns.command("curl");
            c.args(["-sS", "--fail", "--max-time", "1", "-o", "/dev/null", &url]);
            sys::run_one(c, &probe, Duration::from_secs(5))?;
            if !tcp_open(ns, nfs)? {
                bail!("NFS port not open yet");
            }
            Ok(())
        });
        r.map_err(|e| server.not_serving(&format!("does not answer {url} and {nfs} ({e:#})")))?;
        self.server = Some(server);
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.stop(Duration::from_secs(5));
        }
    }

    fn log_tail(&self) -> String {
        sys::tail(&self.log(), 2500)
    }
}

fn tcp_open(ns: &Netns, addr: SocketAddr) -> Result<bool> {
    cm_tests::qemu::in_netns(&ns.name, move || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
    })
}

// ---------------------------------------------------------------------------------------------
// `--only image`
// ---------------------------------------------------------------------------------------------

fn du_bytes(path: &Path) -> Option<u64> {
    let out = Command::new("du").arg("-sb").arg(path).output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn mb(bytes: f64) -> String {
    format!("{} MB", fmt_num(bytes / 1e6))
}

pub fn run_image(ctx: &Ctx) -> Result<Section> {
    let mut section = Section::new("image");
    let inputs = inputs(ctx)?;
    let src = debian_root(ctx)?;
    section.tools.insert(OURS.into(), ctx.ours().version());
    let scratch = TempDir::new("image", true)?;
    let master = Master::new(ctx, &scratch.path, false)?;
    let from = format!("dir:{}", src.display());
    let rounds = ctx.long_rounds;
    let (mut first, mut again, mut first_self) = (Vec::new(), Vec::new(), Vec::new());
    let mut meta = serde_json::Value::Null;
    let mut version_bytes = None;
    let mut raw = Vec::new();
    // Untimed: brings the source tree into the page cache, like every later round has it.
    ctx.progress
        .set("image: warming the page cache with an untimed build");
    master.build("warm", &from, &inputs)?;
    master.cli(&["image", "rm", "warm", "--force"])?;
    for round in 0..rounds {
        let name = format!("{DEB}{round}");
        ctx.progress.set(format!(
            "image round {}/{rounds}: first build of {}",
            round + 1,
            src.display()
        ));
        let (wall, report) = master.build(&name, &from, &inputs)?;
        if report["unchanged"] == true {
            bail!("the first build of {name} says unchanged: {report}");
        }
        first.push(wall);
        first_self.push(report["build_secs"].as_f64().unwrap_or(f64::NAN));
        ctx.progress.set(format!(
            "image round {}/{rounds}: unchanged rebuild",
            round + 1
        ));
        let (wall2, report2) = master.build(&name, &from, &inputs)?;
        if report2["unchanged"] != true {
            bail!("rebuilding {name} from the same tree published a new version: {report2}");
        }
        again.push(wall2);
        ctx.progress.line(format!(
            "  image round {}: first build {wall:.1} s, unchanged rebuild {wall2:.1} s",
            round + 1
        ));
        version_bytes = master.version_dir(&name).ok().and_then(|d| du_bytes(&d));
        meta = report["meta"].clone();
        raw.push(serde_json::json!({"first_s": wall, "first_build_secs": report["build_secs"], "rebuild_s": wall2, "rebuild_build_secs": report2["build_secs"]}));
        master.cli(&["image", "rm", &name, "--force"])?;
    }
    // `debootstrap:bookworm` once, on request: it downloads ~60 MB of packages from the Debian
    // mirror (outside any bench namespace) and takes minutes.
    let mut deboot: Option<(f64, serde_json::Value)> = None;
    if std::env::var("CM_BENCH_DEBOOTSTRAP").is_ok_and(|v| v == "1") {
        ctx.progress
            .set("image: image build --from debootstrap:bookworm (network, minutes)");
        match master.build("debs", "debootstrap:bookworm", &inputs) {
            Ok(r) => {
                ctx.progress
                    .line(format!("  image: debootstrap:bookworm build {:.1} s", r.0));
                let _ = master.cli(&["image", "rm", "debs", "--force"]);
                deboot = Some(r);
            }
            Err(e) => section.notes.push(format!(
                "`image build --from debootstrap:bookworm` failed in this run: {e:#}"
            )),
        }
    }
    let no_anchor = || Measure::missing("none", "no tool builds the same image; absolute figure");
    section.rows.push(Row::new(
        "`image build` from the Debian minbase root (dir:), first build",
        "s",
        Better::Lower,
        no_anchor(),
        Measure::new(OURS, &first),
    ));
    section.rows.push(Row::new(
        "`image build` again from the unchanged tree (nothing published)",
        "s",
        Better::Lower,
        no_anchor(),
        Measure::new(OURS, &again),
    ));
    if let Some((wall, _)) = &deboot {
        section.rows.push(Row::new(
            "`image build --from debootstrap:bookworm` (debootstrap from the Debian mirror included), once",
            "s",
            Better::Lower,
            no_anchor(),
            Measure::new(OURS, &[*wall]),
        ));
    }
    let mut md = String::new();
    let _ = writeln!(md, "| figure | value |\n| --- | --- |");
    if let Some(s) = Summary::of(&first_self) {
        let _ = writeln!(
            md,
            "| first build, as the command reports it (`build_secs`) | {} |",
            fmt_summary(&s, "s")
        );
    }
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    let _ = writeln!(
        md,
        "| source tree | {} ({}) |",
        src.display(),
        du_bytes(&src).map(|b| mb(b as f64)).unwrap_or_default()
    );
    let _ = writeln!(
        md,
        "| image content (`content_bytes`, each inode once) | {} in {} entries |",
        mb(num(&meta["content_bytes"])),
        meta["entries"]
    );
    if let Some(b) = version_bytes {
        let _ = writeln!(
            md,
            "| version directory on disk (`du -sb`: root, kernel, initramfs, listing) | {} |",
            mb(b as f64)
        );
    }
    let _ = writeln!(
        md,
        "| initramfs.img ({}) | {} |",
        meta["initramfs"]["compression"].as_str().unwrap_or("?"),
        mb(num(&meta["initramfs"]["file"]["size"]))
    );
    let _ = writeln!(
        md,
        "| kernel | {} ({}) |",
        meta["kernel"]["version"].as_str().unwrap_or("?"),
        mb(num(&meta["kernel"]["file"]["size"]))
    );
    let _ = writeln!(
        md,
        "| modules in the initramfs | {} |",
        meta["initramfs"]["modules"]
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0)
    );
    section.details_md = md;
    section.method = vec![
        format!("`clustermaker image build debN --from dir:{} --kernel … --modules … --busybox … --json` into a store on disk ({}), a new image name each round (a first build: copy, hash, listing, initramfs), then the same command again on the unchanged tree (hash and compare; nothing published). Wall time around the process. An untimed build before the first round warms the page cache with the source tree.", src.display(), std::env::temp_dir().display()),
        "The root: `debootstrap --variant=minbase --include=systemd-sysv,udev bookworm` (`CM_DEBROOT`, else made once under the download cache). Kernel: the Debian cloud kernel and its modules from the download cache; busybox-static likewise.".into(),
        "No anchor: nothing on this machine builds the same thing (a root tree plus a netboot initramfs), so there is no ratio; the figures are absolute.".into(),
    ];
    if deboot.is_none() {
        section.notes.push(
            "`image build --from debootstrap:bookworm` is timed only with `CM_BENCH_DEBOOTSTRAP=1` (it downloads from the Debian mirror, outside the bench's namespaces, and takes minutes)."
                .into(),
        );
    } else {
        section.method.push("`debootstrap:bookworm`: one build with `--from debootstrap:bookworm` (`CM_BENCH_DEBOOTSTRAP=1`): debootstrap downloads and unpacks from deb.debian.org, so the figure depends on the mirror and the network.".into());
    }
    section.rounds = Some(rounds);
    section.raw = serde_json::json!({"rounds": raw, "meta": meta, "debootstrap": deboot.map(|(w, r)| serde_json::json!({"wall_s": w, "report": r}))});
    Ok(section)
}

// ---------------------------------------------------------------------------------------------
// `--only nfs`
// ---------------------------------------------------------------------------------------------

/// Reads a file to the end (keeps it in the host page cache for both servers).
fn warm(path: &Path) -> Result<()> {
    let mut f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

fn warm_tree(path: &Path) {
    let _ = Command::new("sh")
        .arg("-c")
        .arg("find \"$1\" -xdev -type f -print0 | xargs -0 cat > /dev/null 2>&1")
        .arg("sh")
        .arg(path)
        .stdin(Stdio::null())
        .status();
}

fn sha256(path: &Path) -> Result<String> {
    let out = sys::run_cmd(Command::new("sha256sum").arg(path))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .chars()
        .take(64)
        .collect())
}

fn md5(path: &Path) -> Result<String> {
    let out = sys::run_cmd(Command::new("md5sum").arg(path))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .chars()
        .take(32)
        .collect())
}

/// A namespace joined to the lab bridge by a veth pair, for host-side clients.
fn client_ns(lab: &BootLab) -> Result<Netns> {
    let c = Netns::new()?;
    let in_lab = sys::ifname("cbl");
    let in_client = sys::ifname("cbc");
    sys::run_cmd(Command::new("ip").args([
        "link",
        "add",
        &in_lab,
        "netns",
        &lab.ns.name,
        "type",
        "veth",
        "peer",
        "name",
        &in_client,
        "netns",
        &c.name,
    ]))?;
    sys::run_cmd(Command::new("ip").args([
        "-n",
        &lab.ns.name,
        "link",
        "set",
        &in_lab,
        "master",
        &lab.bridge,
        "up",
    ]))?;
    c.ip(&["addr", "add", CLIENT_CIDR, "dev", &in_client])?;
    c.ip(&["link", "set", &in_client, "up"])?;
    Ok(c)
}

/// ganesha bound to [`GANESHA_IP`], exporting `root` (its directory removed on Ctrl-C too).
struct Anchor {
    _g: Ganesha,
    _dir: AdoptedDir,
}

fn start_ganesha(lab: &BootLab, root: &Path) -> Result<Anchor> {
    let g = Ganesha::start_bound(&lab.ns, root, GANESHA_IP).context(
        "starting nfs-ganesha (fix: apt-get install -y nfs-ganesha nfs-ganesha-vfs rpcbind)",
    )?;
    let dir = AdoptedDir::new(&g.dir);
    Ok(Anchor { _g: g, _dir: dir })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Who {
    Ours,
    Ganesha,
}

impl Who {
    fn name(self) -> &'static str {
        match self {
            Who::Ours => OURS,
            Who::Ganesha => GANESHA,
        }
    }
    fn tag(self) -> &'static str {
        match self {
            Who::Ours => "o",
            Who::Ganesha => "g",
        }
    }
}

/// Console markers first seen, in seconds since QEMU started, until `until` appears.
fn follow(
    node: &mut QemuNode,
    markers: &[(&str, &str)],
    until: &str,
    timeout: Duration,
) -> Result<Vec<Option<f64>>> {
    let deadline = Instant::now() + timeout;
    let mut seen = vec![None; markers.len()];
    loop {
        let t = node.started.elapsed().as_secs_f64();
        let console = node.console();
        for (i, (needle, _)) in markers.iter().enumerate() {
            if seen[i].is_none() && console.contains(needle) {
                seen[i] = Some(t);
            }
        }
        if console.contains(until) {
            return Ok(seen);
        }
        if console.contains("dropping to the rescue shell") {
            bail!(
                "the node dropped to its rescue shell\n{}",
                node.post_mortem()
            );
        }
        if !node.is_running() {
            bail!("QEMU exited before `{until}`\n{}", node.post_mortem());
        }
        if Instant::now() > deadline {
            bail!("no `{until}` within {timeout:?}\n{}", node.post_mortem());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One busybox boot: the stage times and the first HTTP answer of the node's port 80.
struct BusyBoot {
    stages: Vec<Option<f64>>,
    http: f64,
}

fn boot_busybox(lab: &BootLab) -> Result<(QemuNode, AdoptedDir, BusyBoot)> {
    let mut opts = NodeOptions::new(BUSY_NODE.1, Boot::BiosPxe);
    opts.memory_mb = 512;
    let mut node = lab.boot(&opts)?;
    let dir = AdoptedDir::new(node.dir());
    let stages = follow(
        &mut node,
        STAGES,
        "image-init: services started",
        BOOT_TIMEOUT,
    )?;
    let addr: SocketAddr = format!("{}:80", BUSY_NODE.2).parse()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let http = loop {
        if http_get(&lab.ns.name, addr, "/index.html").is_ok() {
            break node.started.elapsed().as_secs_f64();
        }
        if Instant::now() > deadline {
            bail!(
                "the node's HTTP service did not answer within 60 s of its start\n{}",
                node.post_mortem()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    Ok((node, dir, BusyBoot { stages, http }))
}

fn sh(lab: &BootLab, script: &str, timeout: Duration) -> Result<String> {
    let addr: SocketAddr = format!("{}:{GUEST_SHELL}", BUSY_NODE.2).parse()?;
    guest_sh(&lab.ns.name, addr, script, timeout)
}

/// Mounts ours at /mnt/o and ganesha at /mnt/g in the node, both with the root's options and
/// the root's 4 MiB read-ahead.
fn guest_mounts(lab: &BootLab, opts: &str, ganesha_root: &Path) -> Result<()> {
    let script = format!(
        "mkdir -p /mnt/o /mnt/g\n\
         mount -t nfs -o {opts},addr={OURS_IP} {OURS_IP}:/images/{BUSY} /mnt/o || echo MOUNTFAIL o\n\
         mount -t nfs -o {opts},mountport={GANESHA_MOUNT_PORT},addr={GANESHA_IP} {GANESHA_IP}:{g} /mnt/g || echo MOUNTFAIL g\n\
         for m in /mnt/o /mnt/g; do\n\
           mm=$(awk -v m=$m '$5 == m {{ d = $3 }} END {{ print d }}' /proc/self/mountinfo)\n\
           echo 4096 > /sys/class/bdi/$mm/read_ahead_kb\n\
           echo \"ra $m $mm $(cat /sys/class/bdi/$mm/read_ahead_kb)\"\n\
         done\n\
         ls -l /mnt/o/data/big /mnt/g/data/big\n\
         dd if=/mnt/o/data/big of=/dev/null bs=1M count=16 2>/dev/null\n\
         dd if=/mnt/g/data/big of=/dev/null bs=1M count=16 2>/dev/null",
        g = ganesha_root.display()
    );
    let out = sh(lab, &script, Duration::from_secs(120))?;
    if out.contains("MOUNTFAIL") || out.matches("/data/big").count() < 2 {
        bail!("mounting both exports in the node failed:\n{out}");
    }
    Ok(())
}

/// `dd` of /mnt/X/data/big after drop_caches: seconds by the guest clock; the md5 checked.
fn guest_read(lab: &BootLab, who: Who, expected_md5: Option<&str>) -> Result<f64> {
    let m = format!("/mnt/{}", who.tag());
    let script = format!(
        "sync; echo 3 > /proc/sys/vm/drop_caches\n\
         a=$(cut -d' ' -f1 /proc/uptime)\n\
         dd if={m}/data/big of=/dev/null bs=1M 2>/tmp/dd.err || {{ echo DDFAIL; cat /tmp/dd.err; }}\n\
         b=$(cut -d' ' -f1 /proc/uptime)\n\
         echo \"CMT $a $b\"\n\
         {check}",
        check = if expected_md5.is_some() { format!("md5sum {m}/data/big") } else { String::new() }
    );
    let out = sh(lab, &script, Duration::from_secs(600))?;
    if out.contains("DDFAIL") {
        bail!("dd of {m}/data/big failed in the node: {out}");
    }
    let t = out
        .lines()
        .find_map(|l| l.strip_prefix("CMT "))
        .and_then(|l| {
            let mut w = l.split_whitespace().map(|x| x.parse::<f64>());
            match (w.next(), w.next()) {
                (Some(Ok(a)), Some(Ok(b))) => Some(b - a),
                _ => None,
            }
        })
        .ok_or_else(|| anyhow!("no timing in the node's answer: {out}"))?;
    if let Some(expected_md5) = expected_md5.filter(|m| !out.contains(m)) {
        bail!(
            "{}: CORRUPT TRANSFER: md5 of {m}/data/big in the node is not {expected_md5}: {out}",
            who.name()
        );
    }
    Ok(t)
}

fn nfs_url(who: Who, root: &Path, file: &str) -> String {
    match who {
        Who::Ours => {
            format!("nfs://{OURS_IP}/images/{BUSY}/{file}?version=3&nfsport=2049&mountport=2049")
        }
        Who::Ganesha => format!(
            "nfs://{GANESHA_IP}{}/{file}?version=3&nfsport=2049&mountport={GANESHA_MOUNT_PORT}",
            root.display()
        ),
    }
}

/// `nfs-cat URL > /dev/null` in the client namespace: seconds.
fn nfs_cat(client: &Netns, url: &str, log: &Path) -> Result<f64> {
    let mut c = client.command("sh");
    c.arg("-c")
        .arg("nfs-cat \"$1\" > /dev/null")
        .arg("sh")
        .arg(url);
    Ok(sys::run_one(c, log, Duration::from_secs(300))?.as_secs_f64())
}

/// `nfs-cat URL | sha256sum` in the client namespace.
fn nfs_cat_sha(client: &Netns, url: &str, log: &Path) -> Result<String> {
    let mut c = client.command("sh");
    c.arg("-c")
        .arg("{ nfs-cat \"$1\" || echo NFS-CAT-FAILED >&2; } | sha256sum")
        .arg("sh")
        .arg(url);
    sys::run_one(c, log, Duration::from_secs(300))?;
    let out = fs::read_to_string(log)?;
    if out.contains("NFS-CAT-FAILED") {
        bail!("nfs-cat {url} failed: {}", out.trim());
    }
    Ok(out.chars().take(64).collect())
}

/// The handle-survival loops over /mnt/o and /mnt/g (see [`survival`]).
fn loops_script(expected: &str) -> String {
    format!(
        r#"cat > /tmp/loops.sh <<'EOF'
l() {{
  t=$1; m=$2
  cd $m/bin 2>>/tmp/$t.err || {{ echo "FAIL cd" >> /tmp/$t; return; }}
  exec 3< $m/data/small
  while :; do
    e=""
    h=$(sha256sum $m/data/small 2>>/tmp/$t.err | cut -c1-64); [ "$h" = "{expected}" ] || e="$e path-read"
    h=$(sha256sum < /proc/self/fd/3 2>>/tmp/$t.err | cut -c1-64); [ "$h" = "{expected}" ] || e="$e open-fd"
    ls -l busybox sh > /dev/null 2>>/tmp/$t.err || e="$e cwd"
    ls -lR $m/usr $m/bin > /dev/null 2>>/tmp/$t.err || e="$e ls-R"
    if [ -z "$e" ]; then echo ok >> /tmp/$t; else echo "FAIL$e" >> /tmp/$t; fi
    sleep 1
  done
}}
l o /mnt/o &
l g /mnt/g &
wait
EOF
rm -f /tmp/o /tmp/g /tmp/o.err /tmp/g.err
setsid sh /tmp/loops.sh < /dev/null > /dev/null 2>&1 &
echo started"#
    )
}

#[derive(Clone, Debug, Default, serde::Serialize)]
struct LoopStatus {
    ok: usize,
    fails: usize,
    /// Distinct failure kinds and error messages.
    errors: Vec<String>,
}

fn loop_status(lab: &BootLab, tag: &str) -> Result<LoopStatus> {
    let out = sh(
        lab,
        &format!(
            "cat /tmp/{tag} 2>/dev/null; echo ==; sort -u /tmp/{tag}.err 2>/dev/null | head -5"
        ),
        Duration::from_secs(120),
    )?;
    let (body, errs) = out.split_once("==").unwrap_or((&out, ""));
    let mut errors: Vec<String> = body
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .map(|l| l.to_string())
        .collect();
    errors.sort();
    errors.dedup();
    // "sha256sum: /mnt/g/data/small: Stale file handle" → keep the message, drop the path.
    for e in errs.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let msg = e.rsplit(": ").next().unwrap_or(e).to_string();
        if !errors.contains(&msg) {
            errors.push(msg);
        }
    }
    Ok(LoopStatus {
        ok: body.lines().filter(|l| *l == "ok").count(),
        fails: body.lines().filter(|l| l.starts_with("FAIL")).count(),
        errors,
    })
}

#[derive(Clone, Debug, serde::Serialize)]
struct Survival {
    who: &'static str,
    before: LoopStatus,
    after: LoopStatus,
    survived: bool,
}

/// Both servers stopped, the busybox version root replaced by a `cp -a` copy (new inodes),
/// both started again on the same addresses over the copy; the node's loops tell.
fn survival(
    ctx: &Ctx,
    lab: &BootLab,
    ns: &Netns,
    master: &mut Master,
    anchor: &mut Option<Anchor>,
    root: &Path,
) -> Result<(Vec<Survival>, String)> {
    let expected = sha256(&root.join("data/small"))?;
    ctx.progress.set("nfs: handle survival: loops running");
    let out = sh(lab, &loops_script(&expected), Duration::from_secs(60))?;
    if !out.contains("started") {
        bail!("cannot start the loops in the node: {out}");
    }
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let o = loop_status(lab, "o")?;
        let g = loop_status(lab, "g")?;
        if o.fails > 0 || g.fails > 0 {
            bail!("loop failures before the switch (broken setup): ours {o:?}, ganesha {g:?}");
        }
        if o.ok >= 3 && g.ok >= 3 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the loops ran only {} / {} rounds in 180 s", o.ok, g.ok);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    // The baseline: every round counted so far ran against the original tree.
    let before = (loop_status(lab, "o")?, loop_status(lab, "g")?);
    ctx.progress
        .set("nfs: handle survival: servers stopped, tree replaced by a copy");
    master.stop();
    drop(anchor.take());
    let copy = root.with_file_name("root.copy");
    sys::run_cmd(Command::new("cp").arg("-a").arg(root).arg(&copy))?;
    let inode = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(p).map(|m| m.ino()).unwrap_or(0)
    };
    let old = inode(&root.join("data/small"));
    fs::remove_dir_all(root)?;
    fs::rename(&copy, root)?;
    if old == inode(&root.join("data/small")) {
        bail!("the copy kept the inode numbers: the switch would prove nothing");
    }
    // Our server's index cache would let it skip hashing: make it index the copy afresh.
    let _ = fs::remove_file(root.with_file_name("nfs-index"));
    *anchor = Some(start_ganesha(lab, root)?);
    master.start(ctx, ns)?;
    ctx.progress
        .set("nfs: handle survival: servers back, caches dropped in the node");
    sys::wait_until(Duration::from_secs(120), Duration::from_secs(1), || {
        let o = sh(
            lab,
            "sync; echo 3 > /proc/sys/vm/drop_caches; echo dropped",
            Duration::from_secs(60),
        )?;
        if !o.contains("dropped") {
            bail!("{o}");
        }
        Ok(())
    })?;
    // Counted from here: rounds that ran before the caches were dropped may have been served
    // from them.
    let at_drop = (loop_status(lab, "o")?, loop_status(lab, "g")?);
    // Enough rounds after the switch for every path of the loops to have been tried.
    let o_base = at_drop.0.ok + at_drop.0.fails;
    let _ = sys::wait_until(Duration::from_secs(90), Duration::from_secs(2), || {
        let o = loop_status(lab, "o")?;
        if o.ok + o.fails < o_base + 8 {
            bail!("waiting");
        }
        Ok(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let (bo, bg) = before;
    let (ao, ag) = at_drop;
    let mut result = Vec::new();
    for (who, b, base) in [(Who::Ours, bo, ao), (Who::Ganesha, bg, ag)] {
        let now = loop_status(lab, who.tag())?;
        let after = LoopStatus {
            ok: now.ok.saturating_sub(base.ok),
            fails: now.fails.saturating_sub(base.fails),
            errors: now.errors,
        };
        let survived = after.fails == 0 && after.ok >= 3;
        result.push(Survival {
            who: who.name(),
            before: b,
            after,
            survived,
        });
    }
    let dmesg = sh(
        lab,
        "dmesg | grep -iE 'stale|fileid changed' | tail -5 || true",
        Duration::from_secs(60),
    )
    .unwrap_or_default();
    Ok((result, dmesg.trim().to_string()))
}

/// One Debian boot: the marker times and the guest's NFS call counts.
#[derive(Clone, Debug, serde::Serialize)]
struct DebBoot {
    who: &'static str,
    stages: Vec<Option<f64>>,
    proc3: Option<Vec<u64>>,
    start_jobs_waited: bool,
}

fn boot_debian(lab: &BootLab, version: &Path, who: Who) -> Result<DebBoot> {
    let root = match who {
        Who::Ours => format!("nfs:{OURS_IP}:/images/{DEB}"),
        Who::Ganesha => format!(
            "nfs:{GANESHA_IP}:{} cm.nfsopts=mountport={GANESHA_MOUNT_PORT}",
            version.join("root").display()
        ),
    };
    let append = format!(
        "console=ttyS0 cm.master=http://{OURS_IP}:{HTTP_PORT} cm.mac={} cm.node={} cm.root={root}",
        DEB_NODE.1, DEB_NODE.0
    );
    let mut opts = NodeOptions::new(
        DEB_NODE.1,
        Boot::Direct {
            kernel: version.join("vmlinuz"),
            initrd: version.join("initramfs.img"),
            append,
        },
    );
    opts.memory_mb = 768;
    let mut node = lab.boot(&opts)?;
    let _dir = AdoptedDir::new(node.dir());
    let stages = follow(&mut node, DEB_STAGES, "CM-BOOTED", DEB_TIMEOUT)?;
    // The call counts line comes just before the marker.
    std::thread::sleep(Duration::from_millis(200));
    let console = node.console();
    let proc3 = parse_proc3(&console);
    Ok(DebBoot {
        who: who.name(),
        stages,
        proc3,
        start_jobs_waited: console.contains("A start job is running"),
    })
}

/// The counts of the `CM-RPC proc3 N c0 c1 …` console line (a copy of /proc/net/rpc/nfs).
fn parse_proc3(console: &str) -> Option<Vec<u64>> {
    console.lines().find_map(|l| {
        let rest = l.split("CM-RPC proc3 ").nth(1)?;
        let mut nums = rest.split_whitespace().map(|n| n.parse::<u64>().ok());
        let n = nums.next()?? as usize;
        let v: Vec<u64> = nums.take(n).collect::<Option<Vec<u64>>>()?;
        (v.len() == n && n == NFS3_PROCS.len()).then_some(v)
    })
}

fn series<T>(items: &[(Who, T)], who: Who, f: impl Fn(&T) -> Option<f64>) -> Vec<f64> {
    items
        .iter()
        .filter(|(w, _)| *w == who)
        .filter_map(|(_, t)| f(t))
        .collect()
}

fn cell(v: &[f64], unit: &str) -> String {
    Summary::of(v)
        .map(|s| fmt_summary(&s, unit))
        .unwrap_or_else(|| "—".into())
}

pub fn run(ctx: &Ctx) -> Result<Section> {
    let mut section = Section::new("nfs");
    let qemu = sys::require_program("qemu-system-x86_64", "qemu-system-x86")?;
    sys::require_program("nfs-cat", "libnfs-utils")?;
    cm_tests::ganesha::require()?;
    if !Path::new("/usr/lib/ipxe").is_dir() {
        bail!("/usr/lib/ipxe is missing (fix: apt-get install -y ipxe ipxe-qemu)");
    }
    section
        .tools
        .insert("qemu".into(), sys::version_line(&qemu, &["--version"]));
    section.tools.insert(
        "nfs-ganesha".into(),
        sys::version_line(Path::new("/usr/bin/ganesha.nfsd"), &["-v"]),
    );
    section.tools.insert(
        "libnfs-utils".into(),
        Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}", "libnfs-utils"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default(),
    );
    ctx.ours().bin()?;
    section.tools.insert(OURS.into(), ctx.ours().version());
    let inputs = inputs(ctx)?;
    let node_opts = node_mount_options(ctx)?;
    let rounds = ctx.long_rounds;
    // Reads per server and round (short: one read of the big file is well under a second on
    // the host).
    let reps = if ctx.quick { 2 } else { 3 };
    let cat_reps = if ctx.quick { 2 } else { 5 };
    let deb_rounds = if ctx.quick || ctx.args.rounds.is_some() {
        rounds
    } else {
        rounds.max(5)
    };

    // The trees and the store (on disk: ganesha needs name_to_handle_at, and both serve from
    // the same page cache).
    let scratch = TempDir::new("nfs", true)?;
    let busy_src = scratch.join("busy-src");
    ctx.progress
        .set(format!("nfs: busybox root with a {BIG_MB} MiB file"));
    build_busybox_root(&busy_src, &inputs.busybox, BIG_MB)?;
    write_pattern_file(&busy_src.join("data/small"), SMALL_BYTES)?;
    // libnfs URLs name the export up to the last slash: the file must be at the export's top.
    fs::hard_link(busy_src.join("data/big"), busy_src.join("big"))?;
    fs::hard_link(busy_src.join("data/small"), busy_src.join("small"))?;
    ctx.progress
        .set("nfs: copying the Debian root and adding the CM-BOOTED unit");
    let deb_src = scratch.join("deb-src");
    prepare_debian_tree(&debian_root(ctx)?, &deb_src)?;

    ctx.progress.set("nfs: lab and master");
    let lab = BootLab::with_addresses(CIDR4, CIDR6)?;
    let ns = Netns::adopt(&lab.ns.name)?;
    ns.ip(&["addr", "add", GANESHA_CIDR, "dev", &lab.bridge])?;
    let mut master = Master::new(ctx, &scratch.path, true)?;
    ctx.progress.set("nfs: image build busy (busybox root)");
    master.build(BUSY, &format!("dir:{}", busy_src.display()), &inputs)?;
    ctx.progress.set("nfs: image build deb (Debian root)");
    let (deb_build_s, deb_report) =
        master.build(DEB, &format!("dir:{}", deb_src.display()), &inputs)?;
    for (name, mac, ip, image) in [
        (BUSY_NODE.0, BUSY_NODE.1, BUSY_NODE.2, BUSY),
        (DEB_NODE.0, DEB_NODE.1, DEB_NODE.2, DEB),
    ] {
        master.cli(&[
            "node", "add", name, "--mac", mac, "--ip", ip, "--image", image,
        ])?;
    }
    let busy_version = master.version_dir(BUSY)?;
    let busy_root = busy_version.join("root");
    let big = busy_root.join("data/big");
    let big_len = fs::metadata(&big)?.len();
    let big_sha = sha256(&big)?;
    let big_md5 = md5(&big)?;
    master.start(ctx, &ns)?;
    let mut anchor = Some(start_ganesha(&lab, &busy_root)?);
    let client = client_ns(&lab)?;

    // Host-side checksums once: both servers hand out the right bytes.
    for who in [Who::Ours, Who::Ganesha] {
        let log = scratch.join(format!("nfs-cat-sha-{}.log", who.tag()));
        let got = nfs_cat_sha(&client, &nfs_url(who, &busy_root, "big"), &log)
            .with_context(|| format!("nfs-cat from {}", who.name()))?;
        if got != big_sha {
            bail!(
                "{}: CORRUPT TRANSFER: nfs-cat of data/big has sha256 {got}, expected {big_sha}",
                who.name()
            );
        }
    }

    let both = [Who::Ours, Who::Ganesha];
    let mut cat: Vec<(Who, f64)> = Vec::new();
    let mut cat_small: Vec<(Who, f64)> = Vec::new();
    let mut dd: Vec<(Who, f64)> = Vec::new();
    let mut boots: Vec<(Who, BusyBoot)> = Vec::new();
    let mut last_node = None;
    for round in 0..rounds {
        let what = format!("nfs round {}/{rounds}", round + 1);
        // The previous round's node (a TCG guest spinning a core) must not share the CPUs
        // with the host-side reads.
        drop(last_node.take());
        for who in (0..cat_reps).flat_map(|r| super::round_order(&both, round + r)) {
            ctx.progress
                .set(format!("{what}: nfs-cat of 1 MiB from {}", who.name()));
            let log = scratch.join("nfs-cat.log");
            let t = nfs_cat(&client, &nfs_url(who, &busy_root, "small"), &log)
                .with_context(|| format!("nfs-cat from {}", who.name()))?;
            cat_small.push((who, t * 1000.0));
        }
        for who in (0..cat_reps).flat_map(|r| super::round_order(&both, round + r)) {
            ctx.progress.set(format!(
                "{what}: nfs-cat of {BIG_MB} MiB from {}",
                who.name()
            ));
            warm(&big)?;
            let log = scratch.join("nfs-cat.log");
            let t = nfs_cat(&client, &nfs_url(who, &busy_root, "big"), &log)
                .with_context(|| format!("nfs-cat from {}", who.name()))?;
            ctx.progress.line(format!(
                "  {what}: nfs-cat {}: {:.1} MB/s",
                who.name(),
                big_len as f64 / 1e6 / t
            ));
            cat.push((who, big_len as f64 / 1e6 / t));
        }
        ctx.progress
            .set(format!("{what}: busybox node PXE boot (QEMU TCG)"));
        let (node, dir, b) = boot_busybox(&lab)
            .with_context(|| format!("{what}: busybox boot\n{}", master.log_tail()))?;
        ctx.progress.line(format!(
            "  {what}: busybox node power-on to HTTP answering {:.1} s",
            b.http
        ));
        boots.push((Who::Ours, b));
        guest_mounts(&lab, &node_opts, &busy_root)?;
        for (i, who) in (0..reps)
            .flat_map(|r| super::round_order(&both, round + r))
            .enumerate()
        {
            ctx.progress.set(format!(
                "{what}: dd of {BIG_MB} MiB in the node from {}",
                who.name()
            ));
            warm(&big)?;
            let t = guest_read(&lab, who, (i < 2).then_some(big_md5.as_str()))?;
            ctx.progress.line(format!(
                "  {what}: guest dd {}: {:.1} MB/s",
                who.name(),
                big_len as f64 / 1e6 / t
            ));
            dd.push((who, big_len as f64 / 1e6 / t));
        }
        last_node = Some((node, dir));
    }

    // Handle survival on the last node.
    let surv = survival(ctx, &lab, &ns, &mut master, &mut anchor, &busy_root);
    drop(last_node.take());
    let (surv, surv_dmesg) = match surv {
        Ok(s) => s,
        Err(e) => {
            ctx.progress
                .line(format!("nfs: handle survival check failed: {e:#}"));
            section
                .notes
                .push(format!("Handle survival: the check itself failed: {e:#}"));
            (Vec::new(), String::new())
        }
    };

    // Debian boots.
    drop(anchor.take());
    let deb_version = master.version_dir(DEB)?;
    let _anchor = start_ganesha(&lab, &deb_version.join("root"))?;
    let mut deb: Vec<(Who, DebBoot)> = Vec::new();
    for round in 0..deb_rounds {
        for who in super::round_order(&both, round) {
            let what = format!(
                "nfs Debian round {}/{deb_rounds}: root from {}",
                round + 1,
                who.name()
            );
            ctx.progress
                .set(format!("{what}: systemd boot (QEMU TCG, 25–60 s)"));
            warm_tree(&deb_version.join("root"));
            let b = boot_debian(&lab, &deb_version, who)
                .with_context(|| format!("{what}\n{}", master.log_tail()))?;
            ctx.progress.line(format!(
                "  {what}: CM-BOOTED {:.1} s after power-on",
                b.stages[DEB_STAGES.len() - 1].unwrap_or(f64::NAN)
            ));
            deb.push((who, b));
        }
    }
    drop(_anchor);
    master.stop();
    drop(client);
    drop(ns);
    drop(lab);

    // ---- report ----
    let rate = |v: &[(Who, f64)], who: Who| series(v, who, |x| Some(*x));
    section.rows.push(Row::new(
        format!("{BIG_MB} MiB file, host-side libnfs `nfs-cat` from a client namespace"),
        "MB/s",
        Better::Higher,
        Measure::new(GANESHA, &rate(&cat, Who::Ganesha)),
        Measure::new(OURS, &rate(&cat, Who::Ours)),
    ));
    section.rows.push(Row::new(
        "1 MiB file, host-side `nfs-cat` (process start, MOUNT, LOOKUP, one READ: latency)",
        "ms",
        Better::Lower,
        Measure::new(GANESHA, &rate(&cat_small, Who::Ganesha)),
        Measure::new(OURS, &rate(&cat_small, Who::Ours)),
    ));
    section.rows.push(Row::new(
        format!("{BIG_MB} MiB file, `dd bs=1M` in a QEMU TCG guest after drop_caches"),
        "MB/s",
        Better::Higher,
        Measure::new(GANESHA, &rate(&dd, Who::Ganesha)),
        Measure::new(OURS, &rate(&dd, Who::Ours)),
    ));
    let booted = DEB_STAGES.len() - 1;
    section.rows.push(Row::new(
        "Debian 12 + systemd root, QEMU start to CM-BOOTED (after multi-user.target), TCG",
        "s",
        Better::Lower,
        Measure::new(GANESHA, &series(&deb, Who::Ganesha, |b| b.stages[booted])),
        Measure::new(OURS, &series(&deb, Who::Ours, |b| b.stages[booted])),
    ));
    let mounted = 1;
    section.rows.push(Row::new(
        "Debian: NFS root mounted to CM-BOOTED (the part the NFS server serves)",
        "s",
        Better::Lower,
        Measure::new(
            GANESHA,
            &series(&deb, Who::Ganesha, |b| {
                Some(b.stages[booted]? - b.stages[mounted]?)
            }),
        ),
        Measure::new(
            OURS,
            &series(&deb, Who::Ours, |b| {
                Some(b.stages[booted]? - b.stages[mounted]?)
            }),
        ),
    ));

    let mut md = String::new();
    // Busybox boot stages.
    let _ = writeln!(
        md,
        "**Power-on to service answering**, one BIOS PXE node (QEMU TCG) on the busybox root from `clustermaker serve` (DHCP, iPXE script, kernel and initramfs over HTTP, NFS root, node overlay): seconds after power-on when each console marker first appeared, median [min–max] over {} boot{} (no anchor: absolute figures):\n",
        boots.len(),
        if boots.len() == 1 { "" } else { "s" }
    );
    let mut head: Vec<&str> = STAGES.iter().map(|(_, m)| *m).collect();
    head.push("HTTP :80 answers");
    let _ = writeln!(md, "| {} |", head.join(" | "));
    let _ = writeln!(md, "|{}", " --- |".repeat(head.len()));
    let mut cells: Vec<String> = (0..STAGES.len())
        .map(|i| cell(&series(&boots, Who::Ours, |b| b.stages[i]), "s"))
        .collect();
    cells.push(cell(&series(&boots, Who::Ours, |b| Some(b.http)), "s"));
    let _ = writeln!(md, "| {} |\n", cells.join(" | "));

    // Debian stages.
    let _ = writeln!(
        md,
        "**Debian + systemd boot stages** (seconds after QEMU start, median [min–max]):\n"
    );
    let _ = writeln!(
        md,
        "| root served by | {} |",
        DEB_STAGES
            .iter()
            .map(|(_, m)| *m)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(md, "| --- |{}", " --- |".repeat(DEB_STAGES.len()));
    for who in both {
        let cells: Vec<String> = (0..DEB_STAGES.len())
            .map(|i| cell(&series(&deb, who, |b| b.stages[i]), "s"))
            .collect();
        let _ = writeln!(md, "| {} | {} |", who.name(), cells.join(" | "));
    }
    md.push('\n');

    // RPC counts.
    let all: Vec<(Who, Vec<u64>)> = deb
        .iter()
        .filter_map(|(w, b)| b.proc3.clone().map(|v| (*w, v)))
        .collect();
    if !all.is_empty() {
        let median = |who: Who, i: usize| -> Option<f64> {
            let v: Vec<f64> = all
                .iter()
                .filter(|(w, _)| *w == who)
                .filter_map(|(_, c)| c.get(i).map(|x| *x as f64))
                .collect();
            Summary::of(&v).map(|s| s.median)
        };
        let _ = writeln!(
            md,
            "**NFSv3 calls per Debian boot** (the guest kernel's client counters, `/proc/net/rpc/nfs`, read by the CM-BOOTED unit; median per boot; procedures with calls only):\n"
        );
        let _ = writeln!(
            md,
            "| procedure | {GANESHA} | {OURS} |\n| --- | --- | --- |"
        );
        let mut tot = (0.0, 0.0);
        for (i, name) in NFS3_PROCS.iter().enumerate() {
            let (g, o) = (median(Who::Ganesha, i), median(Who::Ours, i));
            if g.unwrap_or(0.0) > 0.0 || o.unwrap_or(0.0) > 0.0 {
                tot.0 += g.unwrap_or(0.0);
                tot.1 += o.unwrap_or(0.0);
                let f = |x: Option<f64>| x.map(fmt_num).unwrap_or_else(|| "—".into());
                let _ = writeln!(md, "| {name} | {} | {} |", f(g), f(o));
            }
        }
        let _ = writeln!(md, "| all | {} | {} |\n", fmt_num(tot.0), fmt_num(tot.1));
    }

    // Survival.
    if !surv.is_empty() {
        let _ = writeln!(
            md,
            "**Handle survival (negative control and proof of the feature)**: a node holds both exports mounted and loops every second over each (a path read, a re-read through a file descriptor opened before the switch, a lookup in a working directory entered before it, `ls -lR`); both servers are stopped, the tree is replaced by a `cp -a` copy (new inode numbers everywhere), both start again on the same addresses over the copy, and the node drops its caches:\n"
        );
        let _ = writeln!(
            md,
            "| server | loop rounds before the switch (all ok) | rounds after the switch and the cache drop: ok / failed | survived | errors seen (all rounds) |\n| --- | --- | --- | --- | --- |"
        );
        for s in &surv {
            let _ = writeln!(
                md,
                "| {} | {} | {} / {} | **{}** | {} |",
                s.who,
                s.before.ok,
                s.after.ok,
                s.after.fails,
                if s.survived { "yes" } else { "no" },
                if s.after.errors.is_empty() {
                    "none".to_string()
                } else {
                    s.after.errors.join("; ").replace('|', "\\|")
                }
            );
        }
        if !surv_dmesg.is_empty() {
            let _ = writeln!(
                md,
                "\nGuest kernel afterwards: `{}`",
                surv_dmesg.lines().last().unwrap_or("").trim()
            );
        }
        md.push('\n');
    }
    section.details_md = md;

    let waited: Vec<&str> = deb
        .iter()
        .filter(|(_, b)| b.start_jobs_waited)
        .map(|(w, _)| w.name())
        .collect();
    if !waited.is_empty() {
        section.notes.push(format!(
            "systemd printed \"A start job is running\" in {} Debian boot(s) ({}): some unit waited.",
            waited.len(),
            waited.join(", ")
        ));
    }
    section.notes.push(
        "Per-procedure counts on the server side: our server counts calls (`nfs::server::ServerStats`) but `serve` does not expose them yet; the table above uses the guest's client counters, the same for both servers."
            .into(),
    );
    section.method = vec![
        format!("One lab namespace: bridge br0 with {OURS_IP}/24 (ours: `clustermaker serve`, `[nfs] listen = [\"{OURS_IP}:2049\"]`) and {GANESHA_IP}/24 (nfs-ganesha 4.3, FSAL VFS, `NFS_CORE_PARAM {{ Bind_addr = {GANESHA_IP}; }}`, MOUNT on {GANESHA_MOUNT_PORT}, rpcbind, the settings of docs/design/nfs-server.md §5.4, `MaxRead = PrefRead = 1 MiB`). Both serve the same directory: the image version's root in the store, on disk ({}), whose files are read on the host before each measurement so both serve from a warm page cache.", std::env::temp_dir().display()),
        format!("Busybox root (tests/src/nfsroot.rs) plus `/data/big`, {BIG_MB} MiB ({big_len} bytes) of pseudo-random bytes, built with `clustermaker image build busy --from dir:…`; ours exports it as `/images/{BUSY}`, ganesha as its real path."),
        format!("Host-side read: `nfs-cat 'nfs://IP/EXPORT/big?version=3&nfsport=2049&mountport=PORT' > /dev/null` (libnfs; `/big` is a hard link to `/data/big`: libnfs takes everything up to the last slash as the export) from a client namespace on the bridge, timed from spawn to exit, {cat_reps} reads per server and round in alternating order; the bytes are checked once per server before (`nfs-cat … | sha256sum`). The same with the 1 MiB `/small` first: the fixed cost of a read (process, mount, lookup) without the bulk transfer."),
        format!("Guest read: one BIOS PXE boot per round of a node ({}, QEMU `-accel tcg`, 512 MiB) on the busybox root from ours; in it both exports are mounted with the node root's own options (`{node_opts}`, plus `mountport={GANESHA_MOUNT_PORT}` for ganesha) and 4 MiB read-ahead, then an untimed 16 MiB `dd` from each (QEMU translates the guest's NFS read path once, before any timing), then {reps} reads per server in alternating order: `echo 3 > /proc/sys/vm/drop_caches; dd if=/mnt/X/data/big of=/dev/null bs=1M` timed by the guest's /proc/uptime; the first read from each is followed by `md5sum`, checked against the host's.", BUSY_NODE.1),
        "Boot stages: the console markers of the node initramfs (`clustermaker-init: …`) and of the image's rcS, polled every 50 ms; then an HTTP GET of the node's port 80 from the lab namespace every 100 ms until it answers 200.".into(),
        format!("Debian boot: the Debian minbase root with `systemd-sysv,udev` plus a `Type=oneshot` unit (`After=multi-user.target`, `WantedBy=multi-user.target`, `DefaultDependencies=no`) printing the guest's NFS call counts and `CM-BOOTED` on ttyS0, built with `clustermaker image build deb --from dir:…` ({:.0} s for this run's build); QEMU `-kernel/-initrd` with the version's vmlinuz and initramfs.img, 768 MiB, `console=ttyS0 cm.master=… cm.mac=… cm.node=… cm.root=nfs:SERVER:/PATH` (`cm.nfsopts=mountport={GANESHA_MOUNT_PORT}` for ganesha); our master gives DHCP, the node overlay and takes the agent's metrics in both cases; the page cache of the whole tree is warmed before each boot. {deb_rounds} boot{} per server, alternating.", deb_build_s, if deb_rounds == 1 { "" } else { "s" }),
        "Handle survival: see its table; a row, not a timing.".into(),
    ];
    section.rounds = Some(rounds);
    section.raw = serde_json::json!({
        "big_bytes": big_len,
        "nfs_cat_small_ms": cat_small.iter().map(|(w, v)| serde_json::json!({"server": w.name(), "ms": v})).collect::<Vec<_>>(),
        "nfs_cat_mb_s": cat.iter().map(|(w, v)| serde_json::json!({"server": w.name(), "mb_s": v})).collect::<Vec<_>>(),
        "guest_dd_mb_s": dd.iter().map(|(w, v)| serde_json::json!({"server": w.name(), "mb_s": v})).collect::<Vec<_>>(),
        "busybox_boots": boots.iter().map(|(_, b)| serde_json::json!({"stages": b.stages, "http_s": b.http})).collect::<Vec<_>>(),
        "debian_boots": deb.iter().map(|(_, b)| b).collect::<Vec<_>>(),
        "debian_build": {"wall_s": deb_build_s, "report": deb_report},
        "survival": surv,
    });
    Ok(section)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc3_line_is_parsed_from_the_console() {
        let console = "[  OK  ] Reached target multi-user.target\r\n\
            CM-RPC proc3 22 1 1249 0 398 363 116 349 0 0 0 0 0 0 0 0 0 0 49 1 2 1 0\r\n\
            CM-BOOTED\r\n";
        let v = parse_proc3(console).unwrap();
        assert_eq!(v.len(), 22);
        assert_eq!(
            v[NFS3_PROCS.iter().position(|p| *p == "READ").unwrap()],
            349
        );
        assert!(parse_proc3("CM-RPC proc3 22 1 2\n").is_none());
        assert!(parse_proc3("CM-RPC \n").is_none());
    }

    #[test]
    fn guest_mounts_use_the_initramfs_options() {
        let ws = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = fs::read_to_string(ws.join("images/templates/initramfs/init.sh")).unwrap();
        let opts = text
            .lines()
            .find_map(|l| l.strip_prefix("NFS_OPTS=\""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap();
        assert!(
            opts.contains("vers=3") && opts.contains("rsize=1048576"),
            "{opts}"
        );
    }

    #[test]
    fn debian_tree_gets_an_enabled_booted_unit() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("etc")).unwrap();
        fs::write(src.join("etc/os-release"), "ID=debian\n").unwrap();
        let dest = dir.path().join("dest");
        prepare_debian_tree(&src, &dest).unwrap();
        let unit = fs::read_to_string(dest.join("etc/systemd/system/cm-booted.service")).unwrap();
        assert!(
            unit.contains("After=multi-user.target") && unit.contains("DefaultDependencies=no")
        );
        let link = fs::read_link(
            dest.join("etc/systemd/system/multi-user.target.wants/cm-booted.service"),
        )
        .unwrap();
        assert_eq!(link, Path::new("/etc/systemd/system/cm-booted.service"));
        let script = dest.join("usr/local/sbin/cm-booted");
        assert!(fs::read_to_string(&script).unwrap().contains("CM-BOOTED"));
        assert_eq!(
            fs::metadata(&script).unwrap().permissions().mode() & 0o111,
            0o111
        );
        assert!(dest.join("etc/os-release").is_file());
    }
}
