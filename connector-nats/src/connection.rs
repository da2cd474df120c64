//! Connecting to NATS, and watching the connection for what publishes cannot report.
//!
//! A server that is down at the start is a transient failure and is retried like any
//! other (see `retry`); a rejected credential or a bad address is not. While connected,
//! two things happen out of band: async-nats reconnects on its own (messages in flight
//! then may be lost, so senders compare [`Connection::connects`] before and after), and the
//! server reports some refusals, such as a publish permission violation, only as an
//! asynchronous `-ERR` ([`Connection::server_error`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerAddr};
use tracing::{debug, info, warn};

use crate::config::ConnectionConfig;
use crate::error::{NatsSinkError, Result};
use crate::metrics::SinkMetrics;
use crate::retry::{Failure, Retry};
use crate::security;

/// A connected client and what the server told it out of band.
pub(crate) struct Connection {
    pub client: Client,
    server_errors: Arc<Mutex<Option<String>>>,
    /// Kept rather than fetched per message (`Client::statistics` clones an `Arc`).
    statistics: Arc<async_nats::Statistics>,
}

impl Connection {
    /// Connects, retrying while the servers cannot be reached.
    /// The connection's state and reconnects go to `metrics`.
    pub(crate) async fn open(
        config: &ConnectionConfig,
        retry: &mut Retry,
        metrics: &SinkMetrics,
    ) -> Result<Self> {
        loop {
            match Self::try_open(config, metrics).await {
                Ok(connection) => {
                    retry.succeeded();
                    return Ok(connection);
                }
                Err(failure) => retry.wait(failure, 0).await?,
            }
        }
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

        let server_errors = Arc::new(Mutex::new(None));
        let slot = server_errors.clone();
        let events = metrics.clone();
        // async-nats sends `Connected` for the first connect too.
        let connected_before = Arc::new(AtomicBool::new(false));
        let options = ConnectOptions::new()
            .name("streamsql nats_sink")
            .connection_timeout(config.connect_timeout)
            // Every subject is validated by the sink once per distinct value.
            .skip_subject_validation(true)
            .event_callback(move |event| {
                let slot = slot.clone();
                let metrics = events.clone();
                let connected_before = connected_before.clone();
                async move {
                    match event {
                        Event::Disconnected => {
                            metrics.connected(false);
                            warn!("nats_sink: disconnected from the server; reconnecting")
                        }
                        Event::Connected => {
                            metrics.connected(true);
                            // The first connect is logged by `try_open`, with the servers.
                            if connected_before.swap(true, Ordering::SeqCst) {
                                metrics.reconnected();
                                info!("nats_sink: reconnected");
                            }
                        }
                        Event::ServerError(async_nats::ServerError::Other(text)) => {
                            warn!("nats_sink: the server reported an error: {text}");
                            *slot.lock().expect("not poisoned") = Some(text);
                        }
                        other => debug!("nats_sink: connection event: {other}"),
                    }
                }
            });
        let (options, who) = security::apply(options, config).map_err(Failure::Permanent)?;

        // async-nats bounds each server attempt; this bounds the whole list.
        let overall = config
            .connect_timeout
            .saturating_mul(addrs.len() as u32)
            .saturating_add(Duration::from_secs(1));
        let client = match tokio::time::timeout(overall, options.connect(addrs)).await {
            Err(_) => {
                return Err(Failure::Transient(format!(
                    "cannot connect to NATS at {servers_display}: {}",
                    security::timed_out(config.connect_timeout)
                )));
            }
            Ok(Err(e)) => {
                let (problem, transient) = security::explain(&e, config, &who);
                return Err(if transient {
                    Failure::Transient(format!(
                        "cannot connect to NATS at {servers_display}: {problem}"
                    ))
                } else {
                    Failure::Permanent(connect_error(problem, Some(e)))
                });
            }
            Ok(Ok(client)) => client,
        };
        info!(servers = %servers_display, "nats_sink: connected");
        Ok(Connection {
            statistics: client.statistics(),
            client,
            server_errors,
        })
    }

    /// How many times the client has connected: a change means messages sent since may
    /// have been lost with the old connection. async-nats counts this in its connection
    /// handler, before any event callback runs.
    pub(crate) fn connects(&self) -> u64 {
        self.statistics.connects.load(Ordering::SeqCst)
    }

    /// The last error the server reported asynchronously (e.g. a permissions violation),
    /// taken so that each is reported once.
    pub(crate) fn server_error(&self) -> Option<String> {
        self.server_errors.lock().expect("not poisoned").take()
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
