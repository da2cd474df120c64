//! Helpers of the `nats_source` tests: messages into the stream `ORDERS`, a source table
//! over it, and running a script in the test process.

use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use streamsql::{Engine, EngineError, Outcome};

/// Publishes each payload to its subject in stream `ORDERS` and waits for the acks.
pub async fn publish(client: &Client, messages: &[(&str, &str)]) {
    let js = jetstream::new(client.clone());
    for (subject, payload) in messages {
        js.publish(subject.to_string(), payload.to_string().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

/// A connection `c` and the table `orders_in` over stream `ORDERS` with `options`.
pub fn source(url: &str, columns: &str, options: &str) -> String {
    format!(
        "CREATE CONNECTION c FROM nats_sink WITH (servers = '{url}');
         CREATE TABLE orders_in ({columns})
         WITH (connector = 'nats_source', connection = 'c', stream = 'ORDERS', {options});"
    )
}

/// Runs `script` in a fresh engine; a hang fails the test instead of stalling it.
pub async fn run(script: &str) -> Result<Vec<Outcome>, EngineError> {
    let mut engine = Engine::new();
    tokio::time::timeout(Duration::from_secs(60), engine.execute(script))
        .await
        .expect("the script finished within a minute")
}

/// The last query's result as a table.
pub fn table(outcomes: &[Outcome]) -> String {
    let Some(Outcome::Query { batches, .. }) = outcomes.last() else {
        panic!("no query result: {outcomes:?}")
    };
    let batches: &[RecordBatch] = batches;
    pretty_format_batches(batches).unwrap().to_string()
}

/// Four messages, the second and third of which do not decode into `order_id BIGINT`.
pub const POISONED: &[(&str, &str)] = &[
    ("orders.eu", r#"{"order_id": 1}"#),
    ("orders.us", r#"{"order_id": "two"}"#),
    ("orders.eu", "not json"),
    ("orders.us", r#"{"order_id": 4}"#),
];

/// The state of consumer `name` of stream `ORDERS`.
pub async fn consumer_info(client: &Client, name: &str) -> jetstream::consumer::Info {
    jetstream::new(client.clone())
        .get_stream("ORDERS")
        .await
        .unwrap()
        .consumer_info(name)
        .await
        .unwrap()
}

/// Consumer `name`'s acknowledged floor, messages waiting for their ack, messages left
/// to deliver, and messages delivered more than once.
pub async fn consumer_counts(client: &Client, name: &str) -> (u64, usize, u64, usize) {
    let info = consumer_info(client, name).await;
    (
        info.ack_floor.stream_sequence,
        info.num_ack_pending,
        info.num_pending,
        info.num_redelivered,
    )
}

/// The durable consumer's acknowledged floor and what it has left to deliver.
pub async fn consumer_state(client: &Client, name: &str) -> (u64, u64) {
    let info = consumer_info(client, name).await;
    (info.ack_floor.stream_sequence, info.num_pending)
}

/// Publishes `payloads` to `subject` with up to 2000 acks outstanding, then waits for
/// every ack: many messages in little time.
pub async fn publish_pipelined(
    client: &Client,
    subject: &str,
    payloads: impl IntoIterator<Item = String>,
) {
    let js = jetstream::new(client.clone());
    let mut acks = std::collections::VecDeque::new();
    for payload in payloads {
        acks.push_back(
            js.publish(subject.to_string(), payload.into())
                .await
                .unwrap(),
        );
        if acks.len() == 2000 {
            acks.pop_front().unwrap().await.unwrap();
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
}
