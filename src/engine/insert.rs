//! The one place an `INSERT` runs, however it was written: a plain `INSERT` DataFusion
//! planned, an `INSERT ... WITH (connector = ...)`, or the `EXECUTE` of a prepared
//! `INSERT`. Each gets the same handling: its sink's input stops on the shutdown latch
//! (`stop/`), its progress is reported, it is on the status board while it runs, and
//! its summary says what the sink confirmed, also when it was cancelled or aborted.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::UInt64Type;
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::{DmlStatement, LogicalPlan, WriteOp};

use super::stop::{self, Cancel};
use super::{DeliveryCounts, Engine, InsertProgress, InsertSummary, Outcome, SignalStop};
use crate::error::{EngineError, StatementAt};

/// The `INSERT` `plan` is, if it is one.
pub(super) fn as_insert(plan: &LogicalPlan) -> Option<&DmlStatement> {
    match plan {
        LogicalPlan::Dml(dml) if matches!(dml.op, WriteOp::Insert(_)) => Some(dml),
        _ => None,
    }
}

impl Engine {
    /// Runs a planned `INSERT` and sums DataFusion's `count` column. Once the shutdown
    /// latch fires, the sink's input ends; if the insert has not finished a grace period
    /// later, or the abort latch fires, it is cancelled and its summary gives what the
    /// sink had confirmed. `defined` is the connector of a sink the statement defined
    /// itself (`INSERT ... WITH`); otherwise the target table tells.
    pub(super) async fn run_insert(
        &mut self,
        at: StatementAt,
        plan: LogicalPlan,
        defined: Option<String>,
    ) -> Result<Outcome, EngineError> {
        let df_err = |e| EngineError::datafusion(at, e);
        let Some(dml) = as_insert(&plan) else {
            return Err(EngineError::datafusion(
                at,
                datafusion::error::DataFusionError::Internal(
                    "run_insert was given a plan that is not an INSERT".to_string(),
                ),
            ));
        };
        let table_name = dml.table_name.to_string();
        let connector = defined.or_else(|| self.connector_of(dml));
        let started = Instant::now();
        let df = self.ctx.execute_logical_plan(plan).await.map_err(df_err)?;
        let task_ctx = Arc::new(df.task_ctx());
        let physical = df.create_physical_plan().await.map_err(df_err)?;
        self.registry.prepare_statement(&physical).map_err(df_err)?;
        let (physical, input) =
            stop::stop_sink_input(physical, &self.shutdown.signal()).map_err(df_err)?;
        let _on_board = self.board.enter(&table_name, Arc::clone(&physical));
        let collect = datafusion::physical_plan::collect(physical.clone(), task_ctx);
        let run = async {
            match &self.progress {
                None => collect.await,
                Some(progress) => {
                    let mut ticks = tokio::time::interval(progress.every);
                    ticks.tick().await;
                    tokio::pin!(collect);
                    loop {
                        tokio::select! {
                            done = &mut collect => break done,
                            _ = ticks.tick() => {
                                if let Some(delivery) = self.registry.delivery(physical.as_ref()) {
                                    let now = InsertProgress::new(&table_name, &delivery, started.elapsed());
                                    (progress.report)(&now);
                                }
                            }
                        }
                    }
                }
            }
        };
        // Read at the moment of the cancel, before the sink's future is dropped: the
        // NATS sink resets its in-flight and retrying gauges then (`ResetGauges` in
        // connector-nats/src/sink.rs).
        let last_figures = |cancel| (cancel, self.registry.delivery(physical.as_ref()));
        let finished = stop::within_grace(
            self.shutdown.signal(),
            self.abort.signal(),
            self.stop_grace,
            run,
            last_figures,
        )
        .await;
        let elapsed = started.elapsed();
        let (rows, stopped, delivery) = match finished {
            Ok(batches) => {
                let batches = batches.map_err(df_err)?;
                let stopped = input.and_then(|input| input.stopped());
                // Every row the sink took was confirmed, also when the shutdown signal
                // cut its input: the sources may settle what they read (a continuous
                // read acknowledges what its sink confirmed and hands back the rest; a
                // bounded one cut short hands back everything).
                let complete = stopped.is_none();
                let settled = self
                    .registry
                    .statement_confirmed(physical.as_ref(), complete)
                    .await;
                match (settled, &stopped) {
                    (Err(e), None) => return Err(df_err(e)),
                    (Err(e), Some(_)) => tracing::warn!(
                        table = %table_name,
                        "after the stop, the sources could not settle what they read: {e}"
                    ),
                    (Ok(()), _) => {}
                }
                let rows = batches
                    .iter()
                    .filter_map(|b| b.column_by_name("count"))
                    .filter_map(|c| c.as_primitive_opt::<UInt64Type>())
                    .flat_map(|c| c.iter().flatten())
                    .sum();
                let delivery = self.registry.delivery(physical.as_ref());
                (rows, stopped, delivery)
            }
            Err((cancel, delivery)) => {
                let in_flight = delivery.as_ref().map_or(0, |d| d.in_flight);
                let retrying = delivery.as_ref().and_then(|d| d.retrying.clone());
                let stop = match cancel {
                    Cancel::GraceOver => {
                        tracing::warn!(
                            table = %table_name,
                            grace = ?self.stop_grace,
                            "insert not finished within the grace period after the shutdown signal: cancelled"
                        );
                        SignalStop::Cancelled {
                            grace: self.stop_grace,
                            in_flight,
                            retrying,
                        }
                    }
                    Cancel::Aborted => {
                        tracing::warn!(table = %table_name, "insert aborted: cancelled at once");
                        SignalStop::Aborted {
                            in_flight,
                            retrying,
                        }
                    }
                };
                let rows = delivery.as_ref().map_or(0, |d| d.confirmed);
                (rows, Some(stop), delivery)
            }
        };
        let summary = InsertSummary {
            table: table_name,
            connector,
            rows,
            elapsed,
            stopped,
            delivery: delivery.as_ref().map(DeliveryCounts::from),
        };
        tracing::info!(table = %summary.table, rows, ?elapsed, "insert finished");
        Ok(Outcome::Insert(summary))
    }

    /// The connector of the table `dml` writes to, if the engine created it through one.
    /// Told by the identity of the provider the plan holds, not by the name: a prepared
    /// `INSERT` keeps the table it was planned with, even if the name was given to
    /// another table since.
    fn connector_of(&self, dml: &DmlStatement) -> Option<String> {
        let target = source_as_provider(&dml.target).ok()?;
        self.connector_tables
            .values()
            .find(|entry| Arc::ptr_eq(&entry.provider, &target))
            .map(|entry| entry.connector.clone())
    }
}
