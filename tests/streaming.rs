//! A continuous pipeline (sql-examples/stream_datagen.sql): an unbounded datagen source
//! published until SIGINT. The run must exit 0, report the rows it confirmed, and a real
//! subscriber must have received exactly those rows, each once, in order.

mod common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use nats_testkit::{Collector, NatsServer, payload_json};

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
