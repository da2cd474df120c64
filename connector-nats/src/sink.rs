//! The DataFusion side: a write-only table whose `insert_into` plans a `DataSinkExec`
//! over [`NatsSink`].
//!
//! `write_all` orchestrates only: connect (and check the stream), then for each batch
//! encode (pure), mark the rows that cannot be delivered, apply `on_error`, and hand the
//! batch to the delivery mode (core, JetStream, exactly-once). It returns the number of
//! rows the server confirmed; when it fails, every row counted in the error's "published"
//! figure was confirmed. Each execution gets a fresh sink with its own metrics.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use tracing::info;

use crate::connect::Connection;
use crate::deliver::core::CorePublisher;
use crate::deliver::jetstream::{self, atomic::Atomic, stream::Target, window::Window};
use crate::deliver::retry::Retry;
use crate::deliver::rows::{Limit, Messages};
use crate::encode::ahead::EncodedBatches;
use crate::encode::{EncodedBatch, RowEncoder};
use crate::metrics::SinkMetrics;
use crate::options::Options;
use crate::options::config::{ConnectionConfig, Mode, SinkConfig};

/// A table that publishes the rows inserted into it.
#[derive(Debug)]
pub struct NatsSinkTable {
    sink: Arc<NatsSink>,
}

/// The sink behind [`NatsSinkTable`]: validated options, the encoding plan, and the
/// metrics of one execution.
#[derive(Clone)]
pub struct NatsSink {
    /// The table's name: the `sink` label of its Prometheus series.
    name: String,
    schema: SchemaRef,
    options: Options,
    config: SinkConfig,
    encoder: RowEncoder,
    metrics: SinkMetrics,
}

impl NatsSinkTable {
    /// Checks the options against `schema` (routing columns exist and hold strings, every
    /// payload column has a JSON form). Does not connect. `name` labels the sink's
    /// metrics.
    pub fn try_new(name: &str, schema: SchemaRef, options: Options) -> crate::error::Result<Self> {
        let config = SinkConfig::from_options(&options)?;
        let encoder = RowEncoder::from_config(&schema, &config)?;
        Ok(NatsSinkTable {
            sink: Arc::new(NatsSink {
                name: name.to_string(),
                schema,
                options,
                config,
                encoder,
                metrics: SinkMetrics::new(name),
            }),
        })
    }
}

#[async_trait]
impl TableProvider for NatsSinkTable {
    fn schema(&self) -> SchemaRef {
        self.sink.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Err(DataFusionError::Plan(
            "a nats_sink table is write-only: INSERT INTO it; its messages can be watched with `streamsql sub SUBJECT`".into(),
        ))
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(DataFusionError::Plan(format!(
                "a nats_sink table only appends (published messages cannot be replaced); got {insert_op}"
            )));
        }
        // A sink per execution, so that its metrics are this statement's.
        let sink = NatsSink {
            metrics: SinkMetrics::new(&self.sink.name),
            ..(*self.sink).clone()
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

impl fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSink")
            .field("name", &self.name)
            .field("options", &self.options)
            .field("schema", &self.schema)
            .finish()
    }
}

impl DisplayAs for NatsSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let delivery = match &self.config.mode {
            Mode::Core => "core",
            Mode::JetStream(js) if js.atomic_batch.is_some() => "jetstream exactly_once",
            Mode::JetStream(_) => "jetstream at_least_once",
        };
        write!(f, "NatsSink: name={} delivery=[{delivery}]", self.name)?;
        for (key, value) in self.options.redacted() {
            write!(f, " {key}={value}")?;
        }
        let payload: Vec<&str> = self.encoder.payload_column_names().collect();
        write!(f, " payload=[{}]", payload.join(", "))
    }
}

#[async_trait]
impl DataSink for NatsSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn metrics(&self) -> Option<datafusion::physical_plan::metrics::MetricsSet> {
        Some(self.metrics.snapshot())
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let _reset = ResetGauges(&self.metrics);
        let result = self.publish_all(data).await;
        if let Err(e) = &result {
            self.metrics.failed(error_class(e));
        }
        result
    }
}

/// Sets the sink's gauges back when an execution ends, also when its future is dropped
/// (cancelled), so the process-wide series do not keep a finished statement's values.
struct ResetGauges<'a>(&'a SinkMetrics);

impl Drop for ResetGauges<'_> {
    fn drop(&mut self) {
        self.0.in_flight(0);
        self.0.connected(false);
        self.0.recovered();
    }
}

/// The error class of a failed statement, for the `errors` series.
fn error_class(err: &DataFusionError) -> &'static str {
    match err.find_root() {
        DataFusionError::External(e) => e
            .downcast_ref::<crate::error::NatsSinkError>()
            .map_or("query", |e| e.class()),
        _ => "query",
    }
}

impl NatsSink {
    /// Publishes every row of `data`; returns the number confirmed.
    async fn publish_all(&self, data: SendableRecordBatchStream) -> Result<u64> {
        let metrics = &self.metrics;
        let connection_config = ConnectionConfig::from_options(&self.options)?;
        let mut retry = Retry::new(connection_config.retry_timeout, metrics.clone());
        let connection = Connection::open(&connection_config, &mut retry, 0, metrics).await?;
        let (mut delivery, mut captures) =
            Delivery::start(connection, &self.config, &mut retry).await?;
        let mut encoded_batches =
            EncodedBatches::spawn(data, self.encoder.clone(), metrics.clone());
        let mut rows_before = 0u64;
        while let Some(encoded) = encoded_batches.next().await {
            let mut encoded = encoded?;
            if let Some(captures) = captures.as_mut() {
                captures.check(&mut encoded);
            }
            delivery.messages().check_sizes(&mut encoded);
            if encoded.rejections().next().is_some() {
                if delivery.messages().fails() {
                    // Settle what is in flight first, so the error's count is exact.
                    delivery.flush(&mut retry, metrics).await?;
                    delivery
                        .messages()
                        .check_fail(&encoded, rows_before, metrics.published())?;
                }
                delivery.messages().log_rejections(&encoded, rows_before);
            }
            let rows = encoded.len() as u64;
            delivery
                .send(encoded, rows_before, &mut retry, metrics)
                .await?;
            rows_before += rows;
        }
        delivery.flush(&mut retry, metrics).await?;
        delivery.close().await;
        info!(
            rows = metrics.published(),
            duplicates = metrics.duplicates_so_far(),
            retries = retry.total(),
            "nats_sink: all rows published and confirmed"
        );
        Ok(metrics.published())
    }
}

/// The delivery mode of one execution.
enum Delivery {
    Core(CorePublisher, Messages),
    JetStream(Window),
    ExactlyOnce(Atomic),
}

impl Delivery {
    /// Sets up the mode on `connection`; JetStream also returns the stream's subject
    /// filters, against which each row's subject is checked.
    async fn start(
        mut connection: Connection,
        config: &SinkConfig,
        retry: &mut Retry,
    ) -> crate::error::Result<(Self, Option<jetstream::Captures>)> {
        let js_config = match &config.mode {
            Mode::Core => {
                let limit = Limit {
                    bytes: connection.max_payload(),
                    source: "the server's max_payload",
                };
                let messages = Messages::new(config, None, limit);
                let publisher = CorePublisher::new(connection, config.confirm_timeout).await?;
                return Ok((Delivery::Core(publisher, messages), None));
            }
            Mode::JetStream(js_config) => js_config,
        };
        let setup = jetstream::setup(&mut connection, js_config, config, retry).await?;
        let expected = js_config.expected_stream.then(|| js_config.stream.clone());
        let messages = Messages::new(config, expected, setup.limit);
        let target = Target {
            connection,
            js: setup.js,
            stream: js_config.stream.clone(),
            confirm_timeout: config.confirm_timeout,
            max_in_flight: js_config.max_in_flight,
        };
        let delivery = match js_config.atomic_batch {
            Some(size) => Delivery::ExactlyOnce(Atomic::new(target, size, messages)),
            None => Delivery::JetStream(Window::new(target, js_config.max_in_flight, messages)),
        };
        Ok((delivery, Some(setup.captures)))
    }

    fn messages(&mut self) -> &mut Messages {
        match self {
            Delivery::Core(_, messages) => messages,
            Delivery::JetStream(window) => window.messages(),
            Delivery::ExactlyOnce(atomic) => atomic.messages(),
        }
    }

    async fn send(
        &mut self,
        batch: EncodedBatch,
        rows_before: u64,
        retry: &mut Retry,
        metrics: &SinkMetrics,
    ) -> crate::error::Result<()> {
        match self {
            Delivery::Core(publisher, messages) => {
                publisher
                    .send(&batch, rows_before, messages, retry, metrics)
                    .await
            }
            Delivery::JetStream(window) => window.push(batch, rows_before, retry, metrics).await,
            Delivery::ExactlyOnce(atomic) => atomic.send(&batch, rows_before, retry, metrics).await,
        }
    }

    /// Waits until everything sent is confirmed.
    async fn flush(
        &mut self,
        retry: &mut Retry,
        metrics: &SinkMetrics,
    ) -> crate::error::Result<()> {
        match self {
            Delivery::JetStream(window) => window.flush(retry, metrics).await,
            // Core and exactly-once confirm each batch before `send` returns.
            Delivery::Core(..) | Delivery::ExactlyOnce(_) => Ok(()),
        }
    }

    async fn close(self) {
        match self {
            Delivery::Core(publisher, _) => publisher.close().await,
            Delivery::JetStream(window) => window.close().await,
            Delivery::ExactlyOnce(atomic) => atomic.close().await,
        }
    }
}
