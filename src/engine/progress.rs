//! A live view of a running `INSERT`, read from the plan's metrics while it executes.
//!
//! A sink reports through DataFusion metrics that its connector reads
//! ([`Connector::delivery`](crate::registry::Connector::delivery)), so the engine needs
//! no connector types to follow it: it reads them every [`Progress::every`] and hands a
//! snapshot to the host's callback.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::registry::DeliveryMetrics;
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
    /// The progress of an insert into `table` whose sink reports `delivery`.
    pub fn new(table: &str, delivery: &DeliveryMetrics, elapsed: Duration) -> Self {
        InsertProgress {
            table: table.to_string(),
            rows: delivery.confirmed,
            in_flight: delivery.in_flight,
            retrying: delivery.retrying.clone(),
            elapsed,
        }
    }
}
