//! Publishing encoded batches to core NATS, and confirming them.
//!
//! Guarantee (core NATS): when [`send`] returns `Ok`, the server has processed every
//! message of the batch and refused none of them. `Client::flush` cannot prove that (it
//! only empties the socket buffer), so each batch ends with [`Connection::confirm`]: a
//! barrier through the server that also collects every `-ERR` it sent for the batch (a
//! permissions violation fails the statement, naming the subject). Writing is not
//! bounded by `confirm_timeout` (a large batch on a slow link takes what it takes);
//! waiting for the confirmation once the client has written everything is. If the
//! connection was lost while the batch was in flight, part of it may be lost: the driver
//! sends the whole batch again on a fresh connection (subscribers may see that batch
//! twice, never a gap; what the old client still held is dropped, never sent after the
//! resent batch: see `connect`). Across a crash of the engine, core mode is at-most-once
//! for the unconfirmed batch.
//!
//! [`Connection::confirm`]: crate::connect::Connection::confirm

use std::collections::HashSet;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::deliver::driver::{self, Link, Step, Work};
use crate::deliver::failure::{Failure, TransientKind};
use crate::deliver::retry::Retry;
use crate::deliver::rows::{Message, Planned, RowPlanner};
use crate::encode::EncodedBatch;
use crate::error::Result;
use crate::metrics::SinkMetrics;

/// One batch, planned: sent whole and confirmed by one barrier.
struct Batch<'a> {
    planned: &'a [(usize, Planned)],
    confirm_timeout: Duration,
    /// Set when the server processed the batch but refused the messages to these
    /// subjects (the statement then fails): the others count as delivered.
    refused: Option<HashSet<String>>,
}

#[async_trait]
impl Work for Batch<'_> {
    async fn attempt(&mut self, link: &mut Link) -> std::result::Result<Step, Failure> {
        let connection = &link.connection;
        for (index, (_, plan)) in self.planned.iter().enumerate() {
            // A lost connection stops the sending at once instead of filling a client
            // that will never send.
            if connection.lost_at(index) {
                return Err(Failure::lost("while a batch was sent"));
            }
            match plan {
                Planned::Send(m) | Planned::DeadLetter(m) => publish(link, m).await?,
                Planned::Skip => {}
            }
        }
        match link.connection.confirm_counting(self.confirm_timeout).await {
            Ok(()) => Ok(Step::Done),
            Err((failure @ Failure::Transient(TransientKind::Timeout, _), _)) => {
                // The client may still hold part of the batch (a slow link), or the
                // barrier's event was lost: resending on this connection would queue the
                // batch behind itself. End the connection (the connect-once guard refuses
                // the reconnect) and resend on a fresh one.
                let _ = link.connection.client.force_reconnect().await;
                Err(failure)
            }
            Err((failure, refused)) => {
                self.refused = refused;
                Err(failure)
            }
        }
    }
}

/// Publishes what `planner` plans for each row of `batch` and returns once the server has
/// processed all of it, retrying transient failures. `rows_before` is the number of rows
/// of the statement before this batch.
pub(crate) async fn send(
    batch: &EncodedBatch,
    rows_before: u64,
    planner: &RowPlanner,
    confirm_timeout: Duration,
    link: &mut Link,
    retry: &mut Retry,
    metrics: &SinkMetrics,
) -> Result<()> {
    let planned: Vec<(usize, Planned)> = (0..batch.len())
        .map(|i| (i, planner.plan(batch, i, rows_before + i as u64 + 1)))
        .collect();
    // The whole batch is unconfirmed until its barrier returns.
    let sent = planned
        .iter()
        .filter(|(_, plan)| !matches!(plan, Planned::Skip))
        .count();
    let bytes = planned.iter().map(|(_, plan)| plan.size()).sum();
    metrics.in_flight(sent, bytes);
    let started = Instant::now();
    let mut work = Batch {
        planned: &planned,
        confirm_timeout,
        refused: None,
    };
    let result = driver::run(link, retry, &mut work).await;
    metrics.in_flight(0, 0);
    if let Err(err) = result {
        // The server processed every message of the batch but the refused ones, and it
        // refuses by subject (permissions): the others reached subscribers, and the
        // error's count says so.
        if let Some(refused) = work.refused {
            let (rows, bytes) = delivered_rows(batch, &planned, &refused);
            metrics.published_rows(rows, bytes);
        }
        return Err(err);
    }
    metrics.confirmed_after(started.elapsed());
    let (rows, bytes) = delivered_rows(batch, &planned, &HashSet::new());
    let dead_lettered = planned
        .iter()
        .filter(|(_, plan)| matches!(plan, Planned::DeadLetter(_)))
        .count();
    metrics.published_rows(rows, bytes);
    metrics.dead_lettered(dead_lettered);
    metrics.skipped(planned.len() - rows - dead_lettered);
    Ok(())
}

/// The rows of `planned` sent to a subject not in `refused`, and their payload bytes.
fn delivered_rows(
    batch: &EncodedBatch,
    planned: &[(usize, Planned)],
    refused: &HashSet<String>,
) -> (usize, usize) {
    planned
        .iter()
        .filter_map(|(i, plan)| match plan {
            Planned::Send(m) if !refused.contains(m.subject.as_str()) => Some(*i),
            _ => None,
        })
        .fold((0, 0), |(rows, bytes), i| {
            (rows + 1, bytes + batch.payload_len(i))
        })
}

async fn publish(link: &Link, m: &Message) -> std::result::Result<(), Failure> {
    let client = &link.connection.client;
    let subject = m.subject.clone();
    let payload = m.payload.clone();
    let sent = match (&m.reply, &m.headers) {
        (None, None) => client.publish(subject, payload).await,
        (None, Some(h)) => {
            client
                .publish_with_headers(subject, h.clone(), payload)
                .await
        }
        (Some(r), None) => client.publish_with_reply(subject, r.clone(), payload).await,
        (Some(r), Some(h)) => {
            client
                .publish_with_reply_and_headers(subject, r.clone(), h.clone(), payload)
                .await
        }
    };
    sent.map_err(|e| Failure::core_publish(e, &m.subject))
}
