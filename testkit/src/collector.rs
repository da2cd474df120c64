//! `Collector`: a subscriber that gathers what a test expects to receive, and fails
//! loudly when the client dropped messages instead of returning a short list.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::{Client, Message, Subscriber};
use futures::StreamExt;
use tokio::time::Instant;

use crate::client::{round_trip, slow_consumer_events};

/// Collects the messages published on a subject, as a user's subscriber would see
/// them.
///
/// ```no_run
/// # async fn example() {
/// use std::time::Duration;
/// use nats_testkit::{Collector, NatsServer};
///
/// let server = NatsServer::start();
/// let client = nats_testkit::connect(&server.url()).await;
/// let mut orders = Collector::subscribe(&client, "orders.>").await;
/// client.publish("orders.1", "hello".into()).await.unwrap();
/// let messages = orders.collect(1, Duration::from_secs(5)).await;
/// assert_eq!(messages[0].payload, "hello");
/// # }
/// ```
#[derive(Debug)]
pub struct Collector {
    subject: String,
    subscriber: Subscriber,
    /// The client's slow-consumer event count, and its value when we subscribed.
    slow_consumer_events: Arc<AtomicU64>,
    events_before: u64,
}

impl Collector {
    /// Subscribes `client` to `subject` (wildcards allowed) and returns once the
    /// server has registered the subscription, so anything published afterwards, by
    /// any connection, is collected.
    ///
    /// # Panics
    /// If `client` was not made by [`connect`](crate::connect) or its siblings (only
    /// those report dropped messages), or if subscribing fails.
    pub async fn subscribe(client: &Client, subject: impl Into<String>) -> Collector {
        let subject = subject.into();
        let slow_consumer_events = slow_consumer_events(client).unwrap_or_else(|| {
            panic!(
                "Collector::subscribe({subject:?}) needs a client made by nats_testkit::connect \
                 (or connect_with_user / connect_with): other clients drop messages silently"
            )
        });
        let subscriber = client
            .subscribe(subject.clone())
            .await
            .unwrap_or_else(|e| panic!("cannot subscribe to {subject:?}: {e}"));
        round_trip(client).await;
        let events_before = slow_consumer_events.load(Ordering::Relaxed);
        Collector {
            subject,
            subscriber,
            slow_consumer_events,
            events_before,
        }
    }

    /// Returns as soon as `n` messages have arrived, or when `timeout` has passed
    /// with fewer; in arrival order. A test asserts on the length itself.
    ///
    /// # Panics
    /// If the client dropped messages because its buffer was full.
    pub async fn collect(&mut self, n: usize, timeout: Duration) -> Vec<Message> {
        let deadline = Instant::now() + timeout;
        let mut messages = Vec::with_capacity(n);
        while messages.len() < n {
            match tokio::time::timeout_at(deadline, self.subscriber.next()).await {
                Ok(Some(message)) => messages.push(message),
                Ok(None) | Err(_) => break,
            }
        }
        self.assert_nothing_dropped(messages.len());
        messages
    }

    /// Collects until no message has arrived for `idle`, and returns them all. Use it
    /// to check that nothing *more* arrives, or when the count is not known.
    ///
    /// It waits at least `idle`; it never returns while messages keep coming.
    ///
    /// # Panics
    /// If the client dropped messages because its buffer was full.
    pub async fn collect_until_idle(&mut self, idle: Duration) -> Vec<Message> {
        let mut messages = Vec::new();
        while let Ok(Some(message)) = tokio::time::timeout(idle, self.subscriber.next()).await {
            messages.push(message);
        }
        self.assert_nothing_dropped(messages.len());
        messages
    }

    /// The subject this collector subscribed to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    fn assert_nothing_dropped(&self, received: usize) {
        let dropped = self.slow_consumer_events.load(Ordering::Relaxed) - self.events_before;
        assert!(
            dropped == 0,
            "messages were dropped by the client, not by the system under test: {dropped} \
             slow-consumer event(s) on the connection since Collector::subscribe({:?}); \
             {received} message(s) arrived. Collect sooner or in smaller steps.",
            self.subject
        );
    }
}

/// Parses a message payload as JSON.
///
/// # Panics
/// If it is not JSON; the message shows the subject and payload.
pub fn payload_json(message: &Message) -> serde_json::Value {
    serde_json::from_slice(&message.payload).unwrap_or_else(|e| {
        panic!(
            "payload on {} is not JSON ({e}): {}",
            message.subject,
            String::from_utf8_lossy(&message.payload)
        )
    })
}
