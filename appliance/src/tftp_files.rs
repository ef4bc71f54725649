//! The boot files over TFTP: per-node scripts rendered in memory, image files from the images
//! directory, iPXE binaries from `boot.ipxe_dir`, then extra files from `tftp.root`. Every
//! directory is confined by `netboot::tftp::RootDir` (no way out through `..` or symlinks).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use netboot::tftp::{
    CompletedTransfer, RootDir, SourceError, TftpContent, TftpPath, TftpSource, TransferObserver,
};
use netboot::{BootObserver, ClientRef};

use crate::boot::{script_mac, stage_of, BootFiles};
use crate::registry::valid_image_name;

pub struct TftpBootFiles {
    files: Arc<BootFiles>,
}

impl TftpBootFiles {
    pub fn new(files: Arc<BootFiles>) -> Self {
        TftpBootFiles { files }
    }

    fn open_in(dir: &std::path::Path, path: &TftpPath) -> Result<TftpContent, SourceError> {
        let root = RootDir::new(dir).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SourceError::NotFound,
            _ => SourceError::Io(e),
        })?;
        TftpContent::from_file(root.open_file(path)?)
    }
}

impl TftpSource for TftpBootFiles {
    fn open(&self, path: &TftpPath, _client: SocketAddr) -> Result<TftpContent, SourceError> {
        let text = path.as_str();
        if let Some(mac) = script_mac(text) {
            let script = self.files.script(mac).map_err(|e| {
                tracing::error!("boot script for {mac}: {e:#}");
                SourceError::Io(std::io::Error::other("script rendering failed"))
            })?;
            return Ok(TftpContent::from_bytes(script.into_bytes()));
        }
        let boot = &self.files.config.boot;
        if let Some(rest) = text.strip_prefix("images/") {
            let (image, file) = rest.split_once('/').ok_or(SourceError::NotFound)?;
            if !valid_image_name(image) {
                return Err(SourceError::NotFound);
            }
            let file = TftpPath::parse(file.as_bytes()).map_err(|_| SourceError::NotFound)?;
            return Self::open_in(&crate::boot::image_boot_dir(&boot.images_dir, image), &file);
        }
        match Self::open_in(&boot.ipxe_dir, path) {
            Err(SourceError::NotFound) => Self::open_in(&self.files.config.tftp.root, path),
            Err(SourceError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::open_in(&self.files.config.tftp.root, path)
            }
            other => other,
        }
    }
}

impl TransferObserver for TftpBootFiles {
    fn completed(&self, t: &CompletedTransfer<'_>) {
        let path = t.path.as_str();
        let Some(stage) = stage_of(path) else { return };
        let ip = match t.client.ip() {
            IpAddr::V4(ip) => Some(ip),
            IpAddr::V6(ip) => ip.to_ipv4_mapped(),
        };
        self.files.tracker.stage(
            ClientRef {
                mac: script_mac(path),
                ip,
            },
            stage,
        );
    }
}
