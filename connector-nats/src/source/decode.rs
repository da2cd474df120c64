//! Messages into a record batch of the table's columns.
//!
//! Payloads are decoded by arrow-json's [`Decoder`] into the declared payload columns:
//! a missing field is null, an unknown field is ignored. Metadata columns (`_subject`,
//! `_stream`, `_sequence`, `_timestamp`, `_headers`) are filled from the message, never
//! from its payload. A whole chunk of messages is decoded in one pass; only when that
//! fails is each message decoded alone, to find the ones that cannot be decoded (each a
//! [`Poison`], naming its subject, sequence and arrow-json's reason).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use datafusion::arrow::array::{
    ArrayRef, RecordBatch, RecordBatchOptions, StringArray, TimestampNanosecondArray, UInt64Array,
};
use datafusion::arrow::compute::{can_cast_types, cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::json::ReaderBuilder;

use crate::error::{NatsSinkError, Result};

/// A message as the source read it.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub subject: String,
    pub payload: Bytes,
    pub headers: Option<HeaderMap>,
    /// Where the stream holds it; `None` for a core message.
    pub position: Option<Position>,
}

/// A JetStream message's place in its stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub sequence: u64,
    /// When the stream stored it, in nanoseconds since the Unix epoch.
    pub stored_ns: i64,
}

impl Incoming {
    /// "subject 'a.b' (stream 'S', sequence 7)", for messages and logs.
    pub(crate) fn describe(&self, stream: Option<&str>) -> String {
        match (self.position, stream) {
            (Some(p), Some(stream)) => format!(
                "subject '{}' (stream '{stream}', sequence {})",
                self.subject, p.sequence
            ),
            _ => format!("subject '{}'", self.subject),
        }
    }
}

/// A column filled from the message rather than its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    Subject,
    Stream,
    Sequence,
    Timestamp,
    Headers,
}

/// The metadata columns: name, what fills it, and its natural Arrow type.
const META: &[(&str, Meta)] = &[
    ("_subject", Meta::Subject),
    ("_stream", Meta::Stream),
    ("_sequence", Meta::Sequence),
    ("_timestamp", Meta::Timestamp),
    ("_headers", Meta::Headers),
];

impl Meta {
    fn natural_type(self) -> DataType {
        match self {
            Meta::Subject | Meta::Stream | Meta::Headers => DataType::Utf8,
            Meta::Sequence => DataType::UInt64,
            Meta::Timestamp => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        }
    }

    /// Whether a column of this kind may be declared as `declared`: the natural type
    /// cast without loss of meaning (a sequence as BIGINT or text, a time as any
    /// TIMESTAMP, text as any string type).
    fn accepts(self, declared: &DataType) -> bool {
        let string = matches!(
            declared,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
        );
        let fits = match self {
            Meta::Subject | Meta::Stream | Meta::Headers => string,
            Meta::Sequence => string || matches!(declared, DataType::Int64 | DataType::UInt64),
            Meta::Timestamp => matches!(declared, DataType::Timestamp(..)),
        };
        fits && can_cast_types(&self.natural_type(), declared)
    }

    fn needs_stream(self) -> bool {
        matches!(self, Meta::Stream | Meta::Sequence | Meta::Timestamp)
    }
}

/// Where each declared column comes from.
#[derive(Debug, Clone, Copy)]
enum Column {
    /// The payload column at this index of the payload schema.
    Payload(usize),
    Meta(Meta),
}

/// A message that cannot become a row, and why.
#[derive(Debug, Clone)]
pub(crate) struct Poison {
    /// Its index in the decoded chunk.
    pub index: usize,
    pub problem: String,
}

/// What a chunk of messages became.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// One row per message that decoded, in order.
    pub batch: RecordBatch,
    pub poison: Vec<Poison>,
}

/// Decodes chunks of messages into the table's schema.
#[derive(Debug)]
pub(crate) struct RowDecoder {
    schema: SchemaRef,
    payload_schema: SchemaRef,
    columns: Vec<Column>,
    /// The stream read, for `_stream`; `None` for a core subscription.
    stream: Option<String>,
}

impl RowDecoder {
    /// Checks the metadata columns of `schema` (a type they cannot be cast to, or one
    /// that needs a stream on a core subscription, is refused naming the column).
    pub(crate) fn try_new(schema: SchemaRef, stream: Option<String>) -> Result<Self> {
        let mut payload_fields = Vec::new();
        let mut columns = Vec::new();
        for field in schema.fields() {
            let meta = META
                .iter()
                .find(|(name, _)| *name == field.name())
                .map(|(_, meta)| *meta);
            let Some(meta) = meta else {
                columns.push(Column::Payload(payload_fields.len()));
                payload_fields.push(Arc::clone(field));
                continue;
            };
            if meta.needs_stream() && stream.is_none() {
                return Err(NatsSinkError::InvalidOption {
                    option: "stream".into(),
                    problem: format!(
                        "column '{}' is filled from a JetStream message, but a core subscription has none: give 'stream' or drop the column",
                        field.name()
                    ),
                });
            }
            let natural = meta.natural_type();
            if !meta.accepts(field.data_type()) {
                return Err(NatsSinkError::InvalidOption {
                    option: field.name().clone(),
                    problem: format!(
                        "metadata column '{}' holds {natural} values and cannot be declared as {}; declare it e.g. as {}",
                        field.name(),
                        field.data_type(),
                        match meta {
                            Meta::Sequence => "BIGINT",
                            Meta::Timestamp => "TIMESTAMP",
                            _ => "VARCHAR",
                        }
                    ),
                });
            }
            columns.push(Column::Meta(meta));
        }
        let payload_schema = Arc::new(Schema::new(payload_fields));
        // Built once here so that a payload type arrow-json cannot read fails the CREATE.
        ReaderBuilder::new(Arc::clone(&payload_schema))
            .build_decoder()
            .map_err(|e| NatsSinkError::InvalidOption {
                option: "format".into(),
                problem: format!("the columns cannot be decoded from JSON: {e}"),
            })?;
        Ok(RowDecoder {
            schema,
            payload_schema,
            columns,
            stream,
        })
    }

    /// The rows of `messages`; the ones that do not decode are returned as poison.
    pub(crate) fn decode(&self, messages: &[Incoming]) -> Result<Decoded> {
        let (payload, poison) = match self.decode_payloads(messages) {
            Ok(batch) => (batch, Vec::new()),
            Err(_) => self.decode_one_by_one(messages)?,
        };
        let kept: Vec<&Incoming> = messages
            .iter()
            .enumerate()
            .filter(|(i, _)| !poison.iter().any(|p| p.index == *i))
            .map(|(_, m)| m)
            .collect();
        let batch = self.assemble(&payload, &kept)?;
        Ok(Decoded { batch, poison })
    }

    /// Every payload in one decoder; fails if any message is not exactly one JSON object
    /// of the columns' types.
    fn decode_payloads(&self, messages: &[Incoming]) -> std::result::Result<RecordBatch, String> {
        let mut decoder = ReaderBuilder::new(Arc::clone(&self.payload_schema))
            .with_batch_size(messages.len().max(1) + 1)
            .build_decoder()
            .map_err(|e| e.to_string())?;
        for (i, message) in messages.iter().enumerate() {
            let read = decoder
                .decode(&message.payload)
                .map_err(|e| e.to_string())?;
            if read != message.payload.len() || decoder.has_partial_record() {
                return Err("the payload is not one complete JSON object".into());
            }
            if decoder.len() != i + 1 {
                return Err(format!(
                    "the payload holds {} JSON values; a message must hold one JSON object",
                    decoder.len() - i
                ));
            }
        }
        let batch = decoder.flush().map_err(|e| e.to_string())?;
        Ok(batch.unwrap_or_else(|| RecordBatch::new_empty(Arc::clone(&self.payload_schema))))
    }

    /// Each message alone: the good ones' rows, and the poison with its reason.
    fn decode_one_by_one(&self, messages: &[Incoming]) -> Result<(RecordBatch, Vec<Poison>)> {
        let mut good = Vec::new();
        let mut poison = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            match self.decode_payloads(std::slice::from_ref(message)) {
                Ok(batch) if batch.num_rows() == 1 => good.push(batch),
                Ok(_) => poison.push(Poison {
                    index,
                    problem: "the payload is empty; a message must hold one JSON object".into(),
                }),
                Err(problem) => poison.push(Poison { index, problem }),
            }
        }
        let batch = concat_batches(&self.payload_schema, &good)?;
        Ok((batch, poison))
    }

    /// The declared columns, in order, from the payload columns and `messages`.
    fn assemble(&self, payload: &RecordBatch, messages: &[&Incoming]) -> Result<RecordBatch> {
        let columns = self
            .columns
            .iter()
            .zip(self.schema.fields())
            .map(|(column, field)| match column {
                Column::Payload(i) => Ok(Arc::clone(payload.column(*i))),
                Column::Meta(meta) => {
                    let natural = self.meta_array(*meta, messages);
                    Ok(cast(&natural, field.data_type())?)
                }
            })
            .collect::<Result<Vec<ArrayRef>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(messages.len()));
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            columns,
            &options,
        )?)
    }

    fn meta_array(&self, meta: Meta, messages: &[&Incoming]) -> ArrayRef {
        match meta {
            Meta::Subject => Arc::new(StringArray::from_iter_values(
                messages.iter().map(|m| m.subject.as_str()),
            )),
            Meta::Stream => Arc::new(StringArray::from_iter(
                messages.iter().map(|_| self.stream.as_deref()),
            )),
            Meta::Sequence => Arc::new(UInt64Array::from_iter(
                messages.iter().map(|m| m.position.map(|p| p.sequence)),
            )),
            Meta::Timestamp => Arc::new(
                TimestampNanosecondArray::from_iter(
                    messages.iter().map(|m| m.position.map(|p| p.stored_ns)),
                )
                .with_timezone("UTC"),
            ),
            Meta::Headers => Arc::new(StringArray::from_iter(
                messages
                    .iter()
                    .map(|m| m.headers.as_ref().map(headers_json)),
            )),
        }
    }
}

/// A message's headers as a JSON object, sorted by name: each name to its value, or to
/// an array of its values when it is repeated.
pub(crate) fn headers_json(headers: &HeaderMap) -> String {
    let sorted: BTreeMap<String, serde_json::Value> = headers
        .iter()
        .map(|(name, values)| {
            let mut values: Vec<serde_json::Value> = values
                .iter()
                .map(|v| serde_json::Value::String(v.as_str().to_string()))
                .collect();
            let value = if values.len() == 1 {
                values.remove(0)
            } else {
                serde_json::Value::Array(values)
            };
            (name.to_string(), value)
        })
        .collect();
    serde_json::to_string(&sorted).unwrap_or_default()
}
