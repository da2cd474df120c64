//! `NatsCluster` against real nats-server processes: three JetStream nodes that agree
//! on a meta leader, and an R=3 stream that keeps every acknowledged message through a
//! SIGKILL of its leader, elects another leader, and takes the killed node back with
//! its storage.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, message::PublishMessage, stream};
use nats_testkit::NatsCluster;

const STREAM: &str = "ORDERS";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_cluster_has_three_distinct_nodes_and_one_meta_leader() {
    let cluster = NatsCluster::start(3);

    assert_eq!(cluster.size(), 3);
    let urls = cluster.urls();
    assert_eq!(cluster.servers(), urls.join(","));
    assert_eq!(urls.iter().collect::<BTreeSet<_>>().len(), 3, "{urls:?}");
    let names: BTreeSet<&str> = (0..3).map(|i| cluster.server_name(i)).collect();
    assert_eq!(names.len(), 3, "{names:?}");

    let mut leaders = BTreeSet::new();
    for i in 0..3 {
        let client = nats_testkit::connect(&cluster.node(i).url()).await;
        let info = client.server_info();
        assert_eq!(info.server_name, cluster.server_name(i));
        assert!(info.jetstream && info.cluster.is_some(), "{info:?}");
        let meta = &cluster.node(i).monitor_json("/jsz")["meta_cluster"];
        assert_eq!(meta["cluster_size"], 3, "{meta}");
        leaders.insert(meta["leader"].as_str().unwrap().to_string());
    }
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    let leader = leaders.first().unwrap();
    assert!(cluster.node_index(leader).is_some(), "{leader}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_messages_survive_a_killed_stream_leader() {
    let mut cluster = NatsCluster::start(3);
    let client = nats_testkit::connect_options()
        .connect(cluster.urls())
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["orders.>".into()],
        storage: stream::StorageType::File,
        num_replicas: 3,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut sequences = Vec::new();
    for id in 0..10 {
        sequences.push(publish(&js, id).await);
    }

    let leader = cluster.stream_leader(&client, STREAM).await;
    cluster.kill(leader);
    let successor = cluster
        .wait_for_stream_leader_change(&client, STREAM, leader)
        .await;
    assert_ne!(successor, leader);
    assert!(cluster.node_mut(successor).is_running());
    // The client may have been connected to the killed node: these publishes also
    // cover its reconnect to another one.
    for id in 10..20 {
        sequences.push(publish(&js, id).await);
    }

    cluster.restart(leader);
    cluster
        .wait_for_stream_replica(&client, STREAM, leader)
        .await;

    assert_eq!(sequences, (1..=20).collect::<Vec<u64>>());
    let mut orders = js.get_stream(STREAM).await.unwrap();
    assert_eq!(orders.info().await.unwrap().state.messages, 20);
    for (id, &sequence) in sequences.iter().enumerate() {
        let message = orders.get_raw_message(sequence).await.unwrap();
        assert_eq!(message.payload, id.to_string());
    }
    // The restarted node holds them all as well: the first ten from its own storage,
    // the rest caught up from the new leader. Applying may trail "current" briefly.
    let deadline = Instant::now() + Duration::from_secs(10);
    while stored_messages(&cluster, leader) != 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored_messages(&cluster, leader), 20);
}

/// Publishes `orders.<id>` until JetStream acknowledges it and returns its sequence.
/// Failures are expected while a new leader is elected or the client reconnects; the
/// message id turns a retry after a lost ack into a duplicate the stream drops.
async fn publish(js: &jetstream::Context, id: usize) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let message = PublishMessage::build()
            .payload(id.to_string().into())
            .message_id(format!("order-{id}"));
        let error = match js.send_publish(format!("orders.{id}"), message).await {
            Ok(ack) => match ack.await {
                Ok(ack) => return ack.sequence,
                Err(e) => e,
            },
            Err(e) => e,
        };
        assert!(
            Instant::now() < deadline,
            "order {id} was not acknowledged within 30 s: {error}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The messages node `i` itself stores for the stream, from its monitoring endpoint.
fn stored_messages(cluster: &NatsCluster, i: usize) -> u64 {
    let jsz = cluster
        .node(i)
        .monitor_json("/jsz?accounts=true&streams=true");
    let streams = jsz["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten());
    let stream = streams
        .into_iter()
        .find(|s| s["name"] == STREAM)
        .unwrap_or_else(|| panic!("node {i} has no stream {STREAM}: {jsz}"));
    stream["state"]["messages"].as_u64().unwrap()
}
