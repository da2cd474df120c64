//! `streamsql sub`: what a user runs to see their messages (no `nats` CLI exists here).

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use async_nats::HeaderMap;
use common::*;
use nats_testkit::NatsServer;

#[tokio::test]
async fn sub_prints_subject_reply_headers_and_payload_then_exits_after_count() {
    let server = NatsServer::start();
    let mut child = streamsql()
        .args([
            "sub",
            "demo.>",
            "--server",
            &server.url(),
            "--count",
            "2",
            "--timeout",
            "10",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it says the subscription is active.
    let mut stderr_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = stderr_lines.next().expect("a line on stderr").unwrap();
    assert!(ready.contains("listening on demo.>"), "{ready}");

    let client = nats_testkit::connect(&server.url()).await;
    let mut headers = HeaderMap::new();
    headers.insert("source", "test");
    client
        .publish_with_reply_and_headers("demo.a", "reply.here", headers, "{\"id\":1}".into())
        .await
        .unwrap();
    client
        .publish("demo.b", "line1\nline2".into())
        .await
        .unwrap();
    nats_testkit::round_trip(&client).await;

    let output = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    let output = tokio::time::timeout(Duration::from_secs(10), output)
        .await
        .expect("sub exits after --count messages")
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        stdout(&output),
        "demo.a reply=reply.here hdr source=test {\"id\":1}\ndemo.b line1\\nline2\n"
    );
}

#[test]
fn sub_without_messages_exits_non_zero_after_the_timeout() {
    let server = NatsServer::start();
    let output = streamsql()
        .args([
            "sub",
            "quiet.>",
            "--server",
            &server.url(),
            "--timeout",
            "0.5",
        ])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "stderr:\n{}",
        stderr(&output)
    );
}
