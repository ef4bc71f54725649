//! Node overlays on the master: the context a node's templates see (from the registry, the
//! DHCP subnet and what the master saw), rendering with `images::overlay`, and
//! `clustermaker image render NODE` (for now reachable as `clustermaker node render NODE`).
//!
//! The same function serves `GET /api/v1/nodes/{mac}/overlay.tar`, so what `render` shows is
//! byte for byte what the node unpacks.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Context, Result};
use images::overlay::{self, HostEntry, OverlayContext, OverlayFile, TemplateSet};
use netboot::MacAddr;

use crate::config::Config;
use crate::registry::Registry;

/// The cluster domain when the node's DHCP subnet names none.
pub const DEFAULT_DOMAIN: &str = "cluster";

/// The master's address as nodes should use it: the first IPv4 virtual IP of the HA group
/// when HA is on (it follows the active master), else `network.address`.
pub fn master_address(config: &Config) -> Ipv4Addr {
    if config.ha.enabled {
        for r in &config.ha.resources {
            if let runtime::config::ResourceConfig::Ipaddr { address, .. } = r {
                let ip = address.split('/').next().unwrap_or_default();
                if let Ok(ip) = ip.parse() {
                    return ip;
                }
            }
        }
    }
    config.network.address
}

/// The templates: built-in, overridden and extended by `<config_dir>/overlay/`.
pub fn templates(config: &Config) -> Result<TemplateSet> {
    Ok(TemplateSet::builtin().with_user_dir(&config.config_dir.join("overlay"))?)
}

/// What a node's templates see. `seen_ip` is the address the master saw the node at (used
/// when it has no reservation); `interface` the boot interface as its initramfs names it.
pub fn context(
    config: &Config,
    registry: &Registry,
    mac: MacAddr,
    seen_ip: Option<Ipv4Addr>,
    interface: Option<&str>,
) -> OverlayContext {
    let member = registry.by_mac(&mac);
    let ip = member.and_then(|n| n.ip).or(seen_ip);
    let dhcp = config.dhcp_effective();
    let subnet = ip.and_then(|ip| dhcp.subnets.iter().find(|s| s.cidr.contains(ip)));
    let master_ip = master_address(config);
    let mut nodes: Vec<HostEntry> = registry
        .nodes
        .iter()
        .filter_map(|n| {
            Some(HostEntry {
                name: n.name.clone(),
                ip: n.ip?.to_string(),
            })
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    OverlayContext {
        name: member
            .map(|n| n.name.clone())
            .unwrap_or_else(|| mac.dashed()),
        mac: mac.to_string(),
        ip: ip.map(|i| i.to_string()),
        prefix: subnet
            .map(|s| s.cidr.prefix)
            .unwrap_or(config.network.prefix_len),
        gateway: subnet.and_then(|s| s.router).map(|g| g.to_string()),
        dns: subnet
            .map(|s| s.dns.iter().map(|d| d.to_string()).collect())
            .unwrap_or_default(),
        domain: subnet
            .and_then(|s| s.domain.clone())
            .unwrap_or_else(|| DEFAULT_DOMAIN.to_string()),
        master_url: format!("http://{master_ip}:{}", config.http.port),
        master_ip: master_ip.to_string(),
        image: member
            .and_then(|n| n.image.clone())
            .unwrap_or_else(|| config.boot.default_image.clone()),
        interface: interface.unwrap_or("eth0").to_string(),
        member: member.is_some(),
        nodes,
    }
}

/// The node's overlay: rendered templates, plus its SSH host keys for a member (made on first
/// use and kept under `<state_dir>/nodes/NAME/ssh/`). A discovered node gets no keys: the
/// master keeps nothing for a MAC nobody added.
pub fn render_node(
    config: &Config,
    registry: &Registry,
    mac: MacAddr,
    seen_ip: Option<Ipv4Addr>,
    interface: Option<&str>,
) -> Result<Vec<OverlayFile>> {
    let ctx = context(config, registry, mac, seen_ip, interface);
    let files = overlay::render(&templates(config)?, &ctx)?;
    if !ctx.member {
        return Ok(files);
    }
    let keys_dir = config.state_dir.join("nodes").join(&ctx.name).join("ssh");
    let keys = overlay::ensure_host_keys(&keys_dir, &format!("root@{}", ctx.name))?;
    Ok(overlay::merge(files, keys))
}

/// An interface name as the initramfs passes it (`?iface=`): what the kernel accepts.
pub fn valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `clustermaker image render NODE [--json] [--out DIR]`: NODE is a node name or a MAC.
pub fn render_cmd(config: &Config, node: &str, json: bool, out: Option<&Path>) -> Result<()> {
    let registry = Registry::load(&config.state_dir)?;
    let mac = match registry.by_name(node) {
        Some(n) => n.mac,
        None => match node.parse::<MacAddr>() {
            Ok(m) => m,
            Err(_) => bail!(
                "no node named `{node}` (see `clustermaker node list`); a MAC renders a discovered node's overlay"
            ),
        },
    };
    let seen_ip = crate::tracker::load_status(&config.state_dir)?
        .get(&mac)
        .and_then(|s| s.ip);
    let files = render_node(config, &registry, mac, seen_ip, None)?;
    if let Some(dir) = out {
        write_tree(dir, &files)?;
    }
    if json {
        let list: Vec<serde_json::Value> = files
            .iter()
            .map(|f| {
                let private = f.mode & 0o077 == 0;
                serde_json::json!({
                    "path": f.path,
                    "mode": format!("{:04o}", f.mode),
                    "owner": "root:root",
                    "origin": f.origin,
                    "size": f.contents.len(),
                    // Private keys stay off terminals and logs; --out writes them.
                    "contents": if private { None } else { String::from_utf8(f.contents.clone()).ok() },
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    for f in &files {
        println!(
            "==> /{} ({:04o} root:root, {}) <==",
            f.path, f.mode, f.origin
        );
        if f.mode & 0o077 == 0 {
            println!("(private, {} bytes)", f.contents.len());
        } else {
            match std::str::from_utf8(&f.contents) {
                Ok(t) => print!("{t}"),
                Err(_) => println!("(binary, {} bytes)", f.contents.len()),
            }
        }
        println!();
    }
    if let Some(dir) = out {
        println!("written under {}", dir.display());
    }
    Ok(())
}

/// Writes `files` under `dir` with their modes (paths were checked when rendered).
fn write_tree(dir: &Path, files: &[OverlayFile]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for f in files {
        overlay::check_path(&f.path, &f.origin)?;
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, &f.contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Node;

    #[test]
    fn context_comes_from_registry_subnet_and_ha() {
        let mut config = Config::parse(
            "[network]\naddress = \"10.5.0.1\"\n[[dhcp.subnets]]\ncidr = \"10.5.0.0/16\"\nrouter = \"10.5.0.254\"\ndns = [\"10.5.0.53\"]\ndomain = \"lab\"\n[[dhcp.subnets.pools]]\nstart = \"10.5.1.1\"\nend = \"10.5.1.200\"\n",
            "t.toml",
            Path::new("/nonexistent"),
        )
        .unwrap();
        let registry = Registry {
            nodes: vec![
                Node {
                    name: "n1".into(),
                    mac: "52:54:00:00:00:01".parse().unwrap(),
                    ip: Some("10.5.0.11".parse().unwrap()),
                    image: Some("debian".into()),
                    efi_loader: None,
                },
                Node {
                    name: "n0".into(),
                    mac: "52:54:00:00:00:02".parse().unwrap(),
                    ip: None,
                    image: None,
                    efi_loader: None,
                },
            ],
        };
        let c = context(
            &config,
            &registry,
            registry.nodes[0].mac,
            None,
            Some("ens3"),
        );
        assert_eq!(c.name, "n1");
        assert_eq!(c.ip.as_deref(), Some("10.5.0.11"));
        assert_eq!(c.prefix, 16);
        assert_eq!(c.gateway.as_deref(), Some("10.5.0.254"));
        assert_eq!(c.dns, ["10.5.0.53"]);
        assert_eq!(c.domain, "lab");
        assert_eq!(c.image, "debian");
        assert_eq!(c.interface, "ens3");
        assert_eq!(c.master_url, "http://10.5.0.1:8080");
        assert_eq!(c.nodes.len(), 1);
        // A discovered node: name from the MAC, the address the master saw, default image.
        let stranger: MacAddr = "52:54:00:00:00:99".parse().unwrap();
        let c = context(
            &config,
            &registry,
            stranger,
            Some("10.5.1.7".parse().unwrap()),
            None,
        );
        assert_eq!(c.name, "52-54-00-00-00-99");
        assert!(!c.member);
        assert_eq!(c.ip.as_deref(), Some("10.5.1.7"));
        assert_eq!(c.image, "default");
        // Under HA the nodes talk to the virtual IP.
        config.ha.enabled = true;
        config.ha.resources = vec![runtime::config::ResourceConfig::Ipaddr {
            address: "10.5.0.100/16".into(),
            interface: None,
        }];
        assert_eq!(master_address(&config).to_string(), "10.5.0.100");
    }

    #[test]
    fn discovered_nodes_get_no_keys_and_user_templates_apply() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            state_dir: dir.path().join("state"),
            config_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        std::fs::create_dir_all(dir.path().join("overlay/etc")).unwrap();
        std::fs::write(
            dir.path().join("overlay/etc/motd.j2"),
            "welcome to {{ name }}\n",
        )
        .unwrap();
        let mac: MacAddr = "52:54:00:00:00:42".parse().unwrap();
        let files = render_node(&config, &Registry::default(), mac, None, None).unwrap();
        assert!(files.iter().all(|f| !f.path.starts_with("etc/ssh/")));
        let motd = files.iter().find(|f| f.path == "etc/motd").unwrap();
        assert_eq!(motd.contents, b"welcome to 52-54-00-00-00-42\n");
        assert!(!config.state_dir.join("nodes").exists());
    }
}
