//! `connector-nats`: a DataFusion table sink that publishes every row of a query as one
//! JSON message to NATS.
//!
//! Two ways in:
//! - any DataFusion session: [`register`] the factory (`STORED AS NATS_SINK`) and use
//!   `CREATE EXTERNAL TABLE t (...) STORED AS NATS_SINK LOCATION 'nats://...' OPTIONS (...)`;
//! - an engine with its own DDL: [`validate_options`] and [`sink_table`], with the options
//!   declared in [`options::OPTIONS`].
//!
//! One folder per stage, each readable alone:
//! - `options/`: the option declaration (names, kinds, defaults, docs), values, `${VAR}`
//!   substitution (`env_vars`), redaction, and the typed configuration (`config`);
//! - `subject/`: reading subjects from Arrow columns, and the subject space rows may use;
//! - `encode/`: a batch into one JSON buffer and per-row messages, value checks, and
//!   encoding one batch ahead on a blocking thread;
//! - `connect/`: connecting (auth, TLS), the connect-once guard, a lost connection and the
//!   server's out-of-band errors;
//! - `deliver/`: what each row becomes, the retry driver, core NATS and JetStream;
//! - `metrics/`: per-execution DataFusion metrics and the process-wide Prometheus series;
//! - `sink.rs` and `factory.rs`: the DataFusion table, sink and factory;
//! - `source/`: `nats_source`, a table reading a JetStream stream or a core subscription;
//! - `kv/`: `nats_kv`, the sink writing into a key-value bucket (`STORED AS NATS_KV`).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::physical_plan::ExecutionPlan;

mod connect;
mod deliver;
mod encode;
mod error;
mod factory;
pub mod kv;
mod lineage;
pub mod metrics;
pub mod options;
mod sink;
pub mod source;
pub mod subject;

/// The Prometheus series, under the name the engine has used so far.
pub use metrics::prometheus as telemetry;

pub use deliver::rows::{
    DEAD_LETTER_KEY, DEAD_LETTER_OPERATION, DEAD_LETTER_REASON, DEAD_LETTER_ROW,
    DEAD_LETTER_SUBJECT,
};
pub use encode::{EncodedBatch, Rejection, RowEncoder};
pub use error::NatsSinkError;
pub use factory::{FILE_TYPE, NatsKvFactory, NatsSinkFactory, register};
pub use kv::{KV_CONNECTOR_NAME, KV_FILE_TYPE, KV_OPTIONS};
pub use sink::{NatsSink, NatsSinkTable};
pub use source::options::{SOURCE_CONNECTOR_NAME, SOURCE_OPTIONS};
pub use source::{NatsSourceExec, NatsSourceTable, SourceReading};

/// The connector's name in SQL (`connector = 'nats_sink'`).
pub const CONNECTOR_NAME: &str = "nats_sink";

/// The connector whose sink `node` is (`nats_sink` or `nats_kv`, which share one plan
/// node), or `None` when `node` is no sink of this crate.
pub fn sink_connector(node: &dyn ExecutionPlan) -> Option<&'static str> {
    let exec = node.downcast_ref::<DataSinkExec>()?;
    exec.sink()
        .downcast_ref::<NatsSink>()
        .map(NatsSink::connector)
}

/// Checks option keys (an unknown key gets the closest valid name) and every value that
/// does not need the environment. With `connection_only`, sink options are refused (for
/// `CREATE CONNECTION`).
pub fn validate_options(
    options: &HashMap<String, String>,
    connection_only: bool,
) -> Result<(), NatsSinkError> {
    options::Options::parse(options, connection_only).map(drop)
}

/// Checks the options of a `nats_source` like [`validate_options`] does for the sink.
pub fn validate_source_options(
    options: &HashMap<String, String>,
    connection_only: bool,
) -> Result<(), NatsSinkError> {
    options::Options::parse_for(&SOURCE_OPTIONS, options, connection_only).map(drop)
}

/// Checks the options of a `nats_kv` like [`validate_options`] does for the sink.
pub fn validate_kv_options(
    options: &HashMap<String, String>,
    connection_only: bool,
) -> Result<(), NatsSinkError> {
    options::Options::parse_for(&KV_OPTIONS, options, connection_only).map(drop)
}

/// The `nats_kv` table `name` for `schema`, checked against the options (the key and op
/// columns exist and hold strings). Does not connect: the bucket is checked when an
/// INSERT runs.
pub fn kv_table(
    name: &str,
    schema: SchemaRef,
    options: HashMap<String, String>,
) -> datafusion::error::Result<Arc<dyn TableProvider>> {
    Ok(Arc::new(kv::table(name, schema, &options)?))
}

/// The `nats_source` table `name` for `schema`, checked against the options. Does not
/// connect: a scan connects when it runs.
pub fn source_table(
    name: &str,
    schema: SchemaRef,
    options: HashMap<String, String>,
) -> datafusion::error::Result<Arc<dyn TableProvider>> {
    Ok(Arc::new(NatsSourceTable::try_new(name, schema, &options)?))
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
