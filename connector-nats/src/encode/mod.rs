//! Record batch -> one message per row: payload, subject, reply subject.
//!
//! The payload columns are written by arrow-json's own encoder into one buffer for the
//! whole batch; each row's payload is a zero-copy `Bytes` slice of it. Routing columns are
//! read as Arrow arrays (see `subject`). Encoding is pure: it never publishes. A row that
//! cannot become a message (a bad subject, a null message id, a date out of range) is not
//! an error here: it is marked with a [`Rejection`], and the sink's `on_error` policy
//! decides what happens to it.

pub(crate) mod ahead;
pub(crate) mod json_form;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::Subject;
use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, StructArray};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Fields, SchemaRef};
use datafusion::arrow::json::writer::{EncoderOptions, make_encoder};

use crate::error::{NatsSinkError, Result};
use crate::options::config::{SinkConfig, SubjectSpec};
use crate::options::{MSG_ID_FIELD, Options, REPLY_TO_FIELD, SUBJECT_FIELD};
use crate::subject::rules::SubjectRules;
use crate::subject::{self, ColumnSubjects};

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
    subject_rules: SubjectRules,
    reply_rules: SubjectRules,
    reply_to: Option<(usize, String)>,
    msg_id: Option<(usize, String)>,
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
    reply_to: Option<ColumnSubjects>,
    /// Each row's message id, as text.
    msg_ids: Option<StringArray>,
    /// Rows that cannot be delivered, by row index.
    rejections: BTreeMap<usize, Rejection>,
}

/// Why a row cannot be delivered, and what a dead letter needs to say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    /// The row's subject as the query gave it, when there is one.
    pub subject: Option<String>,
}

#[derive(Debug)]
enum Subjects {
    Fixed(Subject),
    PerRow(ColumnSubjects),
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
        let msg_id = config
            .msg_id_field
            .as_ref()
            .map(|name| msg_id_column(schema, name).map(|i| (i, name.clone())))
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
            subject_rules: config.subject_rules.clone(),
            reply_rules: config.subject_rules.for_replies(),
            reply_to,
            msg_id,
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
    /// that an error can name the row (counted from 1). Rows that cannot be delivered are
    /// marked as rejected; only a problem that cannot be tied to a row is an error.
    pub fn encode(&mut self, batch: &RecordBatch, rows_before: u64) -> Result<EncodedBatch> {
        let mut rejections = BTreeMap::new();
        let mut reject_problems = |problems: Vec<subject::RowProblem>, is_subject: bool| {
            for p in problems {
                rejections.entry(p.index).or_insert(Rejection {
                    reason: p.problem,
                    subject: if is_subject { p.value } else { None },
                });
            }
        };
        let subjects = match &self.subject {
            SubjectSource::Fixed(s) => Subjects::Fixed(s.clone()),
            SubjectSource::Column { index, name } => {
                let mut read = subject::read_column(
                    name,
                    batch.column(*index),
                    false,
                    Some(&self.subject_rules),
                );
                reject_problems(std::mem::take(&mut read.problems), true);
                Subjects::PerRow(read)
            }
        };
        let reply_to = self.reply_to.as_ref().map(|(index, name)| {
            let mut read =
                subject::read_column(name, batch.column(*index), true, Some(&self.reply_rules));
            reject_problems(std::mem::take(&mut read.problems), false);
            read
        });
        let msg_ids = match &self.msg_id {
            Some((index, name)) => {
                let ids = cast(batch.column(*index), &DataType::Utf8)?;
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
                Some(without_rows(ids, &unusable))
            }
            None => None,
        };
        let columns: Vec<ArrayRef> = self
            .payload_columns
            .iter()
            .map(|&i| batch.column(i).clone())
            .collect();
        for &i in &self.range_checked {
            let Some(found) = json_form::first_unwritable(&columns[i]) else {
                continue;
            };
            let column = self.payload_fields[i].name();
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
            for row in 0..columns[i].len() {
                if let Some(bad) = json_form::first_unwritable(&columns[i].slice(row, 1)) {
                    rejections.entry(row).or_insert(Rejection {
                        reason: format!("column '{column}': {}", bad.reason),
                        subject: None,
                    });
                }
            }
        }
        let (payloads, ends) = self.encode_payloads(columns, batch.num_rows())?;
        let mut encoded = EncodedBatch {
            payloads,
            ends,
            subjects,
            reply_to,
            msg_ids,
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
            available: column_names(schema),
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

/// The message id column: strings or integers, sent as text.
fn msg_id_column(schema: &SchemaRef, name: &str) -> Result<usize> {
    let index = schema
        .index_of(name)
        .map_err(|_| NatsSinkError::MissingColumn {
            option: MSG_ID_FIELD,
            column: name.to_string(),
            available: column_names(schema),
        })?;
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
/// with them ([`EncodedBatch::msg_id`] gives `None` for a null).
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

fn column_names(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
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

    /// Row `i`'s subject; `None` only for a row rejected for its subject.
    pub fn subject(&self, i: usize) -> Option<&Subject> {
        match &self.subjects {
            Subjects::Fixed(s) => Some(s),
            Subjects::PerRow(rows) => rows.get(i),
        }
    }

    /// Each distinct subject of the batch once: checks that depend only on the subject
    /// are made once per value, and nothing needs to be kept across batches (one subject
    /// per row, as with per-entity subjects, would grow a statement-wide cache forever).
    pub(crate) fn distinct_subjects(&self) -> &[Subject] {
        match &self.subjects {
            Subjects::Fixed(s) => std::slice::from_ref(s),
            Subjects::PerRow(rows) => rows.distinct(),
        }
    }

    /// The index in [`EncodedBatch::distinct_subjects`] of row `i`'s subject; `None` only
    /// for a row rejected for its subject.
    pub(crate) fn subject_index(&self, i: usize) -> Option<usize> {
        match &self.subjects {
            Subjects::Fixed(_) => Some(0),
            Subjects::PerRow(rows) => rows.index(i),
        }
    }

    /// Row `i`'s message id (`msg_id_field`), if the sink has one.
    pub fn msg_id(&self, i: usize) -> Option<&str> {
        self.msg_ids
            .as_ref()
            .filter(|ids| !ids.is_null(i))
            .map(|ids| ids.value(i))
    }

    /// Why row `i` cannot be delivered, if it cannot.
    pub fn rejection(&self, i: usize) -> Option<&Rejection> {
        if self.rejections.is_empty() {
            return None;
        }
        self.rejections.get(&i)
    }

    /// The rejected rows, in row order.
    pub fn rejections(&self) -> impl Iterator<Item = (usize, &Rejection)> {
        self.rejections.iter().map(|(i, r)| (*i, r))
    }

    /// Marks row `i` as undeliverable (kept if it is already rejected for another reason).
    pub(crate) fn reject(&mut self, i: usize, reason: String) {
        let subject = self.subject(i).map(|s| s.to_string());
        self.rejections
            .entry(i)
            .or_insert(Rejection { reason, subject });
    }

    /// Row `i`'s reply subject, if it has one.
    pub fn reply_to(&self, i: usize) -> Option<&Subject> {
        self.reply_to.as_ref().and_then(|r| r.get(i))
    }

    /// Total payload bytes of the batch.
    pub fn payload_bytes(&self) -> usize {
        self.payloads.len()
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
