//! Secrets never appear in anything `streamsql` prints, even with every log at `trace`:
//! a succeeding and a failing statement, each with a password and a token in play.

mod common;

use std::time::Duration;

use common::*;
use nats_testkit::{Collector, NatsServer};

const PASSWORD: &str = "pw-7f3a9c-never-printed";

fn assert_no_secret(output: &std::process::Output, secret: &str) {
    for (name, text) in [("stdout", stdout(output)), ("stderr", stderr(output))] {
        assert!(
            !text.contains(secret),
            "{name} contains the secret:\n{text}"
        );
    }
}

#[tokio::test]
async fn no_secret_in_output_at_trace_level_on_success_or_failure() {
    let server = NatsServer::builder().user("publisher", PASSWORD).start();
    let client = nats_testkit::connect_with_user(&server.url(), "publisher", PASSWORD).await;
    let mut received = Collector::subscribe(&client, "secret.test").await;
    let script = format!(
        "CREATE CONNECTION c FROM nats_sink WITH (servers = '{}', username = 'publisher', password = '${{SINK_PW}}');
         EXPLAIN INSERT INTO out SELECT 1 AS id WITH (connection = 'c', subject = 'secret.test');
         INSERT INTO out SELECT 1 AS id WITH (connection = 'c', subject = 'secret.test');",
        server.url()
    );
    let run = |password: &str| {
        run_with_args(
            &["--log-level", "trace", "run", "-"],
            &script,
            &[("SINK_PW", password)],
        )
    };

    let ok = run(PASSWORD);
    assert!(ok.status.success(), "stderr:\n{}", stderr(&ok));
    assert!(
        stderr(&ok).contains("TRACE") || stderr(&ok).contains("DEBUG"),
        "trace logging is on"
    );
    assert!(
        stdout(&ok).contains("NatsSink:"),
        "EXPLAIN shows the sink:\n{}",
        stdout(&ok)
    );
    assert_no_secret(&ok, PASSWORD);
    assert_eq!(received.collect(1, Duration::from_secs(5)).await.len(), 1);

    let wrong = "wrong-5d1e-never-printed";
    let failed = run(wrong);
    assert_fails_with(&failed, &["rejected user 'publisher'"]);
    assert_no_secret(&failed, wrong);
    assert_no_secret(&failed, PASSWORD);
}
