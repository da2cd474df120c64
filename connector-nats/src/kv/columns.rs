//! The key and op columns of a `nats_kv` sink, found in the input schema when the sink is
//! created, and read from each batch: each row's subject (from its key), and its op's
//! headers.

use std::collections::BTreeMap;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::encode::Rejection;
use crate::encode::columns::{column_index, routing_column};
use crate::error::{NatsSinkError, Result};
use crate::kv::keys;
use crate::kv::ops::{self, Ops};
use crate::kv::options::{KEY_FIELD, KeySpec, OP_FIELD};
use crate::subject::{self, ColumnSubjects};

/// Where a batch's keys and ops are, and the subject prefix of the bucket.
#[derive(Debug, Clone)]
pub(crate) struct KeyColumns {
    key: (usize, String),
    op: Option<(usize, String)>,
    prefix: String,
}

/// One batch's keys as subjects, and its ops when the sink has an op column.
pub(crate) struct KeyRows {
    pub subjects: ColumnSubjects,
    pub ops: Option<Ops>,
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
        let subjects = keys::subjects(name, batch.column(*index), &self.prefix, rejections)?;
        let ops = self
            .op
            .as_ref()
            .map(|(index, name)| ops::read(name, batch.column(*index), rejections))
            .transpose()?;
        Ok(KeyRows { subjects, ops })
    }
}
