//! Test clients whose dropped messages do not go unnoticed, and a real round trip.
//!
//! async-nats drops a message without a word when a subscription's buffer is full; only
//! the connection's event callback hears `Event::SlowConsumer` (async-nats `ConnectionHandler::handle_server_op`). Clients made
//! here get a large buffer and count those events, so a [`Collector`](crate::Collector)
//! can fail loudly instead of a test seeing a short count and guessing why.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, Statistics};
use futures::StreamExt;

/// Messages a subscription of a testkit client buffers before the client drops any:
/// 16× async-nats' default, so a test may publish a lot before it starts collecting.
pub const SUBSCRIPTION_CAPACITY: usize = 1 << 20;

/// How long [`round_trip`] waits for the server's answer.
const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(10);

/// Slow-consumer event counters of the clients made here, keyed by the client's
/// `Statistics`: every clone of a `Client` shares that one `Arc` for the connection's
/// whole life, reconnects included, which makes it the client's identity.
static SLOW_CONSUMER_EVENTS: Mutex<Vec<(Weak<Statistics>, Arc<AtomicU64>)>> =
    Mutex::new(Vec::new());

/// The options [`connect`] uses: a [`SUBSCRIPTION_CAPACITY`] buffer per subscription
/// and the connection name `nats-testkit` (visible in `/connz`). Start from these
/// when a test needs more options, then call [`connect_with`].
pub fn connect_options() -> ConnectOptions {
    ConnectOptions::new()
        .name("nats-testkit")
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
}

/// [`connect_options`] for a mutual-TLS server made with `pki`: trusting its CA and
/// presenting its client certificate.
pub fn mutual_tls_options(pki: &crate::Pki) -> ConnectOptions {
    connect_options()
        .add_root_certificates(pki.ca_file())
        .add_client_certificate(pki.client_cert_file(), pki.client_key_file())
}

/// Connects a test client to `url`.
///
/// # Panics
/// If the connection fails.
pub async fn connect(url: &str) -> Client {
    connect_with(url, connect_options()).await
}

/// Connects a test client that logs in with a user and password.
///
/// # Panics
/// If the connection fails, for example on a wrong password.
pub async fn connect_with_user(url: &str, user: &str, password: &str) -> Client {
    let options = connect_options().user_and_password(user.into(), password.into());
    connect_with(url, options).await
}

/// Connects with `options` plus an event callback that counts slow-consumer events
/// (replacing any callback set in `options`). Start from [`connect_options`] to keep
/// the large subscription buffer.
///
/// # Panics
/// If the connection fails.
pub async fn connect_with(url: &str, options: ConnectOptions) -> Client {
    let events = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&events);
    let client = options
        .event_callback(move |event| {
            let counter = Arc::clone(&counter);
            async move {
                if let Event::SlowConsumer(_) = event {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("nats-testkit cannot connect to {url}: {e}"));
    let mut registry = SLOW_CONSUMER_EVENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    registry.retain(|(client, _)| client.strong_count() > 0);
    registry.push((Arc::downgrade(&client.statistics()), events));
    drop(registry);
    client
}

/// The slow-consumer event counter of a client made by this module, if it was.
pub(crate) fn slow_consumer_events(client: &Client) -> Option<Arc<AtomicU64>> {
    let statistics = client.statistics();
    let registry = SLOW_CONSUMER_EVENTS
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    registry
        .iter()
        .find(|(known, _)| known.as_ptr() == Arc::as_ptr(&statistics))
        .map(|(_, events)| Arc::clone(events))
}

/// Returns once the server has processed everything `client` sent before the call:
/// subscriptions are registered, publishes are routed.
///
/// `Client::flush` is not enough: it returns once the bytes are in the socket. This
/// sends a message to a fresh inbox of the client itself; the server handles one
/// connection's commands in order, so receiving it proves the rest was handled.
///
/// # Panics
/// If the echo does not arrive within 10 s (the server is down or the connection is
/// stuck reconnecting).
pub async fn round_trip(client: &Client) {
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .unwrap_or_else(|e| panic!("round trip: cannot subscribe: {e}"));
    client
        .publish(inbox, "".into())
        .await
        .unwrap_or_else(|e| panic!("round trip: cannot publish: {e}"));
    match tokio::time::timeout(ROUND_TRIP_TIMEOUT, echo.next()).await {
        Ok(Some(_)) => {}
        Ok(None) => panic!("round trip: the connection closed"),
        Err(_) => panic!("round trip: no answer from the server in {ROUND_TRIP_TIMEOUT:?}"),
    }
}
