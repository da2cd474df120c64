//! Stopping a running statement when the shutdown latch fires: one mechanism for every
//! input and every sink.
//!
//! 1. Stop reading. Before an `INSERT` runs, the input of its sink (the child of the
//!    `DataSinkExec` DataFusion plans for it) is wrapped in [`StopOnShutdownExec`],
//!    whose stream ends as soon as the latch fires, even while the input is waiting for
//!    data. The sink sees the end of its input, whatever produced it (`datagen`,
//!    `generate_series`, `VALUES`, files, joins of them), confirms what it has read and
//!    completes as it would at the end of the data. A query from an unbounded source
//!    gets the wrapper over its output ([`stop_output`]): its result ends there.
//! 2. Bound the wait. [`within_grace`] gives the statement a grace period from the
//!    moment the latch fires; a statement still running then (a sink retrying against a
//!    dead server, a slow bounded query) is cancelled by dropping its future, which
//!    drops the sink's `write_all` future and with it every retry. The abort latch (an
//!    interactive host's second Ctrl-C) cancels it the same way, at once.

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

/// Why [`within_grace`] cancelled a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cancel {
    /// It had not finished `grace` after the shutdown latch fired.
    GraceOver,
    /// The abort latch fired (an interactive host's second Ctrl-C).
    Aborted,
}

/// Runs `statement`; once `signal` fires, lets it finish for at most `grace`, and once
/// `abort` fires, not at all. When either runs out, `before_cancel` runs (while the
/// statement still exists, e.g. to read its plan's metrics before the sink resets its
/// gauges), then the statement's future is dropped, which cancels whatever it was
/// doing, and this returns `before_cancel`'s result as the error.
pub(super) async fn within_grace<F: Future, C>(
    mut signal: ShutdownSignal,
    mut abort: ShutdownSignal,
    grace: Duration,
    statement: F,
    before_cancel: impl FnOnce(Cancel) -> C,
) -> Result<F::Output, C> {
    let mut statement = std::pin::pin!(statement);
    let grace_over = async move {
        signal.triggered().await;
        tokio::time::sleep(grace).await;
    };
    // Biased: a statement that is done keeps its result, whatever fired meanwhile.
    let cancel = tokio::select! {
        biased;
        done = &mut statement => return Ok(done),
        () = abort.triggered() => Cancel::Aborted,
        () = grace_over => Cancel::GraceOver,
    };
    // The statement's future is dropped when this returns, after `before_cancel`.
    Err(before_cancel(cancel))
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

/// `plan`, a query that does not end by itself (it reads an unbounded source), with its
/// output wrapped in a [`StopOnShutdownExec`]: once the latch fires its result ends with
/// the rows produced so far, as an `INSERT` from such a source ends. The handle tells
/// whether the latch cut it.
pub(super) fn stop_output(
    plan: Arc<dyn ExecutionPlan>,
    signal: &ShutdownSignal,
) -> (Arc<dyn ExecutionPlan>, InputStop) {
    let stop = InputStop {
        unbounded: plan.boundedness().is_unbounded(),
        cut: Arc::default(),
    };
    let wrapped = StopOnShutdownExec::new(plan, signal.clone(), Arc::clone(&stop.cut));
    (Arc::new(wrapped), stop)
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
mod tests;
