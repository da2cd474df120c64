//! The status page of `--metrics-addr`, as an operator sees it: `/status.json` and the
//! page `/` rendered by a real headless browser (Debian's chromium) while a datagen ->
//! NATS pipeline runs. The sink's figures on the page are the ones a real subscriber
//! counts, the reasons of dead-lettered rows are shown, the datagen source shows the rows
//! it produced, and the connection's password appears nowhere.

use std::time::{Duration, Instant};

use nats_testkit::{Collector, NatsServer};
use serde_json::Value;

use crate::common;
use crate::common::browser;
use crate::common::http;
use crate::common::running::Running;

const PASSWORD: &str = "s3cret-Status-Pw";
/// Rows the pipeline publishes (ids 0 to 499), and those with a bad subject among them
/// (ids 7, 57, ..., 457), which go to the dead-letter subject.
const ROWS: u64 = 500;
const BAD: u64 = 10;

/// `/status.json`, parsed.
fn status(run: &Running) -> Value {
    let body = http::get(&format!("{}/status.json", run.base())).ok("application/json");
    assert!(
        !body.contains(PASSWORD),
        "the password in /status.json: {body}"
    );
    serde_json::from_str(&body).unwrap()
}

/// Polls `/status.json` until `ready` holds for it (the sink counts a batch once the
/// server confirmed it, which may be after a subscriber saw its messages).
fn wait_for_status(run: &mut Running, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(run.is_running(), "the run ended early");
        let now = status(run);
        if ready(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the status never got there: {now:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The text of the first element with `data-field="<field>"` after `from` in `dom`.
fn field<'a>(dom: &'a str, from: usize, field: &str) -> &'a str {
    let marker = format!("data-field=\"{field}\"");
    let at = from
        + dom[from..]
            .find(&marker)
            .unwrap_or_else(|| panic!("no {field} in {dom}"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    &dom[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_running_pipeline_as_its_subscriber_sees_it_without_secrets() {
    let server = NatsServer::builder().user("publisher", PASSWORD).start();
    let url = server.url();
    let client = nats_testkit::connect_with_user(&url, "publisher", PASSWORD).await;
    let mut rows = Collector::subscribe(&client, "status.rows.>").await;
    let mut dead = Collector::subscribe(&client, "status.dead").await;
    // Unbounded, so the statement keeps running; the WHERE lets only the first 500 rows
    // through, so its figures settle and can be compared with what was received.
    let script = format!(
        "CREATE CONNECTION guarded FROM nats_sink
         WITH (servers = '{url}', username = 'publisher', password = '{PASSWORD}');
         CREATE TABLE clicks (id BIGINT) WITH (connector = 'datagen', rows_per_second = '1000');
         INSERT INTO status_demo
         SELECT id, CASE WHEN id % 50 = 7 THEN 'status.rows.bad subject'
                         ELSE concat('status.rows.', id % 3) END AS subject
         FROM clicks WHERE id < {ROWS}
         WITH (connection = 'guarded', subject_field = 'subject',
               on_error = 'dead_letter', dead_letter_subject = 'status.dead');"
    );
    let mut run = Running::start(&[], &script);

    let received = rows
        .collect((ROWS - BAD) as usize, Duration::from_secs(60))
        .await;
    assert_eq!(received.len() as u64, ROWS - BAD);
    let dead_letters = dead.collect(BAD as usize, Duration::from_secs(30)).await;
    assert_eq!(dead_letters.len() as u64, BAD);
    let settled = wait_for_status(&mut run, |s| {
        s["sinks"][0]["rows_confirmed"] == ROWS - BAD && s["sinks"][0]["dead_lettered"] == BAD
    });
    let sink = &settled["sinks"][0];
    assert_eq!(sink["table"], "status_demo");
    assert_eq!(sink["connector"], "nats_sink");
    assert_eq!(sink["state"], "connected", "{settled:#}");
    assert_eq!(sink["in_flight"], 0);
    assert_eq!(sink["in_flight_bytes"], 0);
    assert_eq!(sink["retries"], 0);
    assert_eq!(sink["skipped"], 0);
    let reasons = sink["recent_rejections"].as_array().unwrap();
    assert_eq!(reasons.len(), 5, "the last five: {settled:#}");
    // Each names its row (its place among the statement's rows) and the subject's fault.
    let last = reasons[4].as_str().unwrap();
    assert!(
        reasons.iter().all(|r| {
            let r = r.as_str().unwrap();
            r.starts_with("row ")
                && r.contains("\"status.rows.bad subject\"")
                && r.contains("whitespace")
        }),
        "{reasons:?}"
    );
    // The source keeps producing rows the WHERE drops: at least what the sink got.
    let source = &settled["sources"][0];
    assert_eq!(source["connector"], "datagen", "{settled:#}");
    assert_eq!(source["statement"], sink["statement"]);
    assert_eq!(source["state"], "running");
    assert_eq!(source["pending"], Value::Null);
    assert!(source["rows_read"].as_u64().unwrap() >= ROWS, "{settled:#}");

    // The page, as a browser renders it once its script fetched the figures.
    let page = format!("{}/", run.base());
    let html = http::get(&page).ok("text/html");
    assert!(!html.contains(PASSWORD));
    let dom = browser::dump_dom(&page);
    assert!(!dom.contains(PASSWORD), "the password on the page");
    let row = dom
        .find("data-table=\"status_demo\"")
        .unwrap_or_else(|| panic!("no row for the sink: {dom}"));
    assert_eq!(field(&dom, row, "connector"), "nats_sink");
    assert_eq!(field(&dom, row, "rows_confirmed"), (ROWS - BAD).to_string());
    assert_eq!(field(&dom, row, "dead_lettered"), BAD.to_string());
    assert_eq!(field(&dom, row, "in_flight"), "0");
    assert_eq!(field(&dom, row, "in_flight_bytes"), "0");
    assert_eq!(field(&dom, row, "retries"), "0");
    assert!(dom[row..].contains("class=\"state connected\""), "{dom}");
    assert!(dom.contains(last), "the last rejection's reason: {dom}");
    let source = dom
        .find("data-connector=\"datagen\"")
        .unwrap_or_else(|| panic!("no row for the source: {dom}"));
    let read: u64 = field(&dom, source, "rows_read").parse().unwrap();
    assert!(read >= ROWS, "{read}");

    // A picture of it; the README's docs/status-page.png is this test's, taken with
    // STATUS_PAGE_SCREENSHOT=docs/status-page.png.
    let dir = tempfile::tempdir().unwrap();
    let shot = std::env::var_os("STATUS_PAGE_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("status-page.png"));
    browser::screenshot(&page, &shot, 1400, 520);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{}",
        shot.display()
    );

    let (out, err) = run.interrupt();
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));
    assert_eq!(common::inserted_rows(&out, "status_demo"), ROWS - BAD);
}

/// A `nats_source` feeding a sink: `/status.json` lists the source with the rows it
/// produced, as many as the sink's subscriber received, and its consumer's pending count
/// (a number, where datagen has none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_source_shows_its_rows_and_its_consumers_pending_messages() {
    const MESSAGES: u64 = 50;
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    common::js::create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    let payloads: Vec<String> = (0..MESSAGES).map(|i| format!(r#"{{"id":{i}}}"#)).collect();
    let messages: Vec<(&str, &str)> = payloads
        .iter()
        .map(|p| ("orders.new", p.as_str()))
        .collect();
    common::source::publish(&client, &messages).await;
    let mut received = Collector::subscribe(&client, "out.rows").await;
    let script = format!(
        "{}\nINSERT INTO out SELECT id FROM orders_in \
         WITH (connector = 'nats_sink', connection = 'c', subject = 'out.rows');",
        common::source::source(&server.url(), "id BIGINT", "fetch_size = '10'")
    );
    let mut run = Running::start(&[], &script);
    let settled = wait_for_status(&mut run, |s| {
        s["sources"][0]["rows_read"] == MESSAGES && s["sinks"][0]["rows_confirmed"] == MESSAGES
    });
    let source = &settled["sources"][0];
    assert_eq!(source["connector"], "nats_source", "{settled:#}");
    assert_eq!(source["pending"], 0, "{settled:#}");
    assert_eq!(
        common::published(&mut received).await.len() as u64,
        MESSAGES
    );
    run.interrupt();
}

/// The summary line an interrupted insert into `table` printed: `N` of
/// `stopped on signal; N rows confirmed before shutdown`.
fn confirmed_before_shutdown(stdout: &str, table: &str) -> u64 {
    let prefix = format!("INSERT INTO {table}: stopped on signal; ");
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no stop summary for {table} in:\n{stdout}"));
    line.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"))
}

/// `EXECUTE` of a prepared INSERT into a connector table runs as the INSERT itself: it
/// is on the status page with its sink and source, shows its progress line, and Ctrl-C
/// stops it with the summary of the rows confirmed, which are the rows a subscriber
/// received, each with the value bound to the parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executed_prepared_insert_is_run_as_the_insert_itself() {
    let server = NatsServer::start();
    let url = server.url();
    let client = nats_testkit::connect(&url).await;
    let mut rows = Collector::subscribe(&client, "prepared.rows").await;
    let script = format!(
        "CREATE TABLE clicks (id BIGINT) WITH (connector = 'datagen', rows_per_second = '200');
         CREATE TABLE tagged (id BIGINT, tag VARCHAR)
         WITH (connector = 'nats_sink', servers = '{url}', subject = 'prepared.rows');
         PREPARE tag_clicks(VARCHAR) AS INSERT INTO tagged SELECT id, $1 AS tag FROM clicks;
         EXECUTE tag_clicks('from-execute');"
    );
    let mut run = Running::start(&["--progress", "always"], &script);
    let running = wait_for_status(&mut run, |s| {
        s["sinks"][0]["rows_confirmed"]
            .as_u64()
            .is_some_and(|n| n >= 20)
    });
    let sink = &running["sinks"][0];
    assert_eq!(sink["table"], "tagged", "{running:#}");
    assert_eq!(sink["connector"], "nats_sink");
    assert_eq!(running["sources"][0]["connector"], "datagen");
    assert_eq!(running["sources"][0]["statement"], sink["statement"]);
    run.wait_for_line("INSERT INTO tagged: ", Duration::from_secs(30));

    let (out, _) = run.interrupt();
    let confirmed = confirmed_before_shutdown(&out, "tagged");
    // The summary knows the target is a connector's sink, as for the INSERT itself.
    assert!(
        out.contains(&format!(
            "INSERT INTO tagged: {confirmed} rows published in "
        )),
        "{out}"
    );
    let received = common::published(&mut rows).await;
    assert_eq!(received.len() as u64, confirmed, "{out}");
    for (i, message) in received.iter().enumerate() {
        assert_eq!(
            nats_testkit::payload_json(message),
            serde_json::json!({ "id": i, "tag": "from-execute" })
        );
    }
}

/// A plain SELECT reading a streaming source is on the page too (its source, with the
/// rows it produced; it has no sink), and Ctrl-C ends it with the rows it read printed.
#[test]
fn a_running_select_from_a_stream_shows_its_source() {
    let script =
        "CREATE TABLE ticks (id BIGINT) WITH (connector = 'datagen', rows_per_second = '50');
                  SELECT id FROM ticks;";
    let mut run = Running::start(&[], script);
    let running = wait_for_status(&mut run, |s| {
        s["sources"][0]["rows_read"]
            .as_u64()
            .is_some_and(|n| n >= 5)
    });
    assert_eq!(running["sources"][0]["connector"], "datagen", "{running:#}");
    assert_eq!(running["sinks"], serde_json::json!([]));
    let read = running["sources"][0]["rows_read"].as_u64().unwrap();

    let (out, _) = run.interrupt();
    // Every row read up to the signal is printed, in order: at least those the page saw.
    let printed: Vec<u64> = out
        .lines()
        .filter_map(|l| l.trim_matches(|c| c == '|' || c == ' ').parse().ok())
        .collect();
    assert!(printed.len() as u64 >= read, "{read} read:\n{out}");
    assert_eq!(printed, (0..printed.len() as u64).collect::<Vec<_>>());
}

/// A `nats_kv` INSERT shares `nats_sink`'s plan node, yet the page credits it to
/// `nats_kv`, with its figures: the rows the bucket stored and those skipped for a bad
/// key, as the bucket itself holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_kv_insert_is_shown_as_nats_kv_with_its_figures() {
    use async_nats::jetstream::{self, kv::Config};

    // Rows 0 to 199 over ten keys; ids 7, 57, 107 and 157 have a bad key.
    const ROWS: u64 = 200;
    const BAD: u64 = 4;
    let server = NatsServer::start();
    let url = server.url();
    let client = nats_testkit::connect(&url).await;
    let kv = jetstream::new(client.clone())
        .create_key_value(Config {
            bucket: "status_kv".into(),
            history: 64,
            ..Default::default()
        })
        .await
        .unwrap();
    let script = format!(
        "CREATE TABLE clicks (id BIGINT) WITH (connector = 'datagen', rows_per_second = '1000');
         INSERT INTO latest
         SELECT CASE WHEN id % 50 = 7 THEN 'bad key' ELSE concat('user.', id % 10) END AS k, id
         FROM clicks WHERE id < {ROWS}
         WITH (connector = 'nats_kv', servers = '{url}', bucket = 'status_kv', key_field = 'k',
               on_error = 'skip');"
    );
    let mut run = Running::start(&["--progress", "always"], &script);
    let settled = wait_for_status(&mut run, |s| {
        s["sinks"][0]["rows_confirmed"] == ROWS - BAD && s["sinks"][0]["skipped"] == BAD
    });
    let sink = &settled["sinks"][0];
    assert_eq!(sink["table"], "latest");
    assert_eq!(sink["connector"], "nats_kv", "{settled:#}");
    assert_eq!(sink["state"], "connected");
    assert_eq!(sink["in_flight"], 0);
    assert_eq!(sink["dead_lettered"], 0);
    let reasons = sink["recent_rejections"].as_array().unwrap();
    assert_eq!(reasons.len() as u64, BAD, "{settled:#}");
    assert!(
        reasons.iter().all(|r| r
            .as_str()
            .unwrap()
            .contains("\"bad key\", which is not a valid key")),
        "{reasons:?}"
    );
    run.wait_for_line("INSERT INTO latest: ", Duration::from_secs(30));

    // The figures are the bucket's: every confirmed row is a revision, and each key
    // holds its last row.
    let stream = jetstream::new(client)
        .get_stream("KV_status_kv")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(stream, ROWS - BAD);
    for key in 0..10 {
        let value = kv.get(format!("user.{key}")).await.unwrap().unwrap();
        assert_eq!(&value[..], format!(r#"{{"id":{}}}"#, 190 + key).as_bytes());
    }
    let (out, _) = run.interrupt();
    assert_eq!(common::inserted_rows(&out, "latest"), ROWS - BAD, "{out}");
}
