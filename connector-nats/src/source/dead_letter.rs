//! Where a source's undecodable messages go under `on_error = 'dead_letter'`.
//!
//! A dead letter stands for a message that is then acknowledged, so it must not be lost
//! where it can be kept: when a stream captures `dead_letter_subject`, each dead letter
//! is published through JetStream and its ack awaited before the message counts as
//! read, and a refusal (stream full, no leader, too large) fails the read naming the
//! subject. Without such a stream a dead letter is a core NATS publish, at most once,
//! as the README says.

use async_nats::jetstream::{self, context::GetStreamByNameErrorKind};
use async_nats::{Client, HeaderMap};
use tracing::warn;

use crate::deliver::rows::{DEAD_LETTER_REASON, DEAD_LETTER_SUBJECT};
use crate::error::{NatsSinkError, Result};
use crate::source::decode::Incoming;

/// Header of a dead letter: the stream the message came from.
pub const DEAD_LETTER_STREAM: &str = "StreamSQL-Stream";
/// Header of a dead letter: the message's stream sequence.
pub const DEAD_LETTER_SEQUENCE: &str = "StreamSQL-Sequence";

/// How dead letters to one subject are sent.
pub(crate) struct DeadLetters {
    subject: String,
    /// The stream that keeps them, through which they are published; `None`: core NATS.
    kept: Option<(String, jetstream::Context)>,
}

impl DeadLetters {
    /// Finds whether a stream captures `subject`.
    pub(crate) async fn open(client: &Client, subject: &str) -> Result<Self> {
        let js = jetstream::new(client.clone());
        let kept = match js.stream_by_subject(subject).await {
            Ok(stream) => Some((stream, js)),
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => None,
            // A server without JetStream answers nothing: no stream can keep them.
            Err(e) if e.to_string().contains("no responders") => None,
            Err(e) => {
                return Err(NatsSinkError::Read {
                    problem: format!(
                        "cannot tell whether a stream keeps dead_letter_subject '{subject}': {e}"
                    ),
                });
            }
        };
        Ok(DeadLetters {
            subject: subject.to_string(),
            kept,
        })
    }

    /// Sends `message`'s payload unchanged, with headers naming the problem, the original
    /// subject and, from `stream`, its name and sequence. Kept by a stream, it returns
    /// once the stream stored it.
    pub(crate) async fn send(
        &self,
        client: &Client,
        stream: Option<&str>,
        message: &Incoming,
        problem: &str,
    ) -> Result<()> {
        let subject = &self.subject;
        let mut headers = HeaderMap::new();
        headers.insert(DEAD_LETTER_REASON, one_line(problem).as_str());
        headers.insert(DEAD_LETTER_SUBJECT, one_line(&message.subject).as_str());
        if let (Some(stream), Some(position)) = (stream, message.position) {
            headers.insert(DEAD_LETTER_STREAM, stream);
            headers.insert(DEAD_LETTER_SEQUENCE, position.sequence.to_string().as_str());
        }
        warn!(
            "nats_source: dead-lettered the message on {} to '{subject}': {problem}",
            message.describe(stream)
        );
        let failed = |e: String| NatsSinkError::Publish {
            problem: format!(
                "sending a dead letter to '{subject}' (dead_letter_subject) failed: {e}"
            ),
            source: None,
        };
        let payload = message.payload.clone();
        match &self.kept {
            Some((kept_by, js)) => {
                let ack = js
                    .publish_with_headers(subject.clone(), headers, payload)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                ack.await
                    .map_err(|e| failed(format!("stream '{kept_by}' did not store it: {e}")))?;
                Ok(())
            }
            None => client
                .publish_with_headers(subject.clone(), headers, payload)
                .await
                .map_err(|e| failed(e.to_string())),
        }
    }

    /// After a chunk's dead letters, before its messages count as read: core ones are
    /// written out (kept ones are stored already).
    pub(crate) async fn flush(&self, client: &Client) -> Result<()> {
        if self.kept.is_some() {
            return Ok(());
        }
        client.flush().await.map_err(|e| NatsSinkError::Publish {
            problem: format!("sending dead letters to '{}' failed: {e}", self.subject),
            source: None,
        })
    }
}

/// A header value cannot hold a line break (async-nats panics on one).
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}
