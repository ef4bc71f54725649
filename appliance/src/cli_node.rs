//! `clustermaker node …`: the node registry from the command line.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{bail, Result};
use clap::Subcommand;
use netboot::{BootStage, MacAddr};
use serde_json::json;

use crate::config::Config;
use crate::metrics::{load_latest, read_series, Sample, ONLINE_WITHIN_MS};
use crate::registry::{load_discovered, Node, Registry};
use crate::tracker::{load_status, now_ms};
use netboot::dhcp::DhcpMode;

#[derive(Subcommand, Debug)]
pub enum NodeCommand {
    /// PXE clients seen on the boot network that are not nodes yet.
    Discovered {
        #[arg(long)]
        json: bool,
    },
    /// Adds a node (typically a discovered one): it gets its name and address on its next boot.
    Add {
        /// Host name of the node.
        name: String,
        #[arg(long)]
        mac: MacAddr,
        /// Address reserved for it; from the pool when absent.
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        /// Image it boots; the default image when absent.
        #[arg(long)]
        image: Option<String>,
        /// EFI iPXE binary: ipxe.efi or snponly.efi (some NICs need snponly).
        #[arg(long)]
        efi_loader: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One node: registry entry, boot stages and events, agent state and recent metrics.
    Show {
        /// Node name (or MAC).
        name: String,
        /// How many of the newest samples to show.
        #[arg(long, default_value_t = 10)]
        samples: usize,
        #[arg(long)]
        json: bool,
    },
    /// Shows the overlay a node gets at boot (rendered templates, SSH host keys); NODE is a
    /// name or a MAC. `--out DIR` writes the files there.
    Render {
        node: String,
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Nodes with their address, image, boot stages and latest agent figures.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Removes a node from the registry.
    Remove {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Changes a node's MAC, address, image or EFI loader.
    Set {
        name: String,
        #[arg(long)]
        mac: Option<MacAddr>,
        #[arg(long, conflicts_with = "no_ip")]
        ip: Option<Ipv4Addr>,
        /// Drop the reserved address (the node then gets one from the pool).
        #[arg(long)]
        no_ip: bool,
        #[arg(long)]
        image: Option<String>,
        #[arg(long)]
        efi_loader: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// A reserved address must be one the DHCP server can hand out: inside a served subnet, not
/// the master's own address.
fn check_address(config: &Config, ip: Option<Ipv4Addr>) -> Result<()> {
    let Some(ip) = ip else { return Ok(()) };
    if ip == config.network.address {
        bail!("{ip} is the master's own address (network.address); pick another");
    }
    let dhcp = config.dhcp_effective();
    if dhcp.mode == DhcpMode::Server && !dhcp.subnets.iter().any(|s| s.cidr.contains(ip)) {
        let served: Vec<String> = dhcp.subnets.iter().map(|s| s.cidr.to_string()).collect();
        bail!("{ip} is outside the subnets the DHCP server serves ({}); pick an address there or add a [[dhcp.subnets]] entry", served.join(", "));
    }
    Ok(())
}

pub fn run(config: &Config, cmd: NodeCommand) -> Result<()> {
    let state_dir = config.state_dir.as_path();
    match cmd {
        NodeCommand::Discovered { json } => discovered(state_dir, json),
        NodeCommand::Add {
            name,
            mac,
            ip,
            image,
            efi_loader,
            json,
        } => {
            check_address(config, ip)?;
            let node = Node {
                name,
                mac,
                ip,
                image,
                efi_loader,
            };
            let added = node.clone();
            Registry::update(state_dir, |r| {
                if let Some(existing) = r.by_mac(&node.mac) {
                    bail!(
                        "MAC {} belongs to node `{}` already; use `node set` to change it",
                        node.mac,
                        existing.name
                    );
                }
                if r.by_name(&node.name).is_some() {
                    bail!("a node named `{}` exists already; pick another name or `node remove` it first", node.name);
                }
                r.nodes.push(node);
                Ok(())
            })?;
            print_one(&added, json, "added");
            Ok(())
        }
        NodeCommand::List { json } => list(state_dir, json),
        NodeCommand::Show {
            name,
            samples,
            json,
        } => show(state_dir, &name, samples, json),
        NodeCommand::Render { node, out, json } => {
            crate::cli_overlay::render_cmd(config, &node, json, out.as_deref())
        }
        NodeCommand::Remove { name, json } => {
            let mut removed = None;
            Registry::update(state_dir, |r| {
                let Some(i) = r.nodes.iter().position(|n| n.name == name) else {
                    bail!("no node named `{name}` (see `clustermaker node list`)");
                };
                removed = Some(r.nodes.remove(i));
                Ok(())
            })?;
            if let Some(n) = removed {
                print_one(&n, json, "removed");
            }
            Ok(())
        }
        NodeCommand::Set {
            name,
            mac,
            ip,
            no_ip,
            image,
            efi_loader,
            json,
        } => {
            check_address(config, ip)?;
            let r = Registry::update(state_dir, |r| {
                let Some(n) = r.nodes.iter_mut().find(|n| n.name == name) else {
                    bail!("no node named `{name}` (see `clustermaker node list`)");
                };
                if let Some(m) = mac {
                    n.mac = m;
                }
                if ip.is_some() || no_ip {
                    n.ip = ip;
                }
                if image.is_some() {
                    n.image = image;
                }
                if efi_loader.is_some() {
                    n.efi_loader = efi_loader;
                }
                Ok(())
            })?;
            if let Some(n) = r.by_name(&name) {
                print_one(n, json, "updated");
            }
            Ok(())
        }
    }
}

fn print_one(n: &Node, json: bool, verb: &str) {
    if json {
        println!("{}", serde_json::to_string(n).unwrap_or_default());
    } else {
        let ip =
            n.ip.map(|i| i.to_string())
                .unwrap_or_else(|| "from the pool".into());
        println!("{verb} node {} (MAC {}, address {ip})", n.name, n.mac);
    }
}

fn discovered(state_dir: &Path, json: bool) -> Result<()> {
    let d = load_discovered(state_dir)?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&d.values().collect::<Vec<_>>())?
        );
        return Ok(());
    }
    if d.is_empty() {
        println!("no discovered PXE clients");
        return Ok(());
    }
    println!(
        "{:<17}  {:<12}  {:<36}  {:>9}  VENDOR CLASS",
        "MAC", "ARCH", "UUID", "LAST SEEN"
    );
    let now = now_ms();
    for x in d.values() {
        let arch = x
            .arch
            .map(|a| format!("{a:?}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<17}  {:<12}  {:<36}  {:>8}s  {}",
            x.mac.to_string(),
            arch,
            x.uuid.as_deref().unwrap_or("-"),
            now.saturating_sub(x.last_seen_ms) / 1000,
            x.vendor_class.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

/// The agent's state from its newest sample: online when it reported recently.
fn agent_json(latest: Option<&Sample>, now: u64) -> serde_json::Value {
    match latest {
        None => json!({"online": false, "last_seen_ms": null, "latest": null}),
        Some(s) => json!({
            "online": now.saturating_sub(s.at_ms) <= ONLINE_WITHIN_MS,
            "last_seen_ms": s.at_ms,
            "seen_secs_ago": now.saturating_sub(s.at_ms) / 1000,
            "latest": s,
        }),
    }
}

/// `online 3s` / `offline 5m` / `-`, then CPU %, used memory % and the 1-minute load.
fn agent_text(latest: Option<&Sample>, now: u64) -> (String, String) {
    let Some(s) = latest else {
        return ("-".into(), "-".into());
    };
    let ago = now.saturating_sub(s.at_ms) / 1000;
    let ago = if ago < 120 {
        format!("{ago}s")
    } else if ago < 7200 {
        format!("{}m", ago / 60)
    } else {
        format!("{}h", ago / 3600)
    };
    let state = if now.saturating_sub(s.at_ms) <= ONLINE_WITHIN_MS {
        "online"
    } else {
        "offline"
    };
    let f = &s.figures;
    let mem = if f.mem.total_kb > 0 {
        f.mem.used_kb as f64 * 100.0 / f.mem.total_kb as f64
    } else {
        0.0
    };
    (
        format!("{state} {ago}"),
        format!(
            "cpu {:.0}% mem {:.0}% load {:.2}",
            f.cpu.percent, mem, f.load[0]
        ),
    )
}

fn show(state_dir: &Path, name: &str, count: usize, json: bool) -> Result<()> {
    let registry = Registry::load(state_dir)?;
    let node = match registry.by_name(name) {
        Some(n) => n.clone(),
        None => match name
            .parse::<MacAddr>()
            .ok()
            .and_then(|m| registry.by_mac(&m))
        {
            Some(n) => n.clone(),
            None => bail!("no node named `{name}` (see `clustermaker node list`)"),
        },
    };
    let status = load_status(state_dir)?
        .remove(&node.mac)
        .unwrap_or_default();
    let series = read_series(state_dir, &node.mac)?;
    let recent = &series[series.len().saturating_sub(count)..];
    let now = now_ms();
    if json {
        let v = json!({
            "name": node.name, "mac": node.mac, "reserved_ip": node.ip, "image": node.image,
            "ip": status.ip, "stage": status.last_stage(), "stages": status.stages,
            "online": status.online, "events": status.events,
            "agent": agent_json(series.last(), now), "samples": recent,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("node {} (MAC {})", node.name, node.mac);
    let ip = status
        .ip
        .or(node.ip)
        .map(|i| i.to_string())
        .unwrap_or_else(|| "-".into());
    println!(
        "  address {ip}, image {}",
        node.image.as_deref().unwrap_or("(default)")
    );
    let stages: Vec<String> = BootStage::ALL
        .iter()
        .filter_map(|st| {
            Some(format!(
                "{st} {:.1}s",
                status.elapsed_ms(*st)? as f64 / 1000.0
            ))
        })
        .collect();
    println!(
        "  boot stages: {}",
        if stages.is_empty() {
            "-".into()
        } else {
            stages.join(", ")
        }
    );
    for e in &status.events {
        println!(
            "  event {:>6.1}s ago  {}  {}",
            now.saturating_sub(e.at_ms) as f64 / 1000.0,
            e.event,
            e.detail
        );
    }
    let (state, figures) = agent_text(series.last(), now);
    println!("  agent: {state}  {figures}");
    if !recent.is_empty() {
        println!(
            "  {:>8}  {:>6}  {:>12}  {:>17}  NETWORK (rx/tx bytes/s)",
            "AGO", "CPU", "MEM USED", "LOAD 1/5/15"
        );
        for s in recent.iter().rev() {
            let f = &s.figures;
            let net: Vec<String> = f
                .net
                .iter()
                .map(|n| {
                    format!(
                        "{} {:.0}/{:.0}",
                        n.iface, n.rx_bytes_per_sec, n.tx_bytes_per_sec
                    )
                })
                .collect();
            println!(
                "  {:>7}s  {:>5.1}%  {:>9} MB  {:>5.2} {:>5.2} {:>5.2}  {}",
                now.saturating_sub(s.at_ms) / 1000,
                f.cpu.percent,
                f.mem.used_kb / 1024,
                f.load[0],
                f.load[1],
                f.load[2],
                net.join(", ")
            );
        }
    }
    Ok(())
}

fn list(state_dir: &Path, json: bool) -> Result<()> {
    let registry = Registry::load(state_dir)?;
    let status = load_status(state_dir)?;
    let latest = load_latest(state_dir)?;
    let now = now_ms();
    if json {
        let nodes: Vec<_> = registry
            .nodes
            .iter()
            .map(|n| {
                let s = status.get(&n.mac).cloned().unwrap_or_default();
                let stages: serde_json::Map<String, serde_json::Value> = s
                    .stages
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            json!({"at_ms": v, "since_boot_ms": s.elapsed_ms(*k)}),
                        )
                    })
                    .collect();
                json!({
                    "name": n.name, "mac": n.mac, "reserved_ip": n.ip, "image": n.image,
                    "efi_loader": n.efi_loader, "ip": s.ip, "stage": s.last_stage(),
                    "stages": stages, "online": s.online, "events": s.events,
                    "agent": agent_json(latest.get(&n.mac), now),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&nodes)?);
        return Ok(());
    }
    if registry.nodes.is_empty() {
        println!("no nodes; PXE-boot a machine and see `clustermaker node discovered`");
        return Ok(());
    }
    println!(
        "{:<16}  {:<17}  {:<15}  {:<10}  {:<14}  {:<12}  {:<30}  BOOT STAGES (s since offer)",
        "NAME", "MAC", "ADDRESS", "IMAGE", "STAGE", "AGENT", "LATEST"
    );
    for n in &registry.nodes {
        let s = status.get(&n.mac).cloned().unwrap_or_default();
        let ip =
            s.ip.or(n.ip)
                .map(|i| i.to_string())
                .unwrap_or_else(|| "-".into());
        let stages: Vec<String> = BootStage::ALL
            .iter()
            .filter_map(|st| Some(format!("{st} {:.1}", s.elapsed_ms(*st)? as f64 / 1000.0)))
            .collect();
        let (agent, figures) = agent_text(latest.get(&n.mac), now);
        println!(
            "{:<16}  {:<17}  {:<15}  {:<10}  {:<14}  {:<12}  {:<30}  {}",
            n.name,
            n.mac.to_string(),
            ip,
            n.image.as_deref().unwrap_or("(default)"),
            s.last_stage()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            agent,
            figures,
            stages.join(", ")
        );
    }
    Ok(())
}
