//! `datagen`: a source connector producing deterministic rows at a bounded rate.
//!
//! ```sql
//! CREATE TABLE gen (id BIGINT, name VARCHAR, ts TIMESTAMP)
//! WITH (connector = 'datagen', rows_per_second = '1000', row_limit = '5000');
//! ```
//!
//! Row `i` (from 0) holds: integers `i` (wrapping at the type's range), floats `i`,
//! strings `<column>-<i>`, booleans `i % 2 == 0`, timestamps and dates the time the
//! batch was made (see `datagen_values`). Without `row_limit` the table is unbounded (marked infinite, so
//! `INSERT INTO sink SELECT ... FROM gen` streams) and never ends by itself: the engine
//! stops reading it when its shutdown latch fires, as it stops any input
//! (`engine/stop.rs`).

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use tokio::time::Instant;

use crate::registry::{
    Connector, ConnectorKind, OptionDoc, OptionMap, OptionScope, ReadingMetrics, check_option_names,
};
use crate::sources::datagen_reading::{Partitions, Produced};
use crate::sources::datagen_values::{generate, supported};

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

/// The `datagen` connector. It reports the rows each running scan has produced
/// (`datagen_reading`).
#[derive(Debug, Default, Clone)]
pub struct DatagenConnector {
    partitions: Partitions,
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
        let produced = Arc::new(Produced::default());
        let partition: Arc<dyn PartitionStream> = Arc::new(DatagenPartition {
            schema: Arc::clone(&schema),
            config,
            produced: Arc::clone(&produced),
        });
        self.partitions.add(&partition, produced);
        let table = StreamingTable::try_new(schema, vec![partition])?
            .with_infinite_table(config.row_limit.is_none());
        Ok(Arc::new(table))
    }

    fn reading(&self, node: &dyn ExecutionPlan) -> Option<ReadingMetrics> {
        let scan = node.downcast_ref::<StreamingTableExec>()?;
        let rows = self.partitions.produced(scan.partitions())?;
        Some(ReadingMetrics {
            rows,
            ..ReadingMetrics::default()
        })
    }
}

/// The largest `batch_size`: a batch is allocated whole, so a huge value would abort
/// the process instead of failing the statement.
const MAX_BATCH_SIZE: u64 = 1 << 20;

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
        let batch_size = NonZeroU64::new(number(options, "batch_size")?)
            .filter(|size| size.get() <= MAX_BATCH_SIZE)
            .ok_or_else(|| {
                DataFusionError::Plan(format!(
                    "option 'batch_size' of datagen must be between '1' and '{MAX_BATCH_SIZE}'"
                ))
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

/// The single partition of a `datagen` table. Each execution starts again at row 0.
#[derive(Debug)]
struct DatagenPartition {
    schema: SchemaRef,
    config: DatagenConfig,
    produced: Arc<Produced>,
}

impl PartitionStream for DatagenPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        self.produced.restart();
        let generator = Generator {
            schema: Arc::clone(&self.schema),
            config: self.config,
            produced: Arc::clone(&self.produced),
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
    produced: Arc<Produced>,
    next_row: u64,
    started: Option<Instant>,
    failed: bool,
}

impl Generator {
    /// The next batch, `None` at the row limit or after an error.
    async fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        if self.failed {
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
            // Past what an Instant can hold, the row is never due: wait until the
            // reader stops (the engine's shutdown ends the read, `engine/stop.rs`).
            let due = Duration::try_from_secs_f64(self.next_row as f64 / rate.get() as f64)
                .ok()
                .and_then(|offset| started.checked_add(offset));
            match due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        }
        match generate(&self.schema, self.next_row, len as usize, SystemTime::now()) {
            Ok(batch) => {
                self.next_row += len;
                self.produced.add(len);
                Some(Ok(batch))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use futures::StreamExt;

    use super::*;
    use crate::registry::option_map as options;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8View, true),
        ]))
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
        // A batch is allocated whole: a huge size is refused, not attempted.
        let err = DatagenConfig::from_options(&options(&[("batch_size", "18446744073709551615")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("between '1' and '1048576'"), "{err}");
        assert!(DatagenConfig::from_options(&options(&[("batch_size", "1048576")])).is_ok());
    }

    #[test]
    fn unsupported_column_type_is_named() {
        let connector = DatagenConnector::default();
        let schema = Arc::new(Schema::new(vec![Field::new("b", DataType::Binary, true)]));
        let err = connector
            .create_table("g", schema, OptionMap::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("column 'b' of type Binary"), "{err}");
    }

    fn partition(config: DatagenConfig) -> DatagenPartition {
        DatagenPartition {
            schema: schema(),
            config,
            produced: Arc::default(),
        }
    }

    #[tokio::test]
    async fn stops_at_the_row_limit() {
        let config = DatagenConfig::from_options(&options(&[
            ("rows_per_second", "0"),
            ("row_limit", "2500"),
        ]))
        .unwrap();
        let mut stream = partition(config).execute(Arc::new(TaskContext::default()));
        let mut sizes = Vec::new();
        while let Some(batch) = stream.next().await {
            sizes.push(batch.unwrap().num_rows());
        }
        assert_eq!(sizes, [1000, 1000, 500]);
    }

    #[tokio::test]
    async fn rate_limit_spaces_batches() {
        // 50 rows/s in batches of 5: 15 rows take at least 0.2 s (batches at 0, .1, .2).
        let config = DatagenConfig::from_options(&options(&[
            ("rows_per_second", "50"),
            ("row_limit", "15"),
        ]))
        .unwrap();
        let started = std::time::Instant::now();
        let mut stream = partition(config).execute(Arc::new(TaskContext::default()));
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

    #[tokio::test]
    async fn a_running_scan_reports_the_rows_it_produced() {
        let connector = DatagenConnector::default();
        let options = options(&[("rows_per_second", "0"), ("batch_size", "100")]);
        let table = connector.create_table("g", schema(), options).unwrap();
        let ctx = datafusion::prelude::SessionContext::new();
        let scan = table.scan(&ctx.state(), None, &[], None).await.unwrap();
        assert_eq!(connector.reading(scan.as_ref()).map(|r| r.rows), Some(0));
        let mut stream = scan.execute(0, ctx.task_ctx()).unwrap();
        for _ in 0..3 {
            stream.next().await.unwrap().unwrap();
        }
        assert_eq!(connector.reading(scan.as_ref()).map(|r| r.rows), Some(300));
        // Another connector's table (or another datagen connector's) is not ours.
        let other = DatagenConnector::default()
            .create_table("h", schema(), OptionMap::new())
            .unwrap();
        let other = other.scan(&ctx.state(), None, &[], None).await.unwrap();
        assert_eq!(connector.reading(other.as_ref()), None);
    }
}
