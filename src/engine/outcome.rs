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
    /// How the shutdown signal ended the insert; `None` when its input was read to the
    /// end (also when the signal came after that).
    pub stopped: Option<SignalStop>,
    /// What the sink reported about delivery, when it reports it (NATS sinks do).
    pub delivery: Option<DeliveryCounts>,
}

/// How a shutdown signal ended an `INSERT`. In each case `rows` is what the
/// sink confirmed (for a sink that reports no count, what it wrote).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalStop {
    /// Reading an unbounded input stopped, and the sink confirmed every row it had
    /// read: the way such an insert ends.
    Unbounded,
    /// Reading a bounded input stopped before its end, and the sink confirmed every row
    /// it had read; the rest was never read.
    Bounded,
    /// The insert had not finished `grace` after the signal (e.g. its sink was
    /// retrying) and was cancelled.
    Cancelled {
        /// The grace period it had.
        grace: Duration,
        /// Rows sent and not confirmed when it was cancelled (0 when the sink reports
        /// no such count).
        in_flight: u64,
        /// Why the sink was retrying then, if it was.
        retrying: Option<String>,
    },
    /// A second signal (the abort latch, [`Engine::set_abort`]) cancelled the insert at
    /// once, before its sink confirmed everything it had sent.
    ///
    /// [`Engine::set_abort`]: crate::Engine::set_abort
    Aborted {
        /// Rows sent and not confirmed when it was cancelled: they may or may not have
        /// arrived (0 when the sink reports no such count).
        in_flight: u64,
        /// Why the sink was retrying then, if it was.
        retrying: Option<String>,
    },
}

impl SignalStop {
    /// Whether the statement did all it was meant to: only an unbounded input stopped
    /// with every row read confirmed.
    pub fn completed(&self) -> bool {
        matches!(self, SignalStop::Unbounded)
    }
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
    /// Whether the insert did all it was meant to: it read its input to the end, or the
    /// signal stopped an unbounded input and every row read was confirmed.
    pub fn completed(&self) -> bool {
        self.stopped.as_ref().is_none_or(SignalStop::completed)
    }

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
            stopped: None,
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
