//! Headers from columns, per-message TTL and raw payloads (issue 14), end to end: what a
//! real subscriber or JetStream consumer receives, what expires, and what each bad value
//! or option does under `on_error`.

use crate::common;

use std::time::Duration;

use common::js::{create_stream, header, read_all, stored, wait_until_stored};
use common::{assert_fails_with, inserted_rows, run_script, stderr, stdout, summary_count, text};
use nats_testkit::{Collector, NatsServer};

fn insert(url: &str, select: &str, options: &str) -> std::process::Output {
    run_script(
        &format!(
            "INSERT INTO out {select} WITH (connector = 'nats_sink', servers = '{url}', {options});"
        ),
        &[],
    )
}

fn headers_of(message: &async_nats::Message) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = message
        .headers
        .iter()
        .flat_map(|h| h.iter())
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| (name.to_string(), v.as_str().to_string()))
        })
        .collect();
    all.sort();
    all
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = list
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    all.sort();
    all
}

/// Three rows: a string, an integer, a boolean and a timestamp header column (row 2 has
/// nulls), a map column, and a payload column.
/// (`VALUES` with another column count than the sink's query cannot be used inside an
/// INSERT here: DataFusion 55 plans it with the sink's columns.)
const TYPED: &str = "SELECT trace_id, tenant, vip, at, MAP {'Region': region, 'Shard': shard} AS h, amount FROM ( \
       SELECT 't-1' AS trace_id, 7 AS tenant, true AS vip, TIMESTAMP '2024-05-01 12:30:00' AS at, \
              'eu' AS region, '3' AS shard, 1.5 AS amount \
       UNION ALL SELECT NULL, 8, false, NULL, 'us', NULL, 2.5 \
       UNION ALL SELECT 't-3', 9, true, TIMESTAMP '2024-05-01 12:30:01', 'eu', '1', 3.5) \
     ORDER BY tenant";

#[tokio::test]
async fn header_columns_a_map_and_static_headers_reach_a_subscriber() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut received = Collector::subscribe(&client, "events").await;

    let output = insert(
        &server.url(),
        TYPED,
        "subject = 'events', header_fields = 'trace_id,tenant,vip,at', headers_field = 'h', \
         headers = '{\"Source\":\"streamsql\"}'",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(inserted_rows(&stdout(&output), "out"), 3);

    let messages = received.collect(3, Duration::from_secs(5)).await;
    assert_eq!(
        headers_of(&messages[0]),
        pairs(&[
            ("Source", "streamsql"),
            ("trace_id", "t-1"),
            ("tenant", "7"),
            ("vip", "true"),
            ("at", "2024-05-01T12:30:00"),
            ("Region", "eu"),
            ("Shard", "3"),
        ])
    );
    // Nulls send no header.
    assert_eq!(
        headers_of(&messages[1]),
        pairs(&[
            ("Source", "streamsql"),
            ("tenant", "8"),
            ("vip", "false"),
            ("Region", "us"),
        ])
    );
    // Header columns leave the payload.
    assert_eq!(text(&messages[0]), r#"{"amount":1.5}"#);

    // ... unless payload_include_routing keeps them.
    let output = insert(
        &server.url(),
        TYPED,
        "subject = 'events', header_fields = 'tenant', payload_include_routing = 'true'",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let messages = received.collect(3, Duration::from_secs(5)).await;
    assert_eq!(headers_of(&messages[2]), pairs(&[("tenant", "9")]));
    let payload = nats_testkit::payload_json(&messages[2]);
    assert_eq!(payload["tenant"], 9);
    assert_eq!(payload["trace_id"], "t-3");
}

/// Row 2's trace id holds a line break (a header injection attempt): fail names the row
/// and column and sends nothing after row 1; skip counts it; dead_letter sends it with
/// the reason.
#[tokio::test]
async fn a_value_a_header_cannot_carry_follows_on_error() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut received = Collector::subscribe(&client, "events").await;
    let mut dead = Collector::subscribe(&client, "dlq.events").await;
    let select = "SELECT id, CASE WHEN id = 2 THEN concat('t-2', chr(13), chr(10), 'X-Injected: 1') \
                  ELSE concat('t-', CAST(id AS VARCHAR)) END AS trace_id \
                  FROM (SELECT value AS id FROM generate_series(1, 3))";
    let base = "subject = 'events', header_fields = 'trace_id'";

    let failed = insert(&server.url(), select, base);
    assert_fails_with(
        &failed,
        &[
            "row 2:",
            "column 'trace_id' (header_fields)",
            "line break",
            "0 earlier rows were published",
        ],
    );
    // The batch is checked before any of it is sent.
    let before_skip = received
        .collect_until_idle(Duration::from_millis(300))
        .await;
    assert_eq!(before_skip.len(), 0);

    let skipped = insert(&server.url(), select, &format!("{base}, on_error = 'skip'"));
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    assert_eq!(summary_count(&stdout(&skipped), "out", "skipped"), Some(1));
    let sent = received.collect(2, Duration::from_secs(5)).await;
    let ids: Vec<String> = sent
        .iter()
        .map(|m| {
            m.headers
                .as_ref()
                .unwrap()
                .get("trace_id")
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["t-1", "t-3"]);
    assert!(
        sent.iter()
            .all(|m| m.headers.as_ref().unwrap().get("X-Injected").is_none())
    );

    let lettered = insert(
        &server.url(),
        select,
        &format!("{base}, on_error = 'dead_letter', dead_letter_subject = 'dlq.events'"),
    );
    assert!(lettered.status.success(), "{}", stderr(&lettered));
    let letter = &dead.collect(1, Duration::from_secs(5)).await[0];
    let reason = letter
        .headers
        .as_ref()
        .unwrap()
        .get(connector_nats::DEAD_LETTER_REASON)
        .unwrap()
        .to_string();
    assert!(
        reason.contains("column 'trace_id' (header_fields)"),
        "{reason}"
    );
    assert_eq!(text(letter), r#"{"id":2}"#);
}

#[tokio::test]
async fn bad_header_options_are_refused_at_creation_saying_what_to_do() {
    let server = NatsServer::start();
    let url = server.url();
    let missing = insert(
        &url,
        TYPED,
        "subject = 'e', header_fields = 'trace_id,nope'",
    );
    assert_fails_with(
        &missing,
        &[
            "option 'header_fields' names column 'nope'",
            "columns: trace_id",
        ],
    );
    let float = insert(&url, TYPED, "subject = 'e', header_fields = 'amount'");
    assert_fails_with(
        &float,
        &["column 'amount' has type Float64", "CAST it to VARCHAR"],
    );
    let clash = insert(
        &url,
        TYPED,
        "subject = 'e', header_fields = 'tenant', headers = '{\"tenant\":\"x\"}'",
    );
    assert_fails_with(&clash, &["option 'header_fields'", "which 'headers' sets"]);
    let not_a_map = insert(&url, TYPED, "subject = 'e', headers_field = 'tenant'");
    assert_fails_with(
        &not_a_map,
        &["option 'headers_field'", "MAP<VARCHAR, VARCHAR>"],
    );
}

/// Rows whose TTL is 1 second are removed by the server; the others stay.
#[tokio::test]
async fn messages_with_a_ttl_expire_from_the_stream() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "EPHEMERAL", &["eph.>"], |c| {
        c.allow_message_ttl = true
    })
    .await;
    let select = "SELECT value AS id, concat('eph.', CAST(value AS VARCHAR)) AS subject, \
                  CASE WHEN value % 2 = 0 THEN '1s' WHEN value = 5 THEN NULL ELSE '1h' END AS ttl \
                  FROM generate_series(1, 6)";
    let output = insert(
        &server.url(),
        select,
        "stream = 'EPHEMERAL', subject_field = 'subject', ttl_field = 'ttl'",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let messages = read_all(&client, "EPHEMERAL").await;
    let ttls: Vec<Option<String>> = messages.iter().map(|m| header(m, "Nats-TTL")).collect();
    let ttls: Vec<Option<&str>> = ttls.iter().map(Option::as_deref).collect();
    assert_eq!(
        ttls,
        [
            Some("3600"),
            Some("1"),
            Some("3600"),
            Some("1"),
            None,
            Some("1")
        ]
    );
    // The TTL column leaves the payload.
    assert_eq!(String::from_utf8_lossy(&messages[0].payload), r#"{"id":1}"#);

    let left = wait_until_stored(&client, "EPHEMERAL", 3, Duration::from_secs(15)).await;
    let ids: Vec<u64> = read_all(&client, "EPHEMERAL")
        .await
        .iter()
        .map(|m| nats_testkit::payload_json(m)["id"].as_u64().unwrap())
        .collect();
    assert_eq!((left, ids), (3, vec![1, 3, 5]));

    // The same TTL for every row.
    let output = insert(
        &server.url(),
        "SELECT 7 AS id",
        "stream = 'EPHEMERAL', subject = 'eph.7', ttl = '1s'",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stored(&client, "EPHEMERAL").await, 4);
    assert_eq!(
        wait_until_stored(&client, "EPHEMERAL", 3, Duration::from_secs(15)).await,
        3
    );
}

#[tokio::test]
async fn a_ttl_needs_a_stream_that_allows_it_and_bad_values_follow_on_error() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "PLAIN", &["plain.>"], |_| {}).await;
    create_stream(&client, "TTLS", &["ttls.>"], |c| c.allow_message_ttl = true).await;

    let refused = insert(
        &server.url(),
        "SELECT 1 AS id",
        "stream = 'PLAIN', subject = 'plain.1', ttl = '1h'",
    );
    assert_fails_with(
        &refused,
        &[
            "stream 'PLAIN'",
            "which the stream does not allow",
            "nats stream edit PLAIN --allow-msg-ttl",
            "allow_msg_ttl",
        ],
    );
    assert_eq!(stored(&client, "PLAIN").await, 0);

    let select = "SELECT value AS id, CASE WHEN value = 2 THEN 'soon' \
                  WHEN value = 3 THEN '-5' ELSE '1h' END AS ttl FROM generate_series(1, 4)";
    let options = "stream = 'TTLS', subject = 'ttls.x', ttl_field = 'ttl'";
    let failed = insert(&server.url(), select, options);
    assert_fails_with(
        &failed,
        &[
            "row 2:",
            "column 'ttl' (ttl_field)",
            "\"soon\" is not a TTL",
        ],
    );
    let skipped = insert(
        &server.url(),
        select,
        &format!("{options}, on_error = 'skip'"),
    );
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    assert_eq!(summary_count(&stdout(&skipped), "out", "skipped"), Some(2));
    let ids: Vec<u64> = read_all(&client, "TTLS")
        .await
        .iter()
        .map(|m| nats_testkit::payload_json(m)["id"].as_u64().unwrap())
        .collect();
    // Nothing of the failed run (its batch was checked before any of it was sent), then
    // rows 1 and 4 of the skipping run.
    assert_eq!(ids, [1, 4]);
}

/// A stored message's subject, payload, `Nats-Msg-Id` and `kind` header.
type StoredRaw = (String, Vec<u8>, Option<String>, Option<String>);

/// Raw payloads arrive byte for byte; routing, message id and header columns still work.
#[tokio::test]
async fn raw_payloads_arrive_unchanged_in_a_stream() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "RAW", &["raw.>"], |_| {}).await;
    let select = "SELECT concat('raw.', kind) AS subject, id, kind, body FROM ( \
                  SELECT 'a' AS id, 'bin' AS kind, X'00FF0A80' AS body \
                  UNION ALL SELECT 'b', 'text', CAST('héllo, {\"not\": json}' AS BYTEA) \
                  UNION ALL SELECT 'c', 'empty', X'') ORDER BY id";
    let output = insert(
        &server.url(),
        select,
        "stream = 'RAW', subject_field = 'subject', format = 'raw', payload_field = 'body', \
         msg_id_field = 'id', header_fields = 'kind'",
    );
    assert!(output.status.success(), "{}", stderr(&output));
    let messages = read_all(&client, "RAW").await;
    let got: Vec<StoredRaw> = messages
        .iter()
        .map(|m| {
            (
                m.subject.to_string(),
                m.payload.to_vec(),
                header(m, "Nats-Msg-Id"),
                header(m, "kind"),
            )
        })
        .collect();
    let row = |s: &str, p: &[u8], id: &str, kind: &str| {
        (
            s.to_string(),
            p.to_vec(),
            Some(id.into()),
            Some(kind.into()),
        )
    };
    assert_eq!(
        got,
        [
            row("raw.bin", &[0, 0xff, b'\n', 0x80], "a", "bin"),
            row("raw.text", "héllo, {\"not\": json}".as_bytes(), "b", "text"),
            row("raw.empty", b"", "c", "empty"),
        ]
    );
}

#[tokio::test]
async fn raw_null_payloads_follow_on_error_and_bad_raw_options_are_refused() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut received = Collector::subscribe(&client, "raw").await;
    let select = "SELECT value AS id, CASE WHEN value = 2 THEN NULL \
                  ELSE concat('line ', CAST(value AS VARCHAR)) END AS body FROM generate_series(1, 3)";
    let options = "subject = 'raw', format = 'raw', payload_field = 'body'";
    let failed = insert(&server.url(), select, options);
    assert_fails_with(
        &failed,
        &["row 2:", "column 'body' (payload_field) is null"],
    );
    let skipped = insert(
        &server.url(),
        select,
        &format!("{options}, on_error = 'skip'"),
    );
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    let bodies: Vec<String> = received
        .collect(2, Duration::from_secs(5))
        .await
        .iter()
        .map(text)
        .collect();
    // Nothing of the failed run: its batch was checked before any of it was sent.
    assert_eq!(bodies, ["line 1", "line 3"]);

    let no_field = insert(&server.url(), select, "subject = 'raw', format = 'raw'");
    assert_fails_with(
        &no_field,
        &["option 'payload_field': missing", "format = 'raw'"],
    );
    let wrong_type = insert(
        &server.url(),
        select,
        "subject = 'raw', format = 'raw', payload_field = 'id'",
    );
    assert_fails_with(
        &wrong_type,
        &["option 'payload_field'", "column 'id' has type Int64"],
    );
}
