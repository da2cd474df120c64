//! Subject routing from a column at scale, through the engine in-process.

use std::collections::HashMap;
use std::time::Duration;

use nats_testkit::{Collector, NatsServer, payload_json};
use streamsql::{Engine, Outcome};

/// 20,000 rows over 2,000 distinct subjects, several batches: every row arrives once, on
/// the subject its own row named.
#[tokio::test]
async fn many_distinct_subjects_from_a_column() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut received = Collector::subscribe(&client, "fanout.>").await;

    let mut engine = Engine::new();
    let outcomes = engine
        .execute(&format!(
            "INSERT INTO fanout SELECT value AS id, concat('fanout.k', value % 2000) AS subject \
             FROM generate_series(0, 19999) \
             WITH (connector = 'nats_sink', servers = '{}', subject_field = 'subject');",
            server.url()
        ))
        .await
        .unwrap();
    let Some(Outcome::Insert(summary)) = outcomes.last() else {
        panic!("no insert outcome: {outcomes:?}");
    };
    assert_eq!(summary.rows, 20_000);

    let messages = received.collect(20_000, Duration::from_secs(20)).await;
    assert_eq!(messages.len(), 20_000);
    let mut per_subject: HashMap<&str, usize> = HashMap::new();
    for message in &messages {
        let id = payload_json(message)["id"].as_u64().unwrap();
        assert_eq!(message.subject.as_str(), format!("fanout.k{}", id % 2000));
        *per_subject.entry(message.subject.as_str()).or_default() += 1;
    }
    assert_eq!(per_subject.len(), 2000);
    assert!(per_subject.values().all(|&n| n == 10));
}
