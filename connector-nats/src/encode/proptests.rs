//! Property: whatever the routing columns hold, encoding a batch and building each row's
//! message or dead letter never panics, and each row either goes out carrying exactly its
//! own subject, reply subject and message id, or is refused with a one-line reason and
//! follows `on_error`.
//!
//! The values mix what matters to subjects and headers (CR, LF, NUL, spaces and other
//! whitespace, wildcards, dots, `$`, `:`, non-ASCII) with arbitrary strings and bytes.
//! The messages are built by `deliver::rows`, which makes the async-nats `HeaderMap`s
//! (async-nats panics on a header value with a line break: `src/header.rs`).

use std::sync::Arc;

use async_nats::HeaderMap;
use datafusion::arrow::array::{
    ArrayRef, BinaryArray, DictionaryArray, Int64Array, LargeStringArray, RecordBatch, StringArray,
    StringViewArray,
};
use datafusion::arrow::datatypes::Int16Type;
use proptest::prelude::*;
use proptest::test_runner::Config;

use super::RowEncoder;
use crate::deliver::rows::{
    DEAD_LETTER_REASON, DEAD_LETTER_ROW, DEAD_LETTER_SUBJECT, Limit, Planned, RowPlanner,
};
use crate::options::Options;
use crate::options::config::SinkConfig;
use crate::subject::{self, rules::SubjectRules};

const DEAD_LETTERS: &str = "dead.letters";
const STREAM: &str = "ORDERS";

/// One character, often one that subjects or headers treat specially.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => prop::sample::select(vec!['a', 'b', 'Z', '0', '-', '_', '.']),
        3 => prop::sample::select(vec![
            '\r', '\n', '\0', ' ', '\t', '\u{b}', '\u{c}', '*', '>', '$', ':', 'é', '\u{7f}',
            '\u{85}', '\u{a0}', '\u{2028}', '\u{feff}', '🦀',
        ]),
        1 => any::<char>(),
    ]
}

/// A value for a routing column.
fn tricky_string() -> impl Strategy<Value = String> {
    let short = || prop::collection::vec(tricky_char(), 0..10).prop_map(String::from_iter);
    prop_oneof![
        4 => short(),
        // Inside the subject prefix the rules ask for, so that rows pass them too.
        3 => short().prop_map(|s| format!("orders.{s}")),
        1 => any::<String>(),
        1 => prop::collection::vec(any::<u8>(), 0..16)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => Just(String::new()),
        1 => (1usize..3000).prop_map(|n| format!("orders.{}", "x".repeat(n))),
    ]
}

/// A subject that is often valid, so that rows get through to their message too.
fn subject_value() -> impl Strategy<Value = String> {
    let valid = (
        any::<bool>(),
        prop::collection::vec("[a-zA-Z0-9_$é-]{1,6}", 1..4),
    )
        .prop_map(|(prefixed, tokens)| {
            let tokens = tokens.join(".");
            if prefixed {
                format!("orders.{tokens}")
            } else {
                tokens
            }
        });
    prop_oneof![3 => valid, 2 => tricky_string()]
}

/// How the subject column is stored.
#[derive(Debug, Clone, Copy)]
enum StringType {
    Utf8,
    LargeUtf8,
    Utf8View,
    Dictionary,
}

#[derive(Debug, Clone)]
enum Ids {
    Text(Vec<Option<String>>),
    Integer(Vec<Option<i64>>),
}

#[derive(Debug, Clone)]
struct Case {
    subjects: Vec<Option<String>>,
    replies: Vec<Option<String>>,
    ids: Ids,
    /// Arbitrary bytes in a payload column.
    blobs: Vec<Option<Vec<u8>>>,
    subject_type: StringType,
    on_error: &'static str,
    prefix: bool,
    allow_system: bool,
    expected_stream: bool,
    limit: usize,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..10).prop_flat_map(|rows| {
        let column = |present: f64, values: BoxedStrategy<String>| {
            prop::collection::vec(prop::option::weighted(present, values), rows)
        };
        let ids = prop_oneof![
            3 => column(0.95, tricky_string().boxed()).prop_map(Ids::Text),
            1 => prop::collection::vec(prop::option::weighted(0.95, any::<i64>()), rows)
                .prop_map(Ids::Integer),
        ];
        (
            column(0.95, subject_value().boxed()),
            column(0.5, subject_value().boxed()),
            ids,
            prop::collection::vec(
                prop::option::of(prop::collection::vec(any::<u8>(), 0..24)),
                rows,
            ),
            prop::sample::select(vec![
                StringType::Utf8,
                StringType::LargeUtf8,
                StringType::Utf8View,
                StringType::Dictionary,
            ]),
            prop::sample::select(vec!["fail", "skip", "dead_letter"]),
            any::<(bool, bool, bool)>(),
            prop_oneof![Just(1 << 20), 64usize..2048],
        )
            .prop_map(
                |(subjects, replies, ids, blobs, subject_type, on_error, flags, limit)| Case {
                    subjects,
                    replies,
                    ids,
                    blobs,
                    subject_type,
                    on_error,
                    prefix: flags.0,
                    allow_system: flags.1,
                    expected_stream: flags.2,
                    limit,
                },
            )
    })
}

impl Case {
    fn batch(&self) -> RecordBatch {
        let texts: Vec<Option<&str>> = self.subjects.iter().map(Option::as_deref).collect();
        let subject: ArrayRef = match self.subject_type {
            StringType::Utf8 => Arc::new(StringArray::from(texts)),
            StringType::LargeUtf8 => Arc::new(LargeStringArray::from(texts)),
            StringType::Utf8View => Arc::new(StringViewArray::from(texts)),
            StringType::Dictionary => {
                Arc::new(texts.into_iter().collect::<DictionaryArray<Int16Type>>())
            }
        };
        let reply: ArrayRef = Arc::new(StringArray::from(
            self.replies
                .iter()
                .map(Option::as_deref)
                .collect::<Vec<_>>(),
        ));
        let id: ArrayRef = match &self.ids {
            Ids::Text(ids) => Arc::new(StringArray::from(
                ids.iter().map(Option::as_deref).collect::<Vec<_>>(),
            )),
            Ids::Integer(ids) => Arc::new(Int64Array::from(ids.clone())),
        };
        let blob: ArrayRef = Arc::new(BinaryArray::from(
            self.blobs.iter().map(Option::as_deref).collect::<Vec<_>>(),
        ));
        RecordBatch::try_from_iter([
            ("subject", subject),
            ("reply", reply),
            ("id", id),
            ("blob", blob),
        ])
        .unwrap()
    }

    fn options(&self) -> Options {
        let mut pairs = vec![
            ("subject_field", "subject".to_string()),
            ("reply_to_field", "reply".into()),
            ("msg_id_field", "id".into()),
            ("headers", r#"{"source":"sql","X-Note":"a b: c"}"#.into()),
            ("on_error", self.on_error.into()),
            ("allow_system_subjects", self.allow_system.to_string()),
        ];
        if self.prefix {
            pairs.push(("subject_prefix", "orders.".into()));
        }
        if self.on_error == "dead_letter" {
            pairs.push(("dead_letter_subject", DEAD_LETTERS.into()));
        }
        let map = pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        Options::parse(&map, false).unwrap()
    }

    fn rules(&self) -> SubjectRules {
        SubjectRules {
            allow_system: self.allow_system,
            prefix: self.prefix.then(|| "orders.".to_string()),
            allow_inbox: false,
        }
    }

    /// Row `i`'s message id as text, as the sink reads it.
    fn id(&self, i: usize) -> Option<String> {
        match &self.ids {
            Ids::Text(ids) => ids[i].clone(),
            Ids::Integer(ids) => ids[i].map(|id| id.to_string()),
        }
    }

    /// Whether the row's routing values can all go on the wire as they are (the size
    /// limit aside).
    fn routable(&self, i: usize) -> bool {
        let rules = self.rules();
        let subject_ok = self.subjects[i]
            .as_deref()
            .is_some_and(|s| subject::validate(s).is_ok() && rules.check(s).is_ok());
        let reply_ok = self.replies[i]
            .as_deref()
            .is_none_or(|r| subject::validate(r).is_ok() && rules.for_replies().check(r).is_ok());
        let id_ok = self
            .id(i)
            .is_some_and(|id| !id.is_empty() && !id.contains(['\r', '\n']) && !id.starts_with(' '));
        subject_ok && reply_ok && id_ok
    }
}

/// Every header a message carries, as name and value; each could go on the wire.
fn header_lines(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        assert!(
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':'),
            "header name {name:?}"
        );
        for value in values {
            assert!(
                !value.as_str().contains(['\r', '\n']),
                "header {name}: {value:?}"
            );
            lines.push((name.to_string(), value.as_str().to_string()));
        }
    }
    lines
}

fn header<'a>(lines: &'a [(String, String)], name: &str) -> Option<&'a str> {
    lines
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

fn check(case: &Case) {
    let batch = case.batch();
    let options = case.options();
    let config = SinkConfig::from_options(&options).unwrap();
    let mut encoder = RowEncoder::try_new(&batch.schema(), &options).unwrap();
    let mut encoded = encoder
        .encode(&batch, 0)
        .expect("bad rows are marked, not errors");
    let expected = case.expected_stream.then(|| STREAM.to_string());
    let limit = Limit {
        bytes: case.limit,
        source: "the server's max_payload",
    };
    let messages = RowPlanner::new(&config, expected, limit);
    messages.check_sizes(&mut encoded);
    assert_eq!(encoded.len(), case.subjects.len());

    for i in 0..encoded.len() {
        let row = i as u64 + 1;
        let planned = messages.plan(&encoded, i, row);
        let Some(rejection) = encoded.rejection(i) else {
            assert!(case.routable(i), "row {row} was not refused");
            let Planned::Send(m) = planned else {
                panic!("row {row}: a row that is not refused is sent")
            };
            assert_eq!(Some(m.subject.as_str()), case.subjects[i].as_deref());
            assert_eq!(
                m.reply.as_ref().map(|r| r.as_str()),
                case.replies[i].as_deref()
            );
            let lines = header_lines(m.headers.as_ref().expect("the row has an id"));
            assert_eq!(header(&lines, "Nats-Msg-Id"), case.id(i).as_deref());
            assert_eq!(header(&lines, "source"), Some("sql"));
            assert_eq!(header(&lines, "X-Note"), Some("a b: c"));
            let stream = case.expected_stream.then_some(STREAM);
            assert_eq!(header(&lines, "Nats-Expected-Stream"), stream);
            let payload: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            assert!(payload.get("blob").is_some(), "{payload}");
            continue;
        };
        // A refused row either breaks a rule or is over the size limit.
        assert!(!rejection.reason.is_empty());
        assert!(
            !rejection.reason.contains(['\r', '\n']),
            "one line: {:?}",
            rejection.reason
        );
        assert!(
            !case.routable(i) || rejection.reason.contains("bytes, over"),
            "row {row}: {}",
            rejection.reason
        );
        match (case.on_error, planned) {
            ("skip", Planned::Skip) => {}
            ("fail", Planned::Skip) => {}
            ("dead_letter", Planned::DeadLetter(m)) => {
                assert_eq!(m.subject.as_str(), DEAD_LETTERS);
                assert!(m.reply.is_none());
                let lines = header_lines(m.headers.as_ref().expect("a dead letter has headers"));
                assert!(header(&lines, DEAD_LETTER_REASON).is_some());
                assert_eq!(
                    header(&lines, DEAD_LETTER_ROW),
                    Some(row.to_string().as_str())
                );
                if let Some(subject) = header(&lines, DEAD_LETTER_SUBJECT) {
                    assert!(subject.len() <= subject::MAX_SUBJECT_LEN + 3, "{subject}");
                }
                // Every dead letter has an id: the row's own when a header can carry it,
                // else its position in this execution.
                let id = header(&lines, "Nats-Msg-Id").expect("a dead letter has an id");
                let own = format!("dead-letter:{}", case.id(i).unwrap_or_default());
                assert!(
                    id == own
                        || (id.starts_with("dead-letter:") && id.ends_with(&format!(":{row}"))),
                    "{id}"
                );
            }
            (policy, planned) => panic!("row {row} under {policy}: {planned:?}"),
        }
    }
    let first = encoded.rejections().next().map(|(i, _)| i);
    match (case.on_error, first) {
        ("fail", Some(i)) => {
            let text = messages.check_fail(&encoded, 0).unwrap_err().to_string();
            assert!(text.starts_with(&format!("row {}: ", i + 1)), "{text}");
            assert!(
                text.contains("column '") || text.contains("bytes, over"),
                "{text}"
            );
        }
        _ => assert!(messages.check_fail(&encoded, 0).is_ok()),
    }
}

proptest! {
    #![proptest_config(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    })]

    #[test]
    fn any_value_in_a_routing_column_is_sent_exactly_or_refused_with_a_reason(case in case()) {
        check(&case);
    }

    /// Bytes cannot be a subject or a message id: such a column is refused when the sink
    /// is created (never per row, never with a panic).
    #[test]
    fn a_binary_routing_column_is_refused_when_the_sink_is_created(
        bytes in prop::collection::vec(any::<u8>(), 0..16),
        option in prop::sample::select(vec!["subject_field", "reply_to_field", "msg_id_field"]),
    ) {
        let batch = RecordBatch::try_from_iter([
            ("s", Arc::new(StringArray::from(vec!["orders.a"])) as ArrayRef),
            ("b", Arc::new(BinaryArray::from(vec![bytes.as_slice()]))),
        ])
        .unwrap();
        let mut pairs = vec![(option.to_string(), "b".to_string())];
        if option != "subject_field" {
            pairs.push(("subject_field".into(), "s".into()));
        }
        let options = Options::parse(&pairs.into_iter().collect(), false).unwrap();
        let err = RowEncoder::try_new(&batch.schema(), &options).unwrap_err().to_string();
        prop_assert!(err.contains("column 'b'"), "{}", err);
    }
}

/// A map column of one entry per row: `(key, value)`.
fn one_entry_maps(entries: &[(String, String)]) -> ArrayRef {
    use datafusion::arrow::array::{MapBuilder, StringBuilder};
    let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    for (key, value) in entries {
        builder.keys().append_value(key);
        builder.values().append_value(value);
        builder.append(true).unwrap();
    }
    Arc::new(builder.finish())
}

proptest! {
    #![proptest_config(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    })]

    /// Whatever a header column, a map column or a TTL column holds, each row either goes
    /// out carrying exactly those values as headers, or is refused with a one-line reason
    /// naming the column (never a panic, in the encoder or in async-nats's `HeaderMap`).
    #[test]
    fn any_value_in_a_header_column_is_sent_exactly_or_refused_with_a_reason(
        rows in prop::collection::vec((tricky_string(), tricky_string(), tricky_string(), tricky_string()), 1..8),
    ) {
        use crate::encode::headers::{name_problem, value_problem};
        use crate::options::values::parse_ttl;

        let column = |i: usize| -> ArrayRef {
            let values: Vec<&str> = rows.iter().map(|r| [&r.0, &r.1, &r.2, &r.3][i].as_str()).collect();
            Arc::new(StringArray::from(values))
        };
        let entries: Vec<(String, String)> = rows.iter().map(|r| (r.1.clone(), r.2.clone())).collect();
        let batch = RecordBatch::try_from_iter([
            ("t", column(0)),
            ("h", one_entry_maps(&entries)),
            ("ttl", column(3)),
        ])
        .unwrap();
        let pairs = [
            ("subject", "orders.x"),
            ("header_fields", "t"),
            ("headers_field", "h"),
            ("ttl_field", "ttl"),
            ("on_error", "skip"),
        ];
        let options = Options::parse(
            &pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            false,
        )
        .unwrap();
        let config = SinkConfig::from_options(&options).unwrap();
        let encoded = RowEncoder::from_config(&batch.schema(), &config)
            .unwrap()
            .encode(&batch, 0)
            .unwrap();
        let limit = Limit { bytes: 1 << 20, source: "the server's max_payload" };
        let planner = RowPlanner::new(&config, None, limit);
        for (i, (t, key, value, ttl)) in rows.iter().enumerate() {
            let ttl = parse_ttl(ttl);
            let sendable = value_problem(t).is_none()
                && name_problem(key).is_none()
                && !key.eq_ignore_ascii_case("Nats-TTL")
                && value_problem(value).is_none()
                && ttl.is_ok();
            match planner.plan(&encoded, i, i as u64 + 1) {
                Planned::Send(message) => {
                    prop_assert!(sendable, "row {} sent: {:?}", i, rows[i]);
                    let headers = message.headers.unwrap();
                    let has = |name: &str, wanted: &str| {
                        headers.get_all(name).any(|v| v.as_str() == wanted)
                    };
                    prop_assert!(has("t", t));
                    prop_assert!(has(key, value));
                    prop_assert!(has("Nats-TTL", &ttl.unwrap().header_value()));
                }
                Planned::Skip => {
                    prop_assert!(!sendable, "row {} refused: {:?}", i, encoded.rejection(i));
                    let reason = &encoded.rejection(i).unwrap().reason;
                    prop_assert!(reason.starts_with("column '"), "{}", reason);
                    prop_assert!(!reason.contains(['\r', '\n']), "{}", reason);
                }
                other => prop_assert!(false, "row {}: {:?}", i, other),
            }
        }
    }
}
