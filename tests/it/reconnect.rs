//! Core NATS across a lost connection or a silent server: the statement survives, and
//! the batch in flight is sent again, so no row is missing.
//!
//! A JetStream stream on the server records what arrived: a core subscriber would itself
//! miss messages while disconnected. But JetStream stores core publishes from a queue
//! that a stopping server discards: every row a restart test found missing from the
//! stream had been delivered by that server to a core subscriber, so the server had
//! processed it (which is all a core confirmation claims). A cut link is therefore the
//! exact test; the restart test counts a row as arrived when the stream or a core
//! subscriber on the server has it.

use crate::common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::Client;
use common::js::{create_stream, read_all, settled_at_least};
use common::link::Link;
use futures::StreamExt;
use nats_testkit::{NatsServer, payload_json};
use streamsql::{Engine, InsertSummary, Outcome};

const ROWS: u64 = 100_000;

/// The tests here load the machine (40k rows/s, or 40 MB through a slow link); one at a
/// time, so that each one's timing is its own.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Publishes ids `0..ROWS` at 40k rows/s through core NATS to `recon.<id % 4>`, with
/// the sink's `options` added.
async fn publish_ids(servers: &str, options: &str) -> InsertSummary {
    // The sink's warnings (disconnect, resend) show in the output of a failing run.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("connector_nats=warn")
        .with_test_writer()
        .try_init();
    let mut engine = Engine::new();
    let outcomes = engine
        .execute(&format!(
            "CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen', rows_per_second = '40000', row_limit = '{ROWS}');
             INSERT INTO recon SELECT id, concat('recon.', id % 4) AS subject FROM gen
             WITH (connector = 'nats_sink', servers = '{servers}', subject_field = 'subject', connect_timeout = '2s'{options});"
        ))
        .await
        .expect("the statement survives the lost connection");
    let Some(Outcome::Insert(summary)) = outcomes.last() else {
        panic!("no insert outcome: {outcomes:?}");
    };
    assert_eq!(summary.rows, ROWS);
    summary.clone()
}

/// The ids stream `name` holds.
async fn stored_ids(client: &Client, name: &str) -> BTreeSet<u64> {
    read_all(client, name)
        .await
        .iter()
        .map(|m| payload_json(m)["id"].as_u64().unwrap())
        .collect()
}

/// The ids stream `RECON` holds once it holds at least `rows` messages and has stopped
/// growing (resent batches add duplicates, so the count alone can pass `rows` early).
async fn stored_at_least(client: &Client, rows: u64) -> BTreeSet<u64> {
    settled_at_least(client, "RECON", rows).await;
    stored_ids(client, "RECON").await
}

fn assert_every_id(arrived: &BTreeSet<u64>) {
    let missing: Vec<u64> = (0..ROWS).filter(|id| !arrived.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "{} ids missing, first 10: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    // Resent batches may repeat rows; every row that arrived is one the query produced.
    assert_eq!(arrived.len() as u64, ROWS, "ids outside 0..{ROWS} arrived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_twice_mid_statement_loses_no_row() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "RECON", &["recon.>"], |_| {}).await;
    let link = Arc::new(Link::to(&server.url(), None).await);

    // Two outages of half a second, a second apart, each dropping whatever the client
    // had written and the server had not yet read.
    let cutter = {
        let link = link.clone();
        tokio::spawn(async move {
            for _ in 0..2 {
                tokio::time::sleep(Duration::from_millis(1000)).await;
                link.cut(Duration::from_millis(500));
            }
        })
    };
    let summary = publish_ids(link.url(), "").await;
    cutter.await.unwrap();
    let retries = summary.delivery.map(|d| d.retries).unwrap_or_default();
    assert!(retries >= 2, "each cut is a retry: {summary:?}");

    assert_every_id(&stored_at_least(&client, ROWS).await);
}

/// A network that stops delivering for three seconds while the connection stays up:
/// the batch's confirmation times out (`confirm_timeout` 1 s), and when the link comes
/// back its connections are dropped with what they held. Only a resend of every
/// unconfirmed batch, on a new connection, gets all rows stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_silent_past_confirm_timeout_loses_no_row() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "RECON", &["recon.>"], |_| {}).await;
    let link = Arc::new(Link::to(&server.url(), None).await);
    let silencer = {
        let link = link.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            link.hold_everything();
            tokio::time::sleep(Duration::from_millis(3000)).await;
            link.cut(Duration::ZERO);
        })
    };
    let summary = publish_ids(link.url(), ", confirm_timeout = '1s'").await;
    silencer.await.unwrap();
    let retries = summary.delivery.map(|d| d.retries).unwrap_or_default();
    assert!(retries >= 1, "the silence is a retry: {summary:?}");
    assert_every_id(&stored_at_least(&client, ROWS).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_statement_loses_no_row() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = NatsServer::start();
    let url = server.url();
    let client = nats_testkit::connect(&url).await;
    create_stream(&client, "RECON", &["recon.>"], |_| {}).await;
    // What the server processed before it stopped, and JetStream may not have stored.
    let delivered = Arc::new(Mutex::new(BTreeSet::new()));
    let mut subscription = client.subscribe("recon.>").await.unwrap();
    let recorder = {
        let delivered = delivered.clone();
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let row: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
                delivered
                    .lock()
                    .unwrap()
                    .insert(row["id"].as_u64().unwrap());
            }
        })
    };

    // Stop the server gracefully (JetStream keeps what it stored) about a second into
    // the run, and bring it back on the same port and storage.
    let restarter = std::thread::spawn(move || {
        let mut server = server;
        std::thread::sleep(Duration::from_millis(1000));
        server.stop();
        std::thread::sleep(Duration::from_millis(500));
        server.restart();
        server
    });
    publish_ids(&url, "").await;
    let server = restarter.join().unwrap();

    let client = nats_testkit::connect(&server.url()).await;
    // JetStream stores core publishes asynchronously: look again until every id is in,
    // or 30 s have passed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut arrived = stored_ids(&client, "RECON").await;
        arrived.extend(delivered.lock().unwrap().iter());
        if arrived.len() as u64 >= ROWS || std::time::Instant::now() >= deadline {
            recorder.abort();
            assert_every_id(&arrived);
            return;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Core NATS over a link slower than `confirm_timeout` allows for a whole batch: the wait
/// for the confirmation counts from when the client has written the batch, not from its
/// first row, so the statement completes instead of sending the batch again and again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_takes_longer_to_write_than_confirm_timeout_is_confirmed_once() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "SLOW", &["slow.>"], |_| {}).await;
    // About 40 MB in one record batch, through a link of about 4 MB/s: 10 s to write,
    // of which the operating system's socket buffers (a few MB) hide the last 2 s or so.
    let link = Link::to(&server.url(), Some(4_000_000)).await;
    let link = link.url();
    let script = format!(
        "INSERT INTO out SELECT value AS id, repeat('x', 10000) AS body \
         FROM generate_series(1, 4000) \
         WITH (connector = 'nats_sink', servers = '{link}', subject = 'slow.rows', \
               confirm_timeout = '4s', retry_timeout = '30s');"
    );
    let mut engine = Engine::new();
    let outcome = engine.execute(&script).await.expect("the insert completes");
    let Some(Outcome::Insert(summary)) = outcome.last() else {
        panic!("{outcome:?}");
    };
    assert_eq!(summary.rows, 4000);
    assert_eq!(summary.delivery.map(|d| d.retries), Some(0), "{summary:?}");
    assert_eq!(
        settled_at_least(&client, "SLOW", 4000).await,
        4000,
        "each row once"
    );
}
