//! The sender thread: waits for closed batches (or for the oldest open batch's linger), encodes
//! them with the producer id, epoch and sequence number, and appends them to the log.
//!
//! It is an OS thread, not a task, because appending is blocking file I/O (and an fsync under
//! `flush.messages=1`): producers never block the async runtime.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use fjord_log::TopicPartition;

use super::Shared;
use super::accumulator::ReadyBatch;
use crate::events::ClientEvent;

pub(crate) fn run(shared: &Arc<Shared>) {
    let mut sequences: HashMap<TopicPartition, i32> = HashMap::new();
    let mut identity = (-1i64, -1i16);
    let mut bytes = Vec::new();
    loop {
        let batches: Vec<ReadyBatch> = {
            let mut state = shared.state.lock();
            loop {
                let closing = shared.closed.load(Ordering::Acquire);
                if closing {
                    state.close_all_open();
                }
                let next_deadline = state.close_expired(Instant::now(), shared.config.linger);
                if !state.ready.is_empty() {
                    break state.ready.drain(..).collect();
                }
                if closing && !state.has_open() {
                    return;
                }
                match next_deadline {
                    Some(deadline) => {
                        shared.work.wait_until(&mut state, deadline);
                    }
                    None => shared.work.wait(&mut state),
                }
            }
        };
        for batch in batches {
            // A new producer id or epoch (init_transactions) restarts every sequence at 0.
            let now = (
                shared.producer_id.load(Ordering::Acquire),
                shared.producer_epoch.load(Ordering::Acquire),
            );
            if now != identity {
                identity = now;
                sequences.clear();
            }
            send(shared, batch, identity, &mut sequences, &mut bytes);
        }
    }
}

/// For a transactional producer, adds the partition to the open transaction before its first
/// batch (Kafka's `AddPartitionsToTxn`), so the coordinator knows where to write markers.
fn add_to_transaction(
    shared: &Shared,
    partition: &TopicPartition,
    identity: (i64, i16),
) -> crate::Result<bool> {
    let Some(transactional_id) = &shared.config.transactional_id else { return Ok(false) };
    if shared.txn.lock().partitions.contains(partition) {
        return Ok(true);
    }
    shared.broker.transaction_coordinator().add_partitions(
        transactional_id,
        identity.0,
        identity.1,
        std::slice::from_ref(partition),
    )?;
    shared.txn.lock().partitions.insert(partition.clone());
    Ok(true)
}

fn send(
    shared: &Shared,
    batch: ReadyBatch,
    identity: (i64, i16),
    sequences: &mut HashMap<TopicPartition, i32>,
    bytes: &mut Vec<u8>,
) {
    let ReadyBatch { partition, mut builder, completion, reserved, ticket } = batch;
    let records = builder.record_count();
    let (producer_id, producer_epoch) = identity;
    let sequence = if producer_id >= 0 { *sequences.get(&partition).unwrap_or(&0) } else { -1 };
    builder.set_producer(producer_id, producer_epoch, sequence);
    bytes.clear();
    let started = Instant::now();
    let result = add_to_transaction(shared, &partition, identity).and_then(|transactional| {
        builder.set_transactional(transactional);
        builder
            .build_into(bytes)
            .map_err(|source| {
                crate::BrokerError::Log(fjord_log::LogError::InvalidRecord {
                    tp: partition.clone(),
                    source,
                })
            })
            .and_then(|()| shared.broker.produce_blocking(&partition, bytes))
    });
    let duration = started.elapsed();
    match result {
        Ok(info) => {
            if producer_id >= 0 {
                // Sequences wrap at i32::MAX to 0, as Kafka's do.
                let next = (sequence as i64 + records as i64) % (i32::MAX as i64 + 1);
                sequences.insert(partition.clone(), next as i32);
            }
            metrics::counter!("fjord_producer_records_total", "topic" => partition.topic.to_string())
                .increment(records as u64);
            metrics::counter!("fjord_producer_bytes_total", "topic" => partition.topic.to_string())
                .increment(bytes.len() as u64);
            metrics::histogram!("fjord_producer_request_latency_seconds")
                .record(duration.as_secs_f64());
            completion.complete(Ok((info.first_offset, info.log_append_time)));
        }
        Err(e) => {
            tracing::warn!(client_id = %shared.config.client_id, %partition, error = %e, "batch failed");
            if shared.config.transactional_id.is_some() {
                let mut txn = shared.txn.lock();
                txn.phase = match &e {
                    crate::BrokerError::ProducerFenced(_)
                    | crate::BrokerError::Log(fjord_log::LogError::InvalidProducerEpoch {
                        ..
                    }) => super::TxnPhase::Fatal(format!("fenced: {e}")),
                    _ => super::TxnPhase::Abortable(format!("a send failed: {e}")),
                };
            }
            metrics::counter!("fjord_producer_record_errors_total", "topic" => partition.topic.to_string())
                .increment(records as u64);
            let e = Arc::new(e);
            shared.send_error.lock().get_or_insert_with(|| e.clone());
            completion.complete(Err(e));
        }
    }
    shared.events.emit(|| ClientEvent::RequestSent {
        client_id: shared.config.client_id.clone(),
        partition,
        records,
        bytes: bytes.len(),
        duration,
    });
    shared.release(reserved);
    shared.state.lock().recycle(builder);
    shared.completed.send_modify(|done| *done = (*done).max(ticket));
}
