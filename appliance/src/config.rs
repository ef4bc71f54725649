//! The one configuration file (TOML). Every key has a default that serves a typical boot network;
//! a bad file is refused at start with the file, the key and what is wrong.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use netboot::dhcp::{DhcpConfig, DhcpMode, Ipv4Cidr, PoolRange, SubnetConfig};
use netboot::tftp::TftpConfig;
use serde::Deserialize;

/// Where `clustermaker` looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/clustermaker/clustermaker.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory for everything the master keeps: node registry, leases, boot status.
    pub state_dir: PathBuf,
    pub network: NetworkConfig,
    pub http: HttpConfig,
    pub boot: BootConfig,
    /// The DHCP server (`netboot::dhcp`); interface, server address, boot URLs and a default
    /// subnet come from `[network]`, `[http]` and `[boot]` unless set here.
    pub dhcp: DhcpConfig,
    /// The TFTP server (`netboot::tftp`); `root` holds extra files served after the iPXE binaries.
    pub tftp: TftpConfig,
    /// The two-master HA runtime (`runtime`): heartbeats, virtual IP, services, monitors.
    pub ha: runtime::config::HaConfig,
    /// The embedded NFS server exporting the images as node roots.
    pub nfs: crate::nfs_config::NfsConfig,
    /// The directory of the configuration file: node overlay templates of the administrator
    /// are in its `overlay/` subdirectory.
    #[serde(skip)]
    pub config_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: PathBuf::from("/var/lib/clustermaker"),
            network: NetworkConfig::default(),
            http: HttpConfig::default(),
            boot: BootConfig::default(),
            dhcp: DhcpConfig::default(),
            tftp: TftpConfig::default(),
            ha: runtime::config::HaConfig::default(),
            nfs: crate::nfs_config::NfsConfig::default(),
            config_dir: PathBuf::from("/etc/clustermaker"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// The interface facing the nodes (the boot network).
    pub interface: String,
    /// The master's IPv4 address on that interface: DHCP server id, next-server, boot URLs.
    pub address: Ipv4Addr,
    /// Prefix length of the boot network (for the default DHCP subnet).
    pub prefix_len: u8,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            interface: "eth0".into(),
            address: Ipv4Addr::new(10, 0, 0, 1),
            prefix_len: 24,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// TCP port of the boot and API HTTP server.
    pub port: u16,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig { port: 8080 }
    }
}

/// How kernel and initramfs reach the node once iPXE runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transfer {
    /// Over HTTP from this server: fast, the default.
    Http,
    /// Everything over TFTP, for networks where nodes cannot reach the HTTP port.
    Tftp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootConfig {
    /// Whether `serve` runs the boot services (DHCP, TFTP, HTTP boot). Off on a master that
    /// only runs the HA runtime.
    pub enabled: bool,
    /// Directory of images: each image is a subdirectory holding `vmlinuz` and `initramfs.img`
    /// (what `cargo xtask build-image` writes). Relative paths are under `state_dir`.
    pub images_dir: PathBuf,
    /// Image for nodes that name none (and for discovered nodes).
    pub default_image: String,
    /// `http` (default) or `tftp` for kernel and initramfs.
    pub transfer: Transfer,
    /// Extra kernel command line for every node.
    pub cmdline: String,
    /// Where the iPXE binaries are (Debian package `ipxe`).
    pub ipxe_dir: PathBuf,
    /// Optional iPXE script template (minijinja); the built-in one when absent.
    pub script_template: Option<PathBuf>,
    /// Answer IPv6 router solicitations on the boot interface so iPXE does not wait ~15 s for
    /// router advertisements. Turn off only where a real IPv6 router serves the segment.
    pub ipv6_ra: bool,
    /// Whether PXE clients that are not registered nodes boot the default image (`true`) or are
    /// only recorded as discovered and sent on to their next boot device (`false`).
    pub boot_unknown: bool,
    /// Nodes mount their image's root over NFS from this master (`cm.root=` on the kernel
    /// command line); off: they stay in their initramfs.
    pub nfs_root: bool,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            enabled: true,
            images_dir: PathBuf::from("images"),
            default_image: "default".into(),
            transfer: Transfer::Http,
            cmdline: "console=tty0 console=ttyS0,115200 quiet".into(),
            ipxe_dir: PathBuf::from("/usr/lib/ipxe"),
            script_template: None,
            ipv6_ra: true,
            boot_unknown: true,
            nfs_root: false,
        }
    }
}

/// A configuration that cannot be used: names the file, the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source} (check the path given to --config)")]
    Read {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

impl Config {
    /// Loads `path`; when `path` is the default location and does not exist, the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        let file = path.display().to_string();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config::default())
            }
            Err(source) => return Err(ConfigError::Read { file, source }),
        };
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Config::parse(&text, &file, &base)
    }

    /// Parses and validates a configuration text; `file` names it in errors, relative paths are
    /// relative to `base`.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let mut config: Config = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let line = inner
                .span()
                .map(|s| 1 + text[..s.start.min(text.len())].matches('\n').count());
            let at = line.map(|l| format!(" (line {l})")).unwrap_or_default();
            let message = format!("{}{at}", inner.message().trim());
            if key.is_empty() || key == "." {
                ConfigError::Parse {
                    file: file.to_string(),
                    message,
                }
            } else {
                ConfigError::Invalid {
                    file: file.to_string(),
                    key,
                    reason: message,
                }
            }
        })?;
        config.config_dir = base.to_path_buf();
        config.resolve_paths(base);
        config
            .validate()
            .map_err(|(key, reason)| ConfigError::Invalid {
                file: file.to_string(),
                key,
                reason,
            })?;
        Ok(config)
    }

    /// Relative `state_dir` is relative to the config file; relative image paths to `state_dir`.
    fn resolve_paths(&mut self, config_dir: &Path) {
        if self.state_dir.is_relative() {
            self.state_dir = config_dir.join(&self.state_dir);
        }
        if self.tftp.root.is_relative() {
            self.tftp.root = self.state_dir.join(&self.tftp.root);
        }
        if self.boot.images_dir.is_relative() {
            self.boot.images_dir = self.state_dir.join(&self.boot.images_dir);
        }
        if let Some(k) = &self.nfs.handle_key_file {
            if k.is_relative() {
                self.nfs.handle_key_file = Some(self.state_dir.join(k));
            }
        }
        if self.ha.key_file.is_relative() {
            self.ha.key_file = config_dir.join(&self.ha.key_file);
        }
        if let Some(t) = &self.boot.script_template {
            if t.is_relative() {
                self.boot.script_template = Some(config_dir.join(t));
            }
        }
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, reason: String| Err((key.to_string(), reason));
        self.ha.validate().map_err(|e| (e.key, e.reason))?;
        self.nfs.validate()?;
        if self.network.interface.is_empty() || self.network.interface.len() > 15 {
            return bad(
                "network.interface",
                format!(
                    "`{}` is not an interface name (1 to 15 characters)",
                    self.network.interface
                ),
            );
        }
        let a = self.network.address;
        if a.is_unspecified() || a.is_broadcast() || a.is_multicast() {
            return bad(
                "network.address",
                format!("{a} cannot be the master's address"),
            );
        }
        if self.http.port == 0 {
            return bad("http.port", "must be 1..=65535".into());
        }
        if !crate::registry::valid_image_name(&self.boot.default_image) {
            return bad(
                "boot.default_image",
                format!(
                    "`{}` is not an image name (letters, digits, `-`, `_`, `.`)",
                    self.boot.default_image
                ),
            );
        }
        if self.boot.cmdline.contains(['\n', '\r']) {
            return bad("boot.cmdline", "must be one line".into());
        }
        if !(8..=30).contains(&self.network.prefix_len) {
            return bad(
                "network.prefix_len",
                format!(
                    "{} is not a usable prefix length (8 to 30)",
                    self.network.prefix_len
                ),
            );
        }
        self.dhcp_effective()
            .validate()
            .map_err(|e| (e.key.clone(), e.message.clone()))?;
        self.tftp
            .validate()
            .map_err(|e| (format!("tftp.{}", e.key), e.problem.clone()))?;
        Ok(())
    }

    /// The `[dhcp]` table completed from the rest of the file: interface and server address
    /// from `[network]`; the script URL base from `[http]` when kernels go over HTTP (otherwise
    /// everything after the first stage goes over TFTP too); and, when no subnet is configured,
    /// the boot network itself with the addresses .100 to .250 of a /24 (or the matching share
    /// of another prefix) as the pool.
    pub fn dhcp_effective(&self) -> DhcpConfig {
        let mut d = self.dhcp.clone();
        d.interface
            .get_or_insert_with(|| self.network.interface.clone());
        d.server_ip.get_or_insert(self.network.address);
        if d.boot.http_base.is_none() && self.boot.transfer == Transfer::Http {
            d.boot.http_base = Some(self.http_base());
        }
        if d.subnets.is_empty() && d.mode == DhcpMode::Server {
            d.subnets.push(self.default_subnet());
        }
        d
    }

    fn default_subnet(&self) -> SubnetConfig {
        let prefix = self.network.prefix_len.min(30);
        let mask = u32::MAX << (32 - u32::from(prefix));
        let network = u32::from(self.network.address) & mask;
        let hosts = !mask; // broadcast offset
        let (start, end) = if hosts >= 255 {
            (100, 250)
        } else {
            (hosts / 2, hosts - 1)
        };
        SubnetConfig {
            cidr: Ipv4Cidr {
                network: Ipv4Addr::from(network),
                prefix,
            },
            pools: vec![PoolRange {
                start: Ipv4Addr::from(network + start),
                end: Ipv4Addr::from(network + end),
            }],
            router: None,
            dns: Vec::new(),
            domain: None,
            ntp: Vec::new(),
            mtu: None,
            lease_secs: None,
        }
    }

    pub fn http_base(&self) -> String {
        format!("http://{}:{}", self.network.address, self.http.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses() {
        let text = include_str!("../../clustermaker.example.toml");
        Config::parse(text, "clustermaker.example.toml", Path::new("/etc/cm")).unwrap();
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse("", "x.toml", Path::new("/etc/cm")).unwrap();
        let d = c.dhcp_effective();
        assert_eq!(d.server_ip, Some(c.network.address));
        assert_eq!(d.subnets[0].cidr.to_string(), "10.0.0.0/24");
        assert_eq!(d.subnets[0].pools[0].start.to_string(), "10.0.0.100");
        assert_eq!(d.boot.http_base.as_deref(), Some("http://10.0.0.1:8080"));
        assert_eq!(c.http.port, 8080);
        assert_eq!(c.boot.transfer, Transfer::Http);
        assert!(c.boot.ipv6_ra);
    }

    #[test]
    fn errors_name_file_key_and_reason() {
        let e = Config::parse(
            "[network]\naddres = \"10.0.0.1\"\n",
            "a.toml",
            Path::new("/etc/cm"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("a.toml: ") && e.contains("unknown field `addres`"),
            "{e}"
        );
        let e = Config::parse(
            "[network]\naddress = \"10.0.0.300\"\n",
            "a.toml",
            Path::new("/etc/cm"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("a.toml") && e.contains("address"), "{e}");
        let e = Config::parse(
            "[network]\naddress = \"0.0.0.0\"\n",
            "a.toml",
            Path::new("/etc/cm"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "a.toml: key `network.address`: 0.0.0.0 cannot be the master's address"
        );
        let e = Config::parse(
            "[boot]\ndefault_image = \"../x\"\n",
            "a.toml",
            Path::new("/etc/cm"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("boot.default_image"), "{e}");
        let e = Config::parse(
            "[boot]\ntransfer = \"ftp\"\n",
            "a.toml",
            Path::new("/etc/cm"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("ftp"), "{e}");
    }
}
