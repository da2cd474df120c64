//! `nats_source`: a table that reads NATS messages, one row per message.
//!
//! ```sql
//! CREATE TABLE orders_in (order_id BIGINT, amount DOUBLE, _subject VARCHAR, _sequence BIGINT)
//! WITH (connector = 'nats_source', connection = 'c', stream = 'ORDERS', stop_at = 'end');
//! ```
//!
//! One folder per concern: `options` (the declaration and the typed configuration),
//! `connect` (the client, with the sink's credentials and TLS), `consumer` (stream and
//! consumer set-up), `feed` (messages in chunks), `decode` (payloads and metadata into
//! rows), `read` (one execution, `on_error`), `dead_letter` (where undecodable messages
//! go), `ack` (what is acknowledged, and when),
//! `exec` (the plan node), `link` (which sink a continuous read follows).
//!
//! Delivery: a core subscription is at-most-once; an ephemeral JetStream consumer
//! acknowledges nothing; a durable consumer acknowledges a message only once the rows
//! derived from it are confirmed: a bounded read when the host reports the whole
//! statement confirmed, a continuous one as its sink confirms rows (see `ack`, `link`).

mod ack;
mod connect;
mod consumer;
mod dead_letter;
mod decode;
mod exec;
mod feed;
mod health;
mod link;
pub mod options;
mod read;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

pub use dead_letter::{DEAD_LETTER_SEQUENCE, DEAD_LETTER_STREAM};
pub use exec::{NatsSourceExec, SourceReading};
pub use link::link_statement;

use crate::options::Options;
use decode::RowDecoder;
use options::{Input, SOURCE_OPTIONS, SourceConfig};

/// Everything a scan needs, checked at table creation.
#[derive(Debug)]
pub(crate) struct SourceSpec {
    name: String,
    schema: SchemaRef,
    /// As given, `${VAR}` unresolved: connection options are resolved when a scan runs.
    options: Options,
    config: SourceConfig,
    decoder: RowDecoder,
}

/// A `nats_source` table.
#[derive(Debug)]
pub struct NatsSourceTable {
    spec: Arc<SourceSpec>,
}

impl NatsSourceTable {
    /// Checks `options` against `schema`; does not connect.
    pub fn try_new(
        name: &str,
        schema: SchemaRef,
        options: &HashMap<String, String>,
    ) -> Result<Self> {
        let options = Options::parse_for(&SOURCE_OPTIONS, options, false)?;
        let config = SourceConfig::from_options(&options)?;
        let stream = match &config.input {
            Input::JetStream(input) => Some(input.stream.clone()),
            Input::Core { .. } => None,
        };
        let decoder = RowDecoder::try_new(Arc::clone(&schema), stream)?;
        Ok(NatsSourceTable {
            spec: Arc::new(SourceSpec {
                name: name.to_string(),
                schema,
                options,
                config,
                decoder,
            }),
        })
    }
}

#[async_trait]
impl TableProvider for NatsSourceTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.spec.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(NatsSourceExec::try_new(
            Arc::clone(&self.spec),
            projection.cloned(),
        )?))
    }
}
