//! The DataFusion side: a write-only table whose `insert_into` plans a `DataSinkExec`
//! over [`NatsSink`].
//!
//! `write_all` orchestrates only: connect, then for each batch encode (pure) and send
//! (publish + confirm). It returns the number of rows the server confirmed; when it fails,
//! every row counted in the error's "published" figure was confirmed, and none after.

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
use futures::StreamExt;
use tracing::info;

use crate::config::{ConnectionConfig, SinkConfig};
use crate::encode::RowEncoder;
use crate::options::Options;
use crate::publish::Publisher;

/// A table that publishes the rows inserted into it.
#[derive(Debug)]
pub struct NatsSinkTable {
    sink: Arc<NatsSink>,
}

/// The sink behind [`NatsSinkTable`]: validated options and the encoding plan.
pub struct NatsSink {
    schema: SchemaRef,
    options: Options,
    config: SinkConfig,
    encoder: RowEncoder,
}

impl NatsSinkTable {
    /// Checks the options against `schema` (routing columns exist and hold strings, every
    /// payload column has a JSON form). Does not connect.
    pub fn try_new(schema: SchemaRef, options: Options) -> crate::error::Result<Self> {
        let config = SinkConfig::from_options(&options)?;
        let encoder = RowEncoder::from_config(&schema, &config)?;
        Ok(NatsSinkTable {
            sink: Arc::new(NatsSink {
                schema,
                options,
                config,
                encoder,
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
        Ok(Arc::new(DataSinkExec::new(input, self.sink.clone(), None)))
    }
}

impl fmt::Debug for NatsSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSink")
            .field("options", &self.options)
            .field("schema", &self.schema)
            .finish()
    }
}

impl DisplayAs for NatsSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NatsSink:")?;
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

    async fn write_all(
        &self,
        mut data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> Result<u64> {
        let connection = ConnectionConfig::from_options(&self.options)?;
        let mut publisher = Publisher::connect(
            &connection,
            &self.config.headers,
            self.config.confirm_timeout,
        )
        .await?;
        let mut encoder = self.encoder.clone();
        let mut confirmed = 0u64;
        while let Some(batch) = data.next().await {
            let batch = batch?;
            if batch.num_rows() == 0 {
                continue;
            }
            let encoded = encoder.encode(&batch, confirmed)?;
            publisher.send(&encoded, confirmed).await?;
            confirmed += encoded.len() as u64;
        }
        publisher.close().await;
        info!(
            rows = confirmed,
            "nats_sink: all rows published and confirmed"
        );
        Ok(confirmed)
    }
}
