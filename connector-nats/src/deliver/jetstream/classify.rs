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

use crate::deliver::failure::TransientKind;

/// The class of a failed publish or ack.
#[derive(Debug)]
pub(crate) enum AckFailure {
    /// Retrying may succeed: its class, and the reason for logs.
    Transient(TransientKind, String),
    /// Nobody answered on the subject: either the stream is gone (permanent) or it has no
    /// leader right now (transient); the caller asks the JetStream API which.
    NoResponders,
    /// An atomic batch was refused because the stream already has one of its message ids.
    AlreadyStored,
    /// Retrying cannot help; what the user should know and do.
    Permanent(String),
}

/// The JetStream API error behind `err`, if the server sent one.
pub(crate) fn api_error(err: &PublishError) -> Option<&jetstream::Error> {
    err.source()?.downcast_ref::<jetstream::Error>()
}

/// Classifies a failed `publish` or ack; `connection_lost` tells whether the client's
/// connection is gone (see `Connection::lost`).
pub(crate) fn classify(err: &PublishError, stream: &str, connection_lost: bool) -> AckFailure {
    match err.kind() {
        PublishErrorKind::TimedOut => {
            AckFailure::Transient(TransientKind::Timeout, "no ack from the stream within confirm_timeout".into())
        }
        PublishErrorKind::BrokenPipe => {
            AckFailure::Transient(TransientKind::Connection, "the connection dropped before the ack arrived".into())
        }
        PublishErrorKind::StreamNotFound => AckFailure::NoResponders,
        PublishErrorKind::MaxAckPending => {
            AckFailure::Transient(TransientKind::Backpressure, "too many acks pending in the client".into())
        }
        PublishErrorKind::MaxPayloadExceeded => AckFailure::Permanent(
            "a message is over the server's max_payload (the server's limit changed during the statement?)".into(),
        ),
        PublishErrorKind::WrongLastMessageId
        | PublishErrorKind::WrongLastSequence
        | PublishErrorKind::Other => match api_error(err) {
            Some(api) => classify_code(api, stream),
            // A client whose connection is gone stops taking commands: async-nats reports
            // the closed channel as `Other`, with no server error behind it.
            None if connection_lost => AckFailure::Transient(
                TransientKind::Connection,
                "the connection to the server was lost before the message was sent".into(),
            ),
            None => AckFailure::Permanent(format!("the publish failed: {err}")),
        },
    }
}

fn classify_code(api: &jetstream::Error, stream: &str) -> AckFailure {
    let code = api.error_code();
    let described = format!("{api} (JetStream error {})", code.0);
    match code {
        ErrorCode::STREAM_STORE_FAILED
        | ErrorCode::STORAGE_RESOURCES_EXCEEDED
        | ErrorCode::MEMORY_RESOURCES_EXCEEDED
        | ErrorCode::INSUFFICIENT_RESOURCES
        | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED => AckFailure::Transient(
            TransientKind::StorageFull,
            format!(
                "stream '{stream}' or the server's storage is full: {described}; waiting for space (consumers to catch up, limits raised, or discard old)"
            ),
        ),
        ErrorCode::CLUSTER_NOT_AVAILABLE | ErrorCode::CLUSTER_NOT_LEADER => AckFailure::Transient(
            TransientKind::NoLeader,
            format!(
                "the JetStream cluster cannot store right now (no quorum or no leader): {described}"
            ),
        ),
        ErrorCode::ATOMIC_PUBLISH_INCOMPLETE_BATCH => AckFailure::Transient(
            TransientKind::IncompleteBatch,
            format!("part of an atomic batch did not reach the server: {described}"),
        ),
        ErrorCode::ATOMIC_PUBLISH_CONTAINS_DUPLICATE_MESSAGE => AckFailure::AlreadyStored,
        ErrorCode::STREAM_NOT_FOUND => AckFailure::Permanent(format!(
            "stream '{stream}' does not exist (any more): create it again, then rerun the statement"
        )),
        ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM => AckFailure::Permanent(format!(
            "a message is over the max_msg_size of stream '{stream}': {described}"
        )),
        ErrorCode::ATOMIC_PUBLISH_DISABLED => AckFailure::Permanent(format!(
            "stream '{stream}' does not allow atomic publish: set allow_atomic on the stream for delivery = 'exactly_once'"
        )),
        ErrorCode::ATOMIC_PUBLISH_TOO_LARGE_BATCH => AckFailure::Permanent(format!(
            "the server refuses atomic batches this large: {described}; lower 'atomic_batch_size'"
        )),
        _ => AckFailure::Permanent(format!("stream '{stream}' refused a message: {described}")),
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
            AckFailure::Transient(..)
        ));
        assert!(matches!(
            classify(&closed(), "S", false),
            AckFailure::Permanent(_)
        ));
        let broken = PublishError::new(PublishErrorKind::BrokenPipe);
        assert!(matches!(
            classify(&broken, "S", false),
            AckFailure::Transient(..)
        ));
        // A refusal by the server stays what it is, connection or not.
        let api: jetstream::Error = serde_json::from_str(
            r#"{"code":404,"err_code":10059,"description":"stream not found"}"#,
        )
        .unwrap();
        let refused = PublishError::with_source(PublishErrorKind::Other, api);
        assert!(matches!(
            classify(&refused, "S", true),
            AckFailure::Permanent(_)
        ));
    }
}
