//! What running a statement produced, and the stored form of a connection.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::registry::{ConnectorKind, DeliveryMetrics, OptionMap, redact};

/// The result of one statement.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// `CREATE [OR REPLACE] CONNECTION` stored a connection.
    ConnectionCreated {
        name: String,
        connector: String,
        /// An existing connection of that name was replaced.
        replaced: bool,
    },
    /// `CREATE TABLE ... WITH (connector = ...)` registered a connector table.
    TableCreated {
        name: String,
        connector: String,
        kind: ConnectorKind,
    },
    /// An `IF NOT EXISTS` statement found its object already there and did nothing.
    Skipped { what: String },
    /// A query's result (SELECT, VALUES, EXPLAIN, SHOW, ...).
    Query {
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    },
    /// An `INSERT` finished.
    Insert(InsertSummary),
    /// Any other statement DataFusion ran (DDL, SET, ...); `statement` is its leading
    /// keywords and name, e.g. `CREATE EXTERNAL TABLE orders`.
    Done { statement: String },
}

/// What an `INSERT` did.
#[derive(Debug, Clone, PartialEq)]
pub struct InsertSummary {
    /// The target table.
    pub table: String,
    /// The connector of the target, when it is a connector table.
    pub connector: Option<String>,
    /// Rows written: for a connector sink, rows the destination confirmed.
    pub rows: u64,
    /// Time from the start of execution to completion.
    pub elapsed: Duration,
    /// The shutdown latch had fired when the insert finished: an unbounded source was
    /// stopped and `rows` is what was delivered until then.
    pub stopped_by_signal: bool,
    /// What the sink reported about delivery, when it reports it (NATS sinks do).
    pub delivery: Option<DeliveryCounts>,
}

/// A sink's delivery counters, read from the executed plan's metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeliveryCounts {
    pub bytes: u64,
    /// Rows the stream already had (same message id): stored once, counted in `rows`.
    pub duplicates: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    pub retries: u64,
}

impl From<&DeliveryMetrics> for DeliveryCounts {
    fn from(d: &DeliveryMetrics) -> Self {
        DeliveryCounts {
            bytes: d.bytes,
            duplicates: d.duplicates,
            skipped: d.skipped,
            dead_lettered: d.dead_lettered,
            retries: d.retries,
        }
    }
}

impl InsertSummary {
    /// Rows per second over [`InsertSummary::elapsed`].
    pub fn rows_per_second(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.rows as f64 / secs
        } else {
            0.0
        }
    }
}

/// A named set of connector options from `CREATE CONNECTION`. Values are stored raw
/// (`${VAR}` unresolved); `Debug` hides the values of secret options.
#[derive(Clone)]
pub struct Connection {
    pub(crate) name: String,
    pub(crate) connector: String,
    pub(crate) options: OptionMap,
    pub(crate) secret_keys: BTreeSet<String>,
}

impl Connection {
    /// The connection's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The connector it is for.
    pub fn connector(&self) -> &str {
        &self.connector
    }

    /// The options with secret values replaced by `***`, for display.
    pub fn redacted_options(&self) -> Vec<(String, String)> {
        redact(
            self.options.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            |k| self.secret_keys.contains(k),
        )
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.name)
            .field("connector", &self.connector)
            .field("options", &self.redacted_options())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_secrets() {
        let connection = Connection {
            name: "c".to_string(),
            connector: "nats_sink".to_string(),
            options: [("password", "hunter2"), ("username", "me")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secret_keys: ["password".to_string()].into_iter().collect(),
        };
        let debug = format!("{connection:?}");
        assert!(
            !debug.contains("hunter2") && debug.contains("***") && debug.contains("me"),
            "{debug}"
        );
    }

    #[test]
    fn rate_is_rows_over_seconds() {
        let summary = InsertSummary {
            table: "t".to_string(),
            connector: None,
            rows: 1000,
            elapsed: Duration::from_millis(500),
            stopped_by_signal: false,
            delivery: None,
        };
        assert_eq!(summary.rows_per_second(), 2000.0);
        assert_eq!(
            InsertSummary {
                elapsed: Duration::ZERO,
                ..summary
            }
            .rows_per_second(),
            0.0
        );
    }
}
