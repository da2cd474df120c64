//! What an operator sees: `/metrics` scraped during and after runs and checked against
//! what a real subscriber or stream received, the progress line, and EXPLAIN.

use crate::common;

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::js::{create_stream, stored};
use common::running::Running;
use common::{inserted_rows, stdout};
use nats_testkit::{Collector, NatsServer};

/// `/metrics`: the body of a 200 response in the OpenMetrics format.
fn http_get(url: &str) -> String {
    common::http::get(url).ok("application/openmetrics-text")
}

/// Scrapes `/metrics`: each sample line as `name{labels}` -> value.
fn scrape(run: &Running) -> Samples {
    let text = http_get(&run.metrics);
    let samples = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("name value");
            (key.to_string(), value.parse().expect("a number"))
        })
        .collect();
    Samples(samples)
}

struct Samples(BTreeMap<String, f64>);

impl Samples {
    /// The value of `nats_sink_<name>{sink="<sink>"}` (0 when absent).
    fn get(&self, name: &str, sink: &str) -> f64 {
        self.labelled(name, &format!("sink=\"{sink}\""))
    }

    fn labelled(&self, name: &str, labels: &str) -> f64 {
        let key = format!("nats_sink_{name}{{{labels}}}");
        self.0.get(&key).copied().unwrap_or(0.0)
    }

    /// The value of `nats_source_<name>{source="<source>"}` (0 when absent).
    fn source(&self, name: &str, source: &str) -> f64 {
        let key = format!("nats_source_{name}{{source=\"{source}\"}}");
        self.0.get(&key).copied().unwrap_or(0.0)
    }

    /// The sum of `nats_sink_<name>` over the series of `sink` (any other labels).
    fn sum(&self, name: &str, sink: &str) -> f64 {
        let prefix = format!("nats_sink_{name}{{");
        let label = format!("sink=\"{sink}\"");
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix) && k.contains(&label))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Keeps the process alive after the statements under test, so that `/metrics` can be
/// read after they finished; stopped with SIGINT.
fn keep_alive(url: &str) -> String {
    format!(
        "CREATE TABLE ticks (id BIGINT) WITH (connector = 'datagen', rows_per_second = '2000');
         INSERT INTO live SELECT id, 'obs.live' AS subject FROM ticks
         WITH (connector = 'nats_sink', servers = '{url}', subject_field = 'subject');"
    )
}

#[tokio::test]
async fn core_counters_during_and_after_a_run_match_what_a_subscriber_received() {
    let server = NatsServer::start();
    let url = server.url();
    let client = nats_testkit::connect(&url).await;
    let mut first_sub = Collector::subscribe(&client, "obs.first.>").await;
    let mut live_sub = Collector::subscribe(&client, "obs.live").await;
    let script = format!(
        "INSERT INTO first SELECT value AS id, repeat('x', CAST(value % 7 AS INT)) AS pad,
                concat('obs.first.', value % 3) AS subject FROM generate_series(1, 5000)
         WITH (connector = 'nats_sink', servers = '{url}', subject_field = 'subject');
         {}",
        keep_alive(&url)
    );
    let mut run = Running::start(&[], &script);
    run.wait_for_line("INSERT INTO first:", Duration::from_secs(30));

    // After the statement: the counters equal what was received.
    let received = first_sub.collect(5000, Duration::from_secs(10)).await;
    assert_eq!(received.len(), 5000);
    let bytes: usize = received.iter().map(|m| m.payload.len()).sum();
    let after = scrape(&run);
    assert_eq!(after.get("rows_published_total", "first"), 5000.0);
    assert_eq!(after.get("published_bytes_total", "first"), bytes as f64);
    assert!(after.get("batches_total", "first") >= 1.0);
    assert_eq!(after.get("in_flight_messages", "first"), 0.0);
    assert_eq!(after.get("in_flight_bytes", "first"), 0.0);
    assert_eq!(
        after.get("connected", "first"),
        0.0,
        "closed after the statement"
    );
    assert!(after.get("ack_latency_seconds_count", "first") >= 1.0);
    assert_eq!(after.sum("retries_total", "first"), 0.0);
    assert_eq!(after.sum("errors_total", "first"), 0.0);

    // During the next one: connected, and the count grows.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let during = scrape(&run);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let later = scrape(&run);
    assert_eq!(during.get("connected", "live"), 1.0);
    let (a, b) = (
        during.get("rows_published_total", "live"),
        later.get("rows_published_total", "live"),
    );
    assert!(a > 0.0 && b > a, "live rows did not grow: {a} then {b}");

    let (out, _) = interrupt_when_live(run);
    let live = inserted_rows(&out, "live");
    assert!(live as f64 >= b, "{live} < {b}");
    let got = live_sub
        .collect_until_idle(Duration::from_millis(500))
        .await;
    assert_eq!(
        got.len() as u64,
        live,
        "what the summary says reached the subscriber"
    );
    // Default --progress: nothing of it when stdout is not a terminal.
    assert!(!out.contains("in flight"), "{out}");
}

#[tokio::test]
async fn jetstream_acks_duplicates_and_latency_match_the_stream() {
    let server = NatsServer::start();
    let url = server.url();
    let client = nats_testkit::connect(&url).await;
    create_stream(&client, "OBS", &["obs.js.>"], |_| {}).await;
    const ROWS: u64 = 3000;
    let insert = format!(
        "INSERT INTO js SELECT value AS id, concat('obs.js.', value % 5) AS subject
         FROM generate_series(1, {ROWS})
         WITH (connector = 'nats_sink', servers = '{url}', subject_field = 'subject',
               stream = 'OBS', msg_id_field = 'id');"
    );
    // The same rows twice: the second time every ack is a duplicate.
    let script = format!("{insert}\n{insert}\n{}", keep_alive(&url));
    let mut run = Running::start(&["--progress", "always"], &script);
    // The summaries (progress lines also start with "INSERT INTO js:").
    let done = format!("INSERT INTO js: {ROWS} rows published");
    run.wait_for_line(&done, Duration::from_secs(30));
    run.wait_for_line(&done, Duration::from_secs(30));
    let m = scrape(&run);
    assert_eq!(stored(&client, "OBS").await, ROWS);
    assert_eq!(m.get("rows_published_total", "js"), 2.0 * ROWS as f64);
    assert_eq!(m.get("acks_total", "js"), 2.0 * ROWS as f64);
    assert_eq!(m.get("duplicates_total", "js"), ROWS as f64);
    assert_eq!(m.get("ack_latency_seconds_count", "js"), 2.0 * ROWS as f64);
    let mean = m.get("ack_latency_seconds_sum", "js") / (2.0 * ROWS as f64);
    assert!(mean > 0.0 && mean < 1.0, "mean ack latency {mean}s");
    // The histogram's buckets are cumulative and end with all observations.
    assert_eq!(
        m.labelled("ack_latency_seconds_bucket", "le=\"+Inf\",sink=\"js\""),
        2.0 * ROWS as f64
    );
    assert_eq!(m.get("in_flight_messages", "js"), 0.0);
    assert_eq!(m.get("in_flight_bytes", "js"), 0.0);

    // `--progress always` writes update lines even to a pipe, before the summary.
    let progress = run.wait_for_line("INSERT INTO live:", Duration::from_secs(15));
    interrupt_when_live(run);
    assert!(
        progress.contains("rows/s") && progress.contains("in flight"),
        "{progress}"
    );
}

#[tokio::test]
async fn retries_are_counted_by_class_and_progress_says_why() {
    // The server is down when the statement starts and comes up 2.5 s later.
    let mut server = NatsServer::start();
    let url = server.url();
    server.stop();
    let script = format!(
        "INSERT INTO late SELECT value AS id, 'obs.late' AS subject FROM generate_series(1, 100)
         WITH (connector = 'nats_sink', servers = '{url}', subject_field = 'subject',
               connect_timeout = '500ms');
         {}",
        keep_alive(&url)
    );
    let mut run = Running::start(&["--progress", "always"], &script);
    let retrying = run.wait_for_line("INSERT INTO late:", Duration::from_secs(10));
    assert!(
        retrying.contains("retrying: cannot connect to NATS"),
        "{retrying}"
    );
    let while_down = scrape(&run);
    assert!(while_down.sum("retries_total", "late") >= 1.0);
    assert_eq!(while_down.get("connected", "late"), 0.0);
    assert_eq!(while_down.get("rows_published_total", "late"), 0.0);

    std::thread::sleep(Duration::from_millis(2500));
    server.restart();
    let summary = run.wait_for_line(
        "INSERT INTO late: 100 rows published",
        Duration::from_secs(30),
    );
    let after = scrape(&run);
    let retries = after.sum("retries_total", "late");
    assert!(retries >= 2.0, "{retries}");
    // Each retry was a connection failure, and the statement did not fail.
    let connection = "sink=\"late\",class=\"connection\"";
    assert_eq!(after.labelled("retries_total", connection), retries);
    assert_eq!(after.sum("errors_total", "late"), 0.0);
    assert!(summary.contains(&format!("{retries} retries")), "{summary}");
    assert_eq!(after.get("rows_published_total", "late"), 100.0);
    interrupt_when_live(run);
}

#[tokio::test]
async fn a_lost_connection_shows_in_the_gauge_and_counts_one_reconnect_logged_once() {
    let mut server = NatsServer::start();
    let url = server.url();
    let run = Running::start(&["--log-level", "connector_nats=info"], &keep_alive(&url));
    let publishing = wait_for(&run, |m| m.get("rows_published_total", "live") > 0.0);
    assert_eq!(publishing.get("connected", "live"), 1.0);

    server.kill();
    let down = wait_for(&run, |m| m.get("connected", "live") == 0.0);
    assert_eq!(down.get("reconnects_total", "live"), 0.0);
    std::thread::sleep(Duration::from_millis(500));
    server.restart();
    // Both are set just after the new connection is made, not atomically together.
    let back = wait_for(&run, |m| {
        m.get("connected", "live") == 1.0 && m.get("reconnects_total", "live") >= 1.0
    });
    assert_eq!(back.get("reconnects_total", "live"), 1.0);
    assert!(back.labelled("retries_total", "sink=\"live\",class=\"connection\"") >= 1.0);
    let rows = back.get("rows_published_total", "live");
    wait_for(&run, |m| m.get("rows_published_total", "live") > rows);

    let (_, stderr) = interrupt_when_live(run);
    // One line for the loss, however many messages were in flight.
    let lost = stderr.matches("nats_sink: connecting again").count();
    assert_eq!(lost, 1, "{stderr}");
    // The line names the connector and the table it is about.
    assert!(
        stderr.contains("sink{connector=nats_sink table=live}: connector_nats::connect: nats_sink: connecting again"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("nats_sink: connected").count(),
        2,
        "{stderr}"
    );
}

/// A server that hangs mid-statement: the sink stops sending once `max_in_flight_bytes`
/// of payload waits for acks (a few large rows, far below `max_in_flight`'s 4096
/// messages), the gauges show the window held, and every row is stored once the server
/// answers again.
#[tokio::test]
async fn a_hung_server_holds_the_window_to_max_in_flight_bytes() {
    const PAD: usize = 32 * 1024;
    const LIMIT: f64 = 256.0 * 1024.0;
    let mut server = NatsServer::start();
    let url = server.url();
    let client = nats_testkit::connect(&url).await;
    create_stream(&client, "BIG", &["big.>"], |_| {}).await;
    let script = format!(
        "CREATE TABLE ticks (id BIGINT) WITH (connector = 'datagen', rows_per_second = '200');
         INSERT INTO big SELECT id, repeat('x', {PAD}) AS pad, 'big.rows' AS subject FROM ticks
         WITH (connector = 'nats_sink', servers = '{url}', subject_field = 'subject',
               stream = 'BIG', max_in_flight_bytes = '256KiB', confirm_timeout = '60s');"
    );
    let run = Running::start(&[], &script);
    wait_for(&run, |m| m.get("rows_published_total", "big") > 0.0);

    server.pause();
    wait_for(&run, |m| m.get("in_flight_bytes", "big") >= LIMIT);
    std::thread::sleep(Duration::from_millis(500));
    let held = scrape(&run);
    let (messages, bytes) = (
        held.get("in_flight_messages", "big"),
        held.get("in_flight_bytes", "big"),
    );
    // The message that crossed the limit went; none after it (rows of PAD bytes and a
    // few more of JSON).
    assert!(bytes < LIMIT + PAD as f64 + 64.0, "{bytes} bytes in flight");
    assert!(
        (8.0..=9.0).contains(&messages),
        "{messages} messages in flight"
    );
    // The status page agrees.
    let status = common::http::get(&format!("{}/status.json", run.base())).ok("application/json");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        status["sinks"][0]["in_flight_bytes"].as_f64(),
        Some(bytes),
        "{status:#}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let later = scrape(&run);
    assert_eq!(
        later.get("in_flight_messages", "big"),
        messages,
        "sent nothing more"
    );
    assert_eq!(
        later.get("rows_published_total", "big"),
        held.get("rows_published_total", "big")
    );

    server.resume();
    let before = held.get("rows_published_total", "big");
    wait_for(&run, |m| {
        m.get("rows_published_total", "big") > before + 50.0
    });
    let (out, _) = run.interrupt();
    assert_eq!(stored(&client, "BIG").await, inserted_rows(&out, "big"));
}

/// A continuous read into a sink: the source's series count what it read, skipped and
/// acknowledged, and agree with the consumer's state at the server.
#[tokio::test]
async fn source_series_count_what_was_read_skipped_and_acknowledged() {
    let server = NatsServer::start();
    let url = server.url();
    let client = nats_testkit::connect(&url).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&client, "BILLING", &["billing.>"], |_| {}).await;
    let payloads: Vec<String> = (0..100)
        .map(|i| match i {
            17 | 60 => "not json".to_string(),
            _ => format!(r#"{{"order_id": {i}}}"#),
        })
        .collect();
    common::source::publish_pipelined(&client, "orders.eu", payloads).await;
    let script = format!(
        "CREATE CONNECTION c FROM nats_sink WITH (servers = '{url}');
         CREATE TABLE orders_in (order_id BIGINT)
         WITH (connector = 'nats_source', connection = 'c', stream = 'ORDERS',
               consumer = 'etl', on_error = 'skip');
         INSERT INTO billing SELECT order_id FROM orders_in
         WITH (connector = 'nats_sink', connection = 'c', stream = 'BILLING',
               subject = 'billing.eu');"
    );
    let run = Running::start(&[], &script);
    let m = wait_for(&run, |s| {
        s.source("messages_acked_total", "orders_in") >= 100.0
    });
    assert_eq!(m.source("messages_acked_total", "orders_in"), 100.0);
    assert_eq!(m.source("messages_read_total", "orders_in"), 100.0);
    assert_eq!(m.source("messages_skipped_total", "orders_in"), 2.0);
    assert_eq!(m.source("messages_dead_lettered_total", "orders_in"), 0.0);
    assert_eq!(m.source("messages_handed_back_total", "orders_in"), 0.0);
    assert_eq!(m.source("read_failures_total", "orders_in"), 0.0);
    assert_eq!(m.source("pending_messages", "orders_in"), 0.0);
    assert_eq!(m.get("rows_published_total", "billing"), 98.0);
    assert_eq!(stored(&client, "BILLING").await, 98);
    let (floor, pending) = common::source::consumer_state(&client, "etl").await;
    assert_eq!((floor, pending), (100, 0), "the server agrees");
    // The source's connect made no sink series.
    assert!(
        !m.0.keys().any(|k| k.contains("sink=\"orders_in\"")),
        "{:?}",
        m.0.keys()
    );
    run.interrupt();
}

/// Scrapes until `ready` holds (10 s at most) and returns that scrape.
/// Stops `run` as Ctrl-C would, once its last statement (the keep-alive) publishes: a
/// signal between statements leaves one unrun, and the run then exits 3, not 0.
fn interrupt_when_live(run: Running) -> (String, String) {
    wait_for(&run, |s| s.get("rows_published_total", "live") > 0.0);
    run.interrupt()
}

fn wait_for(run: &Running, ready: impl Fn(&Samples) -> bool) -> Samples {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let samples = scrape(run);
        if ready(&samples) {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never got there: {:?}",
            samples.0
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn explain_names_the_sink_and_its_settings_with_secrets_redacted() {
    let output = common::run_script(
        "EXPLAIN INSERT INTO orders_out SELECT value AS id, 'orders.1' AS subject FROM generate_series(1, 3) \
         WITH (connector = 'nats_sink', servers = 'nats://127.0.0.1:1', subject_field = 'subject', \
         stream = 'ORDERS', token = 's3cr3t-t0ken');",
        &[],
    );
    assert!(output.status.success(), "{}", common::stderr(&output));
    let text = stdout(&output);
    for part in [
        "NatsSink: name=orders_out",
        "delivery=[jetstream at_least_once]",
        "servers=nats://127.0.0.1:1",
        "subject_field=subject",
        "stream=ORDERS",
        "token=***",
    ] {
        assert!(text.contains(part), "{part} missing from: {text}");
    }
    assert!(!text.contains("s3cr3t"), "{text}");
}

/// Under a pseudo-terminal (util-linux `script`), the progress line is redrawn in place
/// and erased before the summary, which stays.
#[test]
fn on_a_terminal_progress_is_redrawn_in_place_and_replaced_by_the_summary() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slow.sql");
    std::fs::write(
        &file,
        format!(
            "CREATE TABLE slow (id BIGINT) WITH (connector = 'datagen', rows_per_second = '400', row_limit = '1000');
             INSERT INTO tty SELECT id, 'obs.tty' AS subject FROM slow
             WITH (connector = 'nats_sink', servers = '{}', subject_field = 'subject');",
            server.url()
        ),
    )
    .unwrap();
    let command = format!("{} run {}", env!("CARGO_BIN_EXE_streamsql"), file.display());
    let output = std::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("util-linux script");
    assert!(output.status.success(), "{output:?}");
    let screen = stdout(&output);
    const ERASE: &str = "\r\x1b[2K";
    let redraws = screen.matches(&format!("{ERASE}INSERT INTO tty: ")).count();
    // About 2.5 s at one update a second, then the erase before the summary.
    assert!(redraws >= 3, "{screen:?}");
    assert!(
        screen.contains(&format!("{ERASE}INSERT INTO tty: 1000 rows published")),
        "{screen:?}"
    );
    assert!(screen.contains("rows confirmed, "), "{screen:?}");
}
