//! Record batch -> one message per row: payload, subject, reply subject.
//!
//! The payload columns are written by arrow-json's own encoder into one buffer for the
//! whole batch; each row's payload is a zero-copy `Bytes` slice of it. Routing columns are
//! read as Arrow arrays (see `subject`). Encoding is pure: it never publishes, so a batch
//! with a bad row fails before any of its rows is sent.

use std::sync::Arc;

use async_nats::Subject;
use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch, StructArray};
use datafusion::arrow::datatypes::{Field, FieldRef, Fields, SchemaRef};
use datafusion::arrow::json::writer::{EncoderOptions, make_encoder};

use crate::config::{SinkConfig, SubjectSpec};
use crate::error::{NatsSinkError, Result};
use crate::json_form;
use crate::options::{Options, REPLY_TO_FIELD, SUBJECT_FIELD};
use crate::subject;

/// Where each row's subject comes from, resolved against the schema.
#[derive(Debug, Clone)]
enum SubjectSource {
    Fixed(Subject),
    Column { index: usize, name: String },
}

/// The encoding plan for one input schema, built once per sink.
#[derive(Debug, Clone)]
pub struct RowEncoder {
    subject: SubjectSource,
    reply_to: Option<(usize, String)>,
    /// Input column indices that go into the payload, in schema order.
    payload_columns: Vec<usize>,
    payload_fields: Fields,
    /// Payload columns (by position in `payload_columns`) that need the range check.
    range_checked: Vec<usize>,
    /// Average payload bytes per row of the last batch, to size the next buffer.
    row_size_hint: usize,
}

/// One batch, encoded: `len()` messages ready to publish.
#[derive(Debug)]
pub struct EncodedBatch {
    payloads: Bytes,
    /// End offset of each row's payload in `payloads`; row `i` starts at `ends[i-1]`.
    ends: Vec<usize>,
    subjects: Subjects,
    reply_to: Option<Vec<Option<Subject>>>,
}

#[derive(Debug)]
enum Subjects {
    Fixed(Subject),
    PerRow(Vec<Option<Subject>>),
}

impl RowEncoder {
    /// The encoder a sink with `options` uses for `schema` (benchmarks and tools use this to
    /// encode exactly as the sink does).
    pub fn try_new(schema: &SchemaRef, options: &Options) -> Result<Self> {
        Self::from_config(schema, &SinkConfig::from_options(options)?)
    }

    /// Resolves the routing columns and checks every payload column has a JSON form.
    pub(crate) fn from_config(schema: &SchemaRef, config: &SinkConfig) -> Result<Self> {
        let subject = match &config.subject {
            SubjectSpec::Fixed(s) => SubjectSource::Fixed(Subject::from(s.as_str())),
            SubjectSpec::Column(name) => SubjectSource::Column {
                index: routing_column(schema, SUBJECT_FIELD, name)?,
                name: name.clone(),
            },
        };
        let reply_to = config
            .reply_to_field
            .as_ref()
            .map(|name| routing_column(schema, REPLY_TO_FIELD, name).map(|i| (i, name.clone())))
            .transpose()?;
        let routing: Vec<usize> = match (&subject, &reply_to) {
            _ if config.payload_include_routing => vec![],
            (SubjectSource::Column { index, .. }, r) => std::iter::once(*index)
                .chain(r.iter().map(|(i, _)| *i))
                .collect(),
            (SubjectSource::Fixed(_), r) => r.iter().map(|(i, _)| *i).collect(),
        };
        let payload_columns: Vec<usize> = (0..schema.fields().len())
            .filter(|i| !routing.contains(i))
            .collect();
        let payload_fields: Fields = payload_columns
            .iter()
            .map(|&i| schema.fields()[i].clone())
            .collect();
        for field in payload_fields.iter() {
            if let Some(advice) = json_form::unsupported(field.data_type()) {
                return Err(NatsSinkError::UnsupportedType {
                    column: field.name().clone(),
                    data_type: field.data_type().clone(),
                    advice,
                });
            }
        }
        let range_checked = payload_fields
            .iter()
            .enumerate()
            .filter(|(_, f)| json_form::needs_range_check(f.data_type()))
            .map(|(i, _)| i)
            .collect();
        Ok(RowEncoder {
            subject,
            reply_to,
            payload_columns,
            payload_fields,
            range_checked,
            row_size_hint: 64,
        })
    }

    /// The names of the columns that go into the payload.
    pub fn payload_column_names(&self) -> impl Iterator<Item = &str> {
        self.payload_fields.iter().map(|f| f.name().as_str())
    }

    /// Encodes `batch`. `rows_before` is how many rows of the statement came before it, so
    /// that an error can name the row (counted from 1) and say what was already published.
    pub fn encode(&mut self, batch: &RecordBatch, rows_before: u64) -> Result<EncodedBatch> {
        let bad_row = |index: usize, problem: String| NatsSinkError::BadRow {
            row: rows_before + index as u64 + 1,
            problem,
            published: rows_before,
        };
        let subjects = match &self.subject {
            SubjectSource::Fixed(s) => Subjects::Fixed(s.clone()),
            SubjectSource::Column { index, name } => Subjects::PerRow(
                subject::read_column(name, batch.column(*index), false)
                    .map_err(|p| bad_row(p.index, p.problem))?,
            ),
        };
        let reply_to = match &self.reply_to {
            Some((index, name)) => Some(
                subject::read_column(name, batch.column(*index), true)
                    .map_err(|p| bad_row(p.index, p.problem))?,
            ),
            None => None,
        };
        let columns: Vec<ArrayRef> = self
            .payload_columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        for &i in &self.range_checked {
            if let Some(found) = json_form::first_unwritable(&columns[i]) {
                let column = self.payload_fields[i].name();
                let problem = format!("column '{column}': {}", found.reason);
                return Err(match found.row {
                    Some(row) => bad_row(row, problem),
                    None => bad_row(0, format!("{problem} (in a nested value of this batch)")),
                });
            }
        }
        let (payloads, ends) = self.encode_payloads(columns, batch.num_rows())?;
        Ok(EncodedBatch {
            payloads,
            ends,
            subjects,
            reply_to,
        })
    }

    fn encode_payloads(
        &mut self,
        columns: Vec<ArrayRef>,
        rows: usize,
    ) -> Result<(Bytes, Vec<usize>)> {
        let rows_struct =
            StructArray::try_new_with_length(self.payload_fields.clone(), columns, None, rows)?;
        let root: FieldRef = Arc::new(Field::new_struct("", self.payload_fields.clone(), false));
        // Explicit nulls: a consumer sees every column of the row, null or not.
        let options = EncoderOptions::default().with_explicit_nulls(true);
        let mut encoder = make_encoder(&root, &rows_struct, &options)?;
        let mut buf = Vec::with_capacity(rows * self.row_size_hint + 16);
        let mut ends = Vec::with_capacity(rows);
        for row in 0..rows {
            encoder.encode(row, &mut buf);
            ends.push(buf.len());
        }
        if let Some(average) = buf.len().checked_div(rows) {
            self.row_size_hint = average + 1;
        }
        Ok((Bytes::from(buf), ends))
    }
}

fn routing_column(schema: &SchemaRef, option: &'static str, name: &str) -> Result<usize> {
    let index = schema
        .index_of(name)
        .map_err(|_| NatsSinkError::MissingColumn {
            option,
            column: name.to_string(),
            available: schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let data_type = schema.field(index).data_type();
    if !subject::is_string_type(data_type) {
        return Err(NatsSinkError::NotAStringColumn {
            option,
            column: name.to_string(),
            data_type: data_type.clone(),
        });
    }
    Ok(index)
}

impl EncodedBatch {
    /// Number of messages.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Row `i`'s JSON payload (a slice of the batch buffer, no copy).
    pub fn payload(&self, i: usize) -> Bytes {
        self.payloads.slice(self.row_range(i))
    }

    /// Length of row `i`'s payload in bytes.
    pub fn payload_len(&self, i: usize) -> usize {
        self.row_range(i).len()
    }

    fn row_range(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        start..self.ends[i]
    }

    /// Row `i`'s subject.
    pub fn subject(&self, i: usize) -> &Subject {
        match &self.subjects {
            Subjects::Fixed(s) => s,
            Subjects::PerRow(v) => v[i]
                .as_ref()
                .expect("subjects of a non-nullable column are all set"),
        }
    }

    /// Row `i`'s reply subject, if it has one.
    pub fn reply_to(&self, i: usize) -> Option<&Subject> {
        self.reply_to.as_ref().and_then(|r| r[i].as_ref())
    }

    /// Total payload bytes of the batch.
    pub fn payload_bytes(&self) -> usize {
        self.payloads.len()
    }
}

#[cfg(test)]
#[path = "encode_tests.rs"]
mod tests;
