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
use std::time::Duration;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::sink::{DataSink, DataSinkExec};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::logical_expr::{Expr, TableType};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan};
use tracing::{Instrument, error_span, info};

use crate::connect::Connection;
use crate::deliver::core;
use crate::deliver::driver::{JsSettings, Link};
use crate::deliver::jetstream::window::{Window, WindowLimit};
use crate::deliver::jetstream::{self, atomic::Atomic, stream::StreamAcks};
use crate::deliver::retry::Retry;
use crate::deliver::rows::{Limit, RowPlanner};
use crate::encode::ahead::EncodedBatches;
use crate::encode::{EncodedBatch, RowEncoder};
use crate::lineage::OutputProgress;
use crate::metrics::SinkMetrics;
use crate::options::Options;
use crate::options::config::{ConnectionConfig, Mode as ConfigMode, SinkConfig, SubjectSpec};

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
    /// The rows this execution took and settled, for sources that acknowledge on it.
    progress: Arc<OutputProgress>,
}

impl NatsSinkTable {
    /// Checks the options against `schema` (routing columns exist and hold strings, every
    /// payload column has a JSON form). Does not connect. `name` labels the sink's
    /// metrics.
    pub fn try_new(name: &str, schema: SchemaRef, options: Options) -> crate::error::Result<Self> {
        let config = SinkConfig::from_options(&options)?;
        Self::with_config(name, schema, options, config)
    }

    /// [`NatsSinkTable::try_new`] with the configuration built already (a connector that
    /// maps its own options onto the sink's, such as `nats_kv`).
    pub(crate) fn with_config(
        name: &str,
        schema: SchemaRef,
        options: Options,
        config: SinkConfig,
    ) -> crate::error::Result<Self> {
        let encoder = RowEncoder::from_config(&schema, &config)?;
        Ok(NatsSinkTable {
            sink: Arc::new(NatsSink {
                name: name.to_string(),
                schema,
                options,
                config,
                encoder,
                metrics: SinkMetrics::new(name),
                progress: Arc::default(),
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
        Err(DataFusionError::Plan(format!(
            "a {} table is write-only: INSERT INTO it; its messages can be watched with `streamsql sub SUBJECT`",
            self.sink.options.connector()
        )))
    }

    async fn insert_into(
        &self,
        _state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if insert_op != InsertOp::Append {
            return Err(DataFusionError::Plan(format!(
                "a {} table only appends (published messages cannot be replaced); got {insert_op}",
                self.sink.options.connector()
            )));
        }
        // A sink per execution, so that its metrics are this statement's.
        let sink = NatsSink {
            metrics: SinkMetrics::new(&self.sink.name),
            progress: Arc::default(),
            ..(*self.sink).clone()
        };
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

impl NatsSink {
    /// The connector this sink was made for (`nats_sink` or `nats_kv`), so that a host
    /// credits its figures to the right one.
    pub fn connector(&self) -> &'static str {
        self.options.connector()
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
            ConfigMode::Core => "core",
            ConfigMode::JetStream(js) if js.atomic_batch.is_some() => "jetstream exactly_once",
            ConfigMode::JetStream(_) if matches!(self.config.subject, SubjectSpec::Key(_)) => {
                "kv at_least_once, in key order"
            }
            ConfigMode::JetStream(_) => "jetstream at_least_once",
        };
        write!(f, "NatsSink: name={} delivery=[{delivery}]", self.name)?;
        for (key, value) in self.options.redacted() {
            write!(f, " {key}={value}")?;
        }
        let payload = self.encoder.payload_column_names();
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
        // Each log line names the table it is about: a script may run several sinks. At
        // error level, so that any filter showing the lines keeps their context.
        let span = error_span!("sink", connector = %self.connector(), table = %self.name);
        let result = self.publish_all(data).instrument(span).await;
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
        self.0.in_flight(0, 0);
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
    /// The rows this execution took and settled.
    pub(crate) fn progress(&self) -> &Arc<OutputProgress> {
        &self.progress
    }

    /// Publishes every row of `data`; returns the number confirmed. A failure reports
    /// the rows confirmed before it, counted in one place: the metrics.
    async fn publish_all(&self, data: SendableRecordBatchStream) -> Result<u64> {
        let confirmed = |e| with_confirmed(e, self.metrics.published());
        self.deliver(data).await.map_err(confirmed)
    }

    async fn deliver(&self, data: SendableRecordBatchStream) -> Result<u64> {
        let metrics = &self.metrics;
        let connection_config = ConnectionConfig::from_options(&self.options)?;
        let mut retry = Retry::new(connection_config.retry_timeout, metrics.clone());
        let connection = Connection::open(&connection_config, &mut retry, metrics).await?;
        let (mut delivery, mut captures) =
            Delivery::start(connection, &self.config, &mut retry, metrics).await?;
        let progress = &self.progress;
        let mut encoded_batches = EncodedBatches::spawn(
            data,
            self.encoder.clone(),
            metrics.clone(),
            Arc::clone(progress),
        );
        let mut rows_before = 0u64;
        loop {
            // While the next batch is not there, acks that arrive confirm their rows (and
            // let a source acknowledge its messages), also when the input goes quiet.
            let next = loop {
                tokio::select! {
                    next = encoded_batches.next() => break next,
                    taken = delivery.take_arriving(&mut retry), if delivery.settled() < rows_before => {
                        taken?;
                        progress.settled_through(delivery.settled());
                    }
                }
            };
            let Some(encoded) = next else {
                break;
            };
            let mut encoded = match encoded {
                Ok(encoded) => encoded,
                Err(e) => {
                    delivery.settle().await;
                    return Err(e);
                }
            };
            if let Some(captures) = captures.as_mut() {
                captures.check(&mut encoded);
            }
            delivery.planner().check_sizes(&mut encoded);
            if encoded.rejections().next().is_some() {
                if delivery.planner().fails() {
                    // The rows before the bad one are delivered (the server is fine), so
                    // the error's count is exact and a rerun can start after them.
                    delivery.flush(&mut retry).await?;
                    progress.settled_through(delivery.settled());
                    delivery.planner().check_fail(&encoded, rows_before)?;
                }
                delivery.planner().log_rejections(&encoded, rows_before);
                for (i, rejection) in encoded.rejections() {
                    metrics.rejected(rows_before + i as u64 + 1, &rejection.reason);
                }
            }
            let rows = encoded.len() as u64;
            delivery
                .send(encoded, rows_before, &mut retry, metrics)
                .await?;
            rows_before += rows;
            progress.settled_through(delivery.settled());
        }
        delivery.flush(&mut retry).await?;
        progress.settled_through(delivery.settled());
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

/// `err` with the count of rows confirmed before it, where it reports one.
fn with_confirmed(err: DataFusionError, confirmed: u64) -> DataFusionError {
    match err {
        DataFusionError::External(e) => match e.downcast::<crate::error::NatsSinkError>() {
            Ok(e) => e.with_confirmed(confirmed).into(),
            Err(e) => DataFusionError::External(e),
        },
        other => other,
    }
}

/// The delivery mode of one execution, and the link it publishes on.
struct Delivery {
    link: Link,
    mode: Mode,
    /// Rows handed to a mode that confirms each batch before `send` returns.
    sent: u64,
}

enum Mode {
    Core {
        planner: RowPlanner,
        confirm_timeout: Duration,
    },
    JetStream(Box<Window>),
    ExactlyOnce(Atomic),
}

impl Delivery {
    /// Sets up the mode on `connection`; JetStream also returns the stream's subject
    /// filters, against which each row's subject is checked.
    async fn start(
        connection: Connection,
        config: &SinkConfig,
        retry: &mut Retry,
        metrics: &SinkMetrics,
    ) -> crate::error::Result<(Self, Option<jetstream::Captures>)> {
        let js_config = match &config.mode {
            ConfigMode::Core => {
                let limit = Limit {
                    bytes: connection.max_payload(),
                    source: "the server's max_payload",
                };
                let mode = Mode::Core {
                    planner: RowPlanner::new(config, None, limit),
                    confirm_timeout: config.confirm_timeout,
                };
                let link = Link::new(connection, None);
                return Ok((
                    Delivery {
                        link,
                        mode,
                        sent: 0,
                    },
                    None,
                ));
            }
            ConfigMode::JetStream(js_config) => js_config,
        };
        let settings = JsSettings {
            confirm_timeout: config.confirm_timeout,
            max_in_flight: js_config.max_in_flight,
        };
        let mut link = Link::new(connection, Some(settings));
        let setup = jetstream::setup(&mut link, js_config, config, retry).await?;
        let expected = js_config.expected_stream.then(|| js_config.stream.clone());
        let planner = RowPlanner::new(config, expected, setup.limit)
            .with_dead_letter_limit(setup.dead_letter_limit);
        let acks = StreamAcks {
            stream: js_config.stream.clone(),
            confirm_timeout: config.confirm_timeout,
            subjects: setup.captures.filters.clone(),
        };
        let mode = match js_config.atomic_batch {
            Some(size) => Mode::ExactlyOnce(Atomic::new(acks, size, planner)),
            None => {
                let limit = WindowLimit {
                    messages: js_config.max_in_flight,
                    bytes: js_config.max_in_flight_bytes,
                };
                let window = Window::new(acks, limit, planner, metrics.clone());
                // A bucket's last message per key is its value: keep each key's in order.
                Mode::JetStream(Box::new(match config.subject {
                    SubjectSpec::Key(_) => window.one_per_subject(),
                    _ => window,
                }))
            }
        };
        Ok((
            Delivery {
                link,
                mode,
                sent: 0,
            },
            Some(setup.captures),
        ))
    }

    fn planner(&mut self) -> &mut RowPlanner {
        match &mut self.mode {
            Mode::Core { planner, .. } => planner,
            Mode::JetStream(window) => window.planner(),
            Mode::ExactlyOnce(atomic) => atomic.planner(),
        }
    }

    async fn send(
        &mut self,
        batch: EncodedBatch,
        rows_before: u64,
        retry: &mut Retry,
        metrics: &SinkMetrics,
    ) -> crate::error::Result<()> {
        let link = &mut self.link;
        let through = rows_before + batch.len() as u64;
        let sent = match &mut self.mode {
            Mode::Core {
                planner,
                confirm_timeout,
            } => {
                core::send(
                    &batch,
                    rows_before,
                    planner,
                    *confirm_timeout,
                    link,
                    retry,
                    metrics,
                )
                .await
            }
            Mode::JetStream(window) => window.push(batch, rows_before, link, retry).await,
            Mode::ExactlyOnce(atomic) => {
                atomic.send(&batch, rows_before, link, retry, metrics).await
            }
        };
        if sent.is_ok() {
            self.sent = through;
        }
        sent
    }

    /// Takes acks as they arrive, and retries a failed one, while the input is idle (see
    /// `Window::take_arriving`). The other modes confirm each batch before `send`
    /// returns, so this never returns there.
    async fn take_arriving(&mut self, retry: &mut Retry) -> crate::error::Result<()> {
        match &mut self.mode {
            Mode::JetStream(window) => window.take_arriving(&mut self.link, retry).await,
            Mode::Core { .. } | Mode::ExactlyOnce(_) => std::future::pending().await,
        }
    }

    /// How many of the statement's first rows are settled: confirmed, skipped or
    /// dead-lettered.
    fn settled(&self) -> u64 {
        match &self.mode {
            Mode::JetStream(window) => window.settled(),
            // Core and exactly-once confirm each batch before `send` returns.
            Mode::Core { .. } | Mode::ExactlyOnce(_) => self.sent,
        }
    }

    /// Waits until everything sent is confirmed.
    async fn flush(&mut self, retry: &mut Retry) -> crate::error::Result<()> {
        match &mut self.mode {
            Mode::JetStream(window) => window.flush(&mut self.link, retry).await,
            // Core and exactly-once confirm each batch before `send` returns.
            Mode::Core { .. } | Mode::ExactlyOnce(_) => Ok(()),
        }
    }

    /// Before the statement fails for its query's error: sends nothing more, and waits
    /// for the acks in flight, each at most until its deadline, without resending, so the
    /// error is not held up by retries (the count of confirmed rows it reports may then
    /// leave out rows the stream stored but whose ack did not come).
    async fn settle(&mut self) {
        match &mut self.mode {
            Mode::JetStream(window) => window.settle().await,
            // Core and exactly-once confirm each batch before `send` returns.
            Mode::Core { .. } | Mode::ExactlyOnce(_) => {}
        }
    }

    async fn close(self) {
        self.link.close().await;
    }
}
