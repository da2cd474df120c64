//! NATS -> SQL -> NATS: JSON messages read from a stream, passed through a query and
//! published to another stream, through the engine against the same work by hand.
//!
//! Baseline: async-nats pulling the messages from an ephemeral consumer (batches of 500,
//! the source's `fetch_size`), arrow-json decoding each batch into the columns and
//! encoding each row back to JSON, and publishing the rows to the output stream with at
//! most 1024 acks outstanding, awaited in order. Engine:
//! `INSERT INTO out SELECT ... FROM orders_in` with `orders_in` a `nats_source` table
//! reading the stream to its end (`stop_at = 'end'`, an ephemeral consumer) and `out` a
//! JetStream `nats_sink` with the same window (`max_in_flight = '1024'`). Both on one current-thread runtime against one nats-server;
//! the output stream is purged, untimed, before each iteration, and checked after it.
//!
//! The durable variant acknowledges what it reads once its rows are stored: raw, a
//! durable pull consumer whose message is acked (`+ACK`, not awaited) as the ack of its
//! output row comes in; engine, the same source with `consumer = 'bench'`, read
//! continuously and ended by `LIMIT` (the source then acks on its sink's confirmations,
//! `connector-nats/src/source/ack.rs`; the messages of the batch the limit cut are
//! handed back). The consumer is deleted, untimed, before each iteration.
//!
//! After criterion's groups the bench runs raw/engine pairs back to back and prints
//! their ratios (this machine's speed drifts over minutes; the median pair is the figure
//! to quote). Report: engine / raw.

// Shared by the benches; this one uses the runtime and the row counts only.
#[allow(dead_code)]
mod common;

use std::collections::VecDeque;
use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::jetstream::{self, Context, consumer, stream};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::json::{LineDelimitedWriter, ReaderBuilder};
use futures::StreamExt;
use nats_testkit::NatsServer;
use streamsql::Engine;
use tokio::runtime::Runtime;

const ROWS: u64 = 100_000;
const TEST_MODE_ROWS: u64 = 5_000;
const FETCH: usize = 500;
const WINDOW: usize = 1024;
const PAIRS: usize = 5;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("order_id", DataType::Int64, true),
        Field::new("customer", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("status", DataType::Utf8, true),
        Field::new("note", DataType::Utf8, true),
    ]))
}

/// The durable consumer of the durable variant.
const DURABLE: &str = "bench";

/// Which reading is measured.
#[derive(Debug, Clone, Copy)]
enum Read {
    /// To the stream's end, on an ephemeral consumer that acknowledges nothing.
    Bounded,
    /// Continuously from a durable consumer, acknowledging as rows are stored.
    Durable,
}

/// The engine's statements: the source over `ORDERS`, the sink into `OUT`.
fn script(url: &str, read: Read, rows: u64) -> String {
    let (reading, limit) = match read {
        Read::Bounded => ("stop_at = 'end'".to_string(), String::new()),
        Read::Durable => (format!("consumer = '{DURABLE}'"), format!(" LIMIT {rows}")),
    };
    format!(
        "CREATE CONNECTION c FROM nats_sink WITH (servers = '{url}');
         CREATE TABLE orders_in (order_id BIGINT, customer VARCHAR, amount DOUBLE,
                                 status VARCHAR, note VARCHAR)
         WITH (connector = 'nats_source', connection = 'c', stream = 'ORDERS', {reading});
         CREATE TABLE out (order_id BIGINT, customer VARCHAR, amount DOUBLE, status VARCHAR,
                           note VARCHAR)
         WITH (connector = 'nats_sink', connection = 'c', stream = 'OUT', subject = 'out.orders',
               max_in_flight = '{WINDOW}');
         INSERT INTO out SELECT order_id, customer, amount, status, note FROM orders_in{limit};"
    )
}

struct Setup {
    runtime: Runtime,
    rows: u64,
    url: String,
    client: Client,
    js: Context,
}

impl Setup {
    fn new() -> (Setup, NatsServer) {
        let rows = common::rows(ROWS, TEST_MODE_ROWS);
        let runtime = common::runtime();
        let server = NatsServer::start();
        let url = server.url();
        let (client, js) = runtime.block_on(async {
            let client = nats_testkit::connect(&url).await;
            let js = jetstream::new(client.clone());
            for (name, subjects) in [("ORDERS", "orders.>"), ("OUT", "out.>")] {
                js.create_stream(stream::Config {
                    name: name.into(),
                    subjects: vec![subjects.into()],
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .unwrap();
            }
            let mut acks = VecDeque::new();
            for i in 0..rows {
                let payload = format!(
                    r#"{{"order_id":{i},"customer":"customer-{:08}","amount":{},"status":"{}","note":"order {i} placed through the web shop, standard delivery"}}"#,
                    i * 7919 % 100_000,
                    i as f64 * 1.25,
                    ["new", "paid", "shipped", "delivered"][i as usize % 4]
                );
                acks.push_back(js.publish(format!("orders.region{}", i % 100), payload.into()).await.unwrap());
                if acks.len() == WINDOW {
                    acks.pop_front().unwrap().await.unwrap();
                }
            }
            for ack in acks {
                ack.await.unwrap();
            }
            (client, js)
        });
        println!(
            "{rows} JSON messages of about 150 bytes in stream ORDERS, read whole each iteration"
        );
        (
            Setup {
                runtime,
                rows,
                url,
                client,
                js,
            },
            server,
        )
    }

    /// One timed iteration of `raw` or the engine on an empty `OUT`, without the durable
    /// consumer.
    fn run(&self, raw: bool, read: Read) -> Duration {
        self.runtime.block_on(async {
            let out = self.js.get_stream("OUT").await.unwrap();
            out.purge().await.unwrap();
            let orders = self.js.get_stream("ORDERS").await.unwrap();
            // Absent the first time.
            let _ = orders.delete_consumer(DURABLE).await;
            let started = Instant::now();
            if raw {
                self.raw(read).await;
            } else {
                let mut engine = Engine::new();
                engine
                    .execute(&script(&self.url, read, self.rows))
                    .await
                    .unwrap();
            }
            let elapsed = started.elapsed();
            let mut out = self.js.get_stream("OUT").await.unwrap();
            assert_eq!(out.info().await.unwrap().state.messages, self.rows);
            if let Read::Durable = read {
                // The engine's LIMIT stops the read mid-batch: the messages of the batch
                // it cut are handed back, since the source cannot tell which of their
                // rows the limit let through.
                let info = orders.consumer_info(DURABLE).await.unwrap();
                let floor = info.ack_floor.stream_sequence;
                assert!(
                    floor + FETCH as u64 >= self.rows,
                    "acknowledged up to {floor}"
                );
            }
            elapsed
        })
    }

    /// The same work by hand: pull, decode, encode, publish with a window of acks, and
    /// (durable) acknowledge each message once its row's ack came.
    async fn raw(&self, read: Read) {
        let stream = self.js.get_stream("ORDERS").await.unwrap();
        let config = match read {
            Read::Bounded => consumer::pull::Config {
                ack_policy: consumer::AckPolicy::None,
                ..Default::default()
            },
            Read::Durable => consumer::pull::Config {
                durable_name: Some(DURABLE.into()),
                ack_policy: consumer::AckPolicy::Explicit,
                ..Default::default()
            },
        };
        let consumer = stream.create_consumer(config).await.unwrap();
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(FETCH)
            .messages()
            .await
            .unwrap()
            .ready_chunks(FETCH);
        let mut decoder = ReaderBuilder::new(schema()).build_decoder().unwrap();
        let mut acks: VecDeque<InFlight> = VecDeque::with_capacity(WINDOW);
        let mut taken = 0;
        let mut replies = VecDeque::with_capacity(FETCH);
        while taken < self.rows {
            // While the next messages are not there, take the acks that come in: the
            // consumer hands out no more than max_ack_pending unacknowledged messages.
            let chunk = loop {
                let Some((ack, _)) = acks.front_mut() else {
                    break messages.next().await.unwrap();
                };
                tokio::select! {
                    biased;
                    chunk = messages.next() => break chunk.unwrap(),
                    stored = ack => {
                        stored.unwrap();
                        let (_, reply) = acks.pop_front().unwrap();
                        self.acknowledge(reply).await;
                    }
                }
            };
            for message in chunk {
                let message = message.unwrap();
                decoder.decode(&message.payload).unwrap();
                if let (Read::Durable, Some(reply)) = (read, message.reply.clone()) {
                    replies.push_back(reply);
                }
                taken += 1;
            }
            let batch = decoder.flush().unwrap().unwrap();
            let mut json = Vec::with_capacity(batch.num_rows() * 160);
            let mut writer = LineDelimitedWriter::new(&mut json);
            writer.write(&batch).unwrap();
            writer.finish().unwrap();
            let json = bytes::Bytes::from(json);
            let mut start = 0;
            for end in memchr_newlines(&json) {
                if acks.len() == WINDOW {
                    self.confirmed(acks.pop_front().unwrap()).await;
                }
                let row = json.slice(start..end);
                start = end + 1;
                let ack = self.js.publish("out.orders", row).await.unwrap();
                acks.push_back((ack.into_future(), replies.pop_front()));
            }
        }
        for ack in acks {
            self.confirmed(ack).await;
        }
        self.client.flush().await.unwrap();
    }

    /// Waits for an output row's ack, then acknowledges its source message, if any.
    async fn confirmed(&self, (ack, reply): InFlight) {
        ack.await.unwrap();
        self.acknowledge(reply).await;
    }

    /// Acknowledges a source message (durable), without waiting.
    async fn acknowledge(&self, reply: Option<async_nats::Subject>) {
        if let Some(reply) = reply {
            self.client.publish(reply, "+ACK".into()).await.unwrap();
        }
    }
}

/// An output row waiting for its ack, and (durable) the reply subject of its source
/// message.
type InFlight = (
    <jetstream::context::PublishAckFuture as IntoFuture>::IntoFuture,
    Option<async_nats::Subject>,
);

/// Positions of the line ends in `json`.
fn memchr_newlines(json: &[u8]) -> impl Iterator<Item = usize> + '_ {
    json.iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i)
}

fn bench(c: &mut Criterion) {
    let (setup, _server) = Setup::new();
    let mut group = c.benchmark_group("source_pipeline");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.throughput(Throughput::Elements(setup.rows));
    let variants = [
        ("raw_async_nats", true, Read::Bounded),
        ("engine_insert", false, Read::Bounded),
        ("raw_durable_acked", true, Read::Durable),
        ("engine_durable_insert", false, Read::Durable),
    ];
    for (name, raw, read) in variants {
        group.bench_function(name, |b| {
            b.iter_custom(|iterations| (0..iterations).map(|_| setup.run(raw, read)).sum())
        });
    }
    group.finish();
    if !common::bench_mode() {
        return;
    }
    for read in [Read::Bounded, Read::Durable] {
        let mut ratios: Vec<f64> = (0..PAIRS)
            .map(|_| {
                let (raw, engine) = (setup.run(true, read), setup.run(false, read));
                raw.as_secs_f64() / engine.as_secs_f64()
            })
            .collect();
        ratios.sort_by(f64::total_cmp);
        let rate = |d: f64| setup.rows as f64 / d;
        println!(
            "source_pipeline {read:?} pairs (engine throughput / raw): {:?}; median {:.2} (raw {:.0} msg/s)",
            ratios.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>(),
            ratios[PAIRS / 2],
            rate(setup.run(true, read).as_secs_f64())
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
