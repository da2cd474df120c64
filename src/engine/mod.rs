//! The engine: a DataFusion [`SessionContext`] plus the connector registry and the
//! named connections, running SQL scripts statement by statement.
//!
//! Statements the engine handles itself (`CREATE CONNECTION`, `CREATE TABLE ... WITH`,
//! `[EXPLAIN] INSERT ... WITH`) are in `connector_statements.rs`; everything else goes
//! to DataFusion unchanged, except that a statement with `WITH (...)` after a table
//! name (table hints, which DataFusion would ignore) is refused. Statements run in order and the first failure stops the
//! script. Once the shutdown latch has fired, no further statement starts, and the
//! running one stops: an `INSERT` (or a query from an unbounded source) stops reading its
//! input, and any statement still running a grace period later, or when the abort latch
//! fires, is cancelled (`stop/`). Every `INSERT`, also a prepared one run by `EXECUTE`,
//! runs through `insert.rs`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), streamsql::EngineError> {
//! use streamsql::{Engine, Outcome};
//! let mut engine = Engine::new();
//! let outcomes = engine
//!     .execute(
//!         "CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen', row_limit = '10');
//!          SELECT count(*) AS n FROM gen;",
//!     )
//!     .await?;
//! assert!(matches!(outcomes[1], Outcome::Query { .. }));
//! # Ok(()) }
//! ```

mod connector_statements;
mod insert;
mod outcome;
mod progress;
mod status;
mod stop;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_with;
mod unbounded_latency;
mod unbounded_order;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use datafusion::catalog::TableProvider;
use datafusion::execution::SessionStateBuilder;
use datafusion::logical_expr::{LogicalPlan, Statement};
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DFStatement;

pub use self::outcome::{Connection, DeliveryCounts, InsertSummary, Outcome, SignalStop};
pub use self::progress::{InsertProgress, Progress};
pub use self::status::{SinkStatus, SourceStatus, State, Status, StatusBoard};
use self::stop::Cancel;
pub use self::stop::DEFAULT_STOP_GRACE;
use self::unbounded_latency::UnboundedLatency;
use self::unbounded_order::UnboundedOrder;
use crate::connectors::{NatsKvConnector, NatsSinkConnector, NatsSourceConnector};
use crate::error::{EngineError, StatementAt};
use crate::registry::Registry;
use crate::shutdown::Shutdown;
use crate::sources::DatagenConnector;
use crate::sql::{
    EngineStatement, ScriptStatement, classify, is_cte_insert, split_statements, statement_kind,
    summary, table_with_hints,
};

/// A table the engine created through a connector. The provider is kept to tell, by
/// identity, whether the name still refers to it (DataFusion may have dropped or
/// replaced it since).
#[derive(Debug, Clone)]
struct ConnectorTable {
    connector: String,
    provider: Arc<dyn TableProvider>,
}

/// Runs SQL scripts against one DataFusion session with connectors.
///
/// State lives as long as the engine: tables, views, connections and connector tables
/// defined by one [`execute`](Engine::execute) call are visible to the next.
pub struct Engine {
    ctx: SessionContext,
    registry: Registry,
    connections: BTreeMap<String, Connection>,
    connector_tables: HashMap<String, ConnectorTable>,
    shutdown: Shutdown,
    abort: Shutdown,
    stop_grace: Duration,
    progress: Option<Progress>,
    board: StatusBoard,
    /// The plan of the last query, until its result is shown ([`Engine::result_shown`]):
    /// its sources settle what they read only then.
    unshown: Option<(StatementAt, Arc<dyn ExecutionPlan>)>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Connections print through their own Debug, which hides secret values.
        f.debug_struct("Engine")
            .field("connectors", &self.registry.names())
            .field("connections", &self.connections)
            .field("connector_tables", &self.connector_tables.keys())
            .field("shutdown", &self.shutdown.is_triggered())
            .finish_non_exhaustive()
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    /// An engine with the built-in connectors (`nats_sink`, `nats_kv`, `nats_source`,
    /// `datagen`) and its own shutdown latch (see [`Engine::shutdown`]).
    pub fn new() -> Self {
        Self::with_shutdown(Shutdown::new())
    }

    /// An engine with the built-in connectors that stops on `shutdown`.
    pub fn with_shutdown(shutdown: Shutdown) -> Self {
        Self::with_registry(Self::builtin_registry(), shutdown)
    }

    /// An engine with exactly the connectors of `registry` that stops on `shutdown`
    /// (see [`Engine::shutdown`]).
    pub fn with_registry(registry: Registry, shutdown: Shutdown) -> Self {
        let config = SessionConfig::new().with_information_schema(true);
        let mut builder = SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(UnboundedLatency))
            .with_physical_optimizer_rule(Arc::new(UnboundedOrder));
        // Connectors with a DataFusion factory also work through plain
        // `CREATE EXTERNAL TABLE ... STORED AS <NAME>`.
        for connector in registry.iter() {
            if let Some((name, factory)) = connector.table_factory() {
                builder = builder.with_table_factory(name, factory);
            }
        }
        Self {
            ctx: SessionContext::new_with_state(builder.build()),
            board: StatusBoard::new(registry.clone()),
            registry,
            connections: BTreeMap::new(),
            connector_tables: HashMap::new(),
            shutdown,
            abort: Shutdown::new(),
            stop_grace: DEFAULT_STOP_GRACE,
            progress: None,
            unshown: None,
        }
    }

    /// How long a statement may keep running after the shutdown latch fired before it
    /// is cancelled ([`DEFAULT_STOP_GRACE`] unless set).
    pub fn set_stop_grace(&mut self, grace: Duration) {
        self.stop_grace = grace;
    }

    /// Reports the progress of each running `INSERT` into a sink that reports delivery
    /// metrics, every `progress.every`.
    pub fn set_progress(&mut self, progress: Progress) {
        self.progress = Some(progress);
    }

    /// The built-in connectors: `nats_sink`, `nats_kv`, `nats_source` and `datagen`.
    pub fn builtin_registry() -> Registry {
        let mut registry = Registry::new();
        registry.register(Arc::new(NatsSinkConnector));
        registry.register(Arc::new(NatsKvConnector));
        registry.register(Arc::new(NatsSourceConnector));
        registry.register(Arc::new(DatagenConnector::default()));
        registry
    }

    /// The DataFusion session, e.g. to register tables or functions before running SQL.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// What is running now: a host's live status view reads it from any thread.
    pub fn status_board(&self) -> StatusBoard {
        self.board.clone()
    }

    /// The registered connectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The shutdown latch. [`Shutdown::trigger`] stops the running statement: an
    /// `INSERT` stops reading its input (whatever the source) and ends once its sink
    /// confirmed what it had read; a statement still running the grace period
    /// ([`Engine::set_stop_grace`]) later is cancelled. No further statement of a
    /// running [`execute`](Engine::execute) starts.
    pub fn shutdown(&self) -> &Shutdown {
        &self.shutdown
    }

    /// Replaces the shutdown latch for the statements run from now on. A latch fires
    /// only once, so an interactive host that stops one statement and goes on gives
    /// each statement a fresh one.
    pub fn set_shutdown(&mut self, shutdown: Shutdown) {
        self.shutdown = shutdown;
    }

    /// Replaces the abort latch for the statements run from now on. Firing it cancels
    /// the running statement at once, as if its grace period were over: an `INSERT`
    /// still ends with its summary of the rows its sink confirmed
    /// ([`SignalStop::Aborted`]), any other statement fails with
    /// [`EngineError::Aborted`]. An interactive host fires it on a second Ctrl-C.
    pub fn set_abort(&mut self, abort: Shutdown) {
        self.abort = abort;
    }

    /// The connections defined so far, by name.
    pub fn connections(&self) -> impl Iterator<Item = &Connection> {
        self.connections.values()
    }

    /// Splits `script` into statements (numbered from 1) without running anything.
    pub fn parse_script(script: &str) -> Result<Vec<ScriptStatement>, EngineError> {
        split_statements(script).map_err(|e| EngineError::Syntax {
            at: StatementAt {
                number: e.number,
                line: e.line,
            },
            message: e.message,
        })
    }

    /// Runs every statement of `script` in order and returns one [`Outcome`] per
    /// statement run. Stops at the first error (earlier statements keep their
    /// effects), and before any statement once the shutdown latch has fired, so the
    /// result may have fewer outcomes than the script has statements.
    pub async fn execute(&mut self, script: &str) -> Result<Vec<Outcome>, EngineError> {
        let mut outcomes = Vec::new();
        for statement in Self::parse_script(script)? {
            if self.shutdown.is_triggered() {
                break;
            }
            outcomes.push(self.execute_statement(&statement).await?);
            // The caller has the result in hand.
            self.result_shown(true).await?;
        }
        Ok(outcomes)
    }

    /// Says whether the result of the last query has been shown (printed, or handed on):
    /// its sources then settle what they read, e.g. acknowledge the messages of a
    /// durable consumer, or (`shown` false: printing failed) hand them back. A query
    /// whose result is never said to be shown (the next statement starts first) settles
    /// nothing: what it read is handed back when its plan is dropped.
    pub async fn result_shown(&mut self, shown: bool) -> Result<(), EngineError> {
        let Some((at, plan)) = self.unshown.take() else {
            return Ok(());
        };
        self.registry
            .statement_confirmed(plan.as_ref(), shown)
            .await
            .map_err(|e| EngineError::datafusion(at, e))
    }

    /// Runs one statement (from [`Engine::parse_script`]); errors name its number and
    /// line.
    pub async fn execute_statement(
        &mut self,
        statement: &ScriptStatement,
    ) -> Result<Outcome, EngineError> {
        // Not shown: what that query read is handed back as its plan is dropped.
        self.unshown = None;
        let at = StatementAt {
            number: statement.number,
            line: statement.line,
        };
        let sql = statement.text.as_str();
        let kind = classify(sql).map_err(|e| EngineError::Syntax { at, message: e.0 })?;
        // The kind and the statement's leading keywords and name only: the statement
        // may hold secret option values.
        tracing::debug!(
            statement = at.number,
            kind = kind.label(),
            what = %summary(sql),
            "running statement"
        );
        match kind {
            EngineStatement::CreateConnection(create) => self.create_connection(at, create),
            EngineStatement::CreateTableWith { create, options } => {
                self.create_connector_table(at, &create, options).await
            }
            EngineStatement::InsertWith { insert, options } => {
                self.insert_with(at, &insert, options).await
            }
            EngineStatement::ExplainInsertWith {
                explain,
                insert,
                options,
            } => {
                self.explain_insert_with(at, &explain, &insert, options)
                    .await
            }
            EngineStatement::DataFusion => self.run_datafusion(at, sql).await,
        }
    }

    /// Plans and runs a statement DataFusion handles alone.
    async fn run_datafusion(&mut self, at: StatementAt, sql: &str) -> Result<Outcome, EngineError> {
        let df_err = |e| EngineError::datafusion(at, e);
        let state = self.ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect).map_err(df_err)?;
        refuse_table_hints(at, &statement)?;
        let plan = state.statement_to_plan(statement).await.map_err(df_err)?;
        let plan = self.prepared_statement(plan).await.map_err(df_err)?;
        match &plan {
            plan if insert::as_insert(plan).is_some() => {
                self.run_insert(at, plan.clone(), None).await
            }
            _ => {
                // DDL and statements such as SET or PREPARE answer with no columns and
                // print as done; any other result is shown.
                let statement = matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_));
                let label = summary(sql);
                let run = async {
                    let df = self.ctx.execute_logical_plan(plan).await?;
                    let task_ctx = Arc::new(df.task_ctx());
                    // The executed plan's schema, not the DataFrame's: that one is read
                    // before type coercion, so `SELECT 1 UNION ALL SELECT 'a'` would be
                    // labelled Int64 over rows of Utf8.
                    let physical = df.create_physical_plan().await?;
                    self.registry.prepare_statement(&physical)?;
                    let schema = physical.schema();
                    // A query that reads a streaming source never ends by itself: the
                    // shutdown latch ends it with the rows read so far, as it ends an
                    // INSERT from one.
                    let (physical, cut) = if physical.boundedness().is_unbounded() {
                        let (plan, cut) = stop::stop_output(physical, &self.shutdown.signal());
                        (plan, Some(cut))
                    } else {
                        (physical, None)
                    };
                    // On the board like an insert, so that its sources show on the
                    // status page while it runs.
                    let _on_board = self.board.enter(&label, Arc::clone(&physical));
                    let batches =
                        datafusion::physical_plan::collect(Arc::clone(&physical), task_ctx).await?;
                    // Once the result is shown, the sources may settle what they read
                    // (not when the signal cut the reading short).
                    let complete = cut.is_none_or(|cut| cut.stopped().is_none());
                    Ok((schema, batches, complete.then_some(physical)))
                };
                let (schema, batches, settle) =
                    self.within_grace(at, run).await?.map_err(df_err)?;
                self.unshown = settle.map(|plan| (at, plan));
                if statement && schema.fields().is_empty() {
                    return Ok(Outcome::Done { statement: label });
                }
                Ok(Outcome::Query { schema, batches })
            }
        }
    }

    /// `EXECUTE name(...)` as the prepared statement it runs, its parameters filled in,
    /// so that it is handled as if written out: a prepared `INSERT` runs as every
    /// `INSERT` does, and a query's rows are shown. Any other plan is returned as it is.
    async fn prepared_statement(
        &self,
        plan: LogicalPlan,
    ) -> datafusion::error::Result<LogicalPlan> {
        match plan {
            LogicalPlan::Statement(Statement::Execute(_)) => {
                // DataFusion's own EXECUTE: looks the statement up and binds the values.
                let bound = self.ctx.execute_logical_plan(plan).await?;
                Ok(bound.into_unoptimized_plan())
            }
            plan => Ok(plan),
        }
    }

    /// Runs `statement` to its end, or until the grace period after the shutdown latch
    /// fired is over or the abort latch fires (then it is cancelled and this fails with
    /// [`EngineError::Stopped`] or [`EngineError::Aborted`]).
    async fn within_grace<T>(
        &self,
        at: StatementAt,
        statement: impl Future<Output = T>,
    ) -> Result<T, EngineError> {
        let grace = self.stop_grace;
        let (stop, abort) = (self.shutdown.signal(), self.abort.signal());
        stop::within_grace(stop, abort, grace, statement, |cancel| match cancel {
            Cancel::GraceOver => EngineError::Stopped { at, grace },
            Cancel::Aborted => EngineError::Aborted { at },
        })
        .await
    }
}

/// Refuses a statement with `WITH (...)` after a table name: sqlparser reads it as
/// table hints and DataFusion ignores them, so options written there would be lost
/// without a word (sqlparser reads them as table hints).
fn refuse_table_hints(at: StatementAt, statement: &DFStatement) -> Result<(), EngineError> {
    let Some(table) = table_with_hints(statement) else {
        return Ok(());
    };
    let mut message = format!(
        "{} has WITH (...) after table '{table}', which DataFusion would ignore (it reads it \
         as table hints), so the statement is refused. Connector options go at the very end \
         of CREATE TABLE name (columns) WITH (connector = ...), or of INSERT INTO name \
         SELECT ... WITH (connector = ...) after every other clause (WHERE, ORDER BY, LIMIT); \
         EXPLAIN [ANALYZE] [VERBOSE] may precede such an INSERT",
        statement_kind(statement)
    );
    if is_cte_insert(statement) {
        message.push_str(
            ". Put the WITH name AS (...) of a query after INSERT INTO name: INSERT INTO name \
             WITH cte AS (...) SELECT ... FROM cte WITH (connector = ...)",
        );
    }
    Err(EngineError::Unsupported { at, message })
}
