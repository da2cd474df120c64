//! Encoding: payload layout, routing columns, JSON decisions and bad rows.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, Int64Array, StringArray, TimestampMillisecondArray, UnionArray,
};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::datatypes::{DataType, Field, Schema, UnionFields};

use super::*;
use crate::deliver::rows::{DEAD_LETTER_ROW, Limit, Planned, RowPlanner};

pub(super) fn options(pairs: &[(&str, &str)]) -> Options {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Options::parse(&map, false).unwrap()
}

pub(super) fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    RecordBatch::try_from_iter(columns).unwrap()
}

fn payloads(encoded: &EncodedBatch) -> Vec<String> {
    (0..encoded.len())
        .map(|i| String::from_utf8(encoded.payload(i).to_vec()).unwrap())
        .collect()
}

fn sample() -> RecordBatch {
    batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        ("subject", Arc::new(StringArray::from(vec!["a.x", "b.y"]))),
        (
            "note",
            Arc::new(StringArray::from(vec![Some("line\nbreak"), None])),
        ),
    ])
}

fn encoder(batch: &RecordBatch, pairs: &[(&str, &str)]) -> Result<RowEncoder> {
    RowEncoder::try_new(&batch.schema(), &options(pairs))
}

#[test]
fn routing_column_is_left_out_and_nulls_are_explicit() {
    let b = sample();
    let encoded = encoder(&b, &[("subject_field", "subject")])
        .unwrap()
        .encode(&b, 0)
        .unwrap();
    assert_eq!(
        payloads(&encoded),
        vec![
            r#"{"id":1,"note":"line\nbreak"}"#,
            r#"{"id":2,"note":null}"#
        ]
    );
    assert_eq!(encoded.subject(0).unwrap().as_str(), "a.x");
    assert_eq!(encoded.subject(1).unwrap().as_str(), "b.y");
    assert_eq!(encoded.reply_to(0), None);
}

#[test]
fn payload_include_routing_keeps_the_subject_column() {
    let b = sample();
    let mut e = encoder(
        &b,
        &[
            ("subject_field", "subject"),
            ("payload_include_routing", "true"),
        ],
    )
    .unwrap();
    assert_eq!(
        payloads(&e.encode(&b, 0).unwrap())[0],
        r#"{"id":1,"subject":"a.x","note":"line\nbreak"}"#
    );
}

#[test]
fn fixed_subject_keeps_every_column_in_the_payload() {
    let b = sample();
    let encoded = encoder(&b, &[("subject", "fixed.s")])
        .unwrap()
        .encode(&b, 0)
        .unwrap();
    assert_eq!(encoded.subject(1).unwrap().as_str(), "fixed.s");
    assert!(payloads(&encoded)[0].contains(r#""subject":"a.x""#));
}

#[test]
fn reply_to_column_gives_reply_subjects_and_null_means_none() {
    let b = batch(vec![
        ("id", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        (
            "reply",
            Arc::new(StringArray::from(vec![Some("_INBOX.r1"), None])),
        ),
    ]);
    let encoded = encoder(&b, &[("subject", "s"), ("reply_to_field", "reply")])
        .unwrap()
        .encode(&b, 0)
        .unwrap();
    assert_eq!(encoded.reply_to(0).map(|s| s.as_str()), Some("_INBOX.r1"));
    assert_eq!(encoded.reply_to(1), None);
    assert_eq!(payloads(&encoded)[0], r#"{"id":1}"#);
}

#[test]
fn payloads_are_slices_of_one_buffer() {
    let b = sample();
    let encoded = encoder(&b, &[("subject_field", "subject")])
        .unwrap()
        .encode(&b, 0)
        .unwrap();
    let (first, second) = (encoded.payload(0), encoded.payload(1));
    // Zero copy: row 1 starts where row 0 ends in the same allocation.
    assert_eq!(unsafe { first.as_ptr().add(first.len()) }, second.as_ptr());
    assert_eq!(encoded.payload_bytes(), first.len() + second.len());
}

#[test]
fn nan_and_infinity_become_null() {
    let b = batch(vec![(
        "f",
        Arc::new(Float64Array::from(vec![f64::NAN, f64::INFINITY, 1.5])) as ArrayRef,
    )]);
    let encoded = encoder(&b, &[("subject", "s")])
        .unwrap()
        .encode(&b, 0)
        .unwrap();
    assert_eq!(
        payloads(&encoded),
        vec![r#"{"f":null}"#, r#"{"f":null}"#, r#"{"f":1.5}"#]
    );
}

#[test]
fn bad_subject_rejects_the_row_and_fail_names_the_statement_row() {
    let b = batch(vec![(
        "subject",
        Arc::new(StringArray::from(vec![Some("ok"), None, Some("a b")])) as ArrayRef,
    )]);
    let options = options(&[("subject_field", "subject")]);
    let encoded = encoder(&b, &[("subject_field", "subject")])
        .unwrap()
        .encode(&b, 100)
        .unwrap();
    assert!(encoded.rejection(0).is_none());
    let null = encoded.rejection(1).unwrap();
    assert!(null.reason.contains("column 'subject' is null"), "{null:?}");
    let invalid = encoded.rejection(2).unwrap();
    assert_eq!(
        invalid.subject.as_deref(),
        Some("a b"),
        "kept for dead letters"
    );

    let config = SinkConfig::from_options(&options).unwrap();
    let limit = Limit {
        bytes: 1 << 20,
        source: "the server's max_payload",
    };
    let text = RowPlanner::new(&config, None, limit)
        .check_fail(&encoded, 100)
        .unwrap_err()
        .with_confirmed(100)
        .to_string();
    assert!(
        text.starts_with("row 102: column 'subject' is null"),
        "{text}"
    );
    assert!(text.contains("100 earlier rows were published"), "{text}");
}

/// Subjects from data cannot reach the server's API or other clients' inboxes, nor leave
/// `subject_prefix`; each refused row keeps its subject for the error and dead letter.
#[test]
fn rows_outside_the_subject_rules_are_rejected_with_their_subject() {
    let b = batch(vec![(
        "subject",
        Arc::new(StringArray::from(vec![
            "orders.eu",
            "$JS.API.STREAM.DELETE.ORDERS",
            "_INBOX.x.1",
            "payments.eu",
        ])) as ArrayRef,
    )]);
    let by_default = encoder(&b, &[("subject_field", "subject")])
        .unwrap()
        .encode(&b, 0)
        .unwrap();
    let rejected: Vec<usize> = by_default.rejections().map(|(i, _)| i).collect();
    assert_eq!(rejected, [1, 2]);
    let refusal = by_default.rejection(1).unwrap();
    assert!(
        refusal.reason.contains(
            "holds \"$JS.API.STREAM.DELETE.ORDERS\", which is a system or internal subject"
        ),
        "{refusal:?}"
    );
    assert_eq!(
        refusal.subject.as_deref(),
        Some("$JS.API.STREAM.DELETE.ORDERS")
    );

    let fenced = encoder(
        &b,
        &[("subject_field", "subject"), ("subject_prefix", "orders.")],
    )
    .unwrap()
    .encode(&b, 0)
    .unwrap();
    let rejected: Vec<usize> = fenced.rejections().map(|(i, _)| i).collect();
    assert_eq!(rejected, [1, 2, 3]);
    assert!(
        fenced
            .rejection(3)
            .unwrap()
            .reason
            .contains("outside subject_prefix 'orders.'")
    );

    // Reply subjects: inboxes pass, the JetStream API does not.
    let with_replies = batch(vec![
        (
            "subject",
            Arc::new(StringArray::from(vec!["orders.eu", "orders.us"])) as ArrayRef,
        ),
        (
            "reply",
            Arc::new(StringArray::from(vec![
                "_INBOX.me.1",
                "$JS.API.STREAM.DELETE.X",
            ])),
        ),
    ]);
    let replies = encoder(
        &with_replies,
        &[("subject_field", "subject"), ("reply_to_field", "reply")],
    )
    .unwrap()
    .encode(&with_replies, 0)
    .unwrap();
    let rejected: Vec<usize> = replies.rejections().map(|(i, _)| i).collect();
    assert_eq!(rejected, [1]);
    assert!(
        replies
            .rejection(1)
            .unwrap()
            .reason
            .contains("column 'reply' holds \"$JS.API")
    );

    let allowed = encoder(
        &b,
        &[
            ("subject_field", "subject"),
            ("allow_system_subjects", "true"),
        ],
    )
    .unwrap()
    .encode(&b, 0)
    .unwrap();
    assert_eq!(allowed.rejections().count(), 0);
}

#[test]
fn out_of_range_timestamps_reject_their_rows_instead_of_writing_error_text() {
    let ts = TimestampMillisecondArray::from(vec![0, i64::MAX, 5, i64::MIN]);
    let b = batch(vec![("ts", Arc::new(ts) as ArrayRef)]);
    let encoded = encoder(&b, &[("subject", "s")])
        .unwrap()
        .encode(&b, 0)
        .unwrap();
    let rejected: Vec<usize> = encoded.rejections().map(|(i, _)| i).collect();
    assert_eq!(rejected, vec![1, 3]);
    let reason = &encoded.rejection(1).unwrap().reason;
    assert!(reason.starts_with("column 'ts'"), "{reason}");
    assert!(reason.contains("out of range"), "{reason}");
    assert_eq!(encoded.rejection(1).unwrap().subject.as_deref(), Some("s"));
}

#[test]
fn message_ids_come_from_string_or_integer_columns_and_must_be_set() {
    let b = batch(vec![(
        "id",
        Arc::new(Int64Array::from(vec![Some(7), None])) as ArrayRef,
    )]);
    let encoded = encoder(&b, &[("subject", "s"), ("msg_id_field", "id")])
        .unwrap()
        .encode(&b, 0)
        .unwrap();
    assert_eq!(encoded.msg_id(0), Some("7"));
    assert!(
        encoded
            .rejection(1)
            .unwrap()
            .reason
            .contains("'id' (msg_id_field) is null")
    );
    let b = batch(vec![(
        "f",
        Arc::new(Float64Array::from(vec![1.0])) as ArrayRef,
    )]);
    let err = encoder(&b, &[("subject", "s"), ("msg_id_field", "f")])
        .unwrap_err()
        .to_string();
    assert!(err.contains("must hold strings or integers"), "{err}");
}

/// A message id goes into a `Nats-Msg-Id` header: one with a line break (which async-nats
/// cannot put in a header) or a leading space (which NATS drops, so the stream would see
/// another id) refuses its row, naming the column and showing the value on one line; the
/// row's dead letter is built without the id.
#[test]
fn message_ids_a_header_cannot_carry_refuse_their_row() {
    let ids = [
        "ok-1",
        "a\r\nPUB x 0",
        "b\n",
        "\rc",
        " d",
        "e f ",
        "\t",
        "\0",
    ];
    let b = batch(vec![(
        "id",
        Arc::new(StringArray::from(ids.to_vec())) as ArrayRef,
    )]);
    let options = options(&[
        ("subject", "s"),
        ("msg_id_field", "id"),
        ("on_error", "dead_letter"),
        ("dead_letter_subject", "dead"),
    ]);
    let encoded = RowEncoder::try_new(&b.schema(), &options)
        .unwrap()
        .encode(&b, 0)
        .unwrap();
    let rejected: Vec<usize> = encoded.rejections().map(|(i, _)| i).collect();
    assert_eq!(rejected, [1, 2, 3, 4]);
    let reason = &encoded.rejection(1).unwrap().reason;
    assert_eq!(
        reason,
        r#"column 'id' (msg_id_field) holds a line break, which a NATS header cannot carry: "a\r\nPUB x 0""#
    );
    let reason = &encoded.rejection(4).unwrap().reason;
    assert!(
        reason.contains(r#"holds " d", which starts with a space"#),
        "{reason}"
    );
    // Spaces inside or at the end, tabs and NUL are carried as they are.
    for (i, id) in ids.iter().enumerate().skip(5) {
        assert_eq!(encoded.msg_id(i), Some(*id));
    }

    let config = SinkConfig::from_options(&options).unwrap();
    let limit = Limit {
        bytes: 1 << 20,
        source: "the server's max_payload",
    };
    let messages = RowPlanner::new(&config, None, limit);
    for (i, row) in [(1, "2"), (4, "5")] {
        let Planned::DeadLetter(letter) = messages.plan(&encoded, i, i as u64 + 1) else {
            panic!("row {row} is dead-lettered");
        };
        let headers = letter.headers.unwrap();
        assert_eq!(headers.get(DEAD_LETTER_ROW).unwrap().as_str(), row);
        // The row's id cannot be carried: the dead letter's id is its position in this
        // execution instead, so a resent dead letter is still a duplicate.
        let id = headers.get("Nats-Msg-Id").unwrap().as_str();
        assert!(
            id.starts_with("dead-letter:") && id.ends_with(&format!(":{row}")),
            "{id}"
        );
    }
    let Planned::Send(message) = messages.plan(&encoded, 6, 7) else {
        panic!("row 7 is sent");
    };
    assert_eq!(
        message
            .headers
            .unwrap()
            .get("Nats-Msg-Id")
            .unwrap()
            .as_str(),
        "\t"
    );
}

/// However long a bad value, the reason quotes at most its first 100 characters, and a
/// dead letter keeps at most the first 2000 bytes of a refused subject.
#[test]
fn long_bad_values_are_cut_in_reasons_and_dead_letters() {
    let long_subject = format!("orders.{}", "é ".repeat(100_000));
    let long_id = format!("{}\n", "i".repeat(100_000));
    let b = batch(vec![
        (
            "subject",
            Arc::new(StringArray::from(vec![long_subject.as_str(), "ok"])) as ArrayRef,
        ),
        (
            "id",
            Arc::new(StringArray::from(vec!["1", long_id.as_str()])),
        ),
    ]);
    let encoded = encoder(&b, &[("subject_field", "subject"), ("msg_id_field", "id")])
        .unwrap()
        .encode(&b, 0)
        .unwrap();
    for i in 0..2 {
        let rejection = encoded.rejection(i).unwrap();
        assert!(rejection.reason.len() < 400, "{}", rejection.reason);
        assert!(rejection.reason.contains("bytes)"), "{}", rejection.reason);
    }
    let kept = encoded.rejection(0).unwrap().subject.as_deref().unwrap();
    assert!(kept.len() <= crate::subject::MAX_SUBJECT_LEN + 3);
    assert!(long_subject.starts_with(kept.trim_end_matches("...")));
    assert_eq!(encoded.rejection(1).unwrap().subject.as_deref(), Some("ok"));
}

#[test]
fn routing_columns_must_exist_and_hold_strings() {
    let b = sample();
    let missing = encoder(&b, &[("subject_field", "subj")])
        .unwrap_err()
        .to_string();
    assert!(missing.contains("names column 'subj'"), "{missing}");
    assert!(missing.contains("columns: id, subject, note"), "{missing}");
    let wrong = encoder(&b, &[("subject_field", "id")])
        .unwrap_err()
        .to_string();
    assert!(wrong.contains("must be a string column"), "{wrong}");
    assert!(wrong.contains("Int64"), "{wrong}");
}

#[test]
fn a_column_without_json_form_is_refused_when_the_sink_is_created() {
    let fields =
        UnionFields::try_new(vec![0], vec![Field::new("i", DataType::Int64, true)]).unwrap();
    let union = UnionArray::try_new(
        fields,
        ScalarBuffer::from(vec![0i8]),
        None,
        vec![Arc::new(Int64Array::from(vec![1])) as ArrayRef],
    )
    .unwrap();
    let b = batch(vec![("u", Arc::new(union) as ArrayRef)]);
    let text = encoder(&b, &[("subject", "s")]).unwrap_err().to_string();
    assert!(text.starts_with("column 'u' has type Union"), "{text}");
}

#[test]
fn all_columns_routing_gives_empty_objects() {
    let schema = Arc::new(Schema::new(vec![Field::new(
        "subject",
        DataType::Utf8,
        false,
    )]));
    let b = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["a"]))]).unwrap();
    let encoded = encoder(&b, &[("subject_field", "subject")])
        .unwrap()
        .encode(&b, 0)
        .unwrap();
    assert_eq!(payloads(&encoded), vec!["{}"]);
}
