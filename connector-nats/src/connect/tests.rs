//! The gate against real servers: what a client held when its connection was lost is
//! never sent anywhere, and a fresh connection carries on.

use std::time::{Duration, Instant};

use nats_testkit::{Collector, NatsServer};
use tokio::task::block_in_place;

use super::*;
use crate::metrics::SinkMetrics;
use crate::options::config::{Auth, Tls};

/// Two independent servers (no cluster: nothing published on one can reach the other
/// except through a client that connects to it). The connected one is SIGKILLed while
/// the other stays up, the case where async-nats alone would reconnect to the survivor
/// and send what it had queued there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_never_sends_what_the_client_still_held() {
    let mut servers = [0, 1].map(|_| NatsServer::builder().jetstream(false).start());
    let config = ConnectionConfig {
        servers: servers.iter().map(NatsServer::url).collect(),
        auth: Auth::None,
        tls: Tls::default(),
        connect_timeout: Duration::from_secs(2),
        retry_timeout: Some(Duration::from_secs(10)),
    };
    let metrics = SinkMetrics::new("connection_test");
    let mut retry = Retry::new(config.retry_timeout, metrics.clone());
    let mut connection = Connection::open(&config, &mut retry, &metrics)
        .await
        .unwrap();
    let port = connection.client.server_info().port;
    let dead = servers.iter().position(|s| s.port() == port).unwrap();
    let survivor = &servers[1 - dead].url();
    let watcher = nats_testkit::connect(survivor).await;
    let mut received = Collector::subscribe(&watcher, "held.>").await;

    block_in_place(|| servers[dead].kill());
    // Publishes queue in the client while it tries to reconnect, until it gives up
    // (`max_reconnects`) and refuses them.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut queued = 0u64;
    while connection
        .client
        .publish("held.old", queued.to_string().into())
        .await
        .is_ok()
    {
        queued += 1;
        assert!(
            Instant::now() < deadline,
            "the client still takes publishes 5 s after its server died ({queued} so far): \
             it reconnected by itself?"
        );
        if queued.is_multiple_of(256) {
            tokio::task::yield_now().await;
        }
    }
    assert!(connection.lost());
    let arrived = received
        .collect_until_idle(Duration::from_millis(500))
        .await;
    assert!(
        arrived.is_empty(),
        "{} of the {queued} messages the client held reached the other server",
        arrived.len()
    );
    eprintln!("{queued} publishes queued after the loss; none was sent");

    assert!(connection.reopen_if_lost(&mut retry).await.unwrap());
    assert!(!connection.lost());
    assert_eq!(
        connection.client.server_info().port,
        servers[1 - dead].port()
    );
    connection
        .client
        .publish("held.new", "fresh".into())
        .await
        .unwrap();
    connection.client.flush().await.unwrap();
    let arrived = received.collect(1, Duration::from_secs(5)).await;
    assert_eq!(arrived.len(), 1);
    assert_eq!(arrived[0].subject.as_str(), "held.new");
    // Nothing to reopen while the connection is up.
    assert!(!connection.reopen_if_lost(&mut retry).await.unwrap());
}
