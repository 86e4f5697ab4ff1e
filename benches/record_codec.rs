//! RecordBatch v2 codec throughput: Fjord's hand-written codec against the `kafka-protocol`
//! crate, on batches of 1,000 records with 8-byte keys and 100-byte values.
//!
//! Run with `cargo bench --bench record_codec`. Throughput is in records per second.

// A benchmark whose workload fails has nothing to measure: stopping with the reason is right.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use fjord::log::record::{BatchOptions, Compression, RecordBatch, RecordBatchBuilder};
use kafka_protocol::records as kp;

const RECORDS: usize = 1_000;
const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

/// Keys and values shaped like a typical event stream: 8-byte keys, 100-byte JSON-ish values
/// with some variation, so that compression has something realistic to work on.
fn inputs() -> Vec<([u8; 8], Vec<u8>)> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..RECORDS)
        .map(|i| {
            let key = (i as u64 % 997).to_be_bytes();
            let mut value = format!(
                r#"{{"user":"u{:06}","event":"{}","amount":{},"ts":{}}}"#,
                next() % 100_000,
                ["click", "view", "purchase", "scroll"][(next() % 4) as usize],
                next() % 10_000,
                BASE_TIMESTAMP + i as i64,
            )
            .into_bytes();
            while value.len() < 100 {
                value.push(b'a' + (next() % 26) as u8);
            }
            value.truncate(100);
            (key, value)
        })
        .collect()
}

fn our_batch(inputs: &[([u8; 8], Vec<u8>)], compression: Compression) -> Vec<u8> {
    let mut builder =
        RecordBatchBuilder::new(BatchOptions { compression, ..BatchOptions::default() });
    for (i, (key, value)) in inputs.iter().enumerate() {
        builder.append(BASE_TIMESTAMP + i as i64, Some(key), Some(value), &[]);
    }
    builder.build().expect("batch builds")
}

fn their_records(inputs: &[([u8; 8], Vec<u8>)]) -> Vec<kp::Record> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, (key, value))| kp::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: kp::NO_PARTITION_LEADER_EPOCH,
            producer_id: kp::NO_PRODUCER_ID,
            producer_epoch: kp::NO_PRODUCER_EPOCH,
            timestamp_type: kp::TimestampType::Creation,
            offset: i as i64,
            // Consecutive sequences from -1 keep kafka-protocol's base sequence at -1 and the
            // records in one batch.
            sequence: i as i32 - 1,
            timestamp: BASE_TIMESTAMP + i as i64,
            key: Some(Bytes::copy_from_slice(key)),
            value: Some(Bytes::copy_from_slice(value)),
            headers: Default::default(),
        })
        .collect()
}

fn uncompressed_options() -> kp::RecordEncodeOptions {
    kp::RecordEncodeOptions { version: 2, compression: kp::Compression::None }
}

fn encode(c: &mut Criterion) {
    let inputs = inputs();
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(RECORDS as u64));

    let mut builder = RecordBatchBuilder::new(BatchOptions::default());
    let mut out = Vec::new();
    group.bench_function("fjord", |b| {
        b.iter(|| {
            out.clear();
            for (i, (key, value)) in inputs.iter().enumerate() {
                builder.append(BASE_TIMESTAMP + i as i64, Some(key), Some(value), &[]);
            }
            builder.build_into(&mut out).expect("batch builds");
            black_box(out.len())
        })
    });

    // kafka-protocol encodes from owned `Record`s; building them is left out of the
    // measurement, which favours it.
    let records = their_records(&inputs);
    let options = uncompressed_options();
    let mut buf = BytesMut::new();
    group.bench_function("kafka-protocol", |b| {
        b.iter(|| {
            buf.clear();
            kp::RecordBatchEncoder::encode(&mut buf, &records, &options).expect("batch encodes");
            black_box(buf.len())
        })
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    let inputs = inputs();
    let ours = our_batch(&inputs, Compression::None);
    let mut theirs = BytesMut::new();
    kp::RecordBatchEncoder::encode(&mut theirs, &their_records(&inputs), &uncompressed_options())
        .expect("batch encodes");
    let theirs = theirs.freeze();

    let mut group = c.benchmark_group("decode_and_iterate");
    group.throughput(Throughput::Elements(RECORDS as u64));
    let mut scratch = Vec::new();
    // kafka-protocol always checks the CRC, so the like-for-like row checks it too.
    group.bench_function("fjord", |b| {
        b.iter(|| {
            let batch = RecordBatch::parse(black_box(&ours)).expect("batch parses");
            batch.validate_crc().expect("CRC matches");
            let mut total = 0usize;
            for record in batch.records(&mut scratch).expect("records decode") {
                let record = record.expect("record decodes");
                total += record.key.map_or(0, <[u8]>::len) + record.value.map_or(0, <[u8]>::len);
            }
            black_box(total)
        })
    });
    group.bench_function("fjord (no CRC check)", |b| {
        b.iter(|| {
            let batch = RecordBatch::parse(black_box(&ours)).expect("batch parses");
            let mut total = 0usize;
            for record in batch.records(&mut scratch).expect("records decode") {
                let record = record.expect("record decodes");
                total += record.key.map_or(0, <[u8]>::len) + record.value.map_or(0, <[u8]>::len);
            }
            black_box(total)
        })
    });
    group.bench_function("kafka-protocol", |b| {
        b.iter(|| {
            let mut buf = black_box(&theirs).clone();
            let set = kp::RecordBatchDecoder::decode(&mut buf).expect("batch decodes");
            let mut total = 0usize;
            for record in &set.records {
                total += record.key.as_ref().map_or(0, Bytes::len)
                    + record.value.as_ref().map_or(0, Bytes::len);
            }
            black_box(total)
        })
    });
    group.finish();
}

/// What the log does with a produced batch before appending it.
fn validate(c: &mut Criterion) {
    let inputs = inputs();
    let mut group = c.benchmark_group("validate_crc_and_records");
    group.throughput(Throughput::Elements(RECORDS as u64));
    let mut scratch = Vec::new();
    for codec in Compression::ALL {
        let bytes = our_batch(&inputs, codec);
        group.bench_with_input(BenchmarkId::from_parameter(codec), &bytes, |b, bytes| {
            b.iter(|| {
                let batch = RecordBatch::parse(black_box(bytes)).expect("batch parses");
                batch.validate_crc().expect("CRC matches");
                batch.validate_records(&mut scratch).expect("records are valid");
            })
        });
    }
    group.finish();
}

/// Each codec through our builder (encode) and our decoder (decompress and iterate).
fn codecs(c: &mut Criterion) {
    let inputs = inputs();
    let uncompressed = our_batch(&inputs, Compression::None).len();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(RECORDS as u64));
    let mut builder = RecordBatchBuilder::new(BatchOptions::default());
    let mut out = Vec::new();
    let mut scratch = Vec::new();
    for codec in Compression::ALL {
        let bytes = our_batch(&inputs, codec);
        eprintln!("{codec}: {} bytes ({uncompressed} uncompressed)", bytes.len());
        builder.set_options(BatchOptions { compression: codec, ..BatchOptions::default() });
        group.bench_function(BenchmarkId::new("encode", codec), |b| {
            b.iter(|| {
                out.clear();
                for (i, (key, value)) in inputs.iter().enumerate() {
                    builder.append(BASE_TIMESTAMP + i as i64, Some(key), Some(value), &[]);
                }
                builder.build_into(&mut out).expect("batch builds");
                black_box(out.len())
            })
        });
        group.bench_function(BenchmarkId::new("decode", codec), |b| {
            b.iter(|| {
                let batch = RecordBatch::parse(black_box(&bytes)).expect("batch parses");
                let mut total = 0usize;
                for record in batch.records(&mut scratch).expect("records decode") {
                    total += record.expect("record decodes").value.map_or(0, <[u8]>::len);
                }
                black_box(total)
            })
        });
    }
    group.finish();
}

// `criterion_group!` defines an undocumented `pub fn`.
#[allow(missing_docs)]
mod group {
    use super::{codecs, decode, encode, validate};
    criterion::criterion_group!(benches, encode, decode, validate, codecs);
}
criterion_main!(group::benches);
