//! The stream a publisher writes to ([`Target`]): waiting for one JetStream ack while
//! watching the connection, turning a failed ack into a [`Failure`], and connecting
//! again after the connection was lost.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_nats::jetstream::context::{GetStreamErrorKind, PublishError};
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{Context, ErrorCode};
use tokio::time::Instant;

use crate::connect::Connection;
use crate::deliver::jetstream::classify::{AckFailure, classify};
use crate::deliver::retry::{Class, Failure, Retry};
use crate::error::{NatsSinkError, Result as SinkResult};

/// How often a wait for an ack checks whether the connection was lost or the server
/// reported an error.
const POLL: Duration = Duration::from_millis(100);

/// Why an ack did not come.
#[derive(Debug)]
pub(crate) enum AckError {
    /// An atomic batch was refused because the stream has one of its message ids.
    AlreadyStored,
    Failed(Failure),
}

impl AckError {
    /// As a plain failure, where a duplicate batch is not expected.
    pub(crate) fn into_failure(self, published: u64) -> Failure {
        match self {
            AckError::Failed(failure) => failure,
            AckError::AlreadyStored => refused(
                "the stream refused a message as part of a duplicate atomic batch".into(),
                published,
            ),
        }
    }
}

pub(crate) type AckFuture = Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// How long the "does the stream still exist?" check may take. Short, and not
/// `confirm_timeout`: during a leader election the check itself goes unanswered, and a
/// long wait here would delay resuming after the new leader is up by as much.
const STATE_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// What every JetStream publisher writes through: the connection, the stream and the ack
/// timeout.
pub(crate) struct Target {
    pub connection: Connection,
    pub js: Context,
    pub stream: String,
    pub confirm_timeout: Duration,
    /// Sizes the JetStream context, made again on a new connection.
    pub max_in_flight: usize,
}

impl Target {
    /// After a failure: if the connection was lost, connects again and makes the
    /// JetStream context on the new client. Publishes sent on the old one and not yet
    /// confirmed must then be sent again.
    pub(crate) async fn reconnect_if_lost(
        &mut self,
        retry: &mut Retry,
        published: u64,
    ) -> SinkResult<()> {
        if self.connection.reopen_if_lost(retry, published).await? {
            self.js = super::context(
                &self.connection.client,
                self.confirm_timeout,
                self.max_in_flight,
            );
        }
        Ok(())
    }

    /// Waits for `ack` until `deadline`. An ack failure, a lost connection (the ack can
    /// no longer come) and an error the server reported asynchronously (a permissions
    /// violation) end the wait early. `published` is the statement's confirmed row count,
    /// for a permanent error.
    pub(crate) async fn wait(
        &self,
        ack: &mut AckFuture,
        deadline: Instant,
        published: u64,
    ) -> Result<PublishAck, AckError> {
        loop {
            // The ack first: one that arrived before the connection was lost still counts.
            let slice = deadline.min(Instant::now() + POLL);
            match tokio::time::timeout_at(slice, &mut *ack).await {
                Ok(Ok(ack)) => return Ok(ack),
                Ok(Err(e)) => return Err(self.failure(&e, published).await),
                Err(_) => {}
            }
            if self.connection.lost() {
                return Err(AckError::Failed(Failure::Transient(
                    Class::Connection,
                    "the connection dropped while messages waited for their acks; sending again from the first unconfirmed row".into(),
                )));
            }
            if let Some(text) = self.connection.server_error() {
                return Err(AckError::Failed(refused(
                    format!(
                        "the server refused a publish: {text}; check the user's publish permissions for the stream's subjects"
                    ),
                    published,
                )));
            }
            if Instant::now() >= deadline {
                return Err(AckError::Failed(Failure::Transient(
                    Class::Timeout,
                    format!(
                        "no ack from stream '{}' within {:?} (confirm_timeout)",
                        self.stream, self.confirm_timeout
                    ),
                )));
            }
        }
    }

    /// The class of a failed ack; "no responders" is settled by asking whether the stream
    /// still exists (it did at the start).
    pub(crate) async fn failure(&self, err: &PublishError, published: u64) -> AckError {
        AckError::Failed(match classify(err, &self.stream, self.connection.lost()) {
            AckFailure::Transient(class, reason) => Failure::Transient(class, reason),
            AckFailure::Permanent(problem) => refused(problem, published),
            AckFailure::AlreadyStored => return AckError::AlreadyStored,
            AckFailure::NoResponders => {
                match tokio::time::timeout(STATE_CHECK_TIMEOUT, self.js.get_stream(&self.stream))
                    .await
                {
                    Err(_) => Failure::Transient(
                        Class::NoLeader,
                        format!(
                            "stream '{}' did not answer, and neither did the JetStream API within {STATE_CHECK_TIMEOUT:?} (a leader election?)",
                            self.stream
                        ),
                    ),
                    Ok(Ok(_)) => Failure::Transient(
                        Class::NoLeader,
                        format!(
                            "stream '{}' did not answer (no responders: a leader election?)",
                            self.stream
                        ),
                    ),
                    Ok(Err(e)) => match e.kind() {
                        GetStreamErrorKind::JetStream(api)
                            if api.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                        {
                            refused(
                                format!(
                                    "stream '{}' was deleted during the statement: create it again, then rerun",
                                    self.stream
                                ),
                                published,
                            )
                        }
                        _ => Failure::Transient(
                            Class::NoLeader,
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
}

pub(crate) fn refused(problem: String, published: u64) -> Failure {
    Failure::Permanent(NatsSinkError::Refused { problem, published })
}
