//! Exactly-once delivery (`delivery = 'exactly_once'`, atomic batches) when things go
//! wrong, against real nats-server processes; every check reads back what the stream
//! stored with a real consumer.
//!
//! - `delivery = 'exactly_once'` across a SIGKILL of the server: the statement gives up
//!   after `retry_timeout`, and what the stream holds is a prefix of the rows made of
//!   whole atomic batches only (no batch partly stored, no row twice, nothing confirmed
//!   lost); rerunning the same statement completes it, every row exactly once, and the
//!   summary counts as duplicates exactly the rows stored before the rerun.

use crate::common;
use crate::jetstream_errors::{id_of, ids, insert_script, server_denying_orders_secret};
use common::spawned::Spawned;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::js::{assert_each_id_once, create_stream, header, msg_id_counts, read_all, stored};
use common::{
    assert_fails_with, confirmed_in_error, inserted_rows, run_script_timed, stderr, stdout,
    summary_count,
};
use nats_testkit::NatsServer;

/// Checks that the messages that came in atomic batches hold each batch whole: per
/// `Nats-Batch-Id`, sequences 1..=n once each, n (and only n) carries
/// `Nats-Batch-Commit`, and the rows follow one another. A batch missing its head, its
/// middle or its tail (commit included) fails.
/// Returns the ids of each batch, by batch id.
fn assert_whole_batches(messages: &[jetstream::Message]) -> BTreeMap<String, Vec<u64>> {
    let mut batches: BTreeMap<String, Vec<(u64, u64, bool)>> = BTreeMap::new();
    for m in messages {
        let Some(batch) = header(m, "Nats-Batch-Id") else {
            continue;
        };
        let sequence: u64 = header(m, "Nats-Batch-Sequence")
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("batch {batch}: a message without a sequence"));
        let commit = header(m, "Nats-Batch-Commit").is_some();
        batches
            .entry(batch)
            .or_default()
            .push((sequence, id_of(m), commit));
    }
    batches
        .into_iter()
        .map(|(batch, mut members)| {
            members.sort_unstable();
            let sequences: Vec<u64> = members.iter().map(|m| m.0).collect();
            let last = sequences[sequences.len() - 1];
            let missing: Vec<u64> = (1..=last)
                .filter(|s| sequences.binary_search(s).is_err())
                .collect();
            assert!(
                missing.is_empty() && sequences.len() as u64 == last,
                "batch {batch} is not whole: {} messages up to sequence {last}, missing \
                 sequences (first 10) {:?}",
                sequences.len(),
                &missing[..missing.len().min(10)]
            );
            let commits: Vec<u64> = members.iter().filter(|m| m.2).map(|m| m.0).collect();
            assert_eq!(
                commits,
                vec![members.len() as u64],
                "batch {batch}: only its last message commits"
            );
            let ids: Vec<u64> = members.iter().map(|m| m.1).collect();
            assert!(
                ids.windows(2).all(|w| w[1] == w[0] + 1),
                "batch {batch} holds rows that do not follow one another: {:?}..",
                &ids[..ids.len().min(10)]
            );
            (batch, ids)
        })
        .collect()
}

#[tokio::test]
async fn exactly_once_commits_whole_batches_across_a_crash_and_a_rerun_completes_without_duplicates()
 {
    const ROWS: u64 = 60_000;
    const BATCH: u64 = 500;
    let mut server = NatsServer::start();
    let url = server.url();
    let client = nats_testkit::connect(&url).await;
    create_stream(&client, "EXACT", &["exact.>"], |config| {
        config.allow_atomic_publish = true;
    })
    .await;
    drop(client);

    // datagen paces the rows (30000/s: two seconds in all), so the kill lands mid-run.
    // confirm_timeout 1s + retry_timeout 2s: the statement notices the outage within at
    // most 2 x 1s (a send, then an ack; a lost connection much sooner) and gives up 2s
    // later, while the server is still down, after trying to connect again a few times.
    let script = |timeouts: &str| {
        format!(
            "CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen', rows_per_second = '30000', \
             row_limit = '{ROWS}');\n{}",
            insert_script(
                &url,
                "SELECT id FROM gen",
                &format!(
                    "subject = 'exact.rows', stream = 'EXACT', msg_id_field = 'id', \
                     delivery = 'exactly_once', atomic_batch_size = '{BATCH}'{timeouts}"
                ),
            )
        )
    };

    // Run 1: SIGKILL the server once a fifth of the rows is stored, keep it down 5 s.
    let first = Spawned::start(&script(", confirm_timeout = '1s', retry_timeout = '2s'"));
    let watcher = nats_testkit::connect(&url).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored_now = stored(&watcher, "EXACT").await;
        if stored_now >= ROWS / 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {stored_now} rows stored after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(watcher);
    // A different moment of the commit cycle each run (a batch commits every ~17 ms):
    // between batches, while one is being sent, or after its commit but before its ack.
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_micros()
        % 20_000;
    tokio::time::sleep(Duration::from_micros(jitter.into())).await;
    server.kill();
    let killed = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    server.restart();
    let first = first.finish(Duration::from_secs(60)).await;
    let down_for = killed.elapsed();
    assert_fails_with(&first, &["gave up after retrying", "retry_timeout"]);
    let confirmed = confirmed_in_error(&stderr(&first));

    // What survived the crash: whole batches only, a prefix of the rows, each once, and
    // at least everything the statement had confirmed.
    let client = nats_testkit::connect(&url).await;
    let messages = read_all(&client, "EXACT").await;
    let before_rerun = messages.len() as u64;
    let counts = msg_id_counts(&messages);
    assert!(
        counts.values().all(|&n| n == 1),
        "a row stored twice after the crash"
    );
    let stored_ids: BTreeSet<u64> = ids(&messages).into_iter().collect();
    assert_eq!(
        stored_ids.iter().copied().collect::<Vec<_>>(),
        (0..before_rerun).collect::<Vec<_>>(),
        "the stream holds a prefix of the rows"
    );
    assert!(
        (ROWS / 5..ROWS).contains(&before_rerun),
        "{before_rerun} rows stored: the kill was not mid-run"
    );
    assert!(
        confirmed <= before_rerun,
        "{confirmed} rows confirmed but only {before_rerun} stored"
    );
    let batches = assert_whole_batches(&messages);
    let in_batches: u64 = batches.values().map(|ids| ids.len() as u64).sum();
    assert_eq!(
        in_batches, before_rerun,
        "every row of the first run was stored by an atomic batch"
    );
    // No batch crosses a multiple of atomic_batch_size.
    for (batch, ids) in &batches {
        let (first_id, last_id) = (ids[0], ids[ids.len() - 1]);
        assert_eq!(
            first_id / BATCH,
            last_id / BATCH,
            "batch {batch} ({first_id}..={last_id}) crosses a multiple of {BATCH}"
        );
    }

    // Run 2: the same rows and batches, server up. Batches committed before are refused
    // as a whole (10201) and sent one by one, so the stream drops each as a duplicate.
    // The default timeouts: with 1 s, an ack slow on a loaded machine made the rerun
    // resend a batch it had committed itself, counting its rows as duplicates too.
    let started = Instant::now();
    let second = Spawned::start(&script(""))
        .finish(Duration::from_secs(60))
        .await;
    let rerun_took = started.elapsed();
    assert!(second.status.success(), "{}", stderr(&second));
    let out = stdout(&second);
    assert_eq!(inserted_rows(&out, "out"), ROWS);
    assert_eq!(
        summary_count(&out, "out", "duplicates"),
        Some(before_rerun),
        "the rerun counts as duplicates exactly the rows stored before it"
    );
    let messages = read_all(&client, "EXACT").await;
    assert_each_id_once(&messages, ROWS);
    assert_eq!(
        ids(&messages),
        (0..ROWS).collect::<Vec<_>>(),
        "the stream holds the rows in order"
    );
    // The rows new in the rerun came in whole atomic batches too. Only a batch that
    // straddles the end of what was stored (boundaries that moved) goes one by one.
    let batches = assert_whole_batches(&messages);
    let in_batches: u64 = batches.values().map(|ids| ids.len() as u64).sum();
    assert!(
        ROWS - in_batches < BATCH,
        "{} rows were stored outside atomic batches",
        ROWS - in_batches
    );
    eprintln!(
        "stored {before_rerun} rows before the rerun ({confirmed} confirmed); \
         server down {down_for:?}; rerun took {rerun_took:?}"
    );
}

/// An outage longer than `retry_timeout` in exactly-once mode: the statement gives up in
/// time instead of waiting on a client that cannot send.
#[tokio::test]
async fn exactly_once_honours_retry_timeout_when_the_server_stays_down() {
    let mut server = NatsServer::start();
    let url = server.url();
    let client = nats_testkit::connect(&url).await;
    create_stream(&client, "EXACT", &["exact.>"], |config| {
        config.allow_atomic_publish = true;
    })
    .await;
    let script = format!(
        "CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen', rows_per_second = '20000', \
         row_limit = '200000');\n{}",
        insert_script(
            &url,
            "SELECT id FROM gen",
            "subject = 'exact.rows', stream = 'EXACT', msg_id_field = 'id', \
             delivery = 'exactly_once', atomic_batch_size = '500', \
             confirm_timeout = '1s', retry_timeout = '4s'",
        )
    );
    let running = Spawned::start(&script);
    while stored(&client, "EXACT").await < 5_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(client);
    server.kill();
    let killed = Instant::now();
    let output = running.finish(Duration::from_secs(60)).await;
    let took = killed.elapsed();
    assert_fails_with(&output, &["gave up after retrying", "retry_timeout"]);
    // retry_timeout, plus at most a send and an ack timeout to notice the outage, plus
    // slack for a loaded machine.
    assert!(
        took < Duration::from_secs(15),
        "gave up {took:?} after the kill"
    );
}

/// Exactly-once with a denied subject: the server drops the denied message of an atomic
/// batch with an `-ERR`, and the commit fails as "incomplete" (10176). That is permanent
/// here: the statement fails at once naming the violation, and the batch's dead letter,
/// sent before the commit, is stored once (it carries a deterministic message id).
#[tokio::test]
async fn exactly_once_with_a_denied_subject_fails_at_once_and_stores_its_dead_letter_once() {
    let (server, client) = server_denying_orders_secret().await;
    create_stream(&client, "ORDERS", &["orders.>"], |c| {
        c.allow_atomic_publish = true
    })
    .await;
    create_stream(&client, "DEAD", &["dead.>"], |_| {}).await;

    // Row 5 has no subject (a dead letter); row 8 goes to a denied subject.
    let select = "SELECT value AS id, CASE WHEN value = 5 THEN NULL \
                  WHEN value = 8 THEN 'orders.secret.8' ELSE 'orders.ok' END AS subject \
                  FROM generate_series(1, 10)";
    let script = insert_script(
        &server.url(),
        select,
        "username = 'publisher', password = 'publisher-pw', subject_field = 'subject', \
         stream = 'ORDERS', delivery = 'exactly_once', msg_id_field = 'id', \
         on_error = 'dead_letter', dead_letter_subject = 'dead.orders', retry_timeout = '20s'",
    );
    let (output, elapsed) = run_script_timed(&script, &[]);
    assert_fails_with(&output, &["Permissions Violation", "orders.secret.8"]);
    let err = stderr(&output);
    assert!(!err.contains("; retrying"), "not retried:\n{err}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    assert_eq!(confirmed_in_error(&err), 0, "{err}");
    assert_eq!(
        stored(&client, "ORDERS").await,
        0,
        "the batch is all or nothing"
    );
    assert_eq!(stored(&client, "DEAD").await, 1, "the dead letter, once");
}
