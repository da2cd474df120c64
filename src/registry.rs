//! The connector contract the engine knows, and the registry of connectors by name.
//!
//! A connector is a source or a sink that turns options plus a schema into a DataFusion
//! [`TableProvider`]. The engine sees only names, option docs and errors; everything
//! specific to a system (NATS, ...) lives behind this trait. The engine-level keys
//! `connector` and `connection` are declared here once, in [`ENGINE_OPTIONS`], and are
//! removed before a connector sees the options.
//!
//! A sink may also tell the engine how delivery goes ([`Connector::delivery`], read from
//! the metrics of its plan node) and publish process-wide Prometheus series
//! ([`Connector::register_series`]); the engine's progress line, summary line and
//! `/metrics` endpoint use only these, never a connector's own types.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{TableProvider, TableProviderFactory};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::ExecutionPlan;

/// Option keys to values, as written in SQL (keys lowercased). Sorted, so messages
/// listing them are stable.
pub type OptionMap = BTreeMap<String, String>;

/// An option map from literal pairs, for tests across the crate.
#[cfg(test)]
pub(crate) fn option_map(pairs: &[(&str, &str)]) -> OptionMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether a connector reads (a table to `SELECT` from) or writes (a table to
/// `INSERT INTO`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorKind {
    /// Produces rows: `SELECT ... FROM` its tables.
    Source,
    /// Consumes rows: `INSERT INTO` its tables.
    Sink,
}

impl fmt::Display for ConnectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectorKind::Source => "source",
            ConnectorKind::Sink => "sink",
        })
    }
}

/// Where an option may be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionScope {
    /// Read by the engine itself (`connector`, `connection`); allowed on tables and
    /// `INSERT ... WITH`.
    Engine,
    /// Allowed in `CREATE CONNECTION` as well as on a table or `INSERT ... WITH`.
    Connection,
    /// Only on the table (`CREATE TABLE ... WITH`) or `INSERT ... WITH`.
    Table,
}

impl fmt::Display for OptionScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptionScope::Engine => "engine",
            OptionScope::Connection => "connection",
            OptionScope::Table => "table",
        })
    }
}

/// One option of a connector, declared once: listings, validation and suggestions
/// all derive from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionDoc {
    /// The key, lowercase.
    pub name: &'static str,
    /// Where the key may be written.
    pub scope: OptionScope,
    /// The value used when the key is absent; `None` when there is none.
    pub default: Option<&'static str>,
    /// The value is a secret and is never printed.
    pub secret: bool,
    /// One line for users.
    pub doc: &'static str,
}

/// Shown in place of a secret option's value.
pub const REDACTED: &str = "***";

/// The engine's one redaction rule, used wherever option values are shown or logged
/// (connections, the `Debug` of statements, the connectors listing): the pairs of
/// `options` in order, each value replaced by [`REDACTED`] when `is_secret(key)`.
/// Engine keys ([`ENGINE_OPTIONS`]) are never secret.
///
/// `is_secret` comes from the connector's option docs ([`secret_keys`]) where the
/// connector is known; where it is not, pass `|_| true` to hide every value.
pub fn redact<'a>(
    options: impl IntoIterator<Item = (&'a str, &'a str)>,
    is_secret: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    options
        .into_iter()
        .map(|(key, value)| {
            let engine_key = ENGINE_OPTIONS.iter().any(|o| o.name == key);
            let shown = if !engine_key && is_secret(key) {
                REDACTED
            } else {
                value
            };
            (key.to_string(), shown.to_string())
        })
        .collect()
}

/// The keys `docs` declares secret.
pub fn secret_keys(docs: &[OptionDoc]) -> std::collections::BTreeSet<String> {
    docs.iter()
        .filter(|o| o.secret)
        .map(|o| o.name.to_string())
        .collect()
}

/// The keys the engine reads itself, valid with every connector.
pub const ENGINE_OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        name: "connector",
        scope: OptionScope::Engine,
        default: None,
        secret: false,
        doc: "Connector to use (see `streamsql connectors`); may be left out when `connection` is given",
    },
    OptionDoc {
        name: "connection",
        scope: OptionScope::Engine,
        default: None,
        secret: false,
        doc: "Name of a CREATE CONNECTION whose options are merged in (the statement's own options win)",
    },
];

/// How a sink's delivery stands, read from the metrics of its plan node while the
/// statement runs or after it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryMetrics {
    /// Rows the destination confirmed (for NATS JetStream: acknowledged).
    pub confirmed: u64,
    /// Payload bytes of the confirmed rows.
    pub bytes: u64,
    /// Confirmed rows the destination already had (stored once, counted in `confirmed`).
    pub duplicates: u64,
    /// Rows that could not be delivered and were skipped.
    pub skipped: u64,
    /// Rows that could not be delivered and went to a dead-letter destination.
    pub dead_lettered: u64,
    /// Retries after transient failures.
    pub retries: u64,
    /// Rows sent and not confirmed yet.
    pub in_flight: u64,
    /// The bytes of those rows' messages (payload and headers).
    pub in_flight_bytes: u64,
    /// Why the sink is retrying, while it is.
    pub retrying: Option<String>,
    /// Whether the sink holds a connection now; `None` when it does not say.
    pub connected: Option<bool>,
    /// Why the last few skipped or dead-lettered rows were left out, oldest first.
    pub recent_rejections: Vec<String>,
}

/// How a source's reading stands, read from its plan node while the statement runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadingMetrics {
    /// Rows the source has produced so far in this statement.
    pub rows: u64,
    /// Messages waiting at the source's server for this reader (a consumer's pending
    /// count), where the source has such a thing.
    pub pending: Option<u64>,
    /// Whether the source holds a connection now; `None` when it does not say.
    pub connected: Option<bool>,
    /// Why the source is retrying, while it is.
    pub retrying: Option<String>,
}

/// A source or sink the engine can create tables from.
pub trait Connector: Send + Sync + fmt::Debug {
    /// The name used in `connector = '...'` and `CREATE CONNECTION ... FROM ...`.
    fn name(&self) -> &str;

    /// Source or sink.
    fn kind(&self) -> ConnectorKind;

    /// Every option the connector accepts (not the engine keys).
    fn options(&self) -> Vec<OptionDoc>;

    /// Checks the options of a `CREATE CONNECTION`: unknown keys (with the closest
    /// valid one), keys not allowed in a connection, and values checkable without
    /// connecting. Values stay raw (`${VAR}` is resolved by the connector later).
    fn validate_connection_options(&self, options: &OptionMap) -> Result<()>;

    /// Creates the table `name` with `schema` from `options` (engine keys removed,
    /// a connection's options already merged in). Does not connect anywhere.
    fn create_table(
        &self,
        name: &str,
        schema: SchemaRef,
        options: OptionMap,
    ) -> Result<Arc<dyn TableProvider>>;

    /// A factory for `CREATE EXTERNAL TABLE ... STORED AS <NAME>`, with its upper-case
    /// name, if the connector offers one.
    fn table_factory(&self) -> Option<(String, Arc<dyn TableProviderFactory>)> {
        None
    }

    /// The delivery figures of `node`, a node of a running or executed plan, when that
    /// node is this connector's sink; `None` for any other node (by default the connector
    /// reports nothing). Connectors sharing a plugin's sink node (`nats_sink`, `nats_kv`)
    /// must tell their own nodes apart: the first that answers is credited on the status
    /// page.
    fn delivery(&self, _node: &dyn ExecutionPlan) -> Option<DeliveryMetrics> {
        None
    }

    /// How reading stands when `node`, a node of a running plan, is this connector's
    /// source; `None` for any other node (by default the connector reports nothing).
    /// The status page lists what this returns under `sources`.
    fn reading(&self, _node: &dyn ExecutionPlan) -> Option<ReadingMetrics> {
        None
    }

    /// Adds the connector's process-wide Prometheus series to `registry` (served at
    /// `streamsql run --metrics-addr`); by default it has none.
    fn register_series(&self, _registry: &mut prometheus_client::registry::Registry) {}

    /// Connectors with the same family share connections: a `CREATE CONNECTION ... FROM`
    /// one of them may be used by the others (a source and a sink of one system). By
    /// default a connector is a family of its own.
    fn connection_family(&self) -> &str {
        self.name()
    }

    /// Called by the engine with a statement's physical plan before it runs: a connector
    /// may connect its nodes (a source that acknowledges what its sink confirmed), or
    /// refuse the plan with an error saying why. By default it does nothing.
    fn prepare_statement(&self, _plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
        Ok(())
    }

    /// Called by the engine, for every node of a statement's plan, once the statement
    /// succeeded and its output is confirmed (an INSERT's sink confirmed every row, a
    /// query's result was shown). When `node` is this connector's source, the
    /// returned future settles what the source owes (e.g. acknowledges what it read);
    /// `None` for any other node (by default the connector does nothing). Not called for
    /// a statement that failed or was cancelled. Called with `complete` false for an
    /// INSERT whose input the shutdown signal cut (everything its sink took was
    /// confirmed, but rows the plan still held, an aggregate's groups or buffered
    /// batches, never reached it), and for a query whose result could not be shown.
    fn statement_confirmed(
        &self,
        _node: &dyn ExecutionPlan,
        _complete: bool,
    ) -> Option<futures::future::BoxFuture<'static, Result<()>>> {
        None
    }
}

/// Connectors by name.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    connectors: BTreeMap<String, Arc<dyn Connector>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `connector` under its name, replacing one of the same name.
    pub fn register(&mut self, connector: Arc<dyn Connector>) {
        self.connectors
            .insert(connector.name().to_lowercase(), connector);
    }

    /// The connector called `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Connector>> {
        self.connectors.get(&name.to_lowercase())
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        self.connectors.keys().cloned().collect()
    }

    /// Registered connectors, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<dyn Connector>> {
        self.connectors.values()
    }

    /// The delivery figures of the first node of `plan` (depth first) that a registered
    /// connector reports on; `None` when no node is a reporting sink.
    pub fn delivery(&self, plan: &dyn ExecutionPlan) -> Option<DeliveryMetrics> {
        self.delivery_by(plan).map(|(_, delivery)| delivery)
    }

    /// [`Registry::delivery`] with the name of the connector that reported.
    pub fn delivery_by(&self, plan: &dyn ExecutionPlan) -> Option<(String, DeliveryMetrics)> {
        if let Some(found) = self
            .iter()
            .find_map(|c| c.delivery(plan).map(|d| (c.name().to_string(), d)))
        {
            return Some(found);
        }
        plan.children()
            .into_iter()
            .find_map(|child| self.delivery_by(child.as_ref()))
    }

    /// Every source node of `plan` a registered connector reports on, depth first, with
    /// the connector's name.
    pub fn readings(&self, plan: &dyn ExecutionPlan) -> Vec<(String, ReadingMetrics)> {
        let mut found: Vec<_> = self
            .iter()
            .filter_map(|c| c.reading(plan).map(|r| (c.name().to_string(), r)))
            .collect();
        for child in plan.children() {
            found.extend(self.readings(child.as_ref()));
        }
        found
    }

    /// Lets every connector prepare `plan` before it runs
    /// ([`Connector::prepare_statement`]).
    pub fn prepare_statement(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
        self.iter().try_for_each(|c| c.prepare_statement(plan))
    }

    /// Tells every source in `plan` that its statement succeeded and its output is
    /// confirmed, all of it or (`complete` false) what the signal left
    /// ([`Connector::statement_confirmed`]); fails with the first source that could not
    /// settle.
    pub async fn statement_confirmed(
        &self,
        plan: &dyn ExecutionPlan,
        complete: bool,
    ) -> Result<()> {
        let mut settling = Vec::new();
        let mut nodes = vec![plan];
        while let Some(node) = nodes.pop() {
            settling.extend(
                self.iter()
                    .filter_map(|c| c.statement_confirmed(node, complete)),
            );
            nodes.extend(node.children().into_iter().map(|child| child.as_ref()));
        }
        for settle in settling {
            settle.await?;
        }
        Ok(())
    }

    /// Adds every connector's Prometheus series to `registry`.
    pub fn register_series(&self, registry: &mut prometheus_client::registry::Registry) {
        for connector in self.iter() {
            connector.register_series(registry);
        }
    }
}

/// The valid name closest to `unknown`, if one is close enough to be a likely typo.
pub fn closest<'a>(
    unknown: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(unknown, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Refuses keys of `options` that `docs` does not declare for `allowed` scopes,
/// naming the key, the closest valid option and what is valid. For connectors that
/// declare their options as [`OptionDoc`]s (the built-in sources).
pub fn check_option_names(
    connector: &str,
    docs: &[OptionDoc],
    allowed: &[OptionScope],
    options: &OptionMap,
) -> Result<()> {
    let valid: Vec<&str> = docs
        .iter()
        .filter(|d| allowed.contains(&d.scope))
        .map(|d| d.name)
        .collect();
    for key in options.keys() {
        if valid.contains(&key.as_str()) {
            continue;
        }
        if docs.iter().any(|d| d.name == key) {
            return Err(DataFusionError::Plan(format!(
                "option '{key}' of connector '{connector}' cannot be used here; \
                 allowed here: {}",
                list_or_none(&valid)
            )));
        }
        let hint = match closest(key, valid.iter().copied()) {
            Some(name) => format!("did you mean '{name}'? "),
            None => String::new(),
        };
        return Err(DataFusionError::Plan(format!(
            "unknown option '{key}' for connector '{connector}'; {hint}valid options: {}",
            list_or_none(&valid)
        )));
    }
    Ok(())
}

/// `a, b, c`, or `(none)` for an empty list.
pub fn list_or_none(items: &[impl AsRef<str>]) -> String {
    if items.is_empty() {
        "(none)".to_string()
    } else {
        items
            .iter()
            .map(|s| s.as_ref())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS: &[OptionDoc] = &[
        OptionDoc {
            name: "rows_per_second",
            scope: OptionScope::Table,
            default: Some("1000"),
            secret: false,
            doc: "",
        },
        OptionDoc {
            name: "servers",
            scope: OptionScope::Connection,
            default: None,
            secret: false,
            doc: "",
        },
    ];

    #[test]
    fn unknown_option_names_the_closest() {
        let err = check_option_names(
            "gen",
            DOCS,
            &[OptionScope::Table, OptionScope::Connection],
            &option_map(&[("rows_per_secnd", "1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("unknown option 'rows_per_secnd' for connector 'gen'"),
            "{err}"
        );
        assert!(err.contains("did you mean 'rows_per_second'?"), "{err}");
        let err = check_option_names(
            "gen",
            DOCS,
            &[OptionScope::Table],
            &option_map(&[("zzz", "1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("did you mean"), "{err}");
        assert!(err.contains("valid options: rows_per_second"), "{err}");
    }

    #[test]
    fn option_out_of_scope_is_refused() {
        let err = check_option_names(
            "gen",
            DOCS,
            &[OptionScope::Connection],
            &option_map(&[("rows_per_second", "1")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("'rows_per_second' of connector 'gen' cannot be used here"),
            "{err}"
        );
        assert!(
            check_option_names(
                "gen",
                DOCS,
                &[OptionScope::Connection],
                &option_map(&[("servers", "x")])
            )
            .is_ok()
        );
    }

    #[test]
    fn redact_hides_secret_values_but_never_engine_keys() {
        let docs = [
            OptionDoc {
                name: "password",
                scope: OptionScope::Connection,
                default: None,
                secret: true,
                doc: "",
            },
            DOCS[1].clone(),
        ];
        let secret = secret_keys(&docs);
        let shown = redact(
            [
                ("connector", "nats_sink"),
                ("password", "hunter2"),
                ("servers", "nats://h"),
            ],
            |k| secret.contains(k),
        );
        assert_eq!(
            shown,
            option_map(&[
                ("connector", "nats_sink"),
                ("password", REDACTED),
                ("servers", "nats://h")
            ])
            .into_iter()
            .collect::<Vec<_>>()
        );
        let all = redact([("connection", "c"), ("token", "t0k")], |_| true);
        assert_eq!(all[0].1, "c");
        assert_eq!(all[1].1, REDACTED);
    }

    #[test]
    fn closest_needs_a_likely_typo() {
        assert_eq!(
            closest("conection", ["connection", "connector"]),
            Some("connection")
        );
        assert_eq!(closest("xyz", ["connection", "connector"]), None);
    }
}
