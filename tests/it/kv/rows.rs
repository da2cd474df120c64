//! `nats_kv` row by row, against real nats-servers: op names, bad buckets, keys, ops and
//! columns get errors that say what to do, dead letters say what their row was meant to
//! do, and the table can be declared in the engine or in a plain DataFusion session.

use async_nats::jetstream::kv::Operation;
use nats_testkit::NatsServer;
use streamsql::{Engine, Outcome};

use super::{create_bucket, texts};
use crate::common::js::{create_stream, header, read_all};
use crate::common::{assert_fails_with, inserted_rows, run_script, stderr, stdout, summary_count};

/// `INSERT ... SELECT <select> WITH (nats_kv into bucket `b` of `server`, <options>)`,
/// run by the binary.
fn insert(server: &NatsServer, select: &str, options: &str) -> std::process::Output {
    run_script(
        &format!(
            "INSERT INTO b {select} WITH (connector = 'nats_kv', servers = '{}', bucket = 'b', \
             key_field = 'k'{options});",
            server.url()
        ),
        &[],
    )
}

#[tokio::test]
async fn a_missing_bucket_says_how_to_create_it() {
    let server = NatsServer::start();
    let output = insert(&server, "SELECT 'a' AS k, 1 AS v", "");
    assert_fails_with(
        &output,
        &["key-value bucket 'b' does not exist", "`nats kv add b`"],
    );
}

/// A key the rules refuse names its row and column; under `on_error = 'fail'` nothing of
/// its batch is written, under `'skip'` every other row is.
#[tokio::test]
async fn a_bad_key_names_the_row_and_column_and_follows_on_error() {
    let server = NatsServer::start();
    let kv = create_bucket(&server, "b", 1).await;
    let rows = "SELECT * FROM (VALUES ('a', 1), ('bad key', 2), ('c', 3)) AS t(k, v)";

    let failed = insert(&server, rows, "");
    assert_fails_with(
        &failed,
        &[
            "row 2",
            "column 'k' (key_field) holds \"bad key\", which is not a valid key",
            "0 earlier rows were published and confirmed",
        ],
    );
    assert!(kv.get("a").await.unwrap().is_none());

    let skipped = insert(&server, rows, ", on_error = 'skip'");
    assert!(skipped.status.success(), "stderr:\n{}", stderr(&skipped));
    assert_eq!(inserted_rows(&stdout(&skipped), "b"), 2);
    assert_eq!(summary_count(&stdout(&skipped), "b", "skipped"), Some(1));
    let value = kv
        .get("c")
        .await
        .unwrap()
        .expect("the row after the bad one");
    assert_eq!(&value[..], br#"{"v":3}"#);
    assert!(kv.get("a").await.unwrap().is_some());

    // Dead-lettered: the row's value goes to the dead-letter stream, with the reason.
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "DLQ", &["kv_dlq.>"], |_| {}).await;
    let dead_lettered = insert(
        &server,
        rows,
        ", on_error = 'dead_letter', dead_letter_subject = 'kv_dlq.b'",
    );
    assert!(
        dead_lettered.status.success(),
        "stderr:\n{}",
        stderr(&dead_lettered)
    );
    let letters = read_all(&client, "DLQ").await;
    assert_eq!(letters.len(), 1);
    assert_eq!(&letters[0].payload[..], br#"{"v":2}"#);
    let reason = header(&letters[0], "StreamSQL-Error").unwrap_or_default();
    assert!(reason.contains("not a valid key"), "{reason}");
}

/// Dead letters of a delete and a purge carry their op (`StreamSQL-KV-Operation`: DEL or
/// PURGE, as the bucket's `KV-Operation` would have said) and key, so a replay can tell them from puts of an empty value; the
/// dead-letter stream, which allows no rollups, keeps both.
#[tokio::test]
async fn dead_letters_of_deletes_and_purges_carry_their_op_and_key() {
    let server = NatsServer::start();
    let kv = create_bucket(&server, "b", 5).await;
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "DLQ", &["kv_dlq.>"], |_| {}).await;
    let output = insert(
        &server,
        "SELECT * FROM (VALUES ('a', 'put', 1), ('bad key', 'delete', 2), \
         ('b*', 'Purge', 3), ('a', 'del', 4)) AS t(k, op, v)",
        ", op_field = 'op', on_error = 'dead_letter', dead_letter_subject = 'kv_dlq.b'",
    );
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    let letters = read_all(&client, "DLQ").await;
    let seen: Vec<_> = letters
        .iter()
        .map(|letter| {
            let get = |name| header(letter, name);
            (
                get("StreamSQL-Row"),
                get("StreamSQL-Key"),
                get("StreamSQL-KV-Operation"),
                get("Nats-Rollup"),
                letter.payload.is_empty(),
            )
        })
        .collect();
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        seen,
        [
            (some("2"), some("bad key"), some("DEL"), None, true),
            (some("3"), some("b*"), some("PURGE"), None, true),
        ]
    );
    let a = kv.entry("a").await.unwrap().expect("a was written");
    assert_eq!(
        a.operation,
        Operation::Delete,
        "the rows around them went on"
    );
}

#[tokio::test]
async fn a_bad_op_or_a_missing_key_column_is_named() {
    let server = NatsServer::start();
    let kv = create_bucket(&server, "b", 1).await;
    let bad_op = insert(
        &server,
        "SELECT * FROM (VALUES ('a', 'put', 1), ('a', 'upsert', 2)) AS t(k, op, v)",
        ", op_field = 'op'",
    );
    assert_fails_with(
        &bad_op,
        &[
            "row 2",
            "column 'op' (op_field) holds \"upsert\"",
            "'put', 'delete' (or 'del') or 'purge', in any letter case",
        ],
    );
    assert!(
        kv.get("a").await.unwrap().is_none(),
        "nothing of the batch is sent"
    );

    let no_column = insert(&server, "SELECT 'a' AS key, 1 AS v", "");
    assert_fails_with(
        &no_column,
        &["option 'key_field' names column 'k'", "columns: key, v"],
    );
}

/// Op names in any letter case, and `del` (the word of NATS's own `KV-Operation` header),
/// do what they name in the bucket.
#[tokio::test]
async fn op_names_in_any_case_and_del_reach_the_bucket() {
    let server = NatsServer::start();
    let kv = create_bucket(&server, "b", 5).await;
    let output = insert(
        &server,
        "SELECT * FROM (VALUES ('a', 'PUT', 1), ('b', 'Put', 2), ('c', 'put', 3), \
         ('a', 'DEL', 4), ('b', 'del', 5), ('c', 'Purge', 6), ('d', 'pUt', 7)) AS t(k, op, v)",
        ", op_field = 'op'",
    );
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    assert_eq!(inserted_rows(&stdout(&output), "b"), 7);
    for (key, operation) in [
        ("a", Operation::Delete),
        ("b", Operation::Delete),
        ("c", Operation::Purge),
        ("d", Operation::Put),
    ] {
        let entry = kv.entry(key).await.unwrap().expect("every key was written");
        assert_eq!(entry.operation, operation, "{key}");
    }
    assert_eq!(&kv.get("d").await.unwrap().unwrap()[..], br#"{"v":7}"#);
}

/// A delete or purge sends no value, so a value column it does not use is not checked: an
/// out-of-range timestamp (top level or nested) in such a row deletes or purges the key,
/// where in a put's row it is refused, naming the row and column.
#[tokio::test]
async fn a_delete_or_purge_is_not_refused_for_values_it_does_not_send() {
    let server = NatsServer::start();
    let kv = create_bucket(&server, "b", 5).await;
    let far = i64::MAX;
    let output = insert(
        &server,
        &format!(
            "SELECT CASE WHEN value <= 2 THEN 'a' ELSE 'b' END AS k, \
             CASE value WHEN 2 THEN 'delete' WHEN 4 THEN 'purge' ELSE 'put' END AS op, \
             to_timestamp_seconds(CASE WHEN value % 2 = 0 THEN {far} ELSE value END) AS at, \
             named_struct('at', to_timestamp_seconds( \
               CASE WHEN value % 2 = 0 THEN {far} ELSE value END)) AS detail \
             FROM generate_series(1, 4) ORDER BY value"
        ),
        ", op_field = 'op'",
    );
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    assert_eq!(inserted_rows(&stdout(&output), "b"), 4);
    let a = kv.entry("a").await.unwrap().expect("a was written");
    assert_eq!(a.operation, Operation::Delete);
    let b = kv.entry("b").await.unwrap().expect("b was written");
    assert_eq!(b.operation, Operation::Purge);

    let put = insert(
        &server,
        &format!(
            "SELECT 'c' AS k, 'put' AS op, \
             to_timestamp_seconds(CASE WHEN value = 2 THEN {far} ELSE value END) AS at \
             FROM generate_series(1, 2) ORDER BY value"
        ),
        ", op_field = 'op'",
    );
    assert_fails_with(&put, &["row 2", "column 'at'", "out of range"]);
}

/// The plain DataFusion form: `STORED AS NATS_KV` in a session that registered the plugin.
#[tokio::test]
async fn stored_as_nats_kv_in_a_plain_datafusion_session() {
    let server = NatsServer::start();
    let kv = create_bucket(&server, "plain", 1).await;
    let ctx = datafusion::prelude::SessionContext::new();
    connector_nats::register(&ctx);
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE out (k VARCHAR, op VARCHAR, v BIGINT) STORED AS NATS_KV \
         LOCATION '{}' OPTIONS ('bucket' 'plain', 'key_field' 'k', 'op_field' 'op')",
        server.url()
    ))
    .await
    .unwrap();
    ctx.sql("INSERT INTO out VALUES ('x', 'put', 1), ('y', 'put', 2), ('x', 'delete', 3)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let x = kv.entry("x").await.unwrap().expect("x was written");
    assert_eq!(x.operation, Operation::Delete);
    assert_eq!(&kv.get("y").await.unwrap().unwrap()[..], br#"{"v":2}"#);
}

/// The declared form: a connection made for `nats_sink` serves a `nats_kv` table, whose
/// EXPLAIN shows the bucket and the delivery, and INSERT writes into the bucket.
#[tokio::test]
async fn a_declared_table_on_a_shared_connection() {
    let server = NatsServer::start();
    let kv = create_bucket(&server, "declared", 1).await;
    let mut engine = Engine::new();
    let outcomes = engine
        .execute(&format!(
            "CREATE CONNECTION c FROM nats_sink WITH (servers = '{}');
             CREATE TABLE prefs (user_id BIGINT, theme VARCHAR)
             WITH (connector = 'nats_kv', connection = 'c', bucket = 'declared',
                   key_field = 'user_id');
             EXPLAIN INSERT INTO prefs VALUES (7, 'dark');
             INSERT INTO prefs VALUES (7, 'dark'), (8, 'light');",
            server.url()
        ))
        .await
        .unwrap();
    let plan = outcomes
        .iter()
        .find_map(|o| match o {
            Outcome::Query { batches, .. } => Some(texts(batches, "plan").join("\n")),
            _ => None,
        })
        .expect("the EXPLAIN");
    assert!(
        plan.contains("delivery=[kv at_least_once, in key order]")
            && plan.contains("bucket=declared"),
        "{plan}"
    );
    assert_eq!(
        &kv.get("7").await.unwrap().unwrap()[..],
        br#"{"theme":"dark"}"#
    );
    assert_eq!(
        &kv.get("8").await.unwrap().unwrap()[..],
        br#"{"theme":"light"}"#
    );
}
