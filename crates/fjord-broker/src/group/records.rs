//! The records of `__consumer_offsets`, byte for byte as Kafka's group coordinator writes them
//! (`GroupCoordinatorRecordSerde`), so that tools that read Kafka's offsets topic read ours.
//!
//! A record key starts with an int16 that says what the record is (Kafka calls it the key
//! version, newer Kafka the record type):
//! - 0 or 1: an offset commit, `OffsetCommitKey` (`group: string, topic: string,
//!   partition: int32`), value `OffsetCommitValue` (versions 0-4; written as version 3:
//!   `offset: int64, leaderEpoch: int32, metadata: string, commitTimestamp: int64`);
//! - 2: group metadata, `GroupMetadataKey` (`group: string`), value `GroupMetadataValue`
//!   (versions 0-4; written as version 3).
//!
//! A null value is a tombstone: compaction removes the key. Non-flexible versions encode a
//! string as an int16 length and UTF-8 bytes (-1 for null) and bytes as an int32 length; the
//! flexible version 4 uses compact (unsigned varint length + 1) encodings and tagged fields.
//!
//! Everything that encodes or decodes these records lives here, so that the transaction
//! coordinator's transactional offset commits (same key and value, in transactional batches)
//! use the same code.

use bytes::Bytes;
use fjord_log::TopicPartition;
use fjord_log::record::batch::NO_SEQUENCE;
use fjord_log::record::{BatchOptions, RecordBatchBuilder, RecordError};

use super::OffsetAndMetadata;

/// Key version (record type) of Kafka's legacy offset commit key; read, never written.
pub(crate) const LEGACY_OFFSET_COMMIT_KEY_VERSION: i16 = 0;
/// Key version (record type) of offset commits.
pub(crate) const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
/// Key version (record type) of group metadata.
pub(crate) const GROUP_METADATA_KEY_VERSION: i16 = 2;
/// Version of `OffsetCommitValue` written.
pub(crate) const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;
/// Version of `GroupMetadataValue` written.
pub(crate) const GROUP_METADATA_VALUE_VERSION: i16 = 3;

/// A decoded record key of `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RecordKey {
    /// The committed offset of one partition for one group.
    OffsetCommit {
        /// The group.
        group: String,
        /// The partition.
        tp: TopicPartition,
    },
    /// A group's metadata (generation, protocol, members).
    GroupMetadata {
        /// The group.
        group: String,
    },
}

/// Why a record of `__consumer_offsets` cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    /// A key version this broker does not know (another coordinator's record type, or a newer
    /// Kafka's).
    #[error("unknown key version {0}")]
    UnknownKeyVersion(i16),
    /// A value version this broker does not know.
    #[error("unknown {record} value version {version}")]
    UnknownValueVersion {
        /// Which value.
        record: &'static str,
        /// The version found.
        version: i16,
    },
    /// The bytes do not fit the layout.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

/// Why a record cannot be encoded (a string longer than Kafka's int16 length allows).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} is {len} bytes long; Kafka's record format allows at most 32767")]
pub(crate) struct EncodeError {
    /// The field.
    pub(crate) field: &'static str,
    /// Its length in bytes.
    pub(crate) len: usize,
}

/// `GroupMetadataValue`: what the coordinator knows of a group after a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupMetadataValue {
    /// `consumer`, or empty for a group that only commits offsets.
    pub(crate) protocol_type: String,
    /// The generation.
    pub(crate) generation: i32,
    /// The chosen assignor, `None` when the group is empty.
    pub(crate) protocol: Option<String>,
    /// The leader, `None` when the group is empty.
    pub(crate) leader: Option<String>,
    /// When the group entered its current state (ms since the epoch; -1 if unknown).
    pub(crate) current_state_timestamp: i64,
    /// The members.
    pub(crate) members: Vec<MemberMetadata>,
}

/// One member in a [`GroupMetadataValue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberMetadata {
    /// The member id.
    pub(crate) member_id: String,
    /// The static member id (KIP-345), if any.
    pub(crate) group_instance_id: Option<String>,
    /// The client id.
    pub(crate) client_id: String,
    /// The client's host.
    pub(crate) client_host: String,
    /// The member's rebalance timeout (ms).
    pub(crate) rebalance_timeout_ms: i32,
    /// The member's session timeout (ms).
    pub(crate) session_timeout_ms: i32,
    /// Its subscription for the chosen protocol.
    pub(crate) subscription: Bytes,
    /// Its assignment.
    pub(crate) assignment: Bytes,
}

// ---------------------------------------------------------------------------------------------
// Encoding.

fn put_i16(out: &mut Vec<u8>, v: i16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_string(out: &mut Vec<u8>, field: &'static str, s: &str) -> Result<(), EncodeError> {
    let len = i16::try_from(s.len()).map_err(|_| EncodeError { field, len: s.len() })?;
    put_i16(out, len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_nullable_string(
    out: &mut Vec<u8>,
    field: &'static str,
    s: Option<&str>,
) -> Result<(), EncodeError> {
    match s {
        Some(s) => put_string(out, field, s),
        None => {
            put_i16(out, -1);
            Ok(())
        }
    }
}

fn put_bytes(out: &mut Vec<u8>, field: &'static str, b: &[u8]) -> Result<(), EncodeError> {
    let len = i32::try_from(b.len()).map_err(|_| EncodeError { field, len: b.len() })?;
    put_i32(out, len);
    out.extend_from_slice(b);
    Ok(())
}

/// `OffsetCommitKey` (key version 1) of a group's partition.
pub(crate) fn offset_commit_key(group: &str, tp: &TopicPartition) -> Result<Vec<u8>, EncodeError> {
    let partition = i32::try_from(tp.partition)
        .map_err(|_| EncodeError { field: "partition", len: tp.partition as usize })?;
    let mut out = Vec::with_capacity(10 + group.len() + tp.topic.len());
    put_i16(&mut out, OFFSET_COMMIT_KEY_VERSION);
    put_string(&mut out, "group id", group)?;
    put_string(&mut out, "topic", &tp.topic)?;
    put_i32(&mut out, partition);
    Ok(out)
}

/// `OffsetCommitValue` version 3.
pub(crate) fn offset_commit_value(offset: &OffsetAndMetadata) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(24 + offset.metadata.len());
    put_i16(&mut out, OFFSET_COMMIT_VALUE_VERSION);
    put_i64(&mut out, offset.offset);
    put_i32(&mut out, offset.leader_epoch);
    put_string(&mut out, "offset metadata", &offset.metadata)?;
    put_i64(&mut out, offset.commit_timestamp);
    Ok(out)
}

/// The records of an offset commit: one `OffsetCommitKey` / `OffsetCommitValue` per
/// partition, in the order given (plain and transactional commits write the same records).
pub(crate) fn offset_commit_records(
    group: &str,
    offsets: &[(TopicPartition, OffsetAndMetadata)],
) -> Result<Vec<KeyValue>, EncodeError> {
    offsets
        .iter()
        .map(|(tp, o)| Ok((offset_commit_key(group, tp)?, Some(offset_commit_value(o)?))))
        .collect()
}

/// `GroupMetadataKey` (key version 2).
pub(crate) fn group_metadata_key(group: &str) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(4 + group.len());
    put_i16(&mut out, GROUP_METADATA_KEY_VERSION);
    put_string(&mut out, "group id", group)?;
    Ok(out)
}

/// `GroupMetadataValue` version 3.
pub(crate) fn group_metadata_value(value: &GroupMetadataValue) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(64);
    put_i16(&mut out, GROUP_METADATA_VALUE_VERSION);
    put_string(&mut out, "protocol type", &value.protocol_type)?;
    put_i32(&mut out, value.generation);
    put_nullable_string(&mut out, "protocol", value.protocol.as_deref())?;
    put_nullable_string(&mut out, "leader", value.leader.as_deref())?;
    put_i64(&mut out, value.current_state_timestamp);
    let count = i32::try_from(value.members.len())
        .map_err(|_| EncodeError { field: "members", len: value.members.len() })?;
    put_i32(&mut out, count);
    for m in &value.members {
        put_string(&mut out, "member id", &m.member_id)?;
        put_nullable_string(&mut out, "group instance id", m.group_instance_id.as_deref())?;
        put_string(&mut out, "client id", &m.client_id)?;
        put_string(&mut out, "client host", &m.client_host)?;
        put_i32(&mut out, m.rebalance_timeout_ms);
        put_i32(&mut out, m.session_timeout_ms);
        put_bytes(&mut out, "subscription", &m.subscription)?;
        put_bytes(&mut out, "assignment", &m.assignment)?;
    }
    Ok(out)
}

/// One record to write: a key and a value, `None` for a tombstone.
pub(crate) type KeyValue = (Vec<u8>, Option<Vec<u8>>);

/// Encodes records into one non-transactional batch stamped `timestamp`, ready for
/// `PartitionLog::append`.
pub(crate) fn build_batch(records: &[KeyValue], timestamp: i64) -> Result<Vec<u8>, RecordError> {
    build_batch_with(BatchOptions::default(), records, timestamp)
}

/// Encodes records into one transactional batch of `producer_id` at `producer_epoch` (a
/// transactional offset commit, Kafka's `TxnOffsetCommit`), without a sequence number as
/// Kafka's coordinator writes them: the partition checks the epoch, not sequences.
pub(crate) fn build_transactional_batch(
    records: &[KeyValue],
    timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
) -> Result<Vec<u8>, RecordError> {
    let options = BatchOptions {
        producer_id,
        producer_epoch,
        base_sequence: NO_SEQUENCE,
        transactional: true,
        ..BatchOptions::default()
    };
    build_batch_with(options, records, timestamp)
}

fn build_batch_with(
    options: BatchOptions,
    records: &[KeyValue],
    timestamp: i64,
) -> Result<Vec<u8>, RecordError> {
    let mut builder = RecordBatchBuilder::new(options);
    for (key, value) in records {
        builder.append(timestamp, Some(key), value.as_deref(), &[]);
    }
    builder.build()
}

// ---------------------------------------------------------------------------------------------
// Decoding.

/// A cursor over a record's bytes, in the non-flexible or the flexible (compact) encoding.
struct Reader<'a> {
    buf: &'a [u8],
    flexible: bool,
}

const TRUNCATED: DecodeError = DecodeError::Malformed("truncated");

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, flexible: false }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(TRUNCATED);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn uvarint(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let [b] = self.array::<1>()?;
            value |= u32::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::Malformed("unsigned varint longer than 5 bytes"))
    }

    /// A length: `None` for null (-1, or 0 in compact encodings).
    fn length(&mut self, wide: bool) -> Result<Option<usize>, DecodeError> {
        if self.flexible {
            let n = self.uvarint()?;
            return Ok(n.checked_sub(1).map(|n| n as usize));
        }
        let n = if wide { self.i32()? } else { i32::from(self.i16()?) };
        match n {
            -1 => Ok(None),
            n if n < 0 => Err(DecodeError::Malformed("negative length")),
            n => Ok(Some(n as usize)),
        }
    }

    fn nullable_string(&mut self) -> Result<Option<String>, DecodeError> {
        let Some(len) = self.length(false)? else {
            return Ok(None);
        };
        let bytes = self.take(len)?;
        let s = std::str::from_utf8(bytes).map_err(|_| DecodeError::Malformed("invalid UTF-8"))?;
        Ok(Some(s.to_string()))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        self.nullable_string()?.ok_or(DecodeError::Malformed("null string"))
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        match self.length(true)? {
            Some(len) => Ok(Bytes::copy_from_slice(self.take(len)?)),
            None => Ok(Bytes::new()),
        }
    }

    fn array_len(&mut self) -> Result<usize, DecodeError> {
        let len = self.length(true)?.unwrap_or(0);
        // Every element takes at least one byte: a length beyond the bytes left is corrupt,
        // and must not make the caller reserve memory for it.
        if len > self.buf.len() {
            return Err(TRUNCATED);
        }
        Ok(len)
    }

    /// Skips a flexible struct's tagged fields.
    fn skip_tagged_fields(&mut self) -> Result<(), DecodeError> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?;
            let size = self.uvarint()? as usize;
            self.take(size)?;
        }
        Ok(())
    }
}

/// Decodes a record key. Unknown key versions are [`DecodeError::UnknownKeyVersion`]: the
/// loader skips those records.
pub(crate) fn decode_key(key: &[u8]) -> Result<RecordKey, DecodeError> {
    let mut r = Reader::new(key);
    match r.i16()? {
        LEGACY_OFFSET_COMMIT_KEY_VERSION | OFFSET_COMMIT_KEY_VERSION => {
            let group = r.string()?;
            let topic = r.string()?;
            let partition = r.i32()?;
            let partition = u32::try_from(partition)
                .map_err(|_| DecodeError::Malformed("negative partition"))?;
            Ok(RecordKey::OffsetCommit { group, tp: TopicPartition::new(topic, partition) })
        }
        GROUP_METADATA_KEY_VERSION => Ok(RecordKey::GroupMetadata { group: r.string()? }),
        version => Err(DecodeError::UnknownKeyVersion(version)),
    }
}

/// Decodes an `OffsetCommitValue` of any version Kafka has written (0-4).
pub(crate) fn decode_offset_commit_value(value: &[u8]) -> Result<OffsetAndMetadata, DecodeError> {
    let mut r = Reader::new(value);
    let version = r.i16()?;
    if !(0..=4).contains(&version) {
        return Err(DecodeError::UnknownValueVersion { record: "OffsetCommitValue", version });
    }
    r.flexible = version >= 4;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = r.string()?;
    let commit_timestamp = r.i64()?;
    if version == 1 {
        let _expire_timestamp = r.i64()?;
    }
    r.skip_tagged_fields()?;
    Ok(OffsetAndMetadata { offset, leader_epoch, metadata, commit_timestamp })
}

/// Decodes a `GroupMetadataValue` of any version Kafka has written (0-4).
pub(crate) fn decode_group_metadata_value(value: &[u8]) -> Result<GroupMetadataValue, DecodeError> {
    let mut r = Reader::new(value);
    let version = r.i16()?;
    if !(0..=4).contains(&version) {
        return Err(DecodeError::UnknownValueVersion { record: "GroupMetadataValue", version });
    }
    r.flexible = version >= 4;
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let current_state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    let count = r.array_len()?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 { r.nullable_string()? } else { None };
        let client_id = r.string()?;
        let client_host = r.string()?;
        // Version 0 had no rebalance timeout: Kafka reads it as the session timeout.
        let rebalance_timeout_ms = if version >= 1 { Some(r.i32()?) } else { None };
        let session_timeout_ms = r.i32()?;
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        r.skip_tagged_fields()?;
        members.push(MemberMetadata {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout_ms: rebalance_timeout_ms.unwrap_or(session_timeout_ms),
            session_timeout_ms,
            subscription,
            assignment,
        });
    }
    r.skip_tagged_fields()?;
    Ok(GroupMetadataValue {
        protocol_type,
        generation,
        protocol,
        leader,
        current_state_timestamp,
        members,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn sample_offset() -> OffsetAndMetadata {
        OffsetAndMetadata {
            offset: 42,
            leader_epoch: 7,
            metadata: "meta".into(),
            commit_timestamp: 1_700_000_000_000,
        }
    }

    #[test]
    fn offset_commit_key_layout() {
        let key = offset_commit_key("g", &TopicPartition::new("t", 3)).unwrap();
        assert_eq!(key, [0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 3]);
        assert_eq!(
            decode_key(&key).unwrap(),
            RecordKey::OffsetCommit { group: "g".into(), tp: TopicPartition::new("t", 3) }
        );
        // Kafka's legacy key version 0 has the same layout.
        let mut legacy = key.clone();
        legacy[1] = 0;
        assert_eq!(decode_key(&legacy).unwrap(), decode_key(&key).unwrap());
    }

    #[test]
    fn offset_commit_value_layout() {
        let value = offset_commit_value(&sample_offset()).unwrap();
        let mut expected = vec![0, 3];
        expected.extend_from_slice(&42i64.to_be_bytes());
        expected.extend_from_slice(&7i32.to_be_bytes());
        expected.extend_from_slice(&[0, 4]);
        expected.extend_from_slice(b"meta");
        expected.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        assert_eq!(value, expected);
        assert_eq!(decode_offset_commit_value(&value).unwrap(), sample_offset());
    }

    #[test]
    fn offset_commit_value_old_and_flexible_versions() {
        // Version 1: offset, metadata, commit timestamp, expire timestamp.
        let mut v1 = vec![0, 1];
        v1.extend_from_slice(&42i64.to_be_bytes());
        v1.extend_from_slice(&[0, 1, b'm']);
        v1.extend_from_slice(&5i64.to_be_bytes());
        v1.extend_from_slice(&(-1i64).to_be_bytes());
        let o = decode_offset_commit_value(&v1).unwrap();
        assert_eq!(
            (o.offset, o.leader_epoch, o.metadata.as_str(), o.commit_timestamp),
            (42, -1, "m", 5)
        );
        // Version 4: compact string and tagged fields.
        let mut v4 = vec![0, 4];
        v4.extend_from_slice(&42i64.to_be_bytes());
        v4.extend_from_slice(&7i32.to_be_bytes());
        v4.extend_from_slice(&[5, b'm', b'e', b't', b'a']);
        v4.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        v4.extend_from_slice(&[1, 9, 2, 0xaa, 0xbb]); // one unknown tagged field
        assert_eq!(decode_offset_commit_value(&v4).unwrap(), sample_offset());
        assert!(matches!(
            decode_offset_commit_value(&[0, 9]),
            Err(DecodeError::UnknownValueVersion { version: 9, .. })
        ));
    }

    #[test]
    fn group_metadata_round_trip_and_layout() {
        let key = group_metadata_key("grp").unwrap();
        assert_eq!(key, [0, 2, 0, 3, b'g', b'r', b'p']);
        assert_eq!(decode_key(&key).unwrap(), RecordKey::GroupMetadata { group: "grp".into() });
        let value = GroupMetadataValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            current_state_timestamp: 99,
            members: vec![MemberMetadata {
                member_id: "m1".into(),
                group_instance_id: None,
                client_id: "c".into(),
                client_host: "h".into(),
                rebalance_timeout_ms: 300,
                session_timeout_ms: 100,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"as"),
            }],
        };
        let bytes = group_metadata_value(&value).unwrap();
        let mut expected = vec![0, 3, 0, 8];
        expected.extend_from_slice(b"consumer");
        expected.extend_from_slice(&5i32.to_be_bytes());
        expected.extend_from_slice(&[0, 5]);
        expected.extend_from_slice(b"range");
        expected.extend_from_slice(&[0, 2, b'm', b'1']);
        expected.extend_from_slice(&99i64.to_be_bytes());
        expected.extend_from_slice(&1i32.to_be_bytes());
        expected.extend_from_slice(&[0, 2, b'm', b'1', 0xff, 0xff, 0, 1, b'c', 0, 1, b'h']);
        expected.extend_from_slice(&300i32.to_be_bytes());
        expected.extend_from_slice(&100i32.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 3, b's', b'u', b'b', 0, 0, 0, 2, b'a', b's']);
        assert_eq!(bytes, expected);
        assert_eq!(decode_group_metadata_value(&bytes).unwrap(), value);

        let empty = GroupMetadataValue {
            protocol_type: String::new(),
            generation: 0,
            protocol: None,
            leader: None,
            current_state_timestamp: -1,
            members: vec![],
        };
        let bytes = group_metadata_value(&empty).unwrap();
        assert_eq!(decode_group_metadata_value(&bytes).unwrap(), empty);
    }

    #[test]
    fn unknown_and_corrupt_keys() {
        assert_eq!(decode_key(&[0, 9, 0, 0]), Err(DecodeError::UnknownKeyVersion(9)));
        assert!(matches!(decode_key(&[0, 1, 0, 5, b'a']), Err(DecodeError::Malformed(_))));
        assert!(matches!(decode_key(&[0]), Err(DecodeError::Malformed(_))));
        // A member count far beyond the bytes present is corrupt, not an allocation.
        let mut v = vec![0, 3, 0, 0];
        v.extend_from_slice(&0i32.to_be_bytes());
        v.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        v.extend_from_slice(&0i64.to_be_bytes());
        v.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode_group_metadata_value(&v).is_err());
    }

    #[test]
    fn transactional_batches_carry_the_producer_without_a_sequence() {
        let records =
            offset_commit_records("g", &[(TopicPartition::new("t", 0), sample_offset())]).unwrap();
        let batch = build_transactional_batch(&records, 5, 42, 3).unwrap();
        let header = *fjord_log::record::BatchIter::new(&batch).next().unwrap().unwrap().header();
        assert!(header.attributes.is_transactional());
        assert!(!header.attributes.is_control());
        assert_eq!((header.producer_id, header.producer_epoch), (42, 3));
        assert_eq!(header.base_sequence, NO_SEQUENCE);
        let plain = build_batch(&records, 5).unwrap();
        let header = *fjord_log::record::BatchIter::new(&plain).next().unwrap().unwrap().header();
        assert!(!header.attributes.is_transactional());
    }

    #[test]
    fn too_long_strings_are_refused() {
        let long = "x".repeat(40_000);
        assert!(group_metadata_key(&long).is_err());
        let offset = OffsetAndMetadata { metadata: long, ..sample_offset() };
        assert!(offset_commit_value(&offset).is_err());
    }
}
