//! One execution of a source: connect, open the feed, and turn chunks of messages into
//! record batches, handling the messages that do not decode (`on_error`).

use std::sync::Arc;

use async_nats::Client;
use datafusion::arrow::array::RecordBatch;
use datafusion::error::Result as DfResult;
use datafusion::physical_plan::metrics::{Count, Gauge};
use tracing::{debug, warn};

use crate::error::{NatsSinkError, Result};
use crate::metrics::prometheus::SourceSeries;
use crate::options::config::ConnectionConfig;
use crate::options::config::OnError;
use crate::source::SourceSpec;
use crate::source::ack::Acks;
use crate::source::consumer;
use crate::source::dead_letter::DeadLetters;
use crate::source::decode::Incoming;
use crate::source::feed::Feed;
use crate::source::health::Health;
use crate::source::options::Input;

/// What a read counts: for `EXPLAIN ANALYZE` and the status page (the plan's metrics),
/// and in the source's Prometheus series.
pub(crate) struct Counters {
    pub read: Count,
    pub skipped: Count,
    pub dead_lettered: Count,
    /// The consumer's messages waiting at the server, as of the last one read.
    pub pending: Gauge,
    pub series: SourceSeries,
}

impl Counters {
    fn read(&self, messages: usize) {
        self.read.add(messages);
        self.series.read.inc_by(messages as u64);
    }

    fn skipped(&self) {
        self.skipped.add(1);
        self.series.skipped.inc();
    }

    fn dead_lettered(&self) {
        self.dead_lettered.add(1);
        self.series.dead_lettered.inc();
    }

    fn pending(&self, pending: u64) {
        self.pending
            .set(usize::try_from(pending).unwrap_or(usize::MAX));
        self.series
            .pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }
}

/// A running read.
pub(crate) struct Reader {
    spec: Arc<SourceSpec>,
    client: Client,
    feed: Feed,
    acks: Arc<Acks>,
    projection: Option<Vec<usize>>,
    counters: Counters,
    /// Where undecodable messages go, under `on_error = 'dead_letter'`.
    dead_letters: Option<DeadLetters>,
    /// Set after an error: the stream ends.
    failed: bool,
}

impl Reader {
    /// Connects and opens the consumer or subscription.
    pub(crate) async fn open(
        spec: Arc<SourceSpec>,
        acks: Arc<Acks>,
        health: Arc<Health>,
        projection: Option<Vec<usize>>,
        counters: Counters,
    ) -> Result<Self> {
        let connection = ConnectionConfig::from_options(&spec.options)?;
        let client = crate::source::connect::connect(&connection, &spec.name).await?;
        health.connected_by(&client);
        let config = &spec.config;
        let feed = match &config.input {
            Input::Core {
                subject,
                queue_group,
            } => {
                let subscribed = match queue_group {
                    Some(group) => client.queue_subscribe(subject.clone(), group.clone()).await,
                    None => client.subscribe(subject.clone()).await,
                };
                let subscriber = subscribed.map_err(|e| NatsSinkError::Read {
                    problem: format!("cannot subscribe to '{subject}': {e}"),
                })?;
                Feed::core(subscriber, config.fetch_size, health)
            }
            Input::JetStream(input) => {
                if let Some(durable) = &input.consumer {
                    if !config.bounded && !acks.following() {
                        return Err(NatsSinkError::InvalidOption {
                            option: "consumer".into(),
                            problem: format!(
                                "'{durable}': a continuous read from a durable consumer acknowledges each message once the sink confirmed its rows, and this plan was not linked to its sink (streamsql links an INSERT INTO a nats_sink table; a host embedding the connector calls connector_nats::source::link_statement before running the plan)"
                            ),
                        });
                    }
                    // Held with what the statement owes the consumer, until it ends.
                    acks.hold(consumer::Claim::new(
                        &connection.servers_display(),
                        &input.stream,
                        durable,
                    )?);
                }
                let js = async_nats::jetstream::new(client.clone());
                let opened = consumer::open(&js, input, config.bounded).await?;
                if input.consumer.is_some() {
                    acks.start(client.clone());
                    acks.start_acking(opened.consumer.cached_info().config.ack_wait);
                }
                match opened.end {
                    Some(end) => Feed::bounded(
                        opened.consumer,
                        client.clone(),
                        input.stream.clone(),
                        end,
                        config.fetch_size,
                    ),
                    None => {
                        let unacknowledged = opened.consumer.cached_info().config.max_ack_pending;
                        Feed::continuous(
                            &opened.consumer,
                            input.stream.clone(),
                            config.fetch_size,
                            // Unlimited (-1): as many as a large pending count.
                            usize::try_from(unacknowledged).unwrap_or(1 << 20),
                            health,
                            connection.retry_timeout,
                        )
                        .await?
                    }
                }
            }
        };
        let dead_letters = match &config.on_poison {
            OnError::DeadLetter(subject) => Some(DeadLetters::open(&client, subject).await?),
            OnError::Fail | OnError::Skip => None,
        };
        Ok(Reader {
            spec,
            client,
            feed,
            dead_letters,
            acks,
            projection,
            counters,
            failed: false,
        })
    }

    /// The next batch of rows; `None` at the end of a bounded read or after an error.
    pub(crate) async fn next_batch(&mut self) -> Option<DfResult<RecordBatch>> {
        if self.failed {
            return None;
        }
        // Asked for more: the rows of what was read so far are with the sink.
        self.acks.pass_on();
        match self.try_next_batch().await {
            Ok(Some(batch)) => Some(Ok(batch)),
            Ok(None) => {
                self.acks.finished();
                None
            }
            Err(e) => {
                self.failed = true;
                self.acks.abandon().await;
                Some(Err(e.into()))
            }
        }
    }

    async fn try_next_batch(&mut self) -> Result<Option<RecordBatch>> {
        loop {
            let Some(chunk) = self.feed.next_chunk().await? else {
                return Ok(None);
            };
            if let Some(pending) = chunk.last().and_then(|r| r.pending) {
                self.counters.pending(pending);
            }
            // Copies delivered again are acknowledged with the rest, and make no row.
            let (copies, chunk): (Vec<_>, Vec<_>) = chunk.into_iter().partition(|r| r.copy);
            if !copies.is_empty() {
                debug!(
                    copies = copies.len(),
                    "nats_source: messages delivered again while this read held them"
                );
                self.acks.read(copies.into_iter().filter_map(|r| r.reply));
                if chunk.is_empty() {
                    self.acks.pass_on();
                    continue;
                }
            }
            let (messages, replies): (Vec<Incoming>, Vec<_>) =
                chunk.into_iter().map(|r| (r.message, r.reply)).unzip();
            // Every message read is settled with the statement: acknowledged if it
            // succeeds, handed back if not (a poison message that fails it included).
            self.acks.read(replies.into_iter().flatten());
            self.counters.read(messages.len());
            let decoded = self.spec.decoder.decode(&messages)?;
            let mut dead_lettered = false;
            for poison in &decoded.poison {
                let message = &messages[poison.index];
                let described = message.describe(self.stream());
                match &self.spec.config.on_poison {
                    OnError::Fail => {
                        return Err(NatsSinkError::Undecodable {
                            message: described,
                            problem: poison.problem.clone(),
                        });
                    }
                    OnError::Skip => {
                        self.counters.skipped();
                        warn!(
                            table = %self.spec.name,
                            "nats_source: skipped the message on {described}: {}",
                            poison.problem
                        );
                    }
                    OnError::DeadLetter(_) => {
                        let letters = self.dead_letters.as_ref().expect("opened with the read");
                        let stream = self.stream();
                        letters
                            .send(&self.client, stream, message, &poison.problem)
                            .await?;
                        dead_lettered = true;
                        self.counters.dead_lettered();
                    }
                }
            }
            if let (true, Some(letters)) = (dead_lettered, &self.dead_letters) {
                // Written before the messages count as read (and may be acknowledged).
                letters.flush(&self.client).await?;
            }
            if decoded.batch.num_rows() == 0 {
                // No row came of these messages, and nothing was handed on since the last
                // pass: they are done once what the sink took is settled. Without this, a
                // run of undecodable messages as long as max_ack_pending would stop the
                // consumer for good.
                self.acks.pass_on();
                continue;
            }
            return Ok(Some(match &self.projection {
                Some(columns) => decoded.batch.project(columns)?,
                None => decoded.batch,
            }));
        }
    }

    fn stream(&self) -> Option<&str> {
        match &self.spec.config.input {
            Input::JetStream(input) => Some(&input.stream),
            Input::Core { .. } => None,
        }
    }
}
