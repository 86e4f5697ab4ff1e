//! Per-batch compression codecs, in the framings Kafka's own clients use, so that a batch
//! compressed here decompresses in the Java client, librdkafka and KafkaJS, and the other way
//! round:
//!
//! - gzip: a gzip stream (`GZIPOutputStream`).
//! - snappy: snappy-java's "xerial" framing (a 16-byte magic header, then length-prefixed raw
//!   snappy blocks of up to 32 KiB). Reading also accepts a bare raw snappy block, as snappy-java
//!   does, because librdkafka can write those.
//! - lz4: the standard LZ4 frame format with independent 64 KiB blocks (Kafka's
//!   `Lz4BlockOutputStream`).
//! - zstd: a standard zstd frame.

use std::io::{Read, Write};
use std::str::FromStr;

use super::RecordError;

/// A batch compression codec; the id is the value of bits 0-2 of the batch attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// Records are stored as they are.
    #[default]
    None,
    /// gzip (deflate), level 6 by default.
    Gzip,
    /// snappy, in snappy-java's framing.
    Snappy,
    /// LZ4 frames.
    Lz4,
    /// zstd, level 3 by default.
    Zstd,
}

impl Compression {
    /// Every codec, in id order.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec id stored in the batch attributes.
    pub fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec with this attributes id.
    pub fn from_id(id: u8) -> Result<Self, RecordError> {
        Ok(match id {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => return Err(RecordError::UnknownCompression(other)),
        })
    }

    /// Kafka's name for the codec, as in `compression.type`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = RecordError;

    /// Parses Kafka's codec names (`none`, `gzip`, `snappy`, `lz4`, `zstd`); `uncompressed` is
    /// accepted for `none`, as the topic-level `compression.type` spells it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "none" | "uncompressed" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            other => return Err(RecordError::UnknownCompressionName(other.to_string())),
        })
    }
}

const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;
const XERIAL_BLOCK_SIZE: usize = 32 * 1024;
const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

/// Appends `input` compressed with `codec` to `out`.
pub fn compress(codec: Compression, input: &[u8], out: &mut Vec<u8>) -> Result<(), RecordError> {
    let failed = |e: std::io::Error| RecordError::Compression { codec, message: e.to_string() };
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            encoder.write_all(input).map_err(failed)?;
            encoder.finish().map_err(failed)?;
        }
        Compression::Snappy => {
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // compatible version
            let mut encoder = snap::raw::Encoder::new();
            for block in input.chunks(XERIAL_BLOCK_SIZE) {
                let len_at = out.len();
                out.extend_from_slice(&[0; 4]);
                let start = out.len();
                out.resize(start + snap::raw::max_compress_len(block.len()), 0);
                let written = encoder
                    .compress(block, &mut out[start..])
                    .map_err(|e| RecordError::Compression { codec, message: e.to_string() })?;
                out.truncate(start + written);
                out[len_at..len_at + 4].copy_from_slice(&(written as i32).to_be_bytes());
            }
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            encoder.write_all(input).map_err(failed)?;
            encoder
                .finish()
                .map_err(|e| RecordError::Compression { codec, message: e.to_string() })?;
        }
        Compression::Zstd => {
            let mut encoder = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).map_err(failed)?;
            encoder.write_all(input).map_err(failed)?;
            encoder.finish().map_err(failed)?;
        }
    }
    Ok(())
}

/// Appends `input` decompressed with `codec` to `out`, refusing to produce more than `max_len`
/// bytes (a corrupt or hostile batch must not exhaust memory).
pub fn decompress(
    codec: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
    max_len: usize,
) -> Result<(), RecordError> {
    let start = out.len();
    let failed = |e: std::io::Error| RecordError::Decompression { codec, message: e.to_string() };
    match codec {
        Compression::None => out.extend_from_slice(input),
        Compression::Gzip => {
            read_bounded(flate2::read::MultiGzDecoder::new(input), out, max_len).map_err(failed)?
        }
        Compression::Snappy => decompress_snappy(input, out, max_len)?,
        Compression::Lz4 => {
            read_bounded(lz4_flex::frame::FrameDecoder::new(input), out, max_len).map_err(failed)?
        }
        Compression::Zstd => {
            let decoder = zstd::stream::read::Decoder::with_buffer(input).map_err(failed)?;
            read_bounded(decoder, out, max_len).map_err(failed)?
        }
    }
    if out.len() - start > max_len {
        return Err(RecordError::DecompressedTooLarge { codec, limit: max_len });
    }
    Ok(())
}

fn read_bounded(reader: impl Read, out: &mut Vec<u8>, max_len: usize) -> std::io::Result<()> {
    // One byte past the limit is enough to tell "too large" from "exactly at the limit".
    reader.take((max_len as u64).saturating_add(1)).read_to_end(out)?;
    Ok(())
}

fn decompress_snappy(input: &[u8], out: &mut Vec<u8>, max_len: usize) -> Result<(), RecordError> {
    let codec = Compression::Snappy;
    let corrupt = |message: String| RecordError::Decompression { codec, message };
    let start = out.len();
    let mut decoder = snap::raw::Decoder::new();
    // Each block states its decompressed length up front; check it against what the format can
    // produce and against what is left of the limit before allocating it, so that a few corrupt
    // bytes cannot make us zero-fill hundreds of megabytes.
    let mut raw_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), RecordError> {
        let len = snap::raw::decompress_len(block).map_err(|e| corrupt(e.to_string()))?;
        if len > max_len.saturating_sub(out.len() - start) {
            return Err(RecordError::DecompressedTooLarge { codec, limit: max_len });
        }
        // The largest expansion in snappy is a 3-byte copy element writing 64 bytes.
        if len as u64 * 3 > block.len() as u64 * 64 {
            return Err(corrupt(format!(
                "a {}-byte block cannot decompress to the {len} bytes it claims",
                block.len()
            )));
        }
        let at = out.len();
        out.resize(at + len, 0);
        decoder.decompress(block, &mut out[at..]).map_err(|e| corrupt(e.to_string()))?;
        Ok(())
    };
    if input.len() < XERIAL_HEADER_LEN || input[..8] != XERIAL_MAGIC {
        return raw_block(input, out);
    }
    let mut rest = &input[XERIAL_HEADER_LEN..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(corrupt("truncated xerial block length".into()));
        }
        let len = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        if len < 0 || len as usize > rest.len() - 4 {
            return Err(corrupt(format!("xerial block length {len} runs past the end")));
        }
        raw_block(&rest[4..4 + len as usize], out)?;
        rest = &rest[4 + len as usize..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn every_codec_round_trips(data in proptest::collection::vec(any::<u8>(), 0..100_000)) {
            for codec in Compression::ALL {
                let mut compressed = Vec::new();
                compress(codec, &data, &mut compressed).unwrap();
                let mut back = Vec::new();
                decompress(codec, &compressed, &mut back, data.len()).unwrap();
                prop_assert_eq!(&back, &data, "codec {}", codec);
            }
        }
    }

    #[test]
    fn decompression_is_bounded() {
        let data = vec![7u8; 1 << 20];
        for codec in Compression::ALL {
            let mut compressed = Vec::new();
            compress(codec, &data, &mut compressed).unwrap();
            let err = decompress(codec, &compressed, &mut Vec::new(), 1000).unwrap_err();
            assert!(matches!(err, RecordError::DecompressedTooLarge { .. }), "{codec}: {err}");
        }
    }

    #[test]
    fn raw_snappy_without_xerial_framing_is_accepted() {
        let data = b"hello hello hello hello".repeat(10);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        let mut back = Vec::new();
        decompress(Compression::Snappy, &raw, &mut back, usize::MAX / 2).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn names_parse_as_kafka_spells_them() {
        for codec in Compression::ALL {
            assert_eq!(codec.name().parse::<Compression>().unwrap(), codec);
            assert_eq!(Compression::from_id(codec.id()).unwrap(), codec);
        }
        assert_eq!("uncompressed".parse::<Compression>().unwrap(), Compression::None);
        assert!("brotli".parse::<Compression>().is_err());
        assert!(Compression::from_id(5).is_err());
    }
}
