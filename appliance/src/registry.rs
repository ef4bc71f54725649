//! The node registry: member nodes (name, MAC, reserved address, image) in `nodes.json`, and
//! PXE clients seen but not registered in `discovered.json`.
//!
//! Each file has one writer: the CLI writes `nodes.json` (under a lock), the server writes
//! `discovered.json`. The server re-reads `nodes.json` when it changes, so `node add` takes effect
//! on the node's next boot without a restart.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use netboot::{ClientArch, MacAddr, Reservation};
use serde::{Deserialize, Serialize};

use crate::statefile::{read_json, write_json, StateLock};

/// A member node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub mac: MacAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// `ipxe.efi` or `snponly.efi` (some NICs need snponly); default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub efi_loader: Option<String>,
}

impl Node {
    pub fn reservation(&self) -> Reservation {
        Reservation {
            name: self.name.clone(),
            ip: self.ip,
            image: self.image.clone(),
            efi_loader: self.efi_loader.clone(),
        }
    }
}

/// The contents of `nodes.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registry {
    pub nodes: Vec<Node>,
}

/// A PXE client that is not a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovered {
    pub mac: MacAddr,
    pub arch: Option<ClientArch>,
    pub vendor_class: Option<String>,
    pub uuid: Option<String>,
    /// Unix time in milliseconds.
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
}

/// The contents of `discovered.json`, by MAC.
pub type DiscoveredSet = BTreeMap<MacAddr, Discovered>;

pub fn nodes_path(state_dir: &Path) -> PathBuf {
    state_dir.join("nodes.json")
}

pub fn discovered_path(state_dir: &Path) -> PathBuf {
    state_dir.join("discovered.json")
}

/// Node names become DHCP host names: one DNS label.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && !name.starts_with('-')
        && !name.ends_with('-')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// Image names are directory names under the images directory: no separators, no dot-dot.
pub fn valid_image_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

pub fn valid_efi_loader(name: &str) -> bool {
    matches!(name, "ipxe.efi" | "snponly.efi")
}

impl Registry {
    pub fn load(state_dir: &Path) -> Result<Registry> {
        let r: Registry = read_json(&nodes_path(state_dir))?;
        r.check()?;
        Ok(r)
    }

    pub fn by_name(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    pub fn by_mac(&self, mac: &MacAddr) -> Option<&Node> {
        self.nodes.iter().find(|n| n.mac == *mac)
    }

    /// Every rule a registry must satisfy; checked before every write and after every read.
    pub fn check(&self) -> Result<()> {
        let mut names = std::collections::HashSet::new();
        let mut macs = std::collections::HashMap::new();
        let mut ips = std::collections::HashMap::new();
        for n in &self.nodes {
            if !valid_node_name(&n.name) {
                bail!(
                    "node name `{}` is not a host name (letters, digits and inner `-`, at most 63)",
                    n.name
                );
            }
            if !names.insert(n.name.as_str()) {
                bail!("node name `{}` is used twice", n.name);
            }
            if let Some(other) = macs.insert(n.mac, n.name.as_str()) {
                bail!("MAC {} belongs to node `{other}` already", n.mac);
            }
            if let Some(ip) = n.ip {
                if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || ip.is_loopback()
                {
                    bail!("{ip} cannot be a node address");
                }
                if let Some(other) = ips.insert(ip, n.name.as_str()) {
                    bail!("address {ip} is reserved for node `{other}` already");
                }
            }
            if let Some(image) = &n.image {
                if !valid_image_name(image) {
                    bail!("image name `{image}` is not valid (letters, digits, `-`, `_`, `.`)");
                }
            }
            if let Some(l) = &n.efi_loader {
                if !valid_efi_loader(l) {
                    bail!("EFI loader `{l}` is not one of ipxe.efi, snponly.efi");
                }
            }
        }
        Ok(())
    }

    /// Applies `change` to the registry on disk under its lock, checks the result and writes it
    /// back atomically. Returns the new registry.
    pub fn update(
        state_dir: &Path,
        change: impl FnOnce(&mut Registry) -> Result<()>,
    ) -> Result<Registry> {
        let path = nodes_path(state_dir);
        let _lock = StateLock::acquire(&path)?;
        let mut r = Registry::load(state_dir)?;
        change(&mut r)?;
        r.check()?;
        r.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        write_json(&path, &r)?;
        Ok(r)
    }
}

pub fn load_discovered(state_dir: &Path) -> Result<DiscoveredSet> {
    read_json(&discovered_path(state_dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, mac: &str, ip: Option<&str>) -> Node {
        Node {
            name: name.into(),
            mac: mac.parse().unwrap(),
            ip: ip.map(|i| i.parse().unwrap()),
            image: None,
            efi_loader: None,
        }
    }

    #[test]
    fn duplicates_are_refused_and_nothing_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        Registry::update(dir.path(), |r| {
            r.nodes
                .push(node("n1", "52:54:00:00:00:01", Some("10.0.0.11")));
            Ok(())
        })
        .unwrap();
        let dup_mac = Registry::update(dir.path(), |r| {
            r.nodes.push(node("n2", "52:54:00:00:00:01", None));
            Ok(())
        });
        assert!(dup_mac
            .unwrap_err()
            .to_string()
            .contains("belongs to node `n1`"));
        let dup_ip = Registry::update(dir.path(), |r| {
            r.nodes
                .push(node("n2", "52:54:00:00:00:02", Some("10.0.0.11")));
            Ok(())
        });
        assert!(dup_ip
            .unwrap_err()
            .to_string()
            .contains("reserved for node `n1`"));
        let dup_name = Registry::update(dir.path(), |r| {
            r.nodes.push(node("n1", "52:54:00:00:00:03", None));
            Ok(())
        });
        assert!(dup_name.unwrap_err().to_string().contains("used twice"));
        let r = Registry::load(dir.path()).unwrap();
        assert_eq!(
            r.nodes,
            vec![node("n1", "52:54:00:00:00:01", Some("10.0.0.11"))]
        );
    }

    #[test]
    fn names_and_images_are_checked() {
        assert!(valid_node_name("node-01"));
        for bad in ["", "-a", "a-", "a.b", "a b", &"x".repeat(64)] {
            assert!(!valid_node_name(bad), "{bad}");
        }
        assert!(valid_image_name("debian-12.1_x"));
        for bad in ["", "..", ".hidden", "a/b", "a\\b"] {
            assert!(!valid_image_name(bad), "{bad}");
        }
    }
}
