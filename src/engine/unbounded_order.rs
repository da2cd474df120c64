//! Over an unbounded input, rows keep the order the source gave them.
//!
//! To use every core, DataFusion's `EnforceDistribution` puts a round-robin
//! `RepartitionExec` under operators such as `FilterExec` and a `CoalescePartitionsExec`
//! above them, which interleaves the partitions' batches in whatever order they finish.
//! A streaming source has one ordered partition, and the sink promises each subject's
//! messages in query order (and a source that acknowledges as its sink confirms follows
//! rows through a single chain of operators), so over an unbounded input this physical
//! optimizer rule, run after DataFusion's own, removes the round-robin repartition, and
//! then the coalescing of what is left with a single partition. Hash repartitions (of
//! aggregates and joins) stay: they partition by key. Bounded plans are left exactly as
//! DataFusion planned them.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties, Partitioning};

/// Removes round-robin repartitions over unbounded inputs (see the module documentation).
#[derive(Debug, Default)]
pub struct UnboundedOrder;

impl PhysicalOptimizerRule for UnboundedOrder {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(keep_order).map(|t| t.data)
    }

    fn name(&self) -> &str {
        "unbounded_order"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn keep_order(node: Arc<dyn ExecutionPlan>) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    if let Some(repartition) = node.downcast_ref::<RepartitionExec>() {
        let input = repartition.input();
        if matches!(repartition.partitioning(), Partitioning::RoundRobinBatch(_))
            && input.boundedness().is_unbounded()
            && !repartition.preserve_order()
        {
            return Ok(Transformed::yes(Arc::clone(input)));
        }
        return Ok(Transformed::no(node));
    }
    if let Some(coalesce) = node.downcast_ref::<CoalescePartitionsExec>() {
        let input = coalesce.input();
        if input.boundedness().is_unbounded()
            && input.output_partitioning().partition_count() == 1
            && coalesce.fetch().is_none()
        {
            return Ok(Transformed::yes(Arc::clone(input)));
        }
    }
    Ok(Transformed::no(node))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{AsArray, RecordBatch};
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::physical_plan::displayable;

    use crate::Engine;

    async fn engine() -> Engine {
        let mut engine = Engine::new();
        engine
            .execute(
                "SET datafusion.execution.target_partitions = 4;
                 CREATE TABLE endless (id BIGINT) WITH (connector = 'datagen', batch_size = '7', rows_per_second = '0');
                 CREATE TABLE ten (id BIGINT) WITH (connector = 'datagen', row_limit = '10');",
            )
            .await
            .unwrap();
        engine
    }

    const FILTERED: &str = "SELECT id * 2 AS twice FROM {} WHERE id % 3 <> 0";

    #[tokio::test]
    async fn an_unbounded_filter_keeps_one_ordered_partition_and_a_bounded_one_is_spread() {
        let engine = engine().await;
        for (table, spread) in [("endless", false), ("ten", true)] {
            let df = engine
                .context()
                .sql(&FILTERED.replace("{}", table))
                .await
                .unwrap();
            let plan = df.create_physical_plan().await.unwrap();
            let shown = displayable(plan.as_ref()).indent(true).to_string();
            assert_eq!(
                shown.contains("RoundRobinBatch"),
                spread,
                "{table}:\n{shown}"
            );
        }
    }

    #[tokio::test]
    async fn rows_of_an_unbounded_input_come_out_in_the_sources_order() {
        let engine = engine().await;
        let sql = format!("{} LIMIT 3000", FILTERED.replace("{}", "endless"));
        let batches: Vec<RecordBatch> = engine
            .context()
            .sql(&sql)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let twice: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        let expected: Vec<i64> = (0..)
            .filter(|i| i % 3 != 0)
            .map(|i| i * 2)
            .take(3000)
            .collect();
        assert_eq!(twice, expected);
    }
}
