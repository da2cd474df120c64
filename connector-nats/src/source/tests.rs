//! Unit tests of the source: option rules and decoding, without a server.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::DeliverPolicy;
use bytes::Bytes;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit, UInt64Type};

use super::decode::{Incoming, Position, RowDecoder};
use super::options::{Input, SOURCE_OPTIONS, SourceConfig};
use crate::options::Options;
use crate::options::config::OnError;

fn config(pairs: &[(&str, &str)]) -> crate::error::Result<SourceConfig> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    SourceConfig::from_options(&Options::parse_for(&SOURCE_OPTIONS, &map, false)?)
}

fn err(pairs: &[(&str, &str)]) -> String {
    config(pairs).unwrap_err().to_string()
}

#[test]
fn a_stream_read_takes_its_defaults_from_the_declaration() {
    let c = config(&[("stream", "ORDERS")]).unwrap();
    let Input::JetStream(js) = &c.input else {
        panic!("{c:?}")
    };
    assert_eq!(js.deliver, DeliverPolicy::All);
    assert_eq!(js.consumer, None);
    assert!(!c.bounded);
    assert_eq!(c.fetch_size, 500);
    assert_eq!(c.on_poison, OnError::Fail);
    let c = config(&[
        ("stream", "ORDERS"),
        ("stop_at", "end"),
        ("consumer", "etl"),
        ("filter_subjects", "orders.eu, orders.*.x"),
        ("start_sequence", "7"),
    ])
    .unwrap();
    let Input::JetStream(js) = &c.input else {
        panic!("{c:?}")
    };
    assert!(c.bounded);
    assert_eq!(js.filter_subjects, ["orders.eu", "orders.*.x"]);
    assert_eq!(
        js.deliver,
        DeliverPolicy::ByStartSequence { start_sequence: 7 }
    );
}

#[test]
fn each_rule_names_the_option() {
    let text = err(&[("stream", "S"), ("subjct", "a")]);
    assert!(
        text.contains("unknown option 'subjct' for connector 'nats_source'")
            && text.contains("did you mean 'subject'"),
        "{text}"
    );
    let text = err(&[]);
    assert!(
        text.contains("give 'stream'") && text.contains("'subject'"),
        "{text}"
    );
    // A continuous durable read is checked against its plan when it runs (`link`).
    assert!(config(&[("stream", "S"), ("consumer", "etl")]).is_ok());
    let text = err(&[("subject", "a.>"), ("stop_at", "end")]);
    assert!(text.contains("option 'stop_at'"), "{text}");
    let text = err(&[("subject", "a.>"), ("consumer", "etl")]);
    assert!(
        text.contains("option 'consumer'") && text.contains("give 'stream'"),
        "{text}"
    );
    let text = err(&[("stream", "S"), ("subject", "a")]);
    assert!(
        text.contains("option 'subject'") && text.contains("filter_subjects"),
        "{text}"
    );
    let text = err(&[("stream", "S"), ("deliver", "new"), ("start_sequence", "3")]);
    assert!(
        text.contains("option 'start_sequence'") && text.contains("'deliver'"),
        "{text}"
    );
    let text = err(&[("stream", "S"), ("start_time", "yesterday")]);
    assert!(
        text.contains("option 'start_time'") && text.contains("RFC 3339"),
        "{text}"
    );
    let text = err(&[("stream", "S"), ("filter_subjects", "a..b")]);
    assert!(text.contains("'a..b' is not a subject filter"), "{text}");
    let text = err(&[("stream", "S"), ("on_error", "dead_letter")]);
    assert!(
        text.contains("option 'dead_letter_subject': missing"),
        "{text}"
    );
    let text = err(&[("stream", "S"), ("max_ack_pending", "10")]);
    assert!(text.contains("give 'consumer' too"), "{text}");
    let text = err(&[("stream", "S"), ("deliver", "last_per_subject")]);
    assert!(text.contains("option 'filter_subjects': missing"), "{text}");
    let text = err(&[("stream", "a.b")]);
    assert!(text.contains("option 'stream'"), "{text}");
    assert!(config(&[("subject", "in.>"), ("queue_group", "workers")]).is_ok());
}

#[test]
fn connection_options_are_shared_with_the_sink() {
    let map: HashMap<String, String> = [("servers", "nats://a:4222"), ("token", "t")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(Options::parse_for(&SOURCE_OPTIONS, &map, true).is_ok());
    let map: HashMap<String, String> = [("stream", "S")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let text = Options::parse_for(&SOURCE_OPTIONS, &map, true)
        .unwrap_err()
        .to_string();
    assert!(text.contains("not on CREATE CONNECTION"), "{text}");
}

fn message(sequence: u64, payload: &str) -> Incoming {
    Incoming {
        subject: format!("orders.{sequence}"),
        payload: Bytes::from(payload.to_string()),
        headers: None,
        position: Some(Position {
            sequence,
            stored_ns: 1_700_000_000_000_000_000 + sequence as i64,
        }),
    }
}

fn decoder(fields: Vec<Field>) -> RowDecoder {
    RowDecoder::try_new(Arc::new(Schema::new(fields)), Some("ORDERS".into())).unwrap()
}

#[test]
fn payloads_decode_into_the_columns_and_metadata_comes_from_the_message() {
    let decoder = decoder(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("region", DataType::Utf8View, true),
        Field::new("_sequence", DataType::Int64, true),
        Field::new("_subject", DataType::Utf8View, true),
        Field::new("_stream", DataType::Utf8, true),
        Field::new(
            "_timestamp",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            true,
        ),
        Field::new("_headers", DataType::Utf8, true),
    ]);
    let mut with_headers = message(2, r#"{"id": 2, "unknown": [1, 2], "_subject": "not me"}"#);
    let mut headers = HeaderMap::new();
    headers.insert("b", "2");
    headers.insert("a", "1");
    headers.append("a", "x");
    with_headers.headers = Some(headers);
    let decoded = decoder
        .decode(&[message(1, r#"{"id": 1, "region": "eu"}"#), with_headers])
        .unwrap();
    assert!(decoded.poison.is_empty());
    let batch = decoded.batch;
    assert_eq!(batch.num_rows(), 2);
    let ids = batch.column(0).as_primitive::<Int64Type>();
    assert_eq!((ids.value(0), ids.value(1)), (1, 2));
    // A missing field is null; an unknown one is ignored.
    assert!(batch.column(1).is_null(1));
    let sequences = batch.column(2).as_primitive::<Int64Type>();
    assert_eq!((sequences.value(0), sequences.value(1)), (1, 2));
    // `_subject` in the payload does not override the message's.
    assert_eq!(batch.column(3).as_string_view().value(1), "orders.2");
    assert_eq!(batch.column(4).as_string::<i32>().value(0), "ORDERS");
    assert!(!batch.column(5).is_null(0));
    assert!(batch.column(6).is_null(0));
    assert_eq!(
        batch.column(6).as_string::<i32>().value(1),
        r#"{"a":["1","x"],"b":"2"}"#
    );
}

#[test]
fn a_message_that_does_not_decode_is_poison_and_the_rest_are_rows() {
    let decoder = decoder(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("_sequence", DataType::UInt64, true),
    ]);
    let decoded = decoder
        .decode(&[
            message(1, r#"{"id": 1}"#),
            message(2, r#"{"id": "abc"}"#),
            message(3, "not json"),
            message(4, r#"{"id": 4}{"id": 5}"#),
            message(5, ""),
            message(6, r#"{"id": 6}"#),
        ])
        .unwrap();
    let poison: Vec<usize> = decoded.poison.iter().map(|p| p.index).collect();
    assert_eq!(poison, [1, 2, 3, 4]);
    assert!(
        decoded.poison[0].problem.contains("id"),
        "{:?}",
        decoded.poison[0]
    );
    let sequences = decoded.batch.column(1).as_primitive::<UInt64Type>();
    assert_eq!(sequences.values().to_vec(), [1, 6]);
}

#[test]
fn metadata_columns_are_checked_when_the_table_is_made() {
    let schema = |t| Arc::new(Schema::new(vec![Field::new("_sequence", t, true)]));
    let text = RowDecoder::try_new(schema(DataType::Boolean), Some("S".into()))
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("'_sequence'") && text.contains("BIGINT"),
        "{text}"
    );
    let text = RowDecoder::try_new(schema(DataType::Int64), None)
        .unwrap_err()
        .to_string();
    assert!(
        text.contains("'_sequence'") && text.contains("give 'stream'"),
        "{text}"
    );
}
