//! The one failure type of delivery: every attempt that goes wrong ends in a [`Failure`],
//! transient (the driver backs off and resends) or permanent (the statement fails). Each
//! cause has its constructor here, so the same cause reads the same wherever it is met.

use async_nats::{PublishErrorKind, Subject};

use crate::error::NatsSinkError;

/// The kind of a transient failure: the `class` label of the `retries` and `errors`
/// series, so an operator can tell an outage from a full stream without reading logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransientKind {
    /// The servers cannot be reached, or the connection was lost.
    Connection,
    /// No confirmation (ack, round trip, API answer) within `confirm_timeout`, or the
    /// client could not send within it.
    Timeout,
    /// The JetStream cluster has no leader or quorum for the stream right now.
    NoLeader,
    /// The stream or the server's storage is full (discard new).
    StorageFull,
    /// Part of an atomic batch did not reach the server.
    IncompleteBatch,
    /// The client holds too many unacknowledged publishes.
    Backpressure,
}

impl TransientKind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            TransientKind::Connection => "connection",
            TransientKind::Timeout => "timeout",
            TransientKind::NoLeader => "no_leader",
            TransientKind::StorageFull => "storage_full",
            TransientKind::IncompleteBatch => "incomplete_batch",
            TransientKind::Backpressure => "backpressure",
        }
    }
}

/// What a failure means for the statement.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Worth retrying: its class, and the reason, logged while retrying and reported if
    /// retrying stops.
    Transient(TransientKind, String),
    /// Retrying cannot help: the statement fails with this error.
    Permanent(NatsSinkError),
}

impl From<NatsSinkError> for Failure {
    fn from(err: NatsSinkError) -> Self {
        Failure::Permanent(err)
    }
}

impl Failure {
    /// The connection is gone: what it did not confirm is sent again on a new one.
    pub(crate) fn lost(when: &str) -> Self {
        Failure::Transient(
            TransientKind::Connection,
            format!(
                "the connection to the server was lost {when}; sending again from the first unconfirmed row on a new connection"
            ),
        )
    }

    /// The server refused something for good; what it said and what to do.
    pub(crate) fn refused(problem: String) -> Self {
        Failure::Permanent(NatsSinkError::Refused {
            problem,
            published: 0,
        })
    }

    /// What a failed core publish means, from its kind (never its message text). `Send`:
    /// the client stopped taking commands, which it does once its connection is lost
    /// (see `connect`), so it is worth a retry on a new connection.
    pub(crate) fn core_publish(err: async_nats::PublishError, subject: &Subject) -> Self {
        let problem = match err.kind() {
            PublishErrorKind::Send => {
                return Failure::Transient(
                    TransientKind::Connection,
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

    /// Whether retrying may help.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, Failure::Transient(..))
    }
}
