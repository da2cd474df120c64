//! The engine end to end without a NATS server: DataFusion statements pass through,
//! the datagen source works bounded and unbounded, the shutdown latch stops any
//! statement (inputs stop being read; what is still running after the grace period is
//! cancelled), and errors read as documented.

use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use datafusion::arrow::util::display::array_value_to_string;
use streamsql::{Engine, EngineError, InsertSummary, Outcome, SignalStop};

/// The batches of the query outcome at `index`.
fn batches(outcomes: &[Outcome], index: usize) -> &[RecordBatch] {
    match &outcomes[index] {
        Outcome::Query { batches, .. } => batches,
        other => panic!("outcome {index} is not a query: {other:?}"),
    }
}

/// All values of column `col` (Int64) across `batches`.
fn int64s(batches: &[RecordBatch], col: usize) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column(col)
                .as_primitive::<Int64Type>()
                .iter()
                .flatten()
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn datafusion_statements_pass_through() {
    let mut engine = Engine::new();
    let outcomes = engine
        .execute(
            "SELECT 40 + 2 AS answer; -- a comment; with a semicolon
             VALUES (1), (2), (3);
             SELECT value FROM generate_series(5, 7);
             CREATE VIEW v AS SELECT 'a;b' AS s;
             SELECT s FROM v;",
        )
        .await
        .unwrap();
    assert_eq!(outcomes.len(), 5);
    assert_eq!(int64s(batches(&outcomes, 0), 0), [42]);
    assert_eq!(int64s(batches(&outcomes, 1), 0), [1, 2, 3]);
    assert_eq!(int64s(batches(&outcomes, 2), 0), [5, 6, 7]);
    assert!(matches!(&outcomes[3], Outcome::Done { statement } if statement == "CREATE VIEW v"));
    let s = array_value_to_string(batches(&outcomes, 4)[0].column(0), 0).unwrap();
    assert_eq!(s, "a;b");
}

#[tokio::test]
async fn csv_external_table_and_insert_into_memory() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("fruit.csv");
    std::fs::write(
        &csv,
        "id,name,price\n1,apple,1.5\n2,pear,2.25\n3,plum,0.5\n",
    )
    .unwrap();
    let mut engine = Engine::new();
    let outcomes = engine
        .execute(&format!(
            "CREATE EXTERNAL TABLE fruit (id BIGINT, name VARCHAR, price DOUBLE)
             STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true');
             CREATE TABLE cheap (id BIGINT, name VARCHAR);
             INSERT INTO cheap SELECT id, name FROM fruit WHERE price < 2;
             SELECT sum(price) FROM fruit;
             SELECT id FROM cheap ORDER BY id;",
            csv.display()
        ))
        .await
        .unwrap();
    let Outcome::Insert(insert) = &outcomes[2] else {
        panic!("not an insert: {:?}", outcomes[2]);
    };
    assert_eq!((insert.table.as_str(), insert.rows), ("cheap", 2));
    assert_eq!(insert.connector, None);
    let sum = batches(&outcomes, 3)[0]
        .column(0)
        .as_primitive::<Float64Type>()
        .value(0);
    assert_eq!(sum, 4.25);
    assert_eq!(int64s(batches(&outcomes, 4), 0), [1, 3]);
}

/// Parquet and JSON files written by one query and read back through external tables
/// (the engine's DataFusion features include both formats), then joined with SQL math.
#[tokio::test]
async fn parquet_and_json_external_tables_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let parquet = dir.path().join("orders.parquet");
    let json = dir.path().join("customers.json");
    std::fs::write(
        &json,
        "{\"cid\":1,\"name\":\"alice\"}\n{\"cid\":2,\"name\":\"bob\"}\n",
    )
    .unwrap();
    let mut engine = Engine::new();
    let outcomes = engine
        .execute(&format!(
            "COPY (SELECT value AS id, value % 2 + 1 AS cid, value * 1.005 AS amount FROM generate_series(1, 10))
               TO '{parquet}' STORED AS PARQUET;
             CREATE EXTERNAL TABLE orders STORED AS PARQUET LOCATION '{parquet}';
             CREATE EXTERNAL TABLE customers (cid BIGINT, name VARCHAR) STORED AS JSON LOCATION '{json}';
             SELECT c.cid, count(*) AS n, CAST(round(sum(o.amount)) AS BIGINT) AS total
             FROM orders o JOIN customers c ON o.cid = c.cid GROUP BY c.cid ORDER BY c.cid;",
            parquet = parquet.display(),
            json = json.display()
        ))
        .await
        .unwrap();
    let result = batches(&outcomes, 3);
    assert_eq!(int64s(result, 0), [1, 2]);
    assert_eq!(int64s(result, 1), [5, 5]);
    // Even ids (2+4+...+10 = 30) go to customer 1, odd ones (25) to customer 2.
    assert_eq!(int64s(result, 2), [30, 25]);
}

#[tokio::test]
async fn datagen_with_row_limit_is_bounded() {
    let mut engine = Engine::new();
    let outcomes = engine
        .execute(
            "CREATE TABLE gen (id BIGINT, name VARCHAR, ts TIMESTAMP, ok BOOLEAN)
             WITH (connector = 'datagen', rows_per_second = '0', row_limit = '10');
             SELECT count(*) FROM gen;
             SELECT id, name FROM gen WHERE ok ORDER BY id LIMIT 3;",
        )
        .await
        .unwrap();
    let count = batches(&outcomes, 1)[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0);
    assert_eq!(count, 10);
    let rows = batches(&outcomes, 2);
    assert_eq!(int64s(rows, 0), [0, 2, 4]);
    let names: Vec<_> = rows
        .iter()
        .flat_map(|b| {
            let names = b.column(1).as_string_view();
            (0..names.len())
                .map(|i| names.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(names, ["name-0", "name-2", "name-4"]);
}

#[tokio::test]
async fn unbounded_insert_ends_on_shutdown_with_every_row_counted() {
    let mut engine = Engine::new();
    let shutdown = engine.shutdown().clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        shutdown.trigger();
    });
    let outcomes = tokio::time::timeout(
        Duration::from_secs(20),
        engine.execute(
            "CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen', rows_per_second = '1000');
             CREATE TABLE kept (id BIGINT);
             INSERT INTO kept SELECT id FROM gen;
             SELECT 'never runs';",
        ),
    )
    .await
    .expect("the insert ends once shutdown fires")
    .unwrap();
    assert_eq!(outcomes.len(), 3, "no statement starts after shutdown");
    let Outcome::Insert(insert) = &outcomes[2] else {
        panic!("not an insert: {:?}", outcomes[2]);
    };
    assert_eq!(insert.stopped, Some(SignalStop::Unbounded));
    assert!(insert.completed(), "an unbounded insert ends this way");
    assert!(insert.rows > 0, "rows were produced before the signal");
    // The reported count is what the table holds.
    assert_eq!(rows_in(&engine, "kept").await, insert.rows);
}

#[tokio::test]
async fn trailing_with_options_are_never_dropped_silently() {
    // Without the engine's split, DataFusion would read WITH (...) as table hints and
    // ignore it; here the sink sees subject_field and refuses the missing column.
    let mut engine = Engine::new();
    let err = engine
        .execute(
            "INSERT INTO out SELECT 1 AS id
             WITH (connector = 'nats_sink', subject_field = 'no_such_column')",
        )
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Connector { .. }), "{err}");
    assert!(err.to_string().contains("no_such_column"), "{err}");
}

#[tokio::test]
async fn errors_name_the_statement_and_the_fix() {
    let mut engine = Engine::new();
    let err = engine
        .execute("SELECT 1;\n\nINSERT INTO o SELECT 1 AS a WITH (connection = 'orders_conn')")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "statement 2 (line 3): unknown connection 'orders_conn'; defined connections: (none). \
         Define it first with CREATE CONNECTION orders_conn FROM <connector> WITH (...)"
    );

    let err = engine
        .execute("CREATE TABLE g (id BIGINT) WITH (connector = 'datagen', row_limt = '5')")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("did you mean 'row_limit'?"),
        "{err}"
    );

    let err = engine
        .execute("SELECT * FROM missing_table")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("statement 1 (line 1): ") && text.contains("missing_table"),
        "{text}"
    );
    assert!(!text.contains("Error during planning"), "{text}");

    let err = engine.execute("SELECT 'unterminated").await.unwrap_err();
    assert!(matches!(err, EngineError::Syntax { .. }), "{err}");
}

#[tokio::test]
async fn nats_sink_is_a_datafusion_table_factory_too() {
    // Never connects: creating the table only checks the options.
    let mut engine = Engine::new();
    let outcomes = engine
        .execute(
            "CREATE EXTERNAL TABLE ext (subject VARCHAR, v INT) STORED AS NATS_SINK
             LOCATION 'nats://127.0.0.1:1' OPTIONS ('subject_field' 'subject');
             SELECT count(*) FROM information_schema.tables WHERE table_name = 'ext';",
        )
        .await
        .unwrap();
    let n = batches(&outcomes, 1)[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn with_after_a_table_name_is_refused_not_ignored() {
    let mut engine = Engine::new();
    engine
        .execute("CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen', row_limit = '5')")
        .await
        .unwrap();
    for (sql, kind) in [
        (
            "SELECT * FROM gen WITH (connector = 'nats_sink') LIMIT 10",
            "SELECT",
        ),
        (
            "EXPLAIN SELECT id FROM gen WITH (subject = 'x') ORDER BY id",
            "EXPLAIN SELECT",
        ),
        (
            "EXPLAIN ANALYZE VERBOSE INSERT INTO out SELECT id FROM gen \
             WITH (connector = 'nats_sink', subject = 'x') LIMIT 1",
            "EXPLAIN INSERT",
        ),
        (
            "WITH g AS (SELECT id FROM gen) INSERT INTO out SELECT id FROM g \
             WITH (connector = 'nats_sink', subject = 'x')",
            "WITH ... INSERT",
        ),
    ] {
        let err = engine
            .execute(&format!("SELECT 1;\n{sql}"))
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, EngineError::Unsupported { .. }),
            "{sql}: {text}"
        );
        assert!(
            text.starts_with(&format!(
                "statement 2 (line 2): {kind} has WITH (...) after table"
            )),
            "{sql}: {text}"
        );
        assert!(
            text.contains("INSERT INTO name SELECT ... WITH (connector = ...)"),
            "{text}"
        );
    }
    assert!(!engine.context().table_exist("out").unwrap());
}

#[tokio::test]
async fn explain_insert_with_plans_the_sink_and_leaves_nothing_behind() {
    // Port 1: nothing listens there, so a connection attempt would fail the statement.
    let mut engine = Engine::new();
    let outcomes = engine
        .execute(
            "CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen', row_limit = '5');
             EXPLAIN INSERT INTO out SELECT id, 'a.b' AS subject FROM gen
             WITH (connector = 'nats_sink', servers = 'nats://127.0.0.1:1',
                   subject_field = 'subject', password = 'hunter2', username = 'u');",
        )
        .await
        .unwrap();
    let plan = batches(&outcomes, 1)
        .iter()
        .flat_map(|b| {
            let col = b.column(1);
            (0..col.len())
                .map(|i| array_value_to_string(col, i).unwrap())
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        plan.contains("Insert Into") && plan.contains("out"),
        "{plan}"
    );
    assert!(!plan.contains("hunter2"), "{plan}");
    assert!(!engine.context().table_exist("out").unwrap());
}

#[tokio::test]
async fn insert_with_never_replaces_a_declared_sink() {
    let mut engine = Engine::new();
    let err = engine
        .execute(
            "CREATE TABLE out (id BIGINT) WITH (connector = 'nats_sink', subject = 'a');
             INSERT INTO out SELECT 1 AS id WITH (connector = 'nats_sink', subject = 'b');",
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "statement 2 (line 2): table 'out' was declared with CREATE TABLE ... WITH; INSERT \
         INTO it without WITH, or use another name"
    );
    assert!(engine.context().table_exist("out").unwrap());
}

/// Runs `script` on `engine`, firing its shutdown latch after `after`.
async fn execute_and_stop(engine: &mut Engine, script: &str, after: Duration) -> Vec<Outcome> {
    let shutdown = engine.shutdown().clone();
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        shutdown.trigger();
    });
    tokio::time::timeout(Duration::from_secs(20), engine.execute(script))
        .await
        .expect("the statement ends once shutdown fires")
        .unwrap()
}

fn insert(outcome: &Outcome) -> &InsertSummary {
    match outcome {
        Outcome::Insert(insert) => insert,
        other => panic!("not an insert: {other:?}"),
    }
}

#[tokio::test]
async fn a_bounded_insert_stops_reading_on_shutdown_and_says_it_did_not_complete() {
    let mut engine = Engine::new();
    const TOTAL: u64 = 10_000_000_000;
    let outcomes = execute_and_stop(
        &mut engine,
        &format!(
            "CREATE TABLE kept (v BIGINT);
             INSERT INTO kept SELECT value FROM generate_series(1, {TOTAL});"
        ),
        Duration::from_millis(300),
    )
    .await;
    let insert = insert(&outcomes[1]);
    assert_eq!(insert.stopped, Some(SignalStop::Bounded));
    assert!(!insert.completed());
    assert!(insert.rows > 0 && insert.rows < TOTAL, "{}", insert.rows);
    assert_eq!(rows_in(&engine, "kept").await, insert.rows);
}

#[tokio::test]
async fn an_insert_whose_sink_cannot_finish_is_cancelled_after_the_grace_period() {
    // Nothing listens on the port and there is no retry_timeout: the sink would retry
    // the connection forever.
    let url = format!("nats://127.0.0.1:{}", nats_testkit::free_port());
    let mut engine = Engine::new();
    let grace = Duration::from_millis(300);
    engine.set_stop_grace(grace);
    let started = std::time::Instant::now();
    let outcomes = execute_and_stop(
        &mut engine,
        &format!(
            "INSERT INTO nowhere SELECT value AS id FROM generate_series(1, 10)
             WITH (connector = 'nats_sink', servers = '{url}', subject = 'a.b',
                   connect_timeout = '200ms');"
        ),
        Duration::from_millis(700),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let insert = insert(&outcomes[0]);
    let Some(SignalStop::Cancelled {
        grace: had,
        in_flight,
        retrying,
    }) = &insert.stopped
    else {
        panic!("not cancelled: {insert:?}");
    };
    assert_eq!((*had, *in_flight, insert.rows), (grace, 0, 0));
    assert!(
        retrying
            .as_deref()
            .is_some_and(|r| r.contains("cannot connect")),
        "{retrying:?}"
    );
    assert!(insert.delivery.is_some_and(|d| d.retries >= 1));
    assert!(!insert.completed());
}

/// A SELECT from a streaming source ends on the signal with the rows it read, in order,
/// the way such a query ends (without it, the rows would be held until the grace period
/// ran out and then dropped).
#[tokio::test]
async fn an_unbounded_select_ends_on_shutdown_with_the_rows_read() {
    let mut engine = Engine::new();
    engine.set_stop_grace(Duration::from_secs(60));
    let outcomes = execute_and_stop(
        &mut engine,
        "CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen', rows_per_second = '100');
         SELECT id FROM gen;",
        Duration::from_millis(500),
    )
    .await;
    let ids = int64s(batches(&outcomes, 1), 0);
    assert!(!ids.is_empty(), "rows were read before the signal");
    assert_eq!(ids, (0..ids.len() as i64).collect::<Vec<_>>());
}

/// A bounded query that is slow to finish is cancelled once the grace period is over.
#[tokio::test]
async fn a_query_still_running_after_the_grace_period_is_cancelled() {
    let mut engine = Engine::new();
    engine.set_stop_grace(Duration::from_millis(200));
    engine
        .execute(
            "CREATE TABLE gen (id BIGINT)
             WITH (connector = 'datagen', rows_per_second = '100', row_limit = '1000000');",
        )
        .await
        .unwrap();
    let shutdown = engine.shutdown().clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        shutdown.trigger();
    });
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        engine.execute("SELECT id FROM gen;"),
    )
    .await
    .expect("cancelled after the grace period")
    .unwrap_err();
    assert!(matches!(err, EngineError::Stopped { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        "statement 1 (line 1): stopped on signal: not finished within the 0.2s grace period, so it was cancelled"
    );
}

/// The number of rows table `name` holds.
async fn rows_in(engine: &Engine, name: &str) -> u64 {
    let counted = engine
        .context()
        .sql(&format!("SELECT count(*) FROM {name}"))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    counted[0].column(0).as_primitive::<Int64Type>().value(0) as u64
}
