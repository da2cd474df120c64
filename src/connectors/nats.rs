//! Adapts the `connector-nats` plugin crate to the engine's [`Connector`] trait.
//!
//! Nothing NATS-specific is decided here: option declarations, validation (with the
//! closest-name suggestion), `${VAR}` resolution, the sink, its metric names and its
//! Prometheus series all belong to `connector-nats`. This file only maps its types
//! onto the engine's; it is the only place in the engine that names the plugin.

use std::collections::HashMap;
use std::sync::Arc;

use connector_nats::metrics::{RecentRejections, names};
use connector_nats::options::{OPTIONS, OptionScope as NatsScope, OptionTable};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{TableProvider, TableProviderFactory};
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricValue;

use crate::registry::{
    Connector, ConnectorKind, DeliveryMetrics, OptionDoc, OptionMap, OptionScope,
};

/// The `nats_sink` connector, backed by `connector-nats`.
#[derive(Debug, Default, Clone, Copy)]
pub struct NatsSinkConnector;

impl Connector for NatsSinkConnector {
    fn name(&self) -> &str {
        connector_nats::CONNECTOR_NAME
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Sink
    }

    fn options(&self) -> Vec<OptionDoc> {
        option_docs(&OPTIONS)
    }

    fn validate_connection_options(&self, options: &OptionMap) -> Result<()> {
        connector_nats::validate_options(&to_hash_map(options), true)
            .map_err(|e| DataFusionError::External(Box::new(e)))
    }

    fn create_table(
        &self,
        name: &str,
        schema: SchemaRef,
        options: OptionMap,
    ) -> Result<Arc<dyn TableProvider>> {
        connector_nats::sink_table(name, schema, options.into_iter().collect())
    }

    fn table_factory(&self) -> Option<(String, Arc<dyn TableProviderFactory>)> {
        Some((
            connector_nats::FILE_TYPE.to_string(),
            Arc::new(connector_nats::NatsSinkFactory),
        ))
    }

    fn delivery(&self, node: &dyn ExecutionPlan) -> Option<DeliveryMetrics> {
        sink_delivery(self.name(), node)
    }

    fn register_series(&self, registry: &mut prometheus_client::registry::Registry) {
        connector_nats::telemetry::register(registry);
    }
}

/// The delivery figures of `node` when it is the plugin's sink made for `connector`
/// (`nats_sink` and `nats_kv` share the plan node and its metrics, so the node says
/// which). The sink publishes its counts as DataFusion metrics under the names of
/// `connector_nats::metrics::names`.
pub(super) fn sink_delivery(connector: &str, node: &dyn ExecutionPlan) -> Option<DeliveryMetrics> {
    if connector_nats::sink_connector(node)? != connector {
        return None;
    }
    let metrics = node.metrics()?;
    let confirmed = metrics.sum_by_name(names::PUBLISHED_ROWS)?;
    let count = |name| metrics.sum_by_name(name).map_or(0, |v| v.as_usize() as u64);
    // A custom metric that displays the reason and counts 1 while retrying.
    let retrying = metrics
        .iter()
        .find(|m| m.value().name() == names::RETRYING)
        .filter(|m| m.value().as_usize() > 0)
        .map(|m| m.value().to_string());
    let recent_rejections = metrics
        .iter()
        .find_map(|m| match m.value() {
            MetricValue::Custom { name, value } if name == names::REJECTIONS => value
                .as_any()
                .downcast_ref::<RecentRejections>()
                .map(RecentRejections::recent),
            _ => None,
        })
        .unwrap_or_default();
    Some(DeliveryMetrics {
        connected: metrics
            .sum_by_name(names::CONNECTED)
            .map(|v| v.as_usize() > 0),
        recent_rejections,
        confirmed: confirmed.as_usize() as u64,
        bytes: count(names::PUBLISHED_BYTES),
        duplicates: count(names::DUPLICATES),
        skipped: count(names::SKIPPED),
        dead_lettered: count(names::DEAD_LETTERED),
        retries: count(names::RETRIES),
        in_flight: count(names::IN_FLIGHT),
        in_flight_bytes: count(names::IN_FLIGHT_BYTES),
        retrying,
    })
}

/// The engine's view of a plugin option table.
pub(super) fn option_docs(table: &OptionTable) -> Vec<OptionDoc> {
    table
        .iter()
        .map(|spec| OptionDoc {
            name: spec.name,
            scope: match spec.scope {
                NatsScope::Connection => OptionScope::Connection,
                NatsScope::Sink | NatsScope::Source => OptionScope::Table,
            },
            default: spec.default,
            secret: spec.secret,
            doc: spec.doc,
        })
        .collect()
}

pub(super) fn to_hash_map(options: &OptionMap) -> HashMap<String, String> {
    options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::registry::option_map as options;

    #[test]
    fn declares_the_plugin_options_with_engine_scopes() {
        let docs = NatsSinkConnector.options();
        let servers = docs.iter().find(|d| d.name == "servers").unwrap();
        assert_eq!(servers.scope, OptionScope::Connection);
        let subject = docs.iter().find(|d| d.name == "subject_field").unwrap();
        assert_eq!(subject.scope, OptionScope::Table);
        assert!(docs.iter().find(|d| d.name == "password").unwrap().secret);
        // The engine declares its own keys; the plugin must not.
        assert!(
            !docs
                .iter()
                .any(|d| d.name == "connector" || d.name == "connection")
        );
    }

    #[test]
    fn unknown_connection_option_gets_a_suggestion() {
        let err = NatsSinkConnector
            .validate_connection_options(&options(&[("usrname", "u")]))
            .unwrap_err();
        let message = err.find_root().message().to_string();
        assert!(
            message.contains("'usrname'") && message.contains("username"),
            "{message}"
        );
    }

    #[test]
    fn sink_options_are_refused_in_a_connection() {
        assert!(
            NatsSinkConnector
                .validate_connection_options(&options(&[("subject", "a.b")]))
                .is_err()
        );
        assert!(
            NatsSinkConnector
                .validate_connection_options(&options(&[("servers", "nats://127.0.0.1:4222")]))
                .is_ok()
        );
    }

    #[test]
    fn creates_a_sink_table_with_the_given_schema() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("subject", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let table = NatsSinkConnector
            .create_table(
                "t",
                Arc::clone(&schema),
                options(&[("subject_field", "subject")]),
            )
            .unwrap();
        assert_eq!(table.schema(), schema);
        let err = NatsSinkConnector
            .create_table("t", schema, options(&[("subject_field", "nope")]))
            .unwrap_err();
        assert!(err.find_root().message().contains("nope"), "{err}");
    }

    #[tokio::test]
    async fn delivery_is_read_from_the_sink_node_of_a_plan() {
        use datafusion::logical_expr::dml::InsertOp;
        use datafusion::physical_plan::empty::EmptyExec;
        use datafusion::prelude::SessionContext;

        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let table = NatsSinkConnector
            .create_table("t", Arc::clone(&schema), options(&[("subject", "a.b")]))
            .unwrap();
        let input = Arc::new(EmptyExec::new(schema));
        let state = SessionContext::new().state();
        let plan = table
            .insert_into(&state, input.clone(), InsertOp::Append)
            .await
            .unwrap();
        // Nothing ran: every figure is zero, and the sink is neither connected nor
        // retrying.
        let delivery = NatsSinkConnector
            .delivery(plan.as_ref())
            .expect("a NATS sink node");
        assert_eq!(
            delivery,
            DeliveryMetrics {
                connected: Some(false),
                ..DeliveryMetrics::default()
            }
        );
        // Found through the registry from the plan's root; a plan without the sink has none.
        let mut registry = crate::registry::Registry::new();
        registry.register(Arc::new(NatsSinkConnector));
        registry.register(Arc::new(super::super::NatsKvConnector));
        assert_eq!(
            registry.delivery_by(plan.as_ref()),
            Some(("nats_sink".to_string(), delivery.clone()))
        );
        assert_eq!(registry.delivery(input.as_ref()), None);
        assert_eq!(NatsSinkConnector.delivery(input.as_ref()), None);

        // A nats_kv table's node is the same sink, credited to nats_kv alone (which sorts
        // first in the registry).
        let kv_schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let kv = super::super::NatsKvConnector
            .create_table(
                "kv",
                Arc::clone(&kv_schema),
                options(&[("bucket", "b"), ("key_field", "k")]),
            )
            .unwrap();
        let kv_plan = kv
            .insert_into(
                &state,
                Arc::new(EmptyExec::new(kv_schema)),
                InsertOp::Append,
            )
            .await
            .unwrap();
        assert_eq!(NatsSinkConnector.delivery(kv_plan.as_ref()), None);
        assert_eq!(
            registry.delivery_by(kv_plan.as_ref()),
            Some(("nats_kv".to_string(), delivery))
        );
    }

    #[test]
    fn registers_the_plugin_series() {
        let mut prometheus = prometheus_client::registry::Registry::default();
        NatsSinkConnector.register_series(&mut prometheus);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &prometheus).unwrap();
        assert!(text.contains("nats_sink_rows_published"), "{text}");
    }
}
