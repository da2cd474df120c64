//! The statements the engine runs itself: `CREATE CONNECTION`,
//! `CREATE TABLE ... WITH (connector = ...)` and `[EXPLAIN] INSERT INTO ... WITH (...)`.
//!
//! Options are resolved the same way for tables and inserts: `connection` brings in a
//! connection's stored options, the statement's own options override them, the engine
//! keys (`connector`, `connection`) are removed, and the connector checks the rest.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::logical_expr::{DdlStatement, LogicalPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::planner::object_name_to_table_reference;
use datafusion::sql::sqlparser::ast::{Statement as SqlStatement, TableObject};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use super::{ConnectorTable, Engine, Outcome, refuse_table_hints};
use crate::engine::Connection;
use crate::error::{EngineError, StatementAt};
use crate::registry::{Connector, ConnectorKind, ENGINE_OPTIONS, OptionMap, closest, secret_keys};
use crate::sql::CreateConnection;

impl Engine {
    /// `CREATE [OR REPLACE] CONNECTION [IF NOT EXISTS] name FROM connector WITH (...)`.
    pub(super) fn create_connection(
        &mut self,
        at: StatementAt,
        create: CreateConnection,
    ) -> Result<Outcome, EngineError> {
        let connector = self.connector(at, &create.connector)?;
        let options: OptionMap = create.options.into_iter().collect();
        if let Some(key) = ENGINE_OPTIONS.iter().find(|o| options.contains_key(o.name)) {
            return Err(EngineError::Unsupported {
                at,
                message: format!(
                    "option '{}' does not belong in CREATE CONNECTION: the connector is given \
                     by FROM {}, and a connection cannot refer to another",
                    key.name, create.connector
                ),
            });
        }
        let exists = self.connections.contains_key(&create.name);
        if exists && create.if_not_exists {
            return Ok(Outcome::Skipped {
                what: format!("connection '{}' already exists", create.name),
            });
        }
        if exists && !create.or_replace {
            return Err(EngineError::ConnectionExists {
                at,
                name: create.name,
            });
        }
        connector
            .validate_connection_options(&options)
            .map_err(|e| EngineError::connector(at, connector.name(), e))?;
        let secret_keys = secret_keys(&connector.options());
        let connection = Connection {
            name: create.name.clone(),
            connector: connector.name().to_string(),
            options,
            secret_keys,
        };
        tracing::debug!(?connection, "connection defined");
        self.connections.insert(create.name.clone(), connection);
        Ok(Outcome::ConnectionCreated {
            name: create.name,
            connector: connector.name().to_string(),
            replaced: exists,
        })
    }

    /// `CREATE TABLE name (cols) WITH (connector = ..., ...)`: DataFusion plans the
    /// stripped `CREATE TABLE` (without running it) to map the SQL column types to an
    /// Arrow schema, and the connector's table is registered under the name.
    pub(super) async fn create_connector_table(
        &mut self,
        at: StatementAt,
        create: &str,
        options: Vec<(String, String)>,
    ) -> Result<Outcome, EngineError> {
        let (connector, options) = self.resolve_options(at, options)?;
        let statement = self.parse_one(at, create)?;
        let is_ctas = matches!(&statement, DFStatement::Statement(s)
            if matches!(s.as_ref(), SqlStatement::CreateTable(c) if c.query.is_some()));
        if is_ctas {
            return Err(EngineError::Unsupported {
                at,
                message: "CREATE TABLE ... AS SELECT cannot take connector options; create the \
                          table with its columns, then INSERT INTO it SELECT ..."
                    .to_string(),
            });
        }
        let plan = self
            .ctx
            .state()
            .statement_to_plan(statement)
            .await
            .map_err(|e| EngineError::datafusion(at, e))?;
        let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(table)) = plan else {
            return Err(EngineError::Unsupported {
                at,
                message: "WITH (connector = ...) goes on CREATE TABLE name (column type, ...)"
                    .to_string(),
            });
        };
        let name = table.name.clone();
        if self.ctx.table_exist(name.clone()).unwrap_or(false) {
            if table.if_not_exists {
                return Ok(Outcome::Skipped {
                    what: format!("table '{name}' already exists"),
                });
            }
            if !table.or_replace {
                return Err(EngineError::Unsupported {
                    at,
                    message: format!(
                        "table '{name}' already exists; use CREATE OR REPLACE TABLE, or DROP \
                         TABLE {name} first"
                    ),
                });
            }
        }
        let schema: SchemaRef = Arc::new(table.input.schema().as_arrow().clone());
        let provider = connector
            .create_table(name.table(), schema, options)
            .map_err(|e| EngineError::connector(at, connector.name(), e))?;
        self.register_connector_table(at, &name, connector.as_ref(), provider)?;
        Ok(Outcome::TableCreated {
            name: name.to_string(),
            connector: connector.name().to_string(),
            kind: connector.kind(),
        })
    }

    /// `INSERT INTO name SELECT ... WITH (connector = ..., ...)`: a sink taking the
    /// query's schema (every column nullable) is registered under `name` for this
    /// statement only, and the insert runs.
    pub(super) async fn insert_with(
        &mut self,
        at: StatementAt,
        insert_sql: &str,
        options: Vec<(String, String)>,
    ) -> Result<Outcome, EngineError> {
        let (sink, statement) = self.temporary_sink(at, insert_sql, options).await?;
        let plan = self
            .ctx
            .state()
            .statement_to_plan(statement)
            .await
            .map_err(|e| EngineError::datafusion(at, e))?;
        let connector = sink.connector.clone();
        let outcome = self.run_insert(at, plan, Some(connector)).await;
        drop(sink);
        outcome
    }

    /// `EXPLAIN ... INSERT INTO name SELECT ... WITH (...)`: the sink is created
    /// exactly as for the `INSERT`, for this statement only, and DataFusion runs the
    /// `EXPLAIN` (plain `EXPLAIN` writes nothing; `EXPLAIN ANALYZE` runs the insert).
    pub(super) async fn explain_insert_with(
        &mut self,
        at: StatementAt,
        explain_sql: &str,
        insert_sql: &str,
        options: Vec<(String, String)>,
    ) -> Result<Outcome, EngineError> {
        let (sink, _) = self.temporary_sink(at, insert_sql, options).await?;
        let outcome = self.run_datafusion(at, explain_sql).await;
        drop(sink);
        outcome
    }

    /// Creates and registers the sink of `INSERT INTO name SELECT ...` (without its
    /// `WITH`) from `options`. Returns the guard that deregisters it and the parsed
    /// statement. `name` must not exist yet.
    async fn temporary_sink(
        &mut self,
        at: StatementAt,
        insert_sql: &str,
        options: Vec<(String, String)>,
    ) -> Result<(TemporarySink, DFStatement), EngineError> {
        let (connector, options) = self.resolve_options(at, options)?;
        if connector.kind() != ConnectorKind::Sink {
            return Err(EngineError::WrongKind {
                at,
                connector: connector.name().to_string(),
                kind: connector.kind(),
                advice: format!(
                    "INSERT INTO ... WITH (...) needs a sink connector; read from it with \
                     CREATE TABLE t (...) WITH (connector = '{}') and SELECT ... FROM t",
                    connector.name()
                ),
            });
        }
        let statement = self.parse_one(at, insert_sql)?;
        let DFStatement::Statement(boxed) = &statement else {
            return Err(not_an_insert_select(at));
        };
        let SqlStatement::Insert(insert) = boxed.as_ref() else {
            return Err(not_an_insert_select(at));
        };
        if !insert.columns.is_empty() {
            return Err(EngineError::Unsupported {
                at,
                message: "INSERT INTO name (columns) ... WITH (...) is not supported: the sink \
                          takes its columns from the SELECT, so leave out the column list and \
                          name the columns with AS in the SELECT"
                    .to_string(),
            });
        }
        let (TableObject::TableName(object_name), Some(query)) = (&insert.table, &insert.source)
        else {
            return Err(not_an_insert_select(at));
        };
        let normalize = self
            .ctx
            .state()
            .config()
            .options()
            .sql_parser
            .enable_ident_normalization;
        let name = object_name_to_table_reference(object_name.clone(), normalize)
            .map_err(|e| EngineError::datafusion(at, e))?;
        self.refuse_existing_table(at, &name).await?;

        // Plan only the SELECT to learn the columns the sink must take.
        let query_plan = self
            .ctx
            .state()
            .statement_to_plan(DFStatement::Statement(Box::new(SqlStatement::Query(
                query.clone(),
            ))))
            .await
            .map_err(|e| EngineError::datafusion(at, e))?;
        let schema = nullable(query_plan.schema().as_arrow());

        let provider = connector
            .create_table(name.table(), schema, options)
            .map_err(|e| EngineError::connector(at, connector.name(), e))?;
        self.ctx
            .register_table(name.clone(), Arc::clone(&provider))
            .map_err(|e| EngineError::datafusion(at, e))?;
        let sink = TemporarySink {
            ctx: self.ctx.clone(),
            name,
            provider,
            connector: connector.name().to_string(),
        };
        Ok((sink, statement))
    }

    /// `INSERT ... WITH` defines its own sink, so `name` must be free: a table
    /// declared with `CREATE TABLE ... WITH` is inserted into without `WITH`, and any
    /// other table is never replaced.
    async fn refuse_existing_table(
        &self,
        at: StatementAt,
        name: &TableReference,
    ) -> Result<(), EngineError> {
        let df_err = |e| EngineError::datafusion(at, e);
        if !self.ctx.table_exist(name.clone()).map_err(df_err)? {
            return Ok(());
        }
        let existing = self
            .ctx
            .table_provider(name.clone())
            .await
            .map_err(df_err)?;
        let declared = self
            .connector_tables
            .values()
            .any(|t| Arc::ptr_eq(&t.provider, &existing));
        if declared {
            return Err(EngineError::Unsupported {
                at,
                message: format!(
                    "table '{name}' was declared with CREATE TABLE ... WITH; INSERT INTO it \
                     without WITH, or use another name"
                ),
            });
        }
        Err(EngineError::TableExists {
            at,
            name: name.to_string(),
        })
    }

    /// Splits the engine keys off `options`, merges in the named connection's options
    /// (the statement's win) and finds the connector.
    fn resolve_options(
        &self,
        at: StatementAt,
        options: Vec<(String, String)>,
    ) -> Result<(Arc<dyn Connector>, OptionMap), EngineError> {
        let mut options: OptionMap = options.into_iter().collect();
        let connector_name = options.remove("connector");
        let connection = match options.remove("connection") {
            Some(name) => Some(self.connection(at, &name)?),
            None => None,
        };
        let connector_name = match (connector_name, connection) {
            (Some(named), Some(connection))
                if !self.shares_connections(at, &named, &connection.connector)? =>
            {
                return Err(EngineError::ConnectorMismatch {
                    at,
                    connection: connection.name.clone(),
                    connection_connector: connection.connector.clone(),
                    connector: named,
                });
            }
            (Some(named), _) => named,
            (None, Some(connection)) => connection.connector.clone(),
            (None, None) => {
                // A misspelt `connector` should be named as such, not reported missing.
                let engine_keys = ENGINE_OPTIONS.iter().map(|o| o.name);
                if let Some((key, engine_key)) = options
                    .keys()
                    .find_map(|k| closest(k, engine_keys.clone()).map(|e| (k, e)))
                {
                    return Err(misspelt_engine_key(at, key, engine_key));
                }
                return Err(EngineError::MissingConnector {
                    at,
                    registered: self.registry.names(),
                });
            }
        };
        let connector = self.connector(at, &connector_name)?;
        self.check_engine_key_typos(at, connector.as_ref(), &options)?;
        let mut merged = connection.map(|c| c.options.clone()).unwrap_or_default();
        merged.extend(options);
        Ok((connector, merged))
    }

    /// A key the connector does not declare that is closest to an engine key is a
    /// misspelt engine key: say so here, since the connector cannot know these keys.
    fn check_engine_key_typos(
        &self,
        at: StatementAt,
        connector: &dyn Connector,
        options: &OptionMap,
    ) -> Result<(), EngineError> {
        let declared = connector.options();
        for key in options.keys() {
            if declared.iter().any(|d| d.name == key) {
                continue;
            }
            let candidates = ENGINE_OPTIONS.iter().chain(declared.iter()).map(|d| d.name);
            if let Some(engine_key) = closest(key, candidates)
                .filter(|best| ENGINE_OPTIONS.iter().any(|e| e.name == *best))
            {
                return Err(misspelt_engine_key(at, key, engine_key));
            }
        }
        Ok(())
    }

    /// Whether connector `named` may use a connection made for connector `defined_for`:
    /// the same connector, or one of its connection family.
    fn shares_connections(
        &self,
        at: StatementAt,
        named: &str,
        defined_for: &str,
    ) -> Result<bool, EngineError> {
        if named.eq_ignore_ascii_case(defined_for) {
            return Ok(true);
        }
        let named = self.connector(at, named)?;
        Ok(self
            .registry
            .get(defined_for)
            .is_some_and(|other| other.connection_family() == named.connection_family()))
    }

    fn connector(&self, at: StatementAt, name: &str) -> Result<Arc<dyn Connector>, EngineError> {
        self.registry
            .get(name)
            .cloned()
            .ok_or_else(|| EngineError::UnknownConnector {
                at,
                name: name.to_string(),
                registered: self.registry.names(),
            })
    }

    fn connection(&self, at: StatementAt, name: &str) -> Result<&Connection, EngineError> {
        // Unquoted connection names are stored lowercased, like DataFusion identifiers.
        self.connections
            .get(name)
            .or_else(|| self.connections.get(&name.to_lowercase()))
            .ok_or_else(|| EngineError::UnknownConnection {
                at,
                name: name.to_string(),
                defined: self.connections.keys().cloned().collect(),
            })
    }

    fn parse_one(&self, at: StatementAt, sql: &str) -> Result<DFStatement, EngineError> {
        let mut statements = DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
            .map_err(|e| EngineError::datafusion(at, e))?;
        match (statements.pop_front(), statements.is_empty()) {
            (Some(statement), true) => {
                refuse_table_hints(at, &statement)?;
                Ok(statement)
            }
            _ => Err(EngineError::Syntax {
                at,
                message: "expected exactly one statement".to_string(),
            }),
        }
    }

    /// Registers `provider` as `name`, replacing whatever had the name (the caller
    /// has checked that it may: CREATE OR REPLACE TABLE, or no such table).
    fn register_connector_table(
        &mut self,
        at: StatementAt,
        name: &TableReference,
        connector: &dyn Connector,
        provider: Arc<dyn TableProvider>,
    ) -> Result<(), EngineError> {
        let df_err = |e| EngineError::datafusion(at, e);
        self.ctx.deregister_table(name.clone()).map_err(df_err)?;
        self.ctx
            .register_table(name.clone(), Arc::clone(&provider))
            .map_err(df_err)?;
        self.connector_tables.insert(
            name.to_string(),
            ConnectorTable {
                connector: connector.name().to_string(),
                provider,
            },
        );
        Ok(())
    }
}

/// The sink of one `INSERT ... WITH` statement, registered under the statement's
/// table name. Dropping it, when the statement ends however it ends (success, error,
/// or the statement's future being dropped), deregisters it; nothing had the name
/// before, so nothing is restored.
struct TemporarySink {
    ctx: SessionContext,
    name: TableReference,
    provider: Arc<dyn TableProvider>,
    connector: String,
}

impl Drop for TemporarySink {
    fn drop(&mut self) {
        match self.ctx.deregister_table(self.name.clone()) {
            // Never remove what is not ours (nothing else takes the name during the
            // statement, but be sure).
            Ok(Some(current)) if !Arc::ptr_eq(&current, &self.provider) => {
                if let Err(e) = self.ctx.register_table(self.name.clone(), current) {
                    tracing::warn!(table = %self.name, error = %e, "cannot restore a table");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(table = %self.name, error = %e, "cannot deregister a sink");
            }
        }
    }
}

fn misspelt_engine_key(at: StatementAt, key: &str, engine_key: &str) -> EngineError {
    EngineError::Unsupported {
        at,
        message: format!("unknown option '{key}'; did you mean '{engine_key}'?"),
    }
}

fn not_an_insert_select(at: StatementAt) -> EngineError {
    EngineError::Unsupported {
        at,
        message: "WITH (connector = ...) after INSERT needs the form INSERT INTO name SELECT ... \
                  WITH (...)"
            .to_string(),
    }
}

/// `schema` with every field nullable: the sink must accept whatever the query may
/// produce later, not only what the planner proved about it.
fn nullable(schema: &Schema) -> SchemaRef {
    let fields: Vec<_> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}
