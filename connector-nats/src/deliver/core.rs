//! Publishing encoded batches to core NATS, and confirming them.
//!
//! Guarantee (core NATS): when [`CorePublisher::send`] returns `Ok`, the server has
//! processed every message of the batch. `Client::flush` cannot prove that (it only
//! empties the socket buffer, FACTS.md), so each batch ends with a round trip through the
//! server: the publisher subscribes to an inbox of its own and waits until a token it
//! sends there comes back. The server handles one connection's messages in order, so the
//! token arrives only after everything published before it, and after any `-ERR` the
//! server sent for them (a permissions violation fails the statement). If the connection
//! was lost while the batch was in flight, part of it may be lost: the whole batch is sent
//! again after a backoff, on a fresh connection (subscribers may see that batch twice,
//! never a gap; what the old client still held is dropped, never sent after the resent
//! batch: see `connection`). Across a crash of the engine, core mode is at-most-once for
//! the unconfirmed batch.

use std::time::{Duration, Instant};

use async_nats::client::PublishErrorKind;
use async_nats::{Subject, Subscriber};
use bytes::Bytes;
use futures::StreamExt;

use crate::connect::Connection;
use crate::deliver::retry::{Class, Failure, Retry};
use crate::deliver::rows::{Message, Messages, Planned};
use crate::encode::EncodedBatch;
use crate::error::{NatsSinkError, Result};
use crate::metrics::SinkMetrics;

/// How often a round trip checks whether the connection was lost.
const LOSS_POLL: Duration = Duration::from_millis(100);

/// A connected core publisher.
pub(crate) struct CorePublisher {
    connection: Connection,
    barrier: Subscriber,
    barrier_subject: Subject,
    barrier_seq: u64,
    confirm_timeout: Duration,
}

impl CorePublisher {
    /// Subscribes the confirmation inbox on `connection`.
    pub(crate) async fn new(connection: Connection, confirm_timeout: Duration) -> Result<Self> {
        let (barrier_subject, barrier) = subscribe_barrier(&connection).await?;
        Ok(CorePublisher {
            connection,
            barrier,
            barrier_subject,
            barrier_seq: 0,
            confirm_timeout,
        })
    }

    /// Publishes what `messages` plans for each row of `batch` and returns once the server
    /// has processed all of it, retrying transient failures. `rows_before` is the number of
    /// rows of the statement before this batch.
    pub(crate) async fn send(
        &mut self,
        batch: &EncodedBatch,
        rows_before: u64,
        messages: &Messages,
        retry: &mut Retry,
        metrics: &SinkMetrics,
    ) -> Result<()> {
        let planned: Vec<(usize, Planned)> = (0..batch.len())
            .map(|i| (i, messages.plan(batch, i, rows_before + i as u64 + 1)))
            .collect();
        // The whole batch is unconfirmed until its round trip returns.
        let sent = planned
            .iter()
            .filter(|(_, plan)| !matches!(plan, Planned::Skip))
            .count();
        metrics.in_flight(sent);
        loop {
            let published = metrics.published();
            let started = Instant::now();
            match self.attempt(&planned, published).await {
                Ok(()) => {
                    metrics.confirmed_after(started.elapsed());
                    break;
                }
                Err(failure) => {
                    retry.wait(failure, published).await?;
                    if self.connection.reopen_if_lost(retry, published).await? {
                        (self.barrier_subject, self.barrier) =
                            subscribe_barrier(&self.connection).await?;
                    }
                }
            }
        }
        metrics.in_flight(0);
        retry.succeeded();
        let (mut rows, mut bytes, mut dead_lettered) = (0, 0, 0);
        for (i, plan) in &planned {
            match plan {
                Planned::Send(_) => {
                    rows += 1;
                    bytes += batch.payload_len(*i);
                }
                Planned::DeadLetter(_) => dead_lettered += 1,
                Planned::Skip => {}
            }
        }
        metrics.published_rows(rows, bytes);
        metrics.dead_lettered(dead_lettered);
        metrics.skipped(planned.len() - rows - dead_lettered);
        Ok(())
    }

    /// One attempt: publish everything, then the round trip.
    async fn attempt(
        &mut self,
        planned: &[(usize, Planned)],
        published: u64,
    ) -> Result<(), Failure> {
        let sending = async {
            for (index, (_, plan)) in planned.iter().enumerate() {
                match plan {
                    // A lost connection stops the sending at once instead of filling a
                    // client that will never send.
                    _ if self.connection.lost_at(index) => return Err(lost()),
                    Planned::Send(m) | Planned::DeadLetter(m) => self.publish(m).await?,
                    Planned::Skip => {}
                }
            }
            Ok::<_, Failure>(())
        };
        // While disconnected the client's buffer fills and publishing waits.
        match tokio::time::timeout(self.confirm_timeout, sending).await {
            Err(_) => return Err(Failure::Transient(Class::Timeout, self.unconfirmed())),
            Ok(result) => result?,
        }
        self.round_trip().await?;
        if let Some(text) = self.connection.server_error() {
            return Err(Failure::Permanent(NatsSinkError::Refused {
                problem: format!(
                    "the server refused a publish of this batch: {text}; check the user's publish permissions for the subjects"
                ),
                published,
            }));
        }
        Ok(())
    }

    fn unconfirmed(&self) -> String {
        format!(
            "the server did not confirm the batch within {:?} (confirm_timeout); sending it again",
            self.confirm_timeout
        )
    }

    async fn publish(&self, m: &Message) -> Result<(), Failure> {
        let client = &self.connection.client;
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
        sent.map_err(|e| publish_failure(e, &m.subject))
    }

    /// Sends a token to our own inbox and waits for it to come back through the server.
    /// Fails (transiently) as soon as the connection is lost: the token or messages
    /// before it may have been lost with it.
    async fn round_trip(&mut self) -> Result<(), Failure> {
        self.barrier_seq += 1;
        let token = Bytes::from(self.barrier_seq.to_string());
        self.connection
            .client
            .publish(self.barrier_subject.clone(), token.clone())
            .await
            .map_err(|e| publish_failure(e, &self.barrier_subject))?;
        let deadline = tokio::time::Instant::now() + self.confirm_timeout;
        loop {
            if self.connection.lost() {
                return Err(lost());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Failure::Transient(Class::Timeout, self.unconfirmed()));
            }
            // Short slices, so that a lost connection is noticed without waiting for the
            // timeout.
            let slice = deadline.min(tokio::time::Instant::now() + LOSS_POLL);
            match tokio::time::timeout_at(slice, self.barrier.next()).await {
                Ok(Some(message)) if message.payload == token => return Ok(()),
                // A token of an earlier, interrupted round trip.
                Ok(Some(_)) | Err(_) => {}
                // The client ended: after a lost connection, that is expected.
                Ok(None) if self.connection.lost() => return Err(lost()),
                Ok(None) => {
                    return Err(Failure::Permanent(NatsSinkError::Publish {
                        problem: "the connection was closed before the server confirmed the batch"
                            .into(),
                        source: None,
                    }));
                }
            }
        }
    }

    pub(crate) async fn close(self) {
        self.connection.close().await;
    }
}

fn lost() -> Failure {
    Failure::Transient(
        Class::Connection,
        "the connection to the server was lost while a batch was in flight; sending the batch again on a new connection".into(),
    )
}

/// The subscription the round trips come back on, on the connection's client.
async fn subscribe_barrier(connection: &Connection) -> Result<(Subject, Subscriber)> {
    let subject = Subject::from(connection.client.new_inbox());
    let barrier = connection
        .client
        .subscribe(subject.clone())
        .await
        .map_err(|e| NatsSinkError::Publish {
            problem: format!("cannot subscribe the confirmation inbox: {e}"),
            source: Some(Box::new(e)),
        })?;
    Ok((subject, barrier))
}

/// What a failed core publish means, from its kind (never its message text). `Send`: the
/// client stopped taking commands, which it does once its connection is lost (see
/// `connection`), so it is worth a retry on a new connection.
pub(crate) fn publish_failure(err: async_nats::PublishError, subject: &Subject) -> Failure {
    let problem = match err.kind() {
        PublishErrorKind::Send => {
            return Failure::Transient(
                Class::Connection,
                "the connection to the server was lost before a message was sent".into(),
            );
        }
        PublishErrorKind::MaxPayloadExceeded => format!(
            "a message to '{subject}' is over the server's max_payload (the server's limit changed during the statement?)"
        ),
        PublishErrorKind::InvalidSubject => format!("'{subject}' is not a valid subject"),
    };
    Failure::Permanent(NatsSinkError::Publish {
        problem,
        source: Some(Box::new(err)),
    })
}
