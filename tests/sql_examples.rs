//! Every file in `sql-examples/` run by the `streamsql` binary against a real nats-server,
//! checking what a subscriber receives.

mod common;

use std::time::Duration;

use common::*;
use nats_testkit::{Collector, NatsServer, payload_json};

/// The reference example runs as written against a server that requires user `publisher`
/// with the password from `NATS_PASSWORD`; only the server address is the test's own.
#[tokio::test]
async fn reference_example_as_written_with_password_from_the_environment() {
    let server = NatsServer::builder().user("publisher", "s3cret-pw").start();
    let client = nats_testkit::connect_with_user(&server.url(), "publisher", "s3cret-pw").await;
    let mut received = Collector::subscribe(&client, "orders.processed").await;

    let script = example("reference.sql").replace("nats://localhost:4222", &server.url());
    let output = run_script(&script, &[("NATS_PASSWORD", "s3cret-pw")]);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    assert_eq!(inserted_rows(&stdout(&output), "nats_output"), 3);

    let messages = received.collect(3, Duration::from_secs(5)).await;
    let payloads: Vec<String> = messages.iter().map(text).collect();
    assert_eq!(
        payloads,
        vec![
            r#"{"order_id":101,"order_data":"{\"sku\":\"A-1\",\"qty\":2}"}"#,
            r#"{"order_id":102,"order_data":"{\"sku\":\"B-7\",\"qty\":1}"}"#,
            r#"{"order_id":103,"order_data":"{\"sku\":\"C-3\",\"qty\":5}"}"#,
        ]
    );
    let secret_seen =
        stdout(&output).contains("s3cret-pw") || stderr(&output).contains("s3cret-pw");
    assert!(!secret_seen, "the password appeared in the output");
}

#[tokio::test]
async fn quickstart_publishes_five_orders_routed_by_region() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut received = Collector::subscribe(&client, "orders.>").await;

    let output = run_script(&example("quickstart.sql"), &[("NATS_URL", &server.url())]);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));

    let messages = received.collect(5, Duration::from_secs(5)).await;
    let subjects: Vec<&str> = messages.iter().map(|m| m.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "orders.eu",
            "orders.us",
            "orders.eu",
            "orders.apac",
            "orders.us"
        ]
    );
    assert_eq!(
        text(&messages[0]),
        r#"{"order_id":1,"customer":"alice","amount":30.5}"#
    );
}

/// CREATE TABLE form: DataFusion checks the INSERT against the declared columns; every
/// message carries the static headers; each row's reply subject comes from a column and a
/// responder's answers arrive there.
#[tokio::test]
async fn create_table_with_static_headers_and_reply_to_answered_by_a_responder() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut received = Collector::subscribe(&client, "shipments.ground").await;
    let mut acks = Collector::subscribe(&client, "shipments.ack.>").await;

    // A responder answers every air shipment on its reply subject.
    let mut requests = client.subscribe("shipments.air").await.unwrap();
    let responder_client = client.clone();
    let responder = tokio::spawn(async move {
        use futures::StreamExt;
        let mut answered = 0;
        while let Some(request) = requests.next().await {
            let reply = request
                .reply
                .clone()
                .expect("every shipment has a reply subject");
            let id = payload_json(&request)["shipment_id"].clone();
            responder_client
                .publish(reply, format!("ack {id}").into())
                .await
                .unwrap();
            answered += 1;
            if answered == 5 {
                break;
            }
        }
        answered
    });
    nats_testkit::round_trip(&client).await;

    let output = run_script(&example("create_table.sql"), &[("NATS_URL", &server.url())]);
    assert!(output.status.success(), "stderr:\n{}", stderr(&output));
    assert_eq!(inserted_rows(&stdout(&output), "shipments"), 10);

    let ground = received.collect(5, Duration::from_secs(5)).await;
    for (message, id) in ground.iter().zip([2, 4, 6, 8, 10]) {
        let headers = message.headers.as_ref().expect("static headers");
        assert_eq!(headers.get("source").map(|v| v.as_str()), Some("streamsql"));
        assert_eq!(
            headers.get("schema").map(|v| v.as_str()),
            Some("shipment.v1")
        );
        assert_eq!(
            message.reply.as_deref(),
            Some(format!("shipments.ack.{id}").as_str())
        );
        // Routing columns are not in the payload by default.
        assert_eq!(
            text(message),
            format!(
                r#"{{"shipment_id":{id},"carrier":"truck","weight_kg":{:?}}}"#,
                id as f64 * 1.5
            )
        );
    }
    assert_eq!(responder.await.unwrap(), 5);
    let answers = acks.collect(5, Duration::from_secs(5)).await;
    let mut answered: Vec<String> = answers
        .iter()
        .map(|m| format!("{} {}", m.subject, text(m)))
        .collect();
    answered.sort();
    assert_eq!(
        answered,
        ["1", "3", "5", "7", "9"].map(|id| format!("shipments.ack.{id} ack {id}"))
    );
}
