//! What is running now, for a live status view: each running `INSERT` with the figures
//! of its sink and of the sources it reads.
//!
//! The engine puts a statement on the [`StatusBoard`] when it starts executing and
//! takes it off when it ends (also when it is cancelled). A host (the CLI's status
//! page) asks for a [`Status`] from any thread; the figures come from the plan's
//! metrics through the connectors ([`Connector::delivery`], [`Connector::reading`]), so
//! the board knows no connector. Nothing here holds option values: a status cannot show
//! a secret.
//!
//! [`Connector::delivery`]: crate::registry::Connector::delivery
//! [`Connector::reading`]: crate::registry::Connector::reading

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use datafusion::physical_plan::ExecutionPlan;
use serde::Serialize;

use crate::registry::{DeliveryMetrics, Registry};

/// Rates are taken over at least this long, so they do not jump with every poll.
const RATE_INTERVAL: Duration = Duration::from_secs(1);

/// Everything running now. Serialized as the status page's `/status.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Status {
    /// Each running statement's sink.
    pub sinks: Vec<SinkStatus>,
    /// Each source a running statement reads, when its connector reports on it.
    pub sources: Vec<SourceStatus>,
}

/// Whether a sink or source can do its work now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Connected and working.
    Connected,
    /// Not connected yet (or the connection was lost and no retry has started).
    Connecting,
    /// Retrying after a transient failure; `reason` says which.
    Retrying,
    /// Running; the connector does not say whether it is connected.
    Running,
}

/// One running insert's sink.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinkStatus {
    /// The statement's id, the same in its sources' entries.
    pub statement: u64,
    pub table: String,
    /// The connector that reports on the sink.
    pub connector: String,
    pub state: State,
    /// Why it is retrying, while it is.
    pub reason: Option<String>,
    pub running_seconds: f64,
    /// Rows confirmed per second over the last second or so.
    pub rows_per_second: f64,
    /// Rows the destination confirmed.
    pub rows_confirmed: u64,
    /// Rows sent and not confirmed yet.
    pub in_flight: u64,
    /// The bytes of their messages (payload and headers).
    pub in_flight_bytes: u64,
    pub retries: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    pub duplicates: u64,
    /// Why the last few skipped or dead-lettered rows were left out, oldest first.
    pub recent_rejections: Vec<String>,
}

/// One source of a running statement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SourceStatus {
    pub statement: u64,
    pub connector: String,
    pub state: State,
    pub reason: Option<String>,
    pub rows_per_second: f64,
    /// Rows the source has produced in this statement.
    pub rows_read: u64,
    /// Messages waiting at the source's server (a consumer's pending count), if it has such.
    pub pending: Option<u64>,
}

/// The statements running now; cheap to clone, all clones share the board.
#[derive(Debug, Clone)]
pub struct StatusBoard {
    registry: Registry,
    inner: Arc<Mutex<Board>>,
}

#[derive(Debug, Default)]
struct Board {
    next_id: u64,
    running: Vec<Entry>,
}

struct Entry {
    id: u64,
    table: String,
    started: Instant,
    plan: Arc<dyn ExecutionPlan>,
    /// Rate samples by position: the sink's, then each source's.
    rates: Vec<Rate>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("id", &self.id)
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

/// A rate over the last [`RATE_INTERVAL`] or more.
#[derive(Debug, Clone, Copy)]
struct Rate {
    at: Instant,
    count: u64,
    per_second: f64,
}

impl Rate {
    fn new(started: Instant) -> Self {
        Rate {
            at: started,
            count: 0,
            per_second: 0.0,
        }
    }

    /// Takes a sample of `count` at `now`; returns the rate.
    fn sample(&mut self, now: Instant, count: u64) -> f64 {
        let secs = now.saturating_duration_since(self.at);
        if secs >= RATE_INTERVAL {
            self.per_second = count.saturating_sub(self.count) as f64 / secs.as_secs_f64();
            self.at = now;
            self.count = count;
        }
        self.per_second
    }
}

/// Takes the statement off the board when dropped.
#[derive(Debug)]
pub(super) struct OnBoard {
    board: StatusBoard,
    id: u64,
}

impl Drop for OnBoard {
    fn drop(&mut self) {
        self.board.lock().running.retain(|e| e.id != self.id);
    }
}

impl StatusBoard {
    pub(super) fn new(registry: Registry) -> Self {
        StatusBoard {
            registry,
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Board> {
        // The board holds only figures: one left by a panicking holder is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts an insert into `table` executing `plan` on the board until the guard drops.
    pub(super) fn enter(&self, table: &str, plan: Arc<dyn ExecutionPlan>) -> OnBoard {
        let mut board = self.lock();
        board.next_id += 1;
        let id = board.next_id;
        let started = Instant::now();
        board.running.push(Entry {
            id,
            table: table.to_string(),
            started,
            plan,
            rates: Vec::new(),
        });
        OnBoard {
            board: self.clone(),
            id,
        }
    }

    /// The figures of everything running now.
    pub fn status(&self) -> Status {
        let now = Instant::now();
        let mut status = Status::default();
        let mut board = self.lock();
        for entry in &mut board.running {
            let sink = self.registry.delivery_by(entry.plan.as_ref());
            let readings = self.registry.readings(entry.plan.as_ref());
            let wanted = 1 + readings.len();
            if entry.rates.len() != wanted {
                entry.rates = vec![Rate::new(entry.started); wanted];
            }
            if let Some((connector, delivery)) = sink {
                let rate = entry.rates[0].sample(now, delivery.confirmed);
                status
                    .sinks
                    .push(sink_status(entry, connector, delivery, rate, now));
            }
            for ((connector, reading), rate) in readings.into_iter().zip(&mut entry.rates[1..]) {
                let (state, reason) = state(reading.connected, reading.retrying);
                status.sources.push(SourceStatus {
                    statement: entry.id,
                    connector,
                    state,
                    reason,
                    rows_per_second: rate.sample(now, reading.rows),
                    rows_read: reading.rows,
                    pending: reading.pending,
                });
            }
        }
        status
    }
}

fn sink_status(
    entry: &Entry,
    connector: String,
    d: DeliveryMetrics,
    rows_per_second: f64,
    now: Instant,
) -> SinkStatus {
    let (state, reason) = state(d.connected, d.retrying);
    SinkStatus {
        statement: entry.id,
        table: entry.table.clone(),
        connector,
        state,
        reason,
        running_seconds: now.saturating_duration_since(entry.started).as_secs_f64(),
        rows_per_second,
        rows_confirmed: d.confirmed,
        in_flight: d.in_flight,
        in_flight_bytes: d.in_flight_bytes,
        retries: d.retries,
        skipped: d.skipped,
        dead_lettered: d.dead_lettered,
        duplicates: d.duplicates,
        recent_rejections: d.recent_rejections,
    }
}

/// Retrying wins over the connection flag: a sink retrying a publish may still hold a
/// connection.
fn state(connected: Option<bool>, retrying: Option<String>) -> (State, Option<String>) {
    match (retrying, connected) {
        (Some(reason), _) => (State::Retrying, Some(reason)),
        (None, Some(true)) => (State::Connected, None),
        (None, Some(false)) => (State::Connecting, None),
        (None, None) => (State::Running, None),
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::physical_plan::empty::EmptyExec;
    use datafusion::physical_plan::union::UnionExec;

    use super::*;
    use crate::registry::{Connector, ConnectorKind, OptionDoc, OptionMap, ReadingMetrics};

    /// Reports every `EmptyExec` as a source that read 7 rows and has 3 pending.
    #[derive(Debug)]
    struct FakeSource;

    impl Connector for FakeSource {
        fn name(&self) -> &str {
            "fake_source"
        }
        fn kind(&self) -> ConnectorKind {
            ConnectorKind::Source
        }
        fn options(&self) -> Vec<OptionDoc> {
            Vec::new()
        }
        fn validate_connection_options(&self, _: &OptionMap) -> datafusion::error::Result<()> {
            Ok(())
        }
        fn create_table(
            &self,
            _: &str,
            _: datafusion::arrow::datatypes::SchemaRef,
            _: OptionMap,
        ) -> datafusion::error::Result<Arc<dyn datafusion::catalog::TableProvider>> {
            unreachable!("not used")
        }
        fn reading(&self, node: &dyn ExecutionPlan) -> Option<ReadingMetrics> {
            node.is::<EmptyExec>().then_some(ReadingMetrics {
                rows: 7,
                pending: Some(3),
                connected: Some(true),
                retrying: None,
            })
        }
    }

    #[test]
    fn sources_of_a_running_statement_are_listed_until_it_ends() {
        let mut registry = Registry::new();
        registry.register(Arc::new(FakeSource));
        let board = StatusBoard::new(registry);
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        let empty = || Arc::new(EmptyExec::new(Arc::clone(&schema))) as Arc<dyn ExecutionPlan>;
        let plan = UnionExec::try_new(vec![empty(), empty()]).unwrap();
        let guard = board.enter("t", plan);
        let status = board.status();
        assert!(status.sinks.is_empty(), "no sink reports: {status:?}");
        assert_eq!(status.sources.len(), 2);
        assert_eq!(
            (
                status.sources[0].rows_read,
                status.sources[0].pending,
                status.sources[0].state
            ),
            (7, Some(3), State::Connected)
        );
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["sources"][1]["connector"], "fake_source");
        assert_eq!(json["sources"][1]["state"], "connected");
        drop(guard);
        assert_eq!(board.status(), Status::default());
    }

    #[test]
    fn retrying_wins_over_connected() {
        assert_eq!(
            state(Some(true), Some("server down".into())),
            (State::Retrying, Some("server down".into()))
        );
        assert_eq!(state(Some(false), None), (State::Connecting, None));
        assert_eq!(state(None, None), (State::Running, None));
    }

    #[test]
    fn a_rate_is_taken_over_at_least_a_second() {
        let start = Instant::now();
        let mut rate = Rate::new(start);
        assert_eq!(rate.sample(start + Duration::from_millis(500), 100), 0.0);
        assert_eq!(rate.sample(start + Duration::from_secs(2), 1000), 500.0);
        assert_eq!(
            rate.sample(start + Duration::from_millis(2500), 5000),
            500.0
        );
        assert_eq!(
            rate.sample(start + Duration::from_secs(4), 1000 + 3000),
            1500.0
        );
    }
}
