//! From an encoded row to what goes out for it: the row's message, its dead letter, or
//! nothing (skipped). Core and JetStream publishers share this, so headers, size limits
//! and the `on_error` policy mean the same in both.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use tracing::warn;

use crate::encode::EncodedBatch;
use crate::encode::headers::TTL_HEADER;
use crate::error::NatsSinkError;
use crate::options::config::{Mode, OnError, SinkConfig};
use crate::options::message::TtlSpec;
use crate::subject;

/// Headers a dead letter carries: why the row could not be delivered, the subject it was
/// meant for, and its position in the statement (from 1). A key-value row's also carries
/// its key and, for a delete or purge, its operation (`DEL` or `PURGE`, the values of the
/// bucket's own `KV-Operation` header, under a name no server or client acts on).
pub const DEAD_LETTER_REASON: &str = "StreamSQL-Error";
pub const DEAD_LETTER_SUBJECT: &str = "StreamSQL-Subject";
pub const DEAD_LETTER_ROW: &str = "StreamSQL-Row";
pub const DEAD_LETTER_KEY: &str = "StreamSQL-Key";
pub const DEAD_LETTER_OPERATION: &str = "StreamSQL-KV-Operation";

/// The headers of JetStream's atomic batch protocol (see `jetstream::atomic`).
pub(crate) const BATCH_ID: &str = "Nats-Batch-Id";
pub(crate) const BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
pub(crate) const BATCH_COMMIT: &str = "Nats-Batch-Commit";

/// Room the batch headers take at most: an id of 16 hex digits, a dash and a counter, a
/// sequence within a batch, and the commit flag.
const BATCH_HEADERS_MAX: usize =
    BATCH_ID.len() + 37 + 4 + BATCH_SEQUENCE.len() + 20 + 4 + BATCH_COMMIT.len() + 1 + 4;

/// How many skipped or dead-lettered rows are logged one by one; the rest are counted.
const LOGGED_REJECTIONS: u64 = 100;

/// One message ready to publish.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub subject: Subject,
    pub reply: Option<Subject>,
    pub headers: Option<HeaderMap>,
    pub payload: Bytes,
}

/// What is done for one row.
#[derive(Debug)]
pub(crate) enum Planned {
    Send(Message),
    DeadLetter(Message),
    Skip,
}

impl Planned {
    /// The bytes this plan sends (none for a skip): see [`Message::size`].
    pub(crate) fn size(&self) -> usize {
        match self {
            Planned::Send(m) | Planned::DeadLetter(m) => m.size(),
            Planned::Skip => 0,
        }
    }
}

/// The largest message the destination takes, and whose limit it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    pub bytes: usize,
    pub source: &'static str,
}

/// Builds each row's message for one sink.
#[derive(Debug)]
pub(crate) struct RowPlanner {
    static_headers: Vec<(String, String)>,
    static_len: usize,
    expected_stream: Option<String>,
    on_error: OnError,
    dead_letter: Option<Subject>,
    limit: Limit,
    /// The dead-letter stream's limit, where it differs from the rows' destination.
    dead_letter_limit: Option<Limit>,
    /// Rows go out in atomic batches, whose headers count against the limit too.
    atomic_batches: bool,
    /// Identifies this execution in the ids of dead letters of rows without a message id,
    /// so a dead letter sent again after a failure is dropped as a duplicate.
    run_id: String,
    rejected: u64,
}

/// Bytes a header line takes on the wire: `Name: value\r\n`.
fn header_line(name: &str, value: &str) -> usize {
    name.len() + value.len() + 4
}

/// Bytes `headers` take on the wire, block included.
fn headers_size(headers: &HeaderMap) -> usize {
    let lines = headers.iter().flat_map(|(name, values)| {
        values
            .iter()
            .map(move |v| header_line(name.as_ref(), v.as_str()))
    });
    HEADER_BLOCK + lines.sum::<usize>()
}

impl Message {
    /// The message's size as the server counts it: payload and headers.
    pub(crate) fn size(&self) -> usize {
        self.payload.len() + self.headers.as_ref().map_or(0, headers_size)
    }
}

/// The header block's fixed part: `NATS/1.0\r\n` and the closing `\r\n`.
const HEADER_BLOCK: usize = 12;

impl RowPlanner {
    /// `expected_stream`: the stream name to send as `Nats-Expected-Stream`, if any.
    pub(crate) fn new(config: &SinkConfig, expected_stream: Option<String>, limit: Limit) -> Self {
        let atomic_batches =
            matches!(&config.mode, Mode::JetStream(js) if js.atomic_batch.is_some());
        let mut static_headers = config.headers.clone();
        if let Some(TtlSpec::Fixed(ttl)) = &config.ttl {
            static_headers.push((TTL_HEADER.to_string(), ttl.header_value()));
        }
        let static_len = static_headers.iter().map(|(n, v)| header_line(n, v)).sum();
        let dead_letter = match &config.on_error {
            OnError::DeadLetter(subject) => Some(Subject::from(subject.as_str())),
            _ => None,
        };
        RowPlanner {
            static_headers,
            static_len,
            expected_stream,
            on_error: config.on_error.clone(),
            dead_letter,
            limit,
            dead_letter_limit: None,
            atomic_batches,
            run_id: format!(
                "{:016x}",
                RandomState::new().hash_one(std::time::SystemTime::now())
            ),
            rejected: 0,
        }
    }

    /// Dead letters go to a stream with this limit (JetStream: the dead-letter stream's).
    pub(crate) fn with_dead_letter_limit(mut self, limit: Option<Limit>) -> Self {
        self.dead_letter_limit = limit;
        self
    }

    /// Bytes row `i`'s message counts against the destination's limit (payload + headers).
    fn size(&self, batch: &EncodedBatch, i: usize) -> usize {
        let mut headers = self.static_len
            + batch
                .row_headers(i)
                .iter()
                .map(|(name, value)| header_line(name.as_ref(), value.as_str()))
                .sum::<usize>();
        if let Some(id) = batch.msg_id(i) {
            headers += header_line("Nats-Msg-Id", id);
        }
        if let Some(stream) = &self.expected_stream {
            headers += header_line("Nats-Expected-Stream", stream);
        }
        if self.atomic_batches {
            headers += BATCH_HEADERS_MAX;
        }
        let block = if headers > 0 {
            HEADER_BLOCK + headers
        } else {
            0
        };
        batch.payload_len(i) + block
    }

    /// Whether rejected rows are skipped (rather than failing or dead-lettered).
    pub(crate) fn skips(&self) -> bool {
        self.on_error == OnError::Skip
    }

    /// Whether a rejected row fails the statement.
    pub(crate) fn fails(&self) -> bool {
        self.on_error == OnError::Fail
    }

    /// Rejects every row whose message is over the limit.
    pub(crate) fn check_sizes(&self, batch: &mut EncodedBatch) {
        let Limit { bytes, source } = self.limit;
        for i in 0..batch.len() {
            let size = self.size(batch, i);
            if size > bytes {
                batch.reject(i, format!(
                    "the message is {size} bytes, over {source} of {bytes} bytes: leave large columns out of the query, or raise the limit"
                ));
            }
        }
    }

    /// Under `on_error = 'fail'`, the first rejected row as the statement's error.
    pub(crate) fn check_fail(
        &self,
        batch: &EncodedBatch,
        rows_before: u64,
    ) -> Result<(), NatsSinkError> {
        if self.on_error != OnError::Fail {
            return Ok(());
        }
        match batch.rejections().next() {
            Some((i, rejection)) => Err(NatsSinkError::BadRow {
                row: rows_before + i as u64 + 1,
                problem: format!(
                    "{} (on_error = 'skip' or 'dead_letter' lets the statement go on without such rows)",
                    rejection.reason
                ),
                published: 0,
            }),
            None => Ok(()),
        }
    }

    /// Logs the rejected rows of a batch (the first ones one by one) and counts them.
    pub(crate) fn log_rejections(&mut self, batch: &EncodedBatch, rows_before: u64) {
        let what = if self.dead_letter.is_some() {
            "dead-lettered"
        } else {
            "skipped"
        };
        for (i, rejection) in batch.rejections() {
            self.rejected += 1;
            if self.rejected <= LOGGED_REJECTIONS {
                warn!(
                    row = rows_before + i as u64 + 1,
                    "nats_sink: row {what}: {}", rejection.reason
                );
            } else if self.rejected == LOGGED_REJECTIONS + 1 {
                warn!("nats_sink: more rows {what}; they are counted but no longer logged");
            }
        }
    }

    /// What goes out for row `i` of `batch`; `row` is its position in the statement (from 1).
    pub(crate) fn plan(&self, batch: &EncodedBatch, i: usize, row: u64) -> Planned {
        match batch.rejection(i) {
            None => Planned::Send(self.message(batch, i)),
            Some(rejection) => match &self.dead_letter {
                None => Planned::Skip,
                Some(subject) => {
                    let mut headers = HeaderMap::new();
                    headers.insert(DEAD_LETTER_REASON, one_line(&rejection.reason).as_str());
                    if let Some(original) = &rejection.subject {
                        headers.insert(DEAD_LETTER_SUBJECT, one_line(original).as_str());
                    }
                    headers.insert(DEAD_LETTER_ROW, row.to_string().as_str());
                    // A delete or purge has no value: without its op a replay would take
                    // the empty dead letter for a put. Not the bucket's own headers: a
                    // purge's `Nats-Rollup` would make the dead-letter stream drop the
                    // subject's earlier dead letters, and `KV-Operation` alone is half a
                    // purge to a tool that copies headers back into a bucket.
                    if let Some((key, op)) = batch.key_op(i) {
                        if let Some(key) = key {
                            headers.insert(DEAD_LETTER_KEY, one_line(&subject::kept(key)).as_str());
                        }
                        if let Some(operation) = op.operation() {
                            headers.insert(DEAD_LETTER_OPERATION, operation);
                        }
                    }
                    // Its own id, so a resent dead letter is dropped as a duplicate: the row's
                    // id where it has one (stable across reruns), else its position in this
                    // execution.
                    let id = match batch.msg_id(i) {
                        Some(id) => format!("dead-letter:{id}"),
                        None => format!("dead-letter:{}:{row}", self.run_id),
                    };
                    headers.insert("Nats-Msg-Id", id.as_str());
                    // The payload goes too unless the dead letter would then be too large.
                    let header_bytes = headers_size(&headers);
                    let limit = self.dead_letter_limit.unwrap_or(self.limit).bytes;
                    let payload = if header_bytes + batch.payload_len(i) > limit {
                        Bytes::new()
                    } else {
                        batch.payload(i)
                    };
                    Planned::DeadLetter(Message {
                        subject: subject.clone(),
                        reply: None,
                        headers: Some(headers),
                        payload,
                    })
                }
            },
        }
    }

    /// Row `i`'s own message (the row must not be rejected).
    pub(crate) fn message(&self, batch: &EncodedBatch, i: usize) -> Message {
        let msg_id = batch.msg_id(i);
        let row_headers = batch.row_headers(i);
        let headers = if self.static_headers.is_empty()
            && row_headers.is_empty()
            && msg_id.is_none()
            && self.expected_stream.is_none()
        {
            None
        } else {
            let mut headers = HeaderMap::new();
            for (name, value) in &self.static_headers {
                headers.append(name.as_str(), value.as_str());
            }
            // Checked when the columns were read: no name or value here can panic.
            for (name, value) in row_headers {
                headers.append(name.clone(), value.clone());
            }
            if let Some(id) = msg_id {
                headers.insert("Nats-Msg-Id", id);
            }
            if let Some(stream) = &self.expected_stream {
                headers.insert("Nats-Expected-Stream", stream.as_str());
            }
            Some(headers)
        };
        Message {
            subject: batch
                .subject(i)
                .expect("a row without a subject is rejected")
                .clone(),
            reply: batch.reply_to(i).cloned(),
            headers,
            payload: batch.payload(i),
        }
    }
}

/// A header value cannot hold a line break.
fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}
