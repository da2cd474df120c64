//! Record batch -> one message per row: payload, subject, reply subject, headers.
//!
//! The payload columns are written by arrow-json's own encoder into one buffer for the
//! whole batch; each row's payload is a zero-copy `Bytes` slice of it (`format = 'raw'`:
//! the bytes of one column, see `raw`). Routing and header columns are read as Arrow
//! arrays (see `subject`, `headers`). Encoding is pure: it never publishes. A row that
//! cannot become a message (a bad subject, a null message id, a header value with a line
//! break, a date out of range) is not an error here: it is marked with a [`Rejection`],
//! and the sink's `on_error` policy decides what happens to it.

pub(crate) mod ahead;
mod batch;
pub(crate) mod columns;
pub(crate) mod headers;
pub(crate) mod json_form;
mod msg_id;
mod raw;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::Subject;
use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch, StructArray};
use datafusion::arrow::compute::filter;
use datafusion::arrow::datatypes::{Field, FieldRef, Fields, SchemaRef};
use datafusion::arrow::json::writer::{EncoderOptions, make_encoder};

use crate::encode::columns::{raw_payload_column, routing_column};
use crate::encode::headers::HeaderColumns;
use crate::error::{NatsSinkError, Result};
use crate::kv::columns::{KeyColumns, KeyOps};
use crate::options::config::{SinkConfig, SubjectSpec};
use crate::options::message::PayloadFormat;
use crate::options::{Options, REPLY_TO_FIELD, SUBJECT_FIELD};
use crate::subject;
use crate::subject::rules::SubjectRules;
pub(crate) use batch::Subjects;
pub use batch::{EncodedBatch, Rejection};

/// Where each row's subject comes from, resolved against the schema.
#[derive(Debug, Clone)]
enum SubjectSource {
    Fixed(Subject),
    Column {
        index: usize,
        name: String,
    },
    /// A key-value bucket's key, with the row's op (`nats_kv`).
    Key(KeyColumns),
}

/// What becomes each row's payload.
#[derive(Debug, Clone)]
enum Payload {
    /// These columns as one JSON object.
    Json {
        /// Input column indices that go into the payload, in schema order.
        columns: Vec<usize>,
        fields: Fields,
        /// Payload columns (by position in `columns`) that need the range check.
        range_checked: Vec<usize>,
    },
    /// The bytes of this column.
    Raw { index: usize, name: String },
}

/// The encoding plan for one input schema, built once per sink.
#[derive(Debug, Clone)]
pub struct RowEncoder {
    subject: SubjectSource,
    subject_rules: SubjectRules,
    reply_rules: SubjectRules,
    reply_to: Option<(usize, String)>,
    msg_id: Option<(usize, String)>,
    headers: HeaderColumns,
    payload: Payload,
    /// Average payload bytes per row of the last batch, to size the next buffer.
    row_size_hint: usize,
}

impl RowEncoder {
    /// The encoder a sink with `options` uses for `schema` (benchmarks and tools use this to
    /// encode exactly as the sink does).
    pub fn try_new(schema: &SchemaRef, options: &Options) -> Result<Self> {
        Self::from_config(schema, &SinkConfig::from_options(options)?)
    }

    /// Resolves the routing and header columns and checks every payload column has a
    /// JSON form (or, raw, that the payload column holds bytes).
    pub(crate) fn from_config(schema: &SchemaRef, config: &SinkConfig) -> Result<Self> {
        let subject = match &config.subject {
            SubjectSpec::Fixed(s) => SubjectSource::Fixed(Subject::from(s.as_str())),
            SubjectSpec::Column(name) => SubjectSource::Column {
                index: routing_column(schema, SUBJECT_FIELD, name)?,
                name: name.clone(),
            },
            SubjectSpec::Key(spec) => SubjectSource::Key(KeyColumns::resolve(schema, spec)?),
        };
        let reply_to = config
            .reply_to_field
            .as_ref()
            .map(|name| routing_column(schema, REPLY_TO_FIELD, name).map(|i| (i, name.clone())))
            .transpose()?;
        let msg_id = config
            .msg_id_field
            .as_ref()
            .map(|name| msg_id::msg_id_column(schema, name).map(|i| (i, name.clone())))
            .transpose()?;
        let headers = HeaderColumns::resolve(schema, config)?;
        let payload = match &config.payload {
            PayloadFormat::Raw(name) => Payload::Raw {
                index: raw_payload_column(schema, name)?,
                name: name.clone(),
            },
            PayloadFormat::Json => {
                // Subject, reply-to and header columns leave the payload by default.
                let routing: Vec<usize> = if config.payload_include_routing {
                    vec![]
                } else {
                    let subject: Vec<usize> = match &subject {
                        SubjectSource::Column { index, .. } => vec![*index],
                        SubjectSource::Key(key) => key.indices().collect(),
                        SubjectSource::Fixed(_) => vec![],
                    };
                    subject
                        .into_iter()
                        .chain(reply_to.iter().map(|(i, _)| *i))
                        .chain(headers.indices())
                        .collect()
                };
                json_payload(schema, &routing)?
            }
        };
        Ok(RowEncoder {
            subject,
            subject_rules: config.subject_rules.clone(),
            reply_rules: config.subject_rules.for_replies(),
            reply_to,
            msg_id,
            headers,
            payload,
            row_size_hint: 64,
        })
    }

    /// The names of the columns that go into the payload.
    pub fn payload_column_names(&self) -> Vec<&str> {
        match &self.payload {
            Payload::Json { fields, .. } => fields.iter().map(|f| f.name().as_str()).collect(),
            Payload::Raw { name, .. } => vec![name.as_str()],
        }
    }

    /// Encodes `batch`. `rows_before` is how many rows of the statement came before it, so
    /// that an error can name the row (counted from 1). Rows that cannot be delivered are
    /// marked as rejected; only a problem that cannot be tied to a row is an error.
    pub fn encode(&mut self, batch: &RecordBatch, rows_before: u64) -> Result<EncodedBatch> {
        let mut rejections = BTreeMap::new();
        // A key-value op may send no value, and sets the row's headers.
        let (mut key_headers, mut key_ops) = (None, None);
        let subjects = match &self.subject {
            SubjectSource::Fixed(s) => Subjects::Fixed(s.clone()),
            SubjectSource::Column { index, name } => {
                let mut read = subject::read_column(
                    name,
                    batch.column(*index),
                    false,
                    Some(&self.subject_rules),
                );
                reject_problems(&mut rejections, std::mem::take(&mut read.problems), true);
                Subjects::PerRow(read)
            }
            SubjectSource::Key(key) => {
                let read = key.read(batch, &mut rejections)?;
                key_headers = read.headers;
                key_ops = Some(read.key_ops);
                Subjects::PerRow(read.subjects)
            }
        };
        let reply_to = self.reply_to.as_ref().map(|(index, name)| {
            let mut read =
                subject::read_column(name, batch.column(*index), true, Some(&self.reply_rules));
            reject_problems(&mut rejections, std::mem::take(&mut read.problems), false);
            read
        });
        let msg_ids = match &self.msg_id {
            Some((index, name)) => Some(msg_id::read_ids(
                name,
                batch.column(*index),
                &mut rejections,
            )?),
            None => None,
        };
        let headers = match key_headers {
            Some(headers) => Some(headers),
            None => self.headers.read(batch, &mut rejections)?,
        };
        let bodiless = key_ops.as_ref().and_then(KeyOps::bodiless);
        let bodiless = bodiless.as_deref();
        let (payloads, ends) = match &self.payload {
            Payload::Raw { index, name } => {
                raw::payloads(name, batch.column(*index), bodiless, &mut rejections)
            }
            Payload::Json {
                columns,
                fields,
                range_checked,
            } => {
                let columns: Vec<ArrayRef> =
                    columns.iter().map(|&i| batch.column(i).clone()).collect();
                check_ranges(
                    &columns,
                    fields,
                    range_checked,
                    bodiless,
                    rows_before,
                    &mut rejections,
                )?;
                let fields = fields.clone();
                self.encode_payloads(fields, columns, batch.num_rows(), bodiless)?
            }
        };
        let mut encoded = EncodedBatch {
            payloads,
            ends,
            subjects,
            reply_to,
            msg_ids,
            headers,
            key_ops,
            rejections: BTreeMap::new(),
        };
        // Rejections for a reason other than the subject still name the row's subject.
        for (row, mut rejection) in rejections {
            if rejection.subject.is_none() {
                rejection.subject = encoded.subject(row).map(|s| s.to_string());
            }
            encoded.rejections.insert(row, rejection);
        }
        Ok(encoded)
    }

    fn encode_payloads(
        &mut self,
        fields: Fields,
        columns: Vec<ArrayRef>,
        rows: usize,
        bodiless: Option<&[bool]>,
    ) -> Result<(Bytes, Vec<usize>)> {
        let rows_struct = StructArray::try_new_with_length(fields.clone(), columns, None, rows)?;
        let root: FieldRef = Arc::new(Field::new_struct("", fields, false));
        // Explicit nulls: a consumer sees every column of the row, null or not.
        let options = EncoderOptions::default().with_explicit_nulls(true);
        let mut encoder = make_encoder(&root, &rows_struct, &options)?;
        let mut buf = Vec::with_capacity(rows * self.row_size_hint + 16);
        let mut ends = Vec::with_capacity(rows);
        for row in 0..rows {
            if !bodiless.is_some_and(|b| b[row]) {
                encoder.encode(row, &mut buf);
            }
            ends.push(buf.len());
        }
        if let Some(average) = buf.len().checked_div(rows) {
            self.row_size_hint = average + 1;
        }
        Ok((Bytes::from(buf), ends))
    }
}

/// Enters each of a column's subject `problems` in `rejections` (the first reason for a
/// row is kept); `is_subject`: the problems are the row's subject's, whose value a dead
/// letter names.
fn reject_problems(
    rejections: &mut BTreeMap<usize, Rejection>,
    problems: Vec<subject::RowProblem>,
    is_subject: bool,
) {
    for p in problems {
        rejections.entry(p.index).or_insert(Rejection {
            reason: p.problem,
            subject: if is_subject { p.value } else { None },
        });
    }
}

/// The JSON payload plan: every column but `routing`, each with a JSON form.
fn json_payload(schema: &SchemaRef, routing: &[usize]) -> Result<Payload> {
    let columns: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !routing.contains(i))
        .collect();
    let fields: Fields = columns
        .iter()
        .map(|&i| schema.fields()[i].clone())
        .collect();
    for field in fields.iter() {
        if let Some(advice) = json_form::unsupported(field.data_type()) {
            return Err(NatsSinkError::UnsupportedType {
                column: field.name().clone(),
                data_type: field.data_type().clone(),
                advice,
            });
        }
    }
    let range_checked = fields
        .iter()
        .enumerate()
        .filter(|(_, f)| json_form::needs_range_check(f.data_type()))
        .map(|(i, _)| i)
        .collect();
    Ok(Payload::Json {
        columns,
        fields,
        range_checked,
    })
}

/// Rejects the rows holding a date or time arrow-json cannot write; such a value in a
/// nested column, whose row is not known, fails the batch. Rows marked in `bodiless` (a
/// key-value delete or purge) send no value, so their values are not checked.
fn check_ranges(
    columns: &[ArrayRef],
    fields: &Fields,
    range_checked: &[usize],
    bodiless: Option<&[bool]>,
    rows_before: u64,
    rejections: &mut BTreeMap<usize, Rejection>,
) -> Result<()> {
    let has_body = |row: usize| !bodiless.is_some_and(|b| b[row]);
    // Only the rows that send a value, when some do not.
    let sent = bodiless
        .filter(|b| b.contains(&true))
        .map(|b| BooleanArray::from(b.iter().map(|&none| !none).collect::<Vec<_>>()));
    for &i in range_checked {
        let checked = match &sent {
            Some(mask) => filter(&columns[i], mask)?,
            None => columns[i].clone(),
        };
        let Some(found) = json_form::first_unwritable(&checked) else {
            continue;
        };
        let column = fields[i].name();
        if found.row.is_none() {
            return Err(NatsSinkError::BadRow {
                row: rows_before + 1,
                problem: format!(
                    "column '{column}': {} (in a nested value of this batch, so the row is not known and the batch fails whatever 'on_error' says)",
                    found.reason
                ),
                published: rows_before,
            });
        }
        // Rare: find every row with such a value, one row at a time.
        for row in (0..columns[i].len()).filter(|&row| has_body(row)) {
            if let Some(bad) = json_form::first_unwritable(&columns[i].slice(row, 1)) {
                rejections.entry(row).or_insert(Rejection {
                    reason: format!("column '{column}': {}", bad.reason),
                    subject: None,
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod header_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
