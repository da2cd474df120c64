//! `nats_source` end to end against a real nats-server: what a query reads (payload
//! columns and metadata), an aggregate over a bounded read, source to sink with message
//! ids from `_sequence`, poison messages under each `on_error`, and how soon a continuous
//! read delivers a row. Durable consumers: `source_acks.rs`.

use std::time::Duration;

use nats_testkit::{Collector, NatsServer};
use streamsql::Outcome;

use crate::common;
use common::js::{create_stream, header, read_all};
use common::source::{POISONED, publish, run, source, table};

const ORDERS: &[(&str, &str)] = &[
    (
        "orders.eu",
        r#"{"order_id": 1, "region": "eu", "amount": 30.5}"#,
    ),
    (
        "orders.us",
        r#"{"order_id": 2, "region": "us", "amount": 12.0, "note": "unknown fields are ignored"}"#,
    ),
    ("orders.eu", r#"{"order_id": 3, "region": "eu"}"#),
];

#[tokio::test]
async fn a_bounded_read_returns_every_message_decoded_with_its_metadata() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    publish(&client, ORDERS).await;

    let script = source(
        &server.url(),
        "order_id BIGINT, region VARCHAR, amount DOUBLE, _subject VARCHAR, _stream VARCHAR, \
         _sequence BIGINT, _timestamp TIMESTAMP, _headers VARCHAR",
        "stop_at = 'end'",
    );
    let outcomes = run(&format!(
        "{script} SELECT order_id, region, amount, _subject, _stream, _sequence, \
         _timestamp IS NOT NULL AS stamped, _headers FROM orders_in ORDER BY _sequence;"
    ))
    .await
    .unwrap();
    let expected = "\
+----------+--------+--------+-----------+---------+-----------+---------+----------+
| order_id | region | amount | _subject  | _stream | _sequence | stamped | _headers |
+----------+--------+--------+-----------+---------+-----------+---------+----------+
| 1        | eu     | 30.5   | orders.eu | ORDERS  | 1         | true    |          |
| 2        | us     | 12.0   | orders.us | ORDERS  | 2         | true    |          |
| 3        | eu     |        | orders.eu | ORDERS  | 3         | true    |          |
+----------+--------+--------+-----------+---------+-----------+---------+----------+";
    assert_eq!(table(&outcomes), expected);

    // A bounded read ends, so an aggregate over it works.
    let outcomes = run(&format!(
        "{} SELECT region, count(*) AS orders, sum(amount) AS total FROM orders_in \
         GROUP BY region ORDER BY region;",
        source(
            &server.url(),
            "region VARCHAR, amount DOUBLE",
            "stop_at = 'end', filter_subjects = 'orders.>'"
        )
    ))
    .await
    .unwrap();
    let expected = "\
+--------+--------+-------+
| region | orders | total |
+--------+--------+-------+
| eu     | 2      | 30.5  |
| us     | 1      | 12.0  |
+--------+--------+-------+";
    assert_eq!(table(&outcomes), expected);

    // Start positions: from a sequence, and the last message of each subject.
    for (options, expected) in [
        ("start_sequence = '2'", [2, 3]),
        (
            "deliver = 'last_per_subject', filter_subjects = 'orders.>'",
            [2, 3],
        ),
    ] {
        let outcomes = run(&format!(
            "{} SELECT _sequence FROM orders_in ORDER BY _sequence;",
            source(
                &server.url(),
                "_sequence BIGINT",
                &format!("stop_at = 'end', {options}")
            )
        ))
        .await
        .unwrap();
        let rows = format!(
            "+-----------+\n| _sequence |\n+-----------+\n| {}         |\n| {}         |\n+-----------+",
            expected[0], expected[1]
        );
        assert_eq!(table(&outcomes), rows, "{options}");
    }
}

#[tokio::test]
async fn source_to_sink_stores_each_row_once_with_ids_from_the_sequence() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    create_stream(&client, "BILLING", &["billing.>"], |_| {}).await;
    let orders: Vec<(String, String)> = (0..200)
        .map(|i| {
            let region = ["eu", "us"][i % 2];
            (
                format!("orders.{region}"),
                format!(r#"{{"order_id": {i}, "region": "{region}", "amount": {i}.5}}"#),
            )
        })
        .collect();
    let pairs: Vec<(&str, &str)> = orders
        .iter()
        .map(|(s, p)| (s.as_str(), p.as_str()))
        .collect();
    publish(&client, &pairs).await;

    let script = format!(
        "{} INSERT INTO billing SELECT order_id, amount * 2 AS gross, \
         concat('billing.', region) AS subject, CAST(_sequence - 1 AS VARCHAR) AS id \
         FROM orders_in WHERE amount > 10 \
         WITH (connector = 'nats_sink', connection = 'c', subject_field = 'subject', \
               stream = 'BILLING', msg_id_field = 'id');",
        source(
            &server.url(),
            "order_id BIGINT, region VARCHAR, amount DOUBLE, _sequence BIGINT",
            "stop_at = 'end', fetch_size = '64'"
        )
    );
    // Twice: the second run reads every message again (an ephemeral consumer
    // acknowledges nothing), and the ids make the stream drop what it has.
    for _ in 0..2 {
        let outcomes = run(&script).await.unwrap();
        let Some(Outcome::Insert(summary)) = outcomes.last() else {
            panic!("{outcomes:?}")
        };
        assert_eq!(summary.rows, 190, "{summary:?}");
    }
    let stored = read_all(&client, "BILLING").await;
    // Orders 10..199 pass the filter; their ids are the source sequences 11..200, less 1,
    // each stored once.
    let mut ids: Vec<u64> = stored
        .iter()
        .map(|m| header(m, "Nats-Msg-Id").unwrap().parse().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, (10..200).collect::<Vec<u64>>());
}

#[tokio::test]
async fn a_poison_message_fails_is_skipped_or_is_dead_lettered() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    publish(&client, POISONED).await;
    let select = "SELECT order_id FROM orders_in ORDER BY order_id;";

    let err = run(&format!(
        "{} {select}",
        source(&server.url(), "order_id BIGINT", "stop_at = 'end'")
    ))
    .await
    .unwrap_err()
    .to_string();
    for needle in [
        "subject 'orders.us' (stream 'ORDERS', sequence 2)",
        "order_id",
        "on_error = 'skip'",
    ] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }

    let skipping = source(
        &server.url(),
        "order_id BIGINT",
        "stop_at = 'end', on_error = 'skip'",
    );
    let skipped = run(&format!("{skipping} {select}")).await.unwrap();
    assert_eq!(
        table(&skipped),
        "+----------+\n| order_id |\n+----------+\n| 1        |\n| 4        |\n+----------+"
    );
    // Counted: EXPLAIN ANALYZE shows the source's figures.
    let analyzed = run(&format!("{skipping} EXPLAIN ANALYZE {select}"))
        .await
        .unwrap();
    let plan = table(&analyzed);
    assert!(
        plan.contains("messages_read=4") && plan.contains("skipped_messages=2"),
        "{plan}"
    );

    let mut dead_letters = Collector::subscribe(&client, "dlq.orders").await;
    let options = "stop_at = 'end', on_error = 'dead_letter', dead_letter_subject = 'dlq.orders'";
    let outcomes = run(&format!(
        "{} {select}",
        source(&server.url(), "order_id BIGINT", options)
    ))
    .await
    .unwrap();
    assert_eq!(table(&outcomes), table(&skipped));
    let letters = dead_letters.collect(2, Duration::from_secs(10)).await;
    let payloads: Vec<String> = letters.iter().map(common::text).collect();
    assert_eq!(payloads, [r#"{"order_id": "two"}"#, "not json"]);
    let headers = letters[0].headers.as_ref().expect("headers");
    assert_eq!(
        headers.get("StreamSQL-Subject").unwrap().as_str(),
        "orders.us"
    );
    assert_eq!(headers.get("StreamSQL-Stream").unwrap().as_str(), "ORDERS");
    assert_eq!(headers.get("StreamSQL-Sequence").unwrap().as_str(), "2");
    let reason = headers.get("StreamSQL-Error").unwrap().as_str();
    assert!(reason.contains("order_id"), "{reason}");
}

#[tokio::test]
async fn a_continuous_read_delivers_each_message_to_the_sink_while_the_next_is_awaited() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "ORDERS", &["orders.>"], |_| {}).await;
    let mut out = Collector::subscribe(&client, "out.>").await;
    let script = format!(
        "{} INSERT INTO out SELECT order_id, concat('out.', region) AS subject FROM orders_in          WHERE order_id >= 0          WITH (connector = 'nats_sink', connection = 'c', subject_field = 'subject');",
        source(
            &server.url(),
            "order_id BIGINT, region VARCHAR",
            "deliver = 'new'"
        )
    );
    let mut running = common::spawn_with_args(&["run", "-"], &script, &[]);
    // One message at a time, each sent only once the one before came out: a source or
    // filter that held rows until a batch filled would never let the first one through.
    // The first is sent again until the read has started (deliver = 'new').
    let first = loop {
        publish(
            &client,
            &[("orders.eu", r#"{"order_id": 0, "region": "eu"}"#)],
        )
        .await;
        let got = out.collect(1, Duration::from_secs(2)).await;
        if let Some(message) = got.into_iter().next() {
            break message;
        }
        assert!(
            running.try_wait().unwrap().is_none(),
            "streamsql ended early"
        );
    };
    assert_eq!(first.subject.as_str(), "out.eu");
    for i in 1..5 {
        let payload = format!(r#"{{"order_id": {i}, "region": "us"}}"#);
        publish(&client, &[("orders.us", payload.as_str())]).await;
        // A late copy of the first message may come out before it; it is not row i.
        let row = loop {
            let got = out.collect(1, Duration::from_secs(30)).await;
            let message = got
                .first()
                .unwrap_or_else(|| panic!("row {i} did not come out while the source waited"));
            let text = common::text(message);
            if text != r#"{"order_id":0}"# {
                break text;
            }
        };
        assert_eq!(row, format!(r#"{{"order_id":{i}}}"#));
    }
    running.kill().unwrap();
    running.wait().unwrap();
}

#[tokio::test]
async fn a_core_subscription_in_a_queue_group_feeds_the_sink() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut out = Collector::subscribe(&client, "out.>").await;
    let script = format!(
        "CREATE CONNECTION c FROM nats_sink WITH (servers = '{}');
         CREATE TABLE clicks (page VARCHAR, _subject VARCHAR, _headers VARCHAR)
         WITH (connector = 'nats_source', connection = 'c', subject = 'clicks.>',
               queue_group = 'etl');
         INSERT INTO out SELECT page, _subject AS source, _headers AS headers,
                                'out.clicks' AS subject FROM clicks
         WITH (connector = 'nats_sink', connection = 'c', subject_field = 'subject');",
        server.url()
    );
    let mut running = common::spawn_with_args(&["run", "-"], &script, &[]);
    // Core NATS keeps nothing for a subscriber that is not there yet: publish until the
    // first click comes out, then one more.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("tenant", "a");
    let first = loop {
        client
            .publish_with_headers("clicks.home", headers.clone(), r#"{"page": "/"}"#.into())
            .await
            .unwrap();
        if let Some(message) = out.collect(1, Duration::from_secs(2)).await.pop() {
            break message;
        }
        assert!(
            running.try_wait().unwrap().is_none(),
            "streamsql ended early"
        );
    };
    assert_eq!(
        common::text(&first),
        r#"{"page":"/","source":"clicks.home","headers":"{\"tenant\":\"a\"}"}"#
    );
    running.kill().unwrap();
    running.wait().unwrap();
}

#[tokio::test]
async fn explain_shows_the_source_with_its_secrets_masked() {
    let server = NatsServer::start();
    let outcomes = run(&format!(
        "CREATE CONNECTION c FROM nats_sink WITH (servers = '{}', token = 's3cret-token');
         CREATE TABLE orders_in (order_id BIGINT)
         WITH (connector = 'nats_source', connection = 'c', stream = 'ORDERS', stop_at = 'end');
         EXPLAIN SELECT order_id FROM orders_in WHERE order_id > 1;",
        server.url()
    ))
    .await
    .unwrap();
    let plan = table(&outcomes);
    assert!(plan.contains("NatsSourceExec: table=orders_in"), "{plan}");
    assert!(plan.contains("token=***"), "{plan}");
    assert!(!plan.contains("s3cret-token"), "{plan}");
}
