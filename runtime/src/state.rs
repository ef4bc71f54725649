//! What a master keeps on disk between starts: its boot generation, its data generation and
//! the newest boot generation it accepted from the peer. Written atomically (temporary file,
//! fsync, rename, fsync of the directory), so a `kill -9` or a power cut leaves the old or
//! the new content, never a torn file.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaState {
    /// Bumped at every start; heartbeats carry it so the peer can refuse replays.
    pub boot_gen: u64,
    /// Which master's data is newest: raised above both masters' values at every takeover.
    pub data_gen: u64,
    /// The newest boot generation accepted from the peer: older ones are replays.
    pub peer_boot_gen: u64,
}

pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub fn new(dir: &Path) -> StateFile {
        StateFile {
            path: dir.join("ha-state.json"),
        }
    }

    /// Reads the state; a missing file is a first start. An unreadable one is an error that
    /// names the file: guessing generations could make this master accept replays.
    pub fn load(&self) -> anyhow::Result<HaState> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is damaged; move it away to start with fresh generations",
                    self.path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HaState::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.path.display())),
        }
    }

    pub fn save(&self, state: &HaState) -> anyhow::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&serde_json::to_vec_pretty(state)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }
}

/// The boot generation of this start: above the stored one, and at least the current Unix
/// second, so a master whose state was wiped (reinstalled, namespace recreated) still starts
/// above every generation its peer has seen from it.
pub fn next_boot_gen(stored: u64, unix_secs: u64) -> u64 {
    (stored + 1).max(unix_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path());
        assert_eq!(f.load().unwrap(), HaState::default());
        let s = HaState {
            boot_gen: 5,
            data_gen: 7,
            peer_boot_gen: 9,
        };
        f.save(&s).unwrap();
        assert_eq!(f.load().unwrap(), s);
        std::fs::write(dir.path().join("ha-state.json"), b"{").unwrap();
        assert!(f.load().unwrap_err().to_string().contains("damaged"));
    }

    #[test]
    fn boot_generation_never_goes_back() {
        assert_eq!(next_boot_gen(0, 1_800_000_000), 1_800_000_000);
        assert_eq!(next_boot_gen(1_800_000_005, 1_800_000_000), 1_800_000_006);
    }
}
