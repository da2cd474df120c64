//! `Collector` and the client helpers against a real server: messages arrive in order,
//! waiting is bounded, and messages the client dropped are reported, not hidden.

use std::time::{Duration, Instant};

use async_nats::ConnectOptions;
use nats_testkit::{Collector, NatsServer};

#[tokio::test]
async fn published_messages_are_collected_in_order_and_nothing_more() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let publisher = nats_testkit::connect(&server.url()).await;
    let mut orders = Collector::subscribe(&client, "orders.>").await;

    // A second connection: the collector's subscription must already be registered.
    for id in 0..3 {
        let payload = format!("{{\"id\":{id}}}");
        publisher
            .publish(format!("orders.{id}"), payload.into())
            .await
            .unwrap();
    }
    publisher.publish("other", "ignored".into()).await.unwrap();
    nats_testkit::round_trip(&publisher).await;

    let messages = orders.collect(3, Duration::from_secs(5)).await;
    let subjects: Vec<&str> = messages.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(subjects, ["orders.0", "orders.1", "orders.2"]);
    assert_eq!(nats_testkit::payload_json(&messages[2])["id"], 2);
    assert_eq!(orders.subject(), "orders.>");
    let extra = orders.collect_until_idle(Duration::from_millis(200)).await;
    assert!(extra.is_empty(), "{extra:?}");
}

#[tokio::test]
async fn collect_returns_what_arrived_when_the_timeout_passes() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut collector = Collector::subscribe(&client, "t").await;
    client.publish("t", "one".into()).await.unwrap();
    client.publish("t", "two".into()).await.unwrap();

    let started = Instant::now();
    let messages = collector.collect(5, Duration::from_millis(300)).await;

    assert_eq!(messages.len(), 2);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[tokio::test]
async fn collect_until_idle_gathers_an_unknown_number() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut collector = Collector::subscribe(&client, "t").await;
    for n in 0..100 {
        client.publish("t", n.to_string().into()).await.unwrap();
    }

    let messages = collector
        .collect_until_idle(Duration::from_millis(300))
        .await;

    assert_eq!(messages.len(), 100);
    assert_eq!(messages[99].payload, "99");
}

#[tokio::test]
#[should_panic(expected = "messages were dropped by the client")]
async fn messages_dropped_by_a_full_client_buffer_fail_the_collection() {
    let server = NatsServer::start();
    // A tiny buffer that nobody reads while 1000 messages arrive.
    let options = ConnectOptions::new().subscription_capacity(4);
    let client = nats_testkit::connect_with(&server.url(), options).await;
    let mut collector = Collector::subscribe(&client, "t").await;
    let publisher = nats_testkit::connect(&server.url()).await;
    for _ in 0..1000 {
        publisher.publish("t", "x".into()).await.unwrap();
    }
    nats_testkit::round_trip(&publisher).await;
    // Let the subscriber's connection read them all into (and past) its buffer.
    nats_testkit::round_trip(&client).await;

    collector.collect(1000, Duration::from_secs(1)).await;
}

#[tokio::test]
#[should_panic(expected = "needs a client made by nats_testkit::connect")]
async fn a_client_that_cannot_report_drops_is_refused() {
    let server = NatsServer::start();
    let plain = async_nats::connect(server.url()).await.unwrap();
    Collector::subscribe(&plain, "t").await;
}
