//! Borrowed views over stored batches and their records.
//!
//! Nothing here allocates per record: keys, values and headers are slices of the batch (or of
//! one caller-provided scratch buffer when the batch is compressed), so a consumer can walk a
//! fetched batch of a thousand records without a thousand allocations.

use super::batch::{BatchHeader, RECORD_BATCH_OVERHEAD, validate_crc};
use super::varint::Reader;
use super::{Compression, RecordError, TimestampType, decompress};

/// Largest decompressed size of one batch's records that Fjord will materialise.
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize = 256 * 1024 * 1024;

/// One complete batch, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct RecordBatch<'a> {
    bytes: &'a [u8],
    header: BatchHeader,
}

impl<'a> RecordBatch<'a> {
    /// Parses the header of a buffer that holds exactly one batch. Does not check the CRC.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, RecordError> {
        let header = BatchHeader::parse(bytes)?;
        let size = header.size_in_bytes();
        if bytes.len() < size {
            return Err(RecordError::Truncated { needed: size, available: bytes.len() });
        }
        if bytes.len() > size {
            return Err(RecordError::TrailingBytes { batch_size: size, buffer: bytes.len() });
        }
        Ok(RecordBatch { bytes, header })
    }

    /// The decoded header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The batch exactly as stored.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Checks the stored CRC-32C against the batch contents.
    pub fn validate_crc(&self) -> Result<(), RecordError> {
        validate_crc(self.bytes, &self.header)
    }

    /// The compression codec of the records section.
    pub fn compression(&self) -> Result<Compression, RecordError> {
        self.header.attributes.compression()
    }

    /// The records section as stored (compressed when the batch is).
    pub fn records_section(&self) -> &'a [u8] {
        &self.bytes[RECORD_BATCH_OVERHEAD..]
    }

    /// Iterates the records. A compressed batch is decompressed into `scratch` (cleared first),
    /// so reusing one scratch buffer across batches avoids an allocation per batch.
    pub fn records<'s>(&self, scratch: &'s mut Vec<u8>) -> Result<Records<'s>, RecordError>
    where
        'a: 's,
    {
        let codec = self.compression()?;
        if codec == Compression::None {
            return Ok(self.records_in(self.records_section()));
        }
        scratch.clear();
        decompress(codec, self.records_section(), scratch, MAX_DECOMPRESSED_BATCH_BYTES)?;
        Ok(self.records_in(scratch.as_slice()))
    }

    /// Iterates the records of an uncompressed records section: the batch's own for an
    /// uncompressed batch, or what [`decompress`] made of [`Self::records_section`]. For readers
    /// that keep the decompressed bytes themselves (to hand out slices of them).
    pub fn records_in<'s>(&self, section: &'s [u8]) -> Records<'s> {
        let log_append_time = match self.header.attributes.timestamp_type() {
            TimestampType::LogAppendTime => Some(self.header.max_timestamp),
            TimestampType::CreateTime => None,
        };
        Records {
            reader: Reader::new(section),
            remaining: self.header.records_count,
            base_offset: self.header.base_offset,
            base_timestamp: self.header.base_timestamp,
            log_append_time,
            failed: false,
        }
    }

    /// Walks every record and checks the framing the log relies on: a positive `recordsCount`
    /// equal to `lastOffsetDelta + 1` (checked from the header first, as Kafka's broker does),
    /// then offset deltas `0, 1, ...` in order and exactly `recordsCount` records. Kafka's broker
    /// makes the same checks on produce (`LogValidator`) so that a bad client cannot store a
    /// batch readers choke on.
    pub fn validate_records(&self, scratch: &mut Vec<u8>) -> Result<(), RecordError> {
        let header = self.header;
        if header.records_count <= 0
            || header.records_count as i64 != header.last_offset_delta as i64 + 1
        {
            return Err(RecordError::InvalidRecordCount {
                records_count: header.records_count,
                last_offset_delta: header.last_offset_delta,
            });
        }
        // The iterator yields exactly `records_count` records or fails, so sequential deltas
        // from 0 also end at `lastOffsetDelta`.
        for (expected, record) in (0i64..).zip(self.records(scratch)?) {
            let found = record?.offset.wrapping_sub(header.base_offset);
            if found != expected {
                return Err(RecordError::NonSequentialOffsets { expected, found });
            }
        }
        Ok(())
    }
}

/// Iterator over the records of one batch.
#[derive(Debug)]
pub struct Records<'s> {
    reader: Reader<'s>,
    remaining: i32,
    base_offset: i64,
    base_timestamp: i64,
    log_append_time: Option<i64>,
    failed: bool,
}

impl<'s> Records<'s> {
    fn decode_one(&mut self) -> Result<Record<'s>, RecordError> {
        let length = self.reader.varint()?;
        if length < 0 {
            return Err(RecordError::MalformedRecord("negative record length"));
        }
        let body = self.reader.bytes(length as usize)?;
        let mut r = Reader::new(body);
        let _attributes = r.i8()?;
        let timestamp_delta = r.varlong()?;
        let offset_delta = r.varint()?;
        let key = r.nullable_bytes()?;
        let value = r.nullable_bytes()?;
        let header_count = r.varint()?;
        if header_count < 0 {
            return Err(RecordError::MalformedRecord("negative header count"));
        }
        let headers_start = r.position();
        for _ in 0..header_count {
            let key_len = r.varint()?;
            if key_len < 0 {
                return Err(RecordError::MalformedRecord("null header key"));
            }
            std::str::from_utf8(r.bytes(key_len as usize)?)
                .map_err(|_| RecordError::MalformedRecord("header key is not UTF-8"))?;
            r.nullable_bytes()?;
        }
        if r.remaining() != 0 {
            return Err(RecordError::MalformedRecord("record length does not match its fields"));
        }
        Ok(Record {
            offset: self.base_offset.wrapping_add(offset_delta as i64),
            timestamp: self
                .log_append_time
                .unwrap_or(self.base_timestamp.wrapping_add(timestamp_delta)),
            key,
            value,
            headers: Headers { raw: &body[headers_start..], count: header_count as usize },
        })
    }
}

impl<'s> Iterator for Records<'s> {
    type Item = Result<Record<'s>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.remaining <= 0 {
            if self.reader.remaining() != 0 {
                self.failed = true;
                return Some(Err(RecordError::MalformedRecord(
                    "bytes left after the batch's last record",
                )));
            }
            return None;
        }
        self.remaining -= 1;
        let result = self.decode_one();
        self.failed = result.is_err();
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining.max(0) as usize;
        (n, Some(n + 1))
    }
}

/// One record, borrowed from its batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'s> {
    /// Absolute offset in the partition.
    pub offset: i64,
    /// Create time, or the batch's log-append time.
    pub timestamp: i64,
    /// The key, `None` for a null key.
    pub key: Option<&'s [u8]>,
    /// The value, `None` for a null value (a tombstone in a compacted topic).
    pub value: Option<&'s [u8]>,
    /// The headers, in the order the producer wrote them (keys may repeat).
    pub headers: Headers<'s>,
}

/// One record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Header key (UTF-8, as Kafka requires).
    pub key: &'a str,
    /// Header value; `None` for a null value.
    pub value: Option<&'a [u8]>,
}

/// The headers of one record, validated when the record was decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers<'s> {
    raw: &'s [u8],
    count: usize,
}

impl<'s> Headers<'s> {
    /// Headers from the raw header bytes of a record (as [`Self::raw`] gave them) and their
    /// count. Iteration stops early at a malformed header, so bytes that were not validated by
    /// the record decoder cannot cause more than a short iteration.
    pub fn from_raw(raw: &'s [u8], count: usize) -> Self {
        Headers { raw, count }
    }

    /// The encoded headers, for readers that keep them as bytes.
    pub fn raw(&self) -> &'s [u8] {
        self.raw
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the record has no headers.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The headers in order.
    pub fn iter(&self) -> HeaderIter<'s> {
        HeaderIter { reader: Reader::new(self.raw), remaining: self.count }
    }
}

impl<'s> IntoIterator for Headers<'s> {
    type Item = Header<'s>;
    type IntoIter = HeaderIter<'s>;

    fn into_iter(self) -> HeaderIter<'s> {
        self.iter()
    }
}

/// Iterator over validated headers.
#[derive(Debug, Clone)]
pub struct HeaderIter<'s> {
    reader: Reader<'s>,
    remaining: usize,
}

impl<'s> Iterator for HeaderIter<'s> {
    type Item = Header<'s>;

    fn next(&mut self) -> Option<Header<'s>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // The record decoder validated these bytes; a failure here cannot happen, and ending the
        // iteration is the only sensible answer if it did.
        let key = self.reader.nullable_bytes().ok()??;
        let key = std::str::from_utf8(key).ok()?;
        let value = self.reader.nullable_bytes().ok()?;
        Some(Header { key, value })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

/// Iterator over the batches of a buffer of concatenated batches (a segment slice or a fetch
/// response). A trailing partial batch yields one [`RecordError::Truncated`], which a fetch
/// consumer may ignore (Kafka brokers may return one) and a produce request must reject.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> BatchIter<'a> {
    /// Iterates the batches in `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        BatchIter { buf, pos: 0, done: false }
    }

    /// Byte position of the next batch in the buffer.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<RecordBatch<'a>, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let result = BatchHeader::parse(rest).and_then(|header| {
            let size = header.size_in_bytes();
            if rest.len() < size {
                Err(RecordError::Truncated { needed: size, available: rest.len() })
            } else {
                Ok(RecordBatch { bytes: &rest[..size], header })
            }
        });
        match &result {
            Ok(batch) => self.pos += batch.bytes.len(),
            Err(_) => self.done = true,
        }
        Some(result)
    }
}
