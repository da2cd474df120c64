//! The scan of a source table: a leaf plan node with one partition, unbounded unless
//! `stop_at = 'end'`, emitting each batch as soon as it is read (DataFusion keeps the
//! plan streaming for an unbounded leaf). The node also carries the statement's
//! acknowledgement state: the host calls [`NatsSourceExec::statement_confirmed`] once the
//! statement's output is confirmed.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{
    Boundedness, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use crate::lineage::OutputProgress;
use crate::metrics::prometheus::SourceSeries;
use crate::source::SourceSpec;
use crate::source::ack::Acks;
use crate::source::health::Health;
use crate::source::options::Input;
use crate::source::read::{Counters, Reader};

/// The source's metric names, shown by `EXPLAIN ANALYZE`.
pub mod names {
    /// Messages read (rows, skipped and dead-lettered ones together).
    pub const MESSAGES_READ: &str = "messages_read";
    /// Messages that did not decode and were skipped (`on_error = 'skip'`).
    pub const SKIPPED: &str = "skipped_messages";
    /// Messages that did not decode and went to `dead_letter_subject`.
    pub const DEAD_LETTERED: &str = "dead_lettered_messages";
    /// The consumer's messages waiting at the server, as of the last one read.
    pub const PENDING: &str = "pending_messages";
}

/// How a running scan stands, for a status display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceReading {
    /// Rows produced: messages read, less those skipped or dead-lettered.
    pub rows: u64,
    /// The consumer's messages waiting at the server; `None` for a core subscription,
    /// which has no such count.
    pub pending: Option<u64>,
    /// Whether the client is connected; `None` before the read started.
    pub connected: Option<bool>,
    /// Why reading fails, while it does (the client reconnecting, a missed heartbeat).
    pub retrying: Option<String>,
}

/// Reads a NATS source table.
pub struct NatsSourceExec {
    spec: Arc<SourceSpec>,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    acks: Arc<Acks>,
    health: Arc<Health>,
    metrics: ExecutionPlanMetricsSet,
    series: SourceSeries,
}

impl NatsSourceExec {
    pub(crate) fn try_new(spec: Arc<SourceSpec>, projection: Option<Vec<usize>>) -> Result<Self> {
        let schema = match &projection {
            Some(columns) => Arc::new(spec.schema.project(columns)?),
            None => Arc::clone(&spec.schema),
        };
        let boundedness = if spec.config.bounded {
            Boundedness::Bounded
        } else {
            Boundedness::Unbounded {
                requires_infinite_memory: false,
            }
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            boundedness,
        );
        let series = SourceSeries::new(&spec.name);
        Ok(NatsSourceExec {
            spec,
            projection,
            schema,
            properties: Arc::new(properties),
            acks: Arc::new(Acks::new(series.clone())),
            health: Arc::new(Health::new(series.read_failures.clone())),
            metrics: ExecutionPlanMetricsSet::new(),
            series,
        })
    }

    /// How the scan stands now (read from its metrics).
    pub fn reading(&self) -> SourceReading {
        let metrics = self.metrics.clone_inner();
        let value = |name: &str| metrics.sum_by_name(name).map_or(0, |v| v.as_usize() as u64);
        let rows = value(names::MESSAGES_READ)
            .saturating_sub(value(names::SKIPPED))
            .saturating_sub(value(names::DEAD_LETTERED));
        let pending =
            matches!(self.spec.config.input, Input::JetStream(_)).then(|| value(names::PENDING));
        SourceReading {
            rows,
            pending,
            connected: self.health.connected(),
            retrying: self.health.why_retrying(),
        }
    }

    /// The durable consumer this scan reads continuously, acknowledging each message
    /// once its rows are confirmed: such a scan must be linked to its sink before it
    /// runs ([`crate::source::link_statement`]).
    pub fn consumer_to_follow(&self) -> Option<&str> {
        match &self.spec.config.input {
            Input::JetStream(input) if !self.spec.config.bounded => input.consumer.as_deref(),
            _ => None,
        }
    }

    /// Acknowledge as `output` settles rows.
    pub(crate) fn follow(&self, output: Arc<OutputProgress>) {
        self.acks.follow(output);
    }

    /// Called by the host once the statement this scan belongs to succeeded and its
    /// output is confirmed (an INSERT's sink confirmed every row, a query's result was
    /// shown); `complete` is false when a stop cut the output short or the result could
    /// not be shown. A durable
    /// consumer's messages read by a bounded scan are acknowledged then, and only then,
    /// if the output is complete (a continuous scan acknowledges as its sink confirms,
    /// and settles the rest then); returns once the server processed the
    /// acknowledgements. Without this call, what is not acknowledged is handed back when
    /// the plan is dropped.
    pub fn statement_confirmed(&self, complete: bool) -> BoxFuture<'static, Result<()>> {
        let acks = Arc::clone(&self.acks);
        async move {
            acks.commit(complete)
                .await
                .map(drop)
                .map_err(DataFusionError::from)
        }
        .boxed()
    }
}

impl fmt::Debug for NatsSourceExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSourceExec")
            .field("table", &self.spec.name)
            .field("options", &self.spec.options)
            .finish_non_exhaustive()
    }
}

impl DisplayAs for NatsSourceExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Options as given, secrets masked.
        let options: Vec<String> = self
            .spec
            .options
            .redacted()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        write!(
            f,
            "NatsSourceExec: table={}, options=[{}]",
            self.spec.name,
            options.join(", ")
        )
    }
}

impl ExecutionPlan for NatsSourceExec {
    fn name(&self) -> &str {
        "NatsSourceExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        leaf(self, children)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        leaf(self, children)
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "NatsSourceExec has one partition, asked for {partition}"
            )));
        }
        let spec = Arc::clone(&self.spec);
        let acks = Arc::clone(&self.acks);
        let health = Arc::clone(&self.health);
        let projection = self.projection.clone();
        let counter = |name| MetricBuilder::new(&self.metrics).global_counter(name);
        let counters = Counters {
            read: counter(names::MESSAGES_READ),
            skipped: counter(names::SKIPPED),
            dead_lettered: counter(names::DEAD_LETTERED),
            pending: MetricBuilder::new(&self.metrics).global_gauge(names::PENDING),
            series: self.series.clone(),
        };
        let batches = futures::stream::once(async move {
            Reader::open(spec, acks, health, projection, counters).await
        })
        .flat_map(|opened| match opened {
            Ok(reader) => futures::stream::unfold(reader, |mut reader| async move {
                reader.next_batch().await.map(|batch| (batch, reader))
            })
            .boxed(),
            Err(e) => futures::stream::once(async move { Err(DataFusionError::from(e)) }).boxed(),
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            batches,
        )))
    }
}

fn leaf(
    node: Arc<NatsSourceExec>,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    if children.is_empty() {
        Ok(node)
    } else {
        Err(DataFusionError::Internal(
            "NatsSourceExec is a leaf and takes no children".into(),
        ))
    }
}
