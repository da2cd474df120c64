//! Stopping a running statement when the shutdown latch fires: one mechanism for every
//! input and every sink.
//!
//! 1. Stop reading. Before an `INSERT` runs, the input of its sink (the child of the
//!    `DataSinkExec` DataFusion plans for it) is wrapped in [`StopOnShutdownExec`],
//!    whose stream ends as soon as the latch fires, even while the input is waiting for
//!    data. The sink sees the end of its input, whatever produced it (`datagen`,
//!    `generate_series`, `VALUES`, files, joins of them), confirms what it has read and
//!    completes as it would at the end of the data.
//! 2. Bound the wait. [`within_grace`] gives the statement a grace period from the
//!    moment the latch fires; a statement still running then (a sink retrying against a
//!    dead server, a query that is not an `INSERT`) is cancelled by dropping its future,
//!    which drops the sink's `write_all` future and with it every retry.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::Result;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::{FutureExt, Stream};

use super::outcome::SignalStop;
use crate::shutdown::ShutdownSignal;

/// How long a statement may keep running after the shutdown latch fired, by default:
/// long enough for a sink to confirm the rows it has read when its server is healthy
/// (a window of JetStream acks, or one round trip for core NATS), short enough for an
/// operator's Ctrl-C or a supervisor's stop timeout.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(5);

/// Runs `statement`; once `signal` fires, lets it finish for at most `grace`. When the
/// grace period runs out, `before_cancel` runs (while the statement still exists, e.g.
/// to read its plan's metrics before the sink resets its gauges), then the statement's
/// future is dropped, which cancels whatever it was doing, and this returns
/// `before_cancel`'s result as the error.
pub(super) async fn within_grace<F: Future, C>(
    mut signal: ShutdownSignal,
    grace: Duration,
    statement: F,
    before_cancel: impl FnOnce() -> C,
) -> Result<F::Output, C> {
    let mut statement = std::pin::pin!(statement);
    let deadline = async move {
        signal.triggered().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        biased;
        done = &mut statement => return Ok(done),
        () = deadline => {}
    }
    // The statement's future is dropped when this returns, after `before_cancel`.
    Err(before_cancel())
}

/// What became of the input of a sink wrapped by [`stop_sink_input`].
#[derive(Debug)]
pub(super) struct InputStop {
    unbounded: bool,
    cut: Arc<AtomicBool>,
}

impl InputStop {
    /// How the latch ended the input; `None` when the input was read to its end.
    pub(super) fn stopped(&self) -> Option<SignalStop> {
        if !self.cut.load(Ordering::Acquire) {
            None
        } else if self.unbounded {
            Some(SignalStop::Unbounded)
        } else {
            Some(SignalStop::Bounded)
        }
    }
}

/// `plan` with the input of its first `DataSinkExec` (depth first) wrapped in a
/// [`StopOnShutdownExec`], and a handle that tells whether the latch cut it. A plan
/// without a `DataSinkExec` (a table whose `insert_into` plans something else) is
/// returned unchanged: only the grace period bounds it.
pub(super) fn stop_sink_input(
    plan: Arc<dyn ExecutionPlan>,
    signal: &ShutdownSignal,
) -> Result<(Arc<dyn ExecutionPlan>, Option<InputStop>)> {
    if plan.is::<DataSinkExec>() {
        let children = plan.children();
        let [input] = children.as_slice() else {
            return Ok((plan, None));
        };
        let input = Arc::clone(input);
        drop(children);
        let stop = InputStop {
            unbounded: input.boundedness().is_unbounded(),
            cut: Arc::default(),
        };
        let wrapped = StopOnShutdownExec::new(input, signal.clone(), Arc::clone(&stop.cut));
        let plan = replace_children(plan, vec![Arc::new(wrapped)])?;
        return Ok((plan, Some(stop)));
    }
    let children: Vec<_> = plan.children().into_iter().cloned().collect();
    for (i, child) in children.iter().enumerate() {
        let (new_child, stop) = stop_sink_input(Arc::clone(child), signal)?;
        if stop.is_some() {
            let mut new_children = children.clone();
            new_children[i] = new_child;
            return Ok((replace_children(plan, new_children)?, stop));
        }
    }
    Ok((plan, None))
}

/// The wrapper has its input's properties, so the parent keeps its own.
fn replace_children(
    plan: Arc<dyn ExecutionPlan>,
    children: Vec<Arc<dyn ExecutionPlan>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.replace_children(
        children,
        ReplaceChildrenOptions::new(ChildrenPropertiesMode::Keep),
    )
}

/// Passes its input through until the shutdown latch fires, then ends every partition's
/// stream at once (dropping the input's stream, which stops whatever produced it).
#[derive(Debug, Clone)]
pub struct StopOnShutdownExec {
    input: Arc<dyn ExecutionPlan>,
    signal: ShutdownSignal,
    /// Set when the latch ended a stream before its input did.
    cut: Arc<AtomicBool>,
}

impl StopOnShutdownExec {
    fn new(input: Arc<dyn ExecutionPlan>, signal: ShutdownSignal, cut: Arc<AtomicBool>) -> Self {
        Self { input, signal, cut }
    }
}

impl DisplayAs for StopOnShutdownExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StopOnShutdownExec")
    }
}

impl ExecutionPlan for StopOnShutdownExec {
    fn name(&self) -> &str {
        "StopOnShutdownExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(datafusion::error::DataFusionError::Internal(format!(
                "StopOnShutdownExec takes one child, got {}",
                children.len()
            )));
        }
        Ok(Arc::new(Self {
            input: children.swap_remove(0),
            ..Self::clone(&self)
        }))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let mut signal = self.signal.clone();
        Ok(Box::pin(StopStream {
            schema: input.schema(),
            input: Some(input),
            latch: async move { signal.triggered().await }.boxed(),
            cut: Arc::clone(&self.cut),
        }))
    }
}

/// One partition's stream of [`StopOnShutdownExec`].
struct StopStream {
    schema: SchemaRef,
    /// `None` once the stream ended.
    input: Option<SendableRecordBatchStream>,
    latch: Pin<Box<dyn Future<Output = ()> + Send>>,
    cut: Arc<AtomicBool>,
}

impl Stream for StopStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let Some(input) = this.input.as_mut() else {
            return Poll::Ready(None);
        };
        // The latch first: an input that is always ready (generate_series) must not
        // keep the stream going after the signal.
        if this.latch.as_mut().poll(cx).is_ready() {
            this.input = None;
            this.cut.store(true, Ordering::Release);
            return Poll::Ready(None);
        }
        let next = input.as_mut().poll_next(cx);
        if let Poll::Ready(None) = next {
            this.input = None;
        }
        next
    }
}

impl RecordBatchStream for StopStream {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }
}

#[cfg(test)]
mod tests {
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
            StreamingTableExec::try_new(
                schema(),
                vec![Arc::new(Endless)],
                None,
                [],
                unbounded,
                None,
            )
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
        let batch = RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))])
            .unwrap();
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
        let done = within_grace(
            shutdown.signal(),
            Duration::ZERO,
            async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                7
            },
            || (),
        )
        .await;
        assert_eq!(done, Ok(7));

        shutdown.trigger();
        // Fired: a statement finishing within the grace period keeps its result ...
        let quick = within_grace(
            shutdown.signal(),
            Duration::from_secs(5),
            async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                8
            },
            || (),
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
            Duration::from_millis(100),
            async move {
                let _guard = guard;
                std::future::pending::<()>().await
            },
            // Still there when its last figures are read.
            move || seen.load(Ordering::Acquire),
        )
        .await;
        assert_eq!(stuck, Err(false));
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(
            dropped.load(Ordering::Acquire),
            "the statement was cancelled"
        );
    }
}
