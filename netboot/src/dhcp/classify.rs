//! What kind of client sent a request: a PXE or UEFI HTTP boot client, which architecture,
//! whether it is already running iPXE, and its machine UUID.

use std::fmt::Write as _;

use crate::node::ClientArch;

use super::wire::Request;

/// How the client wants to boot, from option 60.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootKind {
    /// Not a network boot client (an installed OS renewing, a plain DHCP client).
    None,
    /// PXE (`PXEClient…`): boots over TFTP.
    Pxe,
    /// UEFI HTTP boot (`HTTPClient…`): needs a full URL and option 60 echoed.
    Http,
}

/// The boot-relevant facts about a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classification {
    pub boot: BootKind,
    /// Option 93, else the `Arch:xxxxx` field of option 60.
    pub arch: Option<ClientArch>,
    /// The client is iPXE already (option 175 present, or user class 77 = "iPXE"): give it the
    /// script, not a loader, or it chainloads itself forever.
    pub ipxe: bool,
}

impl Classification {
    /// A client that should get boot instructions.
    pub fn is_boot_client(&self) -> bool {
        self.boot != BootKind::None || self.ipxe
    }
}

/// Whether the user class (option 77) says iPXE. iPXE sends the bare string; RFC 3004 clients
/// send length-prefixed class names, accepted too.
fn user_class_is_ipxe(uc: &[u8]) -> bool {
    if uc == b"iPXE" {
        return true;
    }
    let mut i = 0;
    while let Some(&len) = uc.get(i) {
        let Some(name) = uc.get(i + 1..i + 1 + usize::from(len)) else {
            return false;
        };
        if name == b"iPXE" {
            return true;
        }
        i += 1 + usize::from(len);
    }
    false
}

/// `PXEClient:Arch:00007:UNDI:003016` → 7.
fn arch_from_vendor_class(vc: &[u8]) -> Option<u16> {
    let pos = vc.windows(5).position(|w| w == b"Arch:")?;
    let digits = vc.get(pos + 5..pos + 10)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Classifies a request.
pub fn classify(req: &Request<'_>) -> Classification {
    let vc = req.vendor_class.unwrap_or(&[]);
    let boot = if vc.starts_with(b"PXEClient") {
        BootKind::Pxe
    } else if vc.starts_with(b"HTTPClient") {
        BootKind::Http
    } else {
        BootKind::None
    };
    let arch = req
        .arch
        .or_else(|| {
            if boot != BootKind::None {
                arch_from_vendor_class(vc)
            } else {
                None
            }
        })
        .map(ClientArch::from_code);
    let ipxe = req.ipxe_options.is_some() || req.user_class.is_some_and(user_class_is_ipxe);
    Classification { boot, arch, ipxe }
}

/// Option 60 as text for reports: lossy UTF-8, control characters replaced, at most 64 chars.
pub fn vendor_class_text(vc: &[u8]) -> String {
    String::from_utf8_lossy(&vc[..vc.len().min(64)])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(64)
        .collect()
}

/// Option 97 (type byte 0 + 16 bytes) as 32 lower-case hex digits.
pub fn uuid_hex(uuid_option: &[u8]) -> Option<String> {
    let id = uuid_option.get(1..17)?;
    let mut s = String::with_capacity(32);
    for b in id {
        let _ = write!(s, "{b:02x}");
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::super::wire::{parse, tests::raw_request};
    use super::*;

    fn class_of(opts: &[u8]) -> Classification {
        let mut o = vec![53, 1, 1];
        o.extend_from_slice(opts);
        classify(&parse(&raw_request([1, 2, 3, 4, 5, 6], &o)).unwrap())
    }

    #[test]
    fn pxe_http_and_ipxe() {
        let mut o = vec![60, 32];
        o.extend_from_slice(b"PXEClient:Arch:00000:UNDI:002001");
        let c = class_of(&o);
        assert_eq!(c.boot, BootKind::Pxe);
        assert_eq!(c.arch, Some(ClientArch::Bios));
        assert!(!c.ipxe);

        let mut o = vec![60, 10];
        o.extend_from_slice(b"HTTPClient");
        o.extend_from_slice(&[93, 2, 0, 16]);
        let c = class_of(&o);
        assert_eq!(c.boot, BootKind::Http);
        assert_eq!(c.arch, Some(ClientArch::EfiX64Http));

        let c = class_of(&[77, 4, b'i', b'P', b'X', b'E']);
        assert!(c.ipxe);
        assert!(c.is_boot_client());
        let c = class_of(&[77, 5, 4, b'i', b'P', b'X', b'E']);
        assert!(c.ipxe);
        let c = class_of(&[175, 3, 19, 1, 1]);
        assert!(c.ipxe);
        let c = class_of(&[12, 3, b'a', b'b', b'c']);
        assert!(!c.is_boot_client());
        assert_eq!(c.arch, None);
    }

    #[test]
    fn text_helpers_are_bounded() {
        assert_eq!(vendor_class_text(b"PXE\x01"), "PXE?");
        assert_eq!(vendor_class_text(&[b'a'; 300]).len(), 64);
        assert_eq!(vendor_class_text(&[0xff, b'a']), "\u{fffd}a");
        let mut u = vec![0u8];
        u.extend(0..16u8);
        assert_eq!(uuid_hex(&u).unwrap(), "000102030405060708090a0b0c0d0e0f");
        assert_eq!(uuid_hex(&[0, 1]), None);
    }
}
