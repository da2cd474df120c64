//! What each row does to its key (`op_field`): put its value, delete the key, or purge
//! the key's history.
//!
//! The operations are sent as the key-value clients send them (async-nats
//! `jetstream/kv/mod.rs`): a put is a plain message whose body is the value; a delete is an
//! empty message with `KV-Operation: DEL`; a purge an empty message with
//! `KV-Operation: PURGE` and `Nats-Rollup: sub`, which makes the stream drop the key's
//! earlier revisions. An op is named in any letter case, and `del` (the header's own word)
//! names a delete too, so a changelog read back from a bucket can be replayed as it is.
//! An op the column cannot name (null, or another word) gets a [`Rejection`] naming the
//! column, the value and the accepted names, and `on_error` decides.

use std::collections::BTreeMap;

use async_nats::{HeaderName, HeaderValue};
use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;

use crate::encode::Rejection;
use crate::encode::headers::RowHeaders;
use crate::error::Result;
use crate::kv::options::OP_FIELD;
use crate::subject;

/// The header that tells a key-value reader what a message does to its key.
pub(crate) const KV_OPERATION: &str = "KV-Operation";
/// The header that makes the stream keep only this message of its subject (a purge).
pub(crate) const NATS_ROLLUP: &str = "Nats-Rollup";

/// The op names a row may give, as its error lists them.
const ACCEPTED: &str = "'put', 'delete' (or 'del') or 'purge', in any letter case";

/// What a row does to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Put,
    Delete,
    Purge,
}

impl Op {
    /// The op a column value names (case does not matter).
    pub(crate) fn parse(value: &str) -> Option<Op> {
        [
            ("put", Op::Put),
            ("delete", Op::Delete),
            ("del", Op::Delete),
            ("purge", Op::Purge),
        ]
        .into_iter()
        .find(|(word, _)| value.eq_ignore_ascii_case(word))
        .map(|(_, op)| op)
    }

    /// The op's `KV-Operation` header value; a put has none.
    pub(crate) fn operation(self) -> Option<&'static str> {
        match self {
            Op::Put => None,
            Op::Delete => Some("DEL"),
            Op::Purge => Some("PURGE"),
        }
    }

    /// The headers a message for this op carries.
    fn headers(self) -> Vec<(HeaderName, HeaderValue)> {
        let header = |name, value| (HeaderName::from_static(name), HeaderValue::from(value));
        let mut headers: Vec<_> = self
            .operation()
            .map(|value| header(KV_OPERATION, value))
            .into_iter()
            .collect();
        if self == Op::Purge {
            headers.push(header(NATS_ROLLUP, "sub"));
        }
        headers
    }
}

/// The ops of one batch: each row's headers and op.
pub(crate) struct Ops {
    pub headers: RowHeaders,
    /// Each row's op (a put for a row whose op is unknown: it is rejected).
    pub ops: Vec<Op>,
}

/// Every row's op from column `name`. A row whose op is null or unknown is entered in
/// `rejections` and treated as a put (so that a dead letter carries its value).
pub(crate) fn read(
    name: &str,
    column: &ArrayRef,
    rejections: &mut BTreeMap<usize, Rejection>,
) -> Result<Ops> {
    let values = cast(column, &DataType::Utf8)?;
    let values = values.as_string::<i32>();
    let (put, delete, purge) = (Op::Put.headers(), Op::Delete.headers(), Op::Purge.headers());
    let mut rows = Vec::with_capacity(values.len());
    let mut ops = Vec::with_capacity(values.len());
    for (row, value) in values.iter().enumerate() {
        let op = value.and_then(Op::parse).unwrap_or_else(|| {
            let held = match value {
                None => "is null".to_string(),
                Some(value) => format!("holds {}", subject::shown(value)),
            };
            rejections.entry(row).or_insert(Rejection {
                reason: format!(
                    "column '{name}' ({OP_FIELD}) {held}; each row's op must be {ACCEPTED}"
                ),
                subject: None,
            });
            Op::Put
        });
        rows.push(match op {
            Op::Put => put.as_slice(),
            Op::Delete => delete.as_slice(),
            Op::Purge => purge.as_slice(),
        });
        ops.push(op);
    }
    Ok(Ops {
        headers: RowHeaders::from_rows(rows),
        ops,
    })
}
