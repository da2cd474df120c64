//! `nats_kv`: key rules, ops, option rules, and what a batch encodes to.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;

use super::keys;
use super::ops::Op;
use super::options::{KV_OPTIONS, sink_config};
use crate::encode::{EncodedBatch, RowEncoder};
use crate::error::Result;
use crate::options::Options;
use crate::options::config::SinkConfig;

fn config(pairs: &[(&str, &str)]) -> Result<SinkConfig> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    sink_config(&Options::parse_for(&KV_OPTIONS, &map, false)?)
}

/// A batch of changes: key, op, and a value `v` counting from 1.
fn changes(keys: &[Option<&str>], ops: &[&str]) -> RecordBatch {
    let values: Vec<i64> = (1..=keys.len() as i64).collect();
    RecordBatch::try_from_iter(vec![
        ("k", Arc::new(StringArray::from(keys.to_vec())) as ArrayRef),
        ("op", Arc::new(StringArray::from(ops.to_vec()))),
        ("v", Arc::new(Int64Array::from(values))),
    ])
    .unwrap()
}

fn changelog() -> RecordBatch {
    changes(
        &[
            Some("user.1"),
            Some("bad key"),
            Some("user.1"),
            None,
            Some("user/2"),
        ],
        &["put", "put", "DELETE", "put", "upsert"],
    )
}

fn encode(batch: &RecordBatch, pairs: &[(&str, &str)]) -> Result<EncodedBatch> {
    let schema: SchemaRef = batch.schema();
    RowEncoder::from_config(&schema, &config(pairs)?)?.encode(batch, 0)
}

const OPTIONS: &[(&str, &str)] = &[("bucket", "b"), ("key_field", "k"), ("op_field", "op")];

#[test]
fn keys_follow_the_clients_rules() {
    for key in ["a", "user.1", "A-z_0=9/x", "a.b.c"] {
        assert_eq!(keys::problem(key), None, "{key}");
    }
    for key in ["", "a b", "a*", "a>", "é", "$a", ".a", "a.", "a..b", "a:b"] {
        assert!(keys::problem(key).is_some(), "{key:?}");
    }
}

#[test]
fn ops_are_put_delete_or_del_or_purge_in_any_case() {
    assert_eq!(Op::parse("put"), Some(Op::Put));
    assert_eq!(Op::parse("Delete"), Some(Op::Delete));
    assert_eq!(Op::parse("del"), Some(Op::Delete));
    assert_eq!(Op::parse("DEL"), Some(Op::Delete));
    assert_eq!(Op::parse("PURGE"), Some(Op::Purge));
    for word in ["upsert", "", "dele", "put "] {
        assert_eq!(Op::parse(word), None, "{word:?}");
    }
}

/// A word that names no op is refused, naming the column, the value and every accepted
/// name (the statement's error adds the row: `a_bad_op_or_a_missing_key_column_is_named`).
#[test]
fn an_op_that_is_no_op_names_the_row_column_and_accepted_values() {
    let a = Some("a");
    let batch = changes(&[a, a, a], &["PUT", "Del", "upsert"]);
    let encoded = encode(&batch, OPTIONS).unwrap();
    let rejected: Vec<(usize, &str)> = encoded
        .rejections()
        .map(|(i, r)| (i, r.reason.as_str()))
        .collect();
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let (row, reason) = rejected[0];
    assert_eq!(row, 2);
    assert!(
        reason.contains("column 'op' (op_field) holds \"upsert\"")
            && reason.contains("'put', 'delete' (or 'del') or 'purge', in any letter case"),
        "{reason}"
    );
    assert_eq!(
        encoded.row_headers(1)[0].1.as_str(),
        "DEL",
        "'Del' is a delete"
    );
}

#[test]
fn each_row_becomes_a_message_on_its_key_with_its_op() {
    let encoded = encode(&changelog(), OPTIONS).unwrap();
    let subject = |i| encoded.subject(i).map(|s| s.to_string());
    assert_eq!(subject(0).as_deref(), Some("$KV.b.user.1"));
    assert_eq!(subject(4).as_deref(), Some("$KV.b.user/2"));
    // A put's value is the row without its key and op; a delete sends nothing.
    assert_eq!(&encoded.payload(0)[..], br#"{"v":1}"#);
    assert!(encoded.row_headers(0).is_empty());
    assert!(encoded.payload(2).is_empty());
    let headers: Vec<(String, String)> = encoded
        .row_headers(2)
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    assert_eq!(headers, [("KV-Operation".to_string(), "DEL".to_string())]);
}

#[test]
fn integer_keys_are_their_digits() {
    let batch = RecordBatch::try_from_iter(vec![
        ("k", Arc::new(Int64Array::from(vec![42, -1])) as ArrayRef),
        ("v", Arc::new(Int64Array::from(vec![1, 2]))),
    ])
    .unwrap();
    let encoded = encode(&batch, &[("bucket", "b"), ("key_field", "k")]).unwrap();
    assert_eq!(encoded.subject(0).map(|s| s.as_str()), Some("$KV.b.42"));
    assert_eq!(encoded.subject(1).map(|s| s.as_str()), Some("$KV.b.-1"));
    let schema = RecordBatch::try_from_iter(vec![(
        "k",
        Arc::new(datafusion::arrow::array::Float64Array::from(vec![1.5])) as ArrayRef,
    )])
    .unwrap()
    .schema();
    let config = config(&[("bucket", "b"), ("key_field", "k")]).unwrap();
    let err = RowEncoder::from_config(&schema, &config)
        .unwrap_err()
        .to_string();
    assert!(err.contains("CAST it to VARCHAR"), "{err}");
}

#[test]
fn bad_keys_and_ops_name_the_column_and_value() {
    let encoded = encode(&changelog(), OPTIONS).unwrap();
    let reasons: Vec<(usize, String)> = encoded
        .rejections()
        .map(|(i, r)| (i, r.reason.clone()))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert_eq!(reasons[0].0, 1);
    assert!(
        reasons[0]
            .1
            .contains("column 'k' (key_field) holds \"bad key\"")
            && reasons[0].1.contains("not a valid key"),
        "{reasons:?}"
    );
    assert_eq!(reasons[1].0, 3);
    assert!(
        reasons[1].1.contains("column 'k' (key_field) is null"),
        "{reasons:?}"
    );
    assert_eq!(reasons[2].0, 4);
    assert!(
        reasons[2]
            .1
            .contains("column 'op' (op_field) holds \"upsert\"")
            && reasons[2]
                .1
                .contains("'put', 'delete' (or 'del') or 'purge'"),
        "{reasons:?}"
    );
    // A rejected row keeps its value, for its dead letter.
    assert_eq!(&encoded.payload(4)[..], br#"{"v":5}"#);
}

#[test]
fn a_purge_asks_for_a_rollup_and_raw_deletes_need_no_value() {
    let batch = RecordBatch::try_from_iter(vec![
        (
            "k",
            Arc::new(StringArray::from(vec!["a", "a", "b"])) as ArrayRef,
        ),
        (
            "op",
            Arc::new(StringArray::from(vec!["put", "purge", "delete"])),
        ),
        (
            "body",
            Arc::new(BinaryArray::from(vec![Some(&b"x"[..]), Some(b"y"), None])),
        ),
    ])
    .unwrap();
    let pairs = [OPTIONS, &[("format", "raw"), ("payload_field", "body")]].concat();
    let encoded = encode(&batch, &pairs).unwrap();
    assert_eq!(encoded.rejections().count(), 0, "a delete needs no value");
    assert_eq!(&encoded.payload(0)[..], b"x");
    assert!(encoded.payload(1).is_empty() && encoded.payload(2).is_empty());
    let headers: Vec<String> = encoded
        .row_headers(1)
        .iter()
        .map(|(n, v)| format!("{n}: {v}"))
        .collect();
    assert_eq!(headers, ["KV-Operation: PURGE", "Nats-Rollup: sub"]);
}

#[test]
fn options_map_onto_the_bucket_stream() {
    let mapped = config(OPTIONS).unwrap();
    match &mapped.mode {
        crate::options::config::Mode::JetStream(js) => {
            assert_eq!(js.stream, "KV_b");
            assert_eq!(js.max_in_flight, 1024);
            assert_eq!(js.max_in_flight_bytes, 64 << 20);
        }
        other => panic!("{other:?}"),
    }
    let given = [OPTIONS, &[("max_in_flight_bytes", "512KiB")]].concat();
    match config(&given).unwrap().mode {
        crate::options::config::Mode::JetStream(js) => {
            assert_eq!(js.max_in_flight_bytes, 512 << 10)
        }
        other => panic!("{other:?}"),
    }
    let err = |pairs: &[(&str, &str)]| config(pairs).unwrap_err().to_string();
    assert!(err(&[("key_field", "k")]).contains("option 'bucket': missing"));
    assert!(err(&[("bucket", "b")]).contains("option 'key_field': missing"));
    assert!(err(&[("bucket", "a.b"), ("key_field", "k")]).contains("not a bucket name"));
    let same = err(&[("bucket", "b"), ("key_field", "k"), ("op_field", "k")]);
    assert!(same.contains("option 'op_field'"), "{same}");
    // Options of nats_sink that do not apply are unknown here.
    let unknown = err(&[("bucket", "b"), ("key_field", "k"), ("subject", "x")]);
    assert!(
        unknown.contains("unknown option 'subject' for connector 'nats_kv'"),
        "{unknown}"
    );
}

#[test]
fn a_missing_key_column_is_named_at_creation() {
    let batch = changelog();
    let pairs = [("bucket", "b"), ("key_field", "id")];
    let err = RowEncoder::from_config(&batch.schema(), &config(&pairs).unwrap()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("option 'key_field' names column 'id'") && text.contains("columns: k, op, v"),
        "{text}"
    );
}

#[test]
fn every_option_is_declared_once_with_a_doc() {
    let mut names: Vec<_> = KV_OPTIONS.iter().map(|s| s.name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), KV_OPTIONS.len());
    assert!(KV_OPTIONS.iter().all(|s| !s.doc.is_empty()));
}

#[test]
fn dead_letters_inside_a_bucket_are_refused() {
    let mut pairs = OPTIONS.to_vec();
    pairs.extend([
        ("on_error", "dead_letter"),
        ("dead_letter_subject", "$KV.b.errors"),
    ]);
    let err = config(&pairs).unwrap_err().to_string();
    assert!(
        err.contains("dead_letter_subject") && err.contains("key-value bucket"),
        "{err}"
    );
    pairs.pop();
    pairs.push(("dead_letter_subject", "dlq.kv"));
    assert!(config(&pairs).is_ok());
}

/// A delete or purge sends no value, so the values it does not send are not checked: an
/// out-of-range timestamp, top level or nested, in a delete's or purge's row is no
/// problem, while in a put's row it is.
#[test]
fn values_a_delete_or_purge_does_not_send_are_not_checked() {
    use datafusion::arrow::array::{StructArray, TimestampSecondArray};
    use datafusion::arrow::datatypes::Field;

    let batch = |ops: [&str; 3]| {
        let at: ArrayRef = Arc::new(TimestampSecondArray::from(vec![i64::MAX, i64::MAX, 1]));
        let field = Arc::new(Field::new("at", at.data_type().clone(), true));
        let detail: ArrayRef = Arc::new(StructArray::from(vec![(field, at.clone())]));
        RecordBatch::try_from_iter(vec![
            (
                "k",
                Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
            ),
            ("op", Arc::new(StringArray::from(ops.to_vec()))),
            ("at", at),
            ("detail", detail),
        ])
        .unwrap()
    };
    let encoded = encode(&batch(["delete", "purge", "put"]), OPTIONS).unwrap();
    assert_eq!(encoded.rejections().count(), 0);
    assert!(encoded.payload(0).is_empty() && encoded.payload(1).is_empty());
    assert_eq!(
        &encoded.payload(2)[..],
        br#"{"at":"1970-01-01T00:00:01","detail":{"at":"1970-01-01T00:00:01"}}"#
    );
    // A put sends the value: nested, its row is not known and the batch fails.
    let err = encode(&batch(["put", "delete", "put"]), OPTIONS).unwrap_err();
    assert!(err.to_string().contains("column 'detail'"), "{err}");

    let top_level = batch(["put", "delete", "put"]).project(&[0, 1, 2]).unwrap();
    let encoded = encode(&top_level, OPTIONS).unwrap();
    let rejected: Vec<usize> = encoded.rejections().map(|(i, _)| i).collect();
    assert_eq!(rejected, [0], "only the put's row");
}

/// A dead letter says what its row was meant to do: its key, and for a delete or purge
/// `KV-Operation` (never `Nats-Rollup`, which would drop the dead-letter stream's earlier
/// messages), so a replay can tell an empty delete from a put of an empty value.
#[test]
fn dead_letters_carry_the_rows_key_and_op() {
    use crate::deliver::rows::{
        DEAD_LETTER_KEY, DEAD_LETTER_OPERATION, Limit, Planned, RowPlanner,
    };

    let batch = changes(
        &[Some("bad key"), Some("bad\r\nkey"), None, Some("fine")],
        &["delete", "PURGE", "put", "upsert"],
    );
    let mut pairs = OPTIONS.to_vec();
    pairs.extend([
        ("on_error", "dead_letter"),
        ("dead_letter_subject", "dlq.kv"),
    ]);
    let encoded = encode(&batch, &pairs).unwrap();
    assert_eq!(encoded.rejections().count(), 4);
    let limit = Limit {
        bytes: 1 << 20,
        source: "the server's max_payload",
    };
    let planner = RowPlanner::new(&config(&pairs).unwrap(), None, limit);
    let letter = |i: usize| {
        let Planned::DeadLetter(letter) = planner.plan(&encoded, i, i as u64 + 1) else {
            panic!("row {i} is dead-lettered");
        };
        let headers = letter.headers.unwrap();
        let get = |name: &str| headers.get(name).map(|v| v.as_str().to_string());
        (
            get(DEAD_LETTER_KEY),
            get(DEAD_LETTER_OPERATION),
            get("Nats-Rollup"),
            letter.payload,
        )
    };
    let (key, op, rollup, payload) = letter(0);
    assert_eq!(
        (key.as_deref(), op.as_deref(), rollup),
        (Some("bad key"), Some("DEL"), None)
    );
    assert!(payload.is_empty(), "a delete has no value");
    let (key, op, rollup, _) = letter(1);
    assert_eq!(
        (key.as_deref(), op.as_deref(), rollup),
        (Some("bad  key"), Some("PURGE"), None),
        "a line break cannot be in a header"
    );
    let (key, op, _, payload) = letter(2);
    assert_eq!((key, op), (None, None), "a null key, a put");
    assert_eq!(&payload[..], br#"{"v":3}"#);
    // An op that is none: its reason names it, and the row keeps its value.
    let (key, op, _, payload) = letter(3);
    assert_eq!((key.as_deref(), op), (Some("fine"), None));
    assert_eq!(&payload[..], br#"{"v":4}"#);
}
