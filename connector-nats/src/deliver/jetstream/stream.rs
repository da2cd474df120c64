//! The stream a publisher writes to ([`StreamAcks`]): waiting for one JetStream ack while
//! watching the connection and the server's refusals, and turning a failed ack into a
//! [`Failure`].

use std::future::Future;

use futures::future::Fuse;
use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{GetStreamErrorKind, PublishError};
use async_nats::jetstream::publish::PublishAck;
use tokio::time::Instant;

use crate::deliver::driver::Link;
use crate::deliver::failure::{Failure, TransientKind};
use crate::deliver::jetstream::captures::Captures;
use crate::deliver::jetstream::classify::{Classified, classify};

/// How often a wait for an ack checks whether the connection was lost or the server
/// reported an error.
const POLL: Duration = Duration::from_millis(100);

/// What the stream answered to a publish, when it answered. Failures are [`Failure`]s.
#[derive(Debug)]
pub(crate) enum Acked {
    Stored(PublishAck),
    /// An atomic batch was refused whole because the stream already has one of its
    /// message ids: not a failure for exactly-once delivery, which then sends the batch
    /// one by one.
    AlreadyStored,
}

impl Acked {
    /// The ack of a message stored on its own, where a duplicate batch cannot occur.
    pub(crate) fn stored(self) -> Result<PublishAck, Failure> {
        match self {
            Acked::Stored(ack) => Ok(ack),
            Acked::AlreadyStored => Err(duplicate_batch()),
        }
    }
}

fn duplicate_batch() -> Failure {
    Failure::refused("the stream refused a message as part of a duplicate atomic batch".into())
}

/// An ack on its way. Fused: a finished ack must never be polled again (async-nats's
/// ack future is an `async fn`, which panics when resumed after completion).
pub(crate) type AckFuture =
    Fuse<Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>>;

/// How long the "does the stream still exist?" check may take. Short, and not
/// `confirm_timeout`: during a leader election the check itself goes unanswered, and a
/// long wait here would delay resuming after the new leader is up by as much.
const STATE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The stream every JetStream publisher writes to, and how long an ack may take.
#[derive(Debug, Clone)]
pub(crate) struct StreamAcks {
    pub stream: String,
    pub confirm_timeout: Duration,
    /// The stream's subjects at the start, which every row's subject was checked against.
    pub subjects: Vec<String>,
}

impl StreamAcks {
    /// Waits for `ack` until `deadline`. An ack failure, a lost connection (the ack can
    /// no longer come) and an error the server reported asynchronously (a permissions
    /// violation) end the wait early.
    /// `subject` is the message's, to tell a stream that stopped capturing it from one
    /// without a leader.
    pub(crate) async fn wait(
        &self,
        link: &Link,
        ack: &mut AckFuture,
        deadline: Instant,
        subject: &str,
    ) -> Result<Acked, Failure> {
        loop {
            // The ack first: one that arrived before the connection was lost still counts.
            let slice = deadline.min(Instant::now() + POLL);
            match tokio::time::timeout_at(slice, &mut *ack).await {
                Ok(Ok(ack)) => return Ok(Acked::Stored(ack)),
                Ok(Err(e)) => return self.answer(link, &e, subject).await,
                Err(_) => {}
            }
            if link.connection.lost() {
                return Err(Failure::lost("while messages waited for their acks"));
            }
            if let Some(refusal) = link.connection.refused_so_far() {
                return Err(refusal);
            }
            if Instant::now() >= deadline {
                // A refused publish gets no ack: make sure no refusal is still on its way.
                link.connection.confirm(STATE_CHECK_TIMEOUT).await?;
                return Err(Failure::Transient(
                    TransientKind::Timeout,
                    format!(
                        "no ack from stream '{}' within {:?} (confirm_timeout)",
                        self.stream, self.confirm_timeout
                    ),
                ));
            }
        }
    }

    /// What a failed publish or ack means, where a duplicate batch is not expected.
    pub(crate) async fn failure(&self, link: &Link, err: &PublishError, subject: &str) -> Failure {
        match self.answer(link, err, subject).await {
            Ok(_) => duplicate_batch(),
            Err(failure) => failure,
        }
    }

    /// What a failed publish or ack amounts to: a [`Failure`], or the stream's refusal of
    /// an atomic batch it already has. "No responders" is settled by asking whether the
    /// stream still exists (it did at the start), and what it captures now.
    async fn answer(
        &self,
        link: &Link,
        err: &PublishError,
        subject: &str,
    ) -> Result<Acked, Failure> {
        Err(match classify(err, &self.stream, link.connection.lost()) {
            Classified::Failure(Failure::Transient(TransientKind::IncompleteBatch, reason)) => {
                // A message of the batch did not reach the stream: if the server refused
                // it (a permission violation), retrying cannot help.
                match link.connection.confirm(STATE_CHECK_TIMEOUT).await {
                    Err(failure) if !failure.is_transient() => failure,
                    _ => Failure::Transient(TransientKind::IncompleteBatch, reason),
                }
            }
            Classified::Failure(failure) => failure,
            Classified::AlreadyStored => return Ok(Acked::AlreadyStored),
            Classified::NoResponders => {
                match tokio::time::timeout(STATE_CHECK_TIMEOUT, link.js().get_stream(&self.stream))
                    .await
                {
                    Err(_) => Failure::Transient(
                        TransientKind::NoLeader,
                        format!(
                            "stream '{}' did not answer, and neither did the JetStream API within {STATE_CHECK_TIMEOUT:?} (a leader election?)",
                            self.stream
                        ),
                    ),
                    Ok(Ok(stream)) => {
                        self.no_responders(subject, &stream.cached_info().config.subjects)
                    }
                    Ok(Err(e)) => match e.kind() {
                        GetStreamErrorKind::JetStream(api)
                            if api.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                        {
                            Failure::refused(format!(
                                "stream '{}' was deleted during the statement: create it again, then rerun",
                                self.stream
                            ))
                        }
                        _ => Failure::Transient(
                            TransientKind::NoLeader,
                            format!(
                                "stream '{}' did not answer and its state cannot be read: {e}",
                                self.stream
                            ),
                        ),
                    },
                }
            }
        })
    }

    /// Nobody answered on `subject`, and the stream exists: a leader election, unless
    /// its subjects were edited so that it no longer captures `subject`, which no retry
    /// can mend.
    fn no_responders(&self, subject: &str, subjects_now: &[String]) -> Failure {
        if Captures::new(&self.stream, subjects_now.to_vec()).matches(subject) {
            return Failure::Transient(
                TransientKind::NoLeader,
                format!(
                    "stream '{}' did not answer (no responders: a leader election?)",
                    self.stream
                ),
            );
        }
        Failure::refused(format!(
            "stream '{}' no longer captures subject '{subject}': its subjects were changed during the statement, from {} to {}; restore them, or rerun (rows for subjects the stream does not capture then follow on_error)",
            self.stream,
            self.subjects.join(", "),
            subjects_now.join(", ")
        ))
    }
}
