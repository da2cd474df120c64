//! Keys of a key-value bucket: the rules a key must follow, and each row's subject
//! (`$KV.<bucket>.<key>`) from the `key_field` column.
//!
//! The rules are those async-nats and the other clients apply (`is_valid_key` in
//! async-nats `jetstream/kv/mod.rs`): letters, digits and `-/_=.`, not starting or ending
//! with `.`. An empty token (`a..b`) is refused too: it would make an invalid subject. A
//! row whose key breaks a rule is not an error here: it gets a [`Rejection`] naming the
//! column and the value, and `on_error` decides.

use std::collections::BTreeMap;
use std::fmt::Write;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;

use crate::encode::Rejection;
use crate::error::Result;
use crate::kv::options::KEY_FIELD;
use crate::subject::{self, ColumnSubjects, MAX_SUBJECT_LEN};

/// Why `key` cannot be a key, as a phrase following "it", or `None` if it can.
pub(crate) fn problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("is empty")
    } else if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'/' | b'_' | b'=' | b'.'))
    {
        Some("holds a character other than letters, digits and '-', '/', '_', '=', '.'")
    } else if key.starts_with('.') || key.ends_with('.') {
        Some("starts or ends with '.'")
    } else if key.contains("..") {
        Some("holds an empty token ('..')")
    } else {
        None
    }
}

/// The subject prefix of `bucket`'s keys.
pub(crate) fn prefix(bucket: &str) -> String {
    format!("$KV.{bucket}.")
}

/// The key column as plain strings: any string type (view, large, dictionary), or
/// integers as their digits. Keys are short, and a key-value put waits for its ack anyway.
pub(crate) fn as_text(column: &ArrayRef) -> Result<StringArray> {
    Ok(cast(column, &DataType::Utf8)?.as_string::<i32>().clone())
}

/// Every row's subject from `keys`, the key column `name` as text: `prefix` and the key.
/// Rows with a null or invalid key get none and are entered in `rejections`.
pub(crate) fn subjects(
    name: &str,
    keys: &StringArray,
    prefix: &str,
    rejections: &mut BTreeMap<usize, Rejection>,
) -> ColumnSubjects {
    let mut built = StringBuilder::with_capacity(keys.len(), keys.len() * (prefix.len() + 16));
    for (row, key) in keys.iter().enumerate() {
        let reason = match key {
            None => Some(format!(
                "column '{name}' ({KEY_FIELD}) is null; every row needs a key (filter the nulls out or COALESCE them)"
            )),
            Some(key) => match problem(key) {
                Some(problem) => Some(format!(
                    "column '{name}' ({KEY_FIELD}) holds {}, which is not a valid key: it {problem}",
                    subject::shown(key)
                )),
                None if prefix.len() + key.len() > MAX_SUBJECT_LEN => Some(format!(
                    "column '{name}' ({KEY_FIELD}) holds a key of {} bytes, longer than a subject may be",
                    key.len()
                )),
                None => None,
            },
        };
        match (reason, key) {
            (None, Some(key)) => {
                // Written into the builder, then ended as one value: no string per row.
                let _ = built.write_str(prefix);
                let _ = built.write_str(key);
                built.append_value("");
            }
            (reason, _) => {
                built.append_null();
                rejections.entry(row).or_insert(Rejection {
                    reason: reason.unwrap_or_default(),
                    subject: None,
                });
            }
        }
    }
    let built: ArrayRef = std::sync::Arc::new(built.finish());
    // A null stands for a row rejected above, which has no subject. Every other subject
    // is valid (its key passed the rules), but a row must never go without one unnoticed.
    let mut subjects = subject::read_column(name, &built, true, None);
    for problem in std::mem::take(&mut subjects.problems) {
        rejections.entry(problem.index).or_insert(Rejection {
            reason: problem.problem,
            subject: problem.value,
        });
    }
    subjects
}
