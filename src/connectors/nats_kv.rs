//! Adapts the `nats_kv` sink of the `connector-nats` plugin crate (writes into a NATS
//! key-value bucket) to the engine's [`Connector`] trait. As for the other NATS
//! connectors, everything NATS-specific lives in the plugin.

use std::sync::Arc;

use connector_nats::KV_OPTIONS;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{TableProvider, TableProviderFactory};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::ExecutionPlan;

use super::nats::{option_docs, sink_delivery, to_hash_map};
use crate::registry::{Connector, ConnectorKind, DeliveryMetrics, OptionDoc, OptionMap};

/// The `nats_kv` connector, backed by `connector-nats`. It shares connections with
/// `nats_sink`: one `CREATE CONNECTION` serves both, and the sink's plan node and
/// metrics, so each reports only the nodes made for it.
#[derive(Debug, Default, Clone, Copy)]
pub struct NatsKvConnector;

impl Connector for NatsKvConnector {
    fn name(&self) -> &str {
        connector_nats::KV_CONNECTOR_NAME
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }

    fn options(&self) -> Vec<OptionDoc> {
        option_docs(&KV_OPTIONS)
    }

    fn validate_connection_options(&self, options: &OptionMap) -> Result<()> {
        connector_nats::validate_kv_options(&to_hash_map(options), true)
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    fn create_table(
        &self,
        name: &str,
        schema: SchemaRef,
        options: OptionMap,
    ) -> Result<Arc<dyn TableProvider>> {
        connector_nats::kv_table(name, schema, options.into_iter().collect())
    }

    fn table_factory(&self) -> Option<(String, Arc<dyn TableProviderFactory>)> {
        Some((
            connector_nats::KV_FILE_TYPE.to_string(),
            Arc::new(connector_nats::NatsKvFactory),
        ))
    }

    fn delivery(&self, node: &dyn ExecutionPlan) -> Option<DeliveryMetrics> {
        sink_delivery(self.name(), node)
    }

    fn connection_family(&self) -> &str {
        connector_nats::CONNECTOR_NAME
    }
}
