//! Engine tests with a recording sink: option merging, table registration and the
//! errors of connector statements. No network: the NATS adapter is only asked to
//! validate.

use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::error::Result;

use super::*;
use crate::error::EngineError;
use crate::registry::{
    Connector, ConnectorKind, OptionDoc, OptionMap, OptionScope, check_option_names,
};

/// What the recording sink was asked to create, and the table it made.
pub(super) type Seen = Arc<Mutex<Vec<(String, SchemaRef, OptionMap, Arc<MemTable>)>>>;

/// A sink that records `create_table` calls and stores rows in memory.
#[derive(Debug, Default)]
struct RecordingSink {
    seen: Seen,
}

const REC_OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        name: "servers",
        scope: OptionScope::Connection,
        default: None,
        secret: false,
        doc: "",
    },
    OptionDoc {
        name: "password",
        scope: OptionScope::Connection,
        default: None,
        secret: true,
        doc: "",
    },
    OptionDoc {
        name: "subject",
        scope: OptionScope::Table,
        default: None,
        secret: false,
        doc: "",
    },
];

impl Connector for RecordingSink {
    fn name(&self) -> &str {
        "rec"
    }
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }
    fn options(&self) -> Vec<OptionDoc> {
        REC_OPTIONS.to_vec()
    }
    fn validate_connection_options(&self, options: &OptionMap) -> Result<()> {
        check_option_names("rec", REC_OPTIONS, &[OptionScope::Connection], options)
    }
    fn create_table(
        &self,
        name: &str,
        schema: SchemaRef,
        options: OptionMap,
    ) -> Result<Arc<dyn TableProvider>> {
        check_option_names(
            "rec",
            REC_OPTIONS,
            &[OptionScope::Connection, OptionScope::Table],
            &options,
        )?;
        let table = Arc::new(MemTable::try_new(Arc::clone(&schema), vec![vec![]])?);
        self.seen
            .lock()
            .unwrap()
            .push((name.to_string(), schema, options, Arc::clone(&table)));
        Ok(table)
    }
}

/// An engine with the built-in connectors plus `rec`, and what `rec` saw.
pub(super) fn engine() -> (Engine, Seen) {
    let shutdown = Shutdown::new();
    let mut registry = Engine::builtin_registry();
    let sink = RecordingSink::default();
    let seen = Arc::clone(&sink.seen);
    registry.register(Arc::new(sink));
    (Engine::with_registry(registry, shutdown), seen)
}

pub(super) use crate::registry::option_map as options;

#[tokio::test]
async fn statement_options_override_the_connection() {
    let (mut engine, seen) = engine();
    let outcomes = engine
        .execute(
            "CREATE CONNECTION c FROM rec WITH (servers = 'a', password = '${PW}');
             INSERT INTO out SELECT 1 AS x, 'y' AS s
             WITH (connection = 'c', servers = 'b', subject = 's');",
        )
        .await
        .unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "out");
    // Raw `${PW}`: resolution is the connector's job, at connect time.
    assert_eq!(
        seen[0].2,
        options(&[("servers", "b"), ("password", "${PW}"), ("subject", "s")])
    );
    let Outcome::Insert(summary) = &outcomes[1] else {
        panic!("not an insert: {:?}", outcomes[1]);
    };
    assert_eq!(summary.rows, 1);
    assert_eq!(summary.connector.as_deref(), Some("rec"));
}

#[tokio::test]
async fn insert_sink_takes_the_query_schema_all_nullable() {
    let (mut engine, seen) = engine();
    engine
        .execute("INSERT INTO out SELECT 1 AS x, 'y' AS s WITH (connector = 'rec')")
        .await
        .unwrap();
    let schema = Arc::clone(&seen.lock().unwrap()[0].1);
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.is_nullable()))
        .collect();
    assert_eq!(fields, [("x", true), ("s", true)]);
}

#[tokio::test]
async fn a_later_insert_makes_a_new_sink_with_its_own_schema() {
    let (mut engine, seen) = engine();
    engine
        .execute(
            "INSERT INTO out SELECT 1 AS x WITH (connector = 'rec');
             INSERT INTO out SELECT 'a' AS y, 2 AS z WITH (connector = 'rec');",
        )
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap()[1].1.fields().len(), 2);
    assert_eq!(
        rows_in(&table(&seen, 0)).await + rows_in(&table(&seen, 1)).await,
        2
    );
}

/// The table the recording sink made for its `index`th `create_table` call.
pub(super) fn table(seen: &Seen, index: usize) -> Arc<MemTable> {
    Arc::clone(&seen.lock().unwrap()[index].3)
}

/// Rows held by a recording sink's table.
pub(super) async fn rows_in(table: &Arc<MemTable>) -> usize {
    let table: Arc<dyn TableProvider> = Arc::clone(table) as _;
    SessionContext::new()
        .read_table(table)
        .unwrap()
        .count()
        .await
        .unwrap()
}

#[tokio::test]
async fn create_table_maps_sql_types_like_datafusion() {
    let (mut engine, seen) = engine();
    engine
        .execute(
            "CREATE TABLE t (a INT NOT NULL, b VARCHAR, c DOUBLE, d TIMESTAMP, e BOOLEAN)
             WITH (connector = 'rec', subject = 'x');
             CREATE TABLE m (a INT NOT NULL, b VARCHAR, c DOUBLE, d TIMESTAMP, e BOOLEAN);",
        )
        .await
        .unwrap();
    let ours = Arc::clone(&seen.lock().unwrap()[0].1);
    let datafusions = engine.context().table_provider("m").await.unwrap().schema();
    assert_eq!(ours, datafusions);
    assert_eq!(ours.field(0).data_type(), &DataType::Int32);
    assert!(!ours.field(0).is_nullable());
    // The connector table, not a memory table, is registered under the name.
    let registered = engine.context().table_provider("t").await.unwrap();
    assert!(registered.as_ref().downcast_ref::<MemTable>().is_some());
    assert_eq!(seen.lock().unwrap()[0].2, options(&[("subject", "x")]));
}

#[tokio::test]
async fn create_table_respects_existing_tables() {
    let (mut engine, _) = engine();
    engine
        .execute("CREATE TABLE t (a INT) WITH (connector = 'rec')")
        .await
        .unwrap();
    let err = engine
        .execute("CREATE TABLE t (a INT) WITH (connector = 'rec')")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("'t' already exists"), "{err}");
    let outcomes = engine
        .execute(
            "CREATE TABLE IF NOT EXISTS t (a INT) WITH (connector = 'rec');
             CREATE OR REPLACE TABLE t (a INT, b INT) WITH (connector = 'rec');",
        )
        .await
        .unwrap();
    assert!(matches!(outcomes[0], Outcome::Skipped { .. }));
    assert!(matches!(outcomes[1], Outcome::TableCreated { .. }));
}

#[tokio::test]
async fn insert_with_refuses_to_replace_a_plain_table() {
    let (mut engine, _) = engine();
    let err = engine
        .execute(
            "CREATE TABLE m (x BIGINT);
             INSERT INTO m SELECT 1 AS x WITH (connector = 'rec');",
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::TableExists { ref name, .. } if name == "m"),
        "{err}"
    );
    assert_eq!(err.at().number, 2);
    // The plain table is still there.
    let provider = engine.context().table_provider("m").await.unwrap();
    assert_eq!(provider.schema().fields().len(), 1);
}

#[tokio::test]
async fn connection_errors_name_what_to_fix() {
    let (mut engine, _) = engine();
    engine
        .execute("CREATE CONNECTION c FROM rec WITH (servers = 'a')")
        .await
        .unwrap();

    let err = engine
        .execute("INSERT INTO o SELECT 1 AS x WITH (connection = 'nope')")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, EngineError::UnknownConnection { .. }));
    assert!(
        text.contains("'nope'") && text.contains("defined connections: c"),
        "{text}"
    );

    let err = engine
        .execute("CREATE CONNECTION c FROM rec WITH (servers = 'b')")
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::ConnectionExists { .. }), "{err}");

    let err = engine
        .execute("INSERT INTO o SELECT 1 AS x WITH (connection = 'c', connector = 'nats_sink')")
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::ConnectorMismatch { .. }),
        "{err}"
    );

    let err = engine
        .execute("CREATE CONNECTION d FROM rec WITH (connector = 'rec')")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("'connector' does not belong"),
        "{err}"
    );

    let err = engine
        .execute("CREATE CONNECTION d FROM rec WITH (subject = 'x')")
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::Connector { .. }), "{err}");

    let outcomes = engine
        .execute(
            "CREATE CONNECTION IF NOT EXISTS c FROM rec;
             CREATE OR REPLACE CONNECTION c FROM rec WITH (password = 'hunter2');",
        )
        .await
        .unwrap();
    assert!(matches!(outcomes[0], Outcome::Skipped { .. }));
    assert!(matches!(
        outcomes[1],
        Outcome::ConnectionCreated { replaced: true, .. }
    ));
    let debug = format!("{:?}", engine.connections().collect::<Vec<_>>());
    assert!(!debug.contains("hunter2"), "{debug}");
}

#[tokio::test]
async fn connector_errors_list_the_registered_ones() {
    let (mut engine, _) = engine();
    let err = engine
        .execute("CREATE TABLE t (a INT) WITH (connector = 'kafka')")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "statement 1 (line 1): unknown connector 'kafka'; registered connectors: datagen, \
         nats_kv, nats_sink, nats_source, rec (see `streamsql connectors`)"
    );
    let err = engine
        .execute("SELECT 1;\nCREATE TABLE t (a INT) WITH (subject = 'x')")
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::MissingConnector { .. }), "{err}");
    assert_eq!(err.at(), StatementAt { number: 2, line: 2 });
    let err = engine
        .execute("INSERT INTO o SELECT 1 AS x WITH (connecter = 'rec')")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("did you mean 'connector'?"),
        "{err}"
    );
    let err = engine
        .execute("INSERT INTO o SELECT 1 AS x WITH (connector = 'datagen')")
        .await
        .unwrap_err();
    assert!(matches!(err, EngineError::WrongKind { .. }), "{err}");
    let err = engine
        .execute("INSERT INTO o (x) SELECT 1 AS x WITH (connector = 'rec')")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("leave out the column list"),
        "{err}"
    );
}

#[tokio::test]
async fn unknown_nats_option_gets_the_plugins_suggestion() {
    let (mut engine, _) = engine();
    let err = engine
        .execute("CREATE CONNECTION n FROM nats_sink WITH (usrname = 'u')")
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, EngineError::Connector { ref connector, .. } if connector == "nats_sink")
    );
    assert!(
        text.contains("'usrname'") && text.contains("'username'"),
        "{text}"
    );
    assert!(!text.contains("External error"), "{text}");
}

#[tokio::test]
async fn nothing_starts_after_shutdown() {
    let (mut engine, _) = engine();
    engine.shutdown().trigger();
    let outcomes = engine
        .execute("CREATE TABLE m (x INT); SELECT 1")
        .await
        .unwrap();
    assert!(outcomes.is_empty());
    assert!(!engine.context().table_exist("m").unwrap());
}

#[tokio::test]
async fn execute_shows_the_rows_of_its_prepared_statement() {
    let mut engine = Engine::new();
    let outcomes = engine
        .execute(
            "PREPARE pick(BIGINT) AS SELECT $1 * 2 AS doubled;
             EXECUTE pick(21);
             SET datafusion.execution.batch_size = 100;",
        )
        .await
        .unwrap();
    assert!(matches!(&outcomes[0], Outcome::Done { .. }), "{outcomes:?}");
    let Outcome::Query { batches, .. } = &outcomes[1] else {
        panic!("EXECUTE gave no rows: {outcomes:?}");
    };
    let shown = datafusion::arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string();
    assert!(shown.contains("| 42 "), "{shown}");
    assert!(matches!(&outcomes[2], Outcome::Done { .. }), "{outcomes:?}");
}

#[tokio::test]
async fn crypto_functions_are_compiled_in() {
    let mut engine = Engine::new();
    let outcomes = engine
        .execute("SELECT md5('abc') AS m, sha256('abc') AS s;")
        .await
        .unwrap();
    let Outcome::Query { batches, .. } = &outcomes[0] else {
        panic!("no rows: {outcomes:?}");
    };
    let shown = datafusion::arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string();
    assert!(
        shown.contains("900150983cd24fb0d6963f7d28e17f72"),
        "{shown}"
    );
    assert!(
        shown.contains("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        "{shown}"
    );
}
