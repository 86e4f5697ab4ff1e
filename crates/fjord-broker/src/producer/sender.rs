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
            send(shared, batch, &mut sequences, &mut bytes);
        }
    }
}

fn send(shared: &Shared, batch: ReadyBatch, sequences: &mut HashMap<TopicPartition, i32>, bytes: &mut Vec<u8>) {
    let ReadyBatch { partition, mut builder, completion, reserved, ticket } = batch;
    let records = builder.record_count();
    let sequence = if shared.producer_id >= 0 { *sequences.get(&partition).unwrap_or(&0) } else { -1 };
    builder.set_producer(shared.producer_id, shared.producer_epoch, sequence);
    bytes.clear();
    let started = Instant::now();
    let result = builder
        .build_into(bytes)
        .map_err(|source| crate::BrokerError::Log(fjord_log::LogError::InvalidRecord { tp: partition.clone(), source }))
        .and_then(|()| shared.broker.produce_blocking(&partition, bytes));
    let duration = started.elapsed();
    match result {
        Ok(info) => {
            if shared.producer_id >= 0 {
                // Sequences wrap at i32::MAX to 0, as Kafka's do.
                let next = (sequence as i64 + records as i64) % (i32::MAX as i64 + 1);
                sequences.insert(partition.clone(), next as i32);
            }
            metrics::counter!("fjord_producer_records_total", "topic" => partition.topic.to_string())
                .increment(records as u64);
            metrics::counter!("fjord_producer_bytes_total", "topic" => partition.topic.to_string())
                .increment(bytes.len() as u64);
            metrics::histogram!("fjord_producer_request_latency_seconds").record(duration.as_secs_f64());
            completion.complete(Ok((info.first_offset, info.log_append_time)));
        }
        Err(e) => {
            tracing::warn!(client_id = %shared.config.client_id, %partition, error = %e, "batch failed");
            metrics::counter!("fjord_producer_record_errors_total", "topic" => partition.topic.to_string())
                .increment(records as u64);
            completion.complete(Err(Arc::new(e)));
        }
    }
    shared.events.emit(|| ClientEvent::RequestSent {
        client_id: shared.config.client_id.clone(),
        partition,
        records,
        bytes: bytes.len(),
        duration,
    });
    shared.buffer_used.fetch_sub(reserved, Ordering::AcqRel);
    shared.space_freed.notify_waiters();
    shared.state.lock().recycle(builder);
    shared.completed.send_modify(|done| *done = (*done).max(ticket));
}
