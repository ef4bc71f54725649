//! A kernel module's own description: the `.modinfo` section (`name=`, `depends=`, `alias=`),
//! and decompression of `.ko.gz` / `.ko.zst` files.
//!
//! This is what `depmod` reads to write `modules.dep` and `modules.alias`; reading it ourselves
//! lets the builder work on a kernel package that ships without those files (Debian's cloud
//! kernel .deb) without running `depmod` on the image.

use std::io::Read;

use crate::elf::section_data;
use crate::error::ModuleError;

/// Decompressed modules larger than this are refused, so a hostile file cannot make us
/// allocate without bound. The largest in-tree modules are a few tens of MiB.
pub const MAX_MODULE_SIZE: u64 = 512 * 1024 * 1024;

/// How a module file is compressed, judged by its name like `kmod` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ModuleCompression {
    /// `.ko`
    None,
    /// `.ko.gz`
    Gzip,
    /// `.ko.xz`
    Xz,
    /// `.ko.zst`
    Zstd,
}

impl ModuleCompression {
    /// The compression of a module file name, `None` if the name is not a module file.
    pub fn from_file_name(name: &str) -> Option<ModuleCompression> {
        if name.ends_with(".ko") {
            Some(ModuleCompression::None)
        } else if name.ends_with(".ko.gz") {
            Some(ModuleCompression::Gzip)
        } else if name.ends_with(".ko.xz") {
            Some(ModuleCompression::Xz)
        } else if name.ends_with(".ko.zst") {
            Some(ModuleCompression::Zstd)
        } else {
            None
        }
    }

    /// The file-name suffix after `.ko`.
    pub fn suffix(self) -> &'static str {
        match self {
            ModuleCompression::None => "",
            ModuleCompression::Gzip => ".gz",
            ModuleCompression::Xz => ".xz",
            ModuleCompression::Zstd => ".zst",
        }
    }
}

/// The fields of `.modinfo` that matter for dependency resolution.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=` (recent kernels; older ones derive the name from the file).
    pub name: Option<String>,
    /// `depends=`, split at commas.
    pub depends: Vec<String>,
    /// Every `alias=` value.
    pub aliases: Vec<String>,
}

/// Parses the contents of a `.modinfo` section: NUL-separated `key=value` strings.
/// Entries without `=` or that are not UTF-8 are ignored, as `modinfo` does.
pub fn parse_modinfo(section: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for field in section.split(|&byte| byte == 0) {
        let Ok(field) = std::str::from_utf8(field) else {
            continue;
        };
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = Some(value.to_string()),
            "depends" => {
                info.depends = value
                    .split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            "alias" => info.aliases.push(value.to_string()),
            _ => {}
        }
    }
    info
}

/// Reads `.modinfo` from an (uncompressed) module ELF image. `path` is used in errors.
pub fn read_modinfo(module: &[u8], path: &str) -> Result<ModInfo, ModuleError> {
    let section = section_data(module, ".modinfo").map_err(|error| ModuleError::Modinfo {
        path: path.to_string(),
        reason: error.to_string(),
    })?;
    match section {
        Some(bytes) => Ok(parse_modinfo(bytes)),
        None => Err(ModuleError::Modinfo {
            path: path.to_string(),
            reason: "no .modinfo section".to_string(),
        }),
    }
}

/// Returns the uncompressed module image. xz is not supported (no decoder dependency); such
/// modules need a `modules.dep` and are copied compressed.
pub fn decompress_module(
    bytes: &[u8],
    compression: ModuleCompression,
    path: &str,
) -> Result<Vec<u8>, ModuleError> {
    let failed = |reason: String| ModuleError::Modinfo {
        path: path.to_string(),
        reason,
    };
    let mut output = Vec::new();
    let limited_read = |reader: &mut dyn Read, output: &mut Vec<u8>| {
        reader
            .take(MAX_MODULE_SIZE + 1)
            .read_to_end(output)
            .map_err(|error| failed(format!("decompression failed: {error}")))?;
        if output.len() as u64 > MAX_MODULE_SIZE {
            return Err(failed(format!(
                "decompresses to more than {MAX_MODULE_SIZE} bytes"
            )));
        }
        Ok(())
    };
    match compression {
        ModuleCompression::None => return Ok(bytes.to_vec()),
        ModuleCompression::Gzip => {
            limited_read(&mut flate2::read::GzDecoder::new(bytes), &mut output)?;
        }
        ModuleCompression::Zstd => {
            let mut decoder = zstd::stream::read::Decoder::new(bytes)
                .map_err(|error| failed(format!("zstd: {error}")))?;
            limited_read(&mut decoder, &mut output)?;
        }
        ModuleCompression::Xz => {
            return Err(ModuleError::UnsupportedCompression {
                path: path.to_string(),
                format: "xz",
                hint: "provide modules.dep (run `depmod -b ROOT VERSION`); xz modules are \
                       then copied as they are",
            })
        }
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parses_modinfo_fields() {
        let section =
            b"license=GPL\0depends=virtio_ring,virtio, net_failover\0alias=virtio:d00000001v*\0\
                        alias=net-pf-99\0name=virtio_net\0garbage\0\xff\xfe=x\0";
        let info = parse_modinfo(section);
        assert_eq!(info.name.as_deref(), Some("virtio_net"));
        assert_eq!(info.depends, ["virtio_ring", "virtio", "net_failover"]);
        assert_eq!(info.aliases, ["virtio:d00000001v*", "net-pf-99"]);
        assert_eq!(parse_modinfo(b"depends=\0").depends, Vec::<String>::new());
    }

    #[test]
    fn compression_from_names() {
        assert_eq!(
            ModuleCompression::from_file_name("a.ko"),
            Some(ModuleCompression::None)
        );
        assert_eq!(
            ModuleCompression::from_file_name("a.ko.zst"),
            Some(ModuleCompression::Zstd)
        );
        assert_eq!(
            ModuleCompression::from_file_name("a.ko.xz"),
            Some(ModuleCompression::Xz)
        );
        assert_eq!(
            ModuleCompression::from_file_name("a.ko.gz"),
            Some(ModuleCompression::Gzip)
        );
        assert_eq!(ModuleCompression::from_file_name("modules.dep"), None);
    }

    #[test]
    fn decompresses_gzip_and_zstd_and_refuses_xz() {
        let original = b"\x7fELF pretend module".to_vec();
        let zstd = zstd::encode_all(&original[..], 3).unwrap();
        assert_eq!(
            decompress_module(&zstd, ModuleCompression::Zstd, "a.ko.zst").unwrap(),
            original
        );
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gzip.write_all(&original).unwrap();
        let gzip = gzip.finish().unwrap();
        assert_eq!(
            decompress_module(&gzip, ModuleCompression::Gzip, "a.ko.gz").unwrap(),
            original
        );
        assert!(matches!(
            decompress_module(b"x", ModuleCompression::Xz, "a.ko.xz"),
            Err(ModuleError::UnsupportedCompression { .. })
        ));
        assert!(decompress_module(b"not zstd", ModuleCompression::Zstd, "a.ko.zst").is_err());
    }

    #[test]
    fn modinfo_of_garbage_is_an_error() {
        assert!(read_modinfo(b"garbage", "x.ko").is_err());
    }
}
