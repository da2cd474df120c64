//! Text forms of what the CLI prints: statement outcomes (`run`) and received
//! messages (`sub`). Pure functions, so the formats are tested here.

use std::fmt::Write as _;

use datafusion::arrow::util::pretty::pretty_format_batches_with_schema;

use crate::engine::{InsertSummary, Outcome, SignalStop};

/// The lines `streamsql run` prints for one statement's outcome (no trailing newline).
///
/// - query: an ASCII table, then `(N rows)`
/// - insert: `INSERT INTO t: N rows published in 0.42s (2380 rows/s)` (`inserted` for
///   a table that is not a connector's), and after a stop on signal a second line
///   `INSERT INTO t: stopped on signal; N rows confirmed before shutdown`, followed by
///   `; the input was not read to its end` for a bounded input, or by
///   `; cancelled: not finished within the 5s grace period, M rows in flight not
///   confirmed (retrying: ...)` when the grace period ran out
/// - connection: `CREATE CONNECTION name (connector)`; connector table:
///   `CREATE TABLE name (connector sink|source)`; other DDL: `OK: <statement>`
pub fn format_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::ConnectionCreated {
            name,
            connector,
            replaced,
        } => {
            let verb = if *replaced { "REPLACE" } else { "CREATE" };
            format!("{verb} CONNECTION {name} ({connector})")
        }
        Outcome::TableCreated {
            name,
            connector,
            kind,
        } => format!("CREATE TABLE {name} ({connector} {kind})"),
        Outcome::Skipped { what } => format!("skipped: {what}"),
        Outcome::Query { schema, batches } => {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            let table = pretty_format_batches_with_schema(schema.clone(), batches)
                .map(|t| t.to_string())
                .unwrap_or_else(|e| format!("(cannot format the result: {e})"));
            let plural = if rows == 1 { "" } else { "s" };
            format!("{table}\n({rows} row{plural})")
        }
        Outcome::Insert(summary) => format_insert(summary),
        Outcome::Done { statement } => format!("OK: {statement}"),
    }
}

fn format_insert(summary: &InsertSummary) -> String {
    let verb = if summary.connector.is_some() {
        "published"
    } else {
        "inserted"
    };
    let plural = if summary.rows == 1 { "" } else { "s" };
    let mut line = format!(
        "INSERT INTO {}: {} row{plural} {verb} in {:.2}s ({:.0} rows/s)",
        summary.table,
        summary.rows,
        summary.elapsed.as_secs_f64(),
        summary.rows_per_second()
    );
    if let Some(d) = summary.delivery {
        let _ = write!(
            line,
            "; {} bytes, {} duplicates, {} skipped, {} dead-lettered, {} retries",
            d.bytes, d.duplicates, d.skipped, d.dead_lettered, d.retries
        );
    }
    if let Some(stop) = &summary.stopped {
        let _ = write!(line, "\nINSERT INTO {}: stopped on signal; ", summary.table);
        let cancelled = |line: &mut String, grace: &std::time::Duration| {
            let _ = write!(
                line,
                "cancelled: not finished within the {}s grace period",
                grace.as_secs_f64()
            );
        };
        match stop {
            SignalStop::Cancelled { grace, .. } if summary.delivery.is_none() => {
                cancelled(&mut line, grace);
                line.push_str("; its sink reports no count of rows written");
            }
            SignalStop::Aborted { .. } if summary.delivery.is_none() => {
                line.push_str(
                    "aborted by a second signal; its sink reports no count of rows written",
                );
            }
            _ => {
                let _ = write!(
                    line,
                    "{} row{plural} confirmed before shutdown",
                    summary.rows
                );
            }
        }
        match stop {
            SignalStop::Unbounded => {}
            SignalStop::Bounded => line.push_str("; the input was not read to its end"),
            SignalStop::Cancelled { .. } | SignalStop::Aborted { .. }
                if summary.delivery.is_none() => {}
            SignalStop::Cancelled {
                grace,
                in_flight,
                retrying,
            } => {
                line.push_str("; ");
                cancelled(&mut line, grace);
                not_confirmed(&mut line, *in_flight, retrying.as_deref());
            }
            SignalStop::Aborted {
                in_flight,
                retrying,
            } => {
                line.push_str("; aborted by a second signal");
                not_confirmed(&mut line, *in_flight, retrying.as_deref());
                if *in_flight > 0 {
                    line.push_str(" (they may or may not have arrived)");
                }
            }
        }
    }
    line
}

/// `, 7 rows in flight not confirmed[ (retrying: why)]`
fn not_confirmed(line: &mut String, in_flight: u64, retrying: Option<&str>) {
    let rows = if in_flight == 1 { "row" } else { "rows" };
    let _ = write!(line, ", {in_flight} {rows} in flight not confirmed");
    if let Some(reason) = retrying {
        let _ = write!(line, " (retrying: {reason})");
    }
}

/// One received message as `streamsql sub` prints it:
/// `<subject>[ reply=<reply>][ hdr <K>=<V>]... <payload>`.
///
/// Headers come sorted by name, one `hdr` per value. The payload is UTF-8 (invalid
/// bytes become U+FFFD); raw line breaks in it are written as `\n` and `\r` so every
/// message stays on one line. Nothing else is escaped.
pub fn format_message<'a>(
    subject: &str,
    reply: Option<&str>,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    payload: &[u8],
) -> String {
    let mut line = String::from(subject);
    if let Some(reply) = reply {
        let _ = write!(line, " reply={reply}");
    }
    let mut headers: Vec<_> = headers.into_iter().collect();
    headers.sort();
    for (name, value) in headers {
        let _ = write!(line, " hdr {name}={value}");
    }
    line.push(' ');
    let text = String::from_utf8_lossy(payload);
    line.push_str(&text.replace('\n', "\\n").replace('\r', "\\r"));
    line
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use datafusion::arrow::array::{Int64Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn insert_line_has_rows_time_and_rate() {
        let summary = InsertSummary {
            table: "nats_output".to_string(),
            connector: Some("nats_sink".to_string()),
            rows: 1000,
            elapsed: Duration::from_millis(420),
            stopped: None,
            delivery: None,
        };
        assert_eq!(
            format_outcome(&Outcome::Insert(summary.clone())),
            "INSERT INTO nats_output: 1000 rows published in 0.42s (2381 rows/s)"
        );
        let with_counts = InsertSummary {
            delivery: Some(crate::engine::DeliveryCounts {
                bytes: 9000,
                duplicates: 3,
                skipped: 2,
                dead_lettered: 1,
                retries: 4,
            }),
            ..summary.clone()
        };
        assert_eq!(
            format_outcome(&Outcome::Insert(with_counts)),
            "INSERT INTO nats_output: 1000 rows published in 0.42s (2381 rows/s); \
             9000 bytes, 3 duplicates, 2 skipped, 1 dead-lettered, 4 retries"
        );
        let stopped = InsertSummary {
            connector: None,
            rows: 1,
            stopped: Some(SignalStop::Unbounded),
            ..summary.clone()
        };
        assert_eq!(
            format_outcome(&Outcome::Insert(stopped.clone())),
            "INSERT INTO nats_output: 1 row inserted in 0.42s (2 rows/s)\n\
             INSERT INTO nats_output: stopped on signal; 1 row confirmed before shutdown"
        );
        let cut = InsertSummary {
            stopped: Some(SignalStop::Bounded),
            ..stopped.clone()
        };
        assert!(format_outcome(&Outcome::Insert(cut)).ends_with(
            "stopped on signal; 1 row confirmed before shutdown; the input was not read to its end"
        ));
        let cancelled = SignalStop::Cancelled {
            grace: Duration::from_millis(2500),
            in_flight: 7,
            retrying: Some("cannot connect".to_string()),
        };
        let with_counts = with_counts_summary(&summary);
        let text = format_outcome(&Outcome::Insert(InsertSummary {
            stopped: Some(cancelled.clone()),
            ..with_counts
        }));
        assert!(
            text.ends_with(
                "\nINSERT INTO nats_output: stopped on signal; 1000 rows confirmed before \
                 shutdown; cancelled: not finished within the 2.5s grace period, 7 rows in \
                 flight not confirmed (retrying: cannot connect)"
            ),
            "{text}"
        );
        // A sink that reports no count: nothing is claimed about what it wrote.
        let text = format_outcome(&Outcome::Insert(InsertSummary {
            stopped: Some(cancelled),
            ..stopped.clone()
        }));
        assert!(
            text.ends_with(
                "stopped on signal; cancelled: not finished within the 2.5s grace period; \
                 its sink reports no count of rows written"
            ),
            "{text}"
        );
        // A second signal: the rows confirmed are still given, and what was in flight is
        // said to be uncertain.
        let aborted = SignalStop::Aborted {
            in_flight: 3,
            retrying: None,
        };
        let text = format_outcome(&Outcome::Insert(InsertSummary {
            stopped: Some(aborted.clone()),
            ..with_counts_summary(&summary)
        }));
        assert!(
            text.ends_with(
                "\nINSERT INTO nats_output: stopped on signal; 1000 rows confirmed before \
                 shutdown; aborted by a second signal, 3 rows in flight not confirmed (they \
                 may or may not have arrived)"
            ),
            "{text}"
        );
        let text = format_outcome(&Outcome::Insert(InsertSummary {
            stopped: Some(aborted),
            ..stopped
        }));
        assert!(
            text.ends_with(
                "stopped on signal; aborted by a second signal; its sink reports no count of \
                 rows written"
            ),
            "{text}"
        );
    }

    fn with_counts_summary(summary: &InsertSummary) -> InsertSummary {
        InsertSummary {
            delivery: Some(crate::engine::DeliveryCounts::default()),
            ..summary.clone()
        }
    }

    #[test]
    fn query_prints_a_table_even_when_empty() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![7]))])
            .unwrap();
        let text = format_outcome(&Outcome::Query {
            schema: schema.clone(),
            batches: vec![batch],
        });
        assert!(
            text.contains("| n |") && text.contains("| 7 |") && text.ends_with("(1 row)"),
            "{text}"
        );
        let text = format_outcome(&Outcome::Query {
            schema,
            batches: vec![],
        });
        assert!(
            text.contains("| n |") && text.ends_with("(0 rows)"),
            "{text}"
        );
    }

    #[test]
    fn message_line_is_greppable() {
        assert_eq!(
            format_message("a.b", None, [], b"{\"x\":1}"),
            "a.b {\"x\":1}"
        );
        assert_eq!(
            format_message(
                "a.b",
                Some("_INBOX.1"),
                [("z", "2"), ("a", "1")],
                b"line1\nline2\r"
            ),
            "a.b reply=_INBOX.1 hdr a=1 hdr z=2 line1\\nline2\\r"
        );
        assert_eq!(format_message("s", None, [], &[0xff, b'k']), "s \u{fffd}k");
    }
}
