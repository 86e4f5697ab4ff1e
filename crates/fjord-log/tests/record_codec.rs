//! The RecordBatch v2 codec (`fjord_log::record`) through its public API: arbitrary batches
//! round-trip field by field, the `kafka-protocol` crate reads what we write and we read what it
//! writes, one encoding is pinned byte for byte, corruption and bad framing are caught without
//! panics, and the in-place edits the log makes on append keep batches valid.

// Helpers shared by the tests unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use fjord_log::record::batch::{
    self, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
    RECORD_BATCH_OVERHEAD, compute_crc,
};
use fjord_log::record::{
    Attributes, BatchHeader, BatchIter, BatchOptions, Compression, Header, Record, RecordBatch,
    RecordBatchBuilder, RecordError, TimestampType, compress, decompress,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records as kp;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;

// ---------------------------------------------------------------------------------------------
// Owned test records and helpers
// ---------------------------------------------------------------------------------------------

/// One record as the tests generate and compare it (owned, unlike the codec's borrowed views).
#[derive(Debug, Clone, PartialEq, Eq)]
struct TestRecord {
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A decoded record with its absolute offset.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decoded {
    offset: i64,
    record: TestRecord,
}

impl TestRecord {
    fn new(timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Self {
        TestRecord {
            timestamp,
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: Vec::new(),
        }
    }

    fn header(mut self, key: &str, value: Option<&[u8]>) -> Self {
        self.headers.push((key.to_string(), value.map(<[u8]>::to_vec)));
        self
    }

    fn borrowed_headers(&self) -> Vec<Header<'_>> {
        self.headers.iter().map(|(key, value)| Header { key, value: value.as_deref() }).collect()
    }
}

fn owned(record: Record<'_>) -> Decoded {
    Decoded {
        offset: record.offset,
        record: TestRecord {
            timestamp: record.timestamp,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            headers: record
                .headers
                .iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect(),
        },
    }
}

fn append_all(builder: &mut RecordBatchBuilder, records: &[TestRecord]) {
    for r in records {
        builder.append(r.timestamp, r.key.as_deref(), r.value.as_deref(), &r.borrowed_headers());
    }
}

fn build(options: BatchOptions, records: &[TestRecord]) -> Vec<u8> {
    let mut builder = RecordBatchBuilder::new(options);
    append_all(&mut builder, records);
    builder.build().unwrap()
}

/// Decodes every record of a batch that must be valid.
fn decode(batch: &RecordBatch<'_>) -> Vec<Decoded> {
    let mut scratch = Vec::new();
    batch.records(&mut scratch).unwrap().map(|r| owned(r.unwrap())).collect()
}

/// What decoding `records` built at `base_offset` must give.
fn expected(
    base_offset: i64,
    records: &[TestRecord],
    log_append_time: Option<i64>,
) -> Vec<Decoded> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| Decoded {
            offset: base_offset + i as i64,
            record: TestRecord { timestamp: log_append_time.unwrap_or(r.timestamp), ..r.clone() },
        })
        .collect()
}

/// A few records with duplicate header keys, null fields and out-of-order timestamps.
fn sample_records() -> Vec<TestRecord> {
    vec![
        TestRecord::new(1_000, Some(b"k0"), Some(b"hello")).header("h", Some(b"1")),
        TestRecord::new(900, None, Some(b"no key")).header("h", Some(b"2")).header("h", None),
        TestRecord::new(5_000, Some(b"k2"), None),
        TestRecord::new(1_000, Some(b""), Some(&[0xff; 200])).header("", Some(b"")),
        TestRecord::new(4_000, Some(b"k4"), Some(b"last")).header("trace-id", Some(b"abc")),
    ]
}

fn sample_batch(compression: Compression) -> Vec<u8> {
    build(
        BatchOptions { compression, base_offset: 100, ..BatchOptions::default() },
        &sample_records(),
    )
}

fn kp_compression(codec: Compression) -> kp::Compression {
    match codec {
        Compression::None => kp::Compression::None,
        Compression::Gzip => kp::Compression::Gzip,
        Compression::Snappy => kp::Compression::Snappy,
        Compression::Lz4 => kp::Compression::Lz4,
        Compression::Zstd => kp::Compression::Zstd,
    }
}

fn proptest_config(cases: u32) -> Config {
    // No regression files in the source tree; a failure prints its minimal input.
    Config { cases, failure_persistence: None, ..Config::default() }
}

// ---------------------------------------------------------------------------------------------
// An independent encoder for hand-built batches (zig-zag varints, header layout of batch.rs)
// ---------------------------------------------------------------------------------------------

fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varlong(out, -1),
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
    }
}

/// One encoded record: length, attributes, deltas, key, value, headers.
fn raw_record(timestamp_delta: i64, offset_delta: i32, r: &TestRecord) -> Vec<u8> {
    let mut body = vec![0u8];
    put_varlong(&mut body, timestamp_delta);
    put_varlong(&mut body, offset_delta as i64);
    put_bytes(&mut body, r.key.as_deref());
    put_bytes(&mut body, r.value.as_deref());
    put_varlong(&mut body, r.headers.len() as i64);
    for (key, value) in &r.headers {
        put_bytes(&mut body, Some(key.as_bytes()));
        put_bytes(&mut body, value.as_deref());
    }
    let mut out = Vec::new();
    put_varlong(&mut out, body.len() as i64);
    out.extend_from_slice(&body);
    out
}

/// Header fields of a hand-built batch.
#[derive(Debug, Clone, Copy)]
struct RawHeader {
    base_offset: i64,
    attributes: i16,
    last_offset_delta: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    records_count: i32,
}

impl RawHeader {
    fn new(records_count: i32, last_offset_delta: i32) -> Self {
        RawHeader {
            base_offset: 0,
            attributes: 0,
            last_offset_delta,
            base_timestamp: 0,
            max_timestamp: 0,
            records_count,
        }
    }
}

/// A batch with the given header and records section, carrying a correct CRC.
fn assemble(h: RawHeader, section: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&h.base_offset.to_be_bytes());
    out.extend_from_slice(&((RECORD_BATCH_OVERHEAD - 12 + section.len()) as i32).to_be_bytes());
    out.extend_from_slice(&NO_PARTITION_LEADER_EPOCH.to_be_bytes());
    out.push(2);
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&h.attributes.to_be_bytes());
    out.extend_from_slice(&h.last_offset_delta.to_be_bytes());
    out.extend_from_slice(&h.base_timestamp.to_be_bytes());
    out.extend_from_slice(&h.max_timestamp.to_be_bytes());
    out.extend_from_slice(&NO_PRODUCER_ID.to_be_bytes());
    out.extend_from_slice(&NO_PRODUCER_EPOCH.to_be_bytes());
    out.extend_from_slice(&NO_SEQUENCE.to_be_bytes());
    out.extend_from_slice(&h.records_count.to_be_bytes());
    assert_eq!(out.len(), RECORD_BATCH_OVERHEAD);
    out.extend_from_slice(section);
    let crc = compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Records section with the given offset deltas (timestamps all at the base).
fn section_with_deltas(deltas: &[i32]) -> Vec<u8> {
    let record = TestRecord::new(0, Some(b"key"), Some(b"value")).header("h", Some(b"v"));
    deltas.iter().flat_map(|&d| raw_record(0, d, &record)).collect()
}

/// Bitwise CRC-32C (Castagnoli, reflected), independent of the `crc32c` crate the codec uses.
fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

fn codec() -> impl Strategy<Value = Compression> {
    prop::sample::select(Compression::ALL.to_vec())
}

fn nullable_bytes(max: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
    prop::option::of(vec(any::<u8>(), 0..max))
}

/// Header keys: a few common ones (so keys repeat within a record) and arbitrary UTF-8.
fn header_key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["a", "b", "trace-id", ""]).prop_map(String::from),
        2 => "(?s).{0,12}",
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, Option<Vec<u8>>)>> {
    vec((header_key(), nullable_bytes(40)), 0..4)
}

/// Headers whose keys are unique within the record (kafka-protocol keeps them in a map).
fn unique_headers() -> impl Strategy<Value = Vec<(String, Option<Vec<u8>>)>> {
    headers().prop_map(|mut headers| {
        let mut seen = std::collections::HashSet::new();
        headers.retain(|(key, _)| seen.insert(key.clone()));
        headers
    })
}

fn record_with(
    headers: impl Strategy<Value = Vec<(String, Option<Vec<u8>>)>>,
) -> impl Strategy<Value = TestRecord> {
    (0..1i64 << 45, nullable_bytes(300), nullable_bytes(300), headers)
        .prop_map(|(timestamp, key, value, headers)| TestRecord { timestamp, key, value, headers })
}

/// Producer id, epoch and base sequence: none, or an idempotent producer's.
fn producer() -> impl Strategy<Value = (i64, i16, i32)> {
    prop_oneof![
        Just((NO_PRODUCER_ID, NO_PRODUCER_EPOCH, NO_SEQUENCE)),
        (0..=i64::MAX, 0..=i16::MAX, 0..=i32::MAX),
        (0..=i64::MAX, 0..=i16::MAX, i32::MAX - 300..=i32::MAX),
    ]
}

fn options_with(
    timestamp_type: impl Strategy<Value = TimestampType>,
) -> impl Strategy<Value = BatchOptions> {
    (
        codec(),
        timestamp_type,
        0..1i64 << 50,
        producer(),
        any::<bool>(),
        prop_oneof![Just(NO_PARTITION_LEADER_EPOCH), 0..=i32::MAX],
    )
        .prop_map(
            |(compression, timestamp_type, base_offset, (pid, epoch, seq), transactional, ple)| {
                BatchOptions {
                    compression,
                    timestamp_type,
                    base_offset,
                    producer_id: pid,
                    producer_epoch: epoch,
                    base_sequence: seq,
                    transactional,
                    control: false,
                    partition_leader_epoch: ple,
                    ..BatchOptions::default()
                }
            },
        )
}

fn any_timestamp_type() -> impl Strategy<Value = TimestampType> {
    prop::sample::select(vec![TimestampType::CreateTime, TimestampType::LogAppendTime])
}

// ---------------------------------------------------------------------------------------------
// Round trip through our own builder and decoder
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config(128))]

    #[test]
    fn arbitrary_batches_round_trip(
        options in options_with(any_timestamp_type()),
        records in vec(record_with(headers()), 0..200),
    ) {
        let mut builder = RecordBatchBuilder::new(options);
        append_all(&mut builder, &records);
        prop_assert_eq!(builder.record_count(), records.len());
        if records.is_empty() {
            prop_assert_eq!(builder.build(), Err(RecordError::EmptyBatch));
            return Ok(());
        }
        let bound: usize = RECORD_BATCH_OVERHEAD
            + records
                .iter()
                .map(|r| {
                    RecordBatchBuilder::record_size_upper_bound(
                        r.key.as_deref(),
                        r.value.as_deref(),
                        &r.borrowed_headers(),
                    )
                })
                .sum::<usize>();
        let uncompressed = builder.uncompressed_size_in_bytes();
        prop_assert!(uncompressed <= bound, "{} > upper bound {}", uncompressed, bound);
        let bytes = builder.build().unwrap();
        prop_assert!(builder.is_empty());
        if options.compression == Compression::None {
            prop_assert_eq!(bytes.len(), uncompressed);
        }

        let batch = RecordBatch::parse(&bytes).unwrap();
        batch.validate_crc().unwrap();
        let mut scratch = Vec::new();
        batch.validate_records(&mut scratch).unwrap();

        let h = *batch.header();
        let n = records.len() as i32;
        let max_timestamp = records.iter().map(|r| r.timestamp).max().unwrap();
        prop_assert_eq!(h.base_offset, options.base_offset);
        prop_assert_eq!(h.batch_length as usize, bytes.len() - 12);
        prop_assert_eq!(h.size_in_bytes(), bytes.len());
        prop_assert_eq!(h.partition_leader_epoch, options.partition_leader_epoch);
        prop_assert_eq!(h.magic, 2);
        prop_assert_eq!(h.crc, compute_crc(&bytes));
        prop_assert_eq!(h.attributes.compression().unwrap(), options.compression);
        prop_assert_eq!(h.attributes.timestamp_type(), options.timestamp_type);
        prop_assert_eq!(h.attributes.is_transactional(), options.transactional);
        prop_assert!(!h.attributes.is_control());
        prop_assert!(!h.attributes.has_delete_horizon());
        prop_assert_eq!(h.last_offset_delta, n - 1);
        prop_assert_eq!(h.records_count, n);
        prop_assert_eq!(h.base_timestamp, records[0].timestamp);
        prop_assert_eq!(h.max_timestamp, max_timestamp);
        prop_assert_eq!(h.producer_id, options.producer_id);
        prop_assert_eq!(h.producer_epoch, options.producer_epoch);
        prop_assert_eq!(h.base_sequence, options.base_sequence);
        prop_assert_eq!(h.last_offset(), options.base_offset + n as i64 - 1);
        prop_assert_eq!(h.next_offset(), options.base_offset + n as i64);
        if options.base_sequence == NO_SEQUENCE {
            prop_assert_eq!(h.last_sequence(), NO_SEQUENCE);
        } else {
            // Kafka wraps sequences from Int.MAX to 0.
            let last = (options.base_sequence as i64 + n as i64 - 1) % (i32::MAX as i64 + 1);
            prop_assert_eq!(h.last_sequence() as i64, last);
        }
        prop_assert_eq!(batch.compression().unwrap(), options.compression);
        prop_assert_eq!(batch.as_bytes(), &bytes[..]);
        prop_assert_eq!(batch.records_section(), &bytes[RECORD_BATCH_OVERHEAD..]);

        let log_append_time = match options.timestamp_type {
            TimestampType::LogAppendTime => Some(max_timestamp),
            TimestampType::CreateTime => None,
        };
        let records_iter = batch.records(&mut scratch).unwrap();
        prop_assert_eq!(records_iter.size_hint().0, records.len());
        let mut decoded = Vec::new();
        for record in records_iter {
            let record = record.unwrap();
            prop_assert_eq!(record.headers.len(), record.headers.iter().count());
            prop_assert_eq!(record.headers.is_empty(), record.headers.iter().next().is_none());
            decoded.push(owned(record));
        }
        prop_assert_eq!(decoded, expected(options.base_offset, &records, log_append_time));
    }
}

#[test]
fn duplicate_header_keys_keep_their_order_and_values() {
    let record = TestRecord::new(7, Some(b"k"), Some(b"v"))
        .header("dup", Some(b"first"))
        .header("other", None)
        .header("dup", None)
        .header("dup", Some(b"third"));
    for compression in Compression::ALL {
        let options = BatchOptions { compression, ..BatchOptions::default() };
        let bytes = build(options, std::slice::from_ref(&record));
        let batch = RecordBatch::parse(&bytes).unwrap();
        let decoded = decode(&batch);
        assert_eq!(decoded, expected(0, std::slice::from_ref(&record), None), "{compression}");
        let mut scratch = Vec::new();
        let first = batch.records(&mut scratch).unwrap().next().unwrap().unwrap();
        let headers: Vec<Header<'_>> = first.headers.into_iter().collect();
        assert_eq!(
            headers,
            vec![
                Header { key: "dup", value: Some(b"first") },
                Header { key: "other", value: None },
                Header { key: "dup", value: None },
                Header { key: "dup", value: Some(b"third") },
            ]
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Cross-checks against kafka-protocol
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(proptest_config(96))]

    /// kafka-protocol decodes what our builder writes, for every codec.
    #[test]
    fn kafka_protocol_decodes_our_batches(
        options in options_with(Just(TimestampType::CreateTime)),
        records in vec(record_with(unique_headers()), 1..200),
    ) {
        let bytes = build(options, &records);
        let mut buf = Bytes::from(bytes);
        let set = kp::RecordBatchDecoder::decode(&mut buf).unwrap();
        prop_assert!(buf.is_empty(), "{} bytes left over", buf.len());
        prop_assert_eq!(set.version, 2);
        prop_assert_eq!(set.compression, kp_compression(options.compression));
        prop_assert_eq!(set.records.len(), records.len());
        for (i, (theirs, ours)) in set.records.iter().zip(&records).enumerate() {
            prop_assert_eq!(theirs.offset, options.base_offset + i as i64);
            prop_assert_eq!(theirs.sequence, options.base_sequence.wrapping_add(i as i32));
            prop_assert_eq!(theirs.timestamp, ours.timestamp);
            prop_assert_eq!(theirs.timestamp_type, kp::TimestampType::Creation);
            prop_assert_eq!(theirs.key.as_deref(), ours.key.as_deref());
            prop_assert_eq!(theirs.value.as_deref(), ours.value.as_deref());
            let headers: Vec<(String, Option<Vec<u8>>)> = theirs
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_ref().map(|v| v.to_vec())))
                .collect();
            prop_assert_eq!(&headers, &ours.headers);
            prop_assert_eq!(theirs.producer_id, options.producer_id);
            prop_assert_eq!(theirs.producer_epoch, options.producer_epoch);
            prop_assert_eq!(theirs.partition_leader_epoch, options.partition_leader_epoch);
            prop_assert_eq!(theirs.transactional, options.transactional);
            prop_assert!(!theirs.control);
        }
    }

    /// We parse, validate and decode what kafka-protocol's encoder writes, for every codec.
    #[test]
    fn we_decode_kafka_protocol_batches(
        codec in codec(),
        base_offset in 0..1i64 << 50,
        (producer_id, producer_epoch, base_sequence) in producer(),
        transactional in any::<bool>(),
        partition_leader_epoch in prop_oneof![Just(NO_PARTITION_LEADER_EPOCH), 0..=i32::MAX],
        records in vec(record_with(unique_headers()), 1..200),
    ) {
        // kafka-protocol derives the batch's base sequence from the first record
        // (`sequence - (offset - min_offset)`) and starts a new batch when `offset - sequence`
        // changes, so the records carry consecutive offsets and sequences.
        let theirs: Vec<kp::Record> = records
            .iter()
            .enumerate()
            .map(|(i, r)| kp::Record {
                transactional,
                control: false,
                delete_horizon: false,
                partition_leader_epoch,
                producer_id,
                producer_epoch,
                timestamp_type: kp::TimestampType::Creation,
                offset: base_offset + i as i64,
                sequence: base_sequence.wrapping_add(i as i32),
                timestamp: r.timestamp,
                key: r.key.clone().map(Bytes::from),
                value: r.value.clone().map(Bytes::from),
                headers: r
                    .headers
                    .iter()
                    .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone().map(Bytes::from)))
                    .collect(),
            })
            .collect();
        let mut buf = BytesMut::new();
        kp::RecordBatchEncoder::encode(
            &mut buf,
            &theirs,
            &kp::RecordEncodeOptions { version: 2, compression: kp_compression(codec) },
        )
        .unwrap();

        let batch = RecordBatch::parse(&buf).unwrap();
        batch.validate_crc().unwrap();
        let mut scratch = Vec::new();
        batch.validate_records(&mut scratch).unwrap();
        let h = batch.header();
        let n = records.len() as i32;
        prop_assert_eq!(h.base_offset, base_offset);
        prop_assert_eq!(h.partition_leader_epoch, partition_leader_epoch);
        prop_assert_eq!(h.attributes.compression().unwrap(), codec);
        prop_assert_eq!(h.attributes.timestamp_type(), TimestampType::CreateTime);
        prop_assert_eq!(h.attributes.is_transactional(), transactional);
        prop_assert!(!h.attributes.is_control());
        prop_assert_eq!(h.last_offset_delta, n - 1);
        prop_assert_eq!(h.records_count, n);
        // kafka-protocol's base timestamp is the smallest, not the first: deltas can be negative
        // in our batches and positive in theirs, and both must decode.
        prop_assert_eq!(h.base_timestamp, records.iter().map(|r| r.timestamp).min().unwrap());
        prop_assert_eq!(h.max_timestamp, records.iter().map(|r| r.timestamp).max().unwrap());
        prop_assert_eq!(h.producer_id, producer_id);
        prop_assert_eq!(h.producer_epoch, producer_epoch);
        prop_assert_eq!(h.base_sequence, base_sequence);
        prop_assert_eq!(decode(&batch), expected(base_offset, &records, None));
    }
}

// ---------------------------------------------------------------------------------------------
// The encoding, pinned
// ---------------------------------------------------------------------------------------------

#[test]
fn one_record_batch_has_the_exact_kafka_bytes() {
    let options = BatchOptions {
        base_offset: 42,
        partition_leader_epoch: 7,
        producer_id: 1000,
        producer_epoch: 3,
        base_sequence: 5,
        transactional: true,
        ..BatchOptions::default()
    };
    let record = TestRecord::new(1_700_000_000_000, Some(b"k"), Some(b"hello"))
        .header("h", Some(b"v"))
        .header("h", None);
    let bytes = build(options, &[record]);

    #[rustfmt::skip]
    let expected: Vec<u8> = [
        &[0, 0, 0, 0, 0, 0, 0, 42][..],          //  0 baseOffset 42
        &[0, 0, 0, 69],                          //  8 batchLength: 49 + 20-byte record
        &[0, 0, 0, 7],                           // 12 partitionLeaderEpoch 7
        &[2],                                    // 16 magic 2
        &[0x09, 0x14, 0x74, 0xbe],               // 17 crc (CRC-32C of bytes 21..)
        &[0x00, 0x10],                           // 21 attributes: transactional, no codec
        &[0, 0, 0, 0],                           // 23 lastOffsetDelta 0
        &[0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0], // 27 baseTimestamp 1_700_000_000_000
        &[0, 0, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0], // 35 maxTimestamp
        &[0, 0, 0, 0, 0, 0, 0x03, 0xe8],         // 43 producerId 1000
        &[0, 3],                                 // 51 producerEpoch 3
        &[0, 0, 0, 5],                           // 53 baseSequence 5
        &[0, 0, 0, 1],                           // 57 recordsCount 1
        // The record: varint length 19 (zig-zag 38), attributes, timestampDelta 0,
        // offsetDelta 0, key "k", value "hello", 2 headers: "h" = "v", "h" = null.
        &[0x26, 0x00, 0x00, 0x00],
        &[0x02, b'k'],
        &[0x0a, b'h', b'e', b'l', b'l', b'o'],
        &[0x04],
        &[0x02, b'h', 0x02, b'v'],
        &[0x02, b'h', 0x01],
    ]
    .concat();
    assert_eq!(bytes, expected);
    assert_eq!(crc32c_bitwise(b"123456789"), 0xe306_9283, "CRC-32C check value");
    assert_eq!(crc32c_bitwise(&expected[21..]), 0x0914_74be);

    // kafka-protocol agrees (its header map keeps the last "h").
    let set = kp::RecordBatchDecoder::decode(&mut Bytes::from(expected)).unwrap();
    assert_eq!(set.records.len(), 1);
    let theirs = &set.records[0];
    assert_eq!((theirs.offset, theirs.sequence), (42, 5));
    assert_eq!(theirs.timestamp, 1_700_000_000_000);
    assert_eq!(theirs.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(theirs.value.as_deref(), Some(&b"hello"[..]));
    assert_eq!((theirs.transactional, theirs.producer_id, theirs.producer_epoch), (true, 1000, 3));
}

/// Our hand-written encoder in this file and the builder agree, so the framing tests below
/// test the format rather than a private dialect of it.
#[test]
fn hand_assembled_batches_match_the_builder() {
    let records = sample_records();
    let base_timestamp = records[0].timestamp;
    let section: Vec<u8> = records
        .iter()
        .enumerate()
        .flat_map(|(i, r)| raw_record(r.timestamp - base_timestamp, i as i32, r))
        .collect();
    let header = RawHeader {
        base_offset: 100,
        attributes: 0,
        last_offset_delta: records.len() as i32 - 1,
        base_timestamp,
        max_timestamp: records.iter().map(|r| r.timestamp).max().unwrap(),
        records_count: records.len() as i32,
    };
    assert_eq!(assemble(header, &section), sample_batch(Compression::None));
}

// ---------------------------------------------------------------------------------------------
// Corruption and framing errors
// ---------------------------------------------------------------------------------------------

/// Flips one bit at `bit` (counted from the start of the CRC field) and checks it is caught.
fn assert_bit_flip_detected(original: &[u8], bit: usize) {
    RecordBatch::parse(original).unwrap().validate_crc().unwrap();
    let mut bytes = original.to_vec();
    let at = 17 + bit / 8;
    bytes[at] ^= 1 << (bit % 8);
    let stored = u32::from_be_bytes([bytes[17], bytes[18], bytes[19], bytes[20]]);
    assert_ne!(compute_crc(&bytes), stored, "bit flip at byte {at} not caught by the CRC");
    match RecordBatch::parse(&bytes) {
        Ok(batch) => match batch.validate_crc() {
            Err(RecordError::CrcMismatch { base_offset, stored: s, computed }) => {
                assert_eq!((base_offset, s), (batch.header().base_offset, stored));
                assert_eq!(computed, compute_crc(&bytes));
            }
            other => panic!("bit flip at byte {at}: validate_crc gave {other:?}"),
        },
        // Flipping the sign bit of lastOffsetDelta or recordsCount fails the header check
        // before the CRC is looked at.
        Err(RecordError::InvalidRecordCount { .. }) => assert!(at == 23 || at == 57, "{at}"),
        Err(other) => panic!("bit flip at byte {at}: parse gave {other:?}"),
    }
}

#[test]
fn every_single_bit_flip_of_a_small_batch_is_detected() {
    let original = sample_batch(Compression::None);
    for bit in 0..(original.len() - 17) * 8 {
        assert_bit_flip_detected(&original, bit);
    }
}

proptest! {
    #![proptest_config(proptest_config(512))]

    #[test]
    fn any_single_bit_flip_in_the_crc_region_is_detected(
        compression in codec(),
        records in vec(record_with(headers()), 1..20),
        bit in any::<prop::sample::Index>(),
    ) {
        let original = build(BatchOptions { compression, ..BatchOptions::default() }, &records);
        assert_bit_flip_detected(&original, bit.index((original.len() - 17) * 8));
    }
}

#[test]
fn truncated_batches_are_reported_as_truncated() {
    for compression in Compression::ALL {
        let bytes = sample_batch(compression);
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            let needed =
                if len < RECORD_BATCH_OVERHEAD { RECORD_BATCH_OVERHEAD } else { bytes.len() };
            let truncated = RecordError::Truncated { needed, available: len };
            assert_eq!(RecordBatch::parse(cut).unwrap_err(), truncated, "{compression} {len}");
            let mut iter = BatchIter::new(cut);
            if len > 0 {
                assert_eq!(iter.next().unwrap().unwrap_err(), truncated, "{compression} {len}");
            }
            assert!(iter.next().is_none());
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            RecordBatch::parse(&longer).unwrap_err(),
            RecordError::TrailingBytes { batch_size: bytes.len(), buffer: bytes.len() + 1 }
        );
    }
}

#[test]
fn bad_magic_and_lengths_are_rejected() {
    let mut bytes = sample_batch(Compression::None);
    bytes[16] = 1;
    assert_eq!(RecordBatch::parse(&bytes).unwrap_err(), RecordError::UnsupportedMagic(1));
    bytes[16] = 2;
    bytes[8..12].copy_from_slice(&48i32.to_be_bytes());
    assert_eq!(RecordBatch::parse(&bytes).unwrap_err(), RecordError::InvalidBatchLength(48));
    bytes[8..12].copy_from_slice(&(-1i32).to_be_bytes());
    assert_eq!(RecordBatch::parse(&bytes).unwrap_err(), RecordError::InvalidBatchLength(-1));
}

fn validate(bytes: &[u8]) -> Result<(), RecordError> {
    let batch = RecordBatch::parse(bytes).unwrap();
    batch.validate_crc().unwrap();
    batch.validate_records(&mut Vec::new())
}

#[test]
fn validate_records_accepts_sequential_deltas() {
    assert_eq!(validate(&assemble(RawHeader::new(1, 0), &section_with_deltas(&[0]))), Ok(()));
    let section = section_with_deltas(&[0, 1, 2]);
    assert_eq!(validate(&assemble(RawHeader::new(3, 2), &section)), Ok(()));
}

#[test]
fn validate_records_rejects_non_sequential_deltas() {
    for (deltas, expected, found) in [
        (&[0, 2][..], 1, 2),
        (&[0, 0], 1, 0),
        (&[1, 2], 0, 1),
        (&[0, 1, 1], 2, 1),
        (&[0, 1, -1], 2, -1),
        (&[0, 2, 1], 1, 2),
    ] {
        let n = deltas.len() as i32;
        let bytes = assemble(RawHeader::new(n, n - 1), &section_with_deltas(deltas));
        assert_eq!(
            validate(&bytes),
            Err(RecordError::NonSequentialOffsets { expected, found }),
            "deltas {deltas:?}"
        );
    }
}

#[test]
fn validate_records_rejects_count_and_last_offset_delta_that_disagree() {
    // Kafka's LogValidator: recordsCount must be lastOffsetDelta + 1 in a produced batch, and
    // positive; checked from the header, whatever the records say.
    for (deltas, records_count, last_offset_delta) in [
        (&[0, 1, 2][..], 3, 5),
        (&[0, 1, 2], 3, 1),
        (&[0, 1], 2, 2),
        (&[0, 1, 2], 2, 2),
        (&[0, 1, 2], 4, 2),
        (&[0], 0, 0),
        (&[], 0, 0),
        (&[0, 2], 2, 2),
    ] {
        let bytes = assemble(
            RawHeader::new(records_count, last_offset_delta),
            &section_with_deltas(deltas),
        );
        assert_eq!(
            validate(&bytes),
            Err(RecordError::InvalidRecordCount { records_count, last_offset_delta }),
            "deltas {deltas:?}, recordsCount {records_count}, lastOffsetDelta {last_offset_delta}"
        );
    }
}

#[test]
fn validate_records_rejects_a_count_that_disagrees_with_the_records() {
    // Header consistent, records section holding more or fewer records than it says.
    let more = assemble(RawHeader::new(2, 1), &section_with_deltas(&[0, 1, 2]));
    assert_eq!(
        validate(&more),
        Err(RecordError::MalformedRecord("bytes left after the batch's last record"))
    );
    let fewer = assemble(RawHeader::new(3, 2), &section_with_deltas(&[0, 1]));
    assert!(matches!(validate(&fewer), Err(RecordError::MalformedRecord(_))));
    // Iteration yields the records it can, then one error, then stops.
    let batch = RecordBatch::parse(&fewer).unwrap();
    let mut scratch = Vec::new();
    let results: Vec<_> = batch.records(&mut scratch).unwrap().collect();
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok() && results[1].is_ok() && results[2].is_err());
}

#[test]
fn malformed_records_are_errors() {
    let record = TestRecord::new(0, Some(b"key"), Some(b"value")).header("h", Some(b"v"));
    let good = raw_record(0, 0, &record);
    // A record whose length prefix is one byte too long or too short.
    let mut too_long = good.clone();
    too_long[0] += 2; // zig-zag: +1 in length
    too_long.push(0);
    let mut too_short = good.clone();
    too_short[0] -= 2;
    // A header key that is not UTF-8.
    let mut bad_utf8 = good.clone();
    let at = bad_utf8.iter().rposition(|&b| b == b'h').unwrap();
    bad_utf8[at] = 0xff;
    // Negative lengths.
    let mut negative_key = vec![0u8, 0, 0];
    put_varlong(&mut negative_key, -2);
    let mut framed = Vec::new();
    put_varlong(&mut framed, negative_key.len() as i64);
    framed.extend_from_slice(&negative_key);
    for (name, section) in [
        ("too long", too_long),
        ("too short", too_short),
        ("bad utf-8", bad_utf8),
        ("negative key length", framed),
    ] {
        let bytes = assemble(RawHeader::new(1, 0), &section);
        assert!(
            matches!(validate(&bytes), Err(RecordError::MalformedRecord(_))),
            "{name}: {:?}",
            validate(&bytes)
        );
    }
}

/// A records section: random bytes, a compressed stream of random bytes, or a valid section with
/// a few bytes overwritten.
fn garbage_section() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..400),
        (codec(), vec(any::<u8>(), 0..400)).prop_map(|(codec, raw)| {
            let mut out = Vec::new();
            compress(codec, &raw, &mut out).unwrap();
            out
        }),
        (vec(record_with(headers()), 1..6), vec((any::<prop::sample::Index>(), any::<u8>()), 1..4))
            .prop_map(|(records, edits)| {
                let mut section: Vec<u8> = records
                    .iter()
                    .enumerate()
                    .flat_map(|(i, r)| raw_record(r.timestamp, i as i32, r))
                    .collect();
                for (at, byte) in edits {
                    let at = at.index(section.len());
                    section[at] = byte;
                }
                section
            }),
    ]
}

proptest! {
    #![proptest_config(proptest_config(2048))]

    /// Whatever the records section holds, with a correct CRC: no panic, only Ok or Err.
    #[test]
    fn garbage_records_never_panic(
        codec_id in prop_oneof![4 => 0i16..5, 1 => 5i16..8],
        flags in any::<i16>(),
        base_offset in prop_oneof![
            any::<i64>(),
            Just(i64::MAX),
            Just(i64::MIN),
            i64::MAX - 64..=i64::MAX,
        ],
        records_count in prop_oneof![0i32..8, any::<i32>()],
        last_offset_delta in prop_oneof![0i32..8, any::<i32>()],
        section in garbage_section(),
    ) {
        let header = RawHeader {
            base_offset,
            attributes: (flags & !0x07) | codec_id,
            last_offset_delta,
            base_timestamp: 0,
            max_timestamp: 0,
            records_count,
        };
        let bytes = assemble(header, &section);
        // One batch in the buffer: at most one item (`take` keeps a runaway iterator finite).
        let items: Vec<_> = BatchIter::new(&bytes).take(3).collect();
        prop_assert!(items.len() <= 1);
        for batch in items {
            let Ok(batch) = batch else { continue };
            prop_assert!(batch.validate_crc().is_ok());
            let mut scratch = Vec::new();
            let _ = batch.validate_records(&mut scratch);
            let h = *batch.header();
            let _ = (h.last_offset(), h.next_offset(), h.last_sequence());
            let Ok(records) = batch.records(&mut scratch) else { continue };
            let mut yielded = 0usize;
            let mut failed = false;
            for record in records {
                prop_assert!(!failed, "a record after an error");
                yielded += 1;
                match record {
                    Ok(record) => {
                        prop_assert_eq!(record.headers.iter().count(), record.headers.len())
                    }
                    Err(_) => failed = true,
                }
            }
            prop_assert!(yielded <= records_count.max(0) as usize + 1);
        }
    }
}

#[test]
fn batches_at_the_end_of_the_offset_space_do_not_overflow() {
    // A producer's base offset means nothing (the log assigns offsets), so a batch claiming
    // i64::MAX must validate like any other instead of overflowing.
    for base_offset in [i64::MAX, i64::MAX - 1, i64::MIN] {
        let bytes =
            build(BatchOptions { base_offset, ..BatchOptions::default() }, &sample_records());
        let batch = RecordBatch::parse(&bytes).unwrap();
        batch.validate_crc().unwrap();
        batch.validate_records(&mut Vec::new()).unwrap();
        let h = batch.header();
        assert_eq!(h.last_offset(), base_offset.wrapping_add(4));
        assert_eq!(h.next_offset(), base_offset.wrapping_add(5));
        let offsets: Vec<i64> = decode(&batch).iter().map(|d| d.offset).collect();
        let want: Vec<i64> = (0..5).map(|i| base_offset.wrapping_add(i)).collect();
        assert_eq!(offsets, want);
    }
}

// ---------------------------------------------------------------------------------------------
// In-place edits on append
// ---------------------------------------------------------------------------------------------

#[test]
fn set_base_offset_and_leader_epoch_keep_the_crc_valid() {
    for compression in Compression::ALL {
        let mut bytes = sample_batch(compression);
        let crc_region = bytes[17..].to_vec();
        batch::set_base_offset(&mut bytes, 1_000_000);
        batch::set_partition_leader_epoch(&mut bytes, 12);
        assert_eq!(bytes[17..], crc_region[..], "{compression}: CRC'd region changed");
        let batch = RecordBatch::parse(&bytes).unwrap();
        batch.validate_crc().unwrap();
        batch.validate_records(&mut Vec::new()).unwrap();
        assert_eq!(batch.header().base_offset, 1_000_000);
        assert_eq!(batch.header().partition_leader_epoch, 12);
        assert_eq!(decode(&batch), expected(1_000_000, &sample_records(), None), "{compression}");
    }
}

#[test]
fn set_log_append_time_stamps_every_record_and_keeps_the_crc_valid() {
    for compression in Compression::ALL {
        let original = sample_batch(compression);
        // Earlier than some record's create time, so the test sees the log-append time win.
        let append_time = 2_500;
        let mut bytes = original.clone();
        batch::set_log_append_time(&mut bytes, append_time);
        let batch = RecordBatch::parse(&bytes).unwrap();
        batch.validate_crc().unwrap();
        batch.validate_records(&mut Vec::new()).unwrap();
        let h = batch.header();
        assert_eq!(h.attributes.timestamp_type(), TimestampType::LogAppendTime);
        assert_eq!(h.attributes.compression().unwrap(), compression);
        assert_eq!(h.max_timestamp, append_time);
        assert_eq!(h.base_timestamp, 1_000, "base timestamp is left alone");
        assert_eq!(
            decode(&batch),
            expected(100, &sample_records(), Some(append_time)),
            "{compression}"
        );
        // Only attributes, maxTimestamp and the CRC changed.
        for (i, (a, b)) in original.iter().zip(&bytes).enumerate() {
            if a != b {
                assert!((17..23).contains(&i) || (35..43).contains(&i), "byte {i} changed");
            }
        }
        // Stamping again with another time is also consistent.
        batch::set_log_append_time(&mut bytes, 9_999);
        let batch = RecordBatch::parse(&bytes).unwrap();
        batch.validate_crc().unwrap();
        assert!(decode(&batch).iter().all(|d| d.record.timestamp == 9_999));
    }
}

// ---------------------------------------------------------------------------------------------
// Batch iteration over concatenated batches
// ---------------------------------------------------------------------------------------------

#[test]
fn batch_iter_yields_every_concatenated_batch() {
    let batches: Vec<Vec<u8>> = Compression::ALL
        .iter()
        .enumerate()
        .map(|(i, &compression)| {
            let records = &sample_records()[..i + 1];
            build(
                BatchOptions { compression, base_offset: 10 * i as i64, ..Default::default() },
                records,
            )
        })
        .collect();
    let all = batches.concat();

    let mut iter = BatchIter::new(&all);
    let mut position = 0;
    for (i, expected_bytes) in batches.iter().enumerate() {
        assert_eq!(iter.position(), position);
        let batch = iter.next().unwrap().unwrap();
        assert_eq!(batch.as_bytes(), &expected_bytes[..]);
        batch.validate_crc().unwrap();
        assert_eq!(decode(&batch), expected(10 * i as i64, &sample_records()[..i + 1], None));
        position += expected_bytes.len();
    }
    assert_eq!(iter.position(), all.len());
    assert!(iter.next().is_none());
    assert!(BatchIter::new(&[]).next().is_none());

    // A trailing partial batch: one Truncated, then nothing.
    let last = &batches[0];
    for cut in [1, 12, 17, RECORD_BATCH_OVERHEAD - 1, RECORD_BATCH_OVERHEAD, last.len() - 1] {
        let mut buf = all.clone();
        buf.extend_from_slice(&last[..cut]);
        let mut iter = BatchIter::new(&buf);
        for _ in &batches {
            iter.next().unwrap().unwrap();
        }
        let needed = if cut < RECORD_BATCH_OVERHEAD { RECORD_BATCH_OVERHEAD } else { last.len() };
        assert_eq!(
            iter.next().unwrap().unwrap_err(),
            RecordError::Truncated { needed, available: cut },
            "cut at {cut}"
        );
        assert_eq!(iter.position(), all.len());
        assert!(iter.next().is_none());
        assert!(iter.next().is_none());
    }

    // A bad batch in the middle ends the iteration too.
    let mut buf = all.clone();
    buf[batches[0].len() + 16] = 0;
    let results: Vec<_> = BatchIter::new(&buf).take(10).collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[1].as_ref().unwrap_err(), &RecordError::UnsupportedMagic(0));
}

// ---------------------------------------------------------------------------------------------
// Builder reuse, explicit offset deltas
// ---------------------------------------------------------------------------------------------

#[test]
fn a_reused_builder_writes_independent_batches() {
    let first: Vec<TestRecord> = (0..50)
        .map(|i| {
            TestRecord::new(1_000_000 + i, Some(b"first"), Some(&[i as u8; 64]))
                .header("n", Some(&[i as u8]))
        })
        .collect();
    // Fewer records, earlier and smaller timestamps, no headers.
    let second = vec![TestRecord::new(20, None, Some(b"a")), TestRecord::new(10, None, Some(b"b"))];
    let gzip = BatchOptions { compression: Compression::Gzip, ..BatchOptions::default() };
    let lz4 = BatchOptions { compression: Compression::Lz4, base_offset: 50, ..gzip };

    let mut builder = RecordBatchBuilder::new(gzip);
    let mut out = Vec::new();
    append_all(&mut builder, &first);
    builder.build_into(&mut out).unwrap();
    assert!(builder.is_empty());
    assert_eq!(builder.build_into(&mut out), Err(RecordError::EmptyBatch));
    builder.set_options(lz4);
    assert_eq!(builder.options(), &lz4);
    append_all(&mut builder, &second);
    builder.build_into(&mut out).unwrap();
    // A batch abandoned half-way leaves nothing behind.
    append_all(&mut builder, &first);
    builder.reset();
    assert!(builder.is_empty());
    append_all(&mut builder, &second[..1]);
    let third = builder.build().unwrap();

    assert_eq!(out, [build(gzip, &first), build(lz4, &second)].concat());
    assert_eq!(third, build(lz4, &second[..1]));
    let mut iter = BatchIter::new(&out);
    let a = iter.next().unwrap().unwrap();
    let b = iter.next().unwrap().unwrap();
    assert!(iter.next().is_none());
    assert_eq!(decode(&a), expected(0, &first, None));
    assert_eq!(decode(&b), expected(50, &second, None));
    let h = b.header();
    assert_eq!((h.base_timestamp, h.max_timestamp), (20, 20));
    assert_eq!((h.records_count, h.last_offset_delta), (2, 1));
    assert_eq!(h.attributes.compression().unwrap(), Compression::Lz4);
}

#[test]
fn explicit_offset_deltas_and_last_offset_delta_override() {
    let options = BatchOptions {
        base_offset: 1_000,
        producer_id: 9,
        producer_epoch: 0,
        base_sequence: i32::MAX - 5,
        ..BatchOptions::default()
    };
    let records = sample_records();
    let deltas = [0, 3, 4, 7, 8];
    for compression in Compression::ALL {
        let mut builder = RecordBatchBuilder::new(BatchOptions { compression, ..options });
        for (r, &delta) in records.iter().zip(&deltas) {
            builder
                .append_with_offset_delta(
                    delta,
                    r.timestamp,
                    r.key.as_deref(),
                    r.value.as_deref(),
                    r.borrowed_headers(),
                )
                .unwrap();
        }
        assert_eq!(
            builder.append_with_offset_delta(8, 0, None, None, []),
            Err(RecordError::NonSequentialOffsets { expected: 9, found: 8 })
        );
        assert_eq!(builder.record_count(), 5);
        builder.set_last_offset_delta(10);
        let bytes = builder.build().unwrap();

        let batch = RecordBatch::parse(&bytes).unwrap();
        batch.validate_crc().unwrap();
        let h = batch.header();
        assert_eq!((h.records_count, h.last_offset_delta), (5, 10));
        assert_eq!(h.last_offset(), 1_010);
        // The sequence range still covers the original eleven records, wrapping at Int.MAX.
        assert_eq!(h.last_sequence(), 4);
        let decoded = decode(&batch);
        let offsets: Vec<i64> = decoded.iter().map(|d| d.offset).collect();
        assert_eq!(offsets, deltas.iter().map(|&d| 1_000 + d as i64).collect::<Vec<_>>());
        let fields: Vec<TestRecord> = decoded.into_iter().map(|d| d.record).collect();
        assert_eq!(fields, records);
        // Not what a producer may send.
        assert_eq!(
            batch.validate_records(&mut Vec::new()),
            Err(RecordError::InvalidRecordCount { records_count: 5, last_offset_delta: 10 })
        );
        // kafka-protocol reads the same offsets.
        let set = kp::RecordBatchDecoder::decode(&mut Bytes::from(bytes.clone())).unwrap();
        let theirs: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
        assert_eq!(theirs, offsets);
    }

    // `append` continues after the override.
    let mut builder = RecordBatchBuilder::new(options);
    assert_eq!(builder.append(1, None, None, &[]), 0);
    builder.set_last_offset_delta(4);
    assert_eq!(builder.append(2, None, None, &[]), 5);
    let bytes = builder.build().unwrap();
    let batch = RecordBatch::parse(&bytes).unwrap();
    assert_eq!(batch.header().last_offset_delta, 5);
    let offsets: Vec<i64> = decode(&batch).iter().map(|d| d.offset).collect();
    assert_eq!(offsets, [1_000, 1_005]);
}

#[test]
fn control_batches_round_trip() {
    use fjord_log::record::{ControlRecordType, EndTxnMarker};
    let marker = EndTxnMarker { kind: ControlRecordType::Commit, coordinator_epoch: 77 };
    let bytes = marker.to_batch(5, 2, 1234).unwrap();
    let batch = RecordBatch::parse(&bytes).unwrap();
    batch.validate_crc().unwrap();
    batch.validate_records(&mut Vec::new()).unwrap();
    let h = batch.header();
    assert_eq!(
        h.attributes,
        Attributes::new(Compression::None, TimestampType::CreateTime, true, true)
    );
    let mut scratch = Vec::new();
    let record = batch.records(&mut scratch).unwrap().next().unwrap().unwrap();
    assert_eq!(record.key, Some(&[0, 0, 0, 1][..]));
    assert_eq!(record.value, Some(&[0, 0, 0, 0, 0, 77][..]));
    assert_eq!(EndTxnMarker::from_record(&record).unwrap(), marker);
    // kafka-protocol sees a control record of a transactional batch.
    let set = kp::RecordBatchDecoder::decode(&mut Bytes::from(bytes.clone())).unwrap();
    assert!(set.records[0].control && set.records[0].transactional);
    assert_eq!(BatchHeader::parse(&bytes).unwrap(), *h);
}

// ---------------------------------------------------------------------------------------------
// Compression helpers
// ---------------------------------------------------------------------------------------------

#[test]
fn decompress_without_a_limit_round_trips() {
    let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
    for codec in Compression::ALL {
        let mut compressed = Vec::new();
        compress(codec, &data, &mut compressed).unwrap();
        let mut back = Vec::new();
        decompress(codec, &compressed, &mut back, usize::MAX).unwrap();
        assert_eq!(back, data, "{codec}");
        // Exactly at the limit is fine, one byte under is not.
        back.clear();
        decompress(codec, &compressed, &mut back, data.len()).unwrap();
        assert_eq!(back.len(), data.len());
        assert_eq!(
            decompress(codec, &compressed, &mut Vec::new(), data.len() - 1),
            Err(RecordError::DecompressedTooLarge { codec, limit: data.len() - 1 })
        );
    }
}

#[test]
fn maximally_compressible_snappy_still_decodes() {
    // The snappy length sanity check must not reject the best ratio the format allows, raw
    // (librdkafka) or in xerial blocks.
    let zeros = vec![0u8; 1 << 20];
    let raw = snap::raw::Encoder::new().compress_vec(&zeros).unwrap();
    let mut back = Vec::new();
    decompress(Compression::Snappy, &raw, &mut back, usize::MAX).unwrap();
    assert_eq!(back, zeros);
    let mut framed = Vec::new();
    compress(Compression::Snappy, &zeros, &mut framed).unwrap();
    back.clear();
    decompress(Compression::Snappy, &framed, &mut back, zeros.len()).unwrap();
    assert_eq!(back, zeros);
}

#[test]
fn a_corrupt_snappy_length_does_not_allocate_what_it_claims() {
    // A raw snappy block claiming 100 MB, then a few bytes: corrupt, and must not make the
    // decoder reserve the claimed size before finding out.
    let mut corrupt = Vec::new();
    let mut claimed = 100u64 << 20;
    while claimed >= 0x80 {
        corrupt.push(claimed as u8 | 0x80);
        claimed >>= 7;
    }
    corrupt.push(claimed as u8);
    corrupt.extend_from_slice(&[0, 1, 2, 3]);
    let mut out = Vec::new();
    let err = decompress(Compression::Snappy, &corrupt, &mut out, 256 << 20).unwrap_err();
    assert!(matches!(err, RecordError::Decompression { codec: Compression::Snappy, .. }), "{err}");
    assert!(out.capacity() < 1 << 20, "reserved {} bytes", out.capacity());

    // In xerial framing, blocks are checked against what is left of the limit before they are
    // decompressed.
    let data = vec![b'x'; 3 * 32 * 1024];
    let mut framed = Vec::new();
    compress(Compression::Snappy, &data, &mut framed).unwrap();
    let mut out = Vec::new();
    let limit = 40 * 1024;
    assert_eq!(
        decompress(Compression::Snappy, &framed, &mut out, limit),
        Err(RecordError::DecompressedTooLarge { codec: Compression::Snappy, limit })
    );
    assert!(out.len() <= limit, "wrote {} bytes past a {limit}-byte limit", out.len());
}
