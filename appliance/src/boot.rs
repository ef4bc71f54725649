//! What a booting node is served, whichever protocol it asks over: its iPXE script (rendered per
//! node) and the files of its image. Both the HTTP and the TFTP side use the same path layout:
//!
//! | path | content | stage when sent |
//! | --- | --- | --- |
//! | `boot/<mac-with-dashes>.ipxe` | the node's iPXE script | script sent |
//! | `images/<image>/vmlinuz` | kernel | kernel sent |
//! | `images/<image>/initramfs.img` | initramfs | initramfs sent |
//! | `undionly.kpxe`, `ipxe.efi`, `snponly.efi`, … | iPXE binaries | boot file sent |

use std::sync::Arc;

use anyhow::{Context, Result};
use netboot::script::{ScriptContext, ScriptTemplate};
use netboot::{BootStage, MacAddr, NodeDirectory};

use crate::config::{Config, Transfer};
use crate::tracker::Tracker;

pub struct BootFiles {
    pub config: Config,
    template: ScriptTemplate,
    pub tracker: Arc<Tracker>,
}

impl BootFiles {
    pub fn new(config: Config, tracker: Arc<Tracker>) -> Result<BootFiles> {
        let template = match &config.boot.script_template {
            Some(path) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read boot.script_template {}", path.display())
                })?;
                ScriptTemplate::new(text)
                    .with_context(|| format!("boot.script_template {}", path.display()))?
            }
            None => ScriptTemplate::builtin(),
        };
        Ok(BootFiles {
            config,
            template,
            tracker,
        })
    }

    /// The iPXE script for the node with `mac`.
    pub fn script(&self, mac: MacAddr) -> Result<String> {
        let c = &self.config;
        let reservation = self.tracker.reservation(&mac);
        let member = reservation.is_some();
        let (name, image) = match reservation {
            Some(r) => (
                r.name,
                r.image.unwrap_or_else(|| c.boot.default_image.clone()),
            ),
            None => (mac.dashed(), c.boot.default_image.clone()),
        };
        if !member && !c.boot.boot_unknown {
            // Recorded as discovered by DHCP; let the firmware try its next boot device.
            return Ok(format!(
                "#!ipxe\necho clustermaker: {mac} is not a registered node; add it with `clustermaker node add NAME --mac {mac}`\nexit 1\n"
            ));
        }
        let (base, transfer) = match c.boot.transfer {
            Transfer::Http => (c.http_base(), "http"),
            Transfer::Tftp => (format!("tftp://{}", c.network.address), "tftp"),
        };
        let nfs_root = c.nfs.enabled
            && c.nfs.kernel_exports_file.is_none()
            && (c.boot.nfs_root || image_has_root(&c.boot.images_dir, &image));
        let mut cmdline = c.boot.cmdline.clone();
        if nfs_root && !c.nfs.mount_options.is_empty() {
            cmdline.push_str(&format!(" cm.nfsopts={}", c.nfs.mount_options));
        }
        let ctx = ScriptContext {
            name,
            mac: mac.to_string(),
            image,
            base,
            transfer: transfer.into(),
            master: c.http_base(),
            cmdline,
            member,
            // The address that follows the active master (the virtual IP under HA), so a
            // node's root survives a failover.
            nfs_server: nfs_root.then(|| {
                c.nfs
                    .server_address
                    .unwrap_or_else(|| crate::cli_overlay::master_address(c))
                    .to_string()
            }),
        };
        Ok(self.template.render(&ctx)?)
    }
}

/// Whether `image` has a root tree in the store that nodes mount over NFS (images made by
/// `cargo xtask build-image` alone are a kernel and an initramfs, and nodes stay in the
/// initramfs).
pub fn image_has_root(images_dir: &std::path::Path, image: &str) -> bool {
    images_dir.join(image).join("current/meta.json").is_file()
}

/// The directory holding an image's `vmlinuz` and `initramfs.img`: the current version of an
/// image in the store (`NAME/current`, switched atomically when a new version is published, so
/// a node booting during a publication gets the old or the new pair, never a mix), or the image
/// directory itself for images made by `cargo xtask build-image`.
pub fn image_boot_dir(images_dir: &std::path::Path, image: &str) -> std::path::PathBuf {
    let dir = images_dir.join(image);
    let current = dir.join("current");
    if current.is_dir() {
        current
    } else {
        dir
    }
}

/// The MAC named by a script path `boot/<mac>.ipxe` (either separator).
pub fn script_mac(path: &str) -> Option<MacAddr> {
    let name = path
        .trim_start_matches('/')
        .strip_prefix("boot/")?
        .strip_suffix(".ipxe")?;
    name.parse().ok()
}

/// The boot stage reached when the file at `path` has been sent in full.
pub fn stage_of(path: &str) -> Option<BootStage> {
    let path = path.trim_start_matches('/');
    if script_mac(path).is_some() {
        return Some(BootStage::ScriptSent);
    }
    if let Some(rest) = path.strip_prefix("images/") {
        return match rest.rsplit('/').next() {
            Some("vmlinuz") => Some(BootStage::KernelSent),
            Some("initramfs.img") => Some(BootStage::InitrdSent),
            _ => None,
        };
    }
    if !path.contains('/')
        && (path.ends_with(".kpxe") || path.ends_with(".efi") || path.ends_with(".pxe"))
    {
        return Some(BootStage::BootFileSent);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_stages() {
        assert_eq!(
            stage_of("boot/52-54-00-00-00-01.ipxe"),
            Some(BootStage::ScriptSent)
        );
        assert_eq!(
            stage_of("/images/default/vmlinuz"),
            Some(BootStage::KernelSent)
        );
        assert_eq!(
            stage_of("images/x/initramfs.img"),
            Some(BootStage::InitrdSent)
        );
        assert_eq!(stage_of("undionly.kpxe"), Some(BootStage::BootFileSent));
        assert_eq!(stage_of("ipxe.efi"), Some(BootStage::BootFileSent));
        assert_eq!(stage_of("boot/nonsense.ipxe"), None);
        assert_eq!(stage_of("etc/passwd"), None);
    }

    #[test]
    fn scripts_name_members_and_use_the_transfer() {
        let dir = tempfile::tempdir().unwrap();
        let tracker = Tracker::open(dir.path()).unwrap();
        let mut config = Config::default();
        config.network.address = "10.9.0.1".parse().unwrap();
        let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
        let files = BootFiles::new(config.clone(), tracker.clone()).unwrap();
        let s = files.script(mac).unwrap();
        assert!(
            s.contains("http://10.9.0.1:8080/images/default/vmlinuz"),
            "{s}"
        );
        assert!(s.contains("cm.node=52-54-00-00-00-01"), "{s}");
        assert!(!s.contains("cm.root="), "{s}");
        let mut nfs = config.clone();
        nfs.boot.nfs_root = true;
        let s = BootFiles::new(nfs, tracker.clone())
            .unwrap()
            .script(mac)
            .unwrap();
        assert!(s.contains("cm.root=nfs:10.9.0.1:/images/default"), "{s}");
        config.boot.transfer = Transfer::Tftp;
        config.boot.boot_unknown = false;
        let files = BootFiles::new(config, tracker).unwrap();
        let s = files.script(mac).unwrap();
        assert!(
            s.contains("not a registered node") && s.contains("exit 1"),
            "{s}"
        );
    }
}
