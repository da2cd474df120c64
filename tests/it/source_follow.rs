//! A continuous `nats_source` read from a durable consumer into a `nats_sink`: each
//! message is acknowledged once the sink has its row confirmed, and not before; messages
//! a filter drops are acknowledged with the rest, so a selective filter does not stall
//! the consumer at `max_ack_pending`; a message waiting on a sink that does not answer
//! is kept from redelivery; a plan the source cannot follow is refused.

use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::jetstream::{self, consumer};
use nats_testkit::NatsServer;

use crate::common;
use common::js::{create_stream, read_all, stored};
use common::link::Link;
use common::running::Running;
use common::source::{consumer_counts, consumer_info, publish, run, source};

/// `order_id` 0.. to subjects `orders.eu`, as JSON.
fn orders(ids: std::ops::Range<u64>) -> Vec<(String, String)> {
    ids.map(|id| ("orders.eu".to_string(), format!(r#"{{"order_id": {id}}}"#)))
        .collect()
}

async fn publish_orders(client: &Client, ids: std::ops::Range<u64>) {
    let messages = orders(ids);
    let messages: Vec<(&str, &str)> = messages
        .iter()
        .map(|(s, p)| (s.as_str(), p.as_str()))
        .collect();
    publish(client, &messages).await;
}

/// Waits until `check` holds of the consumer `etl`, or fails with its last state.
async fn wait_for_consumer(client: &Client, what: &str, check: impl Fn(&consumer::Info) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = consumer_info(client, "etl").await;
        if check(&info) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: ack floor {}, ack pending {}, pending {}, redelivered {}",
            info.ack_floor.stream_sequence,
            info.num_ack_pending,
            info.num_pending,
            info.num_redelivered
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_stored(client: &Client, rows: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while stored(client, "BILLING").await < rows {
        assert!(Instant::now() < deadline, "BILLING never held {rows} rows");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_continuous_read_acknowledges_each_message_once_its_row_is_confirmed() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&client, "BILLING", &["billing.>"], |_| {}).await;
    // The sink's acks pass through a link the test can hold.
    let link = Link::to(&server.url(), None).await;
    let script = format!(
        "CREATE CONNECTION src FROM nats_sink WITH (servers = '{}');
         CREATE CONNECTION dst FROM nats_sink WITH (servers = '{}');
         CREATE TABLE orders_in (order_id BIGINT, _sequence BIGINT)
         WITH (connector = 'nats_source', connection = 'src', stream = 'ORDERS',
               consumer = 'etl', ack_wait = '2s', max_ack_pending = '20');
         CREATE TABLE billing (order_id BIGINT, id VARCHAR)
         WITH (connector = 'nats_sink', connection = 'dst', stream = 'BILLING',
               subject = 'billing.eu', msg_id_field = 'id', confirm_timeout = '60s');
         INSERT INTO billing SELECT order_id, concat('orders-', _sequence) AS id
         FROM orders_in WHERE order_id % 100 = 7;",
        server.url(),
        link.url()
    );
    let run = Running::start(&[], &script);

    // 3 of 300 messages pass the filter, and the consumer lets only 20 wait for their
    // acks: every one of the 300 is acknowledged all the same.
    publish_orders(&client, 0..300).await;
    wait_for_stored(&client, 3).await;
    wait_for_consumer(&client, "all 300 acknowledged", |info| {
        info.ack_floor.stream_sequence == 300 && info.num_ack_pending == 0
    })
    .await;

    // The stream stores the next row, but its ack does not come back: the message stays
    // unacknowledged, longer than twice its ack_wait, and is not delivered again.
    link.hold_replies();
    publish_orders(&client, 307..308).await;
    wait_for_stored(&client, 4).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let info = consumer_info(&client, "etl").await;
    assert_eq!(
        (
            info.ack_floor.stream_sequence,
            info.num_ack_pending,
            info.num_redelivered
        ),
        (300, 1, 0),
        "acknowledged before its row was confirmed, or delivered again"
    );

    // The ack comes: the message is acknowledged.
    link.release();
    wait_for_consumer(&client, "the 301st acknowledged", |info| {
        info.ack_floor.stream_sequence == 301 && info.num_ack_pending == 0
    })
    .await;
    let (stdout, _) = run.interrupt();
    assert!(stdout.contains("4 rows"), "{stdout}");
    let ids: Vec<String> = read_all(&client, "BILLING")
        .await
        .iter()
        .map(|m| common::js::header(m, "Nats-Msg-Id").unwrap())
        .collect();
    assert_eq!(
        ids,
        ["orders-8", "orders-108", "orders-208", "orders-301"],
        "each row once, in order"
    );
    let info = consumer_info(&client, "etl").await;
    assert_eq!(
        (info.num_ack_pending, info.num_pending, info.num_redelivered),
        (0, 0, 0)
    );
}

/// The sink's ack fails while its input is idle (the sink's stream is full), and the
/// source can hand out nothing more (`max_ack_pending = 1`): the sink retries there and
/// then, so once the stream has room the row is stored and the message acknowledged,
/// without waiting for a next message that cannot come.
#[tokio::test]
async fn a_sink_ack_that_fails_while_the_input_is_idle_is_retried_and_the_message_acknowledged() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&client, "BILLING", &["billing.>"], |c| {
        c.discard = jetstream::stream::DiscardPolicy::New;
        c.max_messages = 1;
    })
    .await;
    let js = jetstream::new(client.clone());
    js.publish("billing.eu", "earlier".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let script = format!(
        "CREATE CONNECTION c FROM nats_sink WITH (servers = '{}');
         CREATE TABLE orders_in (order_id BIGINT, _sequence BIGINT)
         WITH (connector = 'nats_source', connection = 'c', stream = 'ORDERS',
               consumer = 'etl', max_ack_pending = '1');
         CREATE TABLE billing (order_id BIGINT, id VARCHAR)
         WITH (connector = 'nats_sink', connection = 'c', stream = 'BILLING',
               subject = 'billing.eu', msg_id_field = 'id');
         INSERT INTO billing SELECT order_id, concat('orders-', _sequence) AS id
         FROM orders_in;",
        server.url()
    );
    let run = Running::start(&[], &script);
    publish_orders(&client, 0..1).await;
    // Refused while the stream is full: the message waits, unacknowledged.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let info = consumer_info(&client, "etl").await;
    assert_eq!(
        (info.ack_floor.stream_sequence, info.num_ack_pending),
        (0, 1)
    );
    assert_eq!(stored(&client, "BILLING").await, 1);

    js.get_stream("BILLING")
        .await
        .unwrap()
        .purge()
        .await
        .unwrap();
    wait_for_stored(&client, 1).await;
    wait_for_consumer(&client, "acknowledged once stored", |info| {
        info.ack_floor.stream_sequence == 1 && info.num_ack_pending == 0
    })
    .await;
    // The retry is over: the sink no longer shows as retrying.
    let status = common::http::get(&format!("{}/status.json", run.base())).ok("application/json");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["sinks"][0]["state"], "connected", "{status:#}");
    let (stdout, _) = run.interrupt();
    assert!(stdout.contains("1 row"), "{stdout}");
    let ids: Vec<String> = read_all(&client, "BILLING")
        .await
        .iter()
        .map(|m| common::js::header(m, "Nats-Msg-Id").unwrap())
        .collect();
    assert_eq!(ids, ["orders-1"]);
}

/// Ctrl-C while the sink still waits for the acks of rows it sent: the statement stops
/// reading, its sink confirms those rows within the grace period, and the messages
/// behind them are acknowledged on the way out; none is left to be delivered again.
#[tokio::test]
async fn a_graceful_stop_acknowledges_the_messages_whose_rows_it_confirmed() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&client, "BILLING", &["billing.>"], |_| {}).await;
    let link = Link::to(&server.url(), None).await;
    let script = format!(
        "CREATE CONNECTION src FROM nats_sink WITH (servers = '{}');
         CREATE CONNECTION dst FROM nats_sink WITH (servers = '{}');
         CREATE TABLE orders_in (order_id BIGINT, _sequence BIGINT)
         WITH (connector = 'nats_source', connection = 'src', stream = 'ORDERS',
               consumer = 'etl');
         CREATE TABLE billing (order_id BIGINT, id VARCHAR)
         WITH (connector = 'nats_sink', connection = 'dst', stream = 'BILLING',
               subject = 'billing.eu', msg_id_field = 'id', confirm_timeout = '60s');
         INSERT INTO billing SELECT order_id, concat('orders-', _sequence) AS id
         FROM orders_in;",
        server.url(),
        link.url()
    );
    let run = Running::start(&["--stop-grace", "30"], &script);
    // The first row goes through, so the sink is connected before its replies are held.
    publish_orders(&client, 0..1).await;
    wait_for_stored(&client, 1).await;
    wait_for_consumer(&client, "the first acknowledged", |info| {
        info.ack_floor.stream_sequence == 1
    })
    .await;
    link.hold_replies();
    publish_orders(&client, 1..50).await;
    wait_for_stored(&client, 50).await;
    let info = consumer_info(&client, "etl").await;
    assert_eq!(
        (info.ack_floor.stream_sequence, info.num_ack_pending),
        (1, 49),
        "acknowledged before the rows were confirmed"
    );

    run.send_interrupt();
    tokio::time::sleep(Duration::from_secs(1)).await;
    link.release();
    // Waited for off the runtime, which drives the link.
    let (stdout, _) = tokio::task::spawn_blocking(move || run.wait_for_exit())
        .await
        .unwrap();
    assert!(
        stdout.contains("stopped on signal; 50 rows confirmed before shutdown"),
        "{stdout}"
    );
    assert_eq!(
        consumer_counts(&client, "etl").await,
        (50, 0, 0, 0),
        "every message acknowledged once its row was confirmed"
    );
    assert_eq!(stored(&client, "BILLING").await, 50);
}

/// The sink stalls (its acks held) for longer than twice the consumer's ack_wait while
/// the client holds messages it fetched ahead: the server delivers those again, and the
/// read makes one row of each, not two (the sink has no message ids to drop copies).
#[tokio::test]
async fn messages_delivered_again_while_the_sink_stalls_make_one_row_each() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&client, "BILLING", &["billing.>"], |_| {}).await;
    let link = Link::to(&server.url(), None).await;
    let script = format!(
        "CREATE CONNECTION src FROM nats_sink WITH (servers = '{}');
         CREATE CONNECTION dst FROM nats_sink WITH (servers = '{}');
         CREATE TABLE orders_in (order_id BIGINT)
         WITH (connector = 'nats_source', connection = 'src', stream = 'ORDERS',
               consumer = 'etl', ack_wait = '1s');
         CREATE TABLE billing (order_id BIGINT)
         WITH (connector = 'nats_sink', connection = 'dst', stream = 'BILLING',
               subject = 'billing.eu', max_in_flight = '10', confirm_timeout = '60s');
         INSERT INTO billing SELECT order_id FROM orders_in;",
        server.url(),
        link.url()
    );
    let run = Running::start(&[], &script);
    publish_orders(&client, 0..1).await;
    wait_for_stored(&client, 1).await;
    link.hold_replies();
    publish_orders(&client, 1..300).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let redelivered = consumer_info(&client, "etl").await.num_redelivered;
    link.release();
    wait_for_consumer(&client, "all 300 acknowledged", |info| {
        info.ack_floor.stream_sequence == 300 && info.num_ack_pending == 0
    })
    .await;
    let (stdout, _) = run.interrupt();
    assert!(stdout.contains("300 rows"), "{stdout}");
    assert!(
        redelivered > 0,
        "nothing was delivered again: the test missed its case"
    );
    assert_eq!(stored(&client, "BILLING").await, 300, "each row once");
}

#[tokio::test]
async fn a_continuous_durable_read_that_cannot_be_followed_to_a_sink_is_refused() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&client, "BILLING", &["billing.>"], |_| {}).await;
    publish_orders(&client, 0..3).await;
    let table = source(&server.url(), "order_id BIGINT", "consumer = 'etl'");

    let query = run(&format!("{table} SELECT * FROM orders_in;"))
        .await
        .unwrap_err()
        .to_string();
    for needle in [
        "option 'consumer': 'etl'",
        "runs only in an INSERT INTO a nats_sink table",
        "stop_at = 'end'",
    ] {
        assert!(query.contains(needle), "{needle:?} not in: {query}");
    }

    // A join holds rows of several batches before it emits them.
    let joined = run(&format!(
        "{table}
         CREATE TABLE matched (order_id BIGINT)
         WITH (connector = 'nats_sink', connection = 'c', stream = 'BILLING', subject = 'billing.n');
         INSERT INTO matched SELECT o.order_id FROM orders_in o
         JOIN (VALUES (1), (2)) AS v(id) ON o.order_id = v.id;"
    ))
    .await
    .unwrap_err()
    .to_string();
    for needle in ["option 'consumer': 'etl'", "HashJoinExec", "between them"] {
        assert!(joined.contains(needle), "{needle:?} not in: {joined}");
    }
    // The refusal comes before the plan runs: the consumer was not even created.
    let stream = jetstream::new(client.clone())
        .get_stream("ORDERS")
        .await
        .unwrap();
    assert!(stream.consumer_info("etl").await.is_err());
}

#[tokio::test]
async fn undecodable_messages_skipped_in_a_continuous_read_are_acknowledged() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&client, "BILLING", &["billing.>"], |_| {}).await;
    let script = format!(
        "{}
         CREATE TABLE billing (order_id BIGINT)
         WITH (connector = 'nats_sink', connection = 'c', stream = 'BILLING', subject = 'billing.eu');
         INSERT INTO billing SELECT order_id FROM orders_in;",
        source(
            &server.url(),
            "order_id BIGINT",
            "consumer = 'etl', max_ack_pending = '20', on_error = 'skip'"
        )
    );
    let run = Running::start(&[], &script);
    // More poison in a row than the consumer lets wait for acknowledgement: no row comes
    // of them, yet each is acknowledged, so the good message after them gets through.
    let poison = vec![("orders.eu", "not json"); 50];
    publish(&client, &poison).await;
    publish_orders(&client, 7..8).await;
    wait_for_stored(&client, 1).await;
    wait_for_consumer(&client, "all 51 acknowledged", |info| {
        info.ack_floor.stream_sequence == 51 && info.num_ack_pending == 0
    })
    .await;
    let (stdout, _) = run.interrupt();
    assert!(stdout.contains("1 row confirmed"), "{stdout}");
}
