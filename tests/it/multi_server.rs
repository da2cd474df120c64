//! The sink's `servers` option with several servers, against a real three-node
//! nats-server cluster:
//!
//! - The first listed server is down when the statement starts: the sink connects to
//!   another one on the list, and a subscriber on the cluster receives every row.
//! - The server the sink is connected to is SIGKILLed mid-run (found through each
//!   node's `/connz`, where the sink's connection is named `streamsql nats_sink`): the
//!   sink reconnects to a surviving node and finishes there, and an R=3 JetStream
//!   stream holds every row exactly once, in the query's order on each subject. The
//!   same with only one server listed: the sink finds the others from what the cluster
//!   announces.
//!
//! Each test prints its figures (visible with `--nocapture`).

use crate::common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::jetstream::stream::StorageType;
use common::engine::{check_summary, log_sink, run_insert};
use common::js::{
    assert_each_id_once, assert_in_query_order, assert_late_within_the_window, create_stream,
    read_all, stored,
};
use nats_testkit::{Collector, NatsCluster, payload_json};
use streamsql::InsertSummary;
use tokio::task::{JoinHandle, block_in_place};

/// The sink's connection name, as `/connz` shows it.
const SINK_CONNECTION: &str = "streamsql nats_sink";

/// The longest a statement may run before the test gives up on it: far more than any
/// run here needs, even with a stream leader election on a loaded machine, but a hang
/// fails instead of stalling.
const STATEMENT_LIMIT: Duration = Duration::from_secs(60);

/// How long a test waits for anything else it polls for.
const WAIT_LIMIT: Duration = Duration::from_secs(20);

/// How often a test polls.
const POLL: Duration = Duration::from_millis(20);

/// The nodes among `nodes` whose `/connz` lists an open connection of the sink.
fn nodes_with_sink(cluster: &NatsCluster, nodes: &[usize]) -> Vec<usize> {
    nodes
        .iter()
        .copied()
        .filter(|&i| {
            let connz = cluster.node(i).monitor_json("/connz");
            connz["connections"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["name"] == SINK_CONNECTION)
        })
        .collect()
}

/// Waits until a message published on `subject` by a client of the node at `url`
/// reaches `received`: the subscription's interest has been routed to that node, so
/// rows the sink publishes there are delivered. The probes are drained and never
/// counted as rows.
async fn wait_for_interest(url: &str, subject: &str, received: &mut Collector) {
    let publisher = nats_testkit::connect(url).await;
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        publisher
            .publish(subject.to_string(), "probe".into())
            .await
            .expect("publish a probe");
        nats_testkit::round_trip(&publisher).await;
        let probes = received.collect(1, Duration::from_millis(100)).await;
        if let Some(m) = probes.first() {
            assert_eq!(m.subject.as_str(), subject, "only probes so far");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no probe from {url} reached the subscriber in {WAIT_LIMIT:?}: the cluster \
             does not route the subscription"
        );
    }
    // Probes published before the first one arrived may still be on their way.
    received
        .collect_until_idle(Duration::from_millis(200))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_listed_server_down_the_sink_connects_to_another() {
    log_sink();
    const ROWS: u64 = 1000;
    const SUBJECTS: &str = "multi.>";
    const PROBE: &str = "multi.probe";

    let mut cluster = block_in_place(|| NatsCluster::start(3));
    block_in_place(|| cluster.kill(0));
    // `servers` lists the dead node first, then the others. (async-nats shuffles the
    // list before it tries the servers, so the dead one is tried first in about a third
    // of the runs; in all of them it is a listed server the sink must skip.)
    let servers = cluster.servers();
    assert!(servers.starts_with(&cluster.node(0).url()), "{servers}");

    // A subscriber on node 2 that node 1 routes to as well: the sink may connect to
    // either.
    let subscriber = nats_testkit::connect(&cluster.node(2).url()).await;
    let mut received = Collector::subscribe(&subscriber, SUBJECTS).await;
    wait_for_interest(&cluster.node(1).url(), PROBE, &mut received).await;

    let script = format!(
        "INSERT INTO out SELECT value AS id, \
           concat('multi.', CAST(value % 4 AS VARCHAR)) AS subject \
           FROM generate_series(0, {last}) \
         WITH (connector = 'nats_sink', subject_field = 'subject', \
           servers = '{servers}', connect_timeout = '1s', retry_timeout = '10s');",
        last = ROWS - 1
    );
    let started = Instant::now();
    let summary = run_insert(script, STATEMENT_LIMIT).await;
    let elapsed = started.elapsed();
    let (retries, _) = check_summary(&summary, ROWS);
    // async-nats tries the listed servers in turn within one connect: a dead one is
    // skipped, not waited out by the sink's retry loop. (A sink that used only the
    // first server would retry connecting until `retry_timeout` fails the statement.)
    assert_eq!(
        retries, 0,
        "the sink retried although two listed servers were up: {summary:?}"
    );

    let mut messages = received.collect(ROWS as usize, WAIT_LIMIT).await;
    // Anything beyond the rows: a row delivered twice, or a stray probe.
    messages.extend(
        received
            .collect_until_idle(Duration::from_millis(300))
            .await,
    );
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for m in messages.iter().filter(|m| m.subject.as_str() != PROBE) {
        let id = payload_json(m)["id"].as_u64().expect("an id");
        assert_eq!(m.subject.as_str(), format!("multi.{}", id % 4), "row {id}");
        *counts.entry(id).or_default() += 1;
    }
    let missing: Vec<u64> = (0..ROWS)
        .filter(|id| !counts.contains_key(id))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {ROWS} rows reached the subscriber; missing (first 10): {missing:?}",
        counts.len()
    );
    let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(repeated.is_empty(), "received more than once: {repeated:?}");
    assert_eq!(counts.len() as u64, ROWS, "ids outside 0..{ROWS}");
    eprintln!(
        "first server down: {ROWS} rows in {elapsed:.1?} (connect and publish), \
         {retries} retries; every row received once on node 2"
    );
}

/// The stream the second test writes to, and the subjects it captures.
const STREAM: &str = "S";

/// Waits until stream `S` holds at least `count` messages, so the run is under way,
/// failing at once if the statement ends first.
async fn wait_until_stored(client: &Client, count: u64, statement: &JoinHandle<InsertSummary>) {
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let now = stored(client, STREAM).await;
        if now >= count {
            return;
        }
        assert!(
            !statement.is_finished(),
            "the statement ended with {now} rows stored, before the first {count}"
        );
        assert!(
            Instant::now() < deadline,
            "only {now} of the first {count} rows were stored after {WAIT_LIMIT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until exactly one node's `/connz` lists the sink's connection, and returns
/// that node.
fn sink_node(cluster: &NatsCluster) -> usize {
    let all: Vec<usize> = (0..cluster.size()).collect();
    let deadline = Instant::now() + WAIT_LIMIT;
    loop {
        let found = nodes_with_sink(cluster, &all);
        if let [node] = found[..] {
            return node;
        }
        assert!(
            Instant::now() < deadline,
            "the sink's connection ({SINK_CONNECTION:?}) was on nodes {found:?} of the \
             cluster's /connz for {WAIT_LIMIT:?}, not on exactly one"
        );
        std::thread::sleep(POLL);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connected_server_dies_mid_run_and_the_sink_finishes_on_another() {
    the_sinks_server_dies_mid_run("connected server killed", NatsCluster::servers).await;
}

/// With one server listed, the others are known only from the cluster's announcement
/// (INFO `connect_urls`): the sink connects to one of those after losing the listed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_listed_server_dies_and_the_sink_finishes_on_one_the_cluster_announced() {
    the_sinks_server_dies_mid_run("only listed server killed", |cluster| cluster.node(0).url())
        .await;
}

/// Runs a JetStream statement against the cluster's servers that `listed` gives, kills
/// the node the sink is connected to mid-run, and checks that the sink finished through
/// a surviving node with every row stored once, in order per subject.
async fn the_sinks_server_dies_mid_run(what: &str, listed: fn(&NatsCluster) -> String) {
    log_sink();
    const ROWS: u64 = 20_000;
    // At most this rate: row `n` is generated no earlier than `n / RATE` seconds into
    // the run, so the run lasts at least 5 s and a kill within the first seconds leaves
    // rows that can only be published after it.
    const RATE: u64 = 4_000;

    let mut cluster = block_in_place(|| NatsCluster::start(3));
    let admin = nats_testkit::connect_options()
        .connect(cluster.urls())
        .await
        .expect("connect to the cluster");
    create_stream(&admin, STREAM, &["orders.>"], |c| {
        c.storage = StorageType::File;
        c.num_replicas = 3;
    })
    .await;

    let script = format!(
        "SET datafusion.execution.target_partitions = 1;
         CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen', \
           rows_per_second = '{RATE}', row_limit = '{ROWS}');
         INSERT INTO out SELECT id, concat('orders.', CAST(id % 8 AS VARCHAR)) AS subject \
           FROM gen WITH (connector = 'nats_sink', subject_field = 'subject', \
           stream = '{STREAM}', msg_id_field = 'id', retry_timeout = '30s', \
           connect_timeout = '2s', servers = '{servers}');",
        servers = listed(&cluster)
    );
    let started = Instant::now();
    let statement = tokio::spawn(run_insert(script, STATEMENT_LIMIT));
    wait_until_stored(&admin, ROWS / 10, &statement).await;
    let killed = block_in_place(|| sink_node(&cluster));
    // What else dies with the node, for the figures: the stream's leader (then acks
    // wait for an election), the JetStream meta leader.
    let stream_leader = cluster.stream_leader(&admin, STREAM).await == killed;
    let jsz = block_in_place(|| cluster.node(killed).monitor_json("/jsz"));
    let meta_leader = jsz["meta_cluster"]["leader"] == cluster.server_name(killed);
    // The admin client may be connected to the node about to die: not used again.
    drop(admin);
    assert!(
        !statement.is_finished(),
        "the run ended before the sink's server could be killed"
    );
    block_in_place(|| cluster.kill(killed));
    let kill_at = started.elapsed();
    let survivors: Vec<usize> = (0..cluster.size()).filter(|&i| i != killed).collect();
    // Rows the rate limit had not let datagen produce yet when the node died: the sink
    // can only have published them afterwards, through another node.
    let rows_after_kill = ROWS.saturating_sub((kill_at.as_secs_f64() * RATE as f64) as u64);
    assert!(
        rows_after_kill > 0,
        "the kill came {kill_at:.1?} into the run, when datagen may have produced every \
         row: it shows nothing about reconnecting"
    );

    // Where the sink reconnects, seen while the statement still runs.
    let mut reconnected_to = None;
    let deadline = Instant::now() + STATEMENT_LIMIT;
    while reconnected_to.is_none() && !statement.is_finished() && Instant::now() < deadline {
        reconnected_to = block_in_place(|| nodes_with_sink(&cluster, &survivors))
            .first()
            .copied();
        tokio::time::sleep(POLL).await;
    }
    let reconnected_after = started.elapsed() - kill_at;

    let summary = statement.await.expect("the statement's task");
    let elapsed = started.elapsed();
    let (retries, duplicates) = check_summary(&summary, ROWS);
    let reconnected = reconnected_to.map_or("not seen".to_string(), |node| {
        format!("node {node} after {reconnected_after:.1?}")
    });
    eprintln!(
        "{what}: node {killed} at {kill_at:.1?} (stream leader: \
         {stream_leader}, meta leader: {meta_leader}; at least {rows_after_kill} rows \
         still to generate); the sink's connection on {reconnected}; \
         {ROWS} rows in {elapsed:.1?}, {retries} retries, {duplicates} duplicates"
    );
    let node = reconnected_to.unwrap_or_else(|| {
        panic!(
            "the statement finished, but the sink's connection never showed in the /connz \
             of the surviving nodes {survivors:?}"
        )
    });
    assert_ne!(node, killed);

    // Reading the stream back creates a consumer, which the JetStream meta leader must
    // answer; the killed node may have been that leader, and a new one may not be
    // elected yet. The restart waits until every node follows one meta leader again.
    block_in_place(|| cluster.restart(killed));
    let urls: Vec<String> = survivors.iter().map(|&i| cluster.node(i).url()).collect();
    let client = nats_testkit::connect_options()
        .connect(urls)
        .await
        .expect("connect to the surviving nodes");
    cluster.stream_leader(&client, STREAM).await;
    let messages = read_all(&client, STREAM).await;
    assert_each_id_once(&messages, ROWS);
    if stream_leader {
        // The stream's leader died too: while a new one is elected, the sink's resends
        // are refused, and a later row of an attempt may be stored ahead of an earlier
        // one the old leader lost (the README's exception, bounded by the window).
        assert_late_within_the_window(&messages);
    } else {
        assert_in_query_order(&messages);
    }
}
