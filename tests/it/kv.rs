//! `nats_kv` against real nats-servers: a changelog becomes the bucket's state, a watcher
//! sees each key's updates in row order, a server killed mid-run loses nothing, and bad
//! buckets, keys, ops and columns get errors that say what to do.

use crate::common;
use crate::common::running::Running;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv::{Config, Operation, Store};
use async_nats::jetstream::{self, stream::StorageType};
use common::engine::{check_summary, log_sink, run_insert};
use common::js::{create_stream, header, read_all};
use common::{assert_fails_with, inserted_rows, run_script, stderr, stdout, summary_count};
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type};
use futures::StreamExt;
use nats_testkit::NatsServer;
use streamsql::{Engine, Outcome};

/// The longest a statement may run before the test gives up on it.
const STATEMENT_LIMIT: Duration = Duration::from_secs(60);

/// Creates bucket `name` keeping `history` revisions per key, in a file store.
async fn create_bucket(server: &NatsServer, name: &str, history: i64) -> Store {
    let client = nats_testkit::connect(&server.url()).await;
    jetstream::new(client)
        .create_key_value(Config {
            bucket: name.into(),
            history,
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create bucket {name}: {e}"))
}

/// Column `name` of `batches` as text (whatever string type the plan chose).
fn texts(batches: &[RecordBatch], name: &str) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            let column = cast(b.column_by_name(name).unwrap(), &DataType::Utf8).unwrap();
            let column = column.as_string::<i32>();
            (0..column.len())
                .map(|i| column.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Column `name` of `batches` as integers.
fn numbers(batches: &[RecordBatch], name: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let column = cast(b.column_by_name(name).unwrap(), &DataType::Int64).unwrap();
            column.as_primitive::<Int64Type>().values().to_vec()
        })
        .collect()
}

/// 3000 changes over 40 keys: mostly puts, a delete every 11th row and a purge every
/// 13th; the last row of each key is a put for most keys, a delete or a purge for some.
const CHANGELOG: &str = "SET datafusion.execution.target_partitions = 1;
CREATE VIEW changes AS
SELECT value AS i,
       concat('user.', CAST((value * 7) % 40 AS VARCHAR)) AS k,
       CASE WHEN value % 11 = 0 THEN 'delete' WHEN value % 13 = 0 THEN 'purge' ELSE 'put' END AS op,
       value * 3 AS score
FROM generate_series(0, 2999);";

/// The bucket after the changelog holds, for each key, what its last change says, as SQL
/// computes it from the same rows: a put's value, or a delete or purge marker (a purge
/// alone in the key's history).
#[tokio::test]
async fn a_changelog_leaves_each_key_as_its_last_change_computed_by_sql() {
    let server = NatsServer::start();
    let kv = create_bucket(&server, "profiles", 10).await;
    let mut engine = Engine::new();
    let outcomes = tokio::time::timeout(
        STATEMENT_LIMIT,
        engine.execute(&format!(
            "{CHANGELOG}
             INSERT INTO profiles SELECT i, k, op, score FROM changes
             WITH (connector = 'nats_kv', servers = '{}', bucket = 'profiles',
                   key_field = 'k', op_field = 'op');
             SELECT k, last_value(op ORDER BY i) AS op, last_value(i ORDER BY i) AS i,
                    last_value(score ORDER BY i) AS score
             FROM changes GROUP BY k ORDER BY k;",
            server.url()
        )),
    )
    .await
    .expect("the statements finish")
    .expect("the statements succeed");
    let inserted = outcomes.iter().find_map(|o| match o {
        Outcome::Insert(summary) => Some(summary.rows),
        _ => None,
    });
    assert_eq!(inserted, Some(3000));
    let Some(Outcome::Query { batches, .. }) = outcomes.last() else {
        panic!("no query result: {outcomes:?}");
    };
    let (keys, ops) = (texts(batches, "k"), texts(batches, "op"));
    let (ids, scores) = (numbers(batches, "i"), numbers(batches, "score"));
    assert_eq!(keys.len(), 40);
    let last_ops: BTreeSet<&str> = ops.iter().map(String::as_str).collect();
    assert_eq!(last_ops, BTreeSet::from(["delete", "purge", "put"]));

    let mut expected_keys = BTreeSet::new();
    for (((key, op), id), score) in keys.iter().zip(&ops).zip(&ids).zip(&scores) {
        let entry = kv.entry(key).await.unwrap().expect("every key was written");
        match op.as_str() {
            "put" => {
                assert_eq!(entry.operation, Operation::Put, "{key}");
                let value = format!(r#"{{"i":{id},"score":{score}}}"#);
                assert_eq!(String::from_utf8_lossy(&entry.value), value, "{key}");
                expected_keys.insert(key.clone());
            }
            "delete" => {
                assert_eq!(entry.operation, Operation::Delete, "{key}");
                assert!(entry.value.is_empty(), "{key}");
            }
            _ => {
                assert_eq!(entry.operation, Operation::Purge, "{key}");
                let history: Vec<_> = kv.history(key).await.unwrap().collect().await;
                assert_eq!(history.len(), 1, "a purge drops the key's history: {key}");
            }
        }
    }
    // The bucket's keys are those whose last change is a put.
    let listed: BTreeSet<String> = kv.keys().await.unwrap().map(|k| k.unwrap()).collect().await;
    assert_eq!(listed, expected_keys);
}

/// A watcher that starts before the statement sees every update of each key, in the
/// order of the rows, though five keys share 300 rows (so a key is always in flight). The
/// bucket keeps every revision (60 a key, of at most 64), so a watcher that lags cannot
/// miss one.
#[tokio::test]
async fn a_watcher_sees_each_keys_updates_in_row_order() {
    const ROWS: i64 = 300;
    let server = NatsServer::start();
    let kv = create_bucket(&server, "scores", 64).await;
    let mut watch = kv.watch_all().await.unwrap();
    let watcher = tokio::spawn(async move {
        let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for _ in 0..ROWS {
            let entry = tokio::time::timeout(Duration::from_secs(30), watch.next())
                .await
                .expect("the updates arrive")
                .expect("the watch goes on")
                .unwrap();
            let update = match entry.operation {
                Operation::Put => String::from_utf8_lossy(&entry.value).into_owned(),
                other => format!("{other:?}"),
            };
            seen.entry(entry.key).or_default().push(update);
        }
        seen
    });

    let summary = run_insert(
        format!(
            "SET datafusion.execution.target_partitions = 1;
             INSERT INTO scores
             SELECT concat('player.', CAST(value % 5 AS VARCHAR)) AS k,
                    CASE WHEN value % 50 = 49 THEN 'delete' ELSE 'put' END AS op, value AS i
             FROM generate_series(0, {last})
             WITH (connector = 'nats_kv', servers = '{}', bucket = 'scores',
                   key_field = 'k', op_field = 'op');",
            server.url(),
            last = ROWS - 1
        ),
        STATEMENT_LIMIT,
    )
    .await;
    check_summary(&summary, ROWS as u64);

    let seen = watcher.await.unwrap();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..ROWS {
        let update = if i % 50 == 49 {
            "Delete".to_string()
        } else {
            format!(r#"{{"i":{i}}}"#)
        };
        expected
            .entry(format!("player.{}", i % 5))
            .or_default()
            .push(update);
    }
    assert_eq!(seen, expected);
}

/// A bucket that keeps filling up (it refuses new messages when full) while a helper
/// purges it: the rows refused for want of room are sent again once there is room, and
/// still no key's update is stored after a later one of that key (the plain JetStream
/// window, with several rows of a key in flight, would store the later row first when
/// room appeared between the two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_a_full_bucket_never_store_a_key_out_of_row_order() {
    log_sink();
    const ROWS: i64 = 3000;
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let js = jetstream::new(client);
    let kv = js
        .create_key_value(Config {
            bucket: "full".into(),
            history: 64,
            max_bytes: 8192,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut watch = kv.watch_all().await.unwrap();
    let watcher = tokio::spawn(async move {
        let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        while let Ok(Some(entry)) = tokio::time::timeout(Duration::from_secs(3), watch.next()).await
        {
            let entry = entry.unwrap();
            let id: serde_json::Value = serde_json::from_slice(&entry.value).unwrap();
            seen.entry(entry.key)
                .or_default()
                .push(id["i"].as_i64().unwrap());
        }
        seen
    });
    let purging = Arc::new(AtomicBool::new(true));
    let purger = tokio::spawn({
        let purging = purging.clone();
        async move {
            let stream = js.get_stream("KV_full").await.unwrap();
            while purging.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(30)).await;
                let _ = stream.purge().await;
            }
        }
    });

    let summary = run_insert(
        format!(
            "SET datafusion.execution.target_partitions = 1;
             INSERT INTO full SELECT concat('k.', CAST(value % 4 AS VARCHAR)) AS k, value AS i
             FROM generate_series(0, {last})
             WITH (connector = 'nats_kv', servers = '{}', bucket = 'full', key_field = 'k',
                   retry_timeout = '30s');",
            server.url(),
            last = ROWS - 1
        ),
        STATEMENT_LIMIT,
    )
    .await;
    purging.store(false, Ordering::SeqCst);
    purger.await.unwrap();
    let (retries, _) = check_summary(&summary, ROWS as u64);
    assert!(retries > 0, "the bucket never filled up: {summary:?}");
    let seen = watcher.await.unwrap();
    assert_eq!(seen.len(), 4, "{seen:?}");
    for (key, ids) in &seen {
        assert!(ids.is_sorted(), "{key}: updates out of row order: {ids:?}");
    }
}

/// A bucket that is full and stays full: without `retry_timeout` the sink waits for room
/// without end, and the progress line says so and how to end it; Ctrl-C then cancels the
/// statement after the grace period, and the summary gives the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bucket_says_the_wait_has_no_end_and_ctrl_c_ends_it() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    jetstream::new(client)
        .create_key_value(Config {
            bucket: "tiny".into(),
            history: 64,
            max_bytes: 1024,
            ..Default::default()
        })
        .await
        .unwrap();
    let script = format!(
        "INSERT INTO tiny SELECT concat('k.', CAST(value % 4 AS VARCHAR)) AS k, value AS i
         FROM generate_series(0, 499)
         WITH (connector = 'nats_kv', servers = '{}', bucket = 'tiny', key_field = 'k');",
        server.url()
    );
    let mut run = Running::start(&["--progress", "always", "--stop-grace", "1"], &script);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let line = loop {
        let line = run.wait_for_line("INSERT INTO tiny: ", Duration::from_secs(30));
        if line.contains("retrying: ") {
            break line;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never retrying: {line}"
        );
    };
    for part in [
        "retrying: key-value bucket 'tiny' or the server's storage is full",
        "raise the bucket's max_bytes or max_values",
        "no retry_timeout is set, so this goes on until there is room or the statement is stopped (Ctrl-C)",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
    run.send_interrupt();
    let (code, out, err) = run.wait_for_end();
    assert_eq!(code, Some(3), "a cancelled statement: {err}");
    assert!(
        out.contains("cancelled: not finished within the 1s grace period")
            && out.contains("(retrying: key-value bucket 'tiny'"),
        "{out}"
    );
}

/// A server killed (SIGKILL) and restarted twice during a run of 60 000 puts: the bucket's
/// stream holds every row, each key's revisions in row order (a row sent again after the
/// restart is stored again, never after a later row of its key), and each key ends at its
/// last row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_and_restarted_mid_run_loses_nothing() {
    log_sink();
    const ROWS: u64 = 60_000;
    const KEYS: u64 = 20_000;
    let server = NatsServer::builder().jetstream(true).start();
    let url = server.url();
    // Three rows per key, and room for the revisions a resend adds.
    create_bucket(&server, "ledger", 16).await;

    let running = Arc::new(AtomicBool::new(true));
    let killer = std::thread::spawn({
        let running = running.clone();
        move || {
            let mut server = server;
            let mut kills = 0;
            std::thread::sleep(Duration::from_millis(800));
            while kills < 2 && running.load(Ordering::SeqCst) {
                server.kill();
                kills += 1;
                std::thread::sleep(Duration::from_millis(500));
                server.restart();
                std::thread::sleep(Duration::from_millis(800));
            }
            (server, kills)
        }
    });
    let summary = run_insert(
        format!(
            "SET datafusion.execution.target_partitions = 1;
             CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen',
               rows_per_second = '15000', row_limit = '{ROWS}');
             INSERT INTO ledger SELECT concat('acct.', CAST(id % {KEYS} AS VARCHAR)) AS k, id
             FROM gen
             WITH (connector = 'nats_kv', servers = '{url}', bucket = 'ledger', key_field = 'k',
                   retry_timeout = '30s', connect_timeout = '1s');"
        ),
        STATEMENT_LIMIT,
    )
    .await;
    running.store(false, Ordering::SeqCst);
    let (server, kills) = killer.join().expect("the killer thread");
    let (retries, _) = check_summary(&summary, ROWS);
    assert!(
        kills >= 1 && retries > 0,
        "the kills missed the run: {summary:?}"
    );

    let client = nats_testkit::connect(&server.url()).await;
    let mut stored: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for message in read_all(&client, "KV_ledger").await {
        let id = nats_testkit::payload_json(&message)["id"].as_u64().unwrap();
        stored
            .entry(message.subject.to_string())
            .or_default()
            .push(id);
    }
    assert_eq!(stored.len() as u64, KEYS);
    let mut every: BTreeSet<u64> = BTreeSet::new();
    for (subject, ids) in &stored {
        assert!(
            ids.is_sorted(),
            "{subject}: revisions out of row order: {ids:?}"
        );
        every.extend(ids);
    }
    assert_eq!(every.len() as u64, ROWS, "every row was stored");
    let kv = jetstream::new(client)
        .get_key_value("ledger")
        .await
        .unwrap();
    for key in [0, 1, KEYS / 2, KEYS - 1] {
        let value = kv.get(format!("acct.{key}")).await.unwrap().unwrap();
        let id = 2 * KEYS + key;
        assert_eq!(String::from_utf8_lossy(&value), format!(r#"{{"id":{id}}}"#));
    }
}

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

/// Dead letters of a delete and a purge carry their op (`KV-Operation`, as the bucket
/// would have had it) and key, so a replay can tell them from puts of an empty value; the
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
                get("KV-Operation"),
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
