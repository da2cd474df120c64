//! Over an unbounded input, no filter holds a row back while it waits for later rows.
//!
//! DataFusion 55 gathers small batches into batches of `datafusion.execution.batch_size`
//! rows (8192 by default) inside some operators, and such an operator returns `Pending`
//! without emitting what it holds while its input is pending. Over a bounded input the
//! rows come out at the end of the input at the latest; over an unbounded one (a
//! `datagen` table without `row_limit`, at 10 rows/s) they wait until 8192 of them have
//! gathered, or until the source is stopped. This physical optimizer rule, run after
//! DataFusion's own, rewrites the operators that hold rows this way when their input is
//! unbounded (`ExecutionPlanProperties::boundedness`), and leaves every other node, and
//! every bounded plan, exactly as DataFusion planned it. A smaller session `batch_size`
//! would not do: any size above 1 still holds the rows of a slow enough input, and 1
//! makes every operator of every query, bounded or not, work a row at a time.
//!
//! - `FilterExec` pushes its output into a `LimitedBatchCoalescer` of its own `batch_size`
//!   (`datafusion-physical-plan` `src/filter.rs`, `FilterExecStream::poll_next`). It is
//!   rebuilt with `batch_size` 1 ([`FilterExec::with_batch_size`]): a batch then completes
//!   with its first row. In fact no row is copied at all: `LimitedBatchCoalescer::new`
//!   (`src/coalesce/mod.rs`) passes batches of more than `batch_size / 2` rows through
//!   whole when nothing is buffered (arrow-select `BatchCoalescer::push_batch`, "large
//!   batch optimization"), so each filtered batch goes on as it is, with its `fetch`
//!   (a pushed-down `LIMIT`) kept.
//! - `CoalesceBatchesExec` (deprecated since DataFusion 52 and no longer inserted by its
//!   optimizer, but still constructible) is removed, or rebuilt with a target of 1 row
//!   when it carries a `fetch`.
//!
//! Operators that do not hold rows are left alone: `ProjectionExec` and `UnnestExec` emit
//! one or more batches per input batch (`src/unnest.rs` only splits), and `RepartitionExec`
//! already skips its coalescing when its input is unbounded (`src/repartition/mod.rs`,
//! "Batch coalescing": "Coalescing is skipped for unbounded inputs so partial batches are
//! emitted promptly").
//!
//! Not covered, because their target size comes from the session's `batch_size` at
//! execution, not from the plan node: the output coalescer of `HashJoinExec`
//! (`src/joins/hash_join/stream.rs`; a join of an unbounded input with a table still
//! holds its output) and the input coalescer of `AsyncFuncExec` (async UDFs,
//! `src/async_func.rs`). Upstream, apache/datafusion#24044 fixed the same defect in
//! `RepartitionExec` (the 55.2 code quoted above); the draft apache/datafusion#24353
//! would make `FilterExec` flush on a pending unbounded input, which makes the filter
//! rewrite here redundant but harmless.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
#[expect(deprecated)]
use datafusion::physical_plan::coalesce_batches::CoalesceBatchesExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};

/// The batch size of a filter over an unbounded input: a batch completes with its first
/// row, so no row waits for the next input batch.
const UNBUFFERED: usize = 1;

/// Rewrites the operators that gather rows into larger batches so that, over an unbounded
/// input, they emit each batch as it comes (see the module documentation).
#[derive(Debug, Default)]
pub struct UnboundedLatency;

impl PhysicalOptimizerRule for UnboundedLatency {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(unbuffer).map(|t| t.data)
    }

    fn name(&self) -> &str {
        "unbounded_latency"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `node` rewritten not to hold rows, if it would hold rows of an unbounded input.
fn unbuffer(node: Arc<dyn ExecutionPlan>) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    if let Some(filter) = node.downcast_ref::<FilterExec>() {
        if filter.input().boundedness().is_unbounded() && filter.batch_size() != UNBUFFERED {
            let filter = filter.with_batch_size(UNBUFFERED)?;
            return Ok(Transformed::yes(Arc::new(filter)));
        }
        return Ok(Transformed::no(node));
    }
    #[expect(deprecated)]
    if let Some(coalesce) = node.downcast_ref::<CoalesceBatchesExec>() {
        let input = Arc::clone(coalesce.input());
        if !input.boundedness().is_unbounded() || coalesce.target_batch_size() == UNBUFFERED {
            return Ok(Transformed::no(node));
        }
        return Ok(Transformed::yes(match coalesce.fetch() {
            None => input,
            fetch => Arc::new(CoalesceBatchesExec::new(input, UNBUFFERED).with_fetch(fetch)),
        }));
    }
    Ok(Transformed::no(node))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
    use datafusion::execution::{SendableRecordBatchStream, TaskContext};
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{BinaryExpr, col, lit};
    use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
    use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
    use futures::{FutureExt, StreamExt};

    use super::*;
    use crate::Engine;

    /// One batch of ids 0..10, then (if `unbounded`) pending forever, as a slow source
    /// between two batches; a bounded one ends after the batch.
    #[derive(Debug)]
    struct OneBatch {
        schema: SchemaRef,
        unbounded: bool,
    }

    impl PartitionStream for OneBatch {
        fn schema(&self) -> &SchemaRef {
            &self.schema
        }

        fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
            let ids = Arc::new(Int64Array::from_iter_values(0..10));
            let batch = RecordBatch::try_new(Arc::clone(&self.schema), vec![ids]);
            let first = futures::stream::iter([batch.map_err(Into::into)]);
            let stream = if self.unbounded {
                first.chain(futures::stream::pending()).boxed()
            } else {
                first.boxed()
            };
            Box::pin(RecordBatchStreamAdapter::new(
                Arc::clone(&self.schema),
                stream,
            ))
        }
    }

    fn source(unbounded: bool) -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let partition = Arc::new(OneBatch {
            schema: Arc::clone(&schema),
            unbounded,
        });
        let exec = StreamingTableExec::try_new(schema, vec![partition], None, [], unbounded, None);
        Arc::new(exec.unwrap())
    }

    /// `id % 2 = 0` over `input`, with DataFusion's default batch size.
    fn even_ids(input: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        let id = col("id", &input.schema()).unwrap();
        let modulo = Arc::new(BinaryExpr::new(id, Operator::Modulo, lit(2i64)));
        let predicate = Arc::new(BinaryExpr::new(modulo, Operator::Eq, lit(0i64)));
        let filter = FilterExec::try_new(predicate, input).unwrap();
        assert_eq!(filter.batch_size(), 8192, "DataFusion's default");
        Arc::new(filter)
    }

    fn optimize(plan: &Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        UnboundedLatency
            .optimize(Arc::clone(plan), &ConfigOptions::default())
            .unwrap()
    }

    fn filter_batch_size(plan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
        if let Some(filter) = plan.downcast_ref::<FilterExec>() {
            return Some(filter.batch_size());
        }
        plan.children().into_iter().find_map(filter_batch_size)
    }

    /// Polls the plan's first output batch once, without waiting: `None` if it is
    /// pending.
    fn first_batch_now(plan: &Arc<dyn ExecutionPlan>) -> Option<RecordBatch> {
        let mut stream = plan.execute(0, Arc::new(TaskContext::default())).unwrap();
        stream.next().now_or_never().map(|b| b.unwrap().unwrap())
    }

    #[tokio::test]
    async fn a_filter_over_an_unbounded_input_emits_each_batch_while_the_input_is_pending() {
        let planned = even_ids(source(true));
        // The defect: DataFusion's filter keeps the 5 rows while its input is pending.
        assert!(first_batch_now(&planned).is_none());

        let optimized = optimize(&planned);
        assert_eq!(filter_batch_size(&optimized), Some(UNBUFFERED));
        let batch = first_batch_now(&optimized).expect("the filtered rows, at once");
        let ids: &Int64Array = batch.column(0).as_any().downcast_ref().unwrap();
        assert_eq!(
            ids.values().as_ref(),
            [0, 2, 4, 6, 8],
            "one batch, not split"
        );
        // Idempotent: a second pass changes nothing.
        assert!(Arc::ptr_eq(&optimize(&optimized), &optimized));
    }

    #[test]
    fn a_bounded_plan_is_left_exactly_as_planned() {
        let planned = even_ids(source(false));
        assert!(Arc::ptr_eq(&optimize(&planned), &planned));
        let planned: Arc<dyn ExecutionPlan> = Arc::new(
            #[expect(deprecated)]
            CoalesceBatchesExec::new(source(false), 8192),
        );
        assert!(Arc::ptr_eq(&optimize(&planned), &planned));
    }

    #[test]
    #[expect(deprecated)]
    fn coalesce_batches_over_an_unbounded_input_is_removed_or_keeps_only_its_fetch() {
        let input = source(true);
        let planned: Arc<dyn ExecutionPlan> =
            Arc::new(CoalesceBatchesExec::new(Arc::clone(&input), 8192));
        assert!(Arc::ptr_eq(&optimize(&planned), &input), "removed");

        let planned: Arc<dyn ExecutionPlan> =
            Arc::new(CoalesceBatchesExec::new(Arc::clone(&input), 8192).with_fetch(Some(3)));
        let optimized = optimize(&planned);
        let coalesce = optimized
            .downcast_ref::<CoalesceBatchesExec>()
            .expect("kept for its fetch");
        assert_eq!(
            (coalesce.target_batch_size(), coalesce.fetch()),
            (UNBUFFERED, Some(3))
        );
        assert!(Arc::ptr_eq(coalesce.input(), &input));
    }

    /// The engine's session runs the rule: an unbounded `datagen` query gets the
    /// unbuffered filter, a bounded one keeps DataFusion's batch size.
    #[tokio::test]
    async fn the_engine_plans_unbounded_filters_unbuffered_and_bounded_ones_as_datafusion_does() {
        let mut engine = Engine::new();
        engine
            .execute(
                "CREATE TABLE endless (id BIGINT) WITH (connector = 'datagen');
                 CREATE TABLE ten (id BIGINT) WITH (connector = 'datagen', row_limit = '10');",
            )
            .await
            .unwrap();
        for (table, expected) in [("endless", UNBUFFERED), ("ten", 8192)] {
            let sql = format!("SELECT id * 2 AS twice FROM {table} WHERE id % 2 = 0");
            let df = engine.context().sql(&sql).await.unwrap();
            let plan = df.create_physical_plan().await.unwrap();
            assert_eq!(filter_batch_size(&plan), Some(expected), "{table}");
        }
    }
}
