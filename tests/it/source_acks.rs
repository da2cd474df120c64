//! `nats_source` with a durable consumer: when its messages are acknowledged, and the
//! configurations that are refused (a missing stream, a conflicting consumer, two reads
//! of one consumer in a statement, too small a max_ack_pending, a wrong password), and
//! a bounded read that outlasts its ack_wait. Continuous reads: `source_follow.rs`.

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use nats_testkit::NatsServer;

use crate::common;
use common::js::{create_stream, stored};
use common::link::Link;
use common::source::{
    POISONED, consumer_counts, consumer_info, consumer_state, publish, publish_pipelined, run,
    source, table,
};

#[tokio::test]
async fn a_missing_stream_a_conflicting_consumer_and_a_second_reader_are_refused() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;

    let missing = run(&format!(
        "{} SELECT * FROM orders_in;",
        source(&server.url(), "order_id BIGINT", "stop_at = 'end'")
            .replace("stream = 'ORDERS'", "stream = 'NOPE'")
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        missing.contains("JetStream stream 'NOPE': not found: create the stream first"),
        "{missing}"
    );

    jetstream::new(client.clone())
        .get_stream("ORDERS")
        .await
        .unwrap()
        .create_consumer(consumer::pull::Config {
            durable_name: Some("etl".into()),
            filter_subject: "orders.eu".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let conflict = run(&format!(
        "{} SELECT * FROM orders_in;",
        source(
            &server.url(),
            "order_id BIGINT",
            "stop_at = 'end', consumer = 'etl', filter_subjects = 'orders.us'"
        )
    ))
    .await
    .unwrap_err()
    .to_string();
    for needle in [
        "option 'filter_subjects'",
        "consumer 'etl' of stream 'ORDERS' exists with filter_subjects 'orders.eu'",
        "asks for 'orders.us'",
    ] {
        assert!(conflict.contains(needle), "{needle:?} not in: {conflict}");
    }

    // Read twice in one statement, a durable consumer would split its messages.
    publish(&client, &POISONED[..1]).await;
    let twice = run(&format!(
        "{} SELECT count(*) FROM orders_in a JOIN orders_in b ON a.order_id = b.order_id;",
        source(
            &server.url(),
            "order_id BIGINT",
            "stop_at = 'end', consumer = 'etl', filter_subjects = 'orders.eu'"
        )
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        twice.contains("consumer 'etl' of stream 'ORDERS' is already being read here"),
        "{twice}"
    );

    // The connection is the sink's, checked the same way.
    let guarded = NatsServer::builder().user("reader", "the-password").start();
    let wrong = run(&format!(
        "CREATE CONNECTION c FROM nats_sink WITH (servers = '{}', username = 'reader', password = 'not-the-password');
         CREATE TABLE t (order_id BIGINT)
         WITH (connector = 'nats_source', connection = 'c', stream = 'ORDERS', stop_at = 'end');
         SELECT * FROM t;",
        guarded.url()
    ))
    .await
    .unwrap_err()
    .to_string();
    assert!(
        wrong.contains("cannot connect to NATS") && wrong.contains("'reader'"),
        "{wrong}"
    );
    assert!(!wrong.contains("not-the-password"), "{wrong}");
}

#[tokio::test]
async fn a_durable_consumer_is_acknowledged_only_after_its_statement_succeeded() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    publish(&client, POISONED).await;
    let select = "SELECT count(*) AS n FROM orders_in;";
    let options = "stop_at = 'end', consumer = 'etl'";

    // The poison message fails the statement: nothing is acknowledged.
    let failed = run(&format!(
        "{} {select}",
        source(&server.url(), "order_id BIGINT", options)
    ))
    .await;
    assert!(failed.is_err());
    assert_eq!(consumer_state(&client, "etl").await.0, 0);

    // Read again, skipping it: every message is acknowledged once the count is in.
    let counted = run(&format!(
        "{} {select}",
        source(
            &server.url(),
            "order_id BIGINT",
            &format!("{options}, on_error = 'skip'")
        )
    ))
    .await
    .unwrap();
    assert!(table(&counted).contains("| 2 |"), "{}", table(&counted));
    assert_eq!(consumer_state(&client, "etl").await, (4, 0));

    // Nothing is left for the consumer.
    let again = run(&format!(
        "{} {select}",
        source(&server.url(), "order_id BIGINT", options)
    ))
    .await
    .unwrap();
    assert!(table(&again).contains("| 0 |"), "{}", table(&again));
}

#[tokio::test]
async fn a_row_the_sink_refuses_acknowledges_nothing_and_a_bounded_read_needs_room_for_its_acks() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    publish(&client, &POISONED[..1]).await;
    publish(&client, &POISONED[3..]).await;

    // The sink refuses the second row (a subject with a space) after the source read
    // both: the INSERT fails, and the consumer is not acknowledged.
    let insert = format!(
        "{} INSERT INTO out SELECT order_id, \
         CASE WHEN order_id = 4 THEN 'out.bad subject' ELSE 'out.ok' END AS subject \
         FROM orders_in \
         WITH (connector = 'nats_sink', connection = 'c', subject_field = 'subject');",
        source(
            &server.url(),
            "order_id BIGINT",
            "stop_at = 'end', consumer = 'etl'"
        )
    );
    let err = run(&insert).await.unwrap_err().to_string();
    assert!(err.contains("row 2"), "{err}");
    assert_eq!(consumer_state(&client, "etl").await.0, 0);

    // A bounded read acknowledges at its end: a consumer that lets fewer messages wait
    // for their ack than the read needs is refused before anything is read.
    let small = run(&format!(
        "{} SELECT * FROM orders_in;",
        source(
            &server.url(),
            "order_id BIGINT",
            "stop_at = 'end', consumer = 'small', max_ack_pending = '1'"
        )
    ))
    .await
    .unwrap_err()
    .to_string();
    for needle in [
        "option 'max_ack_pending'",
        "2 messages to read",
        "at least 2",
    ] {
        assert!(small.contains(needle), "{needle:?} not in: {small}");
    }
}

/// A bounded read holds every message until its statement's output is confirmed; a
/// slow sink makes that take longer than twice the consumer's ack_wait. The read tells
/// the server the messages are still in progress, so none is delivered again.
#[tokio::test]
async fn a_bounded_read_longer_than_ack_wait_gets_no_message_delivered_twice() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&client, "BILLING", &["billing.>"], |_| {}).await;
    let payloads = (0..200).map(|i| format!(r#"{{"order_id": {i}}}"#));
    publish_pipelined(&client, "orders.eu", payloads).await;
    // About 70 bytes per publish: some 5 s for the 200 rows. Few in flight, so each is
    // confirmed well within confirm_timeout.
    let slow = Link::to(&server.url(), Some(3000)).await;
    let script = format!(
        "{}
         CREATE CONNECTION slow FROM nats_sink WITH (servers = '{}');
         INSERT INTO billing SELECT order_id FROM orders_in
         WITH (connector = 'nats_sink', connection = 'slow', stream = 'BILLING',
               subject = 'billing.eu', max_in_flight = '10');",
        source(
            &server.url(),
            "order_id BIGINT",
            "stop_at = 'end', consumer = 'etl', ack_wait = '1s'"
        ),
        slow.url()
    );
    let started = Instant::now();
    run(&script).await.unwrap();
    let took = started.elapsed();
    assert!(
        took > Duration::from_millis(2500),
        "the statement took {took:?}, not longer than twice its ack_wait"
    );
    assert_eq!(
        consumer_counts(&client, "etl").await,
        (200, 0, 0, 0),
        "each message delivered once and acknowledged at the end"
    );
    assert_eq!(stored(&client, "BILLING").await, 200);
}

/// A bounded read feeding an aggregate, stopped by Ctrl-C while the sink is still
/// writing the groups: the read had reached its end, but most groups never reached the
/// sink, so none of the messages is acknowledged; all are handed back for a rerun.
#[tokio::test]
async fn a_bounded_read_whose_output_a_stop_cut_short_acknowledges_nothing() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&client, "BILLING", &["billing.>"], |_| {}).await;
    let payloads = (0..2000).map(|i| format!(r#"{{"order_id": {i}}}"#));
    publish_pipelined(&client, "orders.eu", payloads).await;
    // Some 20 rows a second reach the stream: the stop comes mid-output. Batches of 50
    // rows, so that the sink confirms what it took within the grace period.
    let slow = Link::to(&server.url(), Some(1500)).await;
    let script = format!(
        "SET datafusion.execution.batch_size = 50;
         {}
         CREATE CONNECTION slow FROM nats_sink WITH (servers = '{}');
         INSERT INTO billing SELECT order_id, count(*) AS n FROM orders_in GROUP BY order_id
         WITH (connector = 'nats_sink', connection = 'slow', stream = 'BILLING',
               subject = 'billing.eu', max_in_flight = '10');",
        source(
            &server.url(),
            "order_id BIGINT",
            "stop_at = 'end', consumer = 'etl', max_ack_pending = '5000'"
        ),
        slow.url()
    );
    let run = common::running::Running::start(&["--stop-grace", "30"], &script);
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored(&client, "BILLING").await < 20 {
        assert!(Instant::now() < deadline, "no group reached BILLING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.send_interrupt();
    // Waited for off the runtime, which drives the link.
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || run.wait_for_end())
        .await
        .unwrap();
    // 3: the statement did not read its input to the end.
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stdout.contains("confirmed before shutdown; the input was not read to its end"),
        "{stdout}"
    );
    let written = stored(&client, "BILLING").await;
    assert!(
        written < 2000,
        "the stop came after the last group: {written}"
    );
    let info = consumer_info(&client, "etl").await;
    assert_eq!(
        info.ack_floor.stream_sequence, 0,
        "acknowledged though {written} of 2000 groups were written"
    );
    // Handed back: delivered again at once, not after the 30 s ack_wait.
    let etl: consumer::PullConsumer = jetstream::new(client.clone())
        .get_stream("ORDERS")
        .await
        .unwrap()
        .get_consumer("etl")
        .await
        .unwrap();
    let again = etl
        .fetch()
        .max_messages(2000)
        .expires(Duration::from_secs(3))
        .messages()
        .await
        .unwrap()
        .count()
        .await;
    assert_eq!(again, 2000, "not handed back");
}

/// A query's messages are acknowledged once its result is printed: `streamsql run` whose
/// stdout is closed before the result comes (a pager quit early) cannot print it, fails,
/// and acknowledges nothing; the same query printed acknowledges every message.
#[tokio::test]
async fn a_query_acknowledges_its_messages_only_once_its_result_is_printed() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    publish(&client, &POISONED[..1]).await;
    publish(&client, &POISONED[3..]).await;
    let script = |url: &str| {
        format!(
            "{} SELECT order_id FROM orders_in ORDER BY order_id;",
            source(url, "order_id BIGINT", "stop_at = 'end', consumer = 'etl'")
        )
    };

    // The server's answers wait until stdout is closed: the SELECT's result comes after.
    let link = Link::to(&server.url(), None).await;
    link.hold_replies();
    let mut closed = common::spawn_with_args(&["run", "-"], &script(link.url()), &[]);
    let stdout = closed.stdout.take().unwrap();
    tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        while !lines.next().unwrap().unwrap().contains("orders_in") {}
    })
    .await
    .unwrap();
    link.release();
    let output = tokio::task::spawn_blocking(move || closed.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(stderr.contains("cannot write to stdout"), "{stderr}");
    assert_eq!(
        consumer_state(&client, "etl").await.0,
        0,
        "acknowledged unshown"
    );

    let printed = common::spawn_with_args(&["run", "-"], &script(&server.url()), &[]);
    let output = tokio::task::spawn_blocking(move || printed.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("| 1 ") && stdout.contains("| 4 "),
        "{stdout}"
    );
    assert_eq!(consumer_state(&client, "etl").await, (2, 0));
}

/// Dead letters to a subject a stream captures are stored before their messages count as
/// read: a stream that refuses one (full, discard new) fails the read naming
/// `dead_letter_subject`, and nothing is acknowledged; with room, both are stored and
/// every message is acknowledged.
#[tokio::test]
async fn dead_letters_a_stream_keeps_are_stored_before_their_messages_are_acknowledged() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&client, "DLQ", &["dlq.>"], |c| {
        c.discard = jetstream::stream::DiscardPolicy::New;
        c.max_messages = 1;
    })
    .await;
    publish(&client, POISONED).await;
    let script = format!(
        "{} SELECT order_id FROM orders_in;",
        source(
            &server.url(),
            "order_id BIGINT",
            "stop_at = 'end', consumer = 'etl', on_error = 'dead_letter', \
             dead_letter_subject = 'dlq.orders'"
        )
    );

    // Room for one of the two dead letters.
    let err = run(&script).await.unwrap_err().to_string();
    for needle in ["dead_letter_subject", "dlq.orders", "stream 'DLQ'"] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    assert_eq!(consumer_state(&client, "etl").await.0, 0, "acknowledged");
    assert_eq!(stored(&client, "DLQ").await, 1);

    // With room: the first run handed its messages back, and the rerun reads them all.
    jetstream::new(client.clone())
        .delete_stream("DLQ")
        .await
        .unwrap();
    create_stream(&client, "DLQ", &["dlq.>"], |_| {}).await;
    run(&script).await.unwrap();
    assert_eq!(stored(&client, "DLQ").await, 2);
    assert_eq!(consumer_state(&client, "etl").await, (4, 0));
}
