//! One encoded batch: each row's payload (a slice of one buffer), subject, reply subject,
//! message id and column headers, and the rows that cannot be delivered.

use std::collections::BTreeMap;

use async_nats::{HeaderMap, HeaderName, HeaderValue, Subject};
use bytes::Bytes;
use datafusion::arrow::array::{Array, StringArray};

use crate::encode::headers::RowHeaders;
use crate::kv::columns::KeyOps;
use crate::kv::ops::Op;
use crate::subject::ColumnSubjects;

/// One batch, encoded: `len()` messages ready to publish.
#[derive(Debug)]
pub struct EncodedBatch {
    pub(crate) payloads: Bytes,
    /// End offset of each row's payload in `payloads`; row `i` starts at `ends[i-1]`.
    pub(crate) ends: Vec<usize>,
    pub(crate) subjects: Subjects,
    pub(crate) reply_to: Option<ColumnSubjects>,
    /// Each row's message id, as text.
    pub(crate) msg_ids: Option<StringArray>,
    /// Each row's headers from header columns (a key-value sink: from its op).
    pub(crate) headers: Option<RowHeaders>,
    /// Each row's key and op, for a key-value sink.
    pub(crate) key_ops: Option<KeyOps>,
    /// Rows that cannot be delivered, by row index.
    pub(crate) rejections: BTreeMap<usize, Rejection>,
}

/// Why a row cannot be delivered, and what a dead letter needs to say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: String,
    /// The row's subject as the query gave it, when there is one.
    pub subject: Option<String>,
}

#[derive(Debug)]
pub(crate) enum Subjects {
    Fixed(Subject),
    PerRow(ColumnSubjects),
}

impl EncodedBatch {
    /// Number of messages.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Row `i`'s payload: its JSON, or its raw bytes (a slice of the batch buffer, no copy).
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

    /// What row `i` was meant to do to a key-value bucket: its key (if not null) and op;
    /// `None` for a sink of another kind.
    pub(crate) fn key_op(&self, i: usize) -> Option<(Option<&str>, Op)> {
        self.key_ops.as_ref().map(|k| (k.key(i), k.op(i)))
    }

    /// Row `i`'s reply subject, if it has one.
    pub fn reply_to(&self, i: usize) -> Option<&Subject> {
        self.reply_to.as_ref().and_then(|r| r.get(i))
    }

    /// Row `i`'s headers from header columns (`header_fields`, `ttl_field`,
    /// `headers_field`), in that order; none for a rejected row.
    pub(crate) fn row_headers(&self, i: usize) -> &[(HeaderName, HeaderValue)] {
        match &self.headers {
            Some(headers) => headers.row(i),
            None => &[],
        }
    }

    /// Row `i`'s headers from header columns as a map, or `None` when it has none (for
    /// tools that publish what the sink would, such as the benchmarks' baselines).
    pub fn header_map(&self, i: usize) -> Option<HeaderMap> {
        let row = self.row_headers(i);
        if row.is_empty() {
            return None;
        }
        let mut map = HeaderMap::new();
        for (name, value) in row {
            map.append(name.clone(), value.clone());
        }
        Some(map)
    }

    /// Total payload bytes of the batch.
    pub fn payload_bytes(&self) -> usize {
        self.payloads.len()
    }
}
