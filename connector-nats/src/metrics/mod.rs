//! What one execution of the sink did, as DataFusion metrics and Prometheus series.
//!
//! The DataFusion metrics belong to this execution: `EXPLAIN ANALYZE` shows them on the
//! sink's plan node, and a host reads them by name ([`names`]) from the running or
//! executed plan (its progress line and summary) without knowing this crate's types.
//! Every event also goes to the sink's process-wide Prometheus series (`telemetry`).

pub mod prometheus;

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::physical_plan::metrics::{
    Count, CustomMetricValue, ExecutionPlanMetricsSet, Gauge, MetricBuilder, MetricValue,
    MetricsSet,
};

use crate::metrics::prometheus::SinkSeries;

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
    /// Messages published and not confirmed yet (a gauge).
    pub const IN_FLIGHT: &str = "in_flight";
    /// The bytes of those messages, payload and headers (a gauge).
    pub const IN_FLIGHT_BYTES: &str = "in_flight_bytes";
    /// Why the sink is retrying right now; displays `-` when it is not.
    pub const RETRYING: &str = "retrying";
    /// 1 while the sink has a connection to the server, 0 before and after (a gauge).
    pub const CONNECTED: &str = "connected";
    /// The reasons of the last skipped or dead-lettered rows ([`super::RecentRejections`]).
    pub const REJECTIONS: &str = "rejections";
}

/// How many reasons of rejected rows [`RecentRejections`] keeps.
pub const RECENT_REJECTIONS: usize = 5;

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
    in_flight: Gauge,
    in_flight_bytes: Gauge,
    connected: Gauge,
    retrying: Arc<Retrying>,
    rejections: Arc<RecentRejections>,
    series: SinkSeries,
}

impl SinkMetrics {
    /// Fresh counters for one execution of the sink called `sink`.
    pub(crate) fn new(sink: &str) -> Self {
        let set = ExecutionPlanMetricsSet::new();
        let counter = |name| MetricBuilder::new(&set).global_counter(name);
        let retrying = Arc::new(Retrying::default());
        MetricBuilder::new(&set).build(MetricValue::Custom {
            name: names::RETRYING.into(),
            value: retrying.clone(),
        });
        let rejections = Arc::new(RecentRejections::default());
        MetricBuilder::new(&set).build(MetricValue::Custom {
            name: names::REJECTIONS.into(),
            value: rejections.clone(),
        });
        SinkMetrics {
            published: counter(names::PUBLISHED_ROWS),
            bytes: counter(names::PUBLISHED_BYTES),
            duplicates: counter(names::DUPLICATES),
            skipped: counter(names::SKIPPED),
            dead_lettered: counter(names::DEAD_LETTERED),
            retries: counter(names::RETRIES),
            in_flight: MetricBuilder::new(&set).global_gauge(names::IN_FLIGHT),
            in_flight_bytes: MetricBuilder::new(&set).global_gauge(names::IN_FLIGHT_BYTES),
            connected: MetricBuilder::new(&set).global_gauge(names::CONNECTED),
            retrying,
            rejections,
            series: SinkSeries::new(sink),
            set,
        }
    }

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

    /// `rows` rows with `bytes` of payload in all were confirmed; counted once per batch
    /// where the mode confirms batches, to keep the counters off the per-row path.
    pub(crate) fn published_rows(&self, rows: usize, bytes: usize) {
        self.published.add(rows);
        self.bytes.add(bytes);
        self.series.rows.inc_by(rows as u64);
        self.series.bytes.inc_by(bytes as u64);
    }

    /// A record batch arrived from the query.
    pub(crate) fn batch_received(&self) {
        self.series.batches.inc();
    }

    /// Messages published and not yet confirmed, and their bytes (payload and headers).
    pub(crate) fn in_flight(&self, messages: usize, bytes: usize) {
        self.in_flight.set(messages);
        self.in_flight_bytes.set(bytes);
        self.series.in_flight.set(messages as i64);
        self.series.in_flight_bytes.set(bytes as i64);
    }

    /// An acknowledgement arrived, `latency` after its message was published.
    pub(crate) fn acked(&self, latency: Duration) {
        self.series.acks.inc();
        self.confirmed_after(latency);
    }

    /// A confirmation (ack or round trip) came `latency` after the publish.
    pub(crate) fn confirmed_after(&self, latency: Duration) {
        self.series.ack_latency.observe(latency.as_secs_f64());
    }

    pub(crate) fn duplicates(&self, rows: usize) {
        self.duplicates.add(rows);
        self.series.duplicates.inc_by(rows as u64);
    }

    pub(crate) fn skipped(&self, rows: usize) {
        self.skipped.add(rows);
        self.series.skipped.inc_by(rows as u64);
    }

    pub(crate) fn dead_lettered(&self, rows: usize) {
        self.dead_lettered.add(rows);
        self.series.dead_lettered.inc_by(rows as u64);
    }

    /// A transient failure of `class` is being retried because of `reason`.
    pub(crate) fn retrying(&self, class: &'static str, reason: &str) {
        self.retries.add(1);
        self.series.retried(class);
        *self.retrying.reason.lock().expect("not poisoned") = Some(reason.to_string());
    }

    /// The retries are over: the sink is publishing again (or has given up).
    pub(crate) fn recovered(&self) {
        self.retrying.reason.lock().expect("not poisoned").take();
    }

    /// A failure of `class` ended the statement.
    pub(crate) fn failed(&self, class: &'static str) {
        self.series.failed(class);
        self.recovered();
    }

    /// The connection is up (`true`) or lost (`false`).
    pub(crate) fn connected(&self, up: bool) {
        self.connected.set(usize::from(up));
        self.series.connected.set(i64::from(up));
    }

    /// Row `row` (from 1) was skipped or dead-lettered because of `reason`; the last
    /// few reasons are kept for a host's status display.
    pub(crate) fn rejected(&self, row: u64, reason: &str) {
        self.rejections.push(format!("row {row}: {reason}"));
    }

    /// A connection was made again after one was lost.
    pub(crate) fn reconnected(&self) {
        self.series.reconnects.inc();
    }
}

/// The reason the sink is retrying, as a DataFusion custom metric so that a host's
/// progress display can show it.
#[derive(Debug, Default)]
pub(crate) struct Retrying {
    reason: Mutex<Option<String>>,
}

impl fmt::Display for Retrying {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.reason.lock().expect("not poisoned") {
            Some(reason) => f.write_str(reason),
            None => f.write_str("-"),
        }
    }
}

impl CustomMetricValue for Retrying {
    fn new_empty(&self) -> Arc<dyn CustomMetricValue> {
        Arc::new(Retrying::default())
    }

    fn aggregate(&self, other: Arc<dyn CustomMetricValue>) {
        let Some(other) = other.as_any().downcast_ref::<Retrying>() else {
            return;
        };
        let theirs = other.reason.lock().expect("not poisoned").clone();
        let mut mine = self.reason.lock().expect("not poisoned");
        if mine.is_none() {
            *mine = theirs;
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    /// 1 while retrying.
    fn as_usize(&self) -> usize {
        usize::from(self.reason.lock().expect("not poisoned").is_some())
    }

    fn is_eq(&self, other: &Arc<dyn CustomMetricValue>) -> bool {
        other.as_any().downcast_ref::<Retrying>().is_some_and(|o| {
            *o.reason.lock().expect("not poisoned") == *self.reason.lock().expect("not poisoned")
        })
    }
}

/// The reasons of the last [`RECENT_REJECTIONS`] rows the sink skipped or
/// dead-lettered, oldest first, as a DataFusion custom metric: a host reads them from
/// the plan ([`RecentRejections::recent`]) to show why rows were left out. Each reason
/// names the row and the rule, never an option value.
#[derive(Debug, Default)]
pub struct RecentRejections {
    reasons: Mutex<std::collections::VecDeque<String>>,
}

impl RecentRejections {
    /// The kept reasons, oldest first.
    pub fn recent(&self) -> Vec<String> {
        self.reasons
            .lock()
            .expect("not poisoned")
            .iter()
            .cloned()
            .collect()
    }

    fn push(&self, reason: String) {
        let mut reasons = self.reasons.lock().expect("not poisoned");
        if reasons.len() == RECENT_REJECTIONS {
            reasons.pop_front();
        }
        // One line each, however the reason was worded.
        reasons.push_back(reason.replace(['\r', '\n'], " "));
    }
}

impl fmt::Display for RecentRejections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reasons = self.recent();
        if reasons.is_empty() {
            f.write_str("-")
        } else {
            f.write_str(&reasons.join("; "))
        }
    }
}

impl CustomMetricValue for RecentRejections {
    fn new_empty(&self) -> Arc<dyn CustomMetricValue> {
        Arc::new(RecentRejections::default())
    }

    fn aggregate(&self, other: Arc<dyn CustomMetricValue>) {
        if let Some(other) = other.as_any().downcast_ref::<RecentRejections>() {
            for reason in other.recent() {
                self.push(reason);
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    /// How many reasons are kept.
    fn as_usize(&self) -> usize {
        self.reasons.lock().expect("not poisoned").len()
    }

    fn is_eq(&self, other: &Arc<dyn CustomMetricValue>) -> bool {
        other
            .as_any()
            .downcast_ref::<RecentRejections>()
            .is_some_and(|o| o.recent() == self.recent())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_reason_is_readable_from_the_plan_metrics_while_retrying() {
        let metrics = SinkMetrics::new("metrics_unit_test");
        let shown = |m: &SinkMetrics| {
            let set = m.snapshot();
            let value = set
                .iter()
                .find(|m| m.value().name() == names::RETRYING)
                .expect("registered")
                .value()
                .clone();
            (value.to_string(), value.as_usize())
        };
        assert_eq!(shown(&metrics), ("-".to_string(), 0));
        metrics.retrying("connection", "cannot connect to NATS");
        assert_eq!(shown(&metrics), ("cannot connect to NATS".to_string(), 1));
        assert_eq!(
            metrics
                .snapshot()
                .sum_by_name(names::RETRIES)
                .unwrap()
                .as_usize(),
            1
        );
        metrics.recovered();
        assert_eq!(shown(&metrics), ("-".to_string(), 0));
    }

    #[test]
    fn the_last_rejection_reasons_and_the_connection_are_readable_from_the_plan_metrics() {
        let metrics = SinkMetrics::new("metrics_unit_test");
        let set = metrics.snapshot();
        assert_eq!(set.sum_by_name(names::CONNECTED).unwrap().as_usize(), 0);
        metrics.connected(true);
        assert_eq!(
            metrics
                .snapshot()
                .sum_by_name(names::CONNECTED)
                .unwrap()
                .as_usize(),
            1
        );
        for row in 1..=7 {
            metrics.rejected(row, "subject 'a b' has\nwhitespace");
        }
        let set = metrics.snapshot();
        let value = set
            .iter()
            .find(|m| m.value().name() == names::REJECTIONS)
            .expect("registered")
            .value()
            .clone();
        let MetricValue::Custom { value, .. } = value else {
            panic!("not a custom metric");
        };
        let recent = value
            .as_any()
            .downcast_ref::<RecentRejections>()
            .unwrap()
            .recent();
        assert_eq!(recent.len(), RECENT_REJECTIONS);
        assert_eq!(recent[0], "row 3: subject 'a b' has whitespace");
        assert_eq!(recent[4], "row 7: subject 'a b' has whitespace");
    }
}
