//! `format = 'raw'`: each message is the bytes of the `payload_field` column, unchanged.
//!
//! The values of the batch are copied once into one buffer and each row is a zero-copy
//! slice of it, as with JSON payloads. A string column gives its UTF-8 bytes. A null has
//! no bytes at all (unlike an empty value, which is an empty message): the row is
//! rejected, and `on_error` decides.

use std::collections::BTreeMap;

use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::DataType;

use crate::encode::Rejection;
use crate::options::PAYLOAD_FIELD;

/// The payloads of `column` (named `name`) in one buffer, and the end of each row's;
/// null rows are entered in `rejections` and have an empty payload. Rows marked in
/// `bodiless` (a key-value delete or purge) send no payload, null or not.
pub(crate) fn payloads(
    name: &str,
    column: &ArrayRef,
    bodiless: Option<&[bool]>,
    rejections: &mut BTreeMap<usize, Rejection>,
) -> (Bytes, Vec<usize>) {
    let rows = column.len();
    let has_body = |row: usize| !bodiless.is_some_and(|b| b[row]);
    let mut buf = Vec::new();
    let mut ends = Vec::with_capacity(rows);
    let mut push = |value: Option<&[u8]>| {
        if let Some(bytes) = value
            && has_body(ends.len())
        {
            buf.extend_from_slice(bytes);
        }
        ends.push(buf.len());
    };
    match column.data_type() {
        DataType::Binary => column.as_binary::<i32>().iter().for_each(&mut push),
        DataType::LargeBinary => column.as_binary::<i64>().iter().for_each(&mut push),
        DataType::BinaryView => column.as_binary_view().iter().for_each(&mut push),
        DataType::Utf8 => column
            .as_string::<i32>()
            .iter()
            .for_each(|v| push(v.map(str::as_bytes))),
        DataType::LargeUtf8 => column
            .as_string::<i64>()
            .iter()
            .for_each(|v| push(v.map(str::as_bytes))),
        DataType::Utf8View => column
            .as_string_view()
            .iter()
            .for_each(|v| push(v.map(str::as_bytes))),
        // Refused when the sink is created; should a batch still bring another type,
        // every row is refused rather than sent empty.
        other => {
            for row in 0..rows {
                push(None);
                rejections.entry(row).or_insert(Rejection {
                    reason: format!(
                        "column '{name}' ({PAYLOAD_FIELD}) has type {other}, not binary or string"
                    ),
                    subject: None,
                });
            }
        }
    }
    if column.null_count() > 0 {
        for row in (0..rows).filter(|&row| column.is_null(row) && has_body(row)) {
            rejections.entry(row).or_insert(Rejection {
                reason: format!(
                    "column '{name}' ({PAYLOAD_FIELD}) is null, and a raw message needs bytes: COALESCE it (to '' for an empty message) or filter such rows out"
                ),
                subject: None,
            });
        }
    }
    (Bytes::from(buf), ends)
}
