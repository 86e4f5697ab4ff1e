//! Sparse per-segment indexes: the offset index (offset → file position) and the time index
//! (timestamp → offset), as Kafka's `OffsetIndex` and `TimeIndex`.
//!
//! An entry is added every `index.interval.bytes` of log data, so a lookup lands at most that
//! many bytes (plus one batch) before the wanted batch and the reader scans forward from there.
//!
//! Entries live in memory and are written to their files when the segment is flushed, rolled or
//! closed. An index that lags its log is still correct (lookups scan a little further), and an
//! index that fails its sanity check on open is rebuilt from the log, so the index files never
//! need an fsync of their own.
//!
//! File formats (big-endian, entries back to back):
//! - `.index`: `relative_offset: u32, position: u32` (8 bytes), keyed by the base offset of the
//!   batch that starts at `position`.
//! - `.timeindex`: `timestamp: i64, relative_offset: u32` (12 bytes): the largest timestamp seen
//!   in the segment up to and including the batch at `relative_offset`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

/// Why an index file cannot be trusted; the segment rebuilds it from the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The file size is not a whole number of entries.
    #[error("size {size} is not a multiple of the {entry_size}-byte entry size")]
    PartialEntry {
        /// File size.
        size: u64,
        /// Entry size.
        entry_size: usize,
    },
    /// Entries must increase.
    #[error("entry {index} does not increase on the one before it")]
    NotIncreasing {
        /// Position of the offending entry.
        index: usize,
    },
    /// An entry points past the end of the log file.
    #[error("entry {index} points to position {position}, past the log's {log_size} bytes")]
    PastEnd {
        /// Position of the offending entry.
        index: usize,
        /// The position it names.
        position: u64,
        /// Size of the log file.
        log_size: u64,
    },
    /// The file could not be read.
    #[error("read failed: {0}")]
    Io(String),
}

/// One offset index entry: the batch starting at `position` has base offset
/// `segment base + relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetPosition {
    /// Offset relative to the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment's log file.
    pub position: u32,
}

/// The sparse offset index of one segment.
#[derive(Debug, Default)]
pub struct OffsetIndex {
    entries: Vec<OffsetPosition>,
    persisted: usize,
}

impl OffsetIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads an index file, checking that entries increase and stay within `log_size`.
    pub fn load(path: &Path, log_size: u64) -> Result<Self, IndexError> {
        let bytes = read_file(path)?;
        if bytes.len() % 8 != 0 {
            return Err(IndexError::PartialEntry { size: bytes.len() as u64, entry_size: 8 });
        }
        let mut entries = Vec::with_capacity(bytes.len() / 8);
        for (i, chunk) in bytes.chunks_exact(8).enumerate() {
            let entry = OffsetPosition {
                relative_offset: u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                position: u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
            };
            if let Some(prev) = entries.last() {
                let prev: &OffsetPosition = prev;
                if entry.relative_offset <= prev.relative_offset || entry.position <= prev.position
                {
                    return Err(IndexError::NotIncreasing { index: i });
                }
            }
            if entry.position as u64 >= log_size {
                return Err(IndexError::PastEnd {
                    index: i,
                    position: entry.position as u64,
                    log_size,
                });
            }
            entries.push(entry);
        }
        let persisted = entries.len();
        Ok(OffsetIndex { entries, persisted })
    }

    /// Adds an entry; it must come after every entry present.
    pub fn append(&mut self, relative_offset: u32, position: u32) {
        debug_assert!(
            self.entries
                .last()
                .is_none_or(|e| e.relative_offset < relative_offset && e.position < position),
            "offset index entries must increase"
        );
        self.entries.push(OffsetPosition { relative_offset, position });
    }

    /// The entry with the largest relative offset at or below `relative_offset`, or the start of
    /// the segment.
    pub fn lookup(&self, relative_offset: u32) -> OffsetPosition {
        let i = self.entries.partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 {
            OffsetPosition { relative_offset: 0, position: 0 }
        } else {
            self.entries[i - 1]
        }
    }

    /// Drops entries for batches at or beyond `position` (after a truncation).
    pub fn truncate_to_position(&mut self, position: u32) {
        let keep = self.entries.partition_point(|e| e.position < position);
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(keep);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[OffsetPosition] {
        &self.entries
    }

    /// Writes the entries not yet in `path` (the whole file if it was truncated meanwhile).
    pub fn persist(&mut self, path: &Path) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity((self.entries.len() - self.persisted) * 8);
        for e in &self.entries[self.persisted..] {
            buf.extend_from_slice(&e.relative_offset.to_be_bytes());
            buf.extend_from_slice(&e.position.to_be_bytes());
        }
        persist_tail(path, self.persisted * 8, &buf)?;
        self.persisted = self.entries.len();
        Ok(())
    }
}

/// One time index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// Largest timestamp seen in the segment up to this entry's batch.
    pub timestamp: i64,
    /// Offset (relative to the segment base) of the batch holding that timestamp.
    pub relative_offset: u32,
}

/// The sparse time index of one segment.
#[derive(Debug, Default)]
pub struct TimeIndex {
    entries: Vec<TimestampOffset>,
    persisted: usize,
}

impl TimeIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads a time index file, checking that timestamps and offsets do not decrease and that
    /// offsets stay below `next_relative_offset`.
    pub fn load(path: &Path, next_relative_offset: u64) -> Result<Self, IndexError> {
        let bytes = read_file(path)?;
        if bytes.len() % 12 != 0 {
            return Err(IndexError::PartialEntry { size: bytes.len() as u64, entry_size: 12 });
        }
        let mut entries: Vec<TimestampOffset> = Vec::with_capacity(bytes.len() / 12);
        for (i, c) in bytes.chunks_exact(12).enumerate() {
            let entry = TimestampOffset {
                timestamp: i64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
                relative_offset: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
            };
            if let Some(prev) = entries.last()
                && (entry.timestamp <= prev.timestamp
                    || entry.relative_offset < prev.relative_offset)
            {
                return Err(IndexError::NotIncreasing { index: i });
            }
            if entry.relative_offset as u64 >= next_relative_offset {
                return Err(IndexError::PastEnd {
                    index: i,
                    position: entry.relative_offset as u64,
                    log_size: next_relative_offset,
                });
            }
            entries.push(entry);
        }
        let persisted = entries.len();
        Ok(TimeIndex { entries, persisted })
    }

    /// Adds an entry if `timestamp` exceeds the last entry's.
    pub fn maybe_append(&mut self, timestamp: i64, relative_offset: u32) {
        if self.entries.last().is_none_or(|e| timestamp > e.timestamp) {
            self.entries.push(TimestampOffset { timestamp, relative_offset });
        }
    }

    /// The last entry whose timestamp is below `timestamp`: every record before its offset has a
    /// smaller timestamp, so a search for the first record at or after `timestamp` may start
    /// there. `None` means start at the beginning of the segment.
    pub fn lookup_before(&self, timestamp: i64) -> Option<TimestampOffset> {
        let i = self.entries.partition_point(|e| e.timestamp < timestamp);
        if i == 0 { None } else { Some(self.entries[i - 1]) }
    }

    /// The last entry (the segment's largest timestamp as of the last entry).
    pub fn last(&self) -> Option<TimestampOffset> {
        self.entries.last().copied()
    }

    /// Drops entries at or beyond `relative_offset` (after a truncation).
    pub fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self.entries.partition_point(|e| e.relative_offset < relative_offset);
        self.entries.truncate(keep);
        self.persisted = self.persisted.min(keep);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the entries not yet in `path`.
    pub fn persist(&mut self, path: &Path) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity((self.entries.len() - self.persisted) * 12);
        for e in &self.entries[self.persisted..] {
            buf.extend_from_slice(&e.timestamp.to_be_bytes());
            buf.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        persist_tail(path, self.persisted * 12, &buf)?;
        self.persisted = self.entries.len();
        Ok(())
    }
}

/// Size of one `.txnindex` entry: version, producer id, first offset, last offset, last stable
/// offset (Kafka's `AbortedTxn` layout).
const TXN_ENTRY_SIZE: usize = 34;

/// The aborted-transaction index of one segment (Kafka's `TransactionIndex`): one entry per
/// abort marker in the segment, so that a `read_committed` fetch can hand readers the list of
/// aborted transactions overlapping what it returns.
#[derive(Debug, Default)]
pub struct TransactionIndex {
    entries: Vec<crate::producer_state::AbortedTxn>,
    persisted: usize,
}

impl TransactionIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads a `.txnindex` file; a missing file is an empty index.
    pub fn load(path: &Path) -> Result<Self, IndexError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(IndexError::Io(e.to_string())),
        };
        if bytes.len() % TXN_ENTRY_SIZE != 0 {
            return Err(IndexError::PartialEntry {
                size: bytes.len() as u64,
                entry_size: TXN_ENTRY_SIZE,
            });
        }
        let mut entries = Vec::with_capacity(bytes.len() / TXN_ENTRY_SIZE);
        for (i, c) in bytes.chunks_exact(TXN_ENTRY_SIZE).enumerate() {
            let i64_at = |at: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&c[at..at + 8]);
                i64::from_be_bytes(b)
            };
            let entry = crate::producer_state::AbortedTxn {
                producer_id: i64_at(2),
                first_offset: i64_at(10),
                last_offset: i64_at(18),
                last_stable_offset: i64_at(26),
            };
            if c[0] != 0 || c[1] != 0 || entry.first_offset > entry.last_offset {
                return Err(IndexError::NotIncreasing { index: i });
            }
            entries.push(entry);
        }
        let persisted = entries.len();
        Ok(TransactionIndex { entries, persisted })
    }

    /// Adds an aborted transaction.
    pub fn append(&mut self, txn: crate::producer_state::AbortedTxn) {
        self.entries.push(txn);
    }

    /// The aborted transactions, in marker order.
    pub fn entries(&self) -> &[crate::producer_state::AbortedTxn] {
        &self.entries
    }

    /// Drops entries whose marker is at or after `offset`.
    pub fn truncate_to_offset(&mut self, offset: i64) {
        self.entries.retain(|e| e.last_offset < offset);
        self.persisted = self.persisted.min(self.entries.len());
    }

    /// Writes the entries not yet in `path`.
    pub fn persist(&mut self, path: &Path) -> std::io::Result<()> {
        if self.entries.is_empty() && !path.exists() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity((self.entries.len() - self.persisted) * TXN_ENTRY_SIZE);
        for e in &self.entries[self.persisted..] {
            buf.extend_from_slice(&0i16.to_be_bytes());
            buf.extend_from_slice(&e.producer_id.to_be_bytes());
            buf.extend_from_slice(&e.first_offset.to_be_bytes());
            buf.extend_from_slice(&e.last_offset.to_be_bytes());
            buf.extend_from_slice(&e.last_stable_offset.to_be_bytes());
        }
        persist_tail(path, self.persisted * TXN_ENTRY_SIZE, &buf)?;
        self.persisted = self.entries.len();
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, IndexError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| IndexError::Io(e.to_string()))?;
    Ok(bytes)
}

/// Sets the file to its first `keep` bytes and appends `tail`.
fn persist_tail(path: &Path, keep: usize, tail: &[u8]) -> std::io::Result<()> {
    let mut file =
        std::fs::OpenOptions::new().create(true).write(true).truncate(false).open(path)?;
    if file.metadata()?.len() != keep as u64 {
        file.set_len(keep as u64)?;
    }
    if !tail.is_empty() {
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(keep as u64))?;
        file.write_all(tail)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_lookup_finds_the_largest_entry_at_or_below() {
        let mut index = OffsetIndex::new();
        index.append(10, 4096);
        index.append(20, 8192);
        assert_eq!(index.lookup(5).position, 0);
        assert_eq!(index.lookup(10).position, 4096);
        assert_eq!(index.lookup(19).position, 4096);
        assert_eq!(index.lookup(25).position, 8192);
    }

    #[test]
    fn persisted_index_loads_back_and_rejects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut index = OffsetIndex::new();
        index.append(10, 4096);
        index.persist(&path).unwrap();
        index.append(20, 8192);
        index.persist(&path).unwrap();
        let loaded = OffsetIndex::load(&path, 10_000).unwrap();
        assert_eq!(loaded.entries(), index.entries());
        // Past the log's end.
        assert!(matches!(OffsetIndex::load(&path, 5000), Err(IndexError::PastEnd { .. })));
        // A torn entry.
        std::fs::write(&path, [0u8; 12]).unwrap();
        assert!(matches!(OffsetIndex::load(&path, 10_000), Err(IndexError::PartialEntry { .. })));
        // Not increasing.
        let mut bad = Vec::new();
        for (o, p) in [(5u32, 100u32), (5, 200)] {
            bad.extend_from_slice(&o.to_be_bytes());
            bad.extend_from_slice(&p.to_be_bytes());
        }
        std::fs::write(&path, bad).unwrap();
        assert!(matches!(OffsetIndex::load(&path, 10_000), Err(IndexError::NotIncreasing { .. })));
    }

    #[test]
    fn truncation_rewrites_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut index = OffsetIndex::new();
        index.append(1, 100);
        index.append(2, 200);
        index.persist(&path).unwrap();
        index.truncate_to_position(200);
        index.append(3, 300);
        index.persist(&path).unwrap();
        let loaded = OffsetIndex::load(&path, 1000).unwrap();
        assert_eq!(loaded.entries().iter().map(|e| e.relative_offset).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn time_index_lookup_starts_before_the_first_candidate() {
        let mut index = TimeIndex::new();
        index.maybe_append(100, 0);
        index.maybe_append(90, 5); // not larger: skipped
        index.maybe_append(200, 10);
        assert_eq!(index.len(), 2);
        assert_eq!(index.lookup_before(100), None);
        assert_eq!(index.lookup_before(150).unwrap().relative_offset, 0);
        assert_eq!(index.lookup_before(201).unwrap().relative_offset, 10);
    }
}
