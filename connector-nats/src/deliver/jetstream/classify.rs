//! What a failed JetStream publish means, from async-nats error kinds and JetStream error
//! codes (never from message text).
//!
//! | class | cases |
//! |---|---|
//! | transient | ack timeout, broken pipe, disconnect, a publish the client could not send because its connection was lost (its command channel closed), no responders while the stream exists (leader election), cluster unavailable or not leader (no quorum), storage or stream full with discard new, incomplete atomic batch |
//! | already stored | an atomic batch with a message id the stream has (a replay of a committed batch) |
//! | permanent | stream not found, expected stream mismatch, message over the stream's max_msg_size, atomic publish disabled or batch too large, anything else the server refuses |

use std::error::Error as _;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode};

use crate::deliver::failure::{Failure, TransientKind};

/// What a failed publish or ack means: a [`Failure`] like any other, or one of the two
/// answers that need a caller's decision.
#[derive(Debug)]
pub(crate) enum Classified {
    Failure(Failure),
    /// Nobody answered on the subject: either the stream is gone (permanent) or it has no
    /// leader right now (transient); the caller asks the JetStream API which.
    NoResponders,
    /// An atomic batch was refused because the stream already has one of its message ids.
    AlreadyStored,
}

fn transient(kind: TransientKind, reason: String) -> Classified {
    Classified::Failure(Failure::Transient(kind, reason))
}

fn permanent(problem: String) -> Classified {
    Classified::Failure(Failure::refused(problem))
}

/// The JetStream API error behind `err`, if the server sent one.
pub(crate) fn api_error(err: &PublishError) -> Option<&jetstream::Error> {
    err.source()?.downcast_ref::<jetstream::Error>()
}

/// Classifies a failed `publish` or ack; `connection_lost` tells whether the client's
/// connection is gone (see `Connection::lost`).
pub(crate) fn classify(err: &PublishError, stream: &str, connection_lost: bool) -> Classified {
    match err.kind() {
        PublishErrorKind::TimedOut => {
            transient(TransientKind::Timeout, "no ack from the stream within confirm_timeout".into())
        }
        PublishErrorKind::BrokenPipe => {
            transient(TransientKind::Connection, "the connection dropped before the ack arrived".into())
        }
        PublishErrorKind::StreamNotFound => Classified::NoResponders,
        PublishErrorKind::MaxAckPending => {
            transient(TransientKind::Backpressure, "too many acks pending in the client".into())
        }
        PublishErrorKind::MaxPayloadExceeded => permanent("a message is over the server's max_payload (the server's limit changed during the statement?)".into(),
        ),
        PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::Other => match api_error(err) {
            Some(api) => classify_code(api, stream),
            // A client whose connection is gone stops taking commands: async-nats reports
            // the closed channel as `Other`, with no server error behind it.
            None if connection_lost => transient(TransientKind::Connection,
                "the connection to the server was lost before the message was sent".into(),
            ),
            None => permanent(format!("the publish failed: {err}")),
        },
    }
}

fn classify_code(api: &jetstream::Error, stream: &str) -> Classified {
    let code = api.error_code();
    let described = format!("{api} (JetStream error {})", code.0);
    match code {
        ErrorCode::STREAM_STORE_FAILED
        | ErrorCode::STORAGE_RESOURCES_EXCEEDED
        | ErrorCode::MEMORY_RESOURCES_EXCEEDED
        | ErrorCode::INSUFFICIENT_RESOURCES
        | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED => transient(
            TransientKind::StorageFull,
            match stream.strip_prefix("KV_") {
                // A bucket discards no old values to make room (only its max_age expires
                // them): more room or fewer keys help.
                Some(bucket) => format!(
                    "key-value bucket '{bucket}' or the server's storage is full: {described}; waiting for space, which a bucket makes only as values reach its max_age, if it has one (raise the bucket's max_bytes or max_values, or delete or purge keys)"
                ),
                None => format!(
                    "stream '{stream}' or the server's storage is full: {described}; waiting for space (consumers to catch up, limits raised, or discard old)"
                ),
            },
        ),
        ErrorCode::CLUSTER_NOT_AVAILABLE | ErrorCode::CLUSTER_NOT_LEADER => transient(
            TransientKind::NoLeader,
            format!(
                "the JetStream cluster cannot store right now (no quorum or no leader): {described}"
            ),
        ),
        // The stream's queue of messages waiting to be stored is over the server's limit
        // (nats-server 2.11+): more publishers or larger messages in flight than it
        // takes at once. It drains by itself; the resend waits a backoff.
        ErrorCode::STREAM_TOO_MANY_REQUESTS => transient(
            TransientKind::Backpressure,
            format!(
                "stream '{stream}' has more messages waiting to be stored than the server queues: {described}; sending again after a pause (a lower max_in_flight, or fewer statements writing to the stream at once, avoids it)"
            ),
        ),
        ErrorCode::ATOMIC_PUBLISH_INCOMPLETE_BATCH => transient(
            TransientKind::IncompleteBatch,
            format!("part of an atomic batch did not reach the server: {described}"),
        ),
        ErrorCode::ATOMIC_PUBLISH_CONTAINS_DUPLICATE_MESSAGE => Classified::AlreadyStored,
        ErrorCode::STREAM_NOT_FOUND => permanent(format!(
            "stream '{stream}' does not exist (any more): create it again, then rerun the statement"
        )),
        ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM => permanent(format!(
            "a message is over the max_msg_size of stream '{stream}': {described}"
        )),
        ErrorCode::ATOMIC_PUBLISH_DISABLED => permanent(format!(
            "stream '{stream}' does not allow atomic publish: set allow_atomic on the stream for delivery = 'exactly_once'"
        )),
        ErrorCode::ATOMIC_PUBLISH_TOO_LARGE_BATCH => permanent(format!(
            "the server refuses atomic batches this large: {described}; lower 'atomic_batch_size'"
        )),
        _ => permanent(format!("stream '{stream}' refused a message: {described}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_send_failure_is_transient_only_once_the_connection_is_lost() {
        let closed = || PublishError::with_source(PublishErrorKind::Other, "channel closed");
        assert!(matches!(
            classify(&closed(), "S", true),
            Classified::Failure(Failure::Transient(..))
        ));
        assert!(matches!(
            classify(&closed(), "S", false),
            Classified::Failure(Failure::Permanent(_))
        ));
        let broken = PublishError::new(PublishErrorKind::BrokenPipe);
        assert!(matches!(
            classify(&broken, "S", false),
            Classified::Failure(Failure::Transient(..))
        ));
        // A refusal by the server stays what it is, connection or not.
        let api: jetstream::Error = serde_json::from_str(
            r#"{"code":404,"err_code":10059,"description":"stream not found"}"#,
        )
        .unwrap();
        let refused = PublishError::with_source(PublishErrorKind::Other, api);
        assert!(matches!(
            classify(&refused, "S", true),
            Classified::Failure(Failure::Permanent(_))
        ));
    }

    /// A stream whose ingest queue is over the server's limit refuses for a moment, not
    /// for good: the rows are sent again.
    #[test]
    fn too_many_requests_waiting_at_the_stream_is_backpressure() {
        let api: jetstream::Error = serde_json::from_str(
            r#"{"code":429,"err_code":10167,"description":"too many requests"}"#,
        )
        .unwrap();
        let refused = PublishError::with_source(PublishErrorKind::Other, api);
        let Classified::Failure(Failure::Transient(kind, why)) = classify(&refused, "S", false)
        else {
            panic!("not transient");
        };
        assert_eq!(kind, TransientKind::Backpressure);
        assert!(
            why.contains("stream 'S'") && why.contains("max_in_flight"),
            "{why}"
        );
    }
}
