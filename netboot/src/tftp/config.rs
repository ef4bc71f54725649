//! The `[tftp]` configuration section.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::options::{Limits, MAX_BLKSIZE, MAX_WINDOWSIZE, MIN_BLKSIZE};

/// TFTP server settings. Every key has a default, unknown keys are rejected.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TftpConfig {
    /// The directory files are served from (absolute).
    pub root: PathBuf,
    /// Largest block size granted (RFC 2348). The default 1468 fills a 1500-byte Ethernet frame
    /// (1500 − 20 IP − 8 UDP − 4 TFTP); larger values fragment.
    pub max_blksize: u16,
    /// Largest window granted (RFC 7440), in blocks.
    pub max_windowsize: u16,
    /// Retransmission timeout in milliseconds, unless the client negotiates its own.
    pub timeout_ms: u64,
    /// Retransmissions without progress before a transfer is abandoned. With the defaults an
    /// abandoned transfer is freed after (5 + 1) × 1 s.
    pub retries: u32,
    /// Largest client `timeout` option (seconds) accepted; larger requests are declined so a
    /// client cannot hold a transfer slot for minutes. 0 never accepts the option.
    pub max_client_timeout_s: u8,
    /// Transfers served at once; requests beyond are refused with an ERROR.
    pub max_transfers: usize,
}

impl Default for TftpConfig {
    fn default() -> Self {
        TftpConfig {
            root: PathBuf::from("/var/lib/clustermaker/tftp"),
            max_blksize: 1468,
            max_windowsize: 64,
            timeout_ms: 1000,
            retries: 5,
            max_client_timeout_s: 10,
            max_transfers: 512,
        }
    }
}

/// A configuration value out of range, naming the key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {problem}")]
pub struct ConfigError {
    /// The key inside the TFTP section, e.g. `max_blksize`.
    pub key: &'static str,
    /// What is wrong, with the value found.
    pub problem: String,
}

impl TftpConfig {
    /// Checks every value; the error names the first key that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn range<T: PartialOrd + std::fmt::Display>(
            key: &'static str,
            v: T,
            lo: T,
            hi: T,
        ) -> Result<(), ConfigError> {
            if v < lo || v > hi {
                return Err(ConfigError {
                    key,
                    problem: format!("must be between {lo} and {hi}, got {v}"),
                });
            }
            Ok(())
        }
        if !self.root.is_absolute() {
            return Err(ConfigError {
                key: "root",
                problem: format!("must be an absolute path, got `{}`", self.root.display()),
            });
        }
        range("max_blksize", self.max_blksize, MIN_BLKSIZE, MAX_BLKSIZE)?;
        range("max_windowsize", self.max_windowsize, 1, MAX_WINDOWSIZE)?;
        range("timeout_ms", self.timeout_ms, 10, 255_000)?;
        range("retries", self.retries, 0, 100)?;
        range("max_transfers", self.max_transfers, 1, 65_536)?;
        Ok(())
    }

    /// The negotiation limits these settings imply.
    pub fn limits(&self) -> Limits {
        Limits {
            max_blksize: self.max_blksize,
            max_windowsize: self.max_windowsize,
            timeout: Duration::from_millis(self.timeout_ms),
            max_client_timeout_s: self.max_client_timeout_s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        TftpConfig::default().validate().unwrap();
        assert_eq!(TftpConfig::default().limits(), Limits::default());
    }

    #[test]
    fn errors_name_the_key() {
        let bad = |f: fn(&mut TftpConfig)| {
            let mut c = TftpConfig::default();
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert_eq!(bad(|c| c.root = "tftp".into()).key, "root");
        assert_eq!(bad(|c| c.max_blksize = 7).key, "max_blksize");
        assert_eq!(bad(|c| c.max_blksize = 65465).key, "max_blksize");
        assert_eq!(bad(|c| c.max_windowsize = 0).key, "max_windowsize");
        assert_eq!(bad(|c| c.timeout_ms = 0).key, "timeout_ms");
        assert_eq!(bad(|c| c.retries = 1000).key, "retries");
        let e = bad(|c| c.max_transfers = 0);
        assert_eq!(
            e.to_string(),
            "`max_transfers`: must be between 1 and 65536, got 0"
        );
    }

    #[test]
    fn deserializes_with_defaults_and_rejects_unknown_keys() {
        let c: TftpConfig = serde_json::from_str(r#"{"max_windowsize": 16}"#).unwrap();
        assert_eq!(c.max_windowsize, 16);
        assert_eq!(c.max_blksize, 1468);
        let e = serde_json::from_str::<TftpConfig>(r#"{"blksize": 16}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `blksize`"), "{e}");
    }
}
