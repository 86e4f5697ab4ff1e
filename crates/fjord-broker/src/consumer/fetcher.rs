//! Turning fetched batches into records: skip what lies before the position, drop control
//! batches, and under `read_committed` drop the batches of aborted transactions, as Kafka's
//! consumer (`CompletedFetch`) does with the aborted-transaction list of the fetch.
//!
//! Records share the fetched bytes: keys, values and headers are `Bytes` slices of one buffer
//! per fetch (or per decompressed batch), so handing out a record costs a few reference-count
//! increments, not a copy.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use fjord_log::TopicPartition;
use fjord_log::producer_state::AbortedTxn;
use fjord_log::record::{
    BatchIter, Compression, ControlRecordType, EndTxnMarker, Headers, MAX_DECOMPRESSED_BATCH_BYTES,
    RecordBatch, RecordError, TimestampType, decompress,
};

/// A record handed to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: u32,
    /// The offset.
    pub offset: i64,
    /// The timestamp.
    pub timestamp: i64,
    /// Create time or log-append time.
    pub timestamp_type: TimestampType,
    /// The key.
    pub key: Option<Bytes>,
    /// The value (`None`: a tombstone).
    pub value: Option<Bytes>,
    headers: Bytes,
    header_count: u32,
}

impl ConsumerRecord {
    /// The record's headers, in order.
    pub fn headers(&self) -> Headers<'_> {
        Headers::from_raw(&self.headers, self.header_count as usize)
    }

    /// The topic-partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition::new(self.topic.clone(), self.partition)
    }
}

/// Fetched data of one partition not yet handed out.
#[derive(Debug)]
pub(crate) struct CompletedFetch {
    data: Bytes,
    /// Byte position of the next batch in `data`.
    position: usize,
    /// Aborted transactions not reached yet, by first offset.
    aborted: VecDeque<AbortedTxn>,
    /// Producers whose current transaction is aborted.
    aborted_producers: HashSet<i64>,
    read_committed: bool,
    /// Decoded records of the current batch not handed out yet.
    pending: VecDeque<ConsumerRecord>,
    /// Where the position goes once `pending` is handed out (the batch's next offset, which
    /// may lie past its last record after compaction).
    pending_end: i64,
}

/// Why fetched data could not be turned into records.
#[derive(Debug, thiserror::Error)]
#[error("corrupt fetched data for {partition} at offset {offset}: {source}")]
pub(crate) struct FetchDecodeError {
    pub(crate) partition: TopicPartition,
    pub(crate) offset: i64,
    #[source]
    pub(crate) source: RecordError,
}

impl CompletedFetch {
    pub(crate) fn new(data: Vec<u8>, mut aborted: Vec<AbortedTxn>, read_committed: bool) -> Self {
        aborted.sort_by_key(|t| t.first_offset);
        CompletedFetch {
            data: Bytes::from(data),
            position: 0,
            aborted: aborted.into(),
            aborted_producers: HashSet::new(),
            read_committed,
            pending: VecDeque::new(),
            pending_end: -1,
        }
    }

    /// Appends to `out` up to `max` records at or after `*position`, advancing `*position`
    /// past everything handed out or skipped (control batches, aborted transactions). Returns
    /// whether this fetch is used up.
    pub(crate) fn drain(
        &mut self,
        tp: &TopicPartition,
        position: &mut i64,
        max: usize,
        out: &mut Vec<ConsumerRecord>,
    ) -> Result<bool, FetchDecodeError> {
        let mut taken = 0;
        loop {
            while taken < max {
                let Some(record) = self.pending.pop_front() else { break };
                *position = record.offset + 1;
                out.push(record);
                taken += 1;
            }
            if !self.pending.is_empty() {
                return Ok(false);
            }
            *position = (*position).max(self.pending_end);
            if taken >= max {
                return Ok(self.position >= self.data.len());
            }
            if !self.decode_next_batch(tp, position)? {
                return Ok(true);
            }
        }
    }

    /// Decodes the next batch into `pending` (or skips it). Returns false at the end.
    fn decode_next_batch(
        &mut self,
        tp: &TopicPartition,
        position: &mut i64,
    ) -> Result<bool, FetchDecodeError> {
        let corrupt = |offset, source| FetchDecodeError { partition: tp.clone(), offset, source };
        let rest = &self.data[self.position..];
        if rest.is_empty() {
            return Ok(false);
        }
        let batch = match BatchIter::new(rest).next() {
            Some(Ok(batch)) => batch,
            // The log never returns a partial batch; a Kafka broker may, at the end of a fetch.
            Some(Err(RecordError::Truncated { .. })) | None => {
                self.position = self.data.len();
                return Ok(false);
            }
            Some(Err(source)) => return Err(corrupt(*position, source)),
        };
        let header = *batch.header();
        self.position += header.size_in_bytes();
        if header.next_offset() <= *position {
            return Ok(true);
        }
        if self.read_committed {
            while self.aborted.front().is_some_and(|t| t.first_offset <= header.last_offset()) {
                if let Some(txn) = self.aborted.pop_front() {
                    self.aborted_producers.insert(txn.producer_id);
                }
            }
        }
        let skip = if header.attributes.is_control() {
            if self.read_committed
                && control_marker(&batch).is_some_and(|m| m.kind == ControlRecordType::Abort)
            {
                self.aborted_producers.remove(&header.producer_id);
            }
            true
        } else {
            self.read_committed
                && header.attributes.is_transactional()
                && self.aborted_producers.contains(&header.producer_id)
        };
        if skip {
            *position = (*position).max(header.next_offset());
            return Ok(true);
        }
        let section = self.section_of(&batch).map_err(|e| corrupt(header.base_offset, e))?;
        let timestamp_type = header.attributes.timestamp_type();
        for record in batch.records_in(&section) {
            let record = record.map_err(|e| corrupt(header.base_offset, e))?;
            if record.offset < *position {
                continue;
            }
            self.pending.push_back(ConsumerRecord {
                topic: tp.topic.clone(),
                partition: tp.partition,
                offset: record.offset,
                timestamp: record.timestamp,
                timestamp_type,
                key: record.key.map(|k| section.slice_ref(k)),
                value: record.value.map(|v| section.slice_ref(v)),
                headers: if record.headers.is_empty() {
                    Bytes::new()
                } else {
                    section.slice_ref(record.headers.raw())
                },
                header_count: record.headers.len() as u32,
            });
        }
        self.pending_end = header.next_offset();
        Ok(true)
    }

    /// The uncompressed records section of a batch, as shared bytes.
    fn section_of(&self, batch: &RecordBatch<'_>) -> Result<Bytes, RecordError> {
        let codec = batch.compression()?;
        if codec == Compression::None {
            return Ok(self.data.slice_ref(batch.records_section()));
        }
        let mut out = Vec::new();
        decompress(codec, batch.records_section(), &mut out, MAX_DECOMPRESSED_BATCH_BYTES)?;
        Ok(Bytes::from(out))
    }
}

fn control_marker(batch: &RecordBatch<'_>) -> Option<EndTxnMarker> {
    let mut scratch = Vec::new();
    let record = batch.records(&mut scratch).ok()?.next()?.ok()?;
    EndTxnMarker::from_record(&record).ok()
}
