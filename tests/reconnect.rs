//! Core NATS across a server restart: the statement survives, and the batch in flight when
//! the connection dropped is sent again, so no row is missing. A JetStream stream on the
//! server records what arrived (a core subscriber would itself miss messages while
//! disconnected, so it cannot tell).

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::js::{create_stream, read_all, stored};
use nats_testkit::{NatsServer, payload_json};
use streamsql::{Engine, Outcome};

const ROWS: u64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_statement_loses_no_row() {
    // The sink's warnings (disconnect, resend) show in the output of a failing run.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("connector_nats=warn")
        .with_test_writer()
        .try_init();
    let server = NatsServer::start();
    let url = server.url();
    let client = nats_testkit::connect(&url).await;
    create_stream(&client, "RECON", &["recon.>"], |_| {}).await;

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

    let mut engine = Engine::new();
    let outcomes = engine
        .execute(&format!(
            "CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen', rows_per_second = '40000', row_limit = '{ROWS}');
             INSERT INTO recon SELECT id, concat('recon.', id % 4) AS subject FROM gen
             WITH (connector = 'nats_sink', servers = '{url}', subject_field = 'subject', connect_timeout = '2s');"
        ))
        .await
        .expect("the statement survives the restart");
    let server = restarter.join().unwrap();
    let Some(Outcome::Insert(summary)) = outcomes.last() else {
        panic!("no insert outcome: {outcomes:?}");
    };
    assert_eq!(summary.rows, ROWS);

    let client = nats_testkit::connect(&server.url()).await;
    // The server has processed every confirmed message, but JetStream stores core
    // publishes asynchronously: wait until the count settles.
    let mut settled = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = stored(&client, "RECON").await;
        if now == settled {
            break;
        }
        settled = now;
    }
    assert!(
        settled >= ROWS,
        "only {settled} of {ROWS} rows reached the server"
    );
    let ids: BTreeSet<u64> = read_all(&client, "RECON")
        .await
        .iter()
        .map(|m| payload_json(m)["id"].as_u64().unwrap())
        .collect();
    let missing: Vec<u64> = (0..ROWS).filter(|id| !ids.contains(id)).take(10).collect();
    assert!(
        missing.is_empty(),
        "missing ids (first 10): {missing:?}; {settled} stored"
    );
    // Resent batches may repeat rows; every stored row is one the query produced.
    assert_eq!(ids.len() as u64, ROWS);
}
