//! What the server reports out of band, tied to the publishes that caused it.
//!
//! nats-server answers a refused publish (`-ERR 'Permissions Violation for Publish to
//! "x"'`) with nothing but an `-ERR` on the connection, in order with everything else it
//! sends. async-nats hands that error to the connection's event callback, which runs on a
//! task of its own (`async-nats/src/lib.rs`, `connect_with_options`), while messages go to
//! their subscriptions directly. So a confirmation that comes back on a subscription can
//! overtake the `-ERR` of a publish sent before it: on a multi-thread runtime the refusal
//! of a batch was often seen only after the batch was counted, or never.
//!
//! The [`Barrier`] therefore travels the same path as the errors. The client's one
//! subscription (its capacity is 1, see `Connection::try_open`) is filled with a plug
//! message that nobody reads; every further message to it makes async-nats queue
//! `Event::SlowConsumer` behind the events of everything the server sent before it. When
//! the callback has seen the barrier's event, it has seen every error the server sent for
//! publishes made before the barrier, in order. Each error is stamped with the number of
//! barriers seen before it, so it is blamed on the attempt that caused it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, Event, Subject, Subscriber};
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::metrics::SinkMetrics;

/// Bytes written between two checks that show the client is still writing a batch.
const WRITING: u64 = 1024;

/// How often a wait for a barrier checks whether the connection was lost or is still
/// writing.
const POLL: Duration = Duration::from_millis(100);

/// The event callback's record, shared with the sink's side.
#[derive(Debug, Default)]
struct Record {
    /// Barrier events seen so far.
    barriers: u64,
    /// Errors the server sent, each with the number of barriers seen before it; the oldest
    /// first, cleared once taken.
    errors: Vec<(u64, String)>,
}

/// How nats-server words a refused publish: `Permissions Violation for Publish to "x"`.
const PUBLISH_REFUSED: &str = "Permissions Violation for Publish";

/// The subject a refused publish names, if the text has one.
pub(crate) fn refused_subject(text: &str) -> Option<&str> {
    let (_, quoted) = text.split_once('"')?;
    quoted.rsplit_once('"').map(|(subject, _)| subject)
}

/// The callback's side: records events in the order async-nats queued them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Events {
    record: Arc<Mutex<Record>>,
    changed: Arc<Notify>,
}

impl Events {
    /// Handles one event of the connection's callback.
    pub(crate) fn on_event(&self, event: Event, metrics: &SinkMetrics) {
        match event {
            // The sink reports a lost connection when it acts on it, once, with its retry.
            Event::Disconnected => {
                metrics.connected(false);
                debug!("nats_sink: the connection to the server was lost");
            }
            // Only a refused publish is about a row; the sink reports it once, as the
            // statement's error. async-nats gives `-ERR`s as text only
            // (`ServerError::Other`), so this is the one place that reads one.
            Event::ServerError(async_nats::ServerError::Other(text))
                if text.starts_with(PUBLISH_REFUSED) =>
            {
                debug!("nats_sink: the server refused a publish: {text}");
                let mut record = self.lock();
                let seen = record.barriers;
                record.errors.push((seen, text));
            }
            Event::ServerError(error) => {
                warn!("nats_sink: the server reported an error: {error}");
            }
            // The client has one subscription, the barrier's, so every slow-consumer event
            // is a barrier passing.
            Event::SlowConsumer(_) => {
                self.lock().barriers += 1;
                self.changed.notify_waiters();
            }
            other => debug!("nats_sink: connection event: {other}"),
        }
    }

    /// Takes every refusal recorded so far, without a barrier.
    pub(crate) fn take_all(&self) -> Vec<String> {
        self.lock().errors.drain(..).map(|(_, text)| text).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        // The lock is only held for a push or a count: a poisoned one still holds a
        // consistent record.
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why a barrier did not pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BarrierFailed {
    /// The connection was lost: what was sent before the barrier may be lost too.
    Lost,
    /// It did not come back within the timeout after the client stopped writing.
    TimedOut,
}

/// The sink's side: sends barriers and reads the errors recorded before them.
pub(crate) struct Barrier {
    events: Events,
    subject: Subject,
    /// Kept open and never read: see the module doc.
    _subscription: Subscriber,
    /// Barriers sent on this connection.
    sent: AtomicU64,
}

impl Barrier {
    /// Subscribes the barrier's inbox on `client` and plugs it. `events` must be the
    /// record the client's callback writes to.
    pub(crate) async fn new(
        client: &Client,
        events: Events,
    ) -> Result<Self, async_nats::SubscribeError> {
        let subject = Subject::from(client.new_inbox());
        let subscription = client.subscribe(subject.clone()).await?;
        // The plug: it fills the subscription, so every later message overflows it.
        // A failed publish means a lost connection, which the first barrier reports.
        let _ = client.publish(subject.clone(), Bytes::new()).await;
        Ok(Barrier {
            events,
            subject,
            _subscription: subscription,
            sent: AtomicU64::new(0),
        })
    }

    /// Returns once the server has processed everything `client` published before this
    /// call, and every error it sent for it has been recorded. The wait is bounded by
    /// `timeout` from the moment the client stops writing (a large batch on a slow link
    /// takes as long as it takes to write, and the wait goes on while it does); `lost`
    /// ends it early.
    pub(crate) async fn pass(
        &self,
        client: &Client,
        timeout: Duration,
        lost: impl Fn() -> bool,
    ) -> Result<(), BarrierFailed> {
        if client
            .publish(self.subject.clone(), Bytes::new())
            .await
            .is_err()
        {
            return Err(BarrierFailed::Lost);
        }
        let target = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        let mut written = client.statistics().out_bytes.load(Ordering::Relaxed);
        let mut deadline = Instant::now() + timeout;
        loop {
            let changed = self.events.changed.notified();
            {
                let record = self.events.lock();
                // Passed, or a refusal of something before it is in: the caller reports
                // that (a refused barrier would never pass).
                if record.barriers >= target || record.errors.iter().any(|(seen, _)| *seen < target)
                {
                    return Ok(());
                }
            }
            if lost() {
                return Err(BarrierFailed::Lost);
            }
            let now_written = client.statistics().out_bytes.load(Ordering::Relaxed);
            // More than keep-alives (a PING is 6 bytes) went out: still writing.
            if now_written > written + WRITING {
                // Still writing what came before the barrier: the server cannot answer yet.
                written = now_written;
                deadline = Instant::now() + timeout;
            } else if Instant::now() >= deadline {
                return Err(BarrierFailed::TimedOut);
            }
            let slice = deadline.min(Instant::now() + POLL);
            let _ = tokio::time::timeout_at(slice, changed).await;
        }
    }

    /// Takes the errors the server sent for publishes made after the last passed barrier
    /// and before the one that passed now, oldest first; errors of earlier attempts were
    /// taken by their own barrier. Call right after [`Barrier::pass`].
    pub(crate) fn take_errors(&self) -> Vec<String> {
        let sent = self.sent.load(Ordering::Relaxed);
        let mut record = self.events.lock();
        let before = record
            .errors
            .iter()
            .take_while(|(seen, _)| *seen < sent)
            .count();
        record
            .errors
            .drain(..before)
            .map(|(_, text)| text)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_publish_names_its_subject() {
        let text = r#"Permissions Violation for Publish to "orders.secret.1""#;
        assert!(text.starts_with(PUBLISH_REFUSED));
        assert_eq!(refused_subject(text), Some("orders.secret.1"));
        assert_eq!(
            refused_subject(r#"Permissions Violation for Publish to "a"b""#),
            Some(r#"a"b"#)
        );
        assert_eq!(refused_subject("Stale Connection"), None);
    }

    #[test]
    fn only_refused_publishes_are_recorded_and_stamped_with_the_barriers_before_them() {
        let events = Events::default();
        let metrics = SinkMetrics::new("out_of_band_unit_test");
        let error = |text: &str| Event::ServerError(async_nats::ServerError::Other(text.into()));
        events.on_event(
            error(r#"Permissions Violation for Publish to "a""#),
            &metrics,
        );
        events.on_event(Event::SlowConsumer(1), &metrics);
        events.on_event(error("Stale Connection"), &metrics);
        events.on_event(
            error(r#"Permissions Violation for Publish to "b""#),
            &metrics,
        );
        let record = events.lock();
        assert_eq!(record.barriers, 1);
        let stamps: Vec<u64> = record.errors.iter().map(|(seen, _)| *seen).collect();
        assert_eq!(stamps, [0, 1]);
    }
}
