//! Engine tests of `[EXPLAIN] INSERT ... WITH` sinks (which live for their statement
//! only), of `WITH (...)` table hints (refused), and of what the engine logs.

use std::io::Write;
use std::sync::{Arc, Mutex};

use super::tests::{engine, rows_in, table};
use super::*;
use crate::error::EngineError;

#[tokio::test]
async fn insert_with_sink_is_gone_after_its_statement() {
    let (mut engine, seen) = engine();
    let outcomes = engine
        .execute("INSERT INTO out SELECT 1 AS x WITH (connector = 'rec')")
        .await
        .unwrap();
    assert!(matches!(&outcomes[0], Outcome::Insert(s) if s.rows == 1));
    assert_eq!(rows_in(&table(&seen, 0)).await, 1);
    assert!(!engine.context().table_exist("out").unwrap());
    assert!(engine.connector_tables.is_empty());
}

#[tokio::test]
async fn insert_with_sink_is_gone_after_a_failure_too() {
    let (mut engine, seen) = engine();
    // Planned (the sink is registered), then fails.
    let err = engine
        .execute("INSERT INTO out SELECT CAST('x' AS INT) AS x WITH (connector = 'rec')")
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::DataFusion { .. }), "{err}");
    assert_eq!(seen.lock().unwrap().len(), 1, "the sink was created");
    assert!(!engine.context().table_exist("out").unwrap());
    // The name is free again.
    engine
        .execute("INSERT INTO out SELECT 1 AS x WITH (connector = 'rec')")
        .await
        .unwrap();
}

#[tokio::test]
async fn insert_with_refuses_a_declared_connector_table() {
    let (mut engine, seen) = engine();
    engine
        .execute("CREATE TABLE t (x BIGINT) WITH (connector = 'rec', subject = 'a')")
        .await
        .unwrap();
    let declared = engine.context().table_provider("t").await.unwrap();
    let err = engine
        .execute("INSERT INTO t SELECT 1 AS x WITH (connector = 'rec', subject = 'b')")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "statement 1 (line 1): table 't' was declared with CREATE TABLE ... WITH; INSERT INTO \
         it without WITH, or use another name"
    );
    // Still the declared table, and no second sink was made.
    let current = engine.context().table_provider("t").await.unwrap();
    assert!(Arc::ptr_eq(&declared, &current));
    assert_eq!(seen.lock().unwrap().len(), 1);
    // Inserting into it without WITH works and names its connector.
    let outcomes = engine.execute("INSERT INTO t SELECT 1").await.unwrap();
    assert!(matches!(&outcomes[0], Outcome::Insert(s) if s.connector.as_deref() == Some("rec")));
}

#[tokio::test]
async fn explain_insert_with_creates_the_sink_and_publishes_nothing() {
    let (mut engine, seen) = engine();
    let outcomes = engine
        .execute(
            "EXPLAIN INSERT INTO out SELECT 1 AS x, 'y' AS s WITH (connector = 'rec', subject = 'a')",
        )
        .await
        .unwrap();
    let Outcome::Query { batches, .. } = &outcomes[0] else {
        panic!("not a query: {:?}", outcomes[0]);
    };
    let plan = datafusion::arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string();
    assert!(plan.contains("Dml: op=[Insert Into] table=[out]"), "{plan}");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1);
        // Exactly the sink the INSERT would get.
        assert_eq!(seen[0].0, "out");
        assert_eq!(seen[0].2, super::tests::options(&[("subject", "a")]));
        let fields: Vec<_> = seen[0].1.fields().iter().map(|f| f.is_nullable()).collect();
        assert_eq!(fields, [true, true]);
    }
    assert_eq!(
        rows_in(&table(&seen, 0)).await,
        0,
        "plain EXPLAIN writes nothing"
    );
    assert!(!engine.context().table_exist("out").unwrap());
}

#[tokio::test]
async fn explain_analyze_insert_with_runs_the_insert() {
    let (mut engine, seen) = engine();
    let outcomes = engine
        .execute(
            "EXPLAIN ANALYZE VERBOSE INSERT INTO out SELECT * FROM (VALUES (1), (2)) v(x)
             WITH (connector = 'rec')",
        )
        .await
        .unwrap();
    assert!(matches!(outcomes[0], Outcome::Query { .. }));
    assert_eq!(rows_in(&table(&seen, 0)).await, 2);
    assert!(!engine.context().table_exist("out").unwrap());
}

#[tokio::test]
async fn table_hints_are_refused_in_every_form() {
    let (mut engine, seen) = engine();
    engine
        .execute("CREATE TABLE src (x BIGINT); INSERT INTO src VALUES (1);")
        .await
        .unwrap();
    for sql in [
        "SELECT * FROM src WITH (connector = 'rec') LIMIT 10",
        "EXPLAIN INSERT INTO src SELECT * FROM src WITH (connector = 'rec') LIMIT 1",
        "EXPLAIN ANALYZE SELECT * FROM src WITH (connector = 'rec')",
        "WITH c AS (SELECT * FROM src) INSERT INTO o SELECT * FROM c WITH (connector = 'rec')",
        "INSERT INTO src SELECT * FROM src WITH (k = 'v') LIMIT 1",
        // The trailing WITH is split off; the hint before it must not be ignored.
        "INSERT INTO o SELECT * FROM src WITH (k = 'v') WITH (connector = 'rec')",
    ] {
        let err = engine.execute(sql).await.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, EngineError::Unsupported { .. }),
            "{sql}: {text}"
        );
        assert!(
            text.contains("WITH (...) after table '") && text.contains("go at the very end"),
            "{sql}: {text}"
        );
    }
    let err = engine
        .execute("WITH c AS (SELECT 1) INSERT INTO o SELECT * FROM c WITH (connector = 'rec')")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("WITH ... INSERT has WITH (...) after table 'c'")
            && err.contains("INSERT INTO name WITH cte AS (...) SELECT"),
        "{err}"
    );
    assert!(seen.lock().unwrap().is_empty(), "no sink was made");
    assert!(!engine.context().table_exist("o").unwrap());
    let count = engine.execute("SELECT count(*) FROM src").await.unwrap();
    let Outcome::Query { batches, .. } = &count[0] else {
        panic!("not a query");
    };
    let rows = datafusion::arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string();
    assert!(rows.contains("| 1 "), "nothing was inserted: {rows}");
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_never_show_secret_values() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("streamsql=trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Other tests hit the same callsites concurrently without a subscriber and may
    // leave them cached as disabled; rebuild the cache and retry until the logs arrive.
    for _ in 0..20 {
        tracing::callsite::rebuild_interest_cache();
        let (mut engine, _) = engine();
        engine
            .execute(
                "CREATE CONNECTION c FROM rec WITH (servers = 'a', password = 'hunter2');
                 CREATE CONNECTION n FROM nats_sink WITH (username = 'u', password = 'hunter2');
                 INSERT INTO out SELECT 1 AS x WITH (connection = 'c', password = 'hunter2');
                 CREATE TABLE t (x INT) WITH (connector = 'rec', password = 'hunter2');",
            )
            .await
            .unwrap();
        let debug = format!("{engine:?} {:?}", engine.connections().collect::<Vec<_>>());
        assert!(!debug.contains("hunter2"), "{debug}");
        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        if logs.contains("running statement") && logs.contains("connection defined") {
            break;
        }
    }
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("running statement") && logs.contains("connection defined"),
        "{logs}"
    );
    assert!(logs.contains("CREATE CONNECTION c"), "{logs}");
    assert!(!logs.contains("hunter2"), "{logs}");
}
