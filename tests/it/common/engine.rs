//! Running statements in the test process (rather than through the binary), for tests
//! that inject faults while a statement runs and read its summary.

use std::time::Duration;

use streamsql::{Engine, InsertSummary, Outcome};

/// The sink's logs (retries, reconnects, recovery) go with a failing test's output;
/// `RUST_LOG` overrides the filter.
pub fn log_sink() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("connector_nats=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Runs `script` and returns the summary of its (last) INSERT; a hang longer than
/// `limit` fails the test instead of stalling it.
pub async fn run_insert(script: String, limit: Duration) -> InsertSummary {
    let mut engine = Engine::new();
    let outcomes = tokio::time::timeout(limit, engine.execute(&script))
        .await
        .unwrap_or_else(|_| panic!("the statement did not finish within {limit:?}"))
        .unwrap_or_else(|e| panic!("the statement failed: {e}"));
    match outcomes.last() {
        Some(Outcome::Insert(summary)) => summary.clone(),
        other => panic!("no insert outcome: {other:?}"),
    }
}

/// Asserts the statement reported every row, and returns its (retries, duplicates).
pub fn check_summary(summary: &InsertSummary, rows: u64) -> (u64, u64) {
    assert_eq!(summary.rows, rows, "summary: {summary:?}");
    let delivery = summary
        .delivery
        .unwrap_or_else(|| panic!("the sink reports no delivery counts: {summary:?}"));
    (delivery.retries, delivery.duplicates)
}
