//! `nats_kv` against real nats-servers: a changelog becomes the bucket's state, a watcher
//! sees each key's updates in row order, a full bucket and a server killed mid-run lose
//! nothing and keep each key's order; `rows` has what single rows do (ops, bad keys,
//! dead letters) and the ways to declare the table.

mod rows;

use crate::common;
use crate::common::running::Running;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv::{Config, Operation, Store};
use async_nats::jetstream::{self, stream::StorageType};
use common::engine::{check_summary, log_sink, run_insert};
use common::js::read_all;
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

/// Creates bucket `name` that refuses new revisions once it holds `max_bytes` (64 kept a
/// key).
async fn create_small_bucket(server: &NatsServer, name: &str, max_bytes: i64) -> Store {
    let client = nats_testkit::connect(&server.url()).await;
    jetstream::new(client)
        .create_key_value(Config {
            bucket: name.into(),
            history: 64,
            max_bytes,
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
    let kv = create_small_bucket(&server, "full", 8192).await;
    let js = jetstream::new(nats_testkit::connect(&server.url()).await);
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
    create_small_bucket(&server, "tiny", 1024).await;
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
        "no retry_timeout is set, so this goes on until there is room or the statement is stopped",
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

/// A server killed (SIGKILL) and restarted twice during a run of 60 000 puts over 50
/// keys, each updated 1200 times. The kills come while rows flow (once a subscriber has
/// seen a quarter, then half of them), when rows of every key wait for their acks, some
/// stored already. The bucket's stream holds every row, each key's revisions in row
/// order, and each key ends at its last row. Few keys, so that the rows stored but not
/// acknowledged at a kill hold several of one key: resent, they would land after that
/// key's later rows, had the sink more than one row of a key in flight (without the
/// one-per-key rule this test failed 5 runs in 5; with 200 keys, half the runs passed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_and_restarted_mid_run_loses_nothing() {
    log_sink();
    const ROWS: u64 = 60_000;
    const KEYS: u64 = 50;
    let server = NatsServer::builder().jetstream(true).start();
    let url = server.url();
    create_bucket(&server, "ledger", 64).await;
    // Every revision kept (a bucket keeps at most 64 a key), so that each row can be found
    // and each key's order checked; to the sink it is a bucket still.
    let client = nats_testkit::connect(&url).await;
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream("KV_ledger").await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.max_messages_per_subject = ROWS as i64;
    js.update_stream(config).await.unwrap();

    let mut flowing = client.subscribe("$KV.ledger.>").await.unwrap();
    let killer = tokio::spawn(async move {
        let (mut server, mut seen, mut kills) = (server, 0, 0);
        for at in [ROWS / 4, ROWS / 2] {
            while seen < at {
                match tokio::time::timeout(Duration::from_secs(10), flowing.next()).await {
                    Ok(Some(_)) => seen += 1,
                    _ => return (server, kills),
                }
            }
            server = tokio::task::spawn_blocking(move || {
                server.kill();
                std::thread::sleep(Duration::from_millis(500));
                server.restart();
                server
            })
            .await
            .unwrap();
            kills += 1;
        }
        (server, kills)
    });
    let summary = run_insert(
        format!(
            "SET datafusion.execution.target_partitions = 1;
             CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen',
               rows_per_second = '50000', row_limit = '{ROWS}');
             INSERT INTO ledger SELECT concat('acct.', CAST(id % {KEYS} AS VARCHAR)) AS k, id
             FROM gen
             WITH (connector = 'nats_kv', servers = '{url}', bucket = 'ledger', key_field = 'k',
                   retry_timeout = '30s', connect_timeout = '1s');"
        ),
        STATEMENT_LIMIT,
    )
    .await;
    let (server, kills) = killer.await.expect("the killer task");
    let (retries, _) = check_summary(&summary, ROWS);
    assert!(
        kills == 2 && retries > 0,
        "the kills missed the run ({kills} kills): {summary:?}"
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
    let kv = jetstream::new(client)
        .get_key_value("ledger")
        .await
        .unwrap();
    for key in 0..KEYS {
        let subject = format!("$KV.ledger.acct.{key}");
        let ids = &stored[&subject];
        assert!(
            ids.is_sorted(),
            "{subject}: revisions out of row order: {ids:?}"
        );
        let mut once = ids.clone();
        once.dedup();
        let rows: Vec<u64> = (key..ROWS).step_by(KEYS as usize).collect();
        assert_eq!(once, rows, "{subject}: every row, once or resent");
        let last = ROWS - KEYS + key;
        let value = kv.get(format!("acct.{key}")).await.unwrap().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&value),
            format!(r#"{{"id":{last}}}"#),
            "{subject} ends at its last row"
        );
    }
}
