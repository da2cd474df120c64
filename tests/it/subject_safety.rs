//! Subjects that come from data cannot hijack the subject space: a row may not reach the
//! server's JetStream API, system or key-value subjects or other clients' inboxes unless
//! `allow_system_subjects = 'true'`, and `subject_prefix` pens every row inside a prefix.
//! Each refusal names the row and the subject; what the server holds is checked directly.

use crate::common;

use async_nats::jetstream;
use common::*;
use nats_testkit::{Collector, NatsServer};

/// Rows a hostile or buggy upstream might produce, the second aimed at deleting a stream.
const ROWS: &str = "SELECT * FROM (VALUES \
    (1, 'orders.eu'), \
    (2, '$JS.API.STREAM.DELETE.ORDERS'), \
    (3, 'orders.us')) AS t(id, subject)";

fn insert(server: &NatsServer, select: &str, options: &str) -> std::process::Output {
    let script = format!(
        "INSERT INTO out {select} WITH (connector = 'nats_sink', servers = '{}', subject_field = 'subject'{options});",
        server.url()
    );
    run_script(&script, &[])
}

async fn orders_stream(server: &NatsServer) -> jetstream::Context {
    let js = jetstream::new(nats_testkit::connect(&server.url()).await);
    js.create_stream(jetstream::stream::Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    js
}

#[tokio::test]
async fn a_row_aimed_at_the_jetstream_api_fails_the_statement_and_the_stream_survives() {
    let server = NatsServer::start();
    let js = orders_stream(&server).await;
    let client = nats_testkit::connect(&server.url()).await;
    let mut orders = Collector::subscribe(&client, "orders.>").await;

    let output = insert(&server, ROWS, "");
    assert_fails_with(
        &output,
        &[
            "row 2",
            "\"$JS.API.STREAM.DELETE.ORDERS\"",
            "system or internal subject",
            "allow_system_subjects = 'true'",
        ],
    );
    assert!(
        js.get_stream("ORDERS").await.is_ok(),
        "the stream was deleted"
    );
    let delivered: Vec<String> = published(&mut orders).await.iter().map(text).collect();
    // A refused row fails its batch before any of it is sent.
    assert!(delivered.is_empty(), "published: {delivered:?}");
}

#[tokio::test]
async fn skipped_system_subject_rows_are_counted_and_the_rest_delivered() {
    let server = NatsServer::start();
    let js = orders_stream(&server).await;
    let client = nats_testkit::connect(&server.url()).await;
    let mut everything = Collector::subscribe(&client, ">").await;

    let select = "SELECT * FROM (VALUES (1, 'orders.eu'), (2, '_INBOX.victim.1'), \
                  (3, '$KV.config.admin'), (4, 'orders.us')) AS t(id, subject)";
    let output = insert(&server, select, ", on_error = 'skip'");
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    assert_eq!(summary_count(&stdout(&output), "out", "skipped"), Some(2));
    let log = stderr(&output);
    assert!(
        log.contains("row=2") && log.contains("_INBOX.victim.1"),
        "{log}"
    );

    let received = everything
        .collect_until_idle(std::time::Duration::from_millis(300))
        .await;
    let subjects: Vec<&str> = received.iter().map(|m| m.subject.as_str()).collect();
    for victim in ["_INBOX.victim.1", "$KV.config.admin"] {
        assert!(!subjects.contains(&victim), "{victim} was published to");
    }
    let subjects: Vec<&str> = subjects
        .into_iter()
        .filter(|s| s.starts_with("orders."))
        .collect();
    assert_eq!(subjects, ["orders.eu", "orders.us"]);
    assert!(js.get_stream("ORDERS").await.is_ok());
}

#[tokio::test]
async fn subject_prefix_refuses_rows_outside_it_naming_row_and_subject() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut everything = Collector::subscribe(&client, ">").await;

    let select = "SELECT * FROM (VALUES (1, 'orders.eu'), (2, 'ordersX.eu'), (3, 'payments.eu')) \
                  AS t(id, subject)";
    let output = insert(&server, select, ", subject_prefix = 'orders.'");
    assert_fails_with(
        &output,
        &[
            "row 2",
            "\"ordersX.eu\"",
            "outside subject_prefix 'orders.'",
        ],
    );
    let delivered: Vec<String> = published(&mut everything)
        .await
        .iter()
        .map(|m| m.subject.to_string())
        .collect();
    assert!(delivered.is_empty(), "published: {delivered:?}");

    // Under dead_letter the refused rows go to the dead-letter subject, with the reason.
    let mut dead = Collector::subscribe(&client, "dlq.orders").await;
    let output = insert(
        &server,
        select,
        ", subject_prefix = 'orders.', on_error = 'dead_letter', dead_letter_subject = 'dlq.orders'",
    );
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    let letters = dead.collect(2, std::time::Duration::from_secs(5)).await;
    let subjects: Vec<String> = letters
        .iter()
        .map(|m| {
            let headers = m.headers.as_ref().expect("dead letters carry headers");
            headers
                .get(connector_nats::DEAD_LETTER_SUBJECT)
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(subjects, ["ordersX.eu", "payments.eu"]);
}

#[tokio::test]
async fn allow_system_subjects_lets_rows_write_to_a_key_value_bucket() {
    let server = NatsServer::start();
    let js = jetstream::new(nats_testkit::connect(&server.url()).await);
    let kv = js
        .create_key_value(jetstream::kv::Config {
            bucket: "config".into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let select = "SELECT * FROM (VALUES ('blue', '$KV.config.colour')) AS t(value, subject)";
    let refused = insert(&server, select, "");
    assert_fails_with(&refused, &["row 1", "\"$KV.config.colour\""]);
    assert!(kv.get("colour").await.unwrap().is_none());

    let output = insert(
        &server,
        select,
        ", allow_system_subjects = 'true', stream = 'KV_config'",
    );
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    let value = kv
        .get("colour")
        .await
        .unwrap()
        .expect("the key was written");
    assert_eq!(&value[..], br#"{"value":"blue"}"#);
}
