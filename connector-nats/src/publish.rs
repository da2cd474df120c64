//! Publishing encoded batches to core NATS, and confirming them.
//!
//! Guarantee (core NATS): when [`Publisher::send`] returns `Ok`, the server has processed
//! every message of the batch. `Client::flush` cannot prove that (it only empties the
//! socket buffer, FACTS.md), so each batch ends with a round trip through the server: the
//! publisher subscribes to an inbox of its own and waits until a message it sends there
//! comes back. The server handles one connection's messages in order, so the echo arrives
//! only after everything published before it. If the connection dropped while the batch
//! was in flight, part of it may be lost: the whole batch is sent again (subscribers may
//! see that batch twice, never a gap). Across a crash of the engine, core mode is
//! at-most-once for the unconfirmed batch.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::client::PublishErrorKind;
use async_nats::{
    Client, ConnectErrorKind, ConnectOptions, Event, HeaderMap, ServerAddr, Subject, Subscriber,
};
use bytes::Bytes;
use futures::StreamExt;
use tracing::{debug, info, warn};

use crate::config::{Auth, ConnectionConfig};
use crate::encode::EncodedBatch;
use crate::error::{NatsSinkError, Result};

/// How often a batch is sent again after the connection dropped under it.
const MAX_RESENDS: usize = 3;

/// How often a round trip checks whether the client reconnected.
const RECONNECT_POLL: Duration = Duration::from_millis(100);

/// A connected publisher. Built by [`Publisher::connect`]; dropping it closes the connection.
pub(crate) struct Publisher {
    client: Client,
    barrier: Subscriber,
    barrier_subject: Subject,
    barrier_seq: u64,
    headers: Option<HeaderMap>,
    headers_len: usize,
    confirm_timeout: Duration,
}

impl Publisher {
    /// Connects within `connect_timeout` and subscribes the confirmation inbox.
    pub(crate) async fn connect(
        config: &ConnectionConfig,
        headers: &[(String, String)],
        confirm_timeout: Duration,
    ) -> Result<Self> {
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

        let mut options = ConnectOptions::new()
            .name("streamsql nats_sink")
            .connection_timeout(config.connect_timeout)
            // Every subject is validated by the sink once per distinct value.
            .skip_subject_validation(true)
            .event_callback(|event| async move {
                match event {
                    Event::Disconnected => {
                        warn!("nats_sink: disconnected from the server; reconnecting")
                    }
                    Event::Connected => info!("nats_sink: connected"),
                    other => debug!("nats_sink: connection event: {other}"),
                }
            });
        options = match &config.auth {
            Auth::None => options,
            Auth::UserPassword { user, password } => {
                options.user_and_password(user.clone(), password.0.clone())
            }
            Auth::Token(token) => options.token(token.0.clone()),
        };

        // async-nats bounds each server attempt; this bounds the whole list.
        let overall = config
            .connect_timeout
            .saturating_mul(addrs.len() as u32)
            .saturating_add(Duration::from_secs(1));
        let client = match tokio::time::timeout(overall, options.connect(addrs)).await {
            Err(_) => return Err(connect_error(timed_out(config.connect_timeout), None)),
            Ok(Err(e)) => {
                let problem = connect_problem(e.kind(), &config.auth, config.connect_timeout);
                return Err(connect_error(problem, Some(e)));
            }
            Ok(Ok(client)) => client,
        };
        info!(servers = %servers_display, "nats_sink: connected");

        let barrier_subject = Subject::from(client.new_inbox());
        let barrier = client
            .subscribe(barrier_subject.clone())
            .await
            .map_err(|e| {
                connect_error(
                    format!("cannot subscribe the confirmation inbox: {e}"),
                    None,
                )
            })?;
        let (headers, headers_len) = header_map(headers);
        Ok(Publisher {
            client,
            barrier,
            barrier_subject,
            barrier_seq: 0,
            headers,
            headers_len,
            confirm_timeout,
        })
    }

    /// Publishes every message of `batch` and returns once the server has processed them.
    /// `confirmed` is the number of rows of the statement confirmed before this batch.
    pub(crate) async fn send(&mut self, batch: &EncodedBatch, confirmed: u64) -> Result<()> {
        self.check_sizes(batch, confirmed)?;
        for attempt in 0..=MAX_RESENDS {
            let connects_before = self.connects();
            self.publish_all(batch).await?;
            match self.round_trip(confirmed, connects_before).await? {
                Confirmed::Yes => return Ok(()),
                Confirmed::Reconnected => warn!(
                    attempt = attempt + 1,
                    rows = batch.len(),
                    "nats_sink: the connection dropped while a batch was in flight; sending the batch again"
                ),
            }
        }
        Err(NatsSinkError::Publish {
            problem: format!(
                "the connection dropped during each of {} attempts to send a batch ({confirmed} rows confirmed before it)",
                MAX_RESENDS + 1
            ),
            source: None,
        })
    }

    /// How many times the client has connected: a change means messages sent since may
    /// have been lost with the old connection. async-nats counts this in its connection
    /// handler, before any event callback runs.
    fn connects(&self) -> u64 {
        self.client.statistics().connects.load(Ordering::SeqCst)
    }

    /// Refuses the batch before anything of it is sent if a row is over `max_payload`.
    fn check_sizes(&self, batch: &EncodedBatch, confirmed: u64) -> Result<()> {
        let max_payload = self.client.server_info().max_payload;
        for i in 0..batch.len() {
            let size = batch.payload_len(i) + self.headers_len;
            if size > max_payload {
                return Err(NatsSinkError::BadRow {
                    row: confirmed + i as u64 + 1,
                    problem: format!(
                        "the message is {size} bytes, over the server's max_payload of {max_payload} bytes: leave large columns out of the query, or raise max_payload in the server configuration"
                    ),
                    published: confirmed,
                });
            }
        }
        Ok(())
    }

    async fn publish_all(&self, batch: &EncodedBatch) -> Result<()> {
        for i in 0..batch.len() {
            let subject = batch.subject(i).clone();
            let payload = batch.payload(i);
            let sent = match (batch.reply_to(i), &self.headers) {
                (None, None) => self.client.publish(subject, payload).await,
                (None, Some(h)) => {
                    self.client
                        .publish_with_headers(subject, h.clone(), payload)
                        .await
                }
                (Some(r), None) => {
                    self.client
                        .publish_with_reply(subject, r.clone(), payload)
                        .await
                }
                (Some(r), Some(h)) => {
                    self.client
                        .publish_with_reply_and_headers(subject, r.clone(), h.clone(), payload)
                        .await
                }
            };
            sent.map_err(|e| publish_error(e, batch.subject(i)))?;
        }
        Ok(())
    }

    /// Sends a token to our own inbox and waits for it to come back through the server.
    /// Returns `Reconnected` as soon as the client has reconnected since `connects_before`
    /// (the token or messages before it may have been lost with the old connection).
    async fn round_trip(&mut self, confirmed: u64, connects_before: u64) -> Result<Confirmed> {
        self.barrier_seq += 1;
        let token = Bytes::from(self.barrier_seq.to_string());
        self.client
            .publish(self.barrier_subject.clone(), token.clone())
            .await
            .map_err(|e| publish_error(e, &self.barrier_subject))?;
        let deadline = tokio::time::Instant::now() + self.confirm_timeout;
        loop {
            if self.connects() != connects_before {
                return Ok(Confirmed::Reconnected);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(NatsSinkError::ConfirmTimeout {
                    timeout_ms: self.confirm_timeout.as_millis(),
                    published: confirmed,
                });
            }
            // Short slices, so that a reconnect is noticed without waiting for the timeout.
            let slice = deadline.min(tokio::time::Instant::now() + RECONNECT_POLL);
            match tokio::time::timeout_at(slice, self.barrier.next()).await {
                Ok(Some(message)) if message.payload == token => return Ok(Confirmed::Yes),
                // A token of an earlier, interrupted round trip.
                Ok(Some(_)) | Err(_) => {}
                Ok(None) => {
                    return Err(NatsSinkError::Publish {
                        problem: format!(
                            "the connection was closed before the server confirmed the batch ({confirmed} rows confirmed before it)"
                        ),
                        source: None,
                    });
                }
            }
        }
    }

    /// Closes the connection after everything sent was confirmed.
    pub(crate) async fn close(self) {
        if let Err(e) = self.client.drain().await {
            debug!("nats_sink: closing the connection: {e}");
        }
    }
}

/// The outcome of a round trip that did not fail.
enum Confirmed {
    Yes,
    Reconnected,
}

/// What a failed publish means for the user, from its kind (never its message text).
fn publish_error(err: async_nats::PublishError, subject: &Subject) -> NatsSinkError {
    let problem = match err.kind() {
        PublishErrorKind::MaxPayloadExceeded => format!(
            "a message to '{subject}' is over the server's max_payload (the server's limit changed during the statement?)"
        ),
        PublishErrorKind::InvalidSubject => format!("'{subject}' is not a valid subject"),
        PublishErrorKind::Send => "the connection to the server is closed".to_string(),
    };
    NatsSinkError::Publish {
        problem,
        source: Some(Box::new(err)),
    }
}

fn header_map(headers: &[(String, String)]) -> (Option<HeaderMap>, usize) {
    if headers.is_empty() {
        return (None, 0);
    }
    let mut map = HeaderMap::new();
    // The size NATS counts against max_payload: "NATS/1.0\r\n", "k: v\r\n" each, "\r\n".
    let mut len = 12;
    for (name, value) in headers {
        map.append(name.as_str(), value.as_str());
        len += name.len() + value.len() + 4;
    }
    (Some(map), len)
}

fn timed_out(timeout: Duration) -> String {
    format!(
        "timed out after {timeout:?}: check the address and that the server is up, or raise 'connect_timeout'"
    )
}

/// What the user should check, from the kind of connect failure (never its message text).
fn connect_problem(kind: ConnectErrorKind, auth: &Auth, timeout: Duration) -> String {
    match kind {
        ConnectErrorKind::AuthorizationViolation => match auth {
            Auth::UserPassword { user, .. } => format!(
                "the server rejected user '{user}' (authorization violation): check 'username' and 'password'"
            ),
            Auth::Token(_) => "the server rejected the token (authorization violation): check 'token'".into(),
            Auth::None => "the server requires authentication: give 'username' and 'password', or 'token'".into(),
        },
        ConnectErrorKind::TimedOut => timed_out(timeout),
        ConnectErrorKind::Io => {
            "the server cannot be reached (connection refused or reset): check the address and that the server is up".into()
        }
        ConnectErrorKind::Dns => "the host name does not resolve: check 'servers'".into(),
        ConnectErrorKind::ServerParse => "invalid server address: check 'servers'".into(),
        ConnectErrorKind::Tls => "the TLS handshake failed: check the server's TLS settings".into(),
        ConnectErrorKind::Authentication => "authentication failed while signing the server's nonce".into(),
        ConnectErrorKind::MaxReconnects => "gave up after the maximum number of reconnects".into(),
    }
}
