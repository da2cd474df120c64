//! JetStream mode when the server says no, end to end against real nats-server processes.
//! Every check reads back what the stream stored with a real consumer.
//!
//! - A publish permission violation (reported only as an asynchronous `-ERR`) fails the
//!   statement at once, naming the violation, instead of being retried forever.
//! - A stream that is full with `discard = new` is a transient condition: retried with
//!   logged warnings until `retry_timeout`, then reported naming the full stream; the
//!   stream keeps exactly what fitted.
//! - Rows over the stream's `max_msg_size` follow `on_error`: `fail` names the row and the
//!   limit and sends nothing; `skip` stores every other row and counts the skipped ones;
//!   `dead_letter` stores each oversize row in the dead-letter stream (with its body when
//!   that stream's own limit allows it), with the reason, original subject and row number
//!   as headers.
//! - `delivery = 'exactly_once'` across a SIGKILL of the server: the statement gives up
//!   after `retry_timeout`, and what the stream holds is a prefix of the rows made of
//!   whole atomic batches only (no batch partly stored, no row twice, nothing confirmed
//!   lost); rerunning the same statement completes it, every row exactly once, and the
//!   summary counts as duplicates exactly the rows stored before the rerun.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, stream::DiscardPolicy};
use common::js::{assert_each_id_once, create_stream, header, msg_id_counts, read_all, stored};
use common::{
    assert_fails_with, confirmed_in_error, inserted_rows, run_script, run_script_timed, stderr,
    stdout, summary_count,
};
use nats_testkit::{NatsServer, payload_json};

/// The `id` field of a stored message's JSON payload.
fn id_of(message: &jetstream::Message) -> u64 {
    payload_json(message)["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no id in {:?}", message.payload))
}

/// The ids the messages carry, in stream order.
fn ids(messages: &[jetstream::Message]) -> Vec<u64> {
    messages.iter().map(id_of).collect()
}

/// `INSERT INTO out <select> WITH (connector = 'nats_sink', servers = <url>, <options>)`.
fn insert_script(url: &str, select: &str, options: &str) -> String {
    format!(
        "INSERT INTO out {select} WITH (connector = 'nats_sink', servers = '{url}', {options});"
    )
}

/// A server where "publisher" may publish anywhere but under `orders.secret.` (the
/// JetStream API and its own inboxes stay allowed, so the start checks and the acks
/// work), and a client of its "admin".
async fn server_denying_orders_secret() -> (NatsServer, async_nats::Client) {
    let server = NatsServer::builder()
        .config(
            r#"authorization {
  users = [
    { user: "admin", password: "admin-pw" }
    { user: "publisher", password: "publisher-pw", permissions: { publish: { deny: ["orders.secret.>"] } } }
  ]
}"#,
        )
        .start();
    let client = nats_testkit::connect_with_user(&server.url(), "admin", "admin-pw").await;
    (server, client)
}

#[tokio::test]
async fn publish_permission_denied_fails_fast_naming_the_violation() {
    let (server, client) = server_denying_orders_secret().await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;

    // Row 1001 (id 1000) goes to a subject the user may not publish to.
    let denied_id = 1000u64;
    let select = format!(
        "SELECT value AS id, CASE WHEN value = {denied_id} THEN 'orders.secret.1000' \
         ELSE concat('orders.', CAST(value % 4 AS VARCHAR)) END AS subject \
         FROM generate_series(0, 1999)"
    );
    let script = insert_script(
        &server.url(),
        &select,
        "username = 'publisher', password = 'publisher-pw', subject_field = 'subject', \
         stream = 'ORDERS', msg_id_field = 'id'",
    );
    let (output, elapsed) = run_script_timed(&script, &[]);

    assert_fails_with(
        &output,
        &[
            "the server refused a publish",
            "Permissions Violation",
            "orders.secret.1000",
        ],
    );
    // Retrying forever (no retry_timeout) would never end; a refusal is not retried.
    assert!(
        elapsed < Duration::from_secs(15),
        "took {elapsed:?} to fail on a permissions violation"
    );
    let err = stderr(&output);
    assert!(
        !err.contains("; retrying"),
        "a permissions violation is not retried:\n{err}"
    );

    // Nothing reached the denied subject; every row before it is stored, once, and the
    // error counts exactly what the stream holds.
    let confirmed = confirmed_in_error(&err);
    let messages = read_all(&client, "ORDERS").await;
    assert!(
        messages
            .iter()
            .all(|m| !m.subject.starts_with("orders.secret.")),
        "a message on the denied subject was stored"
    );
    let stored_ids: BTreeSet<u64> = ids(&messages).into_iter().collect();
    assert_eq!(stored_ids.len(), messages.len(), "no row stored twice");
    assert!(!stored_ids.contains(&denied_id));
    // The error's count is what the stream holds: rows after the denied one that were in
    // flight and stored are counted too.
    assert_eq!(messages.len() as u64, confirmed, "{err}");
    let missing: Vec<u64> = (0..denied_id)
        .filter(|id| !stored_ids.contains(id))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "rows before the denied one not stored (first 10): {missing:?}"
    );
}

#[tokio::test]
async fn full_stream_with_discard_new_is_retried_then_reported() {
    const MAX_MSGS: u64 = 100;
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "FULL", &["full.>"], |config| {
        config.max_messages = MAX_MSGS as i64;
        config.discard = DiscardPolicy::New;
    })
    .await;

    let select = "SELECT value AS id, concat('full.', CAST(value % 4 AS VARCHAR)) AS subject \
                  FROM generate_series(0, 499)";
    let script = insert_script(
        &server.url(),
        select,
        "subject_field = 'subject', stream = 'FULL', msg_id_field = 'id', retry_timeout = '3s'",
    );
    let (output, elapsed) = run_script_timed(&script, &[]);

    assert_fails_with(
        &output,
        &[
            "gave up after retrying",
            "retry_timeout",
            "stream 'FULL'",
            "full",
            &format!("{MAX_MSGS} rows were published and confirmed"),
        ],
    );
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(15),
        "took {elapsed:?} with retry_timeout = 3s"
    );
    // Each retry is logged as a warning naming the full stream.
    let err = stderr(&output);
    let warnings = err
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("is full") && l.contains("retrying"))
        .count();
    assert!(
        warnings >= 2,
        "expected several retry warnings, got {warnings}:\n{err}"
    );

    // The stream holds exactly what fitted: the first rows, each once.
    let messages = read_all(&client, "FULL").await;
    assert_each_id_once(&messages, MAX_MSGS);
    assert_eq!(stored(&client, "FULL").await, MAX_MSGS);
}

/// Rows 1..=20; rows 7 and 13 carry a body far over the streams' 300-byte limit.
fn oversize_rows(prefix: &str) -> String {
    format!(
        "SELECT value AS id, concat('{prefix}.orders.', CAST(value AS VARCHAR)) AS subject, \
         repeat('x', CAST(CASE WHEN value IN (7, 13) THEN 400 ELSE 10 END AS INT)) AS body \
         FROM generate_series(1, 20)"
    )
}

const OVERSIZE: [u64; 2] = [7, 13];
const MAX_MSG_SIZE: i32 = 300;

#[tokio::test]
async fn oversize_rows_under_each_on_error_policy() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    for (stream, subjects) in [("FAIL", "fail.>"), ("SKIP", "skip.>"), ("DEAD", "dead.>")] {
        create_stream(&client, stream, &[subjects], |config| {
            config.max_message_size = MAX_MSG_SIZE;
        })
        .await;
    }
    create_stream(&client, "REJECTS", &["rejects.>"], |_| {}).await;
    let insert = |prefix: &str, stream: &str, on_error: &str| {
        run_script(
            &insert_script(
                &server.url(),
                &oversize_rows(prefix),
                &format!(
                    "subject_field = 'subject', stream = '{stream}', msg_id_field = 'id', {on_error}"
                ),
            ),
            &[],
        )
    };
    let others: Vec<u64> = (1..=20).filter(|id| !OVERSIZE.contains(id)).collect();

    // fail (the default): the first oversize row is named with the limit; its batch,
    // which is all the rows here, is not sent.
    let failed = insert("fail", "FAIL", "on_error = 'fail'");
    assert_fails_with(
        &failed,
        &[
            &format!("row {}:", OVERSIZE[0]),
            &format!("over the stream's max_msg_size of {MAX_MSG_SIZE} bytes"),
            "0 earlier rows were published",
        ],
    );
    assert_eq!(stored(&client, "FAIL").await, 0);

    // skip: every other row is stored, once and in order; the summary counts both.
    let skipped = insert("skip", "SKIP", "on_error = 'skip'");
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    let out = stdout(&skipped);
    assert_eq!(inserted_rows(&out, "out"), others.len() as u64);
    assert_eq!(
        summary_count(&out, "out", "skipped"),
        Some(OVERSIZE.len() as u64)
    );
    assert_eq!(summary_count(&out, "out", "dead-lettered"), Some(0));
    for row in OVERSIZE {
        assert!(
            stderr(&skipped).contains(&format!("row={row}")),
            "each skipped row is logged:\n{}",
            stderr(&skipped)
        );
    }
    assert_eq!(ids(&read_all(&client, "SKIP").await), others);

    // dead_letter: the oversize rows go to the dead-letter subject (captured by REJECTS)
    // with an empty body and headers saying why, where to and which row.
    let dead = insert(
        "dead",
        "DEAD",
        "on_error = 'dead_letter', dead_letter_subject = 'rejects.rows'",
    );
    assert!(dead.status.success(), "{}", stderr(&dead));
    let out = stdout(&dead);
    assert_eq!(inserted_rows(&out, "out"), others.len() as u64);
    assert_eq!(
        summary_count(&out, "out", "dead-lettered"),
        Some(OVERSIZE.len() as u64)
    );
    assert_eq!(summary_count(&out, "out", "skipped"), Some(0));
    assert_eq!(ids(&read_all(&client, "DEAD").await), others);

    let letters = read_all(&client, "REJECTS").await;
    assert_eq!(
        letters.len(),
        OVERSIZE.len(),
        "one dead letter per oversize row"
    );
    for (letter, row) in letters.iter().zip(OVERSIZE) {
        assert_eq!(letter.subject.as_str(), "rejects.rows");
        // The dead-letter stream has no size limit of its own: the row's body goes along.
        assert!(
            !letter.payload.is_empty(),
            "row {row}: the dead letter carries the row's body when its stream takes it"
        );
        let reason = header(letter, "StreamSQL-Error").expect("a reason header");
        assert!(
            reason.contains("max_msg_size") && reason.contains(&MAX_MSG_SIZE.to_string()),
            "row {row}: {reason}"
        );
        assert_eq!(
            header(letter, "StreamSQL-Subject").as_deref(),
            Some(format!("dead.orders.{row}").as_str())
        );
        assert_eq!(
            header(letter, "StreamSQL-Row").as_deref(),
            Some(row.to_string().as_str())
        );
    }
}

/// A `streamsql run -` process whose output goes to files, so a test can watch the
/// stream, kill the server and wait with a deadline while it runs.
struct Running {
    child: Child,
    _dir: tempfile::TempDir,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Running {
    fn start(script: &str) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let mut child = common::streamsql()
            .args(["run", "-"])
            .stdin(Stdio::piped())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn streamsql");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(script.as_bytes()).unwrap();
        drop(stdin);
        Running {
            child,
            _dir: dir,
            stdout,
            stderr,
        }
    }

    /// Waits until the process exits; kills it and panics after `limit`.
    async fn finish(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "streamsql still ran after {limit:?}; killed it. stderr:\n{}",
                    String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default())
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Output {
            status,
            stdout: std::fs::read(&self.stdout).unwrap(),
            stderr: std::fs::read(&self.stderr).unwrap(),
        }
    }
}

impl Drop for Running {
    /// A test that fails while the statement runs leaves no process behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

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
    let script = format!(
        "CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen', rows_per_second = '30000', \
         row_limit = '{ROWS}');\n{}",
        insert_script(
            &url,
            "SELECT id FROM gen",
            &format!(
                "subject = 'exact.rows', stream = 'EXACT', msg_id_field = 'id', \
                 delivery = 'exactly_once', atomic_batch_size = '{BATCH}', \
                 confirm_timeout = '1s', retry_timeout = '2s'"
            ),
        )
    );

    // Run 1: SIGKILL the server once a fifth of the rows is stored, keep it down 5 s.
    let first = Running::start(&script);
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

    // Run 2: the same statement, server up. Batches committed before are refused as a
    // whole (10201) and sent one by one, so the stream drops each as a duplicate.
    let started = Instant::now();
    let second = Running::start(&script)
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
    let running = Running::start(&script);
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

/// A server without JetStream, watched by a subscriber on `>` (which makes JetStream API
/// requests go unanswered instead of failing with "no responders"): the sink reads the
/// server's INFO and fails at once saying how to enable JetStream.
#[tokio::test]
async fn jetstream_disabled_fails_at_once_even_with_a_subscriber_on_everything() {
    let server = NatsServer::builder().jetstream(false).start();
    let watcher = nats_testkit::connect(&server.url()).await;
    let _everything = watcher.subscribe(">").await.unwrap();
    watcher.flush().await.unwrap();
    let script = insert_script(
        &server.url(),
        "SELECT 1 AS id",
        "subject = 'orders.1', stream = 'ORDERS'",
    );
    let (output, elapsed) = run_script_timed(&script, &[]);
    assert_fails_with(
        &output,
        &["JetStream is not enabled", "start nats-server with -js"],
    );
    assert!(!stderr(&output).contains("retrying"), "{}", stderr(&output));
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

/// A dead letter is checked against the dead-letter stream's own limit: a row without a
/// subject whose body fits the rows' stream but not the smaller dead-letter stream is
/// dead-lettered without its body, and the statement goes on.
#[tokio::test]
async fn a_dead_letter_is_sized_for_the_dead_letter_stream() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ROWS", &["rows.>"], |_| {}).await;
    create_stream(&client, "DEAD", &["dead.>"], |c| c.max_message_size = 300).await;
    let select = "SELECT value AS id, repeat('x', 500) AS body, \
                  CASE WHEN value = 2 THEN NULL ELSE 'rows.ok' END AS subject \
                  FROM generate_series(1, 3)";
    let script = insert_script(
        &server.url(),
        select,
        "subject_field = 'subject', stream = 'ROWS', on_error = 'dead_letter', \
         dead_letter_subject = 'dead.rows'",
    );
    let output = run_script(&script, &[]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stored(&client, "ROWS").await, 2);
    let dead = read_all(&client, "DEAD").await;
    assert_eq!(dead.len(), 1);
    assert!(dead[0].payload.is_empty(), "the body did not fit: left out");
    assert!(header(&dead[0], "StreamSQL-Error").is_some());
}

/// The stream deleted while rows are in flight: acks fail for good. The statement fails
/// naming the deletion, with a clean exit (no panic from settling the acks still in
/// flight), and its count of confirmed rows is what the stream held when it went.
#[tokio::test]
async fn a_stream_deleted_mid_statement_fails_cleanly() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "GONE", &["gone.>"], |_| {}).await;
    let select = "SELECT value AS id, 'gone.rows' AS subject FROM generate_series(1, 2000000)";
    let script = insert_script(
        &server.url(),
        select,
        "subject_field = 'subject', stream = 'GONE', confirm_timeout = '2s'",
    );
    let running = Running::start(&script);
    let js = jetstream::new(client.clone());
    // Delete once rows are being stored.
    while stored(&client, "GONE").await < 1000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    js.delete_stream("GONE").await.unwrap();
    let output = running.finish(Duration::from_secs(60)).await;
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_fails_with(&output, &["stream 'GONE' was deleted during the statement"]);
}
