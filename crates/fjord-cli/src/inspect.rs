//! `fjord log inspect`: Kafka's `kafka-dump-log` for Fjord's files.
//!
//! It reads the files directly and never opens the broker: it takes no lock and changes
//! nothing, so it can look at a partition directory while an application runs, or at a copy
//! of one. That is the point of the command: when the log reports corruption on open, this is
//! how one sees which batch is bad and what is around it.
//!
//! Every batch is checked (framing and CRC-32C) and reported, bad ones included: a CRC mismatch
//! is printed where it is and the scan goes on to the next batch (the length field still frames
//! it); a batch whose framing is broken ends the scan of that file, since nothing after it can
//! be located. Index entries are checked against the rules the log relies on (whole entries,
//! increasing, within the log file). Any problem makes the command exit non-zero.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use fjord_log::record::batch::{LOG_OVERHEAD, RECORD_BATCH_OVERHEAD};
use fjord_log::record::{BatchHeader, EndTxnMarker, RecordBatch, RecordError};
use fjord_log::segment::{
    INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX, TXN_INDEX_SUFFIX, parse_file_name,
};
use indicatif::ProgressBar;

use crate::error::{CliError, Result};
use crate::output::Out;
use crate::progress;

/// `fjord log ...`
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Dump the batches of segment files and the entries of their index files.
    Inspect(InspectArgs),
}

/// `fjord log inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A partition directory (every segment and index file in it) or one file
    /// (`.log`, `.index`, `.timeindex` or `.txnindex`).
    path: PathBuf,
    /// Print every record of every batch.
    #[arg(long)]
    records: bool,
}

/// What kind of file a path is, by its suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Log,
    Index,
    TimeIndex,
    TxnIndex,
}

impl Kind {
    fn of(path: &Path) -> Option<(Kind, &'static str)> {
        let name = path.file_name()?.to_str()?;
        [
            (Kind::Log, LOG_SUFFIX),
            (Kind::Index, INDEX_SUFFIX),
            (Kind::TimeIndex, TIME_INDEX_SUFFIX),
            (Kind::TxnIndex, TXN_INDEX_SUFFIX),
        ]
        .into_iter()
        .find(|(_, suffix)| name.ends_with(suffix))
    }
}

/// Runs a `log` command.
pub fn run(command: &LogCommand) -> Result<()> {
    let LogCommand::Inspect(args) = command;
    let meta = std::fs::metadata(&args.path).map_err(|e| CliError::io("read", &args.path, e))?;
    let files = if meta.is_dir() {
        let mut files = Vec::new();
        let entries =
            std::fs::read_dir(&args.path).map_err(|e| CliError::io("list", &args.path, e))?;
        for entry in entries {
            let path = entry.map_err(|e| CliError::io("list", &args.path, e))?.path();
            if Kind::of(&path).is_some() {
                files.push(path);
            }
        }
        // By base offset, then the log before its indexes.
        files.sort_by_key(|p| {
            let kind = Kind::of(p).map(|(k, _)| k as u8);
            (p.file_stem().map(|s| s.to_os_string()), kind)
        });
        files
    } else {
        if Kind::of(&args.path).is_none() {
            return Err(CliError::arg(
                "PATH",
                args.path.display().to_string(),
                "inspect a partition directory or a .log, .index, .timeindex or .txnindex file",
            ));
        }
        vec![args.path.clone()]
    };
    let mut out = Out::stdout();
    let mut problems = 0;
    for path in &files {
        problems += inspect_file(path, args.records, &mut out)?;
    }
    out.flush()?;
    if problems > 0 {
        return Err(CliError::Corruption { count: problems });
    }
    Ok(())
}

/// Inspects one file; returns the number of problems found.
fn inspect_file(path: &Path, records: bool, out: &mut Out) -> Result<usize> {
    let Some((kind, suffix)) = Kind::of(path) else { return Ok(0) };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let base_offset = parse_file_name(name, suffix);
    out.line(format_args!("Dumping {}", path.display()))?;
    if base_offset.is_none() {
        out.line("  (the file name is not a 20-digit base offset: offsets shown relative to 0)")?;
    }
    let base_offset = base_offset.unwrap_or(0);
    match kind {
        Kind::Log => inspect_log(path, records, out),
        Kind::Index => {
            let log_size = std::fs::metadata(path.with_extension("log")).ok().map(|m| m.len());
            inspect_index(path, base_offset, log_size, out)
        }
        Kind::TimeIndex => inspect_time_index(path, base_offset, out),
        Kind::TxnIndex => inspect_txn_index(path, out),
    }
}

/// Writes a line, keeping a visible progress bar intact.
fn emit(bar: &ProgressBar, out: &mut Out, line: std::fmt::Arguments<'_>) -> Result<()> {
    if bar.is_hidden() {
        out.line(line)
    } else {
        bar.suspend(|| out.line(line).and_then(|()| out.flush()))
    }
}

fn inspect_log(path: &Path, print_records: bool, out: &mut Out) -> Result<usize> {
    let file = File::open(path).map_err(|e| CliError::io("read", path, e))?;
    let size = file.metadata().map_err(|e| CliError::io("read", path, e))?.len();
    let bar = progress::bar(size, true);
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut position: u64 = 0;
    let mut batch = Vec::new();
    let mut scratch = Vec::new();
    let mut problems = 0;
    let mut batches = 0u64;
    while position < size {
        let remaining = size - position;
        // The header, then the rest of the batch as its length field says.
        let header_len = RECORD_BATCH_OVERHEAD.min(remaining as usize);
        batch.resize(header_len, 0);
        reader.read_exact(&mut batch).map_err(|e| CliError::io("read", path, e))?;
        let header = match BatchHeader::parse(&batch) {
            Ok(h) if (h.size_in_bytes() as u64) <= remaining => h,
            Ok(h) => {
                let e = RecordError::Truncated {
                    needed: h.size_in_bytes(),
                    available: remaining as usize,
                };
                return unframed(&bar, out, position, &e, problems + 1);
            }
            Err(e) => return unframed(&bar, out, position, &e, problems + 1),
        };
        batch.resize(header.size_in_bytes(), 0);
        reader.read_exact(&mut batch[header_len..]).map_err(|e| CliError::io("read", path, e))?;
        let parsed = RecordBatch::parse(&batch);
        let crc = parsed.and_then(|b| b.validate_crc().map(|()| b));
        let crc_text = match &crc {
            Ok(_) => "CRC ok".to_string(),
            Err(e) => {
                problems += 1;
                format!("CORRUPT: {e}")
            }
        };
        let compression = header.attributes.compression().map_or("unknown", |c| c.name());
        emit(
            &bar,
            out,
            format_args!(
                "baseOffset: {} lastOffset: {} count: {} position: {position} size: {} producerId: {} producerEpoch: {} baseSequence: {} isTransactional: {} isControl: {} partitionLeaderEpoch: {} {}: {} maxTimestamp: {} compression: {compression} crc: {:#010x} {crc_text}",
                header.base_offset,
                header.last_offset(),
                header.records_count,
                header.size_in_bytes(),
                header.producer_id,
                header.producer_epoch,
                header.base_sequence,
                header.attributes.is_transactional(),
                header.attributes.is_control(),
                header.partition_leader_epoch,
                header.attributes.timestamp_type().name(),
                header.base_timestamp,
                header.max_timestamp,
                header.crc,
            ),
        )?;
        if let (true, Ok(b)) = (print_records, &crc) {
            problems += dump_records(&bar, out, b, &mut scratch)?;
        }
        batches += 1;
        position += header.size_in_bytes() as u64;
        bar.set_position(position);
    }
    bar.finish_and_clear();
    out.line(format_args!("{batches} batches, {size} bytes"))?;
    Ok(problems)
}

/// A batch that cannot even be framed: report it and stop, since no later batch can be found.
fn unframed(
    bar: &ProgressBar,
    out: &mut Out,
    position: u64,
    error: &RecordError,
    problems: usize,
) -> Result<usize> {
    bar.finish_and_clear();
    out.line(format_args!(
        "CORRUPT at position {position}: {error}; the rest of the file cannot be read as batches"
    ))?;
    Ok(problems)
}

fn dump_records(
    bar: &ProgressBar,
    out: &mut Out,
    batch: &RecordBatch<'_>,
    scratch: &mut Vec<u8>,
) -> Result<usize> {
    let records = match batch.records(scratch) {
        Ok(records) => records,
        Err(e) => {
            emit(bar, out, format_args!("| CORRUPT records: {e}"))?;
            return Ok(1);
        }
    };
    let control = batch.header().attributes.is_control();
    for record in records {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                emit(bar, out, format_args!("| CORRUPT record: {e}"))?;
                return Ok(1);
            }
        };
        if control {
            let marker = match EndTxnMarker::from_record(&record) {
                Ok(m) => format!("{:?} coordinatorEpoch: {}", m.kind, m.coordinator_epoch),
                Err(e) => format!("unreadable ({e})"),
            };
            emit(
                bar,
                out,
                format_args!(
                    "| offset: {} timestamp: {} endTxnMarker: {marker}",
                    record.offset, record.timestamp
                ),
            )?;
            continue;
        }
        let headers: Vec<String> =
            record.headers.iter().map(|h| format!("{}={}", h.key, bytes_text(h.value))).collect();
        emit(
            bar,
            out,
            format_args!(
                "| offset: {} timestamp: {} keySize: {} valueSize: {} key: {} value: {} headers: [{}]",
                record.offset,
                record.timestamp,
                record.key.map_or(-1, |k| k.len() as i64),
                record.value.map_or(-1, |v| v.len() as i64),
                bytes_text(record.key),
                bytes_text(record.value),
                headers.join(", "),
            ),
        )?;
    }
    Ok(0)
}

fn bytes_text(bytes: Option<&[u8]>) -> String {
    bytes.map_or_else(|| "null".to_string(), |b| String::from_utf8_lossy(b).into_owned())
}

/// Reads an index file whole (index files are small: one entry per `index.interval.bytes`)
/// and splits it into fixed-size entries, reporting a partial trailing entry.
fn read_entries(path: &Path, entry_size: usize, out: &mut Out) -> Result<(Vec<u8>, usize)> {
    let bytes = std::fs::read(path).map_err(|e| CliError::io("read", path, e))?;
    let mut problems = 0;
    if bytes.len() % entry_size != 0 {
        problems += 1;
        out.line(format_args!(
            "CORRUPT: {} is {} bytes, not a whole number of {entry_size}-byte entries",
            path.display(),
            bytes.len()
        ))?;
    }
    Ok((bytes, problems))
}

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

fn be_i64(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_be_bytes(a)
}

/// `.index`: `relative_offset: u32, position: u32` per entry.
fn inspect_index(
    path: &Path,
    base_offset: i64,
    log_size: Option<u64>,
    out: &mut Out,
) -> Result<usize> {
    let (bytes, mut problems) = read_entries(path, 8, out)?;
    let mut previous: Option<(u32, u32)> = None;
    let mut count = 0;
    for (i, c) in bytes.chunks_exact(8).enumerate() {
        let (relative, position) = (be_u32(c), be_u32(&c[4..]));
        let mut note = String::new();
        if previous.is_some_and(|(r, p)| relative <= r || position <= p) {
            note.push_str(" CORRUPT: does not increase on the entry before it");
        }
        if log_size.is_some_and(|size| position as u64 + LOG_OVERHEAD as u64 > size) {
            note.push_str(" CORRUPT: points past the end of the log file");
        }
        if !note.is_empty() {
            problems += 1;
        }
        out.line(format_args!(
            "entry: {i} offset: {} position: {position}{note}",
            base_offset + relative as i64
        ))?;
        previous = Some((relative, position));
        count += 1;
    }
    out.line(format_args!("{count} index entries"))?;
    Ok(problems)
}

/// `.timeindex`: `timestamp: i64, relative_offset: u32` per entry.
fn inspect_time_index(path: &Path, base_offset: i64, out: &mut Out) -> Result<usize> {
    let (bytes, mut problems) = read_entries(path, 12, out)?;
    let mut previous: Option<(i64, u32)> = None;
    let mut count = 0;
    for (i, c) in bytes.chunks_exact(12).enumerate() {
        let (timestamp, relative) = (be_i64(c), be_u32(&c[8..]));
        let decreasing = previous.is_some_and(|(t, r)| timestamp < t || relative < r);
        if decreasing {
            problems += 1;
        }
        out.line(format_args!(
            "entry: {i} timestamp: {timestamp} offset: {}{}",
            base_offset + relative as i64,
            if decreasing { " CORRUPT: goes back from the entry before it" } else { "" }
        ))?;
        previous = Some((timestamp, relative));
        count += 1;
    }
    out.line(format_args!("{count} time index entries"))?;
    Ok(problems)
}

/// `.txnindex`: `version: i16, producer_id, first_offset, last_offset, last_stable_offset`
/// (all i64) per entry, as Kafka's `AbortedTxn`.
fn inspect_txn_index(path: &Path, out: &mut Out) -> Result<usize> {
    let (bytes, mut problems) = read_entries(path, 34, out)?;
    let mut count = 0;
    for (i, c) in bytes.chunks_exact(34).enumerate() {
        let version = i16::from_be_bytes([c[0], c[1]]);
        let (producer_id, first, last, lso) =
            (be_i64(&c[2..]), be_i64(&c[10..]), be_i64(&c[18..]), be_i64(&c[26..]));
        let bad = version != 0 || first > last;
        if bad {
            problems += 1;
        }
        out.line(format_args!(
            "entry: {i} version: {version} producerId: {producer_id} firstOffset: {first} lastOffset: {last} lastStableOffset: {lso}{}",
            if bad { " CORRUPT: unknown version or first offset after last" } else { "" }
        ))?;
        count += 1;
    }
    out.line(format_args!("{count} aborted transactions"))?;
    Ok(problems)
}
