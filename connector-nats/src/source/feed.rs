//! Where messages come from, in chunks: a bounded JetStream read (pull requests that
//! return at once, up to the stream's last sequence at the start), a continuous
//! JetStream read, or a core subscription.
//!
//! A chunk is whatever is ready, up to `fetch_size` messages: a continuous read hands a
//! message on as soon as it arrives (no waiting for a chunk to fill), and never holds
//! more than one pull of messages (`fetch_size`) it has not handed on, so memory stays
//! bounded and a slow reader slows the pulls. A continuous JetStream read rides out a
//! server restart: the client reconnects and pulls again, and reading fails only after
//! it has failed for the connection's `retry_timeout` in a row.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::Subject;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::consumer::pull::MessagesErrorKind;
use futures::StreamExt;
use futures::stream::{BoxStream, ReadyChunks};
use tracing::{debug, warn};

use crate::error::{NatsSinkError, Result};
use crate::source::decode::{Incoming, Position};
use crate::source::health::Health;
use crate::source::options::MAX_ACK_PENDING;

/// A message and where its acknowledgement goes (`None`: nothing to acknowledge).
#[derive(Debug)]
pub(crate) struct Received {
    pub message: Incoming,
    pub reply: Option<Subject>,
    /// The consumer's messages still waiting at the server after this one (JetStream).
    pub pending: Option<u64>,
    /// A copy, delivered again, of a message this read has already read: no row comes
    /// of it, and it is acknowledged with the messages around it.
    pub copy: bool,
}

/// The messages of one read.
pub(crate) enum Feed {
    /// Up to `end`, then done.
    Bounded {
        /// Boxed: the consumer (with its configuration) is large beside the other variant.
        consumer: Box<PullConsumer>,
        /// Where messages past the end are handed back.
        client: async_nats::Client,
        stream: String,
        end: u64,
        fetch_size: usize,
        done: bool,
        /// The stream sequences read so far (a bounded read holds them all until its
        /// end): a copy delivered again is recognised, and only a copy.
        recent: Recent,
    },
    /// Until the statement stops.
    Continuous {
        chunks: ReadyChunks<BoxStream<'static, Read>>,
        /// The latest stream sequences read (JetStream), to tell copies.
        recent: Option<Recent>,
        health: Arc<Health>,
        /// How long reading may fail in a row before the read fails (the connection's
        /// `retry_timeout`; unset: until the statement is stopped).
        patience: Option<Duration>,
    },
}

/// A message, or a failure to read one.
pub(crate) enum Read {
    Message(Box<Received>),
    /// A failure the client may get over: a missed heartbeat or a failed pull while the
    /// server restarts or a leader is elected (the client reconnects and pulls again).
    Transient(String),
    Fatal(NatsSinkError),
}

impl Feed {
    /// A bounded read of `consumer` up to stream sequence `end`.
    pub(crate) fn bounded(
        consumer: PullConsumer,
        client: async_nats::Client,
        stream: String,
        end: u64,
        fetch_size: usize,
    ) -> Self {
        Feed::Bounded {
            consumer: Box::new(consumer),
            client,
            stream,
            end,
            fetch_size,
            done: end == 0,
            // Every sequence up to `end` (and one past it, which ends the read) fits.
            recent: Recent::new(usize::try_from(end).unwrap_or(usize::MAX).saturating_add(1)),
        }
    }

    /// A continuous read of `consumer`; reading may fail for up to `patience` in a row
    /// (see [`Read::Transient`]), shown meanwhile by `health`. `unacknowledged` is the
    /// most messages the consumer lets wait for their acknowledgement.
    pub(crate) async fn continuous(
        consumer: &PullConsumer,
        stream: String,
        fetch_size: usize,
        unacknowledged: usize,
        health: Arc<Health>,
        patience: Option<Duration>,
    ) -> Result<Self> {
        let messages = consumer
            .stream()
            .max_messages_per_batch(fetch_size)
            .messages()
            .await
            .map_err(|e| read_failed(&stream, e.to_string()))?;
        let messages = messages
            .map(move |item| match item {
                Ok(message) => match from_jetstream(message, &stream) {
                    Ok(received) => Read::Message(Box::new(received)),
                    Err(e) => Read::Fatal(e),
                },
                // The consumer is gone, or is not a pull consumer: pulling again cannot help.
                Err(e)
                    if matches!(
                        e.kind(),
                        MessagesErrorKind::ConsumerDeleted | MessagesErrorKind::PushBasedConsumer
                    ) =>
                {
                    Read::Fatal(read_failed(&stream, e.to_string()))
                }
                Err(e) => Read::Transient(format!("reading stream '{stream}': {e}")),
            })
            .boxed();
        Ok(Feed::Continuous {
            chunks: messages.ready_chunks(fetch_size),
            // Messages are acknowledged in the order they were read, so a copy can only
            // be of one of the last `unacknowledged` read, plus those the client fetched
            // ahead (which get no progress reports while they wait in its buffer).
            recent: Some(Recent::new(unacknowledged.saturating_add(fetch_size))),
            health,
            patience,
        })
    }

    /// A core subscription's messages.
    pub(crate) fn core(
        subscriber: async_nats::Subscriber,
        fetch_size: usize,
        health: Arc<Health>,
    ) -> Self {
        let messages = subscriber
            .map(|m| {
                Read::Message(Box::new(Received {
                    message: Incoming {
                        subject: m.subject.to_string(),
                        payload: m.payload,
                        headers: m.headers,
                        position: None,
                    },
                    reply: None,
                    pending: None,
                    copy: false,
                }))
            })
            .boxed();
        Feed::Continuous {
            chunks: messages.ready_chunks(fetch_size),
            recent: None,
            health,
            patience: None,
        }
    }

    /// The next chunk, `None` at the end of a bounded read.
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Vec<Received>>> {
        match self {
            Feed::Continuous {
                chunks,
                recent,
                health,
                patience,
            } => loop {
                let Some(items) = chunks.next().await else {
                    return Ok(None);
                };
                let mut chunk = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Read::Message(mut received) => {
                            if let (Some(recent), Some(position)) =
                                (recent.as_mut(), received.message.position)
                            {
                                received.copy = recent.seen(position.sequence);
                            }
                            chunk.push(*received);
                        }
                        Read::Fatal(e) => return Err(e),
                        Read::Transient(problem) => {
                            warn!("nats_source: {problem}; reading on");
                            let failing_for = health.failed(problem.clone());
                            if patience.is_some_and(|p| failing_for > p) {
                                return Err(NatsSinkError::Read {
                                    problem: format!(
                                        "gave up after reading failed for {failing_for:.1?} in a row (retry_timeout): {problem}; raise 'retry_timeout' or leave it unset to read on until the statement is stopped"
                                    ),
                                });
                            }
                        }
                    }
                }
                if !chunk.is_empty() {
                    health.recovered();
                    return Ok(Some(chunk));
                }
            },
            Feed::Bounded {
                consumer,
                client,
                stream,
                end,
                fetch_size,
                done,
                recent,
            } => {
                if *done {
                    return Ok(None);
                }
                let mut batch = consumer
                    .fetch()
                    .max_messages(*fetch_size)
                    .messages()
                    .await
                    .map_err(|e| read_failed(stream, e.to_string()))?;
                let mut chunk = Vec::new();
                while let Some(item) = batch.next().await {
                    let received = from_jetstream(
                        item.map_err(|e| read_failed(stream, e.to_string()))?,
                        stream,
                    )?;
                    let sequence = received.message.position.map_or(0, |p| p.sequence);
                    if recent.seen(sequence) {
                        // Delivered again (its ack_wait passed before a progress report):
                        // this read has it already, and acknowledges it at its end. A
                        // lower sequence seen for the first time (left unacknowledged by
                        // an earlier run, delivered again now) is read like any other.
                        continue;
                    }
                    if sequence > *end {
                        // Stored after the read began: not part of it. Handed back so the
                        // next read has it at once.
                        if let Some(reply) = received.reply
                            && let Err(e) = client.publish(reply, "-NAK".into()).await
                        {
                            debug!("nats_source: handing back a message past the end: {e}");
                        }
                        *done = true;
                        continue;
                    }
                    *done |= sequence == *end;
                    chunk.push(received);
                }
                if chunk.is_empty() {
                    if !*done {
                        check_not_stalled(consumer, stream, *end).await?;
                    }
                    *done = true;
                    return Ok(None);
                }
                Ok(Some(chunk))
            }
        }
    }
}

/// An empty pull before the end: fine when nothing more matches the consumer's filter,
/// but not when the server holds messages back because too many wait for their ack.
async fn check_not_stalled(consumer: &mut PullConsumer, stream: &str, end: u64) -> Result<()> {
    let info = consumer
        .info()
        .await
        .map_err(|e| read_failed(stream, format!("cannot read the consumer's state: {e}")))?;
    let limit = info.config.max_ack_pending;
    if limit > 0
        && info.num_ack_pending as i64 >= limit
        && info.num_pending > 0
        && info.delivered.stream_sequence < end
    {
        return Err(NatsSinkError::InvalidOption {
            option: MAX_ACK_PENDING.into(),
            problem: format!(
                "consumer '{}' stopped delivering: {} messages wait for their acknowledgement, its limit, and a bounded read acknowledges at its end; raise max_ack_pending (a new consumer name takes the option)",
                info.name, info.num_ack_pending
            ),
        });
    }
    Ok(())
}

fn read_failed(stream: &str, problem: String) -> NatsSinkError {
    NatsSinkError::JetStream {
        stream: stream.into(),
        problem: format!("reading failed: {problem}"),
    }
}

/// A JetStream message with its stream position; one whose reply subject carries no
/// position is refused (the server always sends one to a pull consumer).
fn from_jetstream(message: async_nats::jetstream::Message, stream: &str) -> Result<Received> {
    let (position, pending) = message
        .info()
        .map(|info| {
            let position = Position {
                sequence: info.stream_sequence,
                stored_ns: i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(i64::MAX),
            };
            (position, info.pending)
        })
        .map_err(|e| NatsSinkError::JetStream {
            stream: stream.to_string(),
            problem: format!("a message came without its stream position ({e})"),
        })?;
    // The message itself, reply subject included (`split` would move it to an acker).
    let message = message.message;
    Ok(Received {
        message: Incoming {
            subject: message.subject.to_string(),
            payload: message.payload,
            headers: message.headers,
            position: Some(position),
        },
        reply: message.reply,
        pending: Some(pending),
        copy: false,
    })
}

/// The stream sequences of the latest messages a read took, at most `cap`: how a copy the
/// server delivers again is told from a message seen for the first time.
pub(crate) struct Recent {
    order: VecDeque<u64>,
    set: HashSet<u64>,
    cap: usize,
}

impl Recent {
    fn new(cap: usize) -> Self {
        Recent {
            order: VecDeque::new(),
            set: HashSet::new(),
            cap: cap.max(1),
        }
    }

    /// Whether `sequence` was read already; remembers it if not.
    fn seen(&mut self, sequence: u64) -> bool {
        if !self.set.insert(sequence) {
            return true;
        }
        self.order.push_back(sequence);
        if self.order.len() > self.cap
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        false
    }
}
