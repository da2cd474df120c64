//! Connecting to NATS, noticing a lost connection, and what the server reports out of
//! band.
//!
//! A server that is down at the start is a transient failure and is retried like any
//! other (see `retry`); a rejected credential or a bad address is not. Each [`Connection`]
//! is one async-nats client that connects once and never reconnects by itself (see
//! `credentials`): async-nats would write the publishes it still held to the new
//! connection, ahead of the rows the sink resends, and break the order per subject. When
//! the connection is lost ([`Connection::lost`]), the client gives up and drops what it
//! held, and the sink opens a fresh one ([`Connection::reopen_if_lost`], possibly on
//! another of the `servers`) and resends from its first unconfirmed row. The server
//! reports some refusals, such as a publish permission violation, only as an
//! asynchronous `-ERR`, which [`Connection::confirm`] ties to the publishes before it (see
//! `out_of_band`).

pub(crate) mod credentials;
mod failover;
pub(crate) mod out_of_band;
pub(crate) mod security;

use std::collections::HashSet;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::{Client, ServerAddr};
use tracing::{debug, info, warn};

use out_of_band::{Barrier, BarrierFailed, Events};

use crate::connect::credentials::ConnectOnce;
use crate::deliver::driver;
use crate::deliver::failure::{Failure, TransientKind};
use crate::deliver::retry::Retry;
use crate::error::{NatsSinkError, Result};
use crate::metrics::SinkMetrics;
use crate::options::config::ConnectionConfig;

/// A connected client, what the server told it out of band, and how to connect again.
pub(crate) struct Connection {
    pub client: Client,
    /// What the event callback recorded.
    events: Events,
    /// Made on first use: JetStream mode rarely needs it, and it publishes to `_INBOX.`.
    barrier: tokio::sync::OnceCell<Barrier>,
    config: ConnectionConfig,
    /// Where the connection's state and reconnects are reported.
    metrics: SinkMetrics,
}

impl Connection {
    /// Connects, retrying while the servers cannot be reached; the connection's state and
    /// reconnects go to `metrics`. Connecting does not end a retry episode: only a
    /// confirmed publish does, so a server that accepts and then drops connections is
    /// still bounded by `retry_timeout`.
    pub(crate) async fn open(
        config: &ConnectionConfig,
        retry: &mut Retry,
        metrics: &SinkMetrics,
    ) -> Result<Self> {
        driver::until_ok(retry, || Self::try_open(config, metrics)).await
    }

    /// Whether the connection is gone: the client saw it drop (it does not come back; see
    /// the module doc). Messages sent on it since their last confirmation may be lost.
    pub(crate) fn lost(&self) -> bool {
        self.client.connection_state() != State::Connected
    }

    /// [`Connection::lost`] for the `index`th message of a run of publishes, checked at
    /// every 64th only: the check takes a lock, which the per-row path should not pay.
    pub(crate) fn lost_at(&self, index: usize) -> bool {
        index.is_multiple_of(64) && self.lost()
    }

    /// After a failure: if the connection is lost, replaces it with a fresh one (retrying
    /// like [`Connection::open`]) and returns true; then everything tied to the old client
    /// (subscriptions, JetStream context) must be made again. A connection that is still
    /// up is kept, so a plain ack timeout resends on it.
    pub(crate) async fn reopen_if_lost(&mut self, retry: &mut Retry) -> Result<bool> {
        if !self.lost() {
            return Ok(false);
        }
        info!(
            "nats_sink: connecting again; what the old connection did not confirm is resent in order"
        );
        // async-nats would have tried the servers the cluster announced too; so does this,
        // after the configured ones and with the same TLS (see `failover`).
        let connect_urls = self.client.server_info().connect_urls;
        let announced = failover::announced(&self.config, connect_urls);
        let fresh = Self::reopen(&self.config, &announced, retry, &self.metrics).await?;
        self.metrics.reconnected();
        // The old client is dropped: it can no longer connect, so nothing it still held is
        // ever sent.
        *self = fresh;
        Ok(true)
    }

    async fn try_open(config: &ConnectionConfig, metrics: &SinkMetrics) -> Result<Self, Failure> {
        let servers_display = config.servers_display();
        let connect_error = |problem: String, source| NatsSinkError::Connect {
            servers: servers_display.clone(),
            problem,
            source,
        };
        let addrs = config
            .servers
            .iter()
            .map(|s| s.parse::<ServerAddr>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| connect_error(format!("invalid server address: {e}"), None))?;

        let (credentials, who) = security::credentials(&config.auth).map_err(Failure::Permanent)?;
        let gate = ConnectOnce::new(credentials);
        let events = Events::default();
        let on_event = events.clone();
        let event_metrics = metrics.clone();
        let options = gate
            .options()
            .name("streamsql nats_sink")
            .connection_timeout(config.connect_timeout)
            // The first connect tries each listed server once and counts every try
            // against this bound (async-nats `Connector::try_connect`); after a disconnect
            // the gate refuses every attempt, and reaching the bound ends the client.
            // (`Some(0)` would mean unlimited.)
            .max_reconnects(addrs.len().max(1))
            // Every subject is validated by the sink once per distinct value.
            .skip_subject_validation(true)
            // The client's only subscription is the barrier's, which must overflow
            // (see `out_of_band`).
            .subscription_capacity(1)
            .event_callback(move |event| {
                on_event.on_event(event, &event_metrics);
                async {}
            });
        let options = security::tls(options, &config.tls).map_err(Failure::Permanent)?;

        // async-nats bounds each server attempt; this bounds the whole list.
        let overall = config
            .connect_timeout
            .saturating_mul(addrs.len() as u32)
            .saturating_add(Duration::from_secs(1));
        let client = match tokio::time::timeout(overall, options.connect(addrs)).await {
            Err(_) => {
                return Err(Failure::Transient(
                    TransientKind::Connection,
                    format!(
                        "cannot connect to NATS at {servers_display}: {}",
                        security::timed_out(config.connect_timeout)
                    ),
                ));
            }
            Ok(Err(e)) => {
                let (problem, transient) = security::explain(&e, config, &who);
                return Err(if transient {
                    Failure::Transient(
                        TransientKind::Connection,
                        format!("cannot connect to NATS at {servers_display}: {problem}"),
                    )
                } else {
                    Failure::Permanent(connect_error(problem, Some(e)))
                });
            }
            Ok(Ok(client)) => client,
        };
        // Nothing was published on the client yet, so even a reconnect that slipped in
        // before this line could not reorder rows.
        gate.connected();

        info!(servers = %servers_display, "nats_sink: connected");
        metrics.connected(true);
        Ok(Connection {
            client,
            events,
            barrier: tokio::sync::OnceCell::new(),
            config: config.clone(),
            metrics: metrics.clone(),
        })
    }

    /// Returns once the server has processed everything published on this connection so
    /// far; fails permanently if it refused any of it (naming what it said), transiently if
    /// the connection was lost or no answer came within `timeout` after the client stopped
    /// writing.
    pub(crate) async fn confirm(&self, timeout: Duration) -> Result<(), Failure> {
        self.confirm_counting(timeout)
            .await
            .map_err(|(failure, _)| failure)
    }

    /// [`Connection::confirm`], also giving, when it fails on a refusal after the barrier
    /// passed, the subjects the server refused: every other message sent before the
    /// barrier was processed.
    pub(crate) async fn confirm_counting(
        &self,
        timeout: Duration,
    ) -> Result<(), (Failure, Option<HashSet<String>>)> {
        let client = &self.client;
        let barrier = self
            .barrier
            .get_or_try_init(|| Barrier::new(client, self.events.clone()))
            .await
            .map_err(|e| {
                let failure = Failure::Transient(
                    TransientKind::Connection,
                    format!("cannot subscribe the confirmation inbox: {e}"),
                );
                (failure, None)
            })?;
        let passed = barrier
            .pass(client, timeout, || {
                client.connection_state() != State::Connected
            })
            .await;
        // Errors first: a refusal explains a lost connection or a missing answer too.
        let errors = barrier.take_errors();
        let refused: HashSet<String> = errors
            .iter()
            .filter_map(|text| out_of_band::refused_subject(text))
            .map(str::to_string)
            .collect();
        if let Some(refusal) = refusal(errors) {
            return Err((refusal, passed.is_ok().then_some(refused)));
        }
        let failure = match passed {
            Ok(()) => return Ok(()),
            Err(BarrierFailed::Lost) => Failure::Transient(
                TransientKind::Connection,
                "the connection to the server was lost before it confirmed what was sent; sending again from the first unconfirmed row".into(),
            ),
            Err(BarrierFailed::TimedOut) => Failure::Transient(
                TransientKind::Timeout,
                format!(
                    "the server did not confirm what was sent within {timeout:?} (confirm_timeout); sending again from the first unconfirmed row"
                ),
            ),
        };
        Err((failure, None))
    }

    /// A refusal the server reported so far, without waiting for a confirmation: lets a
    /// wait for acks end early. [`Connection::confirm`] is the ordered check.
    pub(crate) fn refused_so_far(&self) -> Option<Failure> {
        refusal(self.events.take_all())
    }

    /// Forgets the refusals recorded so far: those of the start checks, which reported
    /// them already (or chose to ignore them), are not about rows.
    pub(crate) fn forget_refusals(&self) {
        self.events.take_all();
    }

    /// The server's `max_payload` for this connection.
    pub(crate) fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Closes the connection after everything sent was confirmed.
    pub(crate) async fn close(self) {
        if let Err(e) = self.client.drain().await {
            debug!("nats_sink: closing the connection: {e}");
        }
    }
}

#[cfg(test)]
mod tests;

/// The statement's failure for errors the server reported, if any.
fn refusal(errors: Vec<String>) -> Option<Failure> {
    let first = errors.into_iter().next()?;
    warn!("nats_sink: the server refused a publish: {first}");
    Some(Failure::refused(format!(
        "the server refused a publish: {first}; check the user's publish permissions for that subject"
    )))
}
