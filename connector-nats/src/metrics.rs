//! What one execution of the sink did, as DataFusion metrics.
//!
//! The counters are DataFusion's own, so `EXPLAIN ANALYZE` shows them on the sink's plan
//! node and a host reads them from the executed plan by name ([`names`]) without knowing
//! this crate's types.

use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};

/// The metric names, for hosts that read them from a plan.
pub mod names {
    /// Rows delivered and confirmed (JetStream: acknowledged, duplicates included).
    pub const PUBLISHED_ROWS: &str = "published_rows";
    /// Payload bytes of the published rows.
    pub const PUBLISHED_BYTES: &str = "published_bytes";
    /// Rows the stream acknowledged as duplicates of a message id it already had.
    pub const DUPLICATES: &str = "duplicates";
    /// Rows that could not be delivered and were skipped (`on_error = 'skip'`).
    pub const SKIPPED: &str = "skipped_rows";
    /// Rows that could not be delivered and went to the dead-letter subject.
    pub const DEAD_LETTERED: &str = "dead_lettered_rows";
    /// Times a publish or a connect was retried after a transient failure.
    pub const RETRIES: &str = "retries";
}

/// The counters of one sink execution.
#[derive(Debug, Clone)]
pub(crate) struct SinkMetrics {
    set: ExecutionPlanMetricsSet,
    published: Count,
    bytes: Count,
    duplicates: Count,
    skipped: Count,
    dead_lettered: Count,
    retries: Count,
}

impl Default for SinkMetrics {
    fn default() -> Self {
        let set = ExecutionPlanMetricsSet::new();
        let counter = |name| MetricBuilder::new(&set).global_counter(name);
        SinkMetrics {
            published: counter(names::PUBLISHED_ROWS),
            bytes: counter(names::PUBLISHED_BYTES),
            duplicates: counter(names::DUPLICATES),
            skipped: counter(names::SKIPPED),
            dead_lettered: counter(names::DEAD_LETTERED),
            retries: counter(names::RETRIES),
            set,
        }
    }
}

impl SinkMetrics {
    pub(crate) fn snapshot(&self) -> MetricsSet {
        self.set.clone_inner()
    }

    /// Rows confirmed so far.
    pub(crate) fn published(&self) -> u64 {
        self.published.value() as u64
    }

    pub(crate) fn duplicates_so_far(&self) -> u64 {
        self.duplicates.value() as u64
    }

    pub(crate) fn published_row(&self, bytes: usize) {
        self.published.add(1);
        self.bytes.add(bytes);
    }

    pub(crate) fn duplicates(&self, rows: usize) {
        self.duplicates.add(rows);
    }

    pub(crate) fn skipped(&self, rows: usize) {
        self.skipped.add(rows);
    }

    pub(crate) fn dead_lettered(&self, rows: usize) {
        self.dead_lettered.add(rows);
    }

    pub(crate) fn retried(&self) {
        self.retries.add(1);
    }
}
