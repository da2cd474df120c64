//! The plugin in a plain DataFusion session: no engine, only `SessionContext`, the factory
//! and a real nats-server. This is what makes `connector-nats` loadable by any
//! DataFusion-based engine.

use std::time::Duration;

use datafusion::arrow::array::{Array, AsArray, UInt64Array};
use datafusion::prelude::SessionContext;
use nats_testkit::{Collector, NatsServer};

#[tokio::test]
async fn create_external_table_then_insert_publishes_every_row() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut received = Collector::subscribe(&client, "bare.>").await;

    let ctx = SessionContext::new();
    connector_nats::register(&ctx);
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE out (id BIGINT, subject VARCHAR, name VARCHAR) \
         STORED AS NATS_SINK LOCATION '{}' OPTIONS ('subject_field' 'subject')",
        server.url()
    ))
    .await
    .unwrap();
    let result = ctx
        .sql("INSERT INTO out VALUES (1, 'bare.a', 'x'), (2, 'bare.b', NULL), (3, 'bare.a', 'z')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();

    let count = result[0]
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::UInt64Type>();
    assert_eq!(count, &UInt64Array::from(vec![3]));
    let messages = received.collect(3, Duration::from_secs(5)).await;
    let seen: Vec<(String, String)> = messages
        .iter()
        .map(|m| {
            (
                m.subject.to_string(),
                String::from_utf8(m.payload.to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("bare.a".into(), r#"{"id":1,"name":"x"}"#.into()),
            ("bare.b".into(), r#"{"id":2,"name":null}"#.into()),
            ("bare.a".into(), r#"{"id":3,"name":"z"}"#.into()),
        ]
    );
}

/// Raw payloads and header columns in the plain DataFusion form: `OPTIONS ('format' 'raw')`
/// arrives as `format.format` and is read as `format`.
#[tokio::test]
async fn raw_payloads_and_header_columns_in_create_external_table() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut received = Collector::subscribe(&client, "bare.raw").await;

    let ctx = SessionContext::new();
    connector_nats::register(&ctx);
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE out (body BYTEA, tenant VARCHAR) STORED AS NATS_SINK \
         LOCATION '{}' OPTIONS ('subject' 'bare.raw', 'format' 'raw', 'payload_field' 'body', \
         'header_fields' 'tenant')",
        server.url()
    ))
    .await
    .unwrap();
    ctx.sql("INSERT INTO out VALUES (X'00FF', 'a'), (CAST('text' AS BYTEA), 'b')")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();

    let messages = received.collect(2, Duration::from_secs(5)).await;
    let seen: Vec<(Vec<u8>, String)> = messages
        .iter()
        .map(|m| {
            let tenant = m.headers.as_ref().unwrap().get("tenant").unwrap();
            (m.payload.to_vec(), tenant.to_string())
        })
        .collect();
    assert_eq!(
        seen,
        [(vec![0, 0xff], "a".into()), (b"text".to_vec(), "b".into())]
    );
}

#[tokio::test]
async fn unknown_option_in_create_external_table_names_it() {
    let ctx = SessionContext::new();
    connector_nats::register(&ctx);
    let err = ctx
        .sql(
            "CREATE EXTERNAL TABLE out (id BIGINT) STORED AS NATS_SINK \
             LOCATION 'nats://127.0.0.1:1' OPTIONS ('subjectt' 'a')",
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown option 'subjectt'"), "{err}");
    assert!(err.contains("did you mean 'subject'?"), "{err}");
}

#[tokio::test]
async fn explain_shows_the_sink_without_secrets() {
    let ctx = SessionContext::new();
    connector_nats::register(&ctx);
    ctx.sql(
        "CREATE EXTERNAL TABLE out (id BIGINT) STORED AS NATS_SINK \
         LOCATION 'nats://127.0.0.1:1' OPTIONS ('subject' 'a.b', 'username' 'u', 'password' 's3cr3t-value')",
    )
    .await
    .unwrap();
    let plan = ctx
        .sql("EXPLAIN INSERT INTO out VALUES (1)")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let text: String = plan
        .iter()
        .flat_map(|b| {
            let col = b.column(1).as_string::<i32>();
            (0..col.len())
                .map(|i| col.value(i).to_string())
                .collect::<Vec<_>>()
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("NatsSink:"), "{text}");
    assert!(text.contains("subject=a.b"), "{text}");
    assert!(!text.contains("s3cr3t-value"), "{text}");
}
