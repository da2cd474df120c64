//! Retrying transient failures: exponential backoff with jitter, bounded by
//! `retry_timeout`.
//!
//! Every failure is first classified (see `classify`); only a [`Failure::Transient`] comes
//! here. A retry episode starts at the first failure and ends at the next success
//! ([`Retry::succeeded`]); `retry_timeout` bounds one episode, so a long statement that
//! recovers each time is never failed by the sum of its outages.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::deliver::failure::{Failure, TransientKind};
use crate::error::NatsSinkError;
use crate::metrics::SinkMetrics;

/// The first wait after a failure.
const INITIAL_DELAY: Duration = Duration::from_millis(100);
/// The longest single wait; a server that is back is noticed within this time.
const MAX_DELAY: Duration = Duration::from_secs(180);

/// The backoff state of one sink.
#[derive(Debug)]
pub(crate) struct Retry {
    timeout: Option<Duration>,
    /// When the current episode began, if one is under way.
    since: Option<Instant>,
    attempts: u32,
    /// Total retries of the statement, for the summary and metrics.
    total: u64,
    /// A sink's metrics; `None` for a source's connect, which has none of these series.
    metrics: Option<SinkMetrics>,
}

impl Retry {
    /// Counts each retry in `metrics` as well.
    pub(crate) fn new(timeout: Option<Duration>, metrics: SinkMetrics) -> Self {
        Retry {
            metrics: Some(metrics),
            ..Self::unobserved(timeout)
        }
    }

    /// Retries that only log.
    pub(crate) fn unobserved(timeout: Option<Duration>) -> Self {
        Retry {
            timeout,
            since: None,
            attempts: 0,
            total: 0,
            metrics: None,
        }
    }

    /// Total retries so far.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Ends the current episode: the next failure starts with a short wait again.
    pub(crate) fn succeeded(&mut self) {
        if self.since.take().is_some() {
            if let Some(metrics) = &self.metrics {
                metrics.recovered();
            }
            info!(
                attempts = self.attempts,
                "nats_sink: recovered; publishing again"
            );
        }
        self.attempts = 0;
    }

    /// Handles `failure`: a permanent one is returned as the error; for a transient one,
    /// waits before the next attempt, or fails with `RetryTimeout` once `retry_timeout`
    /// has passed.
    pub(crate) async fn wait(&mut self, failure: Failure) -> Result<(), NatsSinkError> {
        let published = self.metrics.as_ref().map_or(0, SinkMetrics::published);
        let (class, reason) = match failure {
            Failure::Permanent(err) => return Err(err),
            Failure::Transient(class, reason) => (class, reason),
        };
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        let waited = now - since;
        let mut delay = self.next_delay();
        if let Some(timeout) = self.timeout {
            if waited >= timeout {
                return Err(NatsSinkError::RetryTimeout {
                    waited,
                    last: reason,
                    published,
                });
            }
            delay = delay.min(timeout - waited);
        }
        // A full stream or bucket may never make room by itself: say what ends the wait,
        // where the progress line and status page show the reason.
        let reason = match (class, self.timeout) {
            (TransientKind::StorageFull, None) => format!(
                "{reason}; no retry_timeout is set, so this goes on until there is room or the statement is stopped"
            ),
            _ => reason,
        };
        self.attempts += 1;
        self.total += 1;
        if let Some(metrics) = &self.metrics {
            metrics.retrying(class.label(), &reason);
        }
        warn!(
            attempt = self.attempts,
            retry_in = ?delay,
            published,
            "nats_sink: {reason}; retrying"
        );
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Exponential backoff with "equal jitter": half the delay is fixed, half random, so
    /// sinks that failed together do not retry in lockstep.
    fn next_delay(&self) -> Duration {
        let exponential = INITIAL_DELAY.saturating_mul(1u32 << self.attempts.min(16));
        let capped = exponential.min(MAX_DELAY);
        let half = capped / 2;
        let random = RandomState::new().hash_one(self.total) % 1_000_000;
        half + half.mul_f64(random as f64 / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::names;

    #[test]
    fn delays_grow_exponentially_with_jitter_and_are_capped() {
        let mut retry = Retry::new(None, SinkMetrics::new("retry_unit_test"));
        let mut previous_max = Duration::ZERO;
        for attempt in 0..30u32 {
            retry.attempts = attempt;
            let delay = retry.next_delay();
            let full = INITIAL_DELAY
                .saturating_mul(1u32 << attempt.min(16))
                .min(MAX_DELAY);
            assert!(delay >= full / 2 && delay <= full, "{attempt}: {delay:?}");
            assert!(full >= previous_max);
            previous_max = full;
        }
        assert_eq!(previous_max, MAX_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_timeout_bounds_an_episode_and_success_resets_it() {
        let mut retry = Retry::new(
            Some(Duration::from_secs(1)),
            SinkMetrics::new("retry_unit_test"),
        );
        let transient =
            || Failure::Transient(TransientKind::Connection, "the server is down".into());
        let started = Instant::now();
        while retry.wait(transient()).await.is_ok() {}
        // The last wait is cut short at the timeout rather than overshooting it.
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        let err = retry.wait(transient()).await.unwrap_err().to_string();
        assert!(err.contains("the server is down"), "{err}");
        assert!(err.contains("0 rows were published"), "{err}");

        retry.succeeded();
        assert!(retry.wait(transient()).await.is_ok());
    }

    /// A full stream or bucket may never make room by itself: without `retry_timeout`,
    /// the reason the progress line and status page show says what ends the wait.
    #[tokio::test(start_paused = true)]
    async fn a_storage_full_wait_without_retry_timeout_says_how_it_ends() {
        let shown = |timeout, kind| async move {
            let metrics = SinkMetrics::new("retry_unit_test");
            let mut retry = Retry::new(timeout, metrics.clone());
            let failure = Failure::Transient(kind, "key-value bucket 'b' is full".into());
            retry.wait(failure).await.unwrap();
            let snapshot = metrics.snapshot();
            let retrying = snapshot
                .iter()
                .find(|m| m.value().name() == names::RETRYING);
            retrying.unwrap().value().to_string()
        };
        let unbounded = shown(None, TransientKind::StorageFull).await;
        assert!(
            unbounded.starts_with("key-value bucket 'b' is full; no retry_timeout is set")
                && unbounded.contains("until there is room or the statement is stopped"),
            "{unbounded}"
        );
        let bounded = shown(Some(Duration::from_secs(60)), TransientKind::StorageFull).await;
        assert_eq!(bounded, "key-value bucket 'b' is full");
        // An outage ends by itself once the server is back.
        let outage = shown(None, TransientKind::Connection).await;
        assert_eq!(outage, "key-value bucket 'b' is full");
    }

    #[tokio::test]
    async fn a_permanent_failure_is_returned_without_waiting() {
        let mut retry = Retry::new(None, SinkMetrics::new("retry_unit_test"));
        let err = NatsSinkError::JetStream {
            stream: "S".into(),
            problem: "not found".into(),
        };
        assert!(retry.wait(Failure::Permanent(err)).await.is_err());
        assert_eq!(retry.total(), 0);
    }
}
