//! `[nfs]`: the embedded read-only NFSv3 server that exports the images as node roots.
//!
//! Every image in the store is exported at `/images/NAME`; nodes mount it from
//! [`NfsConfig::server_address`] (the virtual IP in a two-master setup, so a failover keeps
//! the mount: file handles are derived from content, identical on both masters' copies).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// NFS and MOUNT share this port, so nodes need no portmapper (`port=` and `mountport=`).
pub const NFS_PORT: u16 = 2049;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NfsConfig {
    /// Serve the images over the embedded NFS server.
    pub enabled: bool,
    /// Listening addresses. The default (every address, port 2049) also covers a virtual IP
    /// that arrives later; a specific address is bound with IP_FREEBIND so a VIP not yet
    /// present is fine.
    pub listen: Vec<SocketAddr>,
    /// Client networks allowed to mount (`10.0.0.0/24`); empty = the boot network.
    pub allow: Vec<String>,
    /// Refuse clients whose source port is 1024 or above (like knfsd's `secure`).
    pub require_privileged_port: bool,
    /// The address nodes mount from; default: the first HA `ipaddr` resource (the virtual
    /// IP), else `network.address`.
    pub server_address: Option<Ipv4Addr>,
    /// The 32-byte key that file handles are derived from; both masters must use the same.
    /// Unset (the default): with `[ha]` enabled it is derived from the HA key, which both
    /// masters already share, so they cannot disagree; without HA it is `state_dir/nfs/
    /// handle.key`, made at first start. Set it to pin a key of your own (relative to
    /// `state_dir`); it is then made at first start when missing.
    pub handle_key_file: Option<PathBuf>,
    /// Older versions of an image kept loaded, so programs that nodes are running from a
    /// replaced file keep their old content.
    pub keep_versions: usize,
    /// How often exported trees are checked for files changed in place.
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
    /// Extra NFS mount options for nodes, appended to the initramfs's own
    /// ([`NODE_MOUNT_OPTIONS`]); a later option wins, so this can also override one.
    pub mount_options: String,
    /// Instead of serving, write an exports file for the kernel NFS server here (for sites
    /// that keep images on block-replicated storage, where inode numbers survive failover).
    pub kernel_exports_file: Option<PathBuf>,
}

impl Default for NfsConfig {
    fn default() -> Self {
        NfsConfig {
            enabled: true,
            listen: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), NFS_PORT)],
            allow: Vec::new(),
            require_privileged_port: false,
            server_address: None,
            handle_key_file: None,
            keep_versions: 2,
            rescan_interval: Duration::from_secs(2),
            mount_options: String::new(),
            kernel_exports_file: None,
        }
    }
}

/// What the node initramfs mounts with (images/templates/initramfs/init.sh, kept equal by a
/// test). `hard`: a failover must look like a pause to programs, never an I/O error. `noacl`
/// and `nolock`: nothing to ask the server for on a read-only shared root.
/// `port`/`mountport`: no portmapper. `rsize`: 1 MiB reads (the kernel's built-in default is
/// far smaller).
pub const NODE_MOUNT_OPTIONS: &str = "ro,vers=3,proto=tcp,port=2049,mountport=2049,mountproto=tcp,nolock,noacl,rsize=1048576,hard,timeo=100,retrans=3";

/// A parsed `allow` entry.
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (ip, len) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not a network (write it as 10.0.0.0/24)"))?;
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("`{ip}` in `{text}` is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = len
        .parse()
        .ok()
        .filter(|l| *l <= max)
        .ok_or_else(|| format!("`{len}` in `{text}` is not a prefix length (0 to {max})"))?;
    Ok((ip, len))
}

impl NfsConfig {
    /// Checks what serde cannot; errors are (key, reason).
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (i, a) in self.allow.iter().enumerate() {
            parse_cidr(a).map_err(|r| (format!("nfs.allow[{i}]"), r))?;
        }
        if self.enabled && self.listen.is_empty() {
            return Err(("nfs.listen".into(), "needs at least one address".into()));
        }
        if self.keep_versions > 64 {
            return Err((
                "nfs.keep_versions".into(),
                format!("{} is too many (at most 64)", self.keep_versions),
            ));
        }
        if self.rescan_interval < Duration::from_millis(100) {
            return Err((
                "nfs.rescan_interval".into(),
                "must be at least 100ms".into(),
            ));
        }
        if self.mount_options.contains(char::is_whitespace) {
            return Err((
                "nfs.mount_options".into(),
                "must be one comma-separated word, e.g. acdirmax=10,nconnect=2".into(),
            ));
        }
        if self.mount_options.contains("addr=") {
            return Err((
                "nfs.mount_options".into(),
                "leave out addr=: the node adds the server address itself".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_checked() {
        assert_eq!(
            parse_cidr("10.0.0.0/24").unwrap(),
            ("10.0.0.0".parse().unwrap(), 24)
        );
        assert!(parse_cidr("10.0.0.0").unwrap_err().contains("10.0.0.0/24"));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("fd00::/64").is_ok());
        assert!(parse_cidr("x/8").is_err());
    }

    #[test]
    fn defaults_validate_and_mount_without_portmapper() {
        let c = NfsConfig::default();
        c.validate().unwrap();
        assert!(NODE_MOUNT_OPTIONS.contains("port=2049,mountport=2049"));
        assert!(NODE_MOUNT_OPTIONS.contains("hard"));
        let init = include_str!("../../images/templates/initramfs/init.sh");
        assert!(
            init.contains(&format!("NFS_OPTS=\"{NODE_MOUNT_OPTIONS}\"")),
            "init.sh mounts with other options than NODE_MOUNT_OPTIONS"
        );
        let bad = NfsConfig {
            mount_options: "ro,addr=1.2.3.4".into(),
            ..NfsConfig::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "nfs.mount_options");
    }
}
