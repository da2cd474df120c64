//! The one delivery driver: attempt, back off, reopen, resend.
//!
//! Every mode (core, the JetStream window, exactly-once batches, the JetStream start
//! checks) is a [`Work`]: it attempts what it can on the [`Link`] and classifies what went
//! wrong into a [`Failure`], including the server's out-of-band refusals (see
//! `connect::out_of_band`). This loop does the rest, the same way for all of them: a
//! permanent failure ends the statement; a transient one waits (exponential backoff with
//! jitter, bounded by `retry_timeout`: see `retry`), replaces a lost connection (and what
//! lives on it: the JetStream context), and lets the work resend from its first
//! unconfirmed row. A confirmed step ends a retry episode. Connecting, and connecting again,
//! retry through [`until_ok`], the same backoff.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::{self, Context};
use async_trait::async_trait;

use crate::connect::Connection;
use crate::deliver::failure::Failure;
use crate::deliver::retry::Retry;
use crate::error::Result;

/// What an attempt achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Something was confirmed and more is to do: attempt again.
    Progress,
    /// Done for now, with something confirmed.
    Done,
    /// Done for now without confirming anything (e.g. acks still outstanding): the retry
    /// episode, if any, goes on.
    Waiting,
}

/// What differs per mode: sending and confirming, and starting over.
#[async_trait]
pub(crate) trait Work: Send {
    /// Sends and confirms what it can on `link`.
    async fn attempt(&mut self, link: &mut Link) -> std::result::Result<Step, Failure>;

    /// After a failure, before the backoff: the next attempt starts from the first
    /// unconfirmed row, in order. What was in flight stays countable by `abandon` until
    /// that attempt.
    fn rewind(&mut self) {}

    /// Before the statement fails for good: settle what is still in flight, so that the
    /// count of confirmed rows is what the server holds.
    async fn abandon(&mut self, _link: &mut Link) {}
}

/// The connection the sink publishes on, and what is made on it.
pub(crate) struct Link {
    pub connection: Connection,
    /// The JetStream context on `connection`, in JetStream mode; made again on every new
    /// connection.
    js: Option<(Context, JsSettings)>,
}

/// How the JetStream context is made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsSettings {
    pub confirm_timeout: Duration,
    pub max_in_flight: usize,
}

impl Link {
    /// A link on `connection`; with `js`, also the JetStream context.
    pub(crate) fn new(connection: Connection, js: Option<JsSettings>) -> Self {
        let js = js.map(|settings| (js_context(&connection, settings), settings));
        Link { connection, js }
    }

    /// The JetStream context. Only JetStream work calls this, on a link made with it.
    pub(crate) fn js(&self) -> &Context {
        &self.js.as_ref().expect("a JetStream link has a context").0
    }

    async fn reopen_if_lost(&mut self, retry: &mut Retry) -> Result<()> {
        if self.connection.reopen_if_lost(retry).await?
            && let Some((context, settings)) = &mut self.js
        {
            *context = js_context(&self.connection, *settings);
        }
        Ok(())
    }

    /// Closes the connection after everything sent was confirmed.
    pub(crate) async fn close(self) {
        self.connection.close().await;
    }
}

/// The JetStream context the sink publishes through.
fn js_context(connection: &Connection, settings: JsSettings) -> Context {
    // Acks are awaited by the window with its own timeout; acks of abandoned publishes
    // (after a failure) are left to async-nats's acker, which must not hold up new ones.
    jetstream::context::ContextBuilder::new()
        .timeout(settings.confirm_timeout)
        .ack_timeout(settings.confirm_timeout)
        .max_ack_inflight(settings.max_in_flight.saturating_mul(4).max(1024))
        .backpressure_on_inflight(true)
        .build(connection.client.clone())
}

/// Calls `attempt` until it succeeds, backing off after each transient failure: how the
/// sink connects, and connects again after a lost connection.
pub(crate) async fn until_ok<T, F, Fut>(retry: &mut Retry, mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, Failure>>,
{
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(failure) => retry.wait(failure).await?,
        }
    }
}

/// Runs `work` on `link` until it is done for now, retrying transient failures.
/// Cancel-safe between attempts: dropped during a backoff or a reconnect, the work
/// resends from its first unconfirmed row when run again.
pub(crate) async fn run(link: &mut Link, retry: &mut Retry, work: &mut impl Work) -> Result<()> {
    loop {
        match work.attempt(link).await {
            Ok(Step::Done) => {
                retry.succeeded();
                return Ok(());
            }
            Ok(Step::Waiting) => return Ok(()),
            Ok(Step::Progress) => retry.succeeded(),
            Err(failure) => {
                // Rewound before waiting, so a caller may drop this future during the
                // backoff (an idle sink whose next batch came) and push again later.
                work.rewind();
                let resumed = match retry.wait(failure).await {
                    Ok(()) => link.reopen_if_lost(retry).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = resumed {
                    work.abandon(link).await;
                    return Err(e);
                }
            }
        }
    }
}
