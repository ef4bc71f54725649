//! Crash-safe lease persistence: an append-only journal of [`LeaseRecord`]s.
//!
//! File `dhcp-leases.journal` in the state directory: an 8-byte header, then records
//! `[payload length u32 LE][CRC32 of payload u32 LE][payload]`. A record is written (and, with
//! `fsync = true`, fdatasync'ed) before the reply that depends on it is sent, so after a crash
//! the journal knows every address any client was told it holds.
//!
//! On open, records are replayed in order; the first record that is cut short or fails its CRC
//! ends the journal, and the file is truncated there (a torn tail is the one thing a crash in
//! the middle of an append can leave). When the journal grows past a multiple of the live lease
//! count it is compacted: a snapshot goes to a temporary file which is fsynced and renamed over
//! the journal, then the directory is fsynced, so a crash leaves either the old or the new file.
//!
//! Writes are batched by the caller ([`Journal::append`] many, [`Journal::commit`] once): one
//! `write` and one `fdatasync` per batch of packets (group commit).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::node::MacAddr;

use super::leases::{ClientKey, LeaseRecord, RecordState};

/// File name of the journal inside the state directory.
pub const JOURNAL_FILE: &str = "dhcp-leases.journal";
const HEADER: &[u8; 8] = b"CMDHCPJ1";
/// Payloads are small (≤ 6 + 4 + 8 + 2 + 255 + 1 + 63 + 1 bytes); anything larger is corruption.
const MAX_PAYLOAD: usize = 512;
/// Host names are cut to this length before they are persisted.
pub const MAX_HOSTNAME: usize = 63;

/// Journal failures.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("lease journal {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lease journal {path} is not a clustermaker lease journal (bad header)")]
    BadHeader { path: PathBuf },
}

/// The result of decoding a journal image.
#[derive(Debug, Default)]
pub struct Replay {
    /// The valid records, in order.
    pub records: Vec<LeaseRecord>,
    /// Length of the valid prefix (header + complete records).
    pub valid_len: u64,
    /// Bytes after the valid prefix (a torn or corrupt tail).
    pub tail_len: u64,
}

/// Encodes one record (length, CRC, payload) onto `out`.
pub fn encode_record(rec: &LeaseRecord, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0; 8]);
    out.push(match rec.state {
        RecordState::Bound => 1,
        RecordState::Released => 2,
        RecordState::Declined => 3,
    });
    out.extend_from_slice(&rec.ip.octets());
    out.extend_from_slice(&rec.mac.0);
    out.extend_from_slice(&rec.until.to_le_bytes());
    match &rec.key {
        ClientKey::Mac(_) => out.push(0),
        ClientKey::Id(id) => {
            let id = &id[..id.len().min(255)];
            out.push(1);
            out.push(id.len() as u8);
            out.extend_from_slice(id);
        }
    }
    let host = rec.hostname.as_deref().unwrap_or("").as_bytes();
    let host = &host[..host.len().min(MAX_HOSTNAME)];
    out.push(host.len() as u8);
    out.extend_from_slice(host);
    let payload_len = (out.len() - start - 8) as u32;
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&payload_len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn decode_payload(p: &[u8]) -> Option<LeaseRecord> {
    let state = match *p.first()? {
        1 => RecordState::Bound,
        2 => RecordState::Released,
        3 => RecordState::Declined,
        _ => return None,
    };
    let ip = Ipv4Addr::new(*p.get(1)?, *p.get(2)?, *p.get(3)?, *p.get(4)?);
    let mut mac = [0u8; 6];
    mac.copy_from_slice(p.get(5..11)?);
    let mac = MacAddr(mac);
    let until = u64::from_le_bytes(p.get(11..19)?.try_into().ok()?);
    let mut i = 19;
    let key = match *p.get(i)? {
        0 => {
            i += 1;
            ClientKey::Mac(mac)
        }
        1 => {
            let len = usize::from(*p.get(i + 1)?);
            let id = p.get(i + 2..i + 2 + len)?;
            i += 2 + len;
            ClientKey::Id(id.into())
        }
        _ => return None,
    };
    let hlen = usize::from(*p.get(i)?);
    let host = p.get(i + 1..i + 1 + hlen)?;
    if i + 1 + hlen != p.len() {
        return None;
    }
    let hostname = if host.is_empty() {
        None
    } else {
        Some(String::from_utf8_lossy(host).into_owned().into_boxed_str())
    };
    Some(LeaseRecord {
        ip,
        state,
        key,
        mac,
        until,
        hostname,
    })
}

/// Decodes a journal image (the whole file). `None` when the header is wrong. Public so that
/// tests and tools can verify a journal independently of the server.
pub fn decode(image: &[u8]) -> Option<Replay> {
    if image.len() < HEADER.len() {
        // An empty or cut header: a crash while creating the file.
        return Some(Replay {
            records: Vec::new(),
            valid_len: 0,
            tail_len: image.len() as u64,
        });
    }
    if &image[..HEADER.len()] != HEADER {
        return None;
    }
    let mut records = Vec::new();
    let mut i = HEADER.len();
    while let Some(head) = image.get(i..i + 8) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len == 0 || len > MAX_PAYLOAD {
            break;
        }
        let Some(payload) = image.get(i + 8..i + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(rec) = decode_payload(payload) else {
            break;
        };
        records.push(rec);
        i += 8 + len;
    }
    Some(Replay {
        records,
        valid_len: i as u64,
        tail_len: (image.len() - i) as u64,
    })
}

/// The open journal.
pub struct Journal {
    path: PathBuf,
    dir: PathBuf,
    file: File,
    fsync: bool,
    pending: Vec<u8>,
    pending_records: usize,
    records_in_file: usize,
    /// Length of the file up to its last complete record.
    len: u64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, replays it and cuts away a torn tail. Returns
    /// the journal and the valid records in order.
    pub fn open(dir: &Path, fsync: bool) -> Result<(Journal, Replay), JournalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(JOURNAL_FILE);
        // A leftover temporary file is an unfinished compaction: the journal itself is intact.
        let _ = std::fs::remove_file(path.with_extension("journal.tmp"));
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut image = Vec::new();
        file.read_to_end(&mut image).map_err(io_err(&path))?;
        let replay =
            decode(&image).ok_or_else(|| JournalError::BadHeader { path: path.clone() })?;
        if replay.valid_len < HEADER.len() as u64 {
            file.set_len(0).map_err(io_err(&path))?;
            file.write_all(HEADER).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            sync_dir(dir).map_err(io_err(dir))?;
        } else if replay.tail_len > 0 {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = replay.tail_len,
                "lease journal ends in a torn or corrupt record; truncating it"
            );
            file.set_len(replay.valid_len).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
        }
        let len = replay.valid_len.max(HEADER.len() as u64);
        let journal = Journal {
            len,
            dir: dir.to_path_buf(),
            file,
            fsync,
            pending: Vec::with_capacity(64 * 1024),
            pending_records: 0,
            records_in_file: replay.records.len(),
            path,
        };
        Ok((journal, replay))
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a record for the next [`commit`](Self::commit).
    pub fn append(&mut self, rec: &LeaseRecord) {
        encode_record(rec, &mut self.pending);
        self.pending_records += 1;
    }

    /// Whether records are waiting for a commit.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes the queued records with one `write` and (when `fsync`) one `fdatasync`.
    pub fn commit(&mut self) -> Result<(), JournalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let res = self
            .file
            .write_all(&self.pending)
            .and_then(|()| {
                if self.fsync {
                    self.file.sync_data()
                } else {
                    Ok(())
                }
            })
            .map_err(io_err(&self.path));
        if res.is_err() {
            // A partial write leaves a torn record that the next open would cut away together
            // with everything appended after it: put the file back at its last good length.
            let _ = self.file.set_len(self.len);
        } else {
            self.len += self.pending.len() as u64;
            self.records_in_file += self.pending_records;
        }
        self.pending.clear();
        self.pending_records = 0;
        res
    }

    /// Whether the journal holds enough dead records to be worth rewriting.
    pub fn needs_compaction(&self, live: usize) -> bool {
        self.records_in_file > 4096 && self.records_in_file > live.saturating_mul(4)
    }

    /// Rewrites the journal as `live` records: temporary file, fsync, rename, fsync of the
    /// directory. Pending records must have been committed.
    pub fn compact(&mut self, live: &[LeaseRecord]) -> Result<(), JournalError> {
        let tmp = self.path.with_extension("journal.tmp");
        let mut image = Vec::with_capacity(HEADER.len() + live.len() * 48);
        image.extend_from_slice(HEADER);
        for rec in live {
            encode_record(rec, &mut image);
        }
        {
            let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&image).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io_err(&self.path))?;
        sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io_err(&self.path))?;
        self.records_in_file = live.len();
        self.len = image.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8, state: RecordState) -> LeaseRecord {
        LeaseRecord {
            ip: Ipv4Addr::new(10, 0, 0, n),
            state,
            key: if n & 1 == 0 {
                ClientKey::Mac(MacAddr([0, 0, 0, 0, 0, n]))
            } else {
                ClientKey::Id(vec![1, 2, n].into())
            },
            mac: MacAddr([0, 0, 0, 0, 0, n]),
            until: 1000 + u64::from(n),
            hostname: matches!(n, 3 | 6 | 9).then(|| format!("node{n}").into_boxed_str()),
        }
    }

    #[test]
    fn round_trip_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, r) = Journal::open(dir.path(), true).unwrap();
        assert!(r.records.is_empty());
        let recs: Vec<_> = (1..=9)
            .map(|n| {
                rec(
                    n,
                    if n == 5 {
                        RecordState::Declined
                    } else {
                        RecordState::Bound
                    },
                )
            })
            .collect();
        for r in &recs {
            j.append(r);
        }
        j.commit().unwrap();
        drop(j);
        // Tear the last record in half.
        let path = dir.path().join(JOURNAL_FILE);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 5).unwrap();
        let (mut j, r) = Journal::open(dir.path(), true).unwrap();
        assert_eq!(r.records, recs[..8]);
        assert!(r.tail_len > 0);
        j.append(&recs[8]);
        j.commit().unwrap();
        let (_, r) = Journal::open(dir.path(), true).unwrap();
        assert_eq!(r.records, recs);
        assert_eq!(r.tail_len, 0);
    }

    #[test]
    fn corrupt_crc_ends_the_journal() {
        let mut image = HEADER.to_vec();
        encode_record(&rec(1, RecordState::Bound), &mut image);
        let cut = image.len();
        encode_record(&rec(2, RecordState::Bound), &mut image);
        let last = image.len() - 1;
        image[last] ^= 0xff;
        let r = decode(&image).unwrap();
        assert_eq!(r.records.len(), 1);
        assert_eq!(r.valid_len, cut as u64);
        assert!(decode(b"NOTAJOURNAL").is_none());
        assert_eq!(decode(b"CMD").unwrap().valid_len, 0);
    }

    #[test]
    fn compaction_keeps_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), false).unwrap();
        for _ in 0..3 {
            for n in 1..=4 {
                j.append(&rec(n, RecordState::Bound));
            }
        }
        j.commit().unwrap();
        let live: Vec<_> = (1..=4).map(|n| rec(n, RecordState::Bound)).collect();
        j.compact(&live).unwrap();
        j.append(&rec(6, RecordState::Released));
        j.commit().unwrap();
        let (_, r) = Journal::open(dir.path(), false).unwrap();
        assert_eq!(r.records.len(), 5);
        assert_eq!(r.records[..4], live[..]);
    }
}
