//! One segment of a partition: a `.log` file of record batches named by its base offset, with
//! its offset and time indexes (Kafka's `LogSegment`).
//!
//! A segment is only appended to while it is the active (last) segment. Reads go through
//! [`SegmentSlice`]: the partition locates the start position under its lock, then reads the
//! file with positioned reads and no lock held, so readers never wait for appenders.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::index::{IndexError, OffsetIndex, TimeIndex, TransactionIndex};
use crate::producer_state::AbortedTxn;
use crate::record::batch::{BatchHeader, RECORD_BATCH_OVERHEAD};
use crate::record::{RecordBatch, RecordError};

/// File name of a segment file: the base offset as 20 zero-padded digits plus `suffix`.
pub fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}{suffix}")
}

/// Parses a segment file name back into its base offset, if it has `suffix`.
pub fn parse_file_name(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Suffix of the log file.
pub const LOG_SUFFIX: &str = ".log";
/// Suffix of the offset index.
pub const INDEX_SUFFIX: &str = ".index";
/// Suffix of the time index.
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";
/// Suffix of the aborted-transaction index.
pub const TXN_INDEX_SUFFIX: &str = ".txnindex";

/// A batch found while scanning a segment file.
#[derive(Debug, Clone, Copy)]
pub struct ScannedBatch {
    /// Byte position of the batch in the file.
    pub position: u32,
    /// Its header.
    pub header: BatchHeader,
}

/// Where and why a scan of a segment stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTail {
    /// Byte position of the first byte that is not part of a valid batch.
    pub position: u32,
    /// Size of the file.
    pub file_size: u64,
    /// What was wrong there.
    pub reason: String,
}

/// One segment.
#[derive(Debug)]
pub struct LogSegment {
    base_offset: i64,
    dir: PathBuf,
    file: Arc<File>,
    size: u32,
    next_offset: i64,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    txn_index: TransactionIndex,
    bytes_since_last_index_entry: u32,
    max_timestamp: i64,
    offset_of_max_timestamp: i64,
    first_batch_timestamp: Option<i64>,
    created_at_ms: i64,
    index_interval_bytes: u32,
}

impl LogSegment {
    /// Creates an empty segment at `base_offset` in `dir`, replacing leftover files of that name.
    pub fn create(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> std::io::Result<Self> {
        let path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let file =
            OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&path)?;
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX] {
            remove_if_exists(&dir.join(file_name(base_offset, suffix)))?;
        }
        Ok(LogSegment {
            base_offset,
            dir: dir.to_path_buf(),
            file: Arc::new(file),
            size: 0,
            next_offset: base_offset,
            offset_index: OffsetIndex::new(),
            time_index: TimeIndex::new(),
            txn_index: TransactionIndex::new(),
            bytes_since_last_index_entry: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            first_batch_timestamp: None,
            created_at_ms: now_ms,
            index_interval_bytes,
        })
    }

    /// Opens an existing segment without scanning it: its indexes are loaded if they pass their
    /// sanity checks; if not, the error is returned beside the segment and the caller rebuilds
    /// them with [`Self::recover`]. Use [`Self::open_and_recover`] for segments that
    /// may hold unflushed data.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<(Self, Option<IndexError>), SegmentOpenError> {
        let mut segment = Self::open_file(dir, base_offset, index_interval_bytes, now_ms)?;
        let index_error = segment.load_indexes().err();
        Ok((segment, index_error))
    }

    fn open_file(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        now_ms: i64,
    ) -> Result<Self, SegmentOpenError> {
        let path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let io = |source| SegmentOpenError::Io { path: path.clone(), source };
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let size = u32::try_from(len)
            .map_err(|_| SegmentOpenError::TooLarge { path: path.clone(), len })?;
        Ok(LogSegment {
            base_offset,
            dir: dir.to_path_buf(),
            file: Arc::new(file),
            size,
            next_offset: base_offset,
            offset_index: OffsetIndex::new(),
            time_index: TimeIndex::new(),
            txn_index: TransactionIndex::new(),
            bytes_since_last_index_entry: 0,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            first_batch_timestamp: None,
            created_at_ms: now_ms,
            index_interval_bytes,
        })
    }

    /// Loads the index files and derives the segment's end offset and largest timestamp from
    /// them and the last batch. Fails if an index is missing or does not pass its checks.
    fn load_indexes(&mut self) -> Result<(), IndexError> {
        let offset_index = OffsetIndex::load(&self.index_path(), self.size as u64)?;
        // The last batch is found by walking forward from the last index entry.
        let start = offset_index.entries().last().map_or(0, |e| e.position);
        let mut last: Option<BatchHeader> = None;
        let mut position = start;
        let mut max_ts = -1i64;
        let mut max_ts_offset = self.base_offset;
        let mut first_ts = None;
        while position < self.size {
            let header = self
                .read_header(position)
                .map_err(|e| IndexError::Io(format!("reading batch at {position}: {e}")))?;
            if position == 0 {
                first_ts = Some(header.max_timestamp);
            }
            if header.max_timestamp > max_ts {
                max_ts = header.max_timestamp;
                max_ts_offset = header.base_offset;
            }
            position = position
                .checked_add(header.size_in_bytes() as u32)
                .filter(|&p| p <= self.size)
                .ok_or_else(|| IndexError::Io(format!("batch at {position} runs past the end")))?;
            last = Some(header);
        }
        let next_offset = last.map_or(self.base_offset, |h| h.next_offset());
        let time_index =
            TimeIndex::load(&self.time_index_path(), (next_offset - self.base_offset) as u64)?;
        if let Some(entry) = time_index.last()
            && entry.timestamp > max_ts
        {
            max_ts = entry.timestamp;
            max_ts_offset = self.base_offset + entry.relative_offset as i64;
        }
        if first_ts.is_none() && self.size > 0 {
            first_ts = Some(
                self.read_header(0)
                    .map_err(|e| IndexError::Io(format!("reading the first batch: {e}")))?
                    .max_timestamp,
            );
        }
        self.offset_index = offset_index;
        self.time_index = time_index;
        self.next_offset = next_offset;
        self.max_timestamp = max_ts;
        self.offset_of_max_timestamp = max_ts_offset;
        self.first_batch_timestamp = first_ts;
        self.bytes_since_last_index_entry = self.size - start;
        Ok(())
    }

    /// Opens a segment and validates every batch by CRC, rebuilding both indexes. Returns the
    /// segment (truncated to its valid prefix only if `truncate` is set) and the invalid tail, if
    /// one was found. `contiguous` asks for offsets without gaps, which holds for any segment
    /// compaction never rewrote, and catches a corrupt base offset (it sits outside the CRC).
    pub fn open_and_recover(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: u32,
        now_ms: i64,
        truncate: bool,
        contiguous: bool,
    ) -> Result<(Self, Option<InvalidTail>), SegmentOpenError> {
        let mut segment = Self::open_file(dir, base_offset, index_interval_bytes, now_ms)?;
        let tail = segment.recover(truncate, contiguous)?;
        Ok((segment, tail))
    }

    /// Rebuilds the indexes by scanning and validating every batch (see
    /// [`Self::open_and_recover`]).
    pub fn recover(
        &mut self,
        truncate: bool,
        contiguous: bool,
    ) -> Result<Option<InvalidTail>, SegmentOpenError> {
        self.offset_index = OffsetIndex::new();
        self.time_index = TimeIndex::new();
        self.bytes_since_last_index_entry = 0;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = self.base_offset;
        self.first_batch_timestamp = None;
        self.next_offset = self.base_offset;
        let file_size = self.size;
        let mut valid_end = 0u32;
        let mut invalid = None;
        let file = self.file.clone();
        let result = scan_file(&file, 0, file_size, self.base_offset, contiguous, |scanned, _| {
            self.index_batch(scanned.position, &scanned.header);
            valid_end = scanned.position + scanned.header.size_in_bytes() as u32;
        });
        match result {
            Ok(()) => {}
            Err(ScanError::Io(source)) => {
                // Never truncate on a read error: the data may be fine.
                return Err(SegmentOpenError::Io { path: self.log_path(), source });
            }
            Err(ScanError::Invalid(e)) => {
                invalid = Some(InvalidTail {
                    position: valid_end,
                    file_size: file_size as u64,
                    reason: e.to_string(),
                });
            }
        }
        // Without `truncate` the invalid bytes stay where they are and stay readable: a read
        // that reaches them fails its CRC check and reports the corruption instead of skipping
        // it.
        if invalid.is_some() && truncate {
            self.file
                .set_len(valid_end as u64)
                .map_err(|source| SegmentOpenError::Io { path: self.log_path(), source })?;
            self.size = valid_end;
        }
        // Only the indexes rebuilt here: the transaction index is not loaded yet and writing it
        // would wipe it.
        self.offset_index
            .persist(&self.index_path())
            .and_then(|()| self.time_index.persist(&self.time_index_path()))
            .map_err(|source| SegmentOpenError::Io { path: self.index_path(), source })?;
        Ok(invalid)
    }

    /// Updates the indexes and timestamps for a batch stored at `position`.
    fn index_batch(&mut self, position: u32, header: &BatchHeader) {
        if self.first_batch_timestamp.is_none() {
            self.first_batch_timestamp = Some(header.max_timestamp);
        }
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if self.bytes_since_last_index_entry > self.index_interval_bytes {
            self.offset_index.append(self.relative(header.base_offset), position);
            self.time_index
                .maybe_append(self.max_timestamp, self.relative(self.offset_of_max_timestamp));
            self.bytes_since_last_index_entry = 0;
        }
        self.bytes_since_last_index_entry += header.size_in_bytes() as u32;
        self.next_offset = header.next_offset();
    }

    fn relative(&self, offset: i64) -> u32 {
        (offset - self.base_offset) as u32
    }

    /// Appends validated batches with assigned offsets. `headers` describes each batch of
    /// `batches` in order. The bytes are in the page cache when this returns, not yet on disk:
    /// see [`Self::flush`].
    pub fn append(&mut self, batches: &[u8], headers: &[BatchHeader]) -> std::io::Result<()> {
        self.file.write_all_at(batches, self.size as u64)?;
        let mut position = self.size;
        for header in headers {
            self.index_batch(position, header);
            position += header.size_in_bytes() as u32;
        }
        debug_assert_eq!(position as usize, self.size as usize + batches.len());
        self.size = position;
        Ok(())
    }

    /// Whether appending `incoming` bytes whose batches end at `last_offset`, with
    /// `max_timestamp`, needs a new segment first (Kafka's `shouldRoll`).
    pub fn should_roll(&self, roll: &RollCheck) -> bool {
        if self.size == 0 {
            return false;
        }
        let time_waited = match self.first_batch_timestamp {
            Some(first) if first >= 0 && roll.max_timestamp >= 0 => {
                roll.max_timestamp.saturating_sub(first)
            }
            _ => roll.now_ms - self.created_at_ms,
        };
        self.size as u64 + roll.incoming_bytes as u64 > roll.segment_bytes as u64
            || time_waited > roll.segment_ms
            || (self.offset_index.len() + 1) * 8 > roll.segment_index_bytes as usize
            || (self.time_index.len() + 1) * 12 > roll.segment_index_bytes as usize
            || roll.last_offset - self.base_offset > u32::MAX as i64
    }

    /// Finds where to start reading for `offset`: the position of the last indexed batch at or
    /// before it. The returned slice is a snapshot; reading it needs no lock.
    pub fn slice_from(&self, offset: i64) -> SegmentSlice {
        let relative = offset.saturating_sub(self.base_offset).clamp(0, u32::MAX as i64) as u32;
        SegmentSlice {
            file: self.file.clone(),
            path: self.log_path(),
            start: self.offset_index.lookup(relative).position,
            end: self.size,
        }
    }

    /// A slice of the whole segment.
    pub fn slice_all(&self) -> SegmentSlice {
        SegmentSlice { file: self.file.clone(), path: self.log_path(), start: 0, end: self.size }
    }

    /// Where the scan for the first record at or after `timestamp` may start: a lower bound
    /// offset in this segment.
    pub fn time_lookup_start(&self, timestamp: i64) -> i64 {
        self.time_index
            .lookup_before(timestamp)
            .map_or(self.base_offset, |e| self.base_offset + e.relative_offset as i64)
    }

    /// Writes the file's data to disk (`fdatasync`) and the indexes to their files.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.persist_indexes()?;
        sync_if_exists(&self.txn_index_path())
    }

    /// Writes the indexes to their files. The offset and time indexes need no fsync (they are
    /// rebuilt when found wrong); the transaction index is fsynced by [`Self::flush`] with the
    /// log, since it is rebuilt only by a producer state replay.
    pub fn persist_indexes(&mut self) -> std::io::Result<()> {
        self.offset_index.persist(&self.index_path())?;
        self.time_index.persist(&self.time_index_path())?;
        self.txn_index.persist(&self.txn_index_path())
    }

    /// Loads the `.txnindex` file (a missing file is an empty index).
    pub fn load_txn_index(&mut self) -> Result<(), IndexError> {
        self.txn_index = TransactionIndex::load(&self.txn_index_path())?;
        Ok(())
    }

    /// Records an aborted transaction whose marker is in this segment.
    pub fn append_aborted_txn(&mut self, txn: AbortedTxn) {
        self.txn_index.append(txn);
    }

    /// The aborted transactions whose markers are in this segment.
    pub fn aborted_txns(&self) -> &[AbortedTxn] {
        self.txn_index.entries()
    }

    /// Drops transaction index entries whose marker is at or after `offset`, before a producer
    /// state replay regenerates them.
    pub fn truncate_txn_index(&mut self, offset: i64) {
        self.txn_index.truncate_to_offset(offset);
    }

    /// Removes everything at or after `offset` from this segment. Returns the number of bytes
    /// removed.
    pub fn truncate_to(&mut self, offset: i64) -> Result<u32, SegmentOpenError> {
        if offset >= self.next_offset {
            return Ok(0);
        }
        // Find the first batch that ends at or after `offset`... batches are atomic, so cut at
        // the first batch whose base offset is at or after it.
        let mut cut = self.size;
        let start = self.slice_from(offset).start;
        let mut position = start;
        while position < self.size {
            let header = self.read_header(position).map_err(|e| SegmentOpenError::Io {
                path: self.log_path(),
                source: std::io::Error::other(e.to_string()),
            })?;
            if header.base_offset >= offset {
                cut = position;
                break;
            }
            position += header.size_in_bytes() as u32;
        }
        let removed = self.size - cut;
        self.file
            .set_len(cut as u64)
            .map_err(|source| SegmentOpenError::Io { path: self.log_path(), source })?;
        self.size = cut;
        // Indexes and timestamps are cheapest to get right by a rescan of what is left.
        self.recover(false, false)?;
        Ok(removed)
    }

    fn read_header(&self, position: u32) -> Result<BatchHeader, RecordError> {
        let mut buf = [0u8; RECORD_BATCH_OVERHEAD];
        let available = (self.size - position) as usize;
        if available < RECORD_BATCH_OVERHEAD {
            return Err(RecordError::Truncated { needed: RECORD_BATCH_OVERHEAD, available });
        }
        self.file.read_exact_at(&mut buf, position as u64).map_err(|e| RecordError::Truncated {
            needed: RECORD_BATCH_OVERHEAD,
            available: if e.kind() == std::io::ErrorKind::UnexpectedEof { 0 } else { available },
        })?;
        BatchHeader::parse(&buf)
    }

    /// First offset of the segment.
    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    /// Offset after the last batch (the base offset if empty).
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Bytes in the log file.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Largest timestamp in the segment, -1 if it has none.
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    /// Base offset of the batch holding the largest timestamp.
    pub fn offset_of_max_timestamp(&self) -> i64 {
        self.offset_of_max_timestamp
    }

    /// Path of the `.log` file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join(file_name(self.base_offset, LOG_SUFFIX))
    }

    /// Path of the `.index` file.
    pub fn index_path(&self) -> PathBuf {
        self.dir.join(file_name(self.base_offset, INDEX_SUFFIX))
    }

    /// Path of the `.timeindex` file.
    pub fn time_index_path(&self) -> PathBuf {
        self.dir.join(file_name(self.base_offset, TIME_INDEX_SUFFIX))
    }

    /// Path of the `.txnindex` file.
    pub fn txn_index_path(&self) -> PathBuf {
        self.dir.join(file_name(self.base_offset, TXN_INDEX_SUFFIX))
    }

    /// Scans and validates every batch of the segment in order (see [`scan_file`]).
    pub fn scan(&self, f: impl FnMut(&ScannedBatch, &[u8])) -> Result<(), ScanError> {
        scan_file(&self.file, 0, self.size, self.base_offset, false, f)
    }

    /// A handle on the log file for an fsync without the partition lock.
    pub fn file_handle(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Deletes the segment's files. Readers holding a [`SegmentSlice`] keep reading the
    /// unlinked file until they drop it.
    pub fn delete_files(&self) -> std::io::Result<()> {
        for path in
            [self.log_path(), self.index_path(), self.time_index_path(), self.txn_index_path()]
        {
            remove_if_exists(&path)?;
        }
        Ok(())
    }
}

/// What [`LogSegment::should_roll`] needs to know about an append.
#[derive(Debug, Clone, Copy)]
pub struct RollCheck {
    /// Size of the batches about to be appended.
    pub incoming_bytes: usize,
    /// Their last offset.
    pub last_offset: i64,
    /// Their largest timestamp.
    pub max_timestamp: i64,
    /// Wall-clock time now.
    pub now_ms: i64,
    /// `segment.bytes`.
    pub segment_bytes: u32,
    /// `segment.ms`.
    pub segment_ms: i64,
    /// `segment.index.bytes`.
    pub segment_index_bytes: u32,
}

/// A segment file opened failed.
#[derive(Debug, thiserror::Error)]
pub enum SegmentOpenError {
    /// An I/O error on the named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A segment larger than 4 GiB cannot be addressed by the 32-bit index positions.
    #[error("{path}: {len} bytes is more than a segment can hold (4 GiB)")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
}

/// A snapshot of a readable range of one segment file.
#[derive(Debug, Clone)]
pub struct SegmentSlice {
    file: Arc<File>,
    path: PathBuf,
    /// First byte to read.
    pub start: u32,
    /// End of the readable data when the snapshot was taken.
    pub end: u32,
}

/// Why reading a slice failed.
#[derive(Debug, thiserror::Error)]
pub enum SliceReadError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The batch at the start of the read is corrupt.
    #[error("{path}: corrupt batch at position {position}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte position of the corrupt batch.
        position: u32,
        /// What is wrong.
        #[source]
        source: RecordError,
    },
}

/// Batches read from a segment.
#[derive(Debug, Default)]
pub struct SliceRead {
    /// Whole batches, back to back, exactly as stored.
    pub bytes: Vec<u8>,
    /// Offset after the last batch returned.
    pub next_offset: Option<i64>,
    /// Whether the read stopped before `max_offset`/the slice end because of `max_bytes`.
    pub hit_max_bytes: bool,
}

impl SegmentSlice {
    /// The segment file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole slice as it is (no validation; callers parse and check batches).
    pub fn read_all(&self) -> Result<Vec<u8>, SliceReadError> {
        let mut bytes = vec![0u8; (self.end - self.start) as usize];
        self.file
            .read_exact_at(&mut bytes, self.start as u64)
            .map_err(|source| SliceReadError::Io { path: self.path.clone(), source })?;
        Ok(bytes)
    }

    /// Reads whole batches that end after `offset`, starting with the one containing it, up to
    /// `max_bytes` (at least one batch, however large, as Kafka does since KIP-74) and not
    /// including any batch at or past `max_offset`. Every returned batch passed its CRC check;
    /// a corrupt first batch is an error, and a later corrupt batch ends the read before it.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<SliceRead, SliceReadError> {
        let io = |source| SliceReadError::Io { path: self.path.clone(), source };
        let corrupt = |position, source| SliceReadError::Corrupt {
            path: self.path.clone(),
            position,
            source,
        };
        // Skip batches that end before `offset`, reading only their headers.
        let mut position = self.start;
        let mut header_buf = [0u8; RECORD_BATCH_OVERHEAD];
        let first = loop {
            if position as usize + RECORD_BATCH_OVERHEAD > self.end as usize {
                return Ok(SliceRead::default());
            }
            self.file.read_exact_at(&mut header_buf, position as u64).map_err(io)?;
            let header = BatchHeader::parse(&header_buf).map_err(|e| corrupt(position, e))?;
            if header.base_offset >= max_offset {
                return Ok(SliceRead::default());
            }
            if header.last_offset() >= offset {
                break header;
            }
            position += header.size_in_bytes() as u32;
        };
        let available = (self.end - position) as usize;
        let first_size = first.size_in_bytes();
        if first_size > available {
            return Err(corrupt(
                position,
                RecordError::Truncated { needed: first_size, available },
            ));
        }
        let want = max_bytes.max(first_size).min(available);
        let mut bytes = vec![0u8; want];
        self.file.read_exact_at(&mut bytes, position as u64).map_err(io)?;
        // Keep whole, valid batches below max_offset.
        let mut keep = 0usize;
        let mut next_offset = None;
        let mut hit_max_bytes = false;
        while keep < bytes.len() {
            let rest = &bytes[keep..];
            let header = match BatchHeader::parse(rest) {
                Ok(h) => h,
                Err(RecordError::Truncated { .. }) if keep > 0 => {
                    hit_max_bytes = true;
                    break;
                }
                Err(e) => return Err(corrupt(position + keep as u32, e)),
            };
            if header.base_offset >= max_offset {
                break;
            }
            let size = header.size_in_bytes();
            if size > rest.len() {
                hit_max_bytes = true;
                break;
            }
            let batch_position = position + keep as u32;
            let batch =
                RecordBatch::parse(&rest[..size]).map_err(|e| corrupt(batch_position, e))?;
            if let Err(e) = batch.validate_crc() {
                if keep == 0 {
                    return Err(corrupt(batch_position, e));
                }
                break;
            }
            keep += size;
            next_offset = Some(header.next_offset());
        }
        bytes.truncate(keep);
        Ok(SliceRead { bytes, next_offset, hit_max_bytes })
    }
}

/// Why [`scan_file`] stopped.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The file could not be read: nothing may be concluded about its contents.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The bytes at the scan position are not a valid batch.
    #[error("{0}")]
    Invalid(#[from] RecordError),
}

/// Scans `[start, end)` of a segment file batch by batch in large sequential reads, validating
/// each batch's framing and CRC and that offsets increase from `base_offset` (without gaps if
/// `contiguous`). Calls `f` for every valid batch; stops at the first invalid one with its error.
pub fn scan_file(
    file: &File,
    start: u32,
    end: u32,
    base_offset: i64,
    contiguous: bool,
    mut f: impl FnMut(&ScannedBatch, &[u8]),
) -> Result<(), ScanError> {
    let mut reader = ChunkReader { file, buf: Vec::new(), buf_start: start, end };
    let mut position = start;
    let mut expected_min_offset = base_offset;
    while position < end {
        let header = BatchHeader::parse(reader.get(position, RECORD_BATCH_OVERHEAD)?)?;
        let size = header.size_in_bytes();
        let bytes = reader.get(position, size)?;
        let batch = RecordBatch::parse(bytes)?;
        batch.validate_crc()?;
        let out_of_order = if contiguous {
            header.base_offset != expected_min_offset
        } else {
            header.base_offset < expected_min_offset
        };
        if out_of_order {
            return Err(RecordError::NonSequentialOffsets {
                expected: expected_min_offset,
                found: header.base_offset,
            }
            .into());
        }
        expected_min_offset = header.next_offset();
        f(&ScannedBatch { position, header }, bytes);
        position += size as u32;
    }
    Ok(())
}

/// Sequential reads of a file range in 1 MiB chunks, handing out slices that may straddle them.
struct ChunkReader<'f> {
    file: &'f File,
    buf: Vec<u8>,
    buf_start: u32,
    end: u32,
}

impl ChunkReader<'_> {
    const CHUNK: usize = 1 << 20;

    fn get(&mut self, position: u32, len: usize) -> Result<&[u8], ScanError> {
        let available = (self.end - position) as usize;
        if len > available {
            return Err(RecordError::Truncated { needed: len, available }.into());
        }
        let offset = (position - self.buf_start) as usize;
        if self.buf.len() < offset + len {
            self.buf.drain(..offset.min(self.buf.len()));
            self.buf_start = position;
            let have = self.buf.len();
            self.buf.resize(len.max(Self::CHUNK).min(available), 0);
            self.file.read_exact_at(&mut self.buf[have..], position as u64 + have as u64)?;
        }
        let offset = (position - self.buf_start) as usize;
        Ok(&self.buf[offset..offset + len])
    }
}

/// Fsyncs a file if it exists.
pub fn sync_if_exists(path: &Path) -> std::io::Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_data(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn remove_if_exists(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
