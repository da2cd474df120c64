//! A continuous `nats_source` -> `nats_sink` pipeline over a durable consumer, through
//! crashes: `streamsql` killed with SIGKILL at several points of a 200k-message run and
//! started again, the source's server restarted mid-run, and two processes sharing one
//! durable consumer. Each output stream is read back: with message ids derived from
//! `_sequence` it holds every expected row exactly once, without them at least once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::Client;
use nats_testkit::NatsServer;

use crate::common;
use common::js::{create_stream, msg_id_counts, read_all, stored};
use common::running::Running;
use common::source::{consumer_info, publish_pipelined};

/// Order `i` (from 0) has `amount = i % 50`; the pipeline keeps `amount > 10`.
fn kept(sequence: u64) -> bool {
    (sequence - 1) % 50 > 10
}

/// Publishes orders `0..count` to `orders.eu`, pipelined, and waits for every ack.
async fn publish_orders(client: &Client, count: u64) {
    let payloads = (0..count).map(|i| format!(r#"{{"order_id": {i}, "amount": {}}}"#, i % 50));
    publish_pipelined(client, "orders.eu", payloads).await;
}

/// The pipeline from stream `ORDERS` on `source` through durable consumer `consumer`
/// into stream `out` on `sink`, with message ids from `_sequence` when `ids`.
fn pipeline(source: &str, sink: &str, consumer: &str, out: &str, ids: bool) -> String {
    let id_option = if ids { ", msg_id_field = 'id'" } else { "" };
    let subject = out.to_lowercase();
    format!(
        "CREATE CONNECTION src FROM nats_sink WITH (servers = '{source}');
         CREATE CONNECTION dst FROM nats_sink WITH (servers = '{sink}');
         CREATE TABLE orders_in (order_id BIGINT, amount BIGINT, _sequence BIGINT)
         WITH (connector = 'nats_source', connection = 'src', stream = 'ORDERS',
               consumer = '{consumer}', ack_wait = '5s');
         CREATE TABLE {subject}_out (order_id BIGINT, id VARCHAR)
         WITH (connector = 'nats_sink', connection = 'dst', stream = '{out}',
               subject = '{subject}.all'{id_option});
         INSERT INTO {subject}_out SELECT order_id, CAST(_sequence AS VARCHAR) AS id
         FROM orders_in WHERE amount > 10;"
    )
}

async fn consumer_done(client: &Client, name: &str) -> bool {
    let info = consumer_info(client, name).await;
    info.num_pending == 0 && info.num_ack_pending == 0
}

/// Waits until `done` holds, failing after `limit` with `what`.
async fn wait_until<F: std::future::Future<Output = bool>>(
    what: &str,
    limit: Duration,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sequences of the orders the stream `out` holds, with how often each is there.
async fn sequences(client: &Client, out: &str) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for message in read_all(client, out).await {
        let row = nats_testkit::payload_json(&message);
        let order = row["order_id"].as_u64().expect("an order_id");
        *counts.entry(order + 1).or_insert(0) += 1;
    }
    counts
}

/// Asserts that `counts` holds every expected sequence up to `count`, nothing else, and
/// (with `once`) each exactly once; returns how many copies beyond the first it holds.
fn check(counts: &BTreeMap<u64, usize>, count: u64, once: bool, out: &str) -> usize {
    let missing: Vec<u64> = (1..=count)
        .filter(|s| kept(*s) && !counts.contains_key(s))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "{out}: missing (first 10): {missing:?}");
    let unexpected: Vec<&u64> = counts.keys().filter(|s| !kept(**s)).take(10).collect();
    assert!(
        unexpected.is_empty(),
        "{out}: filtered out, yet stored: {unexpected:?}"
    );
    let copies: usize = counts.values().map(|n| n - 1).sum();
    if once {
        assert_eq!(copies, 0, "{out}: rows stored more than once");
    }
    copies
}

#[tokio::test]
async fn killed_at_several_points_and_started_again_every_row_is_stored() {
    const COUNT: u64 = 200_000;
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&client, "BILLING", &["billing.>"], |_| {}).await;
    create_stream(&client, "LEDGER", &["ledger.>"], |_| {}).await;
    publish_orders(&client, COUNT).await;
    let url = server.url();
    let with_ids = pipeline(&url, &url, "billing", "BILLING", true);
    let without = pipeline(&url, &url, "ledger", "LEDGER", false);
    let expected = (1..=COUNT).filter(|s| kept(*s)).count() as u64;

    // Killed twice, at about a tenth and at about half of the rows.
    for at in [expected / 10, expected / 2] {
        let (billing, ledger) = (
            Running::start(&[], &with_ids),
            Running::start(&[], &without),
        );
        wait_until(
            "the pipelines reach the kill point",
            Duration::from_secs(120),
            || {
                let client = client.clone();
                async move {
                    stored(&client, "BILLING").await >= at && stored(&client, "LEDGER").await >= at
                }
            },
        )
        .await;
        billing.kill();
        ledger.kill();
        eprintln!(
            "killed at {at}: BILLING held {}, LEDGER {}",
            stored(&client, "BILLING").await,
            stored(&client, "LEDGER").await
        );
    }

    // Started again, they read what was not acknowledged, to the end.
    let (billing, ledger) = (
        Running::start(&[], &with_ids),
        Running::start(&[], &without),
    );
    wait_until(
        "every message acknowledged",
        Duration::from_secs(180),
        || {
            let client = client.clone();
            async move {
                consumer_done(&client, "billing").await && consumer_done(&client, "ledger").await
            }
        },
    )
    .await;
    billing.interrupt();
    ledger.interrupt();

    let billed = sequences(&client, "BILLING").await;
    check(&billed, COUNT, true, "BILLING");
    let ids = msg_id_counts(&read_all(&client, "BILLING").await);
    assert!(
        ids.iter()
            .all(|(id, n)| *n == 1 && id.parse::<u64>().is_ok_and(kept))
    );
    let copies = check(&sequences(&client, "LEDGER").await, COUNT, false, "LEDGER");
    eprintln!(
        "{expected} rows expected: BILLING holds each once; LEDGER holds {copies} copies beyond the first"
    );
}

#[tokio::test]
async fn the_source_server_restarted_mid_run_loses_nothing() {
    const COUNT: u64 = 40_000;
    let mut source = NatsServer::start();
    let sink = NatsServer::start();
    let source_client = nats_testkit::connect(&source.url()).await;
    let sink_client = nats_testkit::connect(&sink.url()).await;
    create_stream(&source_client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&sink_client, "BILLING", &["billing.>"], |_| {}).await;
    publish_orders(&source_client, COUNT).await;
    let expected = (1..=COUNT).filter(|s| kept(*s)).count() as u64;

    let run = Running::start(
        &[],
        &pipeline(&source.url(), &sink.url(), "billing", "BILLING", true),
    );
    wait_until(
        "a fifth of the rows stored",
        Duration::from_secs(60),
        || {
            let client = sink_client.clone();
            async move { stored(&client, "BILLING").await >= expected / 5 }
        },
    )
    .await;
    source.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    source.restart();
    let source_client = nats_testkit::connect(&source.url()).await;
    wait_until(
        "every message acknowledged",
        Duration::from_secs(120),
        || {
            let client = source_client.clone();
            async move { consumer_done(&client, "billing").await }
        },
    )
    .await;
    let (stdout, _) = run.interrupt();
    assert!(stdout.contains("INSERT INTO billing_out"), "{stdout}");
    check(
        &sequences(&sink_client, "BILLING").await,
        COUNT,
        true,
        "BILLING",
    );
}

#[tokio::test]
async fn two_processes_on_one_durable_consumer_split_its_messages_and_store_each_row_once() {
    const COUNT: u64 = 40_000;
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&client, "BILLING", &["billing.>"], |_| {}).await;
    let script = pipeline(&server.url(), &server.url(), "billing", "BILLING", true);
    let (first, second) = (Running::start(&[], &script), Running::start(&[], &script));
    publish_orders(&client, COUNT).await;
    wait_until(
        "every message acknowledged",
        Duration::from_secs(120),
        || {
            let client = client.clone();
            async move { consumer_done(&client, "billing").await }
        },
    )
    .await;
    let rows = |stdout: &str| common::inserted_rows(stdout, "billing_out");
    let (first, second) = (rows(&first.interrupt().0), rows(&second.interrupt().0));
    let expected = (1..=COUNT).filter(|s| kept(*s)).count() as u64;
    eprintln!("the two processes confirmed {first} and {second} of {expected} rows");
    assert!(
        first > 0 && second > 0,
        "one process got every message: {first} and {second}"
    );
    assert_eq!(first + second, expected);
    check(&sequences(&client, "BILLING").await, COUNT, true, "BILLING");
}
