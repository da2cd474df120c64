//! Header columns, TTL columns and raw payloads: what each row carries, which rows are
//! rejected and why, and what is refused when the sink is created.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BinaryArray, BooleanArray, Float64Array, Int64Array, LargeBinaryArray, MapBuilder,
    StringArray, StringBuilder, TimestampMillisecondArray, UInt64Array,
};

use super::tests::{batch, options};
use super::*;
use crate::deliver::rows::{Limit, Planned, RowPlanner};

fn encode(b: &RecordBatch, pairs: &[(&str, &str)]) -> EncodedBatch {
    RowEncoder::try_new(&b.schema(), &options(pairs))
        .unwrap()
        .encode(b, 0)
        .unwrap()
}

fn refused(b: &RecordBatch, pairs: &[(&str, &str)]) -> String {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match Options::parse(&map, false) {
        Ok(options) => RowEncoder::try_new(&b.schema(), &options)
            .unwrap_err()
            .to_string(),
        Err(e) => e.to_string(),
    }
}

/// Row `i`'s headers from header columns, as (name, value) text.
fn headers(encoded: &EncodedBatch, i: usize) -> Vec<(String, String)> {
    encoded
        .row_headers(i)
        .iter()
        .map(|(n, v)| (n.to_string(), v.as_str().to_string()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn text(encoded: &EncodedBatch, i: usize) -> String {
    String::from_utf8(encoded.payload(i).to_vec()).unwrap()
}

fn typed_columns() -> RecordBatch {
    batch(vec![
        (
            "trace_id",
            Arc::new(StringArray::from(vec![Some("t-1"), None])) as ArrayRef,
        ),
        ("tenant", Arc::new(Int64Array::from(vec![7, -3]))),
        ("vip", Arc::new(BooleanArray::from(vec![true, false]))),
        (
            "at",
            Arc::new(TimestampMillisecondArray::from(vec![Some(0), None])),
        ),
        ("amount", Arc::new(Float64Array::from(vec![1.5, 2.0]))),
    ])
}

#[test]
fn header_columns_are_sent_as_text_and_leave_the_payload() {
    let b = typed_columns();
    let encoded = encode(
        &b,
        &[
            ("subject", "s"),
            ("header_fields", "trace_id, tenant,vip,at"),
        ],
    );
    assert_eq!(
        headers(&encoded, 0),
        pairs(&[
            ("trace_id", "t-1"),
            ("tenant", "7"),
            ("vip", "true"),
            ("at", "1970-01-01T00:00:00")
        ])
    );
    // A null sends no header.
    assert_eq!(
        headers(&encoded, 1),
        pairs(&[("tenant", "-3"), ("vip", "false")])
    );
    assert_eq!(text(&encoded, 0), r#"{"amount":1.5}"#);

    let kept = encode(
        &b,
        &[
            ("subject", "s"),
            ("header_fields", "tenant"),
            ("payload_include_routing", "true"),
        ],
    );
    assert_eq!(
        text(&kept, 1),
        r#"{"trace_id":null,"tenant":-3,"vip":false,"at":null,"amount":2.0}"#
    );
}

#[test]
fn a_header_value_a_header_cannot_carry_rejects_the_row_naming_the_column() {
    let b = batch(vec![(
        "trace_id",
        Arc::new(StringArray::from(vec![
            "ok",
            "a\r\nInjected: 1",
            " padded",
            "bell\u{7}",
            "tab\tinside",
        ])) as ArrayRef,
    )]);
    let encoded = encode(&b, &[("subject", "s"), ("header_fields", "trace_id")]);
    assert!(encoded.rejection(0).is_none());
    for (row, problem) in [
        (1, "line break"),
        (2, "whitespace"),
        (3, "control character"),
    ] {
        let reason = &encoded.rejection(row).unwrap().reason;
        assert!(
            reason.starts_with("column 'trace_id' (header_fields): its value"),
            "{reason}"
        );
        assert!(reason.contains(problem), "{reason}");
        assert!(headers(&encoded, row).is_empty());
    }
    assert_eq!(headers(&encoded, 4), pairs(&[("trace_id", "tab\tinside")]));

    // The sink's on_error decides: skipped rows carry nothing; 'fail' names the row.
    let config = SinkConfig::from_options(&options(&[
        ("subject", "s"),
        ("header_fields", "trace_id"),
        ("on_error", "skip"),
    ]))
    .unwrap();
    let limit = Limit {
        bytes: 1 << 20,
        source: "the server's max_payload",
    };
    let planner = RowPlanner::new(&config, None, limit);
    assert!(matches!(planner.plan(&encoded, 1, 2), Planned::Skip));
    let config =
        SinkConfig::from_options(&options(&[("subject", "s"), ("header_fields", "trace_id")]))
            .unwrap();
    let error = RowPlanner::new(&config, None, limit)
        .check_fail(&encoded, 10)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("row 12: column 'trace_id' (header_fields)"),
        "{error}"
    );
}

/// A map's entries: names and values, a `None` value being null.
type Entries<'a> = &'a [(&'a str, Option<&'a str>)];

fn map_column(rows: &[Option<Entries>]) -> ArrayRef {
    let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for row in rows {
        match row {
            Some(entries) => {
                for (k, v) in *entries {
                    builder.keys().append_value(k);
                    builder.values().append_option(*v);
                }
                builder.append(true).unwrap();
            }
            None => builder.append(false).unwrap(),
        }
    }
    Arc::new(builder.finish())
}

#[test]
fn map_entries_become_headers_and_bad_names_reject_the_row() {
    let h = map_column(&[
        Some(&[
            ("tenant", Some("a")),
            ("region", Some("eu")),
            ("gone", None),
        ]),
        None,
        Some(&[("bad name", Some("x"))]),
        Some(&[("Bad:Name", Some("x"))]),
        Some(&[("Nats-Msg-Id", Some("x"))]),
        Some(&[("k", Some("multi\nline"))]),
    ]);
    let ids: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 3, 4, 5, 6]));
    let b = batch(vec![("id", ids), ("h", h)]);
    let encoded = encode(
        &b,
        &[
            ("subject", "s"),
            ("headers_field", "h"),
            ("msg_id_field", "id"),
            ("headers", r#"{"source":"sql"}"#),
        ],
    );
    assert_eq!(
        headers(&encoded, 0),
        pairs(&[("tenant", "a"), ("region", "eu")])
    );
    assert!(headers(&encoded, 1).is_empty() && encoded.rejection(1).is_none());
    for (row, problem) in [
        (2, "holds whitespace"),
        (3, "holds a ':'"),
        (4, "set by the sink from 'msg_id_field'"),
        (5, "line break"),
    ] {
        let reason = &encoded.rejection(row).unwrap().reason;
        assert!(
            reason.starts_with("column 'h' (headers_field):"),
            "{reason}"
        );
        assert!(reason.contains(problem), "{reason}");
    }
    // The map column leaves the payload; the id stays.
    assert_eq!(text(&encoded, 0), r#"{"id":1}"#);

    // Static headers, the row's own and the message id go out together.
    let config = SinkConfig::from_options(&options(&[
        ("subject", "s"),
        ("headers_field", "h"),
        ("msg_id_field", "id"),
        ("headers", r#"{"source":"sql"}"#),
        ("ttl", "1h"),
    ]))
    .unwrap();
    let limit = Limit {
        bytes: 1 << 20,
        source: "the server's max_payload",
    };
    let Planned::Send(message) = RowPlanner::new(&config, None, limit).plan(&encoded, 0, 1) else {
        panic!("row 1 is sent");
    };
    let sent = message.headers.unwrap();
    for (name, value) in [
        ("source", "sql"),
        ("tenant", "a"),
        ("region", "eu"),
        ("Nats-Msg-Id", "1"),
        ("Nats-TTL", "3600"),
    ] {
        assert_eq!(sent.get(name).map(|v| v.as_str()), Some(value), "{name}");
    }
    assert_eq!(sent.len(), 5);
}

#[test]
fn ttl_column_accepts_durations_and_seconds_and_rejects_the_rest() {
    let text_ttl: ArrayRef = Arc::new(StringArray::from(vec![
        Some("90s"),
        Some("1h"),
        Some("never"),
        None,
        Some("soon"),
        Some("1.5s"),
        Some("0"),
    ]));
    let b = batch(vec![("t", text_ttl)]);
    let encoded = encode(&b, &[("subject", "s"), ("ttl_field", "t")]);
    let ttl = |i| headers(&encoded, i);
    assert_eq!(ttl(0), pairs(&[("Nats-TTL", "90")]));
    assert_eq!(ttl(1), pairs(&[("Nats-TTL", "3600")]));
    assert_eq!(ttl(2), pairs(&[("Nats-TTL", "never")]));
    assert!(ttl(3).is_empty() && encoded.rejection(3).is_none());
    for (row, problem) in [(4, "is not a TTL"), (5, "whole seconds"), (6, "at least 1")] {
        let reason = &encoded.rejection(row).unwrap().reason;
        assert!(reason.starts_with("column 't' (ttl_field): "), "{reason}");
        assert!(reason.contains(problem), "{reason}");
    }
    assert_eq!(text(&encoded, 0), "{}");

    let seconds: ArrayRef = Arc::new(Int64Array::from(vec![60, -5]));
    let huge: ArrayRef = Arc::new(UInt64Array::from(vec![u64::MAX, 1]));
    let b = batch(vec![("t", seconds), ("u", huge)]);
    let encoded = encode(&b, &[("subject", "s"), ("ttl_field", "t")]);
    assert_eq!(headers(&encoded, 0), pairs(&[("Nats-TTL", "60")]));
    assert!(
        encoded.rejection(1).unwrap().reason.contains("at least 1"),
        "{:?}",
        encoded.rejection(1)
    );
    let encoded = encode(&b, &[("subject", "s"), ("ttl_field", "u")]);
    assert!(
        encoded
            .rejection(0)
            .unwrap()
            .reason
            .contains("more than a TTL can be")
    );
}

#[test]
fn raw_payloads_are_the_column_bytes_unchanged() {
    let body: ArrayRef = Arc::new(BinaryArray::from(vec![
        Some(&[0u8, 0xff, b'\n', 0x80][..]),
        Some(&b""[..]),
        None,
    ]));
    let b = batch(vec![
        ("body", body),
        ("subject", Arc::new(StringArray::from(vec!["a", "b", "c"]))),
        ("k", Arc::new(StringArray::from(vec!["1", "2", "3"]))),
    ]);
    let pairs_ = [
        ("subject_field", "subject"),
        ("format", "raw"),
        ("payload_field", "body"),
        ("header_fields", "k"),
    ];
    let encoded = encode(&b, &pairs_);
    assert_eq!(&encoded.payload(0)[..], &[0u8, 0xff, b'\n', 0x80]);
    assert!(encoded.payload(1).is_empty() && encoded.rejection(1).is_none());
    let reason = &encoded.rejection(2).unwrap().reason;
    assert!(
        reason.starts_with("column 'body' (payload_field) is null"),
        "{reason}"
    );
    assert_eq!(headers(&encoded, 0), pairs(&[("k", "1")]));
    assert_eq!(encoded.subject(0).unwrap().as_str(), "a");
    let encoder = RowEncoder::try_new(&b.schema(), &options(&pairs_)).unwrap();
    assert_eq!(encoder.payload_column_names(), ["body"]);

    // Strings give their UTF-8 bytes; large binary works alike; sliced arrays too.
    let b = batch(vec![
        (
            "s",
            Arc::new(StringArray::from(vec!["x", "héllo", "{\"a\":1}"])) as ArrayRef,
        ),
        (
            "l",
            Arc::new(LargeBinaryArray::from(vec![&b"1"[..], b"22", b"333"])),
        ),
    ]);
    let b = b.slice(1, 2);
    let encoded = encode(
        &b,
        &[("subject", "x"), ("format", "raw"), ("payload_field", "s")],
    );
    assert_eq!(text(&encoded, 0), "héllo");
    assert_eq!(text(&encoded, 1), "{\"a\":1}");
    let encoded = encode(
        &b,
        &[("subject", "x"), ("format", "raw"), ("payload_field", "l")],
    );
    assert_eq!(text(&encoded, 1), "333");
}

#[test]
fn header_and_payload_columns_are_checked_when_the_sink_is_created() {
    let b = typed_columns();
    let missing = refused(&b, &[("subject", "s"), ("header_fields", "trace_id,nope")]);
    assert!(
        missing.contains("option 'header_fields' names column 'nope'"),
        "{missing}"
    );
    assert!(missing.contains("columns: trace_id, tenant"), "{missing}");
    let float = refused(&b, &[("subject", "s"), ("header_fields", "amount")]);
    assert!(
        float.contains("column 'amount' has type Float64"),
        "{float}"
    );
    assert!(float.contains("CAST it to VARCHAR"), "{float}");
    let not_map = refused(&b, &[("subject", "s"), ("headers_field", "trace_id")]);
    assert!(not_map.contains("MAP<VARCHAR, VARCHAR>"), "{not_map}");
    let ttl_type = refused(&b, &[("subject", "s"), ("ttl_field", "vip")]);
    assert!(ttl_type.contains("option 'ttl_field'"), "{ttl_type}");
    let raw_type = refused(
        &b,
        &[
            ("subject", "s"),
            ("format", "raw"),
            ("payload_field", "tenant"),
        ],
    );
    assert!(raw_type.contains("option 'payload_field'"), "{raw_type}");
    assert!(
        raw_type.contains("CAST it to BYTEA or VARCHAR"),
        "{raw_type}"
    );
    let raw_missing = refused(&b, &[("subject", "s"), ("format", "raw")]);
    assert!(
        raw_missing.contains("option 'payload_field': missing"),
        "{raw_missing}"
    );
    let json_field = refused(&b, &[("subject", "s"), ("payload_field", "trace_id")]);
    assert!(
        json_field.contains("applies to format = 'raw' only"),
        "{json_field}"
    );
    let clash = refused(
        &b,
        &[
            ("subject", "s"),
            ("headers", r#"{"Tenant":"x"}"#),
            ("header_fields", "tenant"),
        ],
    );
    assert!(
        clash.contains("column 'tenant' would set header 'Tenant', which 'headers' sets"),
        "{clash}"
    );
    let both_ttl = refused(
        &b,
        &[("subject", "s"), ("ttl", "1h"), ("ttl_field", "tenant")],
    );
    assert!(both_ttl.contains("not both"), "{both_ttl}");
    let bad_ttl = refused(&b, &[("subject", "s"), ("ttl", "500ms")]);
    assert!(bad_ttl.contains("option 'ttl'"), "{bad_ttl}");
    assert!(bad_ttl.contains("whole seconds"), "{bad_ttl}");
}

#[test]
fn timestamp_headers_read_as_in_json_and_out_of_range_ones_reject_the_row() {
    let at: ArrayRef = Arc::new(
        TimestampMillisecondArray::from(vec![1_706_704_496_789, i64::MAX]).with_timezone("UTC"),
    );
    let b = batch(vec![("at", at)]);
    let encoded = encode(&b, &[("subject", "s"), ("header_fields", "at")]);
    assert_eq!(
        headers(&encoded, 0),
        pairs(&[("at", "2024-01-31T12:34:56.789Z")])
    );
    let reason = &encoded.rejection(1).unwrap().reason;
    assert!(
        reason.starts_with("column 'at' (header_fields): "),
        "{reason}"
    );
    assert!(reason.contains("out of range"), "{reason}");
}
