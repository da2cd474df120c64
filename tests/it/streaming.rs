//! A continuous pipeline (sql-examples/stream_datagen.sql): an unbounded datagen source
//! published until SIGINT. The run must exit 0, report the rows it confirmed, and a real
//! subscriber must have received exactly those rows, each once, in order.
//!
//! Latency: a low-rate unbounded source through each plan shape (projection, WHERE,
//! filter over expressions, unnest, several partitions, hash repartitions) must deliver each
//! row to a real subscriber within a bound, while the statement runs.

use crate::common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use datafusion::arrow::util::pretty::pretty_format_batches;
use nats_testkit::{Collector, NatsServer, payload_json};
use streamsql::engine::SignalStop;
use streamsql::{Engine, Outcome};

fn start_pipeline(url: &str) -> Child {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/sql-examples/stream_datagen.sql"
    );
    streamsql()
        .args(["run", path])
        .env("NATS_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn streamsql")
}

fn send_sigint(child: &Child) {
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sigint_stops_the_source_confirms_in_flight_rows_and_exits_zero() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut received = Collector::subscribe(&client, "clicks.>").await;

    let child = start_pipeline(&server.url());
    // Let it stream for a while (500 rows/s): the source is unbounded, so only the
    // signal can end it.
    let mut messages = received.collect(600, Duration::from_secs(20)).await;
    assert_eq!(messages.len(), 600, "the pipeline did not stream");
    send_sigint(&child);
    let started = Instant::now();
    let output = child.wait_with_output().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?} to stop",
        started.elapsed()
    );
    let out = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{out}\nstderr:\n{}",
        stderr(&output)
    );
    assert!(
        out.contains("INSERT INTO clicks_out: stopped on signal;"),
        "{out}"
    );
    let confirmed = inserted_rows(&out, "clicks_out");

    messages.extend(
        received
            .collect_until_idle(Duration::from_millis(500))
            .await,
    );
    assert_eq!(messages.len() as u64, confirmed, "received vs confirmed");
    for (expected_id, message) in messages.iter().enumerate() {
        let row = payload_json(message);
        assert_eq!(
            row["id"], expected_id as u64,
            "rows in order, none lost or repeated"
        );
        assert_eq!(
            message.subject.as_str(),
            format!("clicks.{}", expected_id % 10)
        );
        assert_eq!(row["page"], format!("page-{expected_id}"));
        assert!(
            row.get("subject").is_none(),
            "routing column left out of the payload"
        );
    }
}

/// Rows per second of the low-rate source: one row every 0.1 s, one row per batch.
const RATE: u64 = 10;
/// Most time between a row's production and its arrival at the subscriber. Generous: a
/// row takes about 0.1 s when nothing holds it, and DataFusion's batch of 8192 rows would
/// take 13 minutes to fill at this rate.
const BOUND: Duration = Duration::from_secs(2);
/// How long each test watches the running statement.
const WATCH: Duration = Duration::from_secs(4);

/// A plan shape between an unbounded 10 rows/s `gen (id BIGINT, name VARCHAR)` and a
/// `nats_sink` publishing to `latency.<name>`.
struct Shape {
    name: &'static str,
    /// `datafusion.execution.target_partitions`: set, so that the plan does not depend on
    /// the machine's core count.
    target_partitions: usize,
    /// The query; each output row carries its source row's `id`.
    query: &'static str,
    /// Text the plan must contain, so the test covers the shape it names.
    operators: &'static [&'static str],
    /// How many output rows source row `id` makes.
    rows_of: fn(u64) -> usize,
}

/// Runs `shape` for [`WATCH`] and asserts that every row reached a real subscriber within
/// [`BOUND`] of when the source produced it (row `id` at `id / RATE` s, counted from
/// before the statement started, so setting up counts against the bound), that every
/// row due by `WATCH - BOUND` arrived while the statement was still running, and, once
/// stopped, that the statement confirmed exactly the rows received.
async fn assert_each_row_arrives_promptly(shape: Shape) {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let subject = format!("latency.{}", shape.name);
    let mut received = Collector::subscribe(&client, subject.clone()).await;

    let mut engine = Engine::new();
    let shutdown = engine.shutdown().clone();
    engine
        .execute(&format!(
            "SET datafusion.execution.target_partitions = {};
             CREATE TABLE gen (id BIGINT, name VARCHAR)
             WITH (connector = 'datagen', rows_per_second = '{RATE}');",
            shape.target_partitions
        ))
        .await
        .unwrap();
    let insert = format!(
        "INSERT INTO {}_out {} WITH (connector = 'nats_sink', servers = '{}', subject = '{subject}')",
        shape.name,
        shape.query,
        server.url()
    );
    let plan = match engine
        .execute(&format!("EXPLAIN {insert}"))
        .await
        .unwrap()
        .pop()
    {
        Some(Outcome::Query { batches, .. }) => {
            pretty_format_batches(&batches).unwrap().to_string()
        }
        other => panic!("EXPLAIN gave {other:?}"),
    };
    for operator in shape.operators {
        assert!(
            plan.contains(operator),
            "no {operator} in the plan:\n{plan}"
        );
    }

    let started = Instant::now();
    let statement = tokio::spawn(async move { engine.execute(&insert).await });
    // (source row id, time since the start) of each message, in arrival order.
    let mut arrivals = Vec::new();
    while let Some(left) = WATCH.checked_sub(started.elapsed()) {
        for message in received.collect(1, left).await {
            let row = payload_json(&message);
            let id = row["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("no id in {row}"));
            arrivals.push((id, started.elapsed()));
        }
    }
    assert!(
        !statement.is_finished(),
        "the statement ended while watched: {:?}",
        statement.await
    );

    let mut worst = Duration::ZERO;
    for &(id, arrived) in &arrivals {
        let produced = Duration::from_millis(id * 1000 / RATE);
        let latency = arrived.saturating_sub(produced);
        assert!(
            latency <= BOUND,
            "{}: row {id} arrived {latency:?} after it was produced",
            shape.name
        );
        worst = worst.max(latency);
    }
    let due = (WATCH - BOUND).as_secs() * RATE;
    let expected: usize = (0..due).map(shape.rows_of).sum();
    let arrived = arrivals.iter().filter(|(id, _)| *id < due).count();
    assert_eq!(
        arrived, expected,
        "{}: rows of source rows 0..{due} received while the statement ran",
        shape.name
    );
    eprintln!(
        "{}: {} rows in {WATCH:?}, worst latency {worst:?}",
        shape.name,
        arrivals.len()
    );

    shutdown.trigger();
    let outcome = tokio::time::timeout(Duration::from_secs(10), statement)
        .await
        .expect("the statement ends on shutdown")
        .expect("the statement's task")
        .expect("the statement");
    let Some(Outcome::Insert(summary)) = outcome.last() else {
        panic!("no insert outcome: {outcome:?}");
    };
    assert_eq!(summary.stopped, Some(SignalStop::Unbounded), "{summary:?}");
    let rest = received
        .collect_until_idle(Duration::from_millis(500))
        .await;
    assert_eq!(
        summary.rows,
        (arrivals.len() + rest.len()) as u64,
        "confirmed vs received"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_rate_rows_arrive_promptly_through_a_projection() {
    assert_each_row_arrives_promptly(Shape {
        name: "projection",
        target_partitions: 1,
        query: "SELECT id, upper(name) AS shout FROM gen",
        operators: &["ProjectionExec"],
        rows_of: |_| 1,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_rate_rows_arrive_promptly_through_a_where_filter() {
    assert_each_row_arrives_promptly(Shape {
        name: "where",
        target_partitions: 1,
        query: "SELECT id FROM gen WHERE id % 2 = 0",
        operators: &["FilterExec"],
        rows_of: |id| usize::from(id % 2 == 0),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_rate_rows_arrive_promptly_through_a_filter_over_expressions() {
    assert_each_row_arrives_promptly(Shape {
        name: "expressions",
        target_partitions: 1,
        query: "SELECT id, t, n FROM (SELECT id, id * 3 AS t, concat(name, '!') AS n FROM gen) \
                WHERE t % 4 = 0 AND n LIKE 'name-%'",
        operators: &["FilterExec", "ProjectionExec"],
        rows_of: |id| usize::from(id % 4 == 0),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_rate_rows_arrive_promptly_through_unnest() {
    assert_each_row_arrives_promptly(Shape {
        name: "unnest",
        target_partitions: 1,
        query: "SELECT id, unnest(make_array(id * 10, id * 10 + 1)) AS v FROM gen",
        operators: &["UnnestExec"],
        rows_of: |_| 2,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_rate_rows_arrive_promptly_with_several_target_partitions() {
    // The engine plans no round-robin repartition over an unbounded source (it would
    // reorder rows; `src/engine/unbounded_order.rs`), so the filter runs on the source's
    // one partition.
    assert_each_row_arrives_promptly(Shape {
        name: "partitions",
        target_partitions: 4,
        query: "SELECT id FROM gen WHERE id % 2 = 0",
        operators: &["FilterExec"],
        rows_of: |id| usize::from(id % 2 == 0),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn low_rate_rows_arrive_promptly_through_a_hash_repartition() {
    assert_each_row_arrives_promptly(Shape {
        name: "hash",
        target_partitions: 4,
        query: "SELECT id, sum(id) OVER (PARTITION BY id % 3 ROWS BETWEEN 1 PRECEDING AND \
                CURRENT ROW) AS pair FROM gen",
        operators: &["RepartitionExec: partitioning=Hash", "BoundedWindowAggExec"],
        rows_of: |_| 1,
    })
    .await;
}
