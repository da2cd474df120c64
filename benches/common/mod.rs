//! What the end-to-end benches share: the messages the sink would publish for a query,
//! built once with the sink's own encoder, for the raw-client baselines; the runtime;
//! the row count for benchmarking or for criterion's test mode; what a timed iteration
//! used (`measure`); the raw JetStream publisher (`jetstream`).

pub mod jetstream;
pub mod measure;

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use connector_nats::RowEncoder;
use connector_nats::options::Options;
use streamsql::Engine;

/// Runs `sql` (with a `subject` column) and encodes its rows exactly as the sink does.
pub async fn prebuilt_messages(engine: &mut Engine, sql: &str) -> Vec<(Subject, Bytes)> {
    prebuilt_messages_with(engine, sql, &[])
        .await
        .into_iter()
        .map(|(subject, _, payload)| (subject, payload))
        .collect()
}

/// [`prebuilt_messages`] for a sink with the further `options` (such as header columns):
/// each row's subject, headers from its columns, and payload.
pub async fn prebuilt_messages_with(
    engine: &mut Engine,
    sql: &str,
    options: &[(&str, &str)],
) -> Vec<(Subject, Option<HeaderMap>, Bytes)> {
    let df = engine.context().sql(sql).await.unwrap();
    let schema = Arc::new(df.schema().as_arrow().clone());
    let options: HashMap<String, String> = std::iter::once(("subject_field", "subject"))
        .chain(options.iter().copied())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut encoder =
        RowEncoder::try_new(&schema, &Options::parse(&options, false).unwrap()).unwrap();
    let mut messages = Vec::new();
    for batch in df.collect().await.unwrap() {
        let encoded = encoder.encode(&batch, 0).unwrap();
        for i in 0..encoded.len() {
            messages.push((
                encoded.subject(i).expect("valid subjects").clone(),
                encoded.header_map(i),
                encoded.payload(i),
            ));
        }
    }
    messages
}

/// `rows` orders of about 200 bytes of JSON each (more with a longer `note`), spread over
/// 100 subjects `<prefix>.region<n>.created`.
pub fn orders_query(prefix: &str, note: &str, rows: u64) -> String {
    format!(
        "SELECT value AS order_id, \
                concat('{prefix}.region', value % 100, '.created') AS subject, \
                concat('customer-', lpad(CAST(value * 7919 % 100000 AS VARCHAR), 8, '0')) AS customer, \
                value * 1.25 AS amount, \
                value % 3 = 0 AS paid, \
                CASE value % 4 WHEN 0 THEN 'new' WHEN 1 THEN 'paid' WHEN 2 THEN 'shipped' ELSE 'delivered' END AS status, \
                concat('order ', value, ' {note}') AS note \
         FROM generate_series(1, {rows})"
    )
}

/// `cargo bench` passes `--bench`; criterion's test mode (`cargo test --benches`) does not.
pub fn bench_mode() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// `bench` rows when benchmarking, `test` when `cargo test` runs the bench once.
pub fn rows(bench: u64, test: u64) -> u64 {
    if bench_mode() { bench } else { test }
}

/// A current-thread runtime publishes fastest on 2 cores (measured: `benches/README.md`).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
