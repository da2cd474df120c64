//! How a running read stands, for a status display and for giving up: whether its
//! client is connected, and since when reading has failed.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::connection::State;
use prometheus_client::metrics::counter::Counter;

/// Failures further apart than this are not "in a row": the read recovered between
/// them (a quiet stream sends nothing that would show it). Above the client's idle
/// heartbeat interval, whose misses repeat while a server is away.
const QUIET: Duration = Duration::from_secs(60);

/// Shared by a scan's plan node (which reports it) and its read (which updates it).
#[derive(Debug)]
pub(crate) struct Health {
    client: OnceLock<Client>,
    failing: Mutex<Option<Failing>>,
    /// The source's `read_failures` series.
    failures: Counter,
}

#[derive(Debug)]
struct Failing {
    since: Instant,
    last: Instant,
    why: String,
}

impl Health {
    /// Counts each failure in `failures` too.
    pub(crate) fn new(failures: Counter) -> Self {
        Health {
            client: OnceLock::new(),
            failing: Mutex::new(None),
            failures,
        }
    }

    /// The read is under way on `client`.
    pub(crate) fn connected_by(&self, client: &Client) {
        let _ = self.client.set(client.clone());
    }

    /// Reading failed for `why`; returns how long it has failed in a row.
    pub(crate) fn failed(&self, why: String) -> Duration {
        self.failures.inc();
        let now = Instant::now();
        let mut failing = self.lock();
        let since = match &*failing {
            Some(f) if now.duration_since(f.last) <= QUIET => f.since,
            _ => now,
        };
        *failing = Some(Failing {
            since,
            last: now,
            why,
        });
        now.duration_since(since)
    }

    /// Messages came: reading works.
    pub(crate) fn recovered(&self) {
        self.lock().take();
    }

    /// Whether the client is connected now; `None` before the read started.
    pub(crate) fn connected(&self) -> Option<bool> {
        self.client
            .get()
            .map(|c| c.connection_state() == State::Connected)
    }

    /// Why reading fails, while it does.
    pub(crate) fn why_retrying(&self) -> Option<String> {
        let failing = self.lock();
        let f = failing.as_ref()?;
        (f.last.elapsed() <= QUIET).then(|| f.why.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Failing>> {
        self.failing.lock().unwrap_or_else(|p| p.into_inner())
    }
}
