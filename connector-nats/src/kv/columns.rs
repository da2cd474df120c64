//! The key and op columns of a `nats_kv` sink, found in the input schema when the sink is
//! created, and read from each batch: each row's subject (from its key), and its op's
//! headers.

use std::collections::BTreeMap;

use datafusion::arrow::array::{Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::SchemaRef;

use crate::encode::Rejection;
use crate::encode::columns::{column_index, routing_column};
use crate::encode::headers::RowHeaders;
use crate::error::{NatsSinkError, Result};
use crate::kv::keys;
use crate::kv::ops::{self, Op, Ops};
use crate::kv::options::{KEY_FIELD, KeySpec, OP_FIELD};
use crate::subject::{self, ColumnSubjects};

/// Where a batch's keys and ops are, and the subject prefix of the bucket.
#[derive(Debug, Clone)]
pub(crate) struct KeyColumns {
    key: (usize, String),
    op: Option<(usize, String)>,
    prefix: String,
}

/// One batch's keys as subjects, its op headers when the sink has an op column, and each
/// row's key and op.
pub(crate) struct KeyRows {
    pub subjects: ColumnSubjects,
    pub headers: Option<RowHeaders>,
    pub key_ops: KeyOps,
}

/// What each row of a batch was meant to do to the bucket: its key and its op. A dead
/// letter says both, so that a replay can tell a delete or purge from a put.
#[derive(Debug)]
pub(crate) struct KeyOps {
    /// The key column as text.
    keys: StringArray,
    /// Each row's op; without an op column every row is a put.
    ops: Option<Vec<Op>>,
}

impl KeyOps {
    /// Row `row`'s key as the query gave it (valid or not), if it is not null.
    pub(crate) fn key(&self, row: usize) -> Option<&str> {
        self.keys.is_valid(row).then(|| self.keys.value(row))
    }

    /// Row `row`'s op.
    pub(crate) fn op(&self, row: usize) -> Op {
        self.ops.as_ref().map_or(Op::Put, |ops| ops[row])
    }

    /// Which rows send no value (deletes and purges); `None` when every row is a put.
    pub(crate) fn bodiless(&self) -> Option<Vec<bool>> {
        let ops = self.ops.as_ref()?;
        Some(ops.iter().map(|&op| op != Op::Put).collect())
    }
}

impl KeyColumns {
    /// Finds the columns `spec` names in `schema`: keys are strings or integers (sent as
    /// their digits), ops strings.
    pub(crate) fn resolve(schema: &SchemaRef, spec: &KeySpec) -> Result<Self> {
        let key = column_index(schema, KEY_FIELD, &spec.column)?;
        let data_type = schema.field(key).data_type();
        if !(subject::is_string_type(data_type) || data_type.is_integer()) {
            return Err(NatsSinkError::InvalidOption {
                option: KEY_FIELD.into(),
                problem: format!(
                    "column '{}' has type {data_type}; a key column holds strings or integers: CAST it to VARCHAR",
                    spec.column
                ),
            });
        }
        let op = spec
            .op_column
            .as_ref()
            .map(|name| routing_column(schema, OP_FIELD, name).map(|i| (i, name.clone())))
            .transpose()?;
        Ok(KeyColumns {
            key: (key, spec.column.clone()),
            op,
            prefix: keys::prefix(&spec.bucket),
        })
    }

    /// The input columns that route rather than carry the value.
    pub(crate) fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.key.0).chain(self.op.iter().map(|(i, _)| *i))
    }

    /// Reads `batch`'s keys and ops; a row with a bad key or op is entered in `rejections`.
    pub(crate) fn read(
        &self,
        batch: &RecordBatch,
        rejections: &mut BTreeMap<usize, Rejection>,
    ) -> Result<KeyRows> {
        let (index, name) = &self.key;
        let keys = keys::as_text(batch.column(*index))?;
        let subjects = keys::subjects(name, &keys, &self.prefix, rejections);
        let ops = self
            .op
            .as_ref()
            .map(|(index, name)| ops::read(name, batch.column(*index), rejections))
            .transpose()?;
        let (headers, ops) = match ops {
            Some(Ops { headers, ops }) => (Some(headers), Some(ops)),
            None => (None, None),
        };
        Ok(KeyRows {
            subjects,
            headers,
            key_ops: KeyOps { keys, ops },
        })
    }
}
