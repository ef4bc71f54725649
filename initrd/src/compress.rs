//! Deterministic compression of the archive stream: zstd (default), gzip, or none.
//!
//! Determinism: zstd runs single-threaded with a fixed level (multi-threaded zstd may split
//! input differently) and without a content-size field (the stream length is not known up
//! front); gzip is written with mtime 0, no file name and the "unknown" OS byte, so the same
//! archive always compresses to the same bytes.
//!
//! Both formats are accepted by the kernel's initramfs unpacker. zstd levels stop at 19: the
//! `--ultra` levels use windows larger than the kernel's decompressor accepts.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use crate::error::CompressError;

/// The zstd levels this crate allows.
pub const ZSTD_LEVELS: std::ops::RangeInclusive<i32> = 3..=19;
/// The gzip levels this crate allows (0 stores without compressing).
pub const GZIP_LEVELS: std::ops::RangeInclusive<i32> = 0..=9;

/// How the archive is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Plain cpio.
    None,
    /// gzip at the given level.
    Gzip {
        /// 0..=9
        level: u32,
    },
    /// zstd at the given level.
    Zstd {
        /// 3..=19
        level: i32,
    },
}

impl Default for Compression {
    /// zstd level 3: as fast as gzip -1 and smaller than gzip -9 on binaries.
    fn default() -> Compression {
        Compression::Zstd { level: 3 }
    }
}

impl Compression {
    /// zstd at `level`, checked against [`ZSTD_LEVELS`].
    pub fn zstd(level: i32) -> Result<Compression, CompressError> {
        check_level("zstd", level, ZSTD_LEVELS)?;
        Ok(Compression::Zstd { level })
    }

    /// gzip at `level`, checked against [`GZIP_LEVELS`].
    pub fn gzip(level: i32) -> Result<Compression, CompressError> {
        check_level("gzip", level, GZIP_LEVELS)?;
        Ok(Compression::Gzip {
            level: level.unsigned_abs(),
        })
    }

    /// The usual file-name suffix (`.zst`, `.gz`, or empty).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip { .. } => ".gz",
            Compression::Zstd { .. } => ".zst",
        }
    }

    /// Wraps `out` in an encoder for this compression. Call
    /// [`CompressedWriter::finish`] when done, or the stream will be incomplete.
    pub fn writer<W: Write>(self, out: W) -> Result<CompressedWriter<W>, CompressError> {
        let inner = match self {
            Compression::None => Inner::Plain(out),
            Compression::Gzip { level } => {
                check_level(
                    "gzip",
                    i32::try_from(level).unwrap_or(i32::MAX),
                    GZIP_LEVELS,
                )?;
                // GzBuilder writes mtime 0, no name, no comment and OS byte 255 by default.
                Inner::Gzip(flate2::GzBuilder::new().write(out, flate2::Compression::new(level)))
            }
            Compression::Zstd { level } => {
                check_level("zstd", level, ZSTD_LEVELS)?;
                let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
                encoder.include_checksum(true)?;
                encoder.include_contentsize(false)?;
                Inner::Zstd(encoder)
            }
        };
        Ok(CompressedWriter { inner })
    }

    /// Compresses `data` in one go (for small inputs and tests).
    pub fn compress(self, data: &[u8]) -> Result<Vec<u8>, CompressError> {
        let mut writer = self.writer(Vec::new())?;
        writer.write_all(data)?;
        Ok(writer.finish()?)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::None => f.write_str("none"),
            Compression::Gzip { level } => write!(f, "gzip:{level}"),
            Compression::Zstd { level } => write!(f, "zstd:{level}"),
        }
    }
}

impl FromStr for Compression {
    type Err = CompressError;

    /// Parses `none`, `gzip`, `gzip:LEVEL`, `zstd` or `zstd:LEVEL`.
    fn from_str(text: &str) -> Result<Compression, CompressError> {
        let (format, level) = match text.split_once(':') {
            Some((format, level)) => {
                let level = level
                    .parse::<i32>()
                    .map_err(|_| CompressError::UnknownFormat(text.to_string()))?;
                (format, Some(level))
            }
            None => (text, None),
        };
        match (format, level) {
            ("none", None) => Ok(Compression::None),
            ("gzip" | "gz", level) => Compression::gzip(level.unwrap_or(6)),
            ("zstd" | "zst", level) => Compression::zstd(level.unwrap_or(3)),
            _ => Err(CompressError::UnknownFormat(text.to_string())),
        }
    }
}

fn check_level(
    format: &'static str,
    level: i32,
    range: std::ops::RangeInclusive<i32>,
) -> Result<(), CompressError> {
    if range.contains(&level) {
        Ok(())
    } else {
        Err(CompressError::InvalidLevel {
            format,
            level,
            min: *range.start(),
            max: *range.end(),
        })
    }
}

/// A writer that compresses what is written to it. See [`Compression::writer`].
pub struct CompressedWriter<W: Write> {
    inner: Inner<W>,
}

enum Inner<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> CompressedWriter<W> {
    /// Writes the end of the compressed stream, flushes, and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self.inner {
            Inner::Plain(mut out) => {
                out.flush()?;
                Ok(out)
            }
            Inner::Gzip(encoder) => {
                let mut out = encoder.finish()?;
                out.flush()?;
                Ok(out)
            }
            Inner::Zstd(encoder) => {
                let mut out = encoder.finish()?;
                out.flush()?;
                Ok(out)
            }
        }
    }
}

impl<W: Write> Write for CompressedWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::Plain(out) => out.write(buf),
            Inner::Gzip(encoder) => encoder.write(buf),
            Inner::Zstd(encoder) => encoder.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::Plain(out) => out.flush(),
            Inner::Gzip(encoder) => encoder.flush(),
            Inner::Zstd(encoder) => encoder.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .map(|i| (i % 97) as u8 ^ (i / 1000) as u8)
            .collect()
    }

    #[test]
    fn round_trips_and_is_deterministic() {
        let data = sample();
        for compression in [
            Compression::None,
            Compression::gzip(6).unwrap(),
            Compression::gzip(0).unwrap(),
            Compression::zstd(3).unwrap(),
            Compression::zstd(19).unwrap(),
        ] {
            let first = compression.compress(&data).unwrap();
            let second = compression.compress(&data).unwrap();
            assert_eq!(first, second, "{compression}");
            let mut decoded = Vec::new();
            match compression {
                Compression::None => decoded = first.clone(),
                Compression::Gzip { .. } => {
                    flate2::read::GzDecoder::new(&first[..])
                        .read_to_end(&mut decoded)
                        .unwrap();
                }
                Compression::Zstd { .. } => decoded = zstd::decode_all(&first[..]).unwrap(),
            }
            assert_eq!(decoded, data, "{compression}");
        }
    }

    #[test]
    fn gzip_header_has_no_time_or_name() {
        let out = Compression::gzip(9).unwrap().compress(b"x").unwrap();
        assert_eq!(&out[..3], &[0x1f, 0x8b, 8]);
        assert_eq!(out[3], 0, "no FNAME/FCOMMENT/FEXTRA flags");
        assert_eq!(&out[4..8], &[0, 0, 0, 0], "mtime 0");
        assert_eq!(out[9], 255, "OS unknown, whatever the build host");
    }

    #[test]
    fn zstd_frame_magic() {
        let out = Compression::default().compress(b"x").unwrap();
        assert_eq!(&out[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    }

    #[test]
    fn levels_are_checked() {
        assert!(matches!(
            Compression::zstd(22),
            Err(CompressError::InvalidLevel { .. })
        ));
        assert!(matches!(
            Compression::zstd(1),
            Err(CompressError::InvalidLevel { .. })
        ));
        assert!(matches!(
            Compression::gzip(10),
            Err(CompressError::InvalidLevel { .. })
        ));
        assert!(Compression::Zstd { level: 30 }.writer(Vec::new()).is_err());
        assert!(Compression::Gzip { level: 11 }.writer(Vec::new()).is_err());
    }

    #[test]
    fn parses_names() {
        assert_eq!("none".parse::<Compression>().unwrap(), Compression::None);
        assert_eq!(
            "zstd".parse::<Compression>().unwrap(),
            Compression::Zstd { level: 3 }
        );
        assert_eq!(
            "zstd:19".parse::<Compression>().unwrap(),
            Compression::Zstd { level: 19 }
        );
        assert_eq!(
            "gzip:9".parse::<Compression>().unwrap(),
            Compression::Gzip { level: 9 }
        );
        assert!("lz4".parse::<Compression>().is_err());
        assert!("zstd:x".parse::<Compression>().is_err());
        assert!("zstd:25".parse::<Compression>().is_err());
        assert_eq!(Compression::Gzip { level: 6 }.to_string(), "gzip:6");
    }
}
