//! JetStream mode end to end: what the stream stores, the start checks, deduplication
//! and the summary's counts. Every check reads the stream back with a real consumer.

use crate::common;

use common::js::{assert_each_id_once, create_stream, header, read_all, stored};
use common::{assert_fails_with, inserted_rows, run_script, stdout, summary_count};
use nats_testkit::{NatsServer, payload_json};

/// `n` rows with ids 0..n, spread over four subjects under `orders.`.
fn rows(n: u64) -> String {
    format!(
        "SELECT value AS id, concat('orders.', CAST(value % 4 AS VARCHAR)) AS subject, \
         repeat('x', 100) AS body FROM generate_series(0, {})",
        n - 1
    )
}

fn insert(url: &str, select: &str, options: &str) -> std::process::Output {
    run_script(
        &format!(
            "INSERT INTO out {select} WITH (connector = 'nats_sink', servers = '{url}', \
             subject_field = 'subject', {options});"
        ),
        &[],
    )
}

#[tokio::test]
async fn every_row_is_stored_once_in_order_per_subject_and_a_rerun_only_adds_duplicates() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    let options = "stream = 'ORDERS', msg_id_field = 'id', expected_stream = 'ORDERS'";

    let output = insert(&server.url(), &rows(50_000), options);
    assert!(output.status.success(), "{}", common::stderr(&output));
    assert_eq!(inserted_rows(&stdout(&output), "out"), 50_000);
    assert_eq!(
        summary_count(&stdout(&output), "out", "duplicates"),
        Some(0)
    );

    let messages = read_all(&client, "ORDERS").await;
    assert_each_id_once(&messages, 50_000);
    // Per subject, the stream holds the rows in the query's order.
    for subject in 0..4u64 {
        let ids: Vec<u64> = messages
            .iter()
            .filter(|m| m.subject.as_str() == format!("orders.{subject}"))
            .map(|m| payload_json(m)["id"].as_u64().unwrap())
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "orders.{subject} out of order"
        );
        assert_eq!(ids.len(), 12_500);
    }
    assert_eq!(
        header(&messages[0], "Nats-Expected-Stream").as_deref(),
        Some("ORDERS")
    );

    // The same statement again: every row is a duplicate within the window, nothing new.
    let output = insert(&server.url(), &rows(50_000), options);
    assert!(output.status.success(), "{}", common::stderr(&output));
    assert_eq!(
        summary_count(&stdout(&output), "out", "duplicates"),
        Some(50_000)
    );
    assert_eq!(stored(&client, "ORDERS").await, 50_000);
}

/// A byte limit below one row's size still lets one row at a time through: the statement
/// finishes with every row stored, in order.
#[tokio::test]
async fn a_byte_window_smaller_than_a_row_sends_one_row_at_a_time() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    let output = insert(
        &server.url(),
        &rows(200),
        "stream = 'ORDERS', msg_id_field = 'id', max_in_flight_bytes = '1'",
    );
    assert!(output.status.success(), "{}", common::stderr(&output));
    assert_eq!(inserted_rows(&stdout(&output), "out"), 200);
    let messages = read_all(&client, "ORDERS").await;
    assert_each_id_once(&messages, 200);
    let ids: Vec<u64> = messages
        .iter()
        .map(|m| payload_json(m)["id"].as_u64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
}

#[tokio::test]
async fn start_checks_say_what_to_create_or_change() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;

    let missing = insert(&server.url(), &rows(10), "stream = 'NOPE'");
    assert_fails_with(&missing, &["stream 'NOPE'", "does not exist", "create it"]);

    let fixed = run_script(
        &format!(
            "INSERT INTO out SELECT 1 AS id WITH (connector = 'nats_sink', servers = '{}', \
             subject = 'payments.x', stream = 'ORDERS');",
            server.url()
        ),
        &[],
    );
    assert_fails_with(
        &fixed,
        &[
            "does not capture subject 'payments.x'",
            "its subjects: orders.>",
        ],
    );

    let no_js = NatsServer::builder().jetstream(false).start();
    let disabled = insert(&no_js.url(), &rows(10), "stream = 'ORDERS'");
    assert_fails_with(&disabled, &["JetStream is not enabled", "-js"]);

    let exactly_once = insert(
        &server.url(),
        &rows(10),
        "stream = 'ORDERS', msg_id_field = 'id', delivery = 'exactly_once'",
    );
    assert_fails_with(
        &exactly_once,
        &["which the stream does not allow", "allow_atomic"],
    );
    assert_eq!(
        stored(&client, "ORDERS").await,
        0,
        "no check stores anything"
    );
}

#[tokio::test]
async fn rows_whose_subject_the_stream_does_not_capture_follow_on_error() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    let select = "SELECT value AS id, CASE WHEN value = 3 THEN 'other.3' \
                  ELSE concat('orders.', CAST(value AS VARCHAR)) END AS subject \
                  FROM generate_series(1, 5)";

    let failed = insert(&server.url(), select, "stream = 'ORDERS'");
    assert_fails_with(
        &failed,
        &[
            "row 3:",
            "subject 'other.3' is not captured by stream 'ORDERS'",
            "on_error",
        ],
    );

    let skipped = insert(
        &server.url(),
        select,
        "stream = 'ORDERS', on_error = 'skip'",
    );
    assert!(skipped.status.success(), "{}", common::stderr(&skipped));
    assert_eq!(inserted_rows(&stdout(&skipped), "out"), 4);
    assert_eq!(summary_count(&stdout(&skipped), "out", "skipped"), Some(1));
    let ids: Vec<u64> = read_all(&client, "ORDERS")
        .await
        .iter()
        .map(|m| payload_json(m)["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 4, 5]);
}

/// `sql-examples/jetstream_exactly_once.sql` as written: run twice, the stream holds each
/// order once and the dead-letter stream the one bad order, with its headers.
#[tokio::test]
async fn exactly_once_example_runs_twice_without_duplicates() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |c| {
        c.allow_atomic_publish = true
    })
    .await;
    create_stream(&client, "ORDERS_DLQ", &["orders_dlq.>"], |_| {}).await;
    let script = common::example("jetstream_exactly_once.sql");
    for run in 0..2 {
        let output = run_script(&script, &[("NATS_URL", &server.url())]);
        assert!(
            output.status.success(),
            "run {run}: {}",
            common::stderr(&output)
        );
        let out = stdout(&output);
        assert_eq!(inserted_rows(&out, "orders_stream"), 4999, "{out}");
        assert_eq!(
            summary_count(&out, "orders_stream", "dead-lettered"),
            Some(1)
        );
        let expected_duplicates = if run == 0 { 0 } else { 4999 };
        assert_eq!(
            summary_count(&out, "orders_stream", "duplicates"),
            Some(expected_duplicates)
        );
    }
    let orders = read_all(&client, "ORDERS").await;
    assert_eq!(orders.len(), 4999);
    let counts = common::js::msg_id_counts(&orders);
    assert!(counts.values().all(|n| *n == 1));
    assert!(!counts.contains_key("13"));
    let dead = read_all(&client, "ORDERS_DLQ").await;
    assert_eq!(dead.len(), 1, "the rerun's dead letter was deduplicated");
    assert_eq!(header(&dead[0], "StreamSQL-Row").as_deref(), Some("13"));
    assert_eq!(
        header(&dead[0], "StreamSQL-Subject").as_deref(),
        Some("orders.bad subject")
    );
    assert!(
        header(&dead[0], "StreamSQL-Error")
            .unwrap()
            .contains("whitespace")
    );
    assert_eq!(payload_json(&dead[0])["order_id"], 13);
}

/// EXPLAIN shows the delivery mode and the stream without connecting.
#[test]
fn explain_shows_the_delivery_mode_and_stream() {
    let output = run_script(
        "EXPLAIN INSERT INTO out SELECT value AS id, 'orders.1' AS subject FROM generate_series(1, 3) \
         WITH (connector = 'nats_sink', servers = 'nats://127.0.0.1:1', subject_field = 'subject', \
         stream = 'ORDERS', msg_id_field = 'id', delivery = 'exactly_once');",
        &[],
    );
    assert!(output.status.success(), "{}", common::stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("delivery=[jetstream exactly_once]"), "{text}");
    assert!(text.contains("stream=ORDERS"), "{text}");
}

/// The stream's duplicate window is read at the start and reported.
#[tokio::test]
async fn the_duplicate_window_is_reported_at_the_start() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |c| {
        c.duplicate_window = std::time::Duration::from_secs(300)
    })
    .await;
    let script = format!(
        "INSERT INTO out {} WITH (connector = 'nats_sink', servers = '{}', subject_field = 'subject', \
         stream = 'ORDERS', msg_id_field = 'id');",
        rows(10),
        server.url()
    );
    let output = common::run_with_args(
        &["--log-level", "connector_nats=info", "run", "-"],
        &script,
        &[],
    );
    assert!(output.status.success(), "{}", common::stderr(&output));
    let log = common::stderr(&output);
    assert!(
        log.contains("stream 'ORDERS' has a duplicate window of 5m") && log.contains("column 'id'"),
        "{log}"
    );
}
