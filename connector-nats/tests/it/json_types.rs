//! The README's JSON type table, row by row, as a real subscriber receives it.
//!
//! Each row of the table between the `json-types` markers in README.md names an Arrow
//! type, SQL that produces it and the JSON value a consumer gets. This test runs the SQL
//! through the sink, asserts the type, and compares the received payload byte for byte,
//! so the documentation cannot drift from the behaviour.

use std::sync::Arc;
use std::time::Duration;

use datafusion::prelude::SessionContext;
use nats_testkit::{Collector, NatsServer};

struct Row {
    arrow_type: String,
    sql: String,
    json: String,
}

fn readme_rows() -> Vec<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
    let readme = std::fs::read_to_string(path).expect("README.md at the workspace root");
    let start = readme
        .find("<!-- json-types:start")
        .expect("json-types:start marker");
    let end = readme
        .find("<!-- json-types:end")
        .expect("json-types:end marker");
    readme[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            assert_eq!(cells.len(), 3, "a type table row has 3 cells: {line}");
            let code = |cell: &str| cell.trim_matches('`').to_string();
            Row {
                // "`Float64` (NaN)" names the type in its first code span.
                arrow_type: cells[0].split('`').nth(1).unwrap_or_default().to_string(),
                sql: code(cells[1]),
                json: code(cells[2]),
            }
        })
        .collect()
}

#[tokio::test]
async fn every_row_of_the_readme_type_table_is_what_a_subscriber_receives() {
    let rows = readme_rows();
    assert!(rows.len() >= 40, "the type table lost rows: {}", rows.len());
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    let mut received = Collector::subscribe(&client, "types.>").await;
    let ctx = SessionContext::new();

    for (i, row) in rows.iter().enumerate() {
        let query = format!("SELECT {} AS v", row.sql);
        let df = ctx
            .sql(&query)
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
        let schema = Arc::new(df.schema().as_arrow().clone());
        assert_eq!(
            schema.field(0).data_type().to_string(),
            row.arrow_type,
            "type of {}",
            row.sql
        );
        let options = [
            ("servers".to_string(), server.url()),
            ("subject".to_string(), format!("types.{i}")),
        ];
        let table = connector_nats::sink_table("json_types", schema, options.into()).unwrap();
        ctx.register_table(format!("t{i}"), table).unwrap();
        ctx.sql(&format!("INSERT INTO t{i} {query}"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{query}: {e}"));
    }

    let messages = received.collect(rows.len(), Duration::from_secs(10)).await;
    assert_eq!(messages.len(), rows.len());
    for (i, (row, message)) in rows.iter().zip(&messages).enumerate() {
        assert_eq!(message.subject.as_str(), format!("types.{i}"));
        let expected = format!("{{\"v\":{}}}", row.json);
        assert_eq!(
            String::from_utf8_lossy(&message.payload),
            expected,
            "row '{}' ({})",
            row.arrow_type,
            row.sql
        );
    }
}

/// Asserts README.md holds `table` as generated, naming `what` when it does not.
fn assert_readme_holds(table: &str, what: &str) {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    assert!(
        readme.contains(table),
        "README.md's {what} option table is out of date; replace it with:\n{table}"
    );
}

#[test]
fn readme_option_table_is_generated_from_the_declaration() {
    assert_readme_holds(&connector_nats::options::markdown_table(), "nats_sink");
}

#[test]
fn readme_source_option_table_is_generated_from_the_declaration() {
    assert_readme_holds(
        &connector_nats::source::options::markdown_table(),
        "nats_source",
    );
}

#[test]
fn readme_kv_option_table_is_generated_from_the_declaration() {
    assert_readme_holds(&connector_nats::kv::options::markdown_table(), "nats_kv");
}
