//! Tests of stopping a statement: the sink's input cut by the latch, the grace period
//! and the abort latch.

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{collect, displayable};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::*;
use crate::shutdown::Shutdown;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]))
}

/// An endless partition: a batch whenever polled, never the end.
#[derive(Debug)]
struct Endless;

impl PartitionStream for Endless {
    fn schema(&self) -> &SchemaRef {
        static SCHEMA: std::sync::OnceLock<SchemaRef> = std::sync::OnceLock::new();
        SCHEMA.get_or_init(schema)
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let batches = futures::stream::repeat_with(|| {
            Ok(RecordBatch::try_new(
                schema(),
                vec![Arc::new(Int64Array::from(vec![1, 2]))],
            )?)
        });
        Box::pin(RecordBatchStreamAdapter::new(schema(), batches))
    }
}

fn endless(unbounded: bool) -> Arc<dyn ExecutionPlan> {
    Arc::new(
        StreamingTableExec::try_new(schema(), vec![Arc::new(Endless)], None, [], unbounded, None)
            .unwrap(),
    )
}

async fn insert_plan(input: Arc<dyn ExecutionPlan>) -> (Arc<dyn ExecutionPlan>, Arc<MemTable>) {
    let table = Arc::new(MemTable::try_new(schema(), vec![vec![]]).unwrap());
    let state = SessionContext::new().state();
    let plan = table
        .insert_into(&state, input, InsertOp::Append)
        .await
        .unwrap();
    (plan, table)
}

#[tokio::test]
async fn an_endless_input_ends_when_the_latch_fires_and_says_so() {
    for unbounded in [true, false] {
        let shutdown = Shutdown::new();
        let (plan, table) = insert_plan(endless(unbounded)).await;
        let (plan, stop) = stop_sink_input(plan, &shutdown.signal()).unwrap();
        let stop = stop.expect("the sink's input is wrapped");
        let shown = displayable(plan.as_ref()).indent(false).to_string();
        assert!(shown.contains("StopOnShutdownExec"), "{shown}");
        // The wrapper keeps its input's properties.
        assert_eq!(
            plan.children()[0].boundedness(),
            plan.children()[0].children()[0].boundedness()
        );

        let trigger = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            trigger.trigger();
        });
        let task_ctx = SessionContext::new().task_ctx();
        let counts = tokio::time::timeout(Duration::from_secs(10), collect(plan, task_ctx))
            .await
            .expect("the insert ends once the latch fires")
            .unwrap();
        let written = counts[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::UInt64Array>()
            .unwrap()
            .value(0);
        assert!(written > 0, "rows were read before the signal");
        let held: usize = table.batches[0]
            .read()
            .await
            .iter()
            .map(|b| b.num_rows())
            .sum();
        assert_eq!(held as u64, written);
        let expected = if unbounded {
            SignalStop::Unbounded
        } else {
            SignalStop::Bounded
        };
        assert_eq!(stop.stopped(), Some(expected));
    }
}

#[tokio::test]
async fn an_input_read_to_its_end_was_not_cut() {
    let shutdown = Shutdown::new();
    let batch =
        RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
    let input = MemorySourceConfig::try_new_exec(&[vec![batch]], schema(), None).unwrap();
    let (plan, _table) = insert_plan(input).await;
    let (plan, stop) = stop_sink_input(plan, &shutdown.signal()).unwrap();
    collect(plan, SessionContext::new().task_ctx())
        .await
        .unwrap();
    // A signal after the end changes nothing: the insert completed.
    shutdown.trigger();
    assert_eq!(stop.unwrap().stopped(), None);
}

#[tokio::test]
async fn a_stream_ends_at_once_when_the_latch_fires_while_its_input_waits() {
    let shutdown = Shutdown::new();
    let pending = futures::stream::pending::<Result<RecordBatch>>();
    let cut = Arc::new(AtomicBool::new(false));
    let mut signal = shutdown.signal();
    let mut stream = StopStream {
        schema: schema(),
        input: Some(Box::pin(RecordBatchStreamAdapter::new(schema(), pending))),
        latch: async move { signal.triggered().await }.boxed(),
        cut: Arc::clone(&cut),
    };
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        trigger.trigger();
    });
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("woken by the latch");
    assert!(next.is_none());
    assert!(cut.load(Ordering::Acquire));
}

#[tokio::test]
async fn within_grace_lets_a_statement_finish_then_cancels_it() {
    let shutdown = Shutdown::new();
    // Not fired: the statement runs to its end, however long.
    let abort = Shutdown::new();
    let done = within_grace(
        shutdown.signal(),
        abort.signal(),
        Duration::ZERO,
        async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            7
        },
        |_| (),
    )
    .await;
    assert_eq!(done, Ok(7));

    shutdown.trigger();
    // Fired: a statement finishing within the grace period keeps its result ...
    let quick = within_grace(
        shutdown.signal(),
        abort.signal(),
        Duration::from_secs(5),
        async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            8
        },
        |_| (),
    )
    .await;
    assert_eq!(quick, Ok(8));
    // ... one that does not is dropped when it ends.
    struct Dropped(Arc<AtomicBool>);
    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = Dropped(Arc::clone(&dropped));
    let started = tokio::time::Instant::now();
    let seen = Arc::clone(&dropped);
    let stuck = within_grace(
        shutdown.signal(),
        abort.signal(),
        Duration::from_millis(100),
        async move {
            let _guard = guard;
            std::future::pending::<()>().await
        },
        // Still there when its last figures are read.
        move |cancel| (cancel, seen.load(Ordering::Acquire)),
    )
    .await;
    assert_eq!(stuck, Err((Cancel::GraceOver, false)));
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert!(
        dropped.load(Ordering::Acquire),
        "the statement was cancelled"
    );
    // The abort latch cancels at once, however long the grace period.
    abort.trigger();
    let started = tokio::time::Instant::now();
    let aborted = within_grace(
        shutdown.signal(),
        abort.signal(),
        Duration::from_secs(60),
        std::future::pending::<()>(),
        |cancel| cancel,
    )
    .await;
    assert_eq!(aborted, Err(Cancel::Aborted));
    assert!(started.elapsed() < Duration::from_secs(5));
}
