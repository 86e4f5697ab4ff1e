//! Control records: the commit and abort markers a transaction coordinator writes into every
//! partition a transaction touched (Kafka's `EndTransactionMarker`).
//!
//! A control batch is transactional, has the control bit set and holds one record whose key is
//! `version: int16, type: int16` (0 = abort, 1 = commit) and whose value is
//! `version: int16, coordinatorEpoch: int32`.

use super::builder::{BatchOptions, RecordBatchBuilder};
use super::decode::Record;
use super::{RecordError, TimestampType};

/// Whether a transaction committed or aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControlRecordType {
    /// The transaction's records are discarded by `read_committed` readers.
    Abort,
    /// The transaction's records become visible to `read_committed` readers.
    Commit,
}

impl ControlRecordType {
    fn id(self) -> i16 {
        match self {
            ControlRecordType::Abort => 0,
            ControlRecordType::Commit => 1,
        }
    }
}

/// The marker that ends a transaction in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTxnMarker {
    /// Commit or abort.
    pub kind: ControlRecordType,
    /// Epoch of the coordinator that wrote the marker.
    pub coordinator_epoch: i32,
}

impl EndTxnMarker {
    /// Encodes the marker as a complete control batch for `producer_id`/`producer_epoch`.
    pub fn to_batch(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        timestamp: i64,
    ) -> Result<Vec<u8>, RecordError> {
        let mut builder = RecordBatchBuilder::new(BatchOptions {
            producer_id,
            producer_epoch,
            transactional: true,
            control: true,
            timestamp_type: TimestampType::CreateTime,
            ..BatchOptions::default()
        });
        let mut key = [0u8; 4];
        key[2..].copy_from_slice(&self.kind.id().to_be_bytes());
        let mut value = [0u8; 6];
        value[2..].copy_from_slice(&self.coordinator_epoch.to_be_bytes());
        builder.append(timestamp, Some(&key), Some(&value), &[]);
        builder.build()
    }

    /// Decodes the marker from the record of a control batch.
    pub fn from_record(record: &Record<'_>) -> Result<EndTxnMarker, RecordError> {
        let key = record.key.ok_or(RecordError::MalformedRecord("control record without a key"))?;
        if key.len() < 4 {
            return Err(RecordError::MalformedRecord("control record key is too short"));
        }
        let kind = match i16::from_be_bytes([key[2], key[3]]) {
            0 => ControlRecordType::Abort,
            1 => ControlRecordType::Commit,
            _ => return Err(RecordError::MalformedRecord("unknown control record type")),
        };
        let value =
            record.value.ok_or(RecordError::MalformedRecord("control record without a value"))?;
        if value.len() < 6 {
            return Err(RecordError::MalformedRecord("end transaction marker is too short"));
        }
        let coordinator_epoch = i32::from_be_bytes([value[2], value[3], value[4], value[5]]);
        Ok(EndTxnMarker { kind, coordinator_epoch })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordBatch;

    #[test]
    fn markers_round_trip() {
        for kind in [ControlRecordType::Abort, ControlRecordType::Commit] {
            let marker = EndTxnMarker { kind, coordinator_epoch: 7 };
            let bytes = marker.to_batch(42, 3, 1_000).unwrap();
            let batch = RecordBatch::parse(&bytes).unwrap();
            batch.validate_crc().unwrap();
            let h = batch.header();
            assert!(h.attributes.is_control() && h.attributes.is_transactional());
            assert_eq!((h.producer_id, h.producer_epoch), (42, 3));
            let mut scratch = Vec::new();
            let record = batch.records(&mut scratch).unwrap().next().unwrap().unwrap();
            assert_eq!(EndTxnMarker::from_record(&record).unwrap(), marker);
        }
    }
}
