//! Pipelined JetStream publishing: up to `max_in_flight` messages, and about
//! `max_in_flight_bytes` of them, wait for their acks at once, across batch boundaries.
//!
//! Acks are consumed in publish order, so "confirmed" is always a prefix of the
//! statement's rows. A batch stays in memory until all of its rows are confirmed; memory
//! is therefore bounded by the window plus the batches it starts and ends in. When a
//! publish or an ack fails, the failure is classified; a transient one is retried after
//! a backoff by sending again from the first unconfirmed row, in the original order
//! (messages after it that were stored already come back as duplicates when rows carry
//! a message id; without one they may be stored twice: see the README). If the
//! connection was lost, the resend goes through a fresh connection, and nothing the old
//! client still held is ever sent (see `connection`), so the stream keeps the query's
//! order on each subject. A permanent failure fails the statement.

use std::collections::VecDeque;

use async_nats::Subject;
use async_nats::jetstream::Context;
use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_trait::async_trait;
use futures::FutureExt;
use futures::future::FusedFuture;
use tokio::time::Instant;

use crate::deliver::driver::{self, Link, Step, Work};
use crate::deliver::failure::{Failure, TransientKind};
use crate::deliver::jetstream::key_order::KeyOrder;
use crate::deliver::jetstream::stream::{AckFuture, Acked, StreamAcks};
use crate::deliver::retry::Retry;
use crate::deliver::rows::{Message, Planned, RowPlanner};
use crate::encode::EncodedBatch;
use crate::error::Result;
use crate::metrics::SinkMetrics;

/// A batch whose rows are not all confirmed yet.
struct Pending {
    batch: EncodedBatch,
    rows_before: u64,
    /// The next row to publish.
    next: usize,
}

/// A message waiting for its ack.
struct InFlight {
    /// Which pending batch (counted over the statement) and row.
    batch_seq: u64,
    row: usize,
    dead_letter: bool,
    /// The message's subject, which a failed ack is classified with.
    subject: Subject,
    ack: AckFuture,
    /// A failure seen by a non-blocking check: the future is done and must not be polled
    /// again.
    failed: Option<PublishError>,
    deadline: Instant,
    /// The message's size (payload and headers), counted against the byte limit while in
    /// flight.
    bytes: usize,
}

/// How much may wait for acks at once: whichever limit is reached first stops the
/// sending. The message that reaches the byte limit still goes, so one message always
/// does, however large.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowLimit {
    pub messages: usize,
    pub bytes: usize,
}

/// The JetStream publisher of one statement.
pub(crate) struct Window {
    acks: StreamAcks,
    limit: WindowLimit,
    planner: RowPlanner,
    pending: VecDeque<Pending>,
    /// Sequence number of `pending[0]`.
    first_seq: u64,
    /// How many of the statement's first rows are settled: those of the batches
    /// released so far. Only ever grows.
    settled: u64,
    in_flight: VecDeque<InFlight>,
    /// The bytes of the messages in `in_flight`.
    in_flight_bytes: usize,
    /// What was in flight at the last failure, until the next attempt resends it: a
    /// statement that fails for good meanwhile still counts those that the stream acks.
    rewound: VecDeque<InFlight>,
    /// Whether the current run waits for every ack, or returns once all is sent.
    draining: bool,
    metrics: SinkMetrics,
    /// For a key-value bucket: one message per key in flight (see `key_order`).
    key_order: Option<KeyOrder>,
}

impl Window {
    pub(crate) fn new(
        acks: StreamAcks,
        limit: WindowLimit,
        planner: RowPlanner,
        metrics: SinkMetrics,
    ) -> Self {
        Window {
            acks,
            limit,
            planner,
            pending: VecDeque::new(),
            first_seq: 0,
            settled: 0,
            in_flight: VecDeque::new(),
            in_flight_bytes: 0,
            rewound: VecDeque::new(),
            draining: false,
            metrics,
            key_order: None,
        }
    }

    /// Keeps at most one message per subject in flight, so that a subject's messages are
    /// stored in row order under any retry (see `key_order`).
    pub(crate) fn one_per_subject(mut self) -> Self {
        self.key_order = Some(KeyOrder::default());
        self
    }

    pub(crate) fn planner(&mut self) -> &mut RowPlanner {
        &mut self.planner
    }

    /// Queues `batch` and publishes as much of it as the window allows. Returns with acks
    /// possibly outstanding; [`Window::flush`] waits for them.
    pub(crate) async fn push(
        &mut self,
        batch: EncodedBatch,
        rows_before: u64,
        link: &mut Link,
        retry: &mut Retry,
    ) -> Result<()> {
        self.pending.push_back(Pending {
            batch,
            rows_before,
            next: 0,
        });
        self.draining = false;
        driver::run(link, retry, self).await
    }

    /// Waits until every queued row is confirmed.
    pub(crate) async fn flush(&mut self, link: &mut Link, retry: &mut Retry) -> Result<()> {
        self.draining = true;
        driver::run(link, retry, self).await
    }

    /// How many of the statement's first rows are settled: confirmed, skipped or
    /// dead-lettered.
    pub(crate) fn settled(&self) -> u64 {
        self.settled
    }

    fn has_unsent(&self) -> bool {
        self.pending.iter().any(|p| p.next < p.batch.len())
    }

    /// Whether another message may be sent before an ack comes.
    fn has_room(&self) -> bool {
        self.in_flight.len() < self.limit.messages
            && (self.in_flight.is_empty() || self.in_flight_bytes < self.limit.bytes)
    }

    /// Publishes unsent rows while the window has room.
    async fn fill(&mut self, link: &Link) -> Result<(), Failure> {
        'fill: for index in 0..self.pending.len() {
            let seq = self.first_seq + index as u64;
            while self.has_room() {
                let pending = &self.pending[index];
                let row = pending.next;
                if row >= pending.batch.len() {
                    break;
                }
                if let Some(keys) = &self.key_order
                    && keys.waits(&pending.batch, row)
                {
                    break 'fill;
                }
                let position = pending.rows_before + row as u64 + 1;
                let (message, dead_letter) = match self.planner.plan(&pending.batch, row, position)
                {
                    Planned::Send(m) => (m, false),
                    Planned::DeadLetter(m) => (m, true),
                    Planned::Skip => {
                        self.pending[index].next += 1;
                        continue;
                    }
                };
                // A lost connection stops the sending at once instead of filling a client
                // that will never send.
                if link.connection.lost_at(row) {
                    return Err(Failure::lost("while rows were sent"));
                }
                let subject = message.subject.clone();
                let bytes = message.size();
                let ack = match publish(link.js(), message).await {
                    Ok(ack) => ack,
                    Err(e) if e.kind() == PublishErrorKind::TimedOut => {
                        return Err(Failure::Transient(
                            TransientKind::Timeout,
                            "the client could not send within confirm_timeout (disconnected?)"
                                .into(),
                        ));
                    }
                    Err(e) => {
                        return Err(self.acks.failure(link, &e, &subject).await);
                    }
                };
                self.pending[index].next += 1;
                if let Some(keys) = self.key_order.as_mut().filter(|_| !dead_letter) {
                    keys.sent(&subject);
                }
                self.in_flight.push_back(InFlight {
                    batch_seq: seq,
                    row,
                    dead_letter,
                    subject,
                    ack,
                    failed: None,
                    deadline: Instant::now() + self.acks.confirm_timeout,
                    bytes,
                });
                self.in_flight_bytes += bytes;
            }
            if !self.has_room() {
                break;
            }
        }
        self.release();
        Ok(())
    }

    /// Processes acks that have arrived, without waiting; true if there was any.
    fn take_ready(&mut self) -> bool {
        let now = Instant::now();
        let mut confirmed = false;
        while let Some(front) = self.in_flight.front_mut() {
            if front.failed.is_some() {
                break;
            }
            match (&mut front.ack).now_or_never() {
                Some(Ok(ack)) => {
                    self.confirm_front(&ack, now);
                    confirmed = true;
                }
                // Handled by the next wait.
                Some(Err(e)) => {
                    front.failed = Some(e);
                    break;
                }
                None => break,
            }
        }
        self.release();
        confirmed
    }

    /// While the input is idle: waits for the oldest ack, then takes any others that are
    /// in, so that rows count as confirmed as soon as their acks come. A failed ack is
    /// retried here, as `push` would (a source linked to this sink may be waiting for
    /// these rows before it reads more). With nothing in flight, this never returns.
    /// Cancel-safe, so the next batch or the query's error can interrupt it: what
    /// arrives is recorded before the next await, and the driver rewinds before its
    /// backoff.
    pub(crate) async fn take_arriving(&mut self, link: &mut Link, retry: &mut Retry) -> Result<()> {
        let Some(front) = self.in_flight.front_mut() else {
            return std::future::pending().await;
        };
        if front.failed.is_none() && !front.ack.is_terminated() {
            match (&mut front.ack).await {
                Ok(ack) => {
                    self.confirm_front(&ack, Instant::now());
                    self.take_ready();
                    // Stored: a retry episode that resent this row is over.
                    retry.succeeded();
                    return Ok(());
                }
                Err(e) => front.failed = Some(e),
            }
        }
        self.draining = false;
        driver::run(link, retry, self).await
    }

    /// Whether the oldest message in flight has failed (seen by a non-blocking check), or
    /// lost its answer to an interrupted wait.
    fn front_failed(&self) -> bool {
        self.in_flight
            .front()
            .is_some_and(|f| f.failed.is_some() || f.ack.is_terminated())
    }

    /// Waits for the oldest ack, then takes any others that are in.
    async fn await_front(&mut self, link: &Link) -> Result<(), Failure> {
        let acks = &self.acks;
        let front = self.in_flight.front_mut().expect("checked by the caller");
        // Kept until the rewind, so a caller dropping this during the classification
        // finds the failure again.
        if let Some(e) = &front.failed {
            return Err(acks.failure(link, e, &front.subject).await);
        }
        // A wait dropped while it classified a failed ack: the answer is gone.
        if front.ack.is_terminated() {
            return Err(Failure::Transient(
                TransientKind::Timeout,
                "the wait for an ack was interrupted after it failed; sending again from it".into(),
            ));
        }
        let ack = acks
            .wait(link, &mut front.ack, front.deadline, &front.subject)
            .await
            .and_then(Acked::stored)?;
        self.confirm_front(&ack, Instant::now());
        self.take_ready();
        Ok(())
    }

    /// Records the ack of the oldest in-flight message, which arrived by `now`.
    fn confirm_front(&mut self, ack: &PublishAck, now: Instant) {
        let front = self.in_flight.pop_front().expect("an ack has a message");
        self.in_flight_bytes -= front.bytes;
        if let Some(keys) = self.key_order.as_mut().filter(|_| !front.dead_letter) {
            keys.acked(&front.subject);
        }
        self.record_ack(&front, ack, now);
    }

    /// Counts the row (or dead letter) `front` stands for as confirmed by `ack`.
    fn record_ack(&self, front: &InFlight, ack: &PublishAck, now: Instant) {
        let metrics = &self.metrics;
        let sent = front.deadline - self.acks.confirm_timeout;
        metrics.acked(now.saturating_duration_since(sent));
        if front.dead_letter {
            metrics.dead_lettered(1);
        } else {
            let pending = &self.pending[(front.batch_seq - self.first_seq) as usize];
            metrics.published_rows(1, pending.batch.payload_len(front.row));
            if ack.duplicate {
                metrics.duplicates(1);
            }
        }
    }

    /// Drops the batches whose rows are all sent and confirmed.
    fn release(&mut self) {
        let metrics = &self.metrics;
        while let Some(front) = self.pending.front() {
            let unconfirmed = self
                .in_flight
                .front()
                .is_some_and(|f| f.batch_seq == self.first_seq);
            if front.next < front.batch.len() || unconfirmed {
                break;
            }
            if self.planner.skips() {
                metrics.skipped(front.batch.rejections().count());
            }
            self.settled = front.rows_before + front.batch.len() as u64;
            self.pending.pop_front();
            self.first_seq += 1;
        }
        metrics.in_flight(self.in_flight.len(), self.in_flight_bytes);
    }
}

#[async_trait]
impl Work for Window {
    async fn attempt(&mut self, link: &mut Link) -> Result<Step, Failure> {
        // Resent from here on: acks of the earlier copies no longer count.
        self.rewound.clear();
        self.fill(link).await?;
        if self.in_flight.is_empty() {
            return Ok(Step::Done);
        }
        // Nothing left to send: take the acks that are in, and leave the rest for later
        // unless draining (or the oldest has failed, which is retried now).
        if !self.draining && !self.has_unsent() {
            let confirmed = self.take_ready();
            if !self.front_failed() {
                return Ok(if confirmed { Step::Done } else { Step::Waiting });
            }
        }
        self.await_front(link).await?;
        Ok(Step::Progress)
    }

    /// After a failure: send again from the first unconfirmed row, in order; what was in
    /// flight is kept for `settle` until the next attempt.
    fn rewind(&mut self) {
        let Some(first) = self.in_flight.front() else {
            return;
        };
        let (seq, row) = (first.batch_seq, first.row);
        for (index, pending) in self.pending.iter_mut().enumerate() {
            let pending_seq = self.first_seq + index as u64;
            if pending_seq == seq {
                pending.next = row;
            } else if pending_seq > seq {
                pending.next = 0;
            }
        }
        self.rewound = std::mem::take(&mut self.in_flight);
        self.in_flight_bytes = 0;
        // Nothing is in flight until the resend; the gauges say so through the backoff.
        self.metrics.in_flight(0, 0);
        if let Some(keys) = &mut self.key_order {
            keys.clear();
        }
    }

    async fn abandon(&mut self, _link: &mut Link) {
        self.settle().await;
    }
}

impl Window {
    /// Before the statement fails: sends nothing more, waits for the acks still in flight
    /// (each until its deadline, without retrying or classifying) and counts every row the
    /// stream confirms, so the error's count of confirmed rows is what the stream holds.
    pub(crate) async fn settle(&mut self) {
        let rewound = std::mem::take(&mut self.rewound);
        let in_flight = std::mem::take(&mut self.in_flight);
        self.in_flight_bytes = 0;
        for mut front in rewound.into_iter().chain(in_flight) {
            if front.failed.is_some() || front.ack.is_terminated() {
                continue;
            }
            if let Ok(Ok(ack)) = tokio::time::timeout_at(front.deadline, &mut front.ack).await {
                self.record_ack(&front, &ack, Instant::now());
            }
        }
        // Rows skipped are counted when their batch is done; these batches never are.
        if self.planner.skips() {
            let skipped = self.pending.iter().map(|p| {
                p.batch
                    .rejections()
                    .filter(|(row, _)| *row < p.next)
                    .count()
            });
            self.metrics.skipped(skipped.sum());
        }
        self.pending.clear();
        self.metrics.in_flight(0, 0);
    }
}

/// Publishes one message; the ack is awaited later, in order.
async fn publish(js: &Context, m: Message) -> Result<AckFuture, PublishError> {
    let sent = match m.headers {
        None => js.publish(m.subject, m.payload).await,
        Some(headers) => {
            let publish = PublishMessage::build().payload(m.payload).headers(headers);
            js.send_publish(m.subject, publish).await
        }
    };
    sent.map(|ack| ack.into_future().fuse())
}
