//! Our side: the `clustermaker` binary (release build), its configuration for a benchmark, and
//! whether it already supports a service (`[dhcp]`, `[tftp]` are being added while the bench
//! is written: a configuration it refuses with "unknown field" means "not available yet",
//! which the report says, instead of failing the whole run).

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use super::sys::{Netns, Server};

/// How `clustermaker` is found.
pub struct Ours {
    /// The binary, or why there is none.
    pub bin: std::result::Result<PathBuf, String>,
}

impl Ours {
    /// `explicit` (from `--clustermaker` / `CLUSTERMAKER_BIN`), else a release build of the
    /// workspace's `clustermaker` package.
    pub fn locate(workspace: &Path, explicit: Option<&Path>) -> Ours {
        if let Some(p) = explicit {
            return Ours {
                bin: if p.is_file() {
                    Ok(p.to_path_buf())
                } else {
                    Err(format!("{} does not exist", p.display()))
                },
            };
        }
        Ours {
            bin: build(workspace).map_err(|e| format!("{e:#}")),
        }
    }

    pub fn bin(&self) -> Result<&Path> {
        self.bin
            .as_deref()
            .map_err(|e| anyhow!("no clustermaker binary: {e}"))
    }

    /// Checks `config` with `clustermaker --config FILE config`. `Ok(None)`: accepted.
    /// `Ok(Some(why))`: refused because a section is unknown (the service is not there yet).
    /// `Err`: refused for another reason (a bug in the bench's configuration, or ours).
    pub fn check_config(&self, config: &Path) -> Result<Option<String>> {
        let out = Command::new(self.bin()?)
            .arg("--config")
            .arg(config)
            .arg("config")
            .stdin(Stdio::null())
            .output()
            .context("cannot run clustermaker")?;
        if out.status.success() {
            return Ok(None);
        }
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if err.contains("unknown field") || err.contains("unknown variant") {
            return Ok(Some(err));
        }
        bail!(
            "clustermaker refuses the bench configuration {}: {err}",
            config.display()
        )
    }

    /// Starts `clustermaker --config FILE serve` inside `ns`.
    pub fn serve(
        &self,
        ns: &Netns,
        config: &Path,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Server> {
        let mut cmd = ns.command(self.bin()?);
        cmd.arg("--config").arg(config).arg("serve");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Server::spawn("clustermaker serve", cmd, log)
    }

    /// Writes `cfg` to `scratch/clustermaker-NAME.toml` and starts `serve` with it inside `ns`,
    /// logging at warn to `scratch/clustermaker-NAME.log`. `Ok(None)` when this build does not
    /// know a section of it (see [`Ours::check_config`]).
    pub fn start(
        &self,
        ns: &Netns,
        cfg: &Config,
        scratch: &Path,
        name: &str,
    ) -> Result<Option<Server>> {
        let path = cfg.write(&scratch.join(format!("clustermaker-{name}.toml")))?;
        if self.check_config(&path)?.is_some() {
            return Ok(None);
        }
        let log = scratch.join(format!("clustermaker-{name}.log"));
        self.serve(ns, &path, &log, &[("CLUSTERMAKER_LOG", "warn")])
            .map(Some)
    }

    /// `clustermaker --version`.
    pub fn version(&self) -> String {
        match &self.bin {
            Ok(p) => super::sys::version_line(p, &["--version"]),
            Err(_) => "not built".into(),
        }
    }
}

/// `cargo build --release -p clustermaker`, returning the executable cargo reports.
fn build(workspace: &Path) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "clustermaker",
            "--bin",
            "clustermaker",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(workspace)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!("cargo build --release -p clustermaker failed");
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if v["reason"] == "compiler-artifact" && v["target"]["name"] == "clustermaker" {
            if let Some(exe) = v["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    bail!("cargo build reported no clustermaker executable")
}

/// A `clustermaker` configuration for a benchmark: always `state_dir`, `[network]`, `[http]`,
/// `[boot]` (no IPv6 RA: nothing to answer in a bench), plus the sections a benchmark adds.
pub struct Config {
    pub state_dir: PathBuf,
    pub interface: String,
    pub address: Ipv4Addr,
    /// `network.prefix_len` (the appliance's default when None).
    pub prefix_len: Option<u8>,
    pub http_port: u16,
    pub images_dir: PathBuf,
    /// `boot.ipv6_ra`: answer router solicitations (off unless a benchmark boots iPXE).
    pub ipv6_ra: bool,
    /// `boot.cmdline`, when not the appliance's default.
    pub cmdline: Option<String>,
    /// Extra TOML appended as is (`[dhcp]`, `[tftp]` …).
    pub extra: String,
}

impl Config {
    pub fn new(state_dir: &Path, interface: &str, address: Ipv4Addr, images_dir: &Path) -> Config {
        Config {
            state_dir: state_dir.to_path_buf(),
            interface: interface.to_string(),
            address,
            prefix_len: None,
            http_port: 8080,
            images_dir: images_dir.to_path_buf(),
            ipv6_ra: false,
            cmdline: None,
            extra: String::new(),
        }
    }

    pub fn to_toml(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(t, "# written by cargo xtask bench");
        let _ = writeln!(t, "state_dir = {:?}", self.state_dir.display().to_string());
        let _ = writeln!(
            t,
            "\n[network]\ninterface = {:?}\naddress = \"{}\"",
            self.interface, self.address
        );
        if let Some(p) = self.prefix_len {
            let _ = writeln!(t, "prefix_len = {p}");
        }
        let _ = writeln!(t, "\n[http]\nport = {}", self.http_port);
        let _ = writeln!(
            t,
            "\n[boot]\nimages_dir = {:?}\ndefault_image = \"bench\"\nipv6_ra = {}",
            self.images_dir.display().to_string(),
            self.ipv6_ra
        );
        if let Some(c) = &self.cmdline {
            let _ = writeln!(t, "cmdline = {c:?}");
        }
        t.push('\n');
        t.push_str(&self.extra);
        t
    }

    /// Writes the file and returns its path.
    pub fn write(&self, path: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.state_dir)?;
        std::fs::write(path, self.to_toml())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path.to_path_buf())
    }
}
