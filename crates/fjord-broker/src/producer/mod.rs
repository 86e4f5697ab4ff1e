//! The producer: batches records per partition and appends them to the broker, as Kafka's
//! `KafkaProducer`.
//!
//! `send` picks the partition (murmur2 of the key, the record's own partition, or a sticky
//! partition for records without a key, KIP-794), appends the record to that partition's open
//! batch and returns a [`DeliveryFuture`]. A batch closes when it reaches `batch_size` or when it
//! has waited `linger`; a sender thread (like Kafka's network thread) encodes closed batches —
//! compression happens there, off the caller's path — stamps them with the producer id, epoch
//! and sequence number, and appends them to the log. `buffer_memory` bounds the bytes waiting:
//! `send` waits for space, up to `max_block`.
//!
//! Idempotence (on by default, as in Kafka 3+): the producer gets a producer id, and every batch
//! carries a per-partition sequence number, so the log stores a retried batch once and refuses
//! gaps.
//!
//! Nothing here allocates per record: records are copied into reused batch buffers, and the
//! futures of one batch share its completion.

mod accumulator;
mod sender;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI16, AtomicI64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fjord_log::TopicPartition;
use fjord_log::record::{Compression, Header, RecordBatchBuilder};
use futures::FutureExt;
use parking_lot::{Condvar, Mutex};
use tokio::sync::{Notify, broadcast, watch};

use crate::broker::Broker;
use crate::error::{BrokerError, Result};
use crate::events::{ClientEvent, Events};
use accumulator::{AccState, Completion};

/// Producer settings, with Kafka's names in the docs.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// `client.id`: names the producer in events, metrics and logs.
    pub client_id: String,
    /// `linger.ms`: how long a batch waits for more records before it is sent (5 ms, Kafka 4's
    /// default).
    pub linger: Duration,
    /// `batch.size`: a batch closes at this many (uncompressed) bytes (16 KiB).
    pub batch_size: usize,
    /// `compression.type` for the batches this producer writes.
    pub compression: Compression,
    /// `buffer.memory`: most bytes of records waiting to be sent (32 MiB).
    pub buffer_memory: usize,
    /// `max.block.ms`: how long `send` waits for buffer space (60 s).
    pub max_block: Duration,
    /// `max.request.size`: the largest record (or batch) accepted (1 MiB).
    pub max_request_size: usize,
    /// `enable.idempotence` (true).
    pub enable_idempotence: bool,
    /// `metadata.max.age.ms`: how often partition counts are looked up again (5 min).
    pub metadata_max_age: Duration,
    /// `transactional.id`: makes the producer transactional (and idempotent). One live
    /// producer per id: `init_transactions` fences older ones.
    pub transactional_id: Option<String>,
    /// `transaction.timeout.ms` (1 min): the coordinator aborts a transaction open longer.
    pub transaction_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            client_id: "fjord-producer".into(),
            linger: Duration::from_millis(5),
            batch_size: 16 * 1024,
            compression: Compression::None,
            buffer_memory: 32 * 1024 * 1024,
            max_block: Duration::from_secs(60),
            max_request_size: 1024 * 1024,
            enable_idempotence: true,
            metadata_max_age: Duration::from_secs(300),
            transactional_id: None,
            transaction_timeout: Duration::from_secs(60),
        }
    }
}

/// A record to send. Fields are borrowed: the producer copies them into its batch.
#[derive(Debug, Clone, Copy)]
pub struct ProducerRecord<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition; `None` lets the partitioner choose (by key, or sticky without a key).
    pub partition: Option<u32>,
    /// The key.
    pub key: Option<&'a [u8]>,
    /// The value; `None` is a tombstone on a compacted topic.
    pub value: Option<&'a [u8]>,
    /// Headers, in order (keys may repeat).
    pub headers: &'a [Header<'a>],
    /// The timestamp; `None` is now.
    pub timestamp: Option<i64>,
}

impl<'a> ProducerRecord<'a> {
    /// A record with a value and nothing else.
    pub fn new(topic: &'a str, value: &'a [u8]) -> Self {
        ProducerRecord {
            topic,
            partition: None,
            key: None,
            value: Some(value),
            headers: &[],
            timestamp: None,
        }
    }

    /// With a key.
    pub fn key(mut self, key: &'a [u8]) -> Self {
        self.key = Some(key);
        self
    }

    /// For a given partition.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// With headers.
    pub fn headers(mut self, headers: &'a [Header<'a>]) -> Self {
        self.headers = headers;
        self
    }

    /// With a timestamp.
    pub fn timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Where a record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The topic and partition.
    pub partition: TopicPartition,
    /// The record's offset.
    pub offset: i64,
    /// The record's timestamp (the broker's under `LogAppendTime`).
    pub timestamp: i64,
}

/// Resolves when the record's batch is in the log (with the record's offset) or failed.
#[derive(Debug)]
pub struct DeliveryFuture {
    completion: Arc<Completion>,
    partition: TopicPartition,
    offset_delta: i32,
    timestamp: i64,
    waker_slot: Option<usize>,
}

impl std::future::Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match this.completion.poll_result(cx, &mut this.waker_slot) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok((base_offset, log_append_time))) => Poll::Ready(Ok(RecordMetadata {
                partition: this.partition.clone(),
                offset: base_offset + this.offset_delta as i64,
                timestamp: if log_append_time >= 0 { log_append_time } else { this.timestamp },
            })),
            Poll::Ready(Err(e)) => Poll::Ready(Err(BrokerError::Delivery(e))),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) broker: Broker,
    pub(crate) config: ProducerConfig,
    pub(crate) state: Mutex<AccState>,
    /// Wakes the sender thread.
    pub(crate) work: Condvar,
    pub(crate) buffer_used: AtomicUsize,
    pub(crate) space_freed: Notify,
    /// Wakes threads blocked in `send_blocking` when buffer space frees up.
    pub(crate) space_lock: Mutex<()>,
    pub(crate) space_condvar: Condvar,
    /// The first batch failure since `take_send_error` was last called.
    pub(crate) send_error: Mutex<Option<Arc<BrokerError>>>,
    /// The number of the last batch the sender finished (batches are numbered as they close).
    pub(crate) completed: watch::Sender<u64>,
    pub(crate) events: Events,
    pub(crate) producer_id: AtomicI64,
    pub(crate) producer_epoch: AtomicI16,
    pub(crate) closed: AtomicBool,
    /// Transaction state, for a transactional producer.
    pub(crate) txn: Mutex<TxnState>,
}

/// Where a transactional producer is in its protocol (Kafka's `TransactionManager` states).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TxnPhase {
    /// `init_transactions` has not run.
    Uninitialized,
    /// Between transactions.
    Ready,
    /// `begin_transaction` ran.
    InTransaction,
    /// A send failed: the transaction can only be aborted.
    Abortable(String),
    /// Fenced or otherwise unusable: close the producer.
    Fatal(String),
}

#[derive(Debug)]
pub(crate) struct TxnState {
    pub(crate) phase: TxnPhase,
    /// Partitions added to the open transaction.
    pub(crate) partitions: std::collections::HashSet<TopicPartition>,
}

/// A consumer's group position, for `send_offsets_to_transaction` (Kafka's
/// `ConsumerGroupMetadata`): the generation check fences a producer whose consumer lost its
/// partitions in a rebalance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    /// The group.
    pub group_id: String,
    /// The member id, or empty.
    pub member_id: String,
    /// The generation, or -1.
    pub generation_id: i32,
}

impl Shared {
    /// Gives buffer space back and wakes whoever waits for it.
    pub(crate) fn release(&self, size: usize) {
        self.buffer_used.fetch_sub(size, Ordering::AcqRel);
        self.space_freed.notify_waiters();
        let _guard = self.space_lock.lock();
        self.space_condvar.notify_all();
    }

    /// Tells the sender thread to send what is left and exit. The flag is set under the state
    /// lock so the sender cannot check it and then miss the wakeup.
    fn stop_sender(&self) {
        let _state = self.state.lock();
        self.closed.store(true, Ordering::Release);
        self.work.notify_one();
    }
}

/// A producer. Share it between tasks behind an `Arc`; `send` takes `&self`.
pub struct Producer {
    shared: Arc<Shared>,
    sender: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("client_id", &self.shared.config.client_id).finish()
    }
}

impl Producer {
    /// A producer on `broker`.
    pub fn new(broker: &Broker, config: ProducerConfig) -> Result<Producer> {
        if config.batch_size == 0 || config.buffer_memory < config.batch_size {
            return Err(BrokerError::InvalidConfig {
                name: "buffer.memory",
                reason: format!(
                    "must be at least batch.size ({}) and batch.size above 0; got {}",
                    config.batch_size, config.buffer_memory
                ),
            });
        }
        let transactional = config.transactional_id.is_some();
        if transactional && !config.enable_idempotence {
            return Err(BrokerError::InvalidConfig {
                name: "enable.idempotence",
                reason: "a transactional producer is idempotent: leave it on".into(),
            });
        }
        let (producer_id, producer_epoch) = if transactional {
            (-1, -1) // from init_transactions
        } else if config.enable_idempotence {
            broker.init_producer_id()?
        } else {
            (-1, -1)
        };
        let shared = Arc::new(Shared {
            broker: broker.clone(),
            config,
            state: Mutex::new(AccState::default()),
            work: Condvar::new(),
            buffer_used: AtomicUsize::new(0),
            space_freed: Notify::new(),
            space_lock: Mutex::new(()),
            space_condvar: Condvar::new(),
            send_error: Mutex::new(None),
            completed: watch::channel(0).0,
            events: Events::default(),
            producer_id: AtomicI64::new(producer_id),
            producer_epoch: AtomicI16::new(producer_epoch),
            closed: AtomicBool::new(false),
            txn: Mutex::new(TxnState {
                phase: if transactional { TxnPhase::Uninitialized } else { TxnPhase::Ready },
                partitions: Default::default(),
            }),
        });
        let thread_shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("fjord-producer-{}", shared.config.client_id))
            .spawn(move || sender::run(&thread_shared))
            .map_err(|e| {
                BrokerError::IllegalState(format!("cannot start the sender thread: {e}"))
            })?;
        Ok(Producer { shared, sender: Mutex::new(Some(handle)) })
    }

    /// The producer id and epoch (-1 without idempotence).
    pub fn producer_id(&self) -> (i64, i16) {
        (
            self.shared.producer_id.load(Ordering::Acquire),
            self.shared.producer_epoch.load(Ordering::Acquire),
        )
    }

    /// Subscribes to the producer's events.
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.shared.events.subscribe()
    }

    /// Adds a record to its partition's batch, waiting for buffer space if needed, and returns
    /// a future of its delivery. Awaiting the returned future is optional: the record is sent
    /// either way (`flush` waits for everything sent so far).
    pub async fn send(&self, record: ProducerRecord<'_>) -> Result<DeliveryFuture> {
        self.check_sendable()?;
        let size = self.record_size(&record)?;
        self.reserve(size).await?;
        match accumulator::append(&self.shared, &record, size) {
            Ok(future) => Ok(future),
            Err(e) => {
                self.release(size);
                Err(e)
            }
        }
    }

    /// `send` for threads that are not async tasks (a stream thread): waits for buffer space by
    /// blocking the calling thread. Never call it from an async task.
    pub fn send_blocking(&self, record: ProducerRecord<'_>) -> Result<DeliveryFuture> {
        self.check_sendable()?;
        let size = self.record_size(&record)?;
        let shared = &self.shared;
        if !self.try_reserve(size) {
            let deadline = Instant::now() + shared.config.max_block;
            let mut guard = shared.space_lock.lock();
            while !self.try_reserve(size) {
                drop(guard);
                self.wake_sender_now();
                guard = shared.space_lock.lock();
                if !self.try_reserve(size) {
                    if shared.space_condvar.wait_until(&mut guard, deadline).timed_out() {
                        return Err(BrokerError::BufferExhausted {
                            buffer_memory: shared.config.buffer_memory,
                            max_block_ms: shared.config.max_block.as_millis() as u64,
                        });
                    }
                } else {
                    break;
                }
            }
        }
        match accumulator::append(&self.shared, &record, size) {
            Ok(future) => Ok(future),
            Err(e) => {
                self.release(size);
                Err(e)
            }
        }
    }

    /// The first batch failure since the last call: for callers that do not await every
    /// delivery future and check after a `flush`.
    pub fn take_send_error(&self) -> Option<Arc<BrokerError>> {
        self.shared.send_error.lock().take()
    }

    fn check_sendable(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(BrokerError::Closed("producer"));
        }
        if self.shared.config.transactional_id.is_some() {
            match &self.shared.txn.lock().phase {
                TxnPhase::InTransaction => {}
                TxnPhase::Fatal(reason) | TxnPhase::Abortable(reason) => {
                    return Err(BrokerError::InvalidTxnState(format!(
                        "{reason}; abort the transaction"
                    )));
                }
                _ => {
                    return Err(BrokerError::InvalidTxnState(
                        "a transactional producer sends inside a transaction: call begin_transaction first".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    fn record_size(&self, record: &ProducerRecord<'_>) -> Result<usize> {
        let size =
            RecordBatchBuilder::record_size_upper_bound(record.key, record.value, record.headers);
        if size + fjord_log::record::batch::RECORD_BATCH_OVERHEAD
            > self.shared.config.max_request_size
        {
            return Err(BrokerError::RecordTooLarge {
                size,
                max: self.shared.config.max_request_size,
            });
        }
        Ok(size)
    }

    /// Sends a record and waits for its delivery (KafkaJS's `producer.send`).
    pub async fn send_and_wait(&self, record: ProducerRecord<'_>) -> Result<RecordMetadata> {
        self.send(record).await?.await
    }

    /// Sends records and waits until all are delivered; the metadata come back in order.
    pub async fn send_batch(&self, records: &[ProducerRecord<'_>]) -> Result<Vec<RecordMetadata>> {
        let mut futures = Vec::with_capacity(records.len());
        for record in records {
            futures.push(self.send(*record).await?);
        }
        self.wake_sender_now();
        futures::future::try_join_all(futures).await
    }

    /// Takes `size` bytes of buffer space without waiting, if there is room (or the buffer is
    /// empty: a record larger than the buffer still goes, alone).
    fn try_reserve(&self, size: usize) -> bool {
        let shared = &self.shared;
        let mut used = shared.buffer_used.load(Ordering::Acquire);
        loop {
            if used + size > shared.config.buffer_memory && used != 0 {
                return false;
            }
            match shared.buffer_used.compare_exchange_weak(
                used,
                used + size,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    async fn reserve(&self, size: usize) -> Result<()> {
        // The common case costs one compare-and-swap; only a full buffer registers a waiter.
        if self.try_reserve(size) {
            return Ok(());
        }
        let shared = &self.shared;
        let deadline = Instant::now() + shared.config.max_block;
        loop {
            let notified = shared.space_freed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.try_reserve(size) {
                return Ok(());
            }
            // Full: make sure the sender is not waiting out a linger while we wait for space.
            self.wake_sender_now();
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                return Err(BrokerError::BufferExhausted {
                    buffer_memory: shared.config.buffer_memory,
                    max_block_ms: shared.config.max_block.as_millis() as u64,
                });
            }
        }
    }

    fn release(&self, size: usize) {
        self.shared.release(size);
    }

    /// Closes every open batch now instead of waiting for its linger.
    fn wake_sender_now(&self) {
        let mut state = self.shared.state.lock();
        state.close_all_open();
        self.shared.work.notify_one();
    }

    /// Sends every record added so far and waits until all are delivered or failed (Kafka's
    /// `flush`).
    pub async fn flush(&self) -> Result<()> {
        let target = {
            let mut state = self.shared.state.lock();
            state.close_all_open();
            self.shared.work.notify_one();
            state.last_ticket()
        };
        let mut completed = self.shared.completed.subscribe();
        completed
            .wait_for(|&done| done >= target)
            .await
            .map_err(|_| BrokerError::Closed("producer"))?;
        Ok(())
    }

    fn transactional_id(&self) -> Result<&str> {
        self.shared.config.transactional_id.as_deref().ok_or_else(|| {
            BrokerError::InvalidTxnState("this producer has no transactional.id".into())
        })
    }

    fn expect_phase(&self, allowed: &[TxnPhase], operation: &str) -> Result<()> {
        let state = self.shared.txn.lock();
        if let TxnPhase::Fatal(reason) = &state.phase {
            return Err(BrokerError::InvalidTxnState(format!("{reason}: close this producer")));
        }
        if !allowed
            .iter()
            .any(|p| std::mem::discriminant(p) == std::mem::discriminant(&state.phase))
        {
            return Err(BrokerError::InvalidTxnState(format!(
                "cannot {operation} in state {:?}",
                state.phase
            )));
        }
        Ok(())
    }

    /// Registers the transactional id with the coordinator (Kafka's `initTransactions`): gets
    /// the producer id and a new epoch, which fences every older producer with the same id and
    /// aborts its open transaction.
    pub async fn init_transactions(&self) -> Result<()> {
        let transactional_id = self.transactional_id()?.to_string();
        self.expect_phase(&[TxnPhase::Uninitialized, TxnPhase::Ready], "init transactions")?;
        let broker = self.shared.broker.clone();
        let timeout = self.shared.config.transaction_timeout;
        let (producer_id, epoch) = blocking(move || {
            broker.transaction_coordinator().init_producer_id(&broker, &transactional_id, timeout)
        })
        .await?;
        self.shared.producer_id.store(producer_id, Ordering::Release);
        self.shared.producer_epoch.store(epoch, Ordering::Release);
        let mut state = self.shared.txn.lock();
        state.phase = TxnPhase::Ready;
        state.partitions.clear();
        Ok(())
    }

    /// Starts a transaction (Kafka's `beginTransaction`).
    pub fn begin_transaction(&self) -> Result<()> {
        self.transactional_id()?;
        self.expect_phase(&[TxnPhase::Ready], "begin a transaction")?;
        self.shared.txn.lock().phase = TxnPhase::InTransaction;
        Ok(())
    }

    /// Adds a consumer's offsets to the transaction (Kafka's `sendOffsetsToTransaction`): they
    /// become the group's committed offsets only if the transaction commits. The generation in
    /// `group` is checked, so a producer whose consumer lost its partitions cannot commit them.
    pub async fn send_offsets_to_transaction(
        &self,
        offsets: &[(TopicPartition, i64)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let transactional_id = self.transactional_id()?.to_string();
        self.expect_phase(&[TxnPhase::InTransaction], "send offsets")?;
        let (producer_id, producer_epoch) = self.producer_id();
        let broker = self.shared.broker.clone();
        let group_id = group.group_id.clone();
        let added = blocking(move || {
            broker.transaction_coordinator().add_offsets(
                &broker,
                &transactional_id,
                producer_id,
                producer_epoch,
                &group_id,
            )
        })
        .await;
        self.note_txn_error(&added);
        added?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let request = crate::group::TxnOffsetCommitRequest {
            group_id: group.group_id.clone(),
            producer_id,
            producer_epoch,
            member_id: group.member_id.clone(),
            generation_id: group.generation_id,
            offsets: offsets
                .iter()
                .map(|(tp, offset)| {
                    (
                        tp.clone(),
                        crate::group::OffsetAndMetadata {
                            offset: *offset,
                            leader_epoch: -1,
                            metadata: String::new(),
                            commit_timestamp: now,
                        },
                    )
                })
                .collect(),
        };
        let committed = self.shared.broker.group_coordinator().commit_txn_offsets(request).await;
        self.note_txn_error(&committed);
        committed
    }

    /// Sends everything and commits the transaction (Kafka's `commitTransaction`). If a send
    /// of the transaction failed, nothing commits and the transaction must be aborted.
    pub async fn commit_transaction(&self) -> Result<()> {
        self.end_transaction(true).await
    }

    /// Aborts the transaction (Kafka's `abortTransaction`): its records are never visible to
    /// `read_committed` consumers and its offsets are never committed.
    pub async fn abort_transaction(&self) -> Result<()> {
        self.end_transaction(false).await
    }

    async fn end_transaction(&self, commit: bool) -> Result<()> {
        let transactional_id = self.transactional_id()?.to_string();
        if commit {
            self.expect_phase(&[TxnPhase::InTransaction], "commit")?;
        } else {
            self.expect_phase(
                &[TxnPhase::InTransaction, TxnPhase::Abortable(String::new())],
                "abort",
            )?;
        }
        self.flush().await?;
        if commit && let TxnPhase::Abortable(reason) = &self.shared.txn.lock().phase {
            return Err(BrokerError::InvalidTxnState(format!("{reason}; abort the transaction")));
        }
        let (producer_id, producer_epoch) = self.producer_id();
        let broker = self.shared.broker.clone();
        let started = Instant::now();
        let ended = blocking(move || {
            broker.transaction_coordinator().end_txn(
                &broker,
                &transactional_id,
                producer_id,
                producer_epoch,
                commit,
            )
        })
        .await;
        self.note_txn_error(&ended);
        ended?;
        metrics::histogram!("fjord_producer_transaction_commit_seconds", "result" => if commit { "commit" } else { "abort" })
            .record(started.elapsed().as_secs_f64());
        let mut state = self.shared.txn.lock();
        state.phase = TxnPhase::Ready;
        state.partitions.clear();
        Ok(())
    }

    /// A fenced producer can do nothing more; other transactional errors need an abort.
    fn note_txn_error<T>(&self, result: &Result<T>) {
        if let Err(e) = result {
            let mut state = self.shared.txn.lock();
            state.phase = match e {
                BrokerError::ProducerFenced(_)
                | BrokerError::Log(fjord_log::LogError::InvalidProducerEpoch { .. }) => {
                    TxnPhase::Fatal(e.to_string())
                }
                _ => TxnPhase::Abortable(e.to_string()),
            };
        }
    }

    /// Flushes and stops the sender thread. Sends after `close` fail.
    pub async fn close(&self) -> Result<()> {
        self.flush().await?;
        self.shared.stop_sender();
        let handle = self.sender.lock().take();
        if let Some(handle) = handle {
            tokio::task::spawn_blocking(move || handle.join())
                .map(|r| r.map(|_| ()))
                .await
                .map_err(|e| BrokerError::IllegalState(format!("sender thread failed: {e}")))?;
        }
        self.shared
            .events
            .emit(|| ClientEvent::Stopped { client_id: self.shared.config.client_id.clone() });
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BrokerError::IllegalState(format!("producer task failed: {e}")))?
}

impl Drop for Producer {
    fn drop(&mut self) {
        // The sender thread sends what is left and exits.
        self.shared.stop_sender();
    }
}
