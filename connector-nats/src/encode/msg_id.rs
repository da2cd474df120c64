//! The message id column (`msg_id_field`): each row's `Nats-Msg-Id`, as text. A row whose
//! id a header cannot carry (null, empty, a line break, a leading space) is rejected.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};

use crate::encode::Rejection;
use crate::encode::columns::column_index;
use crate::error::{NatsSinkError, Result};
use crate::options::MSG_ID_FIELD;
use crate::subject;

/// The message id column: strings or integers, sent as text.
pub(crate) fn msg_id_column(schema: &SchemaRef, name: &str) -> Result<usize> {
    let index = column_index(schema, MSG_ID_FIELD, name)?;
    let data_type = schema.field(index).data_type();
    if !(subject::is_string_type(data_type) || data_type.is_integer()) {
        return Err(NatsSinkError::InvalidOption {
            option: MSG_ID_FIELD.into(),
            problem: format!(
                "column '{name}' has type {data_type}; a message id column must hold strings or integers: CAST it to VARCHAR"
            ),
        });
    }
    Ok(index)
}

/// Every row's id from `column` (named `name`); rows whose id cannot be sent are entered
/// in `rejections` and have a null id.
pub(crate) fn read_ids(
    name: &str,
    column: &ArrayRef,
    rejections: &mut BTreeMap<usize, Rejection>,
) -> Result<StringArray> {
    let ids = cast(column, &DataType::Utf8)?;
    let ids = ids.as_string::<i32>().clone();
    // One pass over the batch's id bytes; rows are searched only if it finds one.
    let breaks = ids.value_data().iter().any(|b| matches!(b, b'\r' | b'\n'));
    let mut unusable = Vec::new();
    for row in 0..ids.len() {
        let problem = if ids.is_null(row) {
            "is null; every row needs a message id".to_string()
        } else {
            let Some(problem) = msg_id_problem(ids.value(row), breaks) else {
                continue;
            };
            unusable.push(row);
            problem
        };
        rejections.entry(row).or_insert(Rejection {
            reason: format!("column '{name}' ({MSG_ID_FIELD}) {problem}"),
            subject: None,
        });
    }
    Ok(without_rows(ids, &unusable))
}

/// Why `id` cannot be sent as a `Nats-Msg-Id` header, as a phrase following "column 'c'".
///
/// - A line break: async-nats panics on a header value holding CR or LF
///   (`HeaderValue::from`, async-nats 0.51 `src/header.rs`), and on the wire it would end
///   the header early.
/// - Leading spaces: a header's value starts after the spaces that follow its colon
///   (nats-server `doc/adr/0004-nats-headers.md`); nats-server 2.15.1 takes `Nats-Msg-Id:  a`
///   for the id `a`, so the row would be dropped as a duplicate of another row's id (or,
///   all spaces, carry no id).
///
/// `breaks`: whether any id of the batch may hold a line break.
fn msg_id_problem(id: &str, breaks: bool) -> Option<String> {
    if id.is_empty() {
        return Some("is empty; every row needs a message id".into());
    }
    if breaks && id.contains(['\r', '\n']) {
        return Some(format!(
            "holds a line break, which a NATS header cannot carry: {}",
            subject::shown(id)
        ));
    }
    if id.starts_with(' ') {
        return Some(format!(
            "holds {}, which starts with a space: NATS reads a header value without its leading spaces, so the stream would take it for another id (trim it in the query)",
            subject::shown(id)
        ));
    }
    None
}

/// `ids` with the values at `rows` made null, so that no message or dead letter is built
/// with them (`EncodedBatch::msg_id` gives `None` for a null).
fn without_rows(ids: StringArray, rows: &[usize]) -> StringArray {
    if rows.is_empty() {
        return ids;
    }
    let valid: NullBuffer = (0..ids.len())
        .map(|row| ids.is_valid(row) && rows.binary_search(&row).is_err())
        .collect();
    let (offsets, values, _) = ids.into_parts();
    StringArray::new(offsets, values, Some(valid))
}
