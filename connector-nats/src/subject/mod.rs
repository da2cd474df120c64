//! Subjects: the rules a publish subject must follow, and reading them from a column.
//!
//! A subject column is read as an Arrow string array; each distinct value is validated
//! and turned into an `async_nats::Subject` once, and rows share clones of it (building a
//! subject per row cost 8-13% of end-to-end throughput when measured).

pub mod rules;

use std::collections::HashMap;

use async_nats::Subject;
use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Int8Type, Int16Type, Int32Type, Int64Type};
use datafusion::arrow::datatypes::{UInt8Type, UInt16Type, UInt32Type, UInt64Type};

use crate::subject::rules::SubjectRules;

/// The longest subject accepted. The server refuses a protocol line over 4096 bytes
/// (`max_control_line`) and closes the connection; a subject and a reply subject of this
/// length still fit with room for the rest of the line.
pub const MAX_SUBJECT_LEN: usize = 2000;

/// Why a string is not a publish subject.
pub fn validate(subject: &str) -> Result<(), &'static str> {
    if subject.is_empty() {
        return Err("it is empty");
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(
            "it is longer than 2000 bytes, more than the server accepts in one protocol line",
        );
    }
    // Any Unicode whitespace, not only the space, tab, CR and LF that async-nats checks
    // (the sink turns its check off, see `connect`): nats-server 2.15.1 passes a vertical
    // tab or a form feed on in `MSG`, where a client that splits protocol fields at
    // whitespace reads two fields. Other control characters, NUL included, reach
    // subscribers unchanged.
    if subject.chars().any(char::is_whitespace) {
        return Err("it contains whitespace");
    }
    for token in subject.split('.') {
        match token {
            "" => return Err("it has an empty token (a leading, trailing or double '.')"),
            "*" | ">" => {
                return Err("it has a wildcard token ('*' or '>'), which only subscribers may use");
            }
            _ => {}
        }
    }
    Ok(())
}

/// How many characters of a value an error or a dead letter's header shows.
const SHOWN_CHARS: usize = 100;

/// `value` for an error message or a header: quoted, with line breaks and other control
/// characters escaped, and cut after [`SHOWN_CHARS`] characters. Whatever a row holds,
/// the text stays one short line: a dead letter carries it in a header, which can hold
/// no line break and must stay well within the server's `max_payload`.
pub fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_CHARS) {
        None => format!("{value:?}"),
        Some((cut, _)) => format!("{:?}... ({} bytes)", &value[..cut], value.len()),
    }
}

/// A refused subject as a dead letter's `StreamSQL-Subject` header keeps it: whole when
/// it has at most [`MAX_SUBJECT_LEN`] bytes, else cut there (at a character boundary),
/// so that the dead letter fits within the server's `max_payload`.
pub(crate) fn kept(value: &str) -> String {
    if value.len() <= MAX_SUBJECT_LEN {
        return value.to_string();
    }
    let mut cut = MAX_SUBJECT_LEN;
    while !value.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", &value[..cut])
}

/// True for the string types a subject column may have.
pub fn is_string_type(data_type: &DataType) -> bool {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => true,
        DataType::Dictionary(key, value) => {
            key.is_dictionary_key_type()
                && matches!(
                    **value,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
        }
        _ => false,
    }
}

/// A problem with one row's subject; `index` is the row within the batch.
#[derive(Debug, PartialEq, Eq)]
pub struct RowProblem {
    pub index: usize,
    pub problem: String,
    /// The value that is not a subject (`None` for a null), cut after
    /// [`MAX_SUBJECT_LEN`] bytes.
    pub value: Option<String>,
}

/// Every row's subject from a column; rows with a problem have none and are listed in
/// `problems`, in row order.
///
/// Each distinct subject is kept once and rows refer to it by index: a `Subject` per row
/// would cost an atomic reference count per row to make and another to drop.
#[derive(Debug, Default)]
pub struct ColumnSubjects {
    distinct: Vec<Subject>,
    /// Per row, an index into `distinct`, or [`NO_SUBJECT`].
    rows: Vec<u32>,
    pub problems: Vec<RowProblem>,
}

const NO_SUBJECT: u32 = u32::MAX;

impl ColumnSubjects {
    /// Row `i`'s subject; `None` for a row with a problem (or a null, when allowed).
    pub fn get(&self, i: usize) -> Option<&Subject> {
        self.distinct.get(*self.rows.get(i)? as usize)
    }

    /// Each distinct subject of the column once, in the order first seen.
    pub fn distinct(&self) -> &[Subject] {
        &self.distinct
    }

    /// The index in [`ColumnSubjects::distinct`] of row `i`'s subject; `None` for a row
    /// without one.
    pub fn index(&self, i: usize) -> Option<usize> {
        let index = *self.rows.get(i)? as usize;
        (index < self.distinct.len()).then_some(index)
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Adds `subject` as a new distinct value; returns its index.
    fn add(&mut self, subject: Subject) -> u32 {
        self.distinct.push(subject);
        (self.distinct.len() - 1) as u32
    }
}

/// Reads every row's subject from `column`. With `nullable`, a null gives `None` (used for
/// reply subjects); otherwise a null is a problem naming the row. With `rules`, a subject
/// outside them is a problem too.
pub fn read_column(
    name: &str,
    column: &ArrayRef,
    nullable: bool,
    rules: Option<&SubjectRules>,
) -> ColumnSubjects {
    let mut reader = SubjectReader {
        name,
        nullable,
        rules,
        cache: HashMap::default(),
        out: ColumnSubjects::default(),
    };
    match column.data_type() {
        DataType::Utf8 => reader.read(column.as_string::<i32>().iter()),
        DataType::LargeUtf8 => reader.read(column.as_string::<i64>().iter()),
        DataType::Utf8View => reader.read(column.as_string_view().iter()),
        DataType::Dictionary(key, _) => {
            // Resolve each dictionary value at most once; a bad value is a problem only for
            // the rows that use it.
            let (keys, values_array) = dictionary_parts(column, key);
            let values: Vec<Option<Result<u32, String>>> = (0..values_array.len())
                .map(|i| {
                    string_at(&values_array, i)
                        .map(|v| reader.make_subject(v).map(|s| reader.out.add(s)))
                })
                .collect();
            for (index, key) in keys.iter().enumerate() {
                // A key outside the values (an array built without validation) is a null.
                match key.and_then(|k| values.get(k)?.as_ref().map(|v| (k, v))) {
                    Some((_, Ok(subject))) => reader.out.rows.push(*subject),
                    Some((k, Err(problem))) => {
                        reader.out.rows.push(NO_SUBJECT);
                        reader.out.problems.push(RowProblem {
                            index,
                            problem: problem.clone(),
                            value: string_at(&values_array, k).map(kept),
                        });
                    }
                    None => reader.null(index),
                }
            }
        }
        // Refused when the sink is created; should a batch still bring another type,
        // every row is refused, so none is sent without a subject.
        other => {
            for index in 0..column.len() {
                reader.out.rows.push(NO_SUBJECT);
                reader.out.problems.push(RowProblem {
                    index,
                    problem: format!("column '{name}' has type {other}, not a string type"),
                    value: None,
                });
            }
        }
    }
    reader.out
}

struct SubjectReader<'a> {
    name: &'a str,
    nullable: bool,
    rules: Option<&'a SubjectRules>,
    /// Index in `out.distinct` of each value seen.
    cache: HashMap<&'a str, u32, foldhash::fast::RandomState>,
    out: ColumnSubjects,
}

impl<'a> SubjectReader<'a> {
    fn read(&mut self, values: impl Iterator<Item = Option<&'a str>>) {
        self.out.rows.reserve(values.size_hint().0);
        // Consecutive rows often share a subject; skip the hash lookup for them.
        let mut last: Option<(&str, u32)> = None;
        for (index, value) in values.enumerate() {
            let Some(value) = value else {
                self.null(index);
                continue;
            };
            if let Some((text, subject)) = last
                && text == value
            {
                self.out.rows.push(subject);
                continue;
            }
            let subject = match self.cache.get(value) {
                Some(subject) => *subject,
                None => match self.make_subject(value) {
                    Ok(subject) => {
                        let subject = self.out.add(subject);
                        self.cache.insert(value, subject);
                        subject
                    }
                    Err(problem) => {
                        self.out.rows.push(NO_SUBJECT);
                        self.out.problems.push(RowProblem {
                            index,
                            problem,
                            value: Some(kept(value)),
                        });
                        continue;
                    }
                },
            };
            last = Some((value, subject));
            self.out.rows.push(subject);
        }
    }

    /// A null: no subject, and a problem unless nulls are allowed.
    fn null(&mut self, index: usize) {
        self.out.rows.push(NO_SUBJECT);
        if !self.nullable {
            self.out.problems.push(RowProblem {
                index,
                problem: format!(
                    "column '{}' is null; every row needs a subject (filter the nulls out or COALESCE them)",
                    self.name
                ),
                value: None,
            });
        }
    }

    fn make_subject(&self, value: &str) -> Result<Subject, String> {
        validate(value).map_err(|problem| {
            format!(
                "column '{}' holds {}, which is not a valid subject: {problem}",
                self.name,
                shown(value)
            )
        })?;
        if let Some(rules) = self.rules {
            rules.check(value).map_err(|problem| {
                format!(
                    "column '{}' holds {}, which {problem}",
                    self.name,
                    shown(value)
                )
            })?;
        }
        Ok(Subject::from_utf8(Bytes::copy_from_slice(value.as_bytes()))
            .expect("a &str is valid UTF-8"))
    }
}

/// The keys of a dictionary array as `Option<usize>` and its values array.
fn dictionary_parts(column: &ArrayRef, key: &DataType) -> (Vec<Option<usize>>, ArrayRef) {
    macro_rules! parts {
        ($t:ty) => {{
            let dict = column.as_dictionary::<$t>();
            let keys = dict.keys().iter().map(|k| k.map(|k| k as usize)).collect();
            (keys, dict.values().clone())
        }};
    }
    match key {
        DataType::Int8 => parts!(Int8Type),
        DataType::Int16 => parts!(Int16Type),
        DataType::Int32 => parts!(Int32Type),
        DataType::Int64 => parts!(Int64Type),
        DataType::UInt8 => parts!(UInt8Type),
        DataType::UInt16 => parts!(UInt16Type),
        DataType::UInt32 => parts!(UInt32Type),
        DataType::UInt64 => parts!(UInt64Type),
        // `is_string_type` admits only the key types above.
        _ => (Vec::new(), std::sync::Arc::new(StringArray::new_null(0))),
    }
}

/// The string at `index` of a (dictionary values) string array, `None` when null.
fn string_at(values: &ArrayRef, index: usize) -> Option<&str> {
    if values.is_null(index) {
        return None;
    }
    Some(match values.data_type() {
        DataType::LargeUtf8 => values.as_string::<i64>().value(index),
        DataType::Utf8View => values.as_string_view().value(index),
        _ => values.as_string::<i32>().value(index),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{DictionaryArray, LargeStringArray, StringViewArray};
    use std::sync::Arc;

    #[test]
    fn valid_subjects_pass() {
        for s in [
            "orders",
            "orders.processed",
            "a.b-c_d.e*f",
            "$JS.API.INFO",
            "_INBOX.x",
        ] {
            assert_eq!(validate(s), Ok(()), "{s}");
        }
    }

    #[test]
    fn each_rule_rejects_its_case() {
        assert_eq!(validate(""), Err("it is empty"));
        assert!(validate("a b").unwrap_err().contains("whitespace"));
        assert!(validate("a\tb").unwrap_err().contains("whitespace"));
        for s in [
            "a\rb",
            "a\nb",
            "a\u{b}b",
            "a\u{c}b",
            "a\u{85}b",
            "a\u{2028}b",
        ] {
            assert!(validate(s).unwrap_err().contains("whitespace"), "{s:?}");
        }
        assert!(validate(".a").unwrap_err().contains("empty token"));
        assert!(validate("a.").unwrap_err().contains("empty token"));
        assert!(validate("a..b").unwrap_err().contains("empty token"));
        assert!(validate("a.*").unwrap_err().contains("wildcard"));
        assert!(validate("a.>").unwrap_err().contains("wildcard"));
        assert!(validate(&"a".repeat(MAX_SUBJECT_LEN)).is_ok());
        assert!(
            validate(&"a".repeat(MAX_SUBJECT_LEN + 1))
                .unwrap_err()
                .contains("longer than")
        );
    }

    fn texts(subjects: ColumnSubjects) -> Vec<Option<String>> {
        (0..subjects.len())
            .map(|i| subjects.get(i).map(|s| s.to_string()))
            .collect()
    }

    #[test]
    fn reads_every_string_type() {
        let expected = vec![
            Some("a.1".to_string()),
            Some("b".into()),
            Some("a.1".into()),
        ];
        let values = ["a.1", "b", "a.1"];
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(values.to_vec())),
            Arc::new(LargeStringArray::from(values.to_vec())),
            Arc::new(StringViewArray::from(values.to_vec())),
            Arc::new(values.into_iter().collect::<DictionaryArray<Int32Type>>()),
            Arc::new(values.into_iter().collect::<DictionaryArray<UInt8Type>>()),
        ];
        for column in columns {
            assert!(is_string_type(column.data_type()));
            assert_eq!(texts(read_column("s", &column, false, None)), expected);
        }
    }

    #[test]
    fn null_subject_names_the_row_and_column() {
        let column: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None]));
        let read = read_column("subj", &column, false, None);
        assert_eq!(read.problems.len(), 1);
        assert_eq!(read.problems[0].index, 1);
        assert!(read.problems[0].problem.contains("column 'subj' is null"));
        let nullable = read_column("r", &column, true, None);
        assert!(nullable.problems.is_empty());
        assert_eq!(texts(nullable), vec![Some("a".into()), None]);
    }

    #[test]
    fn invalid_subject_names_the_row_and_value() {
        let column: ArrayRef = Arc::new(StringArray::from(vec!["ok", "bad subject", "ok", "x.*"]));
        let read = read_column("s", &column, false, None);
        let rows: Vec<usize> = read.problems.iter().map(|p| p.index).collect();
        assert_eq!(rows, vec![1, 3], "every bad row is reported, in order");
        let problem = &read.problems[0];
        assert!(
            problem.problem.contains("\"bad subject\""),
            "{}",
            problem.problem
        );
        assert_eq!(problem.value.as_deref(), Some("bad subject"));
        assert_eq!(
            texts(read),
            vec![Some("ok".into()), None, Some("ok".into()), None]
        );
    }

    #[test]
    fn invalid_dictionary_value_names_every_row_using_it() {
        let column: ArrayRef = Arc::new(
            ["ok", "ok", "x.>", "x.>"]
                .into_iter()
                .collect::<DictionaryArray<Int32Type>>(),
        );
        let read = read_column("s", &column, false, None);
        let rows: Vec<usize> = read.problems.iter().map(|p| p.index).collect();
        assert_eq!(rows, vec![2, 3]);
        assert_eq!(read.problems[0].value.as_deref(), Some("x.>"));
    }

    #[test]
    fn unused_invalid_dictionary_value_is_not_an_error() {
        let dict = ["ok", "bad subject"]
            .into_iter()
            .collect::<DictionaryArray<Int32Type>>();
        let column: ArrayRef = Arc::new(dict.slice(0, 1));
        let read = read_column("s", &column, false, None);
        assert!(read.problems.is_empty());
        assert_eq!(texts(read), vec![Some("ok".into())]);
    }

    #[test]
    fn shown_values_are_one_quoted_line_cut_after_100_characters() {
        assert_eq!(shown("a\r\nb"), r#""a\r\nb""#);
        let long = "é".repeat(150);
        let text = shown(&long);
        assert!(
            text.starts_with(&format!("\"{}\"...", "é".repeat(100))),
            "{text}"
        );
        assert!(text.ends_with("(300 bytes)"), "{text}");
        assert_eq!(kept("a.b"), "a.b");
        let cut = kept(&"é".repeat(MAX_SUBJECT_LEN));
        assert_eq!(cut, format!("{}...", "é".repeat(MAX_SUBJECT_LEN / 2)));
    }

    /// A batch whose subject column is not a string type (refused when the sink is
    /// created) refuses every row rather than leaving rows without a subject.
    #[test]
    fn a_non_string_batch_column_refuses_every_row() {
        let column: ArrayRef = Arc::new(datafusion::arrow::array::Int64Array::from(vec![1, 2]));
        let read = read_column("s", &column, false, None);
        let rows: Vec<usize> = read.problems.iter().map(|p| p.index).collect();
        assert_eq!(rows, [0, 1]);
        assert_eq!(texts(read), vec![None, None]);
    }

    #[test]
    fn non_string_types_are_not_subject_columns() {
        assert!(!is_string_type(&DataType::Int64));
        assert!(!is_string_type(&DataType::Dictionary(
            Box::new(DataType::Int32),
            Box::new(DataType::Int64)
        )));
        let nested = DataType::Dictionary(
            Box::new(DataType::Int32),
            Box::new(DataType::Dictionary(
                Box::new(DataType::Int8),
                Box::new(DataType::Utf8),
            )),
        );
        assert!(!is_string_type(&nested));
    }
}
