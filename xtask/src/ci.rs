//! `cargo xtask ci`: the whole test suite, as CI and a developer run it. Installs the Debian
//! packages the tests need when missing, then: format and lint checks, the release build, a short
//! bounded run of every fuzz target, the node boot image, and every test (root, network
//! namespaces and QEMU included: under CI=true those fail rather than skip when something is
//! missing).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Debian packages the tests use: real DHCP/TFTP clients and peers, QEMU with iPXE and OVMF
/// firmware, archive tools for initramfs round trips, nftables, an SMTP sink and
/// stress-ng for the HA lab.
pub const TEST_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "ipxe-qemu",
    "ipxe",
    "ovmf",
    "dnsmasq-base",
    "kea-admin",
    "udhcpc",
    "isc-dhcp-client",
    "tftp-hpa",
    "atftp",
    "curl",
    "socat",
    "cpio",
    "libarchive-tools",
    "kmod",
    "zstd",
    "iproute2",
    "iputils-ping",
    "binutils",
    // The HA lab: nft cuts links, python3's smtpd is the SMTP sink, pgrep finds daemons.
    "nftables",
    "python3",
    "procps",
    "util-linux",
    "stress-ng",
    // Shared roots: nfs-ganesha is the NFS anchor and the negative control of the handle
    // test, libnfs-utils an independent NFSv3 client, ssh-keygen makes node host keys,
    // xfsprogs/btrfs-progs make reflink file systems for snapshot tests, debootstrap builds
    // Debian roots.
    "nfs-ganesha",
    "nfs-ganesha-vfs",
    "rpcbind",
    "libnfs-utils",
    "openssh-client",
    "xfsprogs",
    "btrfs-progs",
    "debootstrap",
];

/// Fuzz targets run for a short bounded time each.
pub const FUZZ_TARGETS: &[&str] = &[
    "dhcp_handler",
    "tftp_request",
    "initrd_archive",
    "initrd_elf",
    "initrd_modules_dep",
    "ha_wire",
    "import_heartbeat",
    "import_mon",
    "ha_serial_frames",
    "images_tar",
    "nfs_rpc",
    "nfs_index",
];

#[derive(clap::Args, Debug)]
pub struct CiArgs {
    /// Seconds per fuzz target.
    #[arg(long, default_value_t = 20)]
    pub fuzz_seconds: u32,
    /// Skip the fuzz smoke run (e.g. without network access to install cargo-fuzz).
    #[arg(long)]
    pub no_fuzz: bool,
    /// Extra arguments for `cargo test` (e.g. a test name filter).
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

/// Installs the missing ones of `packages` with apt-get (one `apt-get update` first).
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("==> installing Debian packages: {}", missing.join(" "));
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "packages missing: {}; run as root or `apt-get install -y {}`",
            missing.join(" "),
            missing.join(" ")
        );
    }
    step(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive");
    step("apt-get install", &mut install)
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Runs one step, printing its name and duration; fails with the step's name.
fn step(name: &str, cmd: &mut Command) -> Result<()> {
    eprintln!("==> {name}");
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{name}`"))?;
    eprintln!("    {name}: {:.1}s", start.elapsed().as_secs_f64());
    if !status.success() {
        bail!("`{name}` failed ({status})");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

pub fn run(args: CiArgs) -> Result<()> {
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    ensure_packages(TEST_PACKAGES)?;
    step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--", "--check"]),
    )?;
    step(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--release",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    step(
        "cargo build --release",
        cargo().args(["build", "--release", "--workspace", "--bins"]),
    )?;
    if !args.no_fuzz {
        fuzz_smoke(args.fuzz_seconds)?;
    }
    let bin = target_dir().join("release/clustermaker");
    let boot_dir = target_dir().join("cm-boot");
    let xtask = std::env::current_exe()?;
    step(
        "cargo xtask build-image",
        Command::new(&xtask)
            .arg("build-image")
            .arg("--clustermaker")
            .arg(&bin)
            .arg("--out")
            .arg(&boot_dir),
    )?;
    let mut test = cargo();
    test.args(["test", "--release", "--workspace"])
        .env("CLUSTERMAKER_BIN", &bin)
        .env("CM_BOOT_DIR", &boot_dir);
    if !args.test_args.is_empty() {
        test.arg("--").args(&args.test_args);
    }
    step("cargo test", &mut test)
}

fn fuzz_smoke(seconds: u32) -> Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        step(
            "cargo install cargo-fuzz",
            cargo().args(["install", "cargo-fuzz", "--locked"]),
        )?;
    }
    for target in FUZZ_TARGETS {
        // cargo-fuzz needs nightly flags (sanitizers); RUSTC_BOOTSTRAP lets this stable toolchain
        // accept them, since no other toolchain can be installed here.
        step(
            &format!("cargo fuzz run {target} ({seconds}s)"),
            cargo()
                .current_dir(workspace_root().join("fuzz"))
                .env("RUSTC_BOOTSTRAP", "1")
                .env("CARGO_TARGET_DIR", target_dir().join("fuzz"))
                // No sanitizer: the smoke run looks for panics and overflows (debug
                // assertions stay on), and an ASan build of tokio takes many minutes here.
                .args([
                    "fuzz",
                    "run",
                    "--sanitizer",
                    "none",
                    target,
                    "--",
                    &format!("-max_total_time={seconds}"),
                    "-rss_limit_mb=2048",
                ]),
        )?;
    }
    Ok(())
}
