//! JetStream delivery through server faults, against real nats-server processes: the
//! sink retries, resends from the first unconfirmed row, and the stream's message-id
//! deduplication drops what was stored already, so every row ends up stored exactly once.
//!
//! - A single server is SIGKILLed and restarted on the same port and storage several
//!   times during a rate-limited run of 200 000 rows.
//! - The server is down when the statement starts and comes up seconds later: the
//!   statement retries connecting until it can.
//! - In a three-node cluster the leader of an R=3 stream is SIGKILLed mid-run; the
//!   statement waits out the election and finishes on the new leader.
//! - A stream with `discard: new` is full while a consumer frees space mid-window.
//!
//! Each test reads the whole stream back and checks that it holds one message per row,
//! with every `Nats-Msg-Id` present once, that on each subject the stream's order is the
//! query's (no row stored after a later one, even across a dropped connection; a leader
//! change may reorder by less than the window of acks in flight), and that the statement
//! reports all rows.
//! The outages' cost shows in the summary: retries, and the rows resent after a failure
//! that the stream already had (duplicates); each test prints its figures (visible with
//! `--nocapture`).

use crate::common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::jetstream;
use async_nats::jetstream::consumer::{AckPolicy, PullConsumer, pull};
use async_nats::jetstream::stream::{DiscardPolicy, RetentionPolicy, StorageType};
use common::engine::{check_summary, log_sink, run_insert};
use common::js::{
    assert_each_id_once, assert_in_query_order, assert_late_within_the_window, create_stream,
    out_of_query_order, read_all, stored,
};
use common::{inserted_rows, run_script, stderr, stdout, summary_count};
use futures::StreamExt;
use nats_testkit::{NatsCluster, NatsServer};

/// The stream every test writes to, and the subjects it captures.
const STREAM: &str = "S";
const SUBJECTS: &[&str] = &["orders.>"];

/// The longest a statement may run before the test gives up on it: far more than any
/// of these runs needs, even on a loaded machine, but a hang fails instead of stalling.
const STATEMENT_LIMIT: Duration = Duration::from_secs(55);

/// Options every statement here shares. `retry_timeout` bounds one retry episode (it
/// restarts after each success): generous against a leader election, yet a sink that
/// never recovers fails the statement with its last reason instead of hanging.
const SINK_OPTIONS: &str = "connector = 'nats_sink', subject_field = 'subject', \
                            stream = 'S', msg_id_field = 'id', retry_timeout = '30s'";

/// `rows` rows with ids `0..rows` from `datagen` at `rate` rows per second, spread over
/// eight subjects, into stream `S` of `servers`. The rate makes the run last long
/// enough to inject faults.
fn datagen_script(servers: &str, rows: u64, rate: u64) -> String {
    format!(
        "SET datafusion.execution.target_partitions = 1;
         CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen', \
           rows_per_second = '{rate}', row_limit = '{rows}');
         INSERT INTO out SELECT id, concat('orders.', CAST(id % 8 AS VARCHAR)) AS subject \
           FROM gen WITH ({SINK_OPTIONS}, servers = '{servers}');"
    )
}

/// Reads stream `S` back and asserts it holds exactly one message per id `0..rows`, in
/// the query's order on each subject.
async fn assert_stored_once_in_order(client: &Client, rows: u64) {
    let messages = read_all(client, STREAM).await;
    assert_each_id_once(&messages, rows);
    assert_in_query_order(&messages);
}

/// Waits until stream `S` holds at least `count` messages: the run is under way.
async fn wait_until_stored(client: &Client, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = stored(client, STREAM).await;
        if now >= count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {now} of the first {count} rows were stored after 20s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_several_times_during_200k_rows() {
    log_sink();
    const ROWS: u64 = 200_000;
    // At most this rate, so the run lasts at least 200_000 / 30_000 ≈ 6.7 s: time for
    // every kill below while rows are still flowing.
    const RATE: u64 = 30_000;
    const FIRST_KILL_AFTER: Duration = Duration::from_millis(1000);
    const DOWN: Duration = Duration::from_millis(500);
    const UP: Duration = Duration::from_millis(1000);
    const MIN_KILLS: usize = 3;
    const MAX_KILLS: usize = 5;

    let server = NatsServer::builder().jetstream(true).start();
    let url = server.url();
    let client = nats_testkit::connect(&url).await;
    create_stream(&client, STREAM, SUBJECTS, |c| c.storage = StorageType::File).await;
    drop(client);

    // Kills (SIGKILL: no chance to flush or say goodbye) only while the statement runs;
    // each restart keeps the port and the JetStream store.
    let running = Arc::new(AtomicBool::new(true));
    let killer = thread::spawn({
        let running = running.clone();
        move || {
            let mut server = server;
            let mut kills = 0;
            thread::sleep(FIRST_KILL_AFTER);
            while kills < MAX_KILLS && running.load(Ordering::SeqCst) {
                server.kill();
                kills += 1;
                thread::sleep(DOWN);
                server.restart();
                thread::sleep(UP);
            }
            (server, kills)
        }
    });

    let started = Instant::now();
    let summary = run_insert(datagen_script(&url, ROWS, RATE), STATEMENT_LIMIT).await;
    let elapsed = started.elapsed();
    running.store(false, Ordering::SeqCst);
    let (server, kills) = killer.join().expect("the killer thread");

    let (retries, duplicates) = check_summary(&summary, ROWS);
    eprintln!(
        "sigkill: {kills} kills, {ROWS} rows in {elapsed:.1?}, {retries} retries, \
         {duplicates} duplicates dropped by the stream"
    );
    assert!(
        kills >= MIN_KILLS,
        "only {kills} kills hit the run ({elapsed:?}): it ended too early to show anything"
    );
    assert!(
        retries > 0,
        "{kills} kills and no retry: the kills missed the run? {summary:?}"
    );

    let client = nats_testkit::connect(&server.url()).await;
    assert_stored_once_in_order(&client, ROWS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_at_start_comes_up_later() {
    const ROWS: u64 = 50_000;
    const DOWN_AT_START: Duration = Duration::from_millis(2500);

    let mut server = NatsServer::start();
    let url = server.url();
    let client = nats_testkit::connect(&url).await;
    create_stream(&client, STREAM, SUBJECTS, |c| c.storage = StorageType::File).await;
    drop(client);
    server.stop();

    // The binary, so that its log (stderr) is this statement's alone.
    // One partition: the query's order is then one order.
    let script = format!(
        "SET datafusion.execution.target_partitions = 1;
         INSERT INTO out SELECT value AS id, \
           concat('orders.', CAST(value % 8 AS VARCHAR)) AS subject \
           FROM generate_series(0, {last}) \
         WITH ({SINK_OPTIONS}, servers = '{url}', connect_timeout = '1s');",
        last = ROWS - 1
    );
    let started = Instant::now();
    let statement = tokio::task::spawn_blocking(move || {
        run_script(&script, &[("RUST_LOG", "connector_nats=info")])
    });
    tokio::time::sleep(DOWN_AT_START).await;
    if statement.is_finished() {
        let output = statement.await.unwrap();
        panic!(
            "the statement ended while the server was down\nstdout:\n{}\nstderr:\n{}",
            stdout(&output),
            stderr(&output)
        );
    }
    tokio::task::block_in_place(|| server.restart());

    let output = tokio::time::timeout(STATEMENT_LIMIT, statement)
        .await
        .unwrap_or_else(|_| panic!("the statement did not finish within {STATEMENT_LIMIT:?}"))
        .expect("the statement's thread");
    let elapsed = started.elapsed();
    let (out, log) = (stdout(&output), stderr(&output));
    assert!(
        output.status.success(),
        "the statement failed\nstdout:\n{out}\nstderr:\n{log}"
    );
    assert_eq!(inserted_rows(&out, "out"), ROWS, "{out}");
    let retry_lines = log.lines().filter(|l| l.contains("retrying")).count();
    assert!(
        log.contains("cannot connect to NATS") && retry_lines > 0,
        "no connect retry in the log:\n{log}"
    );
    assert!(log.contains("recovered"), "no recovery in the log:\n{log}");
    assert_eq!(
        summary_count(&out, "out", "retries"),
        Some(retry_lines as u64),
        "the summary counts the connect retries the log shows:\n{out}"
    );
    eprintln!(
        "down at start: {ROWS} rows in {elapsed:.1?}; {retry_lines} retries logged; \
         summary: {} retries, {} duplicates",
        summary_count(&out, "out", "retries").unwrap_or_default(),
        summary_count(&out, "out", "duplicates").unwrap_or_default(),
    );

    let client = nats_testkit::connect(&server.url()).await;
    assert_stored_once_in_order(&client, ROWS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_leader_lost_in_a_three_node_cluster() {
    log_sink();
    const ROWS: u64 = 150_000;
    // At most this rate: the run lasts at least 5 s, and the kill comes after 10% of it.
    const RATE: u64 = 30_000;

    let mut cluster = tokio::task::block_in_place(|| NatsCluster::start(3));
    let client = nats_testkit::connect_options()
        .connect(cluster.urls())
        .await
        .expect("connect to the cluster");
    create_stream(&client, STREAM, SUBJECTS, |c| {
        c.storage = StorageType::File;
        c.num_replicas = 3;
    })
    .await;

    // The sink connects to the followers only, so this shows a leader change on its own;
    // `tests/it/multi_server.rs` kills the server the sink is connected to.
    let leader = cluster.stream_leader(&client, STREAM).await;
    let followers: Vec<String> = (0..cluster.size())
        .filter(|&i| i != leader)
        .map(|i| cluster.node(i).url())
        .collect();

    let started = Instant::now();
    let statement = tokio::spawn(run_insert(
        datagen_script(&followers.join(","), ROWS, RATE),
        STATEMENT_LIMIT,
    ));
    wait_until_stored(&client, ROWS / 10).await;
    assert_eq!(
        cluster.stream_leader(&client, STREAM).await,
        leader,
        "the stream's leader moved before the kill"
    );
    assert!(
        !statement.is_finished(),
        "the run ended before the leader could be killed"
    );
    cluster.kill(leader);
    let killed_at = Instant::now();
    let successor = cluster
        .wait_for_stream_leader_change(&client, STREAM, leader)
        .await;
    let election = killed_at.elapsed();
    // The old leader comes back as a follower and catches up, possibly mid-run.
    tokio::task::block_in_place(|| cluster.restart(leader));

    let summary = statement.await.expect("the statement's task");
    let elapsed = started.elapsed();
    let (retries, duplicates) = check_summary(&summary, ROWS);
    eprintln!(
        "leader lost: node {leader} killed, node {successor} led after {election:.1?}; \
         {ROWS} rows in {elapsed:.1?}, {retries} retries, {duplicates} duplicates"
    );

    cluster
        .wait_for_stream_replica(&client, STREAM, leader)
        .await;
    let messages = read_all(&client, STREAM).await;
    assert_each_id_once(&messages, ROWS);
    // The connection stays up here, yet a leader change can reorder: messages in flight
    // to the old leader may be lost while the new one stores later ones (seen in one
    // run of seven). The sink resends the lost rows when their ack times out, so they
    // land behind those, by less than the window of acks in flight. See the README.
    assert_late_within_the_window(&messages);
}

/// "Stream full" with `discard: new` refuses a message at a time, and space comes back
/// mid-window as a consumer removes what it has read: a refused row is resent, but a
/// later row of the same window may find room first. The README states the bound: a row
/// lands behind rows fewer than `max_in_flight` later. Each row is still stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_freeing_space_mid_window_reorders_by_less_than_the_window() {
    log_sink();
    const ROWS: u64 = 20_000;
    const WINDOW: u64 = 64;
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, STREAM, SUBJECTS, |c| {
        c.retention = RetentionPolicy::WorkQueue;
        c.discard = DiscardPolicy::New;
        c.max_messages = FULL;
    })
    .await;
    // The consumer removes each message it acknowledges, freeing space while the sink
    // has a window in flight; it keeps the messages in stream order for the checks.
    const FULL: i64 = 300;
    let consumer: PullConsumer = jetstream::new(client.clone())
        .get_stream(STREAM)
        .await
        .unwrap()
        .create_consumer(pull::Config {
            durable_name: Some("drain".into()),
            ack_policy: AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let observer = client.clone();
    let drained = tokio::spawn(async move {
        // Full first, then freed at a pace (at most 5000 rows/s) the sink outruns.
        wait_until_stored(&observer, FULL as u64).await;
        let mut messages = consumer.messages().await.unwrap();
        let mut kept = Vec::new();
        while (kept.len() as u64) < ROWS {
            if kept.len() % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let next = tokio::time::timeout(Duration::from_secs(30), messages.next()).await;
            let message = next
                .expect("the stream keeps receiving rows")
                .unwrap()
                .unwrap();
            message.ack().await.unwrap();
            kept.push(message);
        }
        kept
    });

    // One partition: the query's order is then one order.
    let script = format!(
        "SET datafusion.execution.target_partitions = 1;
         INSERT INTO out SELECT value AS id, concat('orders.', CAST(value % 8 AS VARCHAR)) \
           AS subject FROM generate_series(0, {last}) \
         WITH ({SINK_OPTIONS}, servers = '{url}', max_in_flight = '{WINDOW}');",
        last = ROWS - 1,
        url = server.url()
    );
    let summary = run_insert(script, STATEMENT_LIMIT).await;
    let (retries, duplicates) = check_summary(&summary, ROWS);
    let messages = drained.await.unwrap();
    let late = out_of_query_order(&messages);
    eprintln!(
        "stream full: {retries} retries, {duplicates} duplicates, {} rows stored late",
        late.len()
    );
    assert!(retries > 0, "the stream was never full: {summary:?}");
    assert_each_id_once(&messages, ROWS);
    assert!(
        late.iter().all(|(_, id, before, _)| before - id < WINDOW),
        "rows stored further out of order than the window of {WINDOW} acks: {:?}",
        &late[..late.len().min(10)]
    );
}
