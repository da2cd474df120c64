//! `delivery = 'exactly_once'`: each run of rows is committed as one JetStream atomic
//! batch, so after any crash every batch is in the stream entirely or not at all.
//!
//! async-nats has no atomic batch API, so the protocol is written here (NATS ADR-50, "JetStream Batch Publishing"):
//! messages 1..n-1 carry `Nats-Batch-Id` and `Nats-Batch-Sequence` and are published
//! without a reply subject (the server answers nothing for them; a reply subject would
//! get an empty answer); message n adds `Nats-Batch-Commit: 1` and its ack commits the
//! batch.
//!
//! Boundaries are deterministic: a batch ends at every multiple of `atomic_batch_size`
//! rows counted over the statement, and at the end of each input batch. Every message
//! carries its row's `Nats-Msg-Id`. A rerun of the same statement therefore sends the
//! same batches; the server refuses a batch containing an id it already stored, whole
//! (error 10201), which here means "committed before". Such a batch, or one whose
//! boundaries moved, is then sent message by message with the same ids, so the stream
//! deduplicates each one: nothing is lost and nothing is stored twice.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::ops::Range;

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use tokio::time::Instant;
use tracing::{debug, info};

use async_trait::async_trait;
use futures::FutureExt;

use crate::deliver::driver::{self, Link, Step, Work};
use crate::deliver::failure::Failure;
use crate::deliver::jetstream::stream::{AckFuture, Acked, StreamAcks};
use crate::deliver::retry::Retry;
use crate::deliver::rows::{BATCH_COMMIT, BATCH_ID, BATCH_SEQUENCE, Message, Planned, RowPlanner};
use crate::encode::EncodedBatch;
use crate::error::Result as SinkResult;
use crate::metrics::SinkMetrics;

/// The exactly-once publisher of one statement.
pub(crate) struct Atomic {
    acks: StreamAcks,
    batch_size: usize,
    planner: RowPlanner,
    /// Unique per execution, so batch ids of a rerun never collide with open ones.
    run_id: String,
    batches_sent: u64,
}

/// What committing one run of rows found.
enum Committed {
    /// Stored now as one atomic batch.
    Atomic,
    /// Already (partly) stored: sent one by one, with this many duplicates.
    OneByOne { duplicates: u64 },
}

/// One run of rows being committed: its dead letters and its atomic batch.
struct Commit<'a> {
    atomic: &'a mut Atomic,
    messages: &'a [(usize, Message)],
    dead_letters: &'a [Message],
    committed: Option<Committed>,
}

#[async_trait]
impl Work for Commit<'_> {
    async fn attempt(&mut self, link: &mut Link) -> Result<Step, Failure> {
        // Dead letters first, each acknowledged: they go to another stream, so they
        // cannot be part of the atomic batch. Their ids make a resend a duplicate.
        self.atomic.one_by_one(link, self.dead_letters).await?;
        let committed = self.atomic.commit_atomic(link, self.messages).await?;
        self.committed = Some(committed);
        Ok(Step::Done)
    }
}

impl Atomic {
    pub(crate) fn new(acks: StreamAcks, batch_size: usize, planner: RowPlanner) -> Self {
        let run_id = format!("{:016x}", RandomState::new().hash_one(Instant::now()));
        Atomic {
            acks,
            batch_size,
            planner,
            run_id,
            batches_sent: 0,
        }
    }

    pub(crate) fn planner(&mut self) -> &mut RowPlanner {
        &mut self.planner
    }

    /// Commits every row of `batch`, one atomic batch per run of rows.
    pub(crate) async fn send(
        &mut self,
        batch: &EncodedBatch,
        rows_before: u64,
        link: &mut Link,
        retry: &mut Retry,
        metrics: &SinkMetrics,
    ) -> SinkResult<()> {
        let mut start = 0;
        while start < batch.len() {
            let position = rows_before + start as u64;
            let to_boundary = self.batch_size - (position % self.batch_size as u64) as usize;
            let end = batch.len().min(start + to_boundary);
            self.commit(batch, rows_before, start..end, link, retry, metrics)
                .await?;
            start = end;
        }
        Ok(())
    }

    async fn commit(
        &mut self,
        batch: &EncodedBatch,
        rows_before: u64,
        rows: Range<usize>,
        link: &mut Link,
        retry: &mut Retry,
        metrics: &SinkMetrics,
    ) -> SinkResult<()> {
        let mut messages = Vec::with_capacity(rows.len());
        let mut dead_letters = Vec::new();
        let mut skipped = 0;
        for i in rows.clone() {
            match self.planner.plan(batch, i, rows_before + i as u64 + 1) {
                Planned::Send(m) => messages.push((i, m)),
                Planned::DeadLetter(m) => dead_letters.push(m),
                Planned::Skip => skipped += 1,
            }
        }
        let bytes = messages.iter().map(|(_, m)| m.size());
        let bytes = bytes.chain(dead_letters.iter().map(|m| m.size()));
        metrics.in_flight(messages.len() + dead_letters.len(), bytes.sum());
        let started = Instant::now();
        let mut work = Commit {
            atomic: self,
            messages: &messages,
            dead_letters: &dead_letters,
            committed: None,
        };
        driver::run(link, retry, &mut work).await?;
        metrics.in_flight(0, 0);
        if !messages.is_empty() {
            metrics.acked(started.elapsed());
        }
        metrics.dead_lettered(dead_letters.len());
        metrics.skipped(skipped);
        let bytes = messages.iter().map(|(i, _)| batch.payload_len(*i)).sum();
        metrics.published_rows(messages.len(), bytes);
        if let Some(Committed::OneByOne { duplicates }) = work.committed {
            metrics.duplicates(duplicates as usize);
        }
        Ok(())
    }

    /// Sends `messages` as one atomic batch; falls back to one by one when the stream
    /// already has some of them.
    async fn commit_atomic(
        &mut self,
        link: &Link,
        messages: &[(usize, Message)],
    ) -> Result<Committed, Failure> {
        let Some(((_, last), rest)) = messages.split_last() else {
            return Ok(Committed::Atomic);
        };
        self.batches_sent += 1;
        let batch_id = format!("{}-{}", self.run_id, self.batches_sent);
        // A lost connection is replaced by the driver; the check only saves queueing a
        // batch on a client that will never send it.
        if link.connection.lost() {
            return Err(Failure::lost("before a batch was sent"));
        }
        let client = &link.connection.client;
        for (sequence, (_, m)) in rest.iter().enumerate() {
            let headers = batch_headers(m, &batch_id, sequence + 1, false);
            client
                .publish_with_headers(m.subject.clone(), headers, m.payload.clone())
                .await
                .map_err(|e| Failure::core_publish(e, &m.subject))?;
        }
        let headers = batch_headers(last, &batch_id, messages.len(), true);
        let mut ack = self.publish_one(link, last, Some(headers)).await?;
        let deadline = Instant::now() + self.acks.confirm_timeout;
        match self
            .acks
            .wait(link, &mut ack, deadline, &last.subject)
            .await
        {
            Ok(Acked::Stored(ack)) => {
                debug!(batch = %batch_id, seq = ack.sequence, "nats_sink: atomic batch committed");
                Ok(Committed::Atomic)
            }
            Ok(Acked::AlreadyStored) => {
                info!(
                    rows = messages.len(),
                    "nats_sink: the stream already has some of these rows (committed by an earlier run?); sending them one by one so it keeps each exactly once"
                );
                let messages: Vec<Message> = messages.iter().map(|(_, m)| m.clone()).collect();
                let duplicates = self.one_by_one(link, &messages).await?;
                Ok(Committed::OneByOne { duplicates })
            }
            Err(failure) => Err(failure),
        }
    }

    /// Publishes each message with its own ack (its message id deduplicates it), pipelined;
    /// returns how many the stream already had.
    async fn one_by_one(&self, link: &Link, messages: &[Message]) -> Result<u64, Failure> {
        let mut acks = Vec::with_capacity(messages.len());
        for m in messages {
            let ack = self.publish_one(link, m, m.headers.clone()).await?;
            acks.push(ack);
        }
        let deadline = Instant::now() + self.acks.confirm_timeout;
        let mut duplicates = 0;
        for (ack, m) in acks.iter_mut().zip(messages) {
            let ack: PublishAck = self
                .acks
                .wait(link, ack, deadline, &m.subject)
                .await
                .and_then(Acked::stored)?;
            duplicates += u64::from(ack.duplicate);
        }
        Ok(duplicates)
    }

    async fn publish_one(
        &self,
        link: &Link,
        m: &Message,
        headers: Option<HeaderMap>,
    ) -> Result<AckFuture, Failure> {
        let mut publish = PublishMessage::build().payload(m.payload.clone());
        if let Some(headers) = headers {
            publish = publish.headers(headers);
        }
        match link.js().send_publish(m.subject.clone(), publish).await {
            Ok(ack) => Ok(ack.into_future().fuse()),
            Err(e) => Err(self.acks.failure(link, &e, &m.subject).await),
        }
    }
}

/// The message's own headers plus the batch protocol's.
fn batch_headers(m: &Message, batch_id: &str, sequence: usize, commit: bool) -> HeaderMap {
    let mut headers = m.headers.clone().unwrap_or_default();
    headers.insert(BATCH_ID, batch_id);
    headers.insert(BATCH_SEQUENCE, sequence.to_string().as_str());
    if commit {
        headers.insert(BATCH_COMMIT, "1");
    }
    headers
}
