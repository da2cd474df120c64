//! End-to-end core NATS publishing through the engine, against raw async-nats.
//!
//! Baseline: the async-nats client publishing the very same messages (payloads and
//! subjects pre-built by the sink's encoder), then one round trip through the server so
//! that both sides end with everything processed. Engine: `INSERT INTO sink SELECT ...
//! FROM generate_series(...)` through `streamsql::Engine`, which plans the query,
//! encodes every row and confirms each batch. Both publish to a real nats-server started
//! by the bench. Report: engine rows/s / baseline rows/s.

// Shared by the benches; this one uses the messages, the runtime and the row counts.
#[allow(dead_code)]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nats_testkit::NatsServer;
use streamsql::Engine;
use tokio::sync::Mutex;

/// Rows per iteration when benchmarking; `cargo test` runs each bench once with fewer.
const ROWS: u64 = 1_000_000;
const TEST_MODE_ROWS: u64 = 10_000;

/// About 200 bytes of JSON per row; 100 distinct subjects.
fn query(rows: u64) -> String {
    common::orders_query(
        "orders",
        "placed through the web shop, standard delivery, gift wrapped at the warehouse",
        rows,
    )
}

fn bench_core_publish(c: &mut Criterion) {
    let rows = common::rows(ROWS, TEST_MODE_ROWS);
    let runtime = common::runtime();
    let server = NatsServer::start();
    let url = server.url();

    let mut engine = Engine::new();
    let messages = runtime.block_on(common::prebuilt_messages(&mut engine, &query(rows)));
    assert_eq!(messages.len() as u64, rows);
    let total_bytes: usize = messages.iter().map(|(_, p)| p.len()).sum();
    println!(
        "{rows} rows, {} bytes of JSON per row on average",
        total_bytes as u64 / rows
    );
    runtime
        .block_on(engine.execute(&format!(
            "CREATE TABLE bench_sink (order_id BIGINT, subject VARCHAR, customer VARCHAR, amount DOUBLE, \
                                      paid BOOLEAN, status VARCHAR, note VARCHAR) \
             WITH (connector = 'nats_sink', servers = '{url}', subject_field = 'subject')"
        )))
        .unwrap();
    let engine = Arc::new(Mutex::new(engine));
    let client = runtime.block_on(nats_testkit::connect(&url));
    let messages = Arc::new(messages);

    let mut group = c.benchmark_group(format!("core_publish_{rows}_rows"));
    group.throughput(Throughput::Elements(rows));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(15));
    group.bench_function("baseline_raw_async_nats", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (client, messages) = (client.clone(), messages.clone());
            async move {
                let start = Instant::now();
                for _ in 0..iters {
                    publish_raw(&client, &messages).await;
                }
                start.elapsed()
            }
        })
    });
    let insert = format!("INSERT INTO bench_sink {}", query(rows));
    group.bench_function("engine_insert_select", |b| {
        b.to_async(&runtime).iter_custom(|iters| {
            let (engine, insert) = (engine.clone(), insert.clone());
            async move {
                let mut engine = engine.lock().await;
                let start = Instant::now();
                for _ in 0..iters {
                    engine.execute(&insert).await.unwrap();
                }
                start.elapsed()
            }
        })
    });
    group.finish();

    // Back-to-back pairs: this machine's speed drifts over minutes, so the ratio of each
    // pair is the figure to report.
    if common::bench_mode() {
        let mut ratios = Vec::new();
        for _ in 0..PAIRS {
            let raw = runtime.block_on(async {
                let start = Instant::now();
                publish_raw(&client, &messages).await;
                start.elapsed()
            });
            let engine_time = runtime.block_on(async {
                let mut engine = engine.lock().await;
                let start = Instant::now();
                engine.execute(&insert).await.unwrap();
                start.elapsed()
            });
            ratios.push(raw.as_secs_f64() / engine_time.as_secs_f64());
            println!(
                "pair: raw {:.0} msg/s, engine {:.0} rows/s, ratio {:.2}",
                rows as f64 / raw.as_secs_f64(),
                rows as f64 / engine_time.as_secs_f64(),
                ratios.last().unwrap()
            );
        }
        ratios.sort_by(f64::total_cmp);
        println!(
            "core end to end: engine/raw median ratio {:.2}",
            ratios[ratios.len() / 2]
        );
    }
    drop(server);
}

/// The baseline: every pre-built message, then one round trip so the server has
/// processed them all.
async fn publish_raw(
    client: &async_nats::Client,
    messages: &[(async_nats::Subject, bytes::Bytes)],
) {
    for (subject, payload) in messages {
        client
            .publish(subject.clone(), payload.clone())
            .await
            .unwrap();
    }
    nats_testkit::round_trip(client).await;
}

/// Raw/engine pairs run after criterion's measurements.
const PAIRS: usize = 7;

criterion_group!(benches, bench_core_publish);
criterion_main!(benches);
