//! What a statement owes a durable consumer: the messages it read, acknowledged only
//! once the rows derived from them are confirmed.
//!
//! - A bounded read (`stop_at = 'end'`) acknowledges everything at once when the engine
//!   says the whole statement's output is confirmed ([`Acks::commit`]); a statement that
//!   did not read to its end (a `LIMIT`) acknowledges nothing.
//! - A continuous read follows its sink (`source::link`): when the plan asks for the next
//!   batch, the messages read so far are passed on, with the count of rows the sink had
//!   taken then; a task acknowledges them once the sink settled that many rows
//!   (`crate::lineage`). Messages whose rows were all filtered out are passed on with the
//!   batches around them, so a selective filter never stalls the consumer at its
//!   `max_ack_pending`. Every third of the consumer's `ack_wait` the task tells the
//!   server that the messages it holds are still being worked on (`+WPI`), so a slow
//!   sink does not get them delivered again meanwhile.
//!
//! What is not acknowledged when the statement ends (it failed, was cancelled or
//! stopped) is handed back (`-NAK`), so a rerun reads it again at once instead of after
//! `ack_wait`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_nats::{Client, Subject};
use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::error::{NatsSinkError, Result};
use crate::lineage::OutputProgress;
use crate::metrics::prometheus::SourceSeries;
use crate::source::consumer::Claim;

/// The acknowledgement state of one execution of a source.
#[derive(Debug)]
pub(crate) struct Acks {
    series: SourceSeries,
    state: Mutex<State>,
    /// The sink a continuous read follows (see `source::link`).
    output: OnceLock<Arc<OutputProgress>>,
    /// Wakes the acknowledging task when messages are passed on.
    passed_on: Arc<Notify>,
    /// Held while messages are taken from the state and sent, so that `commit` returns
    /// only after what the task took before it was sent (and answered in order).
    turn: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct State {
    /// The client the messages came on; acks go back on it.
    client: Option<Client>,
    /// The reply subject of every message read and not passed on yet, in order.
    replies: Vec<Subject>,
    /// Messages passed on to the plan, waiting for their rows to be settled.
    passed: VecDeque<Passed>,
    /// The read reached the end of what it was to read.
    finished: bool,
    /// The durable consumer, claimed for this statement's read alone.
    claim: Option<Claim>,
    /// Whether the acknowledging task was started.
    acking: bool,
}

/// Messages whose rows are all with the sink once it has taken `taken` rows.
#[derive(Debug)]
struct Passed {
    replies: Vec<Subject>,
    taken: u64,
}

const ACK: &[u8] = b"+ACK";
const NAK: &[u8] = b"-NAK";
const IN_PROGRESS: &[u8] = b"+WPI";

impl Acks {
    /// Counts what is acknowledged and handed back in `series`.
    pub(crate) fn new(series: SourceSeries) -> Self {
        Acks {
            series,
            state: Mutex::default(),
            output: OnceLock::new(),
            passed_on: Arc::default(),
            turn: Arc::default(),
        }
    }

    /// The read is under way on `client`.
    pub(crate) fn start(&self, client: Client) {
        self.lock().client = Some(client);
    }

    /// Keeps `claim` until the statement's plan is dropped.
    pub(crate) fn hold(&self, claim: Claim) {
        self.lock().claim = Some(claim);
    }

    /// Acknowledge as `output` settles rows (a continuous read; see `source::link`).
    pub(crate) fn follow(&self, output: Arc<OutputProgress>) {
        // A plan linked twice keeps its first sink: the same one.
        let _ = self.output.set(output);
    }

    pub(crate) fn following(&self) -> bool {
        self.output.get().is_some()
    }

    /// Starts the task that tells the server every third of `ack_wait` that the messages
    /// held are still in progress (a bounded read holds them all until its end), and
    /// that acknowledges a continuous read as its sink settles rows.
    pub(crate) fn start_acking(self: &Arc<Self>, ack_wait: Duration) {
        let mut state = self.lock();
        let (Some(sender), false) = (self.sender(&state), state.acking) else {
            return;
        };
        // Detached: it ends by itself once the state is dropped.
        tokio::spawn(acknowledge(
            Arc::downgrade(self),
            self.output.get().cloned(),
            Arc::clone(&self.passed_on),
            sender,
            (ack_wait / 3).max(Duration::from_millis(100)),
        ));
        state.acking = true;
    }

    /// Messages were read (and turned into rows, skipped or dead-lettered).
    pub(crate) fn read(&self, replies: impl IntoIterator<Item = Subject>) {
        self.lock().replies.extend(replies);
    }

    /// The plan asks for the next batch: the rows of every message read so far are with
    /// the sink (a continuous read; a bounded one settles at its end).
    pub(crate) fn pass_on(&self) {
        let Some(output) = self.output.get() else {
            return;
        };
        let mut state = self.lock();
        if state.replies.is_empty() {
            return;
        }
        let replies = std::mem::take(&mut state.replies);
        let taken = output.taken();
        state.passed.push_back(Passed { replies, taken });
        drop(state);
        self.passed_on.notify_one();
    }

    /// The read reached the end of what it was to read.
    pub(crate) fn finished(&self) {
        self.lock().finished = true;
    }

    /// Called once the statement's output is confirmed (`complete`: all of it, not cut
    /// short by a stop): acknowledges every message whose rows were confirmed, which is
    /// every message read if the read reached its end and the output is complete, or
    /// those passed on to a followed sink; hands the others back. Returns how many were
    /// acknowledged, once the server has processed the acknowledgements.
    pub(crate) async fn commit(&self, complete: bool) -> Result<u64> {
        let _turn = self.turn.lock().await;
        let (sender, done, rest) = {
            let mut state = self.lock();
            let replies = std::mem::take(&mut state.replies);
            let passed = std::mem::take(&mut state.passed);
            let done: Vec<Subject> = passed.into_iter().flat_map(|p| p.replies).collect();
            let sender = self.sender(&state);
            match (state.finished && complete, self.following()) {
                (true, _) => (sender, [done, replies].concat(), Vec::new()),
                (false, true) => (sender, done, replies),
                (false, false) => (sender, Vec::new(), replies),
            }
        };
        let Some(sender) = sender else {
            return Ok(0);
        };
        if !rest.is_empty() {
            info!(
                messages = rest.len(),
                "nats_source: the statement ended before all rows of these messages were confirmed (a LIMIT, or a stop); they are handed back and delivered again"
            );
            sender.send_or_log(rest, NAK).await;
        }
        let count = done.len() as u64;
        sender
            .send(done, ACK)
            .await
            .map_err(|e| NatsSinkError::Read {
                problem: format!(
                    "acknowledging the {count} messages the statement read failed: {e}; the statement's output was confirmed, and the consumer delivers those messages again after its ack_wait"
                ),
            })?;
        Ok(count)
    }

    /// The read failed: hands back what was read and not passed on now, rather than
    /// when the plan is dropped, so that a rerun finds the messages at once.
    pub(crate) async fn abandon(&self) {
        let _turn = self.turn.lock().await;
        let (sender, replies) = {
            let mut state = self.lock();
            (self.sender(&state), std::mem::take(&mut state.replies))
        };
        if let Some(sender) = sender {
            sender.send_or_log(replies, NAK).await;
        }
    }

    /// Takes the passed-on messages whose rows are settled, and (with `all`) splits off
    /// the others too.
    fn take_settled(&self, all: bool) -> (Vec<Subject>, Vec<Subject>) {
        let settled = self.output.get().map_or(0, |o| o.settled());
        let mut state = self.lock();
        let mut done = Vec::new();
        while state.passed.front().is_some_and(|p| p.taken <= settled) {
            done.extend(state.passed.pop_front().into_iter().flat_map(|p| p.replies));
        }
        let mut rest = Vec::new();
        if all {
            rest.extend(
                std::mem::take(&mut state.passed)
                    .into_iter()
                    .flat_map(|p| p.replies),
            );
            rest.append(&mut state.replies);
        }
        (done, rest)
    }

    /// Sends on the client the messages came on, once the read started.
    fn sender(&self, state: &State) -> Option<Sender> {
        let client = state.client.clone()?;
        Some(Sender {
            client,
            series: self.series.clone(),
            turn: Arc::clone(&self.turn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Acknowledges a continuous read's messages as the sink settles their rows (with
/// `output`), and keeps the ones it holds from being delivered again (see the module
/// documentation). Ends when the read's state is dropped, which wakes it.
async fn acknowledge(
    acks: Weak<Acks>,
    output: Option<Arc<OutputProgress>>,
    passed_on: Arc<Notify>,
    sender: Sender,
    in_progress_every: Duration,
) {
    let mut in_progress = tokio::time::interval(in_progress_every);
    in_progress.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    in_progress.tick().await;
    loop {
        let next = match acks.upgrade() {
            Some(acks) => acks.lock().passed.front().map(|p| p.taken),
            None => return,
        };
        // Woken by messages passed on, and by the state's drop.
        let settled = async {
            match (next, &output) {
                (Some(taken), Some(output)) => tokio::select! {
                    () = output.settled_at_least(taken) => {}
                    () = passed_on.notified() => {}
                },
                _ => passed_on.notified().await,
            }
        };
        tokio::select! {
            () = settled => {
                let _turn = sender.turn.lock().await;
                let Some(done) = acks.upgrade().map(|a| a.take_settled(false).0) else {
                    return;
                };
                sender.send_or_log(done, ACK).await;
            }
            _ = in_progress.tick() => {
                let _turn = sender.turn.lock().await;
                let Some(held) = acks.upgrade().map(|a| a.held()) else {
                    return;
                };
                sender.send_or_log(held, IN_PROGRESS).await;
            }
        }
    }
}

impl Acks {
    /// Every message read and not acknowledged yet.
    fn held(&self) -> Vec<Subject> {
        let state = self.lock();
        let passed = state.passed.iter().flat_map(|p| p.replies.iter());
        passed.chain(state.replies.iter()).cloned().collect()
    }
}

/// Sends acknowledgements on the client the messages came on, and counts them. Callers
/// hold `turn` from taking the messages to the end of the send.
#[derive(Clone)]
struct Sender {
    client: Client,
    series: SourceSeries,
    turn: Arc<tokio::sync::Mutex<()>>,
}

impl Sender {
    /// Sends `body` to each message's reply subject, in order, and returns once the
    /// server answered the last one: it came on the same connection, so the server has
    /// processed them all.
    async fn send(&self, mut replies: Vec<Subject>, body: &'static [u8]) -> Result<(), String> {
        let Some(last) = replies.pop() else {
            return Ok(());
        };
        let count = replies.len() as u64 + 1;
        for reply in replies {
            self.client
                .publish(reply, Bytes::from_static(body))
                .await
                .map_err(|e| e.to_string())?;
        }
        self.client
            .request(last, Bytes::from_static(body))
            .await
            .map_err(|e| e.to_string())?;
        if body == ACK {
            self.series.acked.inc_by(count);
        } else if body == NAK {
            self.series.handed_back.inc_by(count);
        }
        debug!(messages = count, kind = %String::from_utf8_lossy(body), "nats_source: sent");
        Ok(())
    }

    /// [`Sender::send`], where a failure is only logged: the server then delivers the
    /// messages again after `ack_wait`, which message ids make harmless.
    async fn send_or_log(&self, replies: Vec<Subject>, body: &'static [u8]) {
        let count = replies.len();
        if let Err(e) = self.send(replies, body).await {
            warn!(
                messages = count,
                "nats_source: sending {} failed ({e}); the server delivers the messages again after ack_wait",
                String::from_utf8_lossy(body)
            );
        }
    }
}

impl Drop for Acks {
    /// The statement ended without a commit (it failed, was cancelled or stopped):
    /// acknowledges the passed-on messages whose rows the sink settled, and hands the
    /// rest back, if a runtime is there to send it.
    fn drop(&mut self) {
        // The task is not aborted: it may be sending acknowledgements it took already
        // (it may even be the one dropping this). Woken, it finds the state gone and ends.
        // What it took is sent before what is sent from here (`turn`).
        self.passed_on.notify_one();
        let (done, rest) = self.take_settled(true);
        let Some(sender) = self.sender(&self.lock()) else {
            return;
        };
        if done.is_empty() && rest.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _turn = sender.turn.lock().await;
                sender.send_or_log(done, ACK).await;
                sender.send_or_log(rest, NAK).await;
            });
        }
    }
}
