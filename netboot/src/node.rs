//! Types shared by the DHCP, TFTP and HTTP boot servers and the appliance that wires them:
//! who a client is, what the node registry says about it, and the boot stages it goes through.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ethernet hardware address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Lower-case hex with dashes, the form used in file names and URLs (`52-54-00-12-34-56`).
    pub fn dashed(&self) -> String {
        let b = self.0;
        format!(
            "{:02x}-{:02x}-{:02x}-{:02x}-{:02x}-{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a text is not a MAC address.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not a MAC address (expected six hex bytes such as 52:54:00:12:34:56)")]
pub struct BadMac(pub String);

impl FromStr for MacAddr {
    type Err = BadMac;
    /// Accepts `aa:bb:cc:dd:ee:ff` and `aa-bb-cc-dd-ee-ff`, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadMac(s.chars().take(64).collect());
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut out = [0u8; 6];
        for (slot, part) in out.iter_mut().zip(parts) {
            // from_str_radix alone would take "+f".
            if part.len() != 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *slot = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The client system architecture a PXE client announces in DHCP option 93 (RFC 4578, IANA
/// "Processor Architecture Types").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientArch {
    /// 0: x86 BIOS.
    Bios,
    /// 6: x86 (32-bit) UEFI.
    EfiIa32,
    /// 7: x64 UEFI (EFI BC).
    EfiBc,
    /// 9: x64 UEFI.
    EfiX64,
    /// 11: ARM 64-bit UEFI.
    EfiArm64,
    /// 16: x64 UEFI HTTP boot.
    EfiX64Http,
    /// Any other code.
    Other(u16),
}

impl ClientArch {
    pub fn from_code(code: u16) -> Self {
        match code {
            0 => Self::Bios,
            6 => Self::EfiIa32,
            7 => Self::EfiBc,
            9 => Self::EfiX64,
            11 => Self::EfiArm64,
            16 => Self::EfiX64Http,
            other => Self::Other(other),
        }
    }

    pub fn code(self) -> u16 {
        match self {
            Self::Bios => 0,
            Self::EfiIa32 => 6,
            Self::EfiBc => 7,
            Self::EfiX64 => 9,
            Self::EfiArm64 => 11,
            Self::EfiX64Http => 16,
            Self::Other(c) => c,
        }
    }
}

/// What the node registry says about a known MAC address.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Reservation {
    /// The node's name: sent as the DHCP host name (option 12) and used in its boot script.
    pub name: String,
    /// The address reserved for it, if any (otherwise it gets one from the pool).
    pub ip: Option<Ipv4Addr>,
    /// The image it boots; `None` means the configured default image.
    pub image: Option<String>,
    /// The EFI iPXE binary for this node (`ipxe.efi` or `snponly.efi`); `None` means the default.
    pub efi_loader: Option<String>,
}

/// The node registry as the boot servers see it. Implemented by the appliance over its state
/// directory; lookups must be cheap (they happen once per DHCP packet).
pub trait NodeDirectory: Send + Sync + 'static {
    /// The reservation of a member node.
    fn reservation(&self, mac: &MacAddr) -> Option<Reservation>;
    /// The member that has `ip` reserved, so the pool never hands it to anyone else.
    fn reserved_by(&self, ip: Ipv4Addr) -> Option<MacAddr>;
}

/// The stages of one network boot, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootStage {
    /// A DHCPOFFER was sent.
    Offered,
    /// A DHCPACK was sent.
    Bound,
    /// The first-stage boot loader (iPXE binary) was sent.
    BootFileSent,
    /// The node's iPXE script was sent.
    ScriptSent,
    /// The kernel was sent.
    KernelSent,
    /// The initramfs was sent.
    InitrdSent,
    /// The node's own system reported itself online.
    Online,
}

impl BootStage {
    pub const ALL: [BootStage; 7] = [
        BootStage::Offered,
        BootStage::Bound,
        BootStage::BootFileSent,
        BootStage::ScriptSent,
        BootStage::KernelSent,
        BootStage::InitrdSent,
        BootStage::Online,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BootStage::Offered => "offered",
            BootStage::Bound => "bound",
            BootStage::BootFileSent => "boot-file-sent",
            BootStage::ScriptSent => "script-sent",
            BootStage::KernelSent => "kernel-sent",
            BootStage::InitrdSent => "initrd-sent",
            BootStage::Online => "online",
        }
    }
}

impl fmt::Display for BootStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a boot event is about. DHCP knows the MAC; TFTP and HTTP only see the client's address
/// (and the MAC when the requested path names it); the appliance joins the two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientRef {
    pub mac: Option<MacAddr>,
    pub ip: Option<Ipv4Addr>,
}

/// A PXE client whose MAC is not in the registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredClient {
    pub mac: MacAddr,
    pub arch: Option<ClientArch>,
    /// Option 60 as sent (lossy UTF-8, bounded).
    pub vendor_class: Option<String>,
    /// Option 97 machine UUID as hex, when sent.
    pub uuid: Option<String>,
}

/// Receives what the boot servers observe. Calls must not block (they run on the packet path):
/// implementations queue or update memory and persist elsewhere.
pub trait BootObserver: Send + Sync + 'static {
    fn stage(&self, client: ClientRef, stage: BootStage);
    fn discovered(&self, client: DiscoveredClient);
}

/// An observer that ignores everything; for tests and benchmarks.
pub struct NoObserver;

impl BootObserver for NoObserver {
    fn stage(&self, _: ClientRef, _: BootStage) {}
    fn discovered(&self, _: DiscoveredClient) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let m: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
        assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
        assert_eq!(m.dashed(), "52-54-00-ab-cd-0f");
        assert_eq!("52-54-00-ab-cd-0f".parse::<MacAddr>().unwrap(), m);
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:0f:11",
            "5:54:00:ab:cd:0f",
            "zz:54:00:ab:cd:0f",
            "52:54:00:ab:cd:+f",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn arch_codes_round_trip() {
        for code in [0u16, 6, 7, 9, 11, 16, 42] {
            assert_eq!(ClientArch::from_code(code).code(), code);
        }
    }
}
