//! Connects each continuous read from a durable consumer to the sink its rows reach, so
//! that it acknowledges a message once the rows derived from it are settled there (see
//! `crate::lineage`).
//!
//! That needs every row of a source batch to be in the sink's hands when the source is
//! asked for its next batch, which holds only when the operators between them hold no
//! rows: projections, filters that emit each batch as it comes (the engine builds them
//! so over an unbounded input), a coalescing of one partition, limits. Anything else (an
//! aggregate, a join, a sort, a repartition) may hold rows across batches, so a plan
//! with one there, or a plan without a `nats_sink` (a query), is refused before it runs,
//! saying what works instead.

use std::sync::Arc;

use datafusion::datasource::sink::DataSinkExec;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::limit::{GlobalLimitExec, LocalLimitExec};
use datafusion::physical_plan::projection::ProjectionExec;

use crate::error::{NatsSinkError, Result};
use crate::lineage::OutputProgress;
use crate::sink::NatsSink;
use crate::source::NatsSourceExec;

/// Where the rows of a node end up, seen from above it.
#[derive(Clone)]
enum Path {
    /// In the statement's result: no sink confirms them.
    Result,
    /// In a `nats_sink`, through operators that hold no rows.
    Sink(Arc<OutputProgress>),
    /// Through `nodes` (from the top), which may hold rows, or a sink that does not say
    /// what it settled.
    Held { nodes: Vec<String> },
}

/// Links every source of `plan` that acknowledges as its rows are confirmed to the sink
/// that confirms them; fails, naming what to change, for such a source whose rows cannot
/// be followed. Call before `plan` runs.
pub fn link_statement(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    walk(plan, Path::Result)
}

fn walk(node: &Arc<dyn ExecutionPlan>, path: Path) -> Result<()> {
    if let Some(source) = node.downcast_ref::<NatsSourceExec>() {
        return match (source.consumer_to_follow(), path) {
            (None, _) => Ok(()),
            (Some(_), Path::Sink(progress)) => {
                source.follow(progress);
                Ok(())
            }
            (Some(consumer), Path::Result) => Err(refused(
                consumer,
                "so it runs only in an INSERT INTO a nats_sink table".into(),
            )),
            (Some(consumer), Path::Held { nodes }) => Err(refused(
                consumer,
                format!(
                    "which streamsql follows from the source to the sink only through projections, filters and limits, and this plan has {} between them",
                    nodes.join(", ")
                ),
            )),
        };
    }
    let path = match node.downcast_ref::<DataSinkExec>() {
        Some(exec) => match exec.sink().downcast_ref::<NatsSink>() {
            Some(sink) => Path::Sink(Arc::clone(sink.progress())),
            None => Path::Held {
                nodes: vec!["a sink other than nats_sink".into()],
            },
        },
        None if holds_no_rows(node) => path,
        None => match path {
            Path::Sink(_) => Path::Held {
                nodes: vec![node.name().to_string()],
            },
            Path::Held { mut nodes } => {
                nodes.push(node.name().to_string());
                Path::Held { nodes }
            }
            Path::Result => Path::Result,
        },
    };
    for child in node.children() {
        walk(child, path.clone())?;
    }
    Ok(())
}

/// Whether `node` hands on every row of an input batch before it asks for the next one.
fn holds_no_rows(node: &Arc<dyn ExecutionPlan>) -> bool {
    if let Some(filter) = node.downcast_ref::<FilterExec>() {
        // A larger batch size gathers the rows of several input batches.
        return filter.batch_size() <= 1;
    }
    if let Some(coalesce) = node.downcast_ref::<CoalescePartitionsExec>() {
        // One partition is passed through as it is; more run on tasks of their own.
        return coalesce
            .input()
            .properties()
            .output_partitioning()
            .partition_count()
            == 1;
    }
    node.is::<ProjectionExec>() || node.is::<GlobalLimitExec>() || node.is::<LocalLimitExec>()
}

fn refused(consumer: &str, why: String) -> NatsSinkError {
    NatsSinkError::InvalidOption {
        option: "consumer".into(),
        problem: format!(
            "'{consumer}': a continuous read from a durable consumer acknowledges each message once the rows derived from it are confirmed by a nats_sink, {why}. Read with stop_at = 'end' instead (acknowledged once the whole statement's output is confirmed; aggregates and joins work), or leave out 'consumer' (an ephemeral consumer acknowledges nothing)"
        ),
    }
}
