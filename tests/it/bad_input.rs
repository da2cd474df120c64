//! Bad input: each case fails with exit code 1, an error naming what is wrong, and
//! nothing published (checked by a real subscriber on every subject). A bad value in a
//! row fails so under `on_error = 'fail'` and never panics; under 'skip' and
//! 'dead_letter' the other rows go on. When earlier batches went out before the bad one,
//! the error's count of confirmed rows is exactly what the server holds.

use crate::common;

use std::net::TcpListener;
use std::time::Duration;

use common::*;
use nats_testkit::{Collector, NatsServer};

/// A server, a subscriber on `>`, and the sink options pointing at the server.
struct Setup {
    server: NatsServer,
    everything: Collector,
    _client: async_nats::Client,
}

async fn setup() -> Setup {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let everything = Collector::subscribe(&client, ">").await;
    Setup {
        server,
        everything,
        _client: client,
    }
}

impl Setup {
    /// `INSERT INTO out <select> WITH (connector='nats_sink', servers=<this server>, <options>)`.
    fn insert(&self, select: &str, options: &str) -> std::process::Output {
        let script = format!(
            "INSERT INTO out {select} WITH (connector = 'nats_sink', servers = '{}', {options});",
            self.server.url()
        );
        run_script(&script, &[])
    }

    async fn assert_nothing_published(&mut self) {
        let messages = published(&mut self.everything).await;
        assert!(
            messages.is_empty(),
            "published: {:?}",
            messages.iter().map(text).collect::<Vec<_>>()
        );
    }
}

const ROWS: &str = "SELECT * FROM (VALUES (1, 'ok.a'), (2, 'ok.b'), (3, 'ok.c')) AS t(id, subject)";

#[tokio::test]
async fn unknown_option_names_it_and_the_closest_valid_one() {
    let mut s = setup().await;
    let output = s.insert(ROWS, "subjct_field = 'subject'");
    assert_fails_with(
        &output,
        &[
            "unknown option 'subjct_field'",
            "did you mean 'subject_field'?",
        ],
    );
    s.assert_nothing_published().await;
}

#[tokio::test]
async fn missing_subject_column_names_it_and_lists_the_columns() {
    let mut s = setup().await;
    let output = s.insert(ROWS, "subject_field = 'topic'");
    assert_fails_with(
        &output,
        &[
            "'subject_field' names column 'topic'",
            "columns: id, subject",
        ],
    );
    s.assert_nothing_published().await;
}

#[tokio::test]
async fn non_string_subject_column_says_to_cast_it() {
    let mut s = setup().await;
    let output = s.insert(ROWS, "subject_field = 'id'");
    assert_fails_with(
        &output,
        &[
            "column 'id' of type Int64",
            "must be a string column",
            "CAST",
        ],
    );
    s.assert_nothing_published().await;
}

#[tokio::test]
async fn null_subject_names_the_row_and_nothing_of_its_batch_is_sent() {
    let mut s = setup().await;
    let rows = "SELECT * FROM (VALUES (1, 'ok.a'), (2, 'ok.b'), (3, NULL)) AS t(id, subject)";
    let output = s.insert(rows, "subject_field = 'subject'");
    assert_fails_with(
        &output,
        &[
            "row 3: column 'subject' is null",
            "0 earlier rows were published",
        ],
    );
    s.assert_nothing_published().await;
}

#[tokio::test]
async fn invalid_subjects_name_the_row_value_and_rule() {
    let cases = [
        ("'orders.*'", "it has a wildcard token"),
        ("'orders.>'", "it has a wildcard token"),
        ("'has space'", "it contains whitespace"),
        ("'orders..x'", "it has an empty token"),
        ("''", "it is empty"),
    ];
    let mut s = setup().await;
    for (value, rule) in cases {
        let rows = format!("SELECT * FROM (VALUES (1, 'ok.a'), (2, {value})) AS t(id, subject)");
        let output = s.insert(&rows, "subject_field = 'subject'");
        let quoted = format!("holds {:?}", value.trim_matches('\''));
        assert_fails_with(&output, &["row 2: column 'subject'", &quoted, rule]);
    }
    s.assert_nothing_published().await;
}

#[tokio::test]
async fn undefined_connection_is_named() {
    let mut s = setup().await;
    let output = s.insert(
        ROWS,
        "connection = 'no_such_conn', subject_field = 'subject'",
    );
    assert_fails_with(&output, &["no_such_conn"]);
    s.assert_nothing_published().await;
}

#[tokio::test]
async fn unresolved_variable_names_the_variable() {
    let mut s = setup().await;
    let output = s.insert(
        ROWS,
        "subject_field = 'subject', username = 'u', password = '${STREAMSQL_TEST_NEVER_SET}'",
    );
    assert_fails_with(
        &output,
        &["'STREAMSQL_TEST_NEVER_SET'", "option 'password'"],
    );
    s.assert_nothing_published().await;
}

#[tokio::test]
async fn wrong_password_is_an_authorization_error_without_the_password() {
    let server = NatsServer::builder().user("publisher", "right-pw").start();
    let client = nats_testkit::connect_with_user(&server.url(), "publisher", "right-pw").await;
    let mut everything = Collector::subscribe(&client, ">").await;
    let script = format!(
        "INSERT INTO out {ROWS} WITH (connector = 'nats_sink', servers = '{}', \
         username = 'publisher', password = 'wrong-pw-123', subject_field = 'subject');",
        server.url()
    );
    let output = run_script(&script, &[]);
    assert_fails_with(
        &output,
        &[
            "rejected user 'publisher'",
            "check 'username' and 'password'",
        ],
    );
    assert!(!stderr(&output).contains("wrong-pw-123"));
    let got = published(&mut everything).await;
    assert!(
        got.is_empty(),
        "{:?}",
        got.iter()
            .map(|m| (m.subject.to_string(), text(m)))
            .collect::<Vec<_>>()
    );
}

/// A server that is down is a transient failure: retried until `retry_timeout`, then
/// the error names the server and the timeout to raise.
#[test]
fn refused_connection_is_retried_until_retry_timeout_naming_the_server() {
    let port = nats_testkit::free_port();
    let script = format!(
        "INSERT INTO out {ROWS} WITH (connector = 'nats_sink', servers = 'nats://127.0.0.1:{port}', \
         subject_field = 'subject', retry_timeout = '2s');"
    );
    let (output, elapsed) = run_script_timed(&script, &[]);
    assert_fails_with(
        &output,
        &[
            "gave up after retrying",
            &format!("cannot connect to NATS at nats://127.0.0.1:{port}"),
            "cannot be reached",
            "retry_timeout",
        ],
    );
    assert!(
        elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(10),
        "took {elapsed:?} with retry_timeout = 2s"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("retrying"), "retries are logged: {stderr}");
}

/// A peer that accepts TCP but never speaks NATS: only `connect_timeout` ends an attempt
/// (and `retry_timeout` the retrying).
#[test]
fn silent_server_fails_within_connect_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "INSERT INTO out {ROWS} WITH (connector = 'nats_sink', servers = 'nats://127.0.0.1:{port}', \
         subject_field = 'subject', connect_timeout = '1s', retry_timeout = '1s');"
    );
    let (output, elapsed) = run_script_timed(&script, &[]);
    assert_fails_with(
        &output,
        &["cannot connect to NATS", "timed out", "connect_timeout"],
    );
    assert!(
        elapsed >= Duration::from_millis(900),
        "failed before the timeout: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(6),
        "took {elapsed:?} with connect_timeout = 1s"
    );
    drop(listener);
}

#[tokio::test]
async fn unsupported_format_lists_the_supported_ones() {
    let mut s = setup().await;
    let output = s.insert(ROWS, "subject_field = 'subject', format = 'avro'");
    assert_fails_with(
        &output,
        &[
            "option 'format'",
            "'avro' is not supported",
            "write one of: json",
        ],
    );
    s.assert_nothing_published().await;
}

#[tokio::test]
async fn oversized_row_names_the_row_and_the_limit() {
    let server = NatsServer::builder().max_payload(1024).start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut everything = Collector::subscribe(&client, ">").await;
    let script = format!(
        "INSERT INTO out SELECT value AS id, repeat('x', CAST(CASE WHEN value = 3 THEN 2000 ELSE 10 END AS INT)) AS body \
         FROM generate_series(1, 5) WITH (connector = 'nats_sink', servers = '{}', subject = 'big.rows');",
        server.url()
    );
    let output = run_script(&script, &[]);
    assert_fails_with(
        &output,
        &["row 3:", "over the server's max_payload of 1024 bytes"],
    );
    assert!(published(&mut everything).await.is_empty());
}

/// A bad row in the second batch: the first batch was confirmed and stays delivered, the
/// error says so, and nothing of the bad row's batch is sent.
#[tokio::test]
async fn bad_row_in_a_later_batch_keeps_earlier_batches_and_says_how_many() {
    let mut s = setup().await;
    let rows = "SELECT value AS id, CASE WHEN value = 9000 THEN NULL ELSE 'ok.n' END AS subject \
                FROM generate_series(1, 10000)";
    let output = s.insert(rows, "subject_field = 'subject'");
    // DataFusion's batches hold 8192 rows: the first is sent, the second holds row 9000.
    assert_fails_with(
        &output,
        &[
            "row 9000: column 'subject' is null",
            "8192 earlier rows were published and confirmed",
        ],
    );
    let messages = published(&mut s.everything).await;
    assert_eq!(messages.len(), 8192);
    assert_eq!(text(messages.last().unwrap()), r#"{"id":8192}"#);
}

/// Rows 2 and 3 have a message id with a line break (CR LF, then a lone CR), which no
/// NATS header can carry; rows 1 and 4 are fine.
const LINE_BREAK_IDS: &str = "SELECT value AS n, concat('ok.', value) AS subject, \
     CASE WHEN value = 2 THEN concat('id-2', chr(13), chr(10), 'PUB evil 0') \
          WHEN value = 3 THEN concat('id-3', chr(13)) \
          ELSE concat('id-', value) END AS id \
     FROM generate_series(1, 4)";

/// The `Nats-Msg-Id` of a received message.
fn msg_id(message: &async_nats::Message) -> Option<String> {
    let headers = message.headers.as_ref()?;
    Some(headers.get("Nats-Msg-Id")?.to_string())
}

/// A message id with a line break is a bad row like any other: it follows `on_error`
/// (the rest goes on under 'skip' and 'dead_letter'; 'fail' names the row and the
/// column), and the process never panics.
#[tokio::test]
async fn line_break_in_a_message_id_follows_on_error_without_a_panic() {
    let mut s = setup().await;
    let options = "subject_field = 'subject', msg_id_field = 'id'";

    let failed = s.insert(LINE_BREAK_IDS, options);
    assert_ne!(failed.status.code(), Some(101), "{}", stderr(&failed));
    assert_fails_with(
        &failed,
        &["row 2: column 'id'", "line break", "on_error = 'skip'"],
    );
    s.assert_nothing_published().await;

    let skipped = s.insert(LINE_BREAK_IDS, &format!("{options}, on_error = 'skip'"));
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    assert_eq!(summary_count(&stdout(&skipped), "out", "skipped"), Some(2));
    let got: Vec<(String, Option<String>)> = published(&mut s.everything)
        .await
        .iter()
        .map(|m| (m.subject.to_string(), msg_id(m)))
        .collect();
    assert_eq!(
        got,
        [
            ("ok.1".to_string(), Some("id-1".to_string())),
            ("ok.4".into(), Some("id-4".into()))
        ]
    );

    let dead = s.insert(
        LINE_BREAK_IDS,
        &format!("{options}, on_error = 'dead_letter', dead_letter_subject = 'dead.rows'"),
    );
    assert!(dead.status.success(), "{}", stderr(&dead));
    let got = published(&mut s.everything).await;
    let subjects: Vec<&str> = got.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["ok.1", "dead.rows", "dead.rows", "ok.4"]);
    for (letter, row) in [(&got[1], "2"), (&got[2], "3")] {
        let headers = letter.headers.as_ref().expect("a dead letter has headers");
        let reason = headers.get("StreamSQL-Error").unwrap().to_string();
        assert!(
            reason.contains("column 'id'") && reason.contains("line break"),
            "{reason}"
        );
        assert_eq!(headers.get("StreamSQL-Row").unwrap().as_str(), row);
        assert_eq!(
            headers.get("StreamSQL-Subject").unwrap().to_string(),
            format!("ok.{row}")
        );
    }
}

/// The same in JetStream mode: under 'dead_letter' the good rows and the dead letters are
/// stored; under 'fail' the statement fails naming the row, without a panic.
#[tokio::test]
async fn line_break_in_a_message_id_under_jetstream_is_dead_lettered_or_fails_cleanly() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    common::js::create_stream(&client, "OK", &["ok.>"], |_| {}).await;
    common::js::create_stream(&client, "DEAD", &["dead.>"], |_| {}).await;
    let insert = |extra: &str| {
        run_script(
            &format!(
                "INSERT INTO out {LINE_BREAK_IDS} WITH (connector = 'nats_sink', servers = '{}', \
                 subject_field = 'subject', msg_id_field = 'id', stream = 'OK'{extra});",
                server.url()
            ),
            &[],
        )
    };

    let failed = insert("");
    assert_ne!(failed.status.code(), Some(101), "{}", stderr(&failed));
    assert_fails_with(&failed, &["row 2: column 'id'", "line break"]);
    assert_eq!(common::js::stored(&client, "OK").await, 0);

    let dead = insert(", on_error = 'dead_letter', dead_letter_subject = 'dead.rows'");
    assert!(dead.status.success(), "{}", stderr(&dead));
    let stored: Vec<Option<String>> = common::js::read_all(&client, "OK")
        .await
        .iter()
        .map(|m| common::js::header(m, "Nats-Msg-Id"))
        .collect();
    assert_eq!(stored, [Some("id-1".to_string()), Some("id-4".into())]);
    let letters = common::js::read_all(&client, "DEAD").await;
    let rows: Vec<Option<String>> = letters
        .iter()
        .map(|m| common::js::header(m, "StreamSQL-Row"))
        .collect();
    assert_eq!(rows, [Some("2".to_string()), Some("3".into())]);
}

/// Core NATS at full speed through many batches: the bad row's error counts exactly the
/// rows the server received (a stream capturing the subjects holds them), which are all
/// the batches before the bad row's.
#[tokio::test]
async fn a_bad_row_after_many_core_batches_counts_exactly_what_the_server_received() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    common::js::create_stream(&client, "HELD", &["ok.>"], |_| {}).await;
    // One partition: rows reach the sink in the query's order, so row 77777 is id 77777.
    let script = format!(
        "SET datafusion.execution.target_partitions = 1;
         INSERT INTO out SELECT value AS id, \
           CASE WHEN value = 77777 THEN NULL ELSE concat('ok.', value % 8) END AS subject \
         FROM generate_series(1, 100000) \
         WITH (connector = 'nats_sink', servers = '{}', subject_field = 'subject');",
        server.url()
    );
    let output = run_script(&script, &[]);
    assert_fails_with(&output, &["row 77777: column 'subject' is null"]);
    let confirmed = confirmed_in_error(&stderr(&output));
    assert_eq!(
        common::js::settled_at_least(&client, "HELD", confirmed).await,
        confirmed
    );
    // DataFusion's batches hold 8192 rows: nine were sent, none of the bad row's.
    assert_eq!(confirmed, 9 * 8192);
}

/// An out-of-range timestamp inside a struct fails its batch (the row is not known), in
/// JetStream mode with acks in flight: the error counts exactly what the stream holds.
#[tokio::test]
async fn an_out_of_range_nested_value_counts_exactly_what_the_stream_holds() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    common::js::create_stream(&client, "HELD", &["ok.>"], |_| {}).await;
    let script = format!(
        "SET datafusion.execution.target_partitions = 1;
         INSERT INTO out SELECT value AS id, concat('ok.', value % 8) AS subject, \
           named_struct('at', to_timestamp_seconds( \
             CASE WHEN value = 20000 THEN 9223372036854775807 ELSE value END)) AS detail \
         FROM generate_series(0, 29999) \
         WITH (connector = 'nats_sink', servers = '{}', subject_field = 'subject', \
               stream = 'HELD', msg_id_field = 'id');",
        server.url()
    );
    let output = run_script(&script, &[]);
    assert_fails_with(&output, &["column 'detail'", "out of range"]);
    let confirmed = confirmed_in_error(&stderr(&output));
    let held = common::js::read_all(&client, "HELD").await;
    assert_eq!(held.len() as u64, confirmed, "{}", stderr(&output));
    // Ids 0.. in order: the first two batches, none of the failing one.
    common::js::assert_each_id_once(&held, confirmed);
    assert_eq!(confirmed, 2 * 8192);
}
