//! Adapts the `nats_source` of the `connector-nats` plugin crate to the engine's
//! [`Connector`] trait. As for the sink (`nats.rs`), everything NATS-specific lives in
//! the plugin; this file maps its declarations and its plan node onto the engine's
//! types.

use std::sync::Arc;

use connector_nats::{NatsSourceExec, SOURCE_OPTIONS};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::ExecutionPlan;
use futures::future::BoxFuture;

use super::nats::{option_docs, to_hash_map};
use crate::registry::{Connector, ConnectorKind, OptionDoc, OptionMap, ReadingMetrics};

/// The `nats_source` connector, backed by `connector-nats`. It shares connections with
/// `nats_sink`: one `CREATE CONNECTION` serves both.
#[derive(Debug, Default, Clone, Copy)]
pub struct NatsSourceConnector;

impl Connector for NatsSourceConnector {
    fn name(&self) -> &str {
        connector_nats::SOURCE_CONNECTOR_NAME
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }

    fn options(&self) -> Vec<OptionDoc> {
        option_docs(&SOURCE_OPTIONS)
    }

    fn validate_connection_options(&self, options: &OptionMap) -> Result<()> {
        connector_nats::validate_source_options(&to_hash_map(options), true)
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    fn create_table(
        &self,
        name: &str,
        schema: SchemaRef,
        options: OptionMap,
    ) -> Result<Arc<dyn TableProvider>> {
        connector_nats::source_table(name, schema, options.into_iter().collect())
    }

    fn connection_family(&self) -> &str {
        connector_nats::CONNECTOR_NAME
    }

    fn reading(&self, node: &dyn ExecutionPlan) -> Option<ReadingMetrics> {
        let reading = node.downcast_ref::<NatsSourceExec>()?.reading();
        Some(ReadingMetrics {
            rows: reading.rows,
            pending: reading.pending,
            connected: reading.connected,
            retrying: reading.retrying,
        })
    }

    fn prepare_statement(&self, plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
        connector_nats::source::link_statement(plan)
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    fn statement_confirmed(
        &self,
        node: &dyn ExecutionPlan,
        complete: bool,
    ) -> Option<BoxFuture<'static, Result<()>>> {
        node.downcast_ref::<NatsSourceExec>()
            .map(|scan| scan.statement_confirmed(complete))
    }
}
