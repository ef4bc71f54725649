//! What the master knows about nodes while it serves: the registry as the boot servers see it
//! (reloaded when `nodes.json` changes), each node's boot stages with their times, and the PXE
//! clients discovered. Boot servers call in on their packet paths, so every call only touches
//! memory; a background task writes `status.json` and `discovered.json` when they changed.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use netboot::{
    BootObserver, BootStage, ClientRef, DiscoveredClient, MacAddr, NodeDirectory, Reservation,
};
use serde::{Deserialize, Serialize};

use crate::registry::{
    discovered_path, load_discovered, nodes_path, Discovered, DiscoveredSet, Registry,
};
use crate::statefile::{read_json, write_json};

/// What a node's own system reports when it comes up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnlineReport {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub kernel: String,
    pub uptime_secs: u64,
    #[serde(default)]
    pub hostname: String,
}

/// One node's latest boot, as `status.json` keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub ip: Option<Ipv4Addr>,
    /// Unix milliseconds at which each stage of the current boot was reached.
    pub stages: BTreeMap<BootStage, u64>,
    pub online: Option<OnlineReport>,
    /// What the node's initramfs reported during this boot (NFS mount attempts, overlay,
    /// switch to the image's init), oldest first, at most [`MAX_EVENTS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<BootEvent>,
}

/// One report from a node's initramfs (`POST /api/v1/nodes/stage`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootEvent {
    pub at_ms: u64,
    /// e.g. `nfs-mount-failed`, `nfs-mounted`, `overlay-applied`, `switch-root`, `rescue-shell`.
    pub event: String,
    #[serde(default)]
    pub detail: String,
}

pub const MAX_EVENTS: usize = 32;

impl NodeStatus {
    /// The furthest stage reached in the current boot.
    pub fn last_stage(&self) -> Option<BootStage> {
        self.stages.keys().next_back().copied()
    }

    /// Milliseconds from the first stage of this boot to `stage`.
    pub fn elapsed_ms(&self, stage: BootStage) -> Option<u64> {
        let start = self.stages.values().min()?;
        Some(self.stages.get(&stage)? - start)
    }
}

pub type StatusMap = BTreeMap<MacAddr, NodeStatus>;

/// Whether `stage` begins a new boot of a node whose current boot reached `last`. Stages keep
/// the time they were first reached in a boot, so renewals do not move "bound".
///
/// An OFFER normally starts a boot, except once the kernel is on its way: then it is the node's
/// own system asking for its address (the initramfs runs DHCP again). A boot loader or script
/// fetched again after a later stage means the node went back to its firmware.
fn starts_new_boot(last: Option<BootStage>, stage: BootStage) -> bool {
    match stage {
        BootStage::Offered => !matches!(last, Some(BootStage::KernelSent | BootStage::InitrdSent)),
        BootStage::BootFileSent | BootStage::ScriptSent => last.is_some_and(|l| l > stage),
        _ => false,
    }
}

pub fn status_path(state_dir: &Path) -> PathBuf {
    state_dir.join("status.json")
}

pub fn load_status(state_dir: &Path) -> anyhow::Result<StatusMap> {
    read_json(&status_path(state_dir))
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The registry indexed for per-packet lookups.
#[derive(Default)]
struct Members {
    by_mac: HashMap<MacAddr, Reservation>,
    by_ip: HashMap<Ipv4Addr, MacAddr>,
    stamp: Option<(SystemTime, u64)>,
}

impl Members {
    fn from_registry(r: &Registry, stamp: Option<(SystemTime, u64)>) -> Members {
        Members {
            by_mac: r.nodes.iter().map(|n| (n.mac, n.reservation())).collect(),
            by_ip: r
                .nodes
                .iter()
                .filter_map(|n| Some((n.ip?, n.mac)))
                .collect(),
            stamp,
        }
    }
}

pub struct Tracker {
    state_dir: PathBuf,
    members: RwLock<Members>,
    status: Mutex<StatusMap>,
    ip_to_mac: Mutex<HashMap<Ipv4Addr, MacAddr>>,
    discovered: Mutex<DiscoveredSet>,
    dirty: AtomicBool,
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Tracker {
    /// Loads the registry and the last known status and discoveries from `state_dir`.
    pub fn open(state_dir: &Path) -> anyhow::Result<Arc<Tracker>> {
        let registry = Registry::load(state_dir)?;
        let status = load_status(state_dir)?;
        let ip_to_mac = status
            .iter()
            .filter_map(|(m, s)| Some((s.ip?, *m)))
            .collect();
        let stamp = file_stamp(&nodes_path(state_dir));
        Ok(Arc::new(Tracker {
            state_dir: state_dir.to_path_buf(),
            members: RwLock::new(Members::from_registry(&registry, stamp)),
            status: Mutex::new(status),
            ip_to_mac: Mutex::new(ip_to_mac),
            discovered: Mutex::new(load_discovered(state_dir)?),
            dirty: AtomicBool::new(false),
        }))
    }

    /// Re-reads `nodes.json` if it changed. A registry that fails to load keeps the old one in
    /// force (and says why): a half-edited file must not stop the boot service.
    pub fn reload_if_changed(&self) {
        let path = nodes_path(&self.state_dir);
        let stamp = file_stamp(&path);
        if stamp == self.members.read().unwrap().stamp {
            return;
        }
        match Registry::load(&self.state_dir) {
            Ok(r) => {
                tracing::info!("node registry reloaded: {} nodes", r.nodes.len());
                let members = Members::from_registry(&r, stamp);
                let mut discovered = self.discovered.lock().unwrap();
                let before = discovered.len();
                discovered.retain(|mac, _| !members.by_mac.contains_key(mac));
                if discovered.len() != before {
                    self.dirty.store(true, Ordering::Relaxed);
                }
                *self.members.write().unwrap() = members;
            }
            Err(e) => {
                tracing::error!("{e:#}; keeping the previous node registry");
                self.members.write().unwrap().stamp = stamp;
            }
        }
    }

    /// The MAC of the client at `ip`, as last seen by DHCP or reported online.
    pub fn mac_of(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.ip_to_mac.lock().unwrap().get(&ip).copied()
    }

    pub fn status(&self) -> StatusMap {
        self.status.lock().unwrap().clone()
    }

    pub fn discovered_now(&self) -> DiscoveredSet {
        self.discovered.lock().unwrap().clone()
    }

    /// The node name for logs: the member's name, or the MAC.
    pub fn name_of(&self, mac: &MacAddr) -> String {
        match self.members.read().unwrap().by_mac.get(mac) {
            Some(r) => r.name.clone(),
            None => mac.to_string(),
        }
    }

    /// Records an online report from a node's own system.
    pub fn online(&self, report: OnlineReport) {
        let mac = report.mac;
        let ip = report.ip;
        self.ip_to_mac.lock().unwrap().insert(ip, mac);
        {
            let mut status = self.status.lock().unwrap();
            let s = status.entry(mac).or_default();
            s.ip = Some(ip);
            s.online = Some(report.clone());
        }
        self.stage(
            ClientRef {
                mac: Some(mac),
                ip: Some(ip),
            },
            BootStage::Online,
        );
        tracing::info!(
            node = %self.name_of(&mac), %mac, %ip, kernel = %report.kernel,
            uptime_secs = report.uptime_secs, "node reported online"
        );
    }

    /// Whether `mac` is a member, or a client that booted from this master (has a status or
    /// was discovered). Only such nodes may post events and metrics: anything else is a
    /// stranger, and recording it would let anyone grow the master's state.
    pub fn knows(&self, mac: &MacAddr) -> bool {
        self.members.read().unwrap().by_mac.contains_key(mac)
            || self.status.lock().unwrap().contains_key(mac)
            || self.discovered.lock().unwrap().contains_key(mac)
    }

    /// The MAC of the member called `name`.
    pub fn mac_of_name(&self, name: &str) -> Option<MacAddr> {
        let m = self.members.read().unwrap();
        m.by_mac
            .iter()
            .find(|(_, r)| r.name == name)
            .map(|(mac, _)| *mac)
    }

    /// The address this master last saw `mac` at.
    pub fn ip_of(&self, mac: &MacAddr) -> Option<Ipv4Addr> {
        self.status.lock().unwrap().get(mac)?.ip
    }

    /// Records a boot event reported by a node's initramfs. Returns false (and records
    /// nothing) for a MAC this master does not know.
    pub fn event(&self, mac: MacAddr, event: &str, detail: &str) -> bool {
        if !self.knows(&mac) {
            return false;
        }
        {
            let mut status = self.status.lock().unwrap();
            let s = status.entry(mac).or_default();
            if s.events.len() >= MAX_EVENTS {
                s.events.remove(0);
            }
            s.events.push(BootEvent {
                at_ms: now_ms(),
                event: event.to_string(),
                detail: detail.to_string(),
            });
        }
        self.dirty.store(true, Ordering::Relaxed);
        if event.ends_with("failed") || event == "rescue-shell" {
            tracing::warn!(node = %self.name_of(&mac), %mac, event, detail, "boot event");
        } else {
            tracing::info!(node = %self.name_of(&mac), %mac, event, detail, "boot event");
        }
        true
    }

    /// Writes status and discoveries if they changed. Called by [`Tracker::run_persist`].
    pub fn persist(&self) -> anyhow::Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let status = self.status();
        let discovered = self.discovered_now();
        let result = write_json(&status_path(&self.state_dir), &status)
            .and_then(|_| write_json(&discovered_path(&self.state_dir), &discovered));
        if result.is_err() {
            self.dirty.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Reloads the registry and persists state every `period` until the task is dropped.
    pub async fn run_persist(self: Arc<Self>, period: Duration) {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            let me = self.clone();
            let result = tokio::task::spawn_blocking(move || {
                me.reload_if_changed();
                me.persist()
            })
            .await;
            match result {
                Ok(Err(e)) => tracing::error!("cannot save node status: {e:#}"),
                Err(e) => tracing::error!("status task failed: {e}"),
                Ok(Ok(())) => {}
            }
        }
    }
}

impl NodeDirectory for Tracker {
    fn reservation(&self, mac: &MacAddr) -> Option<Reservation> {
        self.members.read().unwrap().by_mac.get(mac).cloned()
    }

    fn reserved_by(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        self.members.read().unwrap().by_ip.get(&ip).copied()
    }
}

impl BootObserver for Tracker {
    fn stage(&self, client: ClientRef, stage: BootStage) {
        let mac = match (client.mac, client.ip) {
            (Some(m), _) => m,
            (None, Some(ip)) => match self.mac_of(ip) {
                Some(m) => m,
                None => {
                    tracing::debug!(%ip, %stage, "boot stage from an address with no known MAC");
                    return;
                }
            },
            (None, None) => return,
        };
        if let Some(ip) = client.ip {
            self.ip_to_mac.lock().unwrap().insert(ip, mac);
        }
        let now = now_ms();
        let since_start;
        {
            let mut status = self.status.lock().unwrap();
            let s = status.entry(mac).or_default();
            if starts_new_boot(s.last_stage(), stage) {
                s.stages.clear();
                s.online = None;
                s.events.clear();
            }
            if client.ip.is_some() {
                s.ip = client.ip;
            }
            let first = !s.stages.contains_key(&stage);
            s.stages.entry(stage).or_insert(now);
            since_start = first.then(|| s.elapsed_ms(stage)).flatten();
        }
        self.dirty.store(true, Ordering::Relaxed);
        match since_start {
            Some(ms) => tracing::info!(
                node = %self.name_of(&mac), %mac, ip = ?client.ip, stage = %stage,
                since_boot_ms = ms, "boot stage"
            ),
            // A renewal, or the node's own system asking for its address again.
            None => {
                tracing::debug!(node = %self.name_of(&mac), %mac, stage = %stage, "stage seen again")
            }
        }
    }

    fn discovered(&self, client: DiscoveredClient) {
        let now = now_ms();
        let mut d = self.discovered.lock().unwrap();
        let entry = d.entry(client.mac).or_insert_with(|| {
            tracing::info!(mac = %client.mac, arch = ?client.arch, vendor = ?client.vendor_class, "discovered a new PXE client");
            Discovered {
                mac: client.mac,
                arch: client.arch,
                vendor_class: client.vendor_class.clone(),
                uuid: client.uuid.clone(),
                first_seen_ms: now,
                last_seen_ms: now,
            }
        });
        entry.last_seen_ms = now;
        entry.arch = client.arch.or(entry.arch);
        if client.vendor_class.is_some() {
            entry.vendor_class = client.vendor_class;
        }
        if client.uuid.is_some() {
            entry.uuid = client.uuid;
        }
        self.dirty.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Node;

    #[test]
    fn stages_follow_a_boot_and_offer_starts_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::open(dir.path()).unwrap();
        let mac: MacAddr = "52:54:00:00:00:09".parse().unwrap();
        let ip: Ipv4Addr = "10.0.0.50".parse().unwrap();
        t.stage(
            ClientRef {
                mac: Some(mac),
                ip: Some(ip),
            },
            BootStage::Offered,
        );
        t.stage(
            ClientRef {
                mac: Some(mac),
                ip: Some(ip),
            },
            BootStage::Bound,
        );
        // TFTP/HTTP only know the address
        t.stage(
            ClientRef {
                mac: None,
                ip: Some(ip),
            },
            BootStage::KernelSent,
        );
        let s = t.status()[&mac].clone();
        assert_eq!(s.last_stage(), Some(BootStage::KernelSent));
        t.persist().unwrap();
        assert_eq!(load_status(dir.path()).unwrap()[&mac], s);
        let c = ClientRef {
            mac: Some(mac),
            ip: Some(ip),
        };
        t.stage(c, BootStage::Online);
        t.stage(c, BootStage::Offered);
        assert_eq!(t.status()[&mac].last_stage(), Some(BootStage::Offered));
    }

    #[test]
    fn the_initramfs_dhcp_does_not_start_a_new_boot_but_a_firmware_restart_does() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::open(dir.path()).unwrap();
        let mac: MacAddr = "52:54:00:00:00:0b".parse().unwrap();
        let c = ClientRef {
            mac: Some(mac),
            ip: Some("10.0.0.51".parse().unwrap()),
        };
        for st in [
            BootStage::Offered,
            BootStage::Bound,
            BootStage::ScriptSent,
            BootStage::KernelSent,
            BootStage::InitrdSent,
        ] {
            t.stage(c, st);
        }
        t.stage(c, BootStage::Offered); // udhcpc in the initramfs
        t.stage(c, BootStage::Bound);
        t.stage(c, BootStage::Online);
        assert_eq!(t.status()[&mac].stages.len(), 6);
        t.stage(c, BootStage::Offered); // rebooted into PXE
        assert_eq!(t.status()[&mac].stages.len(), 1);
        for st in [
            BootStage::Bound,
            BootStage::ScriptSent,
            BootStage::KernelSent,
        ] {
            t.stage(c, st);
        }
        t.stage(c, BootStage::Offered); // crashed and PXE-booted again: seen as the OS...
        t.stage(c, BootStage::ScriptSent); // ...until the script is fetched again
        assert_eq!(t.status()[&mac].last_stage(), Some(BootStage::ScriptSent));
        assert_eq!(t.status()[&mac].stages.len(), 1);
    }

    #[test]
    fn events_are_bounded_kept_per_boot_and_refused_for_strangers() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::open(dir.path()).unwrap();
        let mac: MacAddr = "52:54:00:00:00:0c".parse().unwrap();
        assert!(!t.event(mac, "nfs-mount-failed", "x"));
        assert!(t.status().is_empty());
        let c = ClientRef {
            mac: Some(mac),
            ip: Some("10.0.0.52".parse().unwrap()),
        };
        t.stage(c, BootStage::Offered);
        for i in 0..40 {
            assert!(t.event(mac, "nfs-mount-failed", &format!("attempt {i}")));
        }
        let s = &t.status()[&mac];
        assert_eq!(s.events.len(), MAX_EVENTS);
        assert_eq!(s.events.last().unwrap().detail, "attempt 39");
        t.persist().unwrap();
        assert_eq!(
            load_status(dir.path()).unwrap()[&mac].events.len(),
            MAX_EVENTS
        );
        t.stage(c, BootStage::ScriptSent);
        t.stage(c, BootStage::Offered); // a new boot
        assert!(t.status()[&mac].events.is_empty());
    }

    #[test]
    fn registry_changes_are_picked_up_and_members_leave_discovered() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tracker::open(dir.path()).unwrap();
        let mac: MacAddr = "52:54:00:00:00:0a".parse().unwrap();
        t.discovered(DiscoveredClient {
            mac,
            arch: None,
            vendor_class: Some("PXEClient".into()),
            uuid: None,
        });
        assert!(t.reservation(&mac).is_none());
        Registry::update(dir.path(), |r| {
            r.nodes.push(Node {
                name: "n7".into(),
                mac,
                ip: Some("10.0.0.7".parse().unwrap()),
                image: None,
                efi_loader: None,
            });
            Ok(())
        })
        .unwrap();
        t.reload_if_changed();
        assert_eq!(t.reservation(&mac).unwrap().name, "n7");
        assert_eq!(t.reserved_by("10.0.0.7".parse().unwrap()), Some(mac));
        assert!(t.discovered_now().is_empty());
    }
}
