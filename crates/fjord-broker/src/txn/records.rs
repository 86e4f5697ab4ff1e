//! The records of `__transaction_state`, in Kafka's layout (`TransactionLogKey` v0 and
//! `TransactionLogValue` v0): one record per state change of a transactional id, the newest
//! wins, a null value deletes the id.

use std::collections::BTreeSet;

use fjord_log::TopicPartition;

use super::{TransactionMetadata, TransactionState};

/// Encodes the key of a transactional id's record.
pub(crate) fn encode_key(transactional_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + transactional_id.len());
    out.extend_from_slice(&0i16.to_be_bytes());
    put_string(&mut out, transactional_id);
    out
}

/// Encodes a transactional id's state.
pub(crate) fn encode_value(meta: &TransactionMetadata) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&0i16.to_be_bytes());
    out.extend_from_slice(&meta.producer_id.to_be_bytes());
    out.extend_from_slice(&meta.producer_epoch.to_be_bytes());
    out.extend_from_slice(&(meta.timeout_ms as i32).to_be_bytes());
    out.push(meta.state.id() as u8);
    // Partitions grouped by topic, as Kafka writes them.
    let mut by_topic: Vec<(&str, Vec<u32>)> = Vec::new();
    for tp in &meta.partitions {
        match by_topic.last_mut() {
            Some((topic, partitions)) if *topic == &*tp.topic => partitions.push(tp.partition),
            _ => by_topic.push((&tp.topic, vec![tp.partition])),
        }
    }
    out.extend_from_slice(&(by_topic.len() as i32).to_be_bytes());
    for (topic, partitions) in by_topic {
        put_string(&mut out, topic);
        out.extend_from_slice(&(partitions.len() as i32).to_be_bytes());
        for p in partitions {
            out.extend_from_slice(&(p as i32).to_be_bytes());
        }
    }
    out.extend_from_slice(&meta.last_update_ms.to_be_bytes());
    out.extend_from_slice(&meta.start_ms.to_be_bytes());
    out
}

/// Decodes a key; `None` for another version or malformed bytes.
pub(crate) fn decode_key(bytes: &[u8]) -> Option<String> {
    let mut r = Reader { buf: bytes, pos: 0 };
    if r.i16()? != 0 {
        return None;
    }
    r.string()
}

/// Decodes a value into the metadata of `transactional_id`; `None` if malformed.
pub(crate) fn decode_value(transactional_id: &str, bytes: &[u8]) -> Option<TransactionMetadata> {
    let mut r = Reader { buf: bytes, pos: 0 };
    if r.i16()? != 0 {
        return None;
    }
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?.max(0) as u64;
    let state = TransactionState::from_id(r.u8()? as i8)?;
    let topics = r.i32()?;
    let mut partitions = BTreeSet::new();
    for _ in 0..topics.max(0) {
        let topic = r.string()?;
        let count = r.i32()?;
        for _ in 0..count.max(0) {
            partitions.insert(TopicPartition::new(topic.as_str(), r.i32()?.max(0) as u32));
        }
    }
    let last_update_ms = r.i64()?;
    let start_ms = r.i64()?;
    Some(TransactionMetadata {
        transactional_id: transactional_id.to_string(),
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        start_ms,
        last_update_ms,
    })
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as i16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.buf.get(self.pos..self.pos + N)?;
        self.pos += N;
        bytes.try_into().ok()
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take::<1>()?[0])
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take()?))
    }
    fn string(&mut self) -> Option<String> {
        let len = self.i16()?;
        let len = usize::try_from(len).ok()?;
        let bytes = self.buf.get(self.pos..self.pos + len)?;
        self.pos += len;
        String::from_utf8(bytes.to_vec()).ok()
    }
}
