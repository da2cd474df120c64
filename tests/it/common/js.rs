//! JetStream helpers for the integration tests: create a stream, and read back exactly
//! what it stored.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::Client;
use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

/// Creates a file stream `name` capturing `subjects`, with `edit` applied to the config.
pub async fn create_stream(
    client: &Client,
    name: &str,
    subjects: &[&str],
    edit: impl FnOnce(&mut stream::Config),
) {
    let mut config = stream::Config {
        name: name.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    edit(&mut config);
    jetstream::new(client.clone())
        .create_stream(config)
        .await
        .unwrap_or_else(|e| panic!("create stream {name}: {e}"));
}

/// How many messages stream `name` holds.
pub async fn stored(client: &Client, name: &str) -> u64 {
    let mut stream = jetstream::new(client.clone())
        .get_stream(name)
        .await
        .unwrap_or_else(|e| panic!("stream {name}: {e}"));
    stream.info().await.unwrap().state.messages
}

/// How many messages stream `name` holds once it holds at least `at_least` and has
/// stopped growing for half a second (JetStream stores core publishes asynchronously, so
/// what a core publisher had confirmed may still be arriving). Fails after 30 s.
pub async fn settled_at_least(client: &Client, name: &str, at_least: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut last = stored(client, name).await;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = stored(client, name).await;
        if now >= at_least && now == last {
            return now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stream {name} holds {now} messages after 30 s, expected at least {at_least}"
        );
        last = now;
    }
}

/// How many messages stream `name` holds once it holds `target` (or when `within` ran out).
pub async fn wait_until_stored(
    client: &async_nats::Client,
    name: &str,
    target: u64,
    within: Duration,
) -> u64 {
    let deadline = std::time::Instant::now() + within;
    loop {
        let now = stored(client, name).await;
        if now == target || std::time::Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every message stream `name` holds, in stream order.
pub async fn read_all(client: &Client, name: &str) -> Vec<jetstream::Message> {
    let count = stored(client, name).await as usize;
    let stream = jetstream::new(client.clone())
        .get_stream(name)
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            // Read once: no acks, so nothing is redelivered and the count is exact.
            ack_policy: consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap().take(count);
    let mut out = Vec::with_capacity(count);
    while let Some(message) = tokio::time::timeout(Duration::from_secs(30), messages.next())
        .await
        .expect("the stream's messages arrive")
    {
        out.push(message.unwrap());
    }
    out
}

/// The value of header `name` of a stored message.
pub fn header(message: &jetstream::Message, name: &str) -> Option<String> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.to_string())
}

/// How often each `Nats-Msg-Id` occurs among `messages`.
pub fn msg_id_counts(messages: &[jetstream::Message]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in messages {
        let id = header(m, "Nats-Msg-Id").expect("every message has an id");
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Asserts the stream holds exactly one message for each id in `0..rows` (as text).
pub fn assert_each_id_once(messages: &[jetstream::Message], rows: u64) {
    let counts = msg_id_counts(messages);
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(
        duplicated.is_empty(),
        "stored more than once (first 10): {duplicated:?}"
    );
    let missing: Vec<u64> = (0..rows)
        .filter(|id| !counts.contains_key(&id.to_string()))
        .take(10)
        .collect();
    assert!(missing.is_empty(), "missing ids (first 10): {missing:?}");
    assert_eq!(
        messages.len() as u64,
        rows,
        "stored exactly one message per row"
    );
}

/// A row stored after a later row of its subject: its subject and id, the highest id
/// stored before it on that subject, and its stream sequence.
pub type Late = (String, u64, u64, u64);

/// The rows of `messages` (in stream order, see [`read_all`]) stored after a later row
/// of their subject, by the rows' `id` (a JSON payload field, increasing in the query).
pub fn out_of_query_order(messages: &[jetstream::Message]) -> Vec<Late> {
    let mut highest: BTreeMap<String, u64> = BTreeMap::new();
    let mut late = Vec::new();
    for m in messages {
        let id = nats_testkit::payload_json(m)["id"].as_u64().expect("an id");
        let top = highest.entry(m.subject.to_string()).or_insert(id);
        if *top > id {
            let sequence = m.info().expect("a stream message").stream_sequence;
            late.push((m.subject.to_string(), id, *top, sequence));
        }
        *top = (*top).max(id);
    }
    eprintln!(
        "{} rows were stored after a later row of their subject",
        late.len()
    );
    late
}

/// The sink's default `max_in_flight`: how many acks it awaits at once.
pub fn default_max_in_flight() -> u64 {
    connector_nats::options::spec("max_in_flight")
        .and_then(|spec| spec.default)
        .and_then(|default| default.parse().ok())
        .expect("max_in_flight has a numeric default")
}

/// Asserts the README's bound where a stream's leader changes under the sink (or it
/// refuses a message at a time): a row resent after its ack timed out may be stored after
/// later rows of its subject, but behind fewer than the default `max_in_flight` rows.
pub fn assert_late_within_the_window(messages: &[jetstream::Message]) {
    let late = out_of_query_order(messages);
    let window = default_max_in_flight();
    assert!(
        late.iter().all(|(_, id, before, _)| before - id < window),
        "rows stored further out of order than the window of {window} acks: {:?}",
        &late[..late.len().min(10)]
    );
}

/// Asserts that on each subject the stream's order is the query's order: no row was
/// stored after a later one, as a row the client still held would be if it were sent
/// after reconnecting, ahead of the rows resent because the old connection lost them.
pub fn assert_in_query_order(messages: &[jetstream::Message]) {
    let late = out_of_query_order(messages);
    assert!(
        late.is_empty(),
        "{} rows stored after a later row of their subject (subject, id, the id stored \
         before it, stream sequence; first 10): {:?}",
        late.len(),
        &late[..late.len().min(10)]
    );
}
