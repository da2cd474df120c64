//! A continuous `nats_source` read into a slow sink (`max_in_flight = '1'`: one message
//! in flight at a time) holds no more memory for ten times the messages: the source pulls
//! only as the plan takes rows, and the consumer's `max_ack_pending` bounds what waits
//! for its acknowledgement. The sizes default to 20k and 200k messages so that the
//! suite stays short; `SOURCE_MEMORY_MESSAGES=1000000` runs 100k against 1M (README).

use std::time::{Duration, Instant};

use async_nats::Client;
use nats_testkit::NatsServer;

use crate::common;
use common::js::{create_stream, stored};
use common::running::Running;
use common::source::publish_pipelined;

/// Headroom for warm-up and allocator noise between the two runs.
const TOLERANCE: f64 = 0.10;

/// Publishes orders `from..to` of about 200 bytes of JSON, pipelined.
async fn publish_orders(client: &Client, from: u64, to: u64) {
    let payloads = (from..to).map(|i| {
        format!(
            r#"{{"order_id": {i}, "customer": "customer-{:08}", "amount": {}.25, "note": "order {i} for a memory test, padded to about two hundred bytes of JSON"}}"#,
            i * 7919 % 100_000,
            i % 1000
        )
    });
    publish_pipelined(client, "orders.eu", payloads).await;
}

/// Runs the pipeline with consumer `consumer` until the stream `OUT` holds `rows`, and
/// returns the process's peak resident memory in KiB.
async fn peak_of_run(client: &Client, url: &str, consumer: &str, rows: u64) -> u64 {
    let script = format!(
        "CREATE CONNECTION c FROM nats_sink WITH (servers = '{url}');
         CREATE TABLE orders_in (order_id BIGINT, customer VARCHAR, amount DOUBLE, note VARCHAR,
                                 _sequence BIGINT)
         WITH (connector = 'nats_source', connection = 'c', stream = 'ORDERS',
               consumer = '{consumer}');
         CREATE TABLE out (order_id BIGINT, customer VARCHAR, amount DOUBLE, note VARCHAR)
         WITH (connector = 'nats_sink', connection = 'c', stream = 'OUT',
               subject = 'out.{consumer}', max_in_flight = '1');
         INSERT INTO out SELECT order_id, customer, amount * 1.2 AS amount, note FROM orders_in;"
    );
    let run = Running::start(&[], &script);
    let started = Instant::now();
    let stored_before = stored(client, "OUT").await;
    while stored(client, "OUT").await < stored_before + rows {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "{consumer}: {rows} rows not stored within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let peak = run.peak_rss_kib();
    let (stdout, _) = run.interrupt();
    assert_eq!(common::inserted_rows(&stdout, "out"), rows, "{stdout}");
    eprintln!(
        "{consumer}: {rows} messages in {:?}, peak {peak} KiB",
        started.elapsed()
    );
    peak
}

#[tokio::test]
async fn a_slow_sink_does_not_make_a_continuous_read_grow_in_memory() {
    let large: u64 = std::env::var("SOURCE_MEMORY_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let small = large / 10;
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&client, "OUT", &["out.>"], |_| {}).await;

    publish_orders(&client, 0, small).await;
    let small_peak = peak_of_run(&client, &server.url(), "small", small).await;
    publish_orders(&client, small, large).await;
    let large_peak = peak_of_run(&client, &server.url(), "large", large).await;
    assert!(
        large_peak as f64 <= small_peak as f64 * (1.0 + TOLERANCE),
        "{large} messages peaked at {large_peak} KiB, {small} at {small_peak} KiB: memory grows with the messages read"
    );
}
