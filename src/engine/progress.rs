//! A live view of a running `INSERT`, read from the plan's metrics while it executes.
//!
//! The sink reports through DataFusion metrics (see `connector_nats::metrics::names`),
//! so the engine needs no connector types to follow it: it reads them by name every
//! [`Progress::every`] and hands a snapshot to the host's callback.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use connector_nats::metrics::names;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::metrics::MetricsSet;

/// What a running insert has done so far.
#[derive(Debug, Clone, PartialEq)]
pub struct InsertProgress {
    /// The target table.
    pub table: String,
    /// Rows the destination confirmed so far.
    pub rows: u64,
    /// Messages published and not yet confirmed.
    pub in_flight: u64,
    /// Why the sink is retrying, while it is.
    pub retrying: Option<String>,
    /// Time since the insert started.
    pub elapsed: Duration,
}

/// A host's progress callback and how often to call it.
#[derive(Clone)]
pub struct Progress {
    pub every: Duration,
    pub report: Arc<dyn Fn(&InsertProgress) + Send + Sync>,
}

impl fmt::Debug for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Progress")
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl InsertProgress {
    /// The progress of the first plan node (depth first) that reports delivery metrics;
    /// `None` for an insert into a table that reports none.
    pub fn from_plan(table: &str, plan: &dyn ExecutionPlan, elapsed: Duration) -> Option<Self> {
        let metrics = sink_metrics(plan)?;
        let count = |name| metrics.sum_by_name(name).map_or(0, |v| v.as_usize() as u64);
        let retrying = metrics
            .iter()
            .find(|m| m.value().name() == names::RETRYING)
            .filter(|m| m.value().as_usize() > 0)
            .map(|m| m.value().to_string());
        Some(InsertProgress {
            table: table.to_string(),
            rows: count(names::PUBLISHED_ROWS),
            in_flight: count(names::IN_FLIGHT),
            retrying,
            elapsed,
        })
    }
}

/// The metrics of the first node (depth first) that has the sink's row counter.
pub(crate) fn sink_metrics(plan: &dyn ExecutionPlan) -> Option<MetricsSet> {
    if let Some(metrics) = plan.metrics()
        && metrics.sum_by_name(names::PUBLISHED_ROWS).is_some()
    {
        return Some(metrics);
    }
    plan.children()
        .into_iter()
        .find_map(|child| sink_metrics(child.as_ref()))
}
