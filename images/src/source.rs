//! Where an image comes from (pure: parsing, the host exclude list, the debootstrap command).
//!
//! | spelling | meaning |
//! | --- | --- |
//! | `host` | the master's own root, served live (not copied) minus [`HOST_EXCLUDES`] |
//! | `dir:PATH` | a directory, copied |
//! | `tar:FILE` | a root tarball (`.tar`, `.tar.gz`, `.tgz`), unpacked |
//! | `oci:FILE` | a `docker save` / OCI image-layout tar, layers applied in order |
//! | `debootstrap:SUITE` | a fresh Debian root (`debootstrap --variant=minbase`) |

use std::fmt;
use std::path::PathBuf;
use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    Host,
    Dir {
        path: PathBuf,
    },
    Tar {
        path: PathBuf,
    },
    Oci {
        path: PathBuf,
    },
    Debootstrap {
        suite: String,
        mirror: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image source `{0}` is not understood (fix: use host, dir:PATH, tar:FILE, oci:FILE or debootstrap:SUITE)")]
pub struct BadSource(pub String);

impl std::str::FromStr for Source {
    type Err = BadSource;
    fn from_str(s: &str) -> Result<Source, BadSource> {
        let bad = || BadSource(s.to_string());
        if s == "host" {
            return Ok(Source::Host);
        }
        let (kind, arg) = s.split_once(':').ok_or_else(bad)?;
        if arg.is_empty() {
            return Err(bad());
        }
        Ok(match kind {
            "dir" => Source::Dir { path: arg.into() },
            "tar" => Source::Tar { path: arg.into() },
            "oci" => Source::Oci { path: arg.into() },
            "debootstrap" => {
                if !arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(bad());
                }
                Source::Debootstrap {
                    suite: arg.to_string(),
                    mirror: None,
                }
            }
            _ => return Err(bad()),
        })
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Host => f.write_str("host"),
            Source::Dir { path } => write!(f, "dir:{}", path.display()),
            Source::Tar { path } => write!(f, "tar:{}", path.display()),
            Source::Oci { path } => write!(f, "oci:{}", path.display()),
            Source::Debootstrap { suite, .. } => write!(f, "debootstrap:{suite}"),
        }
    }
}

impl Source {
    /// Sources whose tree is copied into the store (all but `host`, which is served live).
    pub fn is_copied(&self) -> bool {
        !matches!(self, Source::Host)
    }
}

/// What a node must not get from the master's root, as paths relative to `/`:
///
/// - kernel file systems and per-boot state: `proc sys dev run tmp` (a node mounts its own);
/// - the master's identity: hostname, machine-id (systemd would give every node the same
///   D-Bus/journal identity), SSH host keys (every node would impersonate the master), network
///   configuration (a node would take the master's addresses), fstab (the master's disks);
/// - the master's state: clustermaker's state directory (images, leases, HA keys), DHCP client
///   leases, logs (`var/log`: the master's, and large), `var/tmp`, `var/cache/apt` (package
///   downloads), `lost+found`, swap files.
///
/// The node's overlay (hostname, network, agent config) supplies its own versions of the
/// identity files. SSH host keys are listed by glob here and expanded against the real root
/// by [`expand_host_excludes`].
pub const HOST_EXCLUDES: &[&str] = &[
    "proc",
    "sys",
    "dev",
    "run",
    "tmp",
    "var/tmp",
    "var/log",
    "var/cache/apt",
    "var/lib/dhcp",
    "lost+found",
    "swapfile",
    "etc/hostname",
    "etc/machine-id",
    "var/lib/dbus/machine-id",
    "etc/ssh/ssh_host_*",
    "etc/network/interfaces",
    "etc/network/interfaces.d",
    "etc/systemd/network",
    "etc/netplan",
    "etc/NetworkManager/system-connections",
    "etc/fstab",
    "etc/crypttab",
    "etc/clustermaker",
];

/// [`HOST_EXCLUDES`] plus the state directory (relative to `root`), with `*` globs in the last
/// component expanded by `list_dir` (the names in that directory).
pub fn expand_host_excludes(
    state_dir_rel: Option<&str>,
    list_dir: &dyn Fn(&str) -> Vec<String>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for x in HOST_EXCLUDES {
        match x.rsplit_once('/') {
            Some((dir, pat)) if pat.contains('*') => {
                let (pre, post) = pat.split_once('*').unwrap_or((pat, ""));
                for name in list_dir(dir) {
                    if name.starts_with(pre)
                        && name.ends_with(post)
                        && name.len() >= pre.len() + post.len()
                    {
                        out.push(format!("{dir}/{name}"));
                    }
                }
            }
            _ => out.push(x.to_string()),
        }
    }
    if let Some(s) = state_dir_rel {
        let s = s.trim_matches('/');
        if !s.is_empty() {
            out.push(s.to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The default mirror: Debian's CDN.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// `debootstrap --variant=minbase --include=systemd-sysv,udev SUITE DIR MIRROR`: minbase keeps
/// the root small (~263 MB for bookworm); systemd-sysv gives /sbin/init; without udev systemd
/// waits 90 s for the serial console device on a node.
pub fn debootstrap_command(suite: &str, dir: &std::path::Path, mirror: Option<&str>) -> Command {
    let mut c = Command::new("debootstrap");
    c.arg("--variant=minbase")
        .arg("--include=systemd-sysv,udev")
        .arg(suite)
        .arg(dir)
        .arg(mirror.unwrap_or(DEFAULT_MIRROR));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        assert_eq!("host".parse::<Source>().unwrap(), Source::Host);
        assert_eq!(
            "dir:/srv/root".parse::<Source>().unwrap(),
            Source::Dir {
                path: "/srv/root".into()
            }
        );
        assert_eq!(
            "tar:a:b.tgz".parse::<Source>().unwrap(),
            Source::Tar {
                path: "a:b.tgz".into()
            }
        );
        assert!(matches!(
            "oci:x.tar".parse::<Source>().unwrap(),
            Source::Oci { .. }
        ));
        assert_eq!(
            "debootstrap:bookworm"
                .parse::<Source>()
                .unwrap()
                .to_string(),
            "debootstrap:bookworm"
        );
        for bad in [
            "",
            "dir:",
            "zip:x",
            "debootstrap:a b",
            "debootstrap:../x",
            "hostx",
        ] {
            let e = bad.parse::<Source>().unwrap_err().to_string();
            assert!(e.contains("fix:"), "{e}");
        }
    }

    #[test]
    fn host_excludes_expand_globs_and_add_the_state_dir() {
        let list = |dir: &str| -> Vec<String> {
            if dir == "etc/ssh" {
                vec![
                    "ssh_host_rsa_key".into(),
                    "ssh_host_rsa_key.pub".into(),
                    "sshd_config".into(),
                ]
            } else {
                vec![]
            }
        };
        let x = expand_host_excludes(Some("/var/lib/clustermaker"), &list);
        assert!(x.contains(&"etc/ssh/ssh_host_rsa_key".to_string()));
        assert!(x.contains(&"etc/ssh/ssh_host_rsa_key.pub".to_string()));
        assert!(!x.iter().any(|p| p.ends_with("sshd_config")));
        assert!(x.contains(&"var/lib/clustermaker".to_string()));
        assert!(x.contains(&"etc/machine-id".to_string()));
        assert!(!x.iter().any(|p| p.contains('*')));
    }

    #[test]
    fn debootstrap_command_line() {
        let c = debootstrap_command("bookworm", std::path::Path::new("/x/root"), None);
        let args: Vec<_> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(c.get_program(), "debootstrap");
        assert_eq!(
            args,
            [
                "--variant=minbase",
                "--include=systemd-sysv,udev",
                "bookworm",
                "/x/root",
                DEFAULT_MIRROR
            ]
        );
        let c = debootstrap_command(
            "trixie",
            std::path::Path::new("/r"),
            Some("http://m/debian"),
        );
        assert_eq!(c.get_args().last().unwrap(), "http://m/debian");
    }
}
