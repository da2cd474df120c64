//! JetStream mode when the server says no, end to end against real nats-server processes.
//! Every check reads back what the stream stored with a real consumer.
//!
//! - A publish permission violation (reported only as an asynchronous `-ERR`) fails the
//!   statement at once, naming the violation, instead of being retried forever.
//! - A stream that is full with `discard = new` is a transient condition: retried with
//!   logged warnings until `retry_timeout`, then reported naming the full stream; the
//!   stream keeps exactly what fitted.
//! - Rows over the stream's `max_msg_size` follow `on_error`: `fail` names the row and the
//!   limit and sends nothing; `skip` stores every other row and counts the skipped ones;
//!   `dead_letter` stores each oversize row in the dead-letter stream (with its body when
//!   that stream's own limit allows it), with the reason, original subject and row number
//!   as headers.

use crate::common;

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{self, stream::DiscardPolicy};
use common::js::{assert_each_id_once, create_stream, header, read_all, stored};
use common::link::Link;
use common::spawned::Spawned;
use common::{
    assert_fails_with, confirmed_in_error, inserted_rows, run_script, run_script_timed, stderr,
    stdout, summary_count,
};
use nats_testkit::{NatsServer, payload_json};
use streamsql::Engine;

/// The `id` field of a stored message's JSON payload.
pub(crate) fn id_of(message: &jetstream::Message) -> u64 {
    payload_json(message)["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id in {:?}", message.payload))
}

/// The ids the messages carry, in stream order.
pub(crate) fn ids(messages: &[jetstream::Message]) -> Vec<u64> {
    messages.iter().map(id_of).collect()
}

/// `INSERT INTO out <select> WITH (connector = 'nats_sink', servers = <url>, <options>)`.
pub(crate) fn insert_script(url: &str, select: &str, options: &str) -> String {
    format!(
        "INSERT INTO out {select} WITH (connector = 'nats_sink', servers = '{url}', {options});"
    )
}

/// A server where "publisher" may publish anywhere but under `orders.secret.` (the
/// JetStream API and its own inboxes stay allowed, so the start checks and the acks
/// work), and a client of its "admin".
pub(crate) async fn server_denying_orders_secret() -> (NatsServer, async_nats::Client) {
    let server = NatsServer::builder()
        .config(
            r#"authorization {
  users = [
    { user: "admin", password: "admin-pw" }
    { user: "publisher", password: "publisher-pw", permissions: { publish: { deny: ["orders.secret.>"] } } }
  ]
}"#,
        )
        .start();
    let client = nats_testkit::connect_with_user(&server.url(), "admin", "admin-pw").await;
    (server, client)
}

#[tokio::test]
async fn publish_permission_denied_fails_fast_naming_the_violation() {
    let (server, client) = server_denying_orders_secret().await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;

    // Row 1001 (id 1000) goes to a subject the user may not publish to.
    let denied_id = 1000u64;
    let select = format!(
        "SELECT value AS id, CASE WHEN value = {denied_id} THEN 'orders.secret.1000' \
         ELSE concat('orders.', CAST(value % 4 AS VARCHAR)) END AS subject \
         FROM generate_series(0, 1999)"
    );
    let script = insert_script(
        &server.url(),
        &select,
        "username = 'publisher', password = 'publisher-pw', subject_field = 'subject', \
         stream = 'ORDERS', msg_id_field = 'id'",
    );
    let (output, elapsed) = run_script_timed(&script, &[]);

    assert_fails_with(
        &output,
        &[
            "the server refused a publish",
            "Permissions Violation",
            "orders.secret.1000",
        ],
    );
    // Retrying forever (no retry_timeout) would never end; a refusal is not retried.
    assert!(
        elapsed < Duration::from_secs(15),
        "took {elapsed:?} to fail on a permissions violation"
    );
    let err = stderr(&output);
    assert!(
        !err.contains("; retrying"),
        "a permissions violation is not retried:\n{err}"
    );

    // Nothing reached the denied subject; every row before it is stored, once, and the
    // error counts exactly what the stream holds.
    let confirmed = confirmed_in_error(&err);
    let messages = read_all(&client, "ORDERS").await;
    assert!(
        messages
            .iter()
            .all(|m| !m.subject.starts_with("orders.secret.")),
        "a message on the denied subject was stored"
    );
    let stored_ids: BTreeSet<u64> = ids(&messages).into_iter().collect();
    assert_eq!(stored_ids.len(), messages.len(), "no row stored twice");
    assert!(!stored_ids.contains(&denied_id));
    // The error's count is what the stream holds: rows after the denied one that were in
    // flight and stored are counted too.
    assert_eq!(messages.len() as u64, confirmed, "{err}");
    let missing: Vec<u64> = (0..denied_id)
        .filter(|id| !stored_ids.contains(id))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "rows before the denied one not stored (first 10): {missing:?}"
    );
}

#[tokio::test]
async fn full_stream_with_discard_new_is_retried_then_reported() {
    const MAX_MSGS: u64 = 100;
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "FULL", &["full.>"], |config| {
        config.max_messages = MAX_MSGS as i64;
        config.discard = DiscardPolicy::New;
    })
    .await;

    let select = "SELECT value AS id, concat('full.', CAST(value % 4 AS VARCHAR)) AS subject \
                  FROM generate_series(0, 499)";
    let script = insert_script(
        &server.url(),
        select,
        "subject_field = 'subject', stream = 'FULL', msg_id_field = 'id', retry_timeout = '3s'",
    );
    let (output, elapsed) = run_script_timed(&script, &[]);

    assert_fails_with(
        &output,
        &[
            "gave up after retrying",
            "retry_timeout",
            "stream 'FULL'",
            "full",
            &format!("{MAX_MSGS} rows were published and confirmed"),
        ],
    );
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(15),
        "took {elapsed:?} with retry_timeout = 3s"
    );
    // Each retry is logged as a warning naming the full stream.
    let err = stderr(&output);
    let warnings = err
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("is full") && l.contains("retrying"))
        .count();
    assert!(
        warnings >= 2,
        "expected several retry warnings, got {warnings}:\n{err}"
    );

    // The stream holds exactly what fitted: the first rows, each once.
    let messages = read_all(&client, "FULL").await;
    assert_each_id_once(&messages, MAX_MSGS);
    assert_eq!(stored(&client, "FULL").await, MAX_MSGS);
}

/// Rows 1..=20; rows 7 and 13 carry a body far over the streams' 300-byte limit.
fn oversize_rows(prefix: &str) -> String {
    format!(
        "SELECT value AS id, concat('{prefix}.orders.', CAST(value AS VARCHAR)) AS subject, \
         repeat('x', CAST(CASE WHEN value IN (7, 13) THEN 400 ELSE 10 END AS INT)) AS body \
         FROM generate_series(1, 20)"
    )
}

const OVERSIZE: [u64; 2] = [7, 13];
const MAX_MSG_SIZE: i32 = 300;

#[tokio::test]
async fn oversize_rows_under_each_on_error_policy() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    for (stream, subjects) in [("FAIL", "fail.>"), ("SKIP", "skip.>"), ("DEAD", "dead.>")] {
        create_stream(&client, stream, &[subjects], |config| {
            config.max_message_size = MAX_MSG_SIZE;
        })
        .await;
    }
    create_stream(&client, "REJECTS", &["rejects.>"], |_| {}).await;
    let insert = |prefix: &str, stream: &str, on_error: &str| {
        run_script(
            &insert_script(
                &server.url(),
                &oversize_rows(prefix),
                &format!(
                    "subject_field = 'subject', stream = '{stream}', msg_id_field = 'id', {on_error}"
                ),
            ),
            &[],
        )
    };
    let others: Vec<u64> = (1..=20).filter(|id| !OVERSIZE.contains(id)).collect();

    // fail (the default): the first oversize row is named with the limit; its batch,
    // which is all the rows here, is not sent.
    let failed = insert("fail", "FAIL", "on_error = 'fail'");
    assert_fails_with(
        &failed,
        &[
            &format!("row {}:", OVERSIZE[0]),
            &format!("over the stream's max_msg_size of {MAX_MSG_SIZE} bytes"),
            "0 earlier rows were published",
        ],
    );
    assert_eq!(stored(&client, "FAIL").await, 0);

    // skip: every other row is stored, once and in order; the summary counts both.
    let skipped = insert("skip", "SKIP", "on_error = 'skip'");
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    let out = stdout(&skipped);
    assert_eq!(inserted_rows(&out, "out"), others.len() as u64);
    assert_eq!(
        summary_count(&out, "out", "skipped"),
        Some(OVERSIZE.len() as u64)
    );
    assert_eq!(summary_count(&out, "out", "dead-lettered"), Some(0));
    for row in OVERSIZE {
        assert!(
            stderr(&skipped).contains(&format!("row={row}")),
            "each skipped row is logged:\n{}",
            stderr(&skipped)
        );
    }
    assert_eq!(ids(&read_all(&client, "SKIP").await), others);

    // dead_letter: the oversize rows go to the dead-letter subject (captured by REJECTS)
    // with an empty body and headers saying why, where to and which row.
    let dead = insert(
        "dead",
        "DEAD",
        "on_error = 'dead_letter', dead_letter_subject = 'rejects.rows'",
    );
    assert!(dead.status.success(), "{}", stderr(&dead));
    let out = stdout(&dead);
    assert_eq!(inserted_rows(&out, "out"), others.len() as u64);
    assert_eq!(
        summary_count(&out, "out", "dead-lettered"),
        Some(OVERSIZE.len() as u64)
    );
    assert_eq!(summary_count(&out, "out", "skipped"), Some(0));
    assert_eq!(ids(&read_all(&client, "DEAD").await), others);

    let letters = read_all(&client, "REJECTS").await;
    assert_eq!(
        letters.len(),
        OVERSIZE.len(),
        "one dead letter per oversize row"
    );
    for (letter, row) in letters.iter().zip(OVERSIZE) {
        assert_eq!(letter.subject.as_str(), "rejects.rows");
        // The dead-letter stream has no size limit of its own: the row's body goes along.
        assert!(
            !letter.payload.is_empty(),
            "row {row}: the dead letter carries the row's body when its stream takes it"
        );
        let reason = header(letter, "StreamSQL-Error").expect("a reason header");
        assert!(
            reason.contains("max_msg_size") && reason.contains(&MAX_MSG_SIZE.to_string()),
            "row {row}: {reason}"
        );
        assert_eq!(
            header(letter, "StreamSQL-Subject").as_deref(),
            Some(format!("dead.orders.{row}").as_str())
        );
        assert_eq!(
            header(letter, "StreamSQL-Row").as_deref(),
            Some(row.to_string().as_str())
        );
    }
}

/// A server without JetStream, watched by a subscriber on `>` (which makes JetStream API
/// requests go unanswered instead of failing with "no responders"): the sink reads the
/// server's INFO and fails at once saying how to enable JetStream.
#[tokio::test]
async fn jetstream_disabled_fails_at_once_even_with_a_subscriber_on_everything() {
    let server = NatsServer::builder().jetstream(false).start();
    let watcher = nats_testkit::connect(&server.url()).await;
    let _everything = watcher.subscribe(">").await.unwrap();
    watcher.flush().await.unwrap();
    let script = insert_script(
        &server.url(),
        "SELECT 1 AS id",
        "subject = 'orders.1', stream = 'ORDERS'",
    );
    let (output, elapsed) = run_script_timed(&script, &[]);
    assert_fails_with(
        &output,
        &["JetStream is not enabled", "start nats-server with -js"],
    );
    assert!(!stderr(&output).contains("retrying"), "{}", stderr(&output));
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

/// A dead letter is checked against the dead-letter stream's own limit: a row without a
/// subject whose body fits the rows' stream but not the smaller dead-letter stream is
/// dead-lettered without its body, and the statement goes on.
#[tokio::test]
async fn a_dead_letter_is_sized_for_the_dead_letter_stream() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ROWS", &["rows.>"], |_| {}).await;
    create_stream(&client, "DEAD", &["dead.>"], |c| c.max_message_size = 300).await;
    let select = "SELECT value AS id, repeat('x', 500) AS body, \
                  CASE WHEN value = 2 THEN NULL ELSE 'rows.ok' END AS subject \
                  FROM generate_series(1, 3)";
    let script = insert_script(
        &server.url(),
        select,
        "subject_field = 'subject', stream = 'ROWS', on_error = 'dead_letter', \
         dead_letter_subject = 'dead.rows'",
    );
    let output = run_script(&script, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stored(&client, "ROWS").await, 2);
    let dead = read_all(&client, "DEAD").await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].payload.is_empty(), "the body did not fit: left out");
    assert!(header(&dead[0], "StreamSQL-Error").is_some());
}

/// The stream deleted while rows are in flight: acks fail for good. The statement fails
/// naming the deletion, with a clean exit (no panic from settling the acks still in
/// flight), and its count of confirmed rows is what the stream held when it went.
#[tokio::test]
async fn a_stream_deleted_mid_statement_fails_cleanly() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "GONE", &["gone.>"], |_| {}).await;
    let select = "SELECT value AS id, 'gone.rows' AS subject FROM generate_series(1, 2000000)";
    let script = insert_script(
        &server.url(),
        select,
        "subject_field = 'subject', stream = 'GONE', confirm_timeout = '2s'",
    );
    let running = Spawned::start(&script);
    let js = jetstream::new(client.clone());
    // Delete once rows are being stored.
    while stored(&client, "GONE").await < 1000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    js.delete_stream("GONE").await.unwrap();
    let output = running.finish(Duration::from_secs(60)).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_fails_with(&output, &["stream 'GONE' was deleted during the statement"]);
}

/// The stream's subjects edited mid-statement so that the rows' subject is no longer
/// captured: publishes get "no responders" while the stream exists, which is not a leader
/// election. The statement fails at once (not after `retry_timeout`), naming the change.
#[tokio::test]
async fn a_stream_whose_subjects_are_edited_away_mid_statement_fails_naming_the_change() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "EDITED", &["edited.>"], |_| {}).await;
    let select = "SELECT value AS id, 'edited.rows' AS subject FROM generate_series(1, 2000000)";
    let script = insert_script(
        &server.url(),
        select,
        "subject_field = 'subject', stream = 'EDITED', retry_timeout = '120s'",
    );
    let running = Spawned::start(&script);
    while stored(&client, "EDITED").await < 1000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let js = jetstream::new(client.clone());
    let mut config = js
        .get_stream("EDITED")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    config.subjects = vec!["elsewhere.>".into()];
    js.update_stream(config).await.unwrap();
    let edited_at = std::time::Instant::now();
    let output = running.finish(Duration::from_secs(100)).await;
    assert_fails_with(
        &output,
        &[
            "stream 'EDITED' no longer captures subject 'edited.rows'",
            "from edited.> to elsewhere.>",
        ],
    );
    assert!(
        edited_at.elapsed() < Duration::from_secs(30),
        "retried for {:?} instead of failing",
        edited_at.elapsed()
    );
    let confirmed = confirmed_in_error(&stderr(&output));
    assert_eq!(stored(&client, "EDITED").await, confirmed);
}

/// A stream with `no_ack` never acknowledges: the statement could not confirm a row, so
/// it is refused at the start, saying what to change.
#[tokio::test]
async fn a_stream_without_acks_is_refused_at_the_start() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "SILENT", &["silent.>"], |c| c.no_ack = true).await;
    let script = insert_script(
        &server.url(),
        "SELECT value AS id FROM generate_series(1, 10)",
        "subject = 'silent.rows', stream = 'SILENT', retry_timeout = '60s'",
    );
    let (output, elapsed) = run_script_timed(&script, &[]);
    assert_fails_with(&output, &["stream 'SILENT'", "no_ack", "unset no_ack"]);
    assert!(elapsed < Duration::from_secs(15), "took {elapsed:?}");
    assert_eq!(stored(&client, "SILENT").await, 0);
}

/// The query fails while acks are outstanding (the window has room) and the server has
/// stopped answering: the statement reports the query's error once the acks in flight
/// are past `confirm_timeout`, without first retrying them until `retry_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_error_while_the_server_is_silent_is_reported_within_confirm_timeout() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "STALL", &["stall.>"], |_| {}).await;
    let link = Link::to(&server.url(), None).await;
    // Row 6000 fails the cast, about 3 s in; the server's replies stop once rows are
    // being stored, long before.
    let script = format!(
        "CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen', rows_per_second = '2000');
         INSERT INTO out SELECT id, CAST(CASE WHEN id = 6000 THEN 'x' ELSE '1' END AS INT) AS n \
         FROM gen WITH (connector = 'nats_sink', servers = '{}', subject = 'stall.rows', \
           stream = 'STALL', confirm_timeout = '2s', retry_timeout = '120s', \
           max_in_flight = '65536');",
        link.url()
    );
    let statement = tokio::spawn(async move { Engine::new().execute(&script).await });
    while stored(&client, "STALL").await < 500 {
        assert!(!statement.is_finished(), "the statement ended early");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    link.hold_replies();
    let held_at = std::time::Instant::now();
    let outcome = tokio::time::timeout(Duration::from_secs(100), statement)
        .await
        .expect("the statement ends")
        .unwrap();
    let err = outcome
        .expect_err("the cast fails the statement")
        .to_string();
    assert!(err.contains("Cannot cast string 'x'"), "{err}");
    assert!(
        held_at.elapsed() < Duration::from_secs(20),
        "the error came after {:?}",
        held_at.elapsed()
    );
}
