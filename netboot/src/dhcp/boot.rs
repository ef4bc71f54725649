//! Which boot file or URL a client gets.
//!
//! The chain is: firmware PXE → iPXE loader (by architecture) → iPXE asks again, identifies
//! itself (175 / user class "iPXE") → its per-node script. UEFI HTTP boot skips TFTP and gets
//! the loader as a URL.

use crate::node::{ClientArch, MacAddr, Reservation};

use super::classify::{BootKind, Classification};
use super::config::BootConfig;

/// What to tell a boot client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFile {
    /// Goes into the `file` header field (when it fits) and option 67.
    pub file: String,
    /// Fetched over TFTP from `siaddr` (so siaddr, sname and option 66 name us); false for URLs.
    pub tftp: bool,
    /// A UEFI HTTP boot reply: option 60 must be `HTTPClient`.
    pub http_client: bool,
    /// The file is the per-node iPXE script.
    pub script: bool,
}

/// Chooses the boot file, or `None` when the client gets an address only (not a boot client,
/// an architecture we have no loader for, or HTTP boot without `http_base`).
pub fn select(
    boot: &BootConfig,
    class: &Classification,
    mac: &MacAddr,
    reservation: Option<&Reservation>,
) -> Option<BootFile> {
    if !class.is_boot_client() {
        return None;
    }
    if class.ipxe {
        // Already iPXE: the script. Over HTTP when configured (iPXE speaks it), else TFTP.
        let file = boot.script_location(mac);
        return Some(BootFile {
            tftp: boot.http_base().is_none(),
            file,
            http_client: false,
            script: true,
        });
    }
    let efi = || {
        reservation
            .and_then(|r| r.efi_loader.as_deref())
            .filter(|l| !l.is_empty())
            .unwrap_or(&boot.efi_loader)
    };
    let arch = class.arch?;
    if class.boot == BootKind::Http
        || matches!(arch, ClientArch::EfiX64Http | ClientArch::Other(15 | 19))
    {
        let loader = match arch {
            ClientArch::Other(19) | ClientArch::EfiArm64 => boot.arm64_loader.as_str(),
            _ => efi(),
        };
        return Some(BootFile {
            file: boot.loader_url(loader)?,
            tftp: false,
            http_client: true,
            script: false,
        });
    }
    let loader = match arch {
        ClientArch::Bios => boot.bios_loader.as_str(),
        ClientArch::EfiIa32 | ClientArch::EfiBc | ClientArch::EfiX64 => efi(),
        ClientArch::EfiArm64 => boot.arm64_loader.as_str(),
        ClientArch::EfiX64Http | ClientArch::Other(_) => return None,
    };
    Some(BootFile {
        file: loader.to_string(),
        tftp: true,
        http_client: false,
        script: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(boot: BootKind, arch: u16, ipxe: bool) -> Classification {
        Classification {
            boot,
            arch: Some(ClientArch::from_code(arch)),
            ipxe,
        }
    }

    #[test]
    fn loaders_by_arch() {
        let b = BootConfig::default();
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let f =
            |c: Classification, r: Option<&Reservation>| select(&b, &c, &mac, r).map(|x| x.file);
        assert_eq!(
            f(class(BootKind::Pxe, 0, false), None).unwrap(),
            "undionly.kpxe"
        );
        for a in [6, 7, 9] {
            assert_eq!(f(class(BootKind::Pxe, a, false), None).unwrap(), "ipxe.efi");
        }
        let r = Reservation {
            efi_loader: Some("snponly.efi".into()),
            ..Reservation::default()
        };
        assert_eq!(
            f(class(BootKind::Pxe, 7, false), Some(&r)).unwrap(),
            "snponly.efi"
        );
        assert_eq!(
            f(class(BootKind::Pxe, 11, false), None).unwrap(),
            "ipxe-arm64.efi"
        );
        assert_eq!(f(class(BootKind::Pxe, 42, false), None), None);
        // HTTP boot needs http_base.
        assert_eq!(f(class(BootKind::Http, 16, false), None), None);
        assert_eq!(
            f(class(BootKind::Pxe, 0, true), None).unwrap(),
            "boot/52-54-00-00-00-01.ipxe"
        );
        assert_eq!(f(class(BootKind::None, 0, false), None), None);
    }

    #[test]
    fn http_urls() {
        let b = BootConfig {
            http_base: Some("http://10.0.0.1:8080".into()),
            ..BootConfig::default()
        };
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let x = select(&b, &class(BootKind::Http, 16, false), &mac, None).unwrap();
        assert_eq!(x.file, "http://10.0.0.1:8080/ipxe.efi");
        assert!(x.http_client && !x.tftp);
        let x = select(&b, &class(BootKind::Pxe, 7, true), &mac, None).unwrap();
        assert_eq!(x.file, "http://10.0.0.1:8080/boot/52-54-00-00-00-01.ipxe");
        assert!(x.script && !x.tftp);
    }
}
