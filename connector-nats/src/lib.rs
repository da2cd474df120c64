//! `connector-nats`: a DataFusion table sink that publishes every row of a query as one
//! JSON message to NATS.
//!
//! Two ways in:
//! - any DataFusion session: [`register`] the factory (`STORED AS NATS_SINK`) and use
//!   `CREATE EXTERNAL TABLE t (...) STORED AS NATS_SINK LOCATION 'nats://...' OPTIONS (...)`;
//! - an engine with its own DDL: [`validate_options`] and [`sink_table`], with the options
//!   declared in [`options::OPTIONS`].
//!
//! Modules, one concern each: `options` (declaration, parsing, redaction), `template`
//! (`${VAR}`), `subject` (rules and column reading), `subject_rules`
//! (the subject space rows may publish to), `security` (auth and TLS), `json_form` (types and value checks),
//! `encode` (batch -> messages), `encode_ahead` (encoding on another thread), `outgoing` (row -> message, dead letter or skip),
//! `connection` (connect, a lost connection, out-of-band events), `credentials` (what the
//! client presents, once), `retry` (backoff), `core_publish` (core
//! NATS with round-trip confirmation), `jetstream` (stream checks, pipelined acks,
//! atomic batches), `metrics` (per execution, DataFusion), `telemetry` (Prometheus
//! series per sink) and `sink` (DataFusion).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;

mod config;
mod connection;
mod core_publish;
mod credentials;
mod encode;
mod encode_ahead;
mod error;
mod factory;
mod jetstream;
mod json_form;
pub mod metrics;
pub mod options;
mod outgoing;
mod retry;
mod security;
mod sink;
pub mod subject;
pub mod subject_rules;
pub mod telemetry;
mod template;
mod values;

pub use encode::{EncodedBatch, Rejection, RowEncoder};
pub use error::NatsSinkError;
pub use factory::{FILE_TYPE, NatsSinkFactory, register};
pub use outgoing::{DEAD_LETTER_REASON, DEAD_LETTER_ROW, DEAD_LETTER_SUBJECT};
pub use sink::{NatsSink, NatsSinkTable};

/// The connector's name in SQL (`connector = 'nats_sink'`).
pub const CONNECTOR_NAME: &str = "nats_sink";

/// Checks option keys (an unknown key gets the closest valid name) and every value that
/// does not need the environment. With `connection_only`, sink options are refused (for
/// `CREATE CONNECTION`).
pub fn validate_options(
    options: &HashMap<String, String>,
    connection_only: bool,
) -> Result<(), NatsSinkError> {
    options::Options::parse(options, connection_only).map(drop)
}

/// The sink table for `schema`, checked against the options. Does not connect: the
/// connection is made, and connection options' `${VAR}`s resolved, when an INSERT runs.
/// `name` is the table's name, the `sink` label of its metrics.
pub fn sink_table(
    name: &str,
    schema: SchemaRef,
    options: HashMap<String, String>,
) -> datafusion::error::Result<Arc<dyn TableProvider>> {
    let options = options::Options::parse(&options, false)?;
    Ok(Arc::new(NatsSinkTable::try_new(name, schema, options)?))
}
