//! How a running read stands, for a status display: whether its client is connected,
//! and why it is retrying while reading fails.

use std::sync::{Mutex, OnceLock};

use async_nats::Client;
use async_nats::connection::State;

/// Shared by a scan's plan node (which reports it) and its read (which updates it).
#[derive(Debug, Default)]
pub(crate) struct Health {
    client: OnceLock<Client>,
    retrying: Mutex<Option<String>>,
}

impl Health {
    /// The read is under way on `client`.
    pub(crate) fn connected_by(&self, client: &Client) {
        let _ = self.client.set(client.clone());
    }

    /// Reading fails for `why`, or (`None`) works again.
    pub(crate) fn retrying(&self, why: Option<String>) {
        *self.retrying.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// Whether the client is connected now; `None` before the read started.
    pub(crate) fn connected(&self) -> Option<bool> {
        self.client
            .get()
            .map(|c| c.connection_state() == State::Connected)
    }

    /// Why reading fails, while it does.
    pub(crate) fn why_retrying(&self) -> Option<String> {
        self.retrying
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
