//! `datagen`: a source connector producing deterministic rows at a bounded rate.
//!
//! ```sql
//! CREATE TABLE gen (id BIGINT, name VARCHAR, ts TIMESTAMP)
//! WITH (connector = 'datagen', rows_per_second = '1000', row_limit = '5000');
//! ```
//!
//! Row `i` (from 0) holds: integers `i` (wrapping at the type's range), floats `i`,
//! strings `<column>-<i>`, booleans `i % 2 == 0`, timestamps and dates the time the
//! batch was made. Without `row_limit` the table is unbounded (marked infinite, so
//! `INSERT INTO sink SELECT ... FROM gen` streams) and ends only when the engine's
//! shutdown signal fires. The stream ends cleanly on that signal, also while it waits
//! for the rate limit, so the statement reading it completes normally.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Date32Array, Date64Array, Float32Array, Float64Array, Int8Array,
    Int16Array, Int32Array, Int64Array, LargeStringArray, RecordBatch, StringArray,
    StringViewArray, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray, UInt8Array, UInt16Array, UInt32Array,
    UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::catalog::TableProvider;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use tokio::time::Instant;

use crate::registry::{
    Connector, ConnectorKind, OptionDoc, OptionMap, OptionScope, check_option_names,
};
use crate::shutdown::ShutdownSignal;

/// The connector's name.
pub const DATAGEN: &str = "datagen";

/// Every option of `datagen`, declared once.
pub const DATAGEN_OPTIONS: &[OptionDoc] = &[
    OptionDoc {
        name: "rows_per_second",
        scope: OptionScope::Table,
        default: Some("1000"),
        secret: false,
        doc: "Upper bound on rows produced per second; '0' produces as fast as the reader takes them",
    },
    OptionDoc {
        name: "row_limit",
        scope: OptionScope::Table,
        default: None,
        secret: false,
        doc: "Rows to produce, then end; absent: unbounded, ends when the engine is stopped (Ctrl-C)",
    },
    OptionDoc {
        name: "batch_size",
        scope: OptionScope::Table,
        default: Some("1000"),
        secret: false,
        doc: "Most rows per record batch (a low rate makes smaller batches, ten a second)",
    },
];

/// The `datagen` connector. Its tables observe the engine's shutdown signal.
#[derive(Debug, Clone)]
pub struct DatagenConnector {
    shutdown: ShutdownSignal,
}

impl DatagenConnector {
    /// A connector whose tables end their streams when `shutdown` fires.
    pub fn new(shutdown: ShutdownSignal) -> Self {
        Self { shutdown }
    }
}

impl Connector for DatagenConnector {
    fn name(&self) -> &str {
        DATAGEN
    }

    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Source
    }

    fn options(&self) -> Vec<OptionDoc> {
        DATAGEN_OPTIONS.to_vec()
    }

    fn validate_connection_options(&self, options: &OptionMap) -> Result<()> {
        check_option_names(
            DATAGEN,
            DATAGEN_OPTIONS,
            &[OptionScope::Connection],
            options,
        )
    }

    fn create_table(
        &self,
        _name: &str,
        schema: SchemaRef,
        options: OptionMap,
    ) -> Result<Arc<dyn TableProvider>> {
        let config = DatagenConfig::from_options(&options)?;
        for field in schema.fields() {
            if !supported(field.data_type()) {
                return Err(DataFusionError::Plan(format!(
                    "datagen cannot generate column '{}' of type {}; supported: integers, \
                     floats, strings, booleans, timestamps, dates",
                    field.name(),
                    field.data_type()
                )));
            }
        }
        let partition = DatagenPartition {
            schema: Arc::clone(&schema),
            config,
            shutdown: self.shutdown.clone(),
        };
        let table = StreamingTable::try_new(schema, vec![Arc::new(partition)])?
            .with_infinite_table(config.row_limit.is_none());
        Ok(Arc::new(table))
    }
}

/// Parsed options of one `datagen` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatagenConfig {
    /// `None`: no rate limit.
    pub rows_per_second: Option<NonZeroU64>,
    /// `None`: unbounded.
    pub row_limit: Option<u64>,
    /// Most rows per batch.
    pub batch_size: NonZeroU64,
}

impl DatagenConfig {
    /// Parses and checks `options` (unknown keys are refused with a suggestion).
    pub fn from_options(options: &OptionMap) -> Result<Self> {
        check_option_names(DATAGEN, DATAGEN_OPTIONS, &[OptionScope::Table], options)?;
        let rows_per_second = NonZeroU64::new(number(options, "rows_per_second")?);
        let row_limit = match options.get("row_limit") {
            Some(_) => Some(number(options, "row_limit")?),
            None => None,
        };
        let batch_size = NonZeroU64::new(number(options, "batch_size")?).ok_or_else(|| {
            DataFusionError::Plan("option 'batch_size' of datagen must be at least '1'".to_string())
        })?;
        Ok(Self {
            rows_per_second,
            row_limit,
            batch_size,
        })
    }

    /// Rows in each batch: at most `batch_size`, and a tenth of the rate so a slow
    /// rate still delivers rows several times a second.
    fn batch_len(&self) -> u64 {
        match self.rows_per_second {
            Some(rate) => (rate.get() / 10).clamp(1, self.batch_size.get()),
            None => self.batch_size.get(),
        }
    }
}

/// The option's value (or its declared default) as a whole number.
fn number(options: &OptionMap, key: &str) -> Result<u64> {
    let default = DATAGEN_OPTIONS
        .iter()
        .find(|d| d.name == key)
        .and_then(|d| d.default);
    let Some(value) = options.get(key).map(String::as_str).or(default) else {
        return Ok(0);
    };
    value.trim().parse().map_err(|_| {
        DataFusionError::Plan(format!(
            "option '{key}' of datagen must be a whole number, as in {key} = '1000'; got '{value}'"
        ))
    })
}

fn supported(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Int8 | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float32
            | Float64
            | Utf8
            | LargeUtf8
            | Utf8View
            | Boolean
            | Timestamp(_, _)
            | Date32
            | Date64
    )
}

/// The single partition of a `datagen` table. Each execution starts again at row 0.
#[derive(Debug)]
struct DatagenPartition {
    schema: SchemaRef,
    config: DatagenConfig,
    shutdown: ShutdownSignal,
}

impl PartitionStream for DatagenPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let generator = Generator {
            schema: Arc::clone(&self.schema),
            config: self.config,
            shutdown: self.shutdown.clone(),
            next_row: 0,
            started: None,
            failed: false,
        };
        let stream = futures::stream::unfold(generator, |mut g| async move {
            g.next_batch().await.map(|batch| (batch, g))
        });
        Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        ))
    }
}

struct Generator {
    schema: SchemaRef,
    config: DatagenConfig,
    shutdown: ShutdownSignal,
    next_row: u64,
    started: Option<Instant>,
    failed: bool,
}

impl Generator {
    /// The next batch, `None` at the row limit, after an error, or once shutdown fired.
    async fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        if self.failed || self.shutdown.is_triggered() {
            return None;
        }
        let remaining = match self.config.row_limit {
            Some(limit) => limit.saturating_sub(self.next_row),
            None => u64::MAX,
        };
        if remaining == 0 {
            return None;
        }
        let len = self.config.batch_len().min(remaining);
        if let Some(rate) = self.config.rows_per_second {
            // Pace against the start time, not the previous batch, so slow consumers
            // and timer slack do not lower the average rate.
            let started = *self.started.get_or_insert_with(Instant::now);
            let due = started + Duration::from_secs_f64(self.next_row as f64 / rate.get() as f64);
            tokio::select! {
                biased;
                _ = self.shutdown.triggered() => return None,
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        match generate(&self.schema, self.next_row, len as usize, SystemTime::now()) {
            Ok(batch) => {
                self.next_row += len;
                Some(Ok(batch))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Rows `start..start + len` of a table with `schema`; `now` fills time columns.
pub fn generate(
    schema: &SchemaRef,
    start: u64,
    len: usize,
    now: SystemTime,
) -> Result<RecordBatch> {
    let rows = start..start + len as u64;
    let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let columns = schema
        .fields()
        .iter()
        .map(|field| {
            let name = field.name();
            // `as` wraps on purpose: an Int8 column counts 0..127, -128, ...
            let array: ArrayRef = match field.data_type() {
                DataType::Int8 => {
                    Arc::new(Int8Array::from_iter_values(rows.clone().map(|i| i as i8)))
                }
                DataType::Int16 => {
                    Arc::new(Int16Array::from_iter_values(rows.clone().map(|i| i as i16)))
                }
                DataType::Int32 => {
                    Arc::new(Int32Array::from_iter_values(rows.clone().map(|i| i as i32)))
                }
                DataType::Int64 => {
                    Arc::new(Int64Array::from_iter_values(rows.clone().map(|i| i as i64)))
                }
                DataType::UInt8 => {
                    Arc::new(UInt8Array::from_iter_values(rows.clone().map(|i| i as u8)))
                }
                DataType::UInt16 => Arc::new(UInt16Array::from_iter_values(
                    rows.clone().map(|i| i as u16),
                )),
                DataType::UInt32 => Arc::new(UInt32Array::from_iter_values(
                    rows.clone().map(|i| i as u32),
                )),
                DataType::UInt64 => Arc::new(UInt64Array::from_iter_values(rows.clone())),
                DataType::Float32 => Arc::new(Float32Array::from_iter_values(
                    rows.clone().map(|i| i as f32),
                )),
                DataType::Float64 => Arc::new(Float64Array::from_iter_values(
                    rows.clone().map(|i| i as f64),
                )),
                DataType::Utf8 => Arc::new(StringArray::from_iter_values(
                    rows.clone().map(|i| format!("{name}-{i}")),
                )),
                DataType::LargeUtf8 => Arc::new(LargeStringArray::from_iter_values(
                    rows.clone().map(|i| format!("{name}-{i}")),
                )),
                DataType::Utf8View => Arc::new(StringViewArray::from_iter_values(
                    rows.clone().map(|i| format!("{name}-{i}")),
                )),
                DataType::Boolean => Arc::new(BooleanArray::from_iter(
                    rows.clone().map(|i| Some(i % 2 == 0)),
                )),
                DataType::Timestamp(unit, tz) => {
                    let tz = tz.clone();
                    match unit {
                        TimeUnit::Second => Arc::new(
                            TimestampSecondArray::from_value(since_epoch.as_secs() as i64, len)
                                .with_timezone_opt(tz),
                        ),
                        TimeUnit::Millisecond => Arc::new(
                            TimestampMillisecondArray::from_value(
                                since_epoch.as_millis() as i64,
                                len,
                            )
                            .with_timezone_opt(tz),
                        ),
                        TimeUnit::Microsecond => Arc::new(
                            TimestampMicrosecondArray::from_value(
                                since_epoch.as_micros() as i64,
                                len,
                            )
                            .with_timezone_opt(tz),
                        ),
                        TimeUnit::Nanosecond => Arc::new(
                            TimestampNanosecondArray::from_value(
                                since_epoch.as_nanos() as i64,
                                len,
                            )
                            .with_timezone_opt(tz),
                        ),
                    }
                }
                DataType::Date32 => Arc::new(Date32Array::from_value(
                    (since_epoch.as_secs() / 86_400) as i32,
                    len,
                )),
                DataType::Date64 => Arc::new(Date64Array::from_value(
                    (since_epoch.as_secs() / 86_400 * 86_400_000) as i64,
                    len,
                )),
                other => {
                    return Err(DataFusionError::Execution(format!(
                        "datagen cannot generate column '{name}' of type {other}"
                    )));
                }
            };
            Ok(array)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Field, Int8Type, Int64Type, Schema};
    use futures::StreamExt;

    use super::*;
    use crate::shutdown::Shutdown;

    fn options(pairs: &[(&str, &str)]) -> OptionMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("small", DataType::Int8, true),
            Field::new("name", DataType::Utf8View, true),
            Field::new("x", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]))
    }

    #[test]
    fn values_follow_the_row_index() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let batch = generate(&schema(), 126, 3, now).unwrap();
        let ids = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(ids.values(), &[126, 127, 128]);
        let small = batch.column(1).as_primitive::<Int8Type>();
        assert_eq!(small.values(), &[126, 127, -128]);
        let names = batch.column(2).as_string_view();
        assert_eq!(
            names.iter().flatten().collect::<Vec<_>>(),
            ["name-126", "name-127", "name-128"]
        );
        let x = batch
            .column(3)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert_eq!(x.values(), &[126.0, 127.0, 128.0]);
        let ok = batch.column(4).as_boolean();
        assert_eq!(ok.iter().flatten().collect::<Vec<_>>(), [true, false, true]);
        let ts = batch
            .column(5)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(ts.value(2), 1_700_000_000_000_000);
        assert_eq!(ts.timezone(), Some("UTC"));
        assert_eq!(batch.column(5).null_count(), 0);
    }

    #[test]
    fn options_parse_with_defaults_and_errors() {
        let config = DatagenConfig::from_options(&options(&[])).unwrap();
        assert_eq!(config.rows_per_second, NonZeroU64::new(1000));
        assert_eq!(config.row_limit, None);
        assert_eq!(config.batch_len(), 100);
        let config =
            DatagenConfig::from_options(&options(&[("rows_per_second", "0"), ("row_limit", "5")]))
                .unwrap();
        assert_eq!(
            (config.rows_per_second, config.row_limit, config.batch_len()),
            (None, Some(5), 1000)
        );
        let err = DatagenConfig::from_options(&options(&[("row_limit", "ten")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("option 'row_limit' of datagen must be a whole number")
                && err.contains("'ten'"),
            "{err}"
        );
        let err = DatagenConfig::from_options(&options(&[("rows_per_secnd", "1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean 'rows_per_second'"), "{err}");
        let err = DatagenConfig::from_options(&options(&[("batch_size", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("'batch_size'"), "{err}");
    }

    #[test]
    fn unsupported_column_type_is_named() {
        let connector = DatagenConnector::new(Shutdown::new().signal());
        let schema = Arc::new(Schema::new(vec![Field::new("b", DataType::Binary, true)]));
        let err = connector
            .create_table("g", schema, OptionMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("column 'b' of type Binary"), "{err}");
    }

    fn partition(config: DatagenConfig, shutdown: &Shutdown) -> DatagenPartition {
        DatagenPartition {
            schema: schema(),
            config,
            shutdown: shutdown.signal(),
        }
    }

    #[tokio::test]
    async fn stops_at_the_row_limit() {
        let config = DatagenConfig::from_options(&options(&[
            ("rows_per_second", "0"),
            ("row_limit", "2500"),
        ]))
        .unwrap();
        let shutdown = Shutdown::new();
        let mut stream = partition(config, &shutdown).execute(Arc::new(TaskContext::default()));
        let mut sizes = Vec::new();
        while let Some(batch) = stream.next().await {
            sizes.push(batch.unwrap().num_rows());
        }
        assert_eq!(sizes, [1000, 1000, 500]);
    }

    #[tokio::test]
    async fn shutdown_ends_a_waiting_stream_promptly() {
        // One row a second: after the first batch the stream waits ~1 s for the next.
        let config = DatagenConfig::from_options(&options(&[("rows_per_second", "1")])).unwrap();
        let shutdown = Shutdown::new();
        let mut stream = partition(config, &shutdown).execute(Arc::new(TaskContext::default()));
        assert_eq!(stream.next().await.unwrap().unwrap().num_rows(), 1);
        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            trigger.trigger();
        });
        let started = std::time::Instant::now();
        let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap();
        assert!(next.is_none(), "the stream ends on shutdown");
        assert!(
            started.elapsed() < Duration::from_millis(800),
            "ended while waiting, not after"
        );
    }

    #[tokio::test]
    async fn rate_limit_spaces_batches() {
        // 50 rows/s in batches of 5: 15 rows take at least 0.2 s (batches at 0, .1, .2).
        let config = DatagenConfig::from_options(&options(&[
            ("rows_per_second", "50"),
            ("row_limit", "15"),
        ]))
        .unwrap();
        let shutdown = Shutdown::new();
        let started = std::time::Instant::now();
        let mut stream = partition(config, &shutdown).execute(Arc::new(TaskContext::default()));
        let mut rows = 0;
        while let Some(batch) = stream.next().await {
            rows += batch.unwrap().num_rows();
        }
        assert_eq!(rows, 15);
        assert!(
            started.elapsed() >= Duration::from_millis(190),
            "{:?}",
            started.elapsed()
        );
    }
}
