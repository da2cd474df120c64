//! Header columns -> each row's headers.
//!
//! Three options put headers on a row: `header_fields` (one header per column, named after
//! it), `ttl_field` (`Nats-TTL`) and `headers_field` (a map column, one header per entry).
//! Their columns are read as Arrow arrays once per batch; a null (column value, map, or
//! map value) sends no header. A name or value that a NATS header cannot carry does not
//! fail the batch: the row gets a [`Rejection`] naming the column and the value, and the
//! sink's `on_error` policy decides. Nothing here panics on a value: header names and
//! values are built with async-nats's checked constructors after the checks below.
//!
//! What a header cannot carry (NATS headers follow the HTTP/1 header line format,
//! `Name: value\r\n`):
//! - names: empty, or holding anything but visible ASCII, or a `:`;
//! - values: a line break (it would end the header), any other control character but
//!   the tab, or leading or trailing whitespace (a reader drops it: async-nats trims the
//!   value and nats-server skips the spaces after the colon, so the value would arrive
//!   changed).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::str::FromStr;

use async_nats::{HeaderName, HeaderValue};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::encode::Rejection;
use crate::encode::columns::column_index;
use crate::error::{NatsSinkError, Result};
use crate::options::config::SinkConfig;
use crate::options::message::TtlSpec;
use crate::options::values::parse_ttl;
use crate::options::{HEADER_FIELDS, HEADERS_FIELD, TTL_FIELD};
use crate::subject;

/// Why `name` cannot be a header name, as a phrase following "it", or `None` if it can.
pub(crate) fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.contains(':') {
        Some("holds a ':', which ends a header name")
    } else if name.contains(char::is_whitespace) {
        Some("holds whitespace")
    } else if !name.is_ascii() {
        Some("holds a character outside ASCII")
    } else if !name.bytes().all(|b| b.is_ascii_graphic()) {
        Some("holds a control character")
    } else {
        None
    }
}

/// Why `value` cannot be carried by a header unchanged, as a phrase following the value's
/// description, or `None` if it can.
pub(crate) fn value_problem(value: &str) -> Option<&'static str> {
    if value.contains(['\r', '\n']) {
        Some("holds a line break, which a NATS header cannot carry")
    } else if value.contains(|c: char| c.is_control() && c != '\t') {
        Some(
            "holds a control character, which a NATS header cannot carry (replace it in the query)",
        )
    } else if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        Some("starts or ends with whitespace, which a reader drops from a header value")
    } else {
        None
    }
}

/// The column types `header_fields` accepts: each value is sent as its text.
fn is_header_type(data_type: &DataType) -> bool {
    subject::is_string_type(data_type)
        || data_type.is_integer()
        || matches!(data_type, DataType::Boolean | DataType::Timestamp(_, _))
}

/// A `header_fields` column: where it is and the header it sets.
#[derive(Debug, Clone)]
struct FieldHeader {
    index: usize,
    column: String,
    name: HeaderName,
}

/// The header columns of one sink, resolved against its input schema.
#[derive(Debug, Clone, Default)]
pub(crate) struct HeaderColumns {
    fields: Vec<FieldHeader>,
    ttl: Option<(usize, String)>,
    map: Option<(usize, String)>,
    /// Headers the sink sets itself, which a map entry may not set (name, option).
    reserved: Vec<(&'static str, &'static str)>,
}

impl HeaderColumns {
    /// Finds the header columns of `config` in `schema` and checks their types.
    pub(crate) fn resolve(schema: &SchemaRef, config: &SinkConfig) -> Result<Self> {
        let mut fields = Vec::with_capacity(config.header_fields.len());
        for column in &config.header_fields {
            let index = column_index(schema, HEADER_FIELDS, column)?;
            let data_type = schema.field(index).data_type();
            if !is_header_type(data_type) {
                return Err(wrong_type(
                    HEADER_FIELDS,
                    column,
                    data_type,
                    "a header column must hold strings, integers, booleans or timestamps: CAST it to VARCHAR",
                ));
            }
            let name = HeaderName::from_str(column).map_err(|_| NatsSinkError::InvalidOption {
                option: HEADER_FIELDS.into(),
                problem: format!("column '{column}' cannot be a header name"),
            })?;
            fields.push(FieldHeader {
                index,
                column: column.clone(),
                name,
            });
        }
        let ttl = match &config.ttl {
            Some(TtlSpec::Column(column)) => {
                let index = column_index(schema, TTL_FIELD, column)?;
                let data_type = schema.field(index).data_type();
                if !(subject::is_string_type(data_type) || data_type.is_integer()) {
                    return Err(wrong_type(
                        TTL_FIELD,
                        column,
                        data_type,
                        "a TTL column must hold durations as text ('90s', '1h', 'never') or whole seconds as integers",
                    ));
                }
                Some((index, column.clone()))
            }
            _ => None,
        };
        let map = match &config.headers_field {
            Some(column) => {
                let index = column_index(schema, HEADERS_FIELD, column)?;
                let data_type = schema.field(index).data_type();
                if !is_string_map(data_type) {
                    return Err(wrong_type(
                        HEADERS_FIELD,
                        column,
                        data_type,
                        "it must be a map of strings to strings (MAP<VARCHAR, VARCHAR>), e.g. MAP {'tenant': tenant, 'region': region}",
                    ));
                }
                Some((index, column.clone()))
            }
            None => None,
        };
        Ok(HeaderColumns {
            fields,
            ttl,
            map,
            reserved: config.sink_headers(),
        })
    }

    /// Whether no column sets a header.
    pub(crate) fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.ttl.is_none() && self.map.is_none()
    }

    /// The input columns that only carry headers (left out of a JSON payload by default).
    pub(crate) fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.fields
            .iter()
            .map(|f| f.index)
            .chain(self.ttl.iter().map(|(i, _)| *i))
            .chain(self.map.iter().map(|(i, _)| *i))
    }

    /// Each row's headers from `batch`; a row with a header it cannot carry gets none and
    /// is entered in `rejections` (first reason kept). `None` when no column sets headers.
    pub(crate) fn read(
        &self,
        batch: &RecordBatch,
        rejections: &mut BTreeMap<usize, Rejection>,
    ) -> Result<Option<RowHeaders>> {
        if self.is_empty() {
            return Ok(None);
        }
        let formatting = FormatOptions::default().with_display_error(false);
        let fields = self
            .fields
            .iter()
            .map(|f| ColumnText::new(batch.column(f.index), &formatting))
            .collect::<Result<Vec<_>>>()?;
        let ttl = match &self.ttl {
            Some((index, _)) => Some(ColumnText::new(batch.column(*index), &formatting)?),
            None => None,
        };
        let map = match &self.map {
            Some((index, _)) => Some(MapText::new(batch.column(*index))?),
            None => None,
        };
        let rows = batch.num_rows();
        let mut out = RowHeaders {
            entries: Vec::with_capacity(rows * (fields.len() + ttl.is_some() as usize)),
            ends: Vec::with_capacity(rows),
        };
        for row in 0..rows {
            let start = out.entries.len();
            if let Err(reason) = self.read_row(row, &fields, ttl.as_ref(), map.as_ref(), &mut out) {
                out.entries.truncate(start);
                rejections.entry(row).or_insert(Rejection {
                    reason,
                    subject: None,
                });
            }
            out.ends.push(out.entries.len());
        }
        Ok(Some(out))
    }

    /// Row `row`'s headers, appended to `out`; the reason the row cannot be delivered.
    fn read_row(
        &self,
        row: usize,
        fields: &[ColumnText],
        ttl: Option<&ColumnText>,
        map: Option<&MapText>,
        out: &mut RowHeaders,
    ) -> std::result::Result<(), String> {
        for (field, text) in self.fields.iter().zip(fields) {
            let Some(value) = text.value(row).map_err(|problem| {
                format!("column '{}' ({HEADER_FIELDS}): {problem}", field.column)
            })?
            else {
                continue;
            };
            let value = header_value(&value).map_err(|problem| {
                format!(
                    "column '{}' ({HEADER_FIELDS}): its value {} {problem}: change it in the query",
                    field.column,
                    subject::shown(&value)
                )
            })?;
            out.entries.push((field.name.clone(), value));
        }
        if let (Some((_, column)), Some(text)) = (&self.ttl, ttl) {
            let in_column = |problem: String| format!("column '{column}' ({TTL_FIELD}): {problem}");
            if let Some(value) = text.value(row).map_err(in_column)? {
                let ttl = parse_ttl(&value).map_err(in_column)?;
                out.entries.push((
                    HeaderName::from_static(TTL_HEADER),
                    HeaderValue::from(ttl.header_value()),
                ));
            }
        }
        if let (Some((_, column)), Some(map)) = (&self.map, map) {
            for (key, value) in map.entries(row) {
                let in_column =
                    |problem: String| format!("column '{column}' ({HEADERS_FIELD}): {problem}");
                if let Some(problem) = name_problem(key) {
                    return Err(in_column(format!(
                        "header name {} {problem}: fix the map's keys in the query",
                        subject::shown(key)
                    )));
                }
                if let Some((name, option)) = self
                    .reserved
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(key))
                {
                    return Err(in_column(format!(
                        "header '{key}' is set by the sink from '{option}' (as '{name}'): leave it out of the map"
                    )));
                }
                let Some(value) = value else { continue };
                let header = header_value(value).map_err(|problem| {
                    in_column(format!(
                        "the value of header '{key}', {}, {problem}: change it in the query",
                        subject::shown(value)
                    ))
                })?;
                let name = HeaderName::from_str(key).map_err(|_| {
                    in_column(format!("{} is not a header name", subject::shown(key)))
                })?;
                out.entries.push((name, header));
            }
        }
        Ok(())
    }
}

/// The header that carries a message's time to live.
pub(crate) const TTL_HEADER: &str = "Nats-TTL";

fn wrong_type(option: &str, column: &str, data_type: &DataType, advice: &str) -> NatsSinkError {
    NatsSinkError::InvalidOption {
        option: option.into(),
        problem: format!("column '{column}' has type {data_type}; {advice}"),
    }
}

/// Whether `data_type` is a map with string keys and string values.
fn is_string_map(data_type: &DataType) -> bool {
    match data_type {
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(fields) if fields.len() == 2 => {
                subject::is_string_type(fields[0].data_type())
                    && subject::is_string_type(fields[1].data_type())
            }
            _ => false,
        },
        _ => false,
    }
}

/// A header value `value` can be sent as, or why not.
fn header_value(value: &str) -> std::result::Result<HeaderValue, &'static str> {
    if let Some(problem) = value_problem(value) {
        return Err(problem);
    }
    HeaderValue::from_str(value).map_err(|_| "cannot be a header value")
}

/// A column's values as text: strings, integers and booleans through one cast; timestamps
/// through the formatter arrow-json uses, which reports a value out of range per row.
enum ColumnText<'a> {
    Cast(StringArray),
    Formatted(ArrayFormatter<'a>, &'a ArrayRef),
}

impl<'a> ColumnText<'a> {
    fn new(column: &'a ArrayRef, options: &FormatOptions<'a>) -> Result<Self> {
        Ok(match column.data_type() {
            DataType::Timestamp(_, _) => {
                ColumnText::Formatted(ArrayFormatter::try_new(column.as_ref(), options)?, column)
            }
            _ => ColumnText::Cast(cast(column, &DataType::Utf8)?.as_string::<i32>().clone()),
        })
    }

    /// Row `row`'s text; `None` for a null.
    fn value(&self, row: usize) -> std::result::Result<Option<Cow<'_, str>>, String> {
        match self {
            ColumnText::Cast(strings) if strings.is_null(row) => Ok(None),
            ColumnText::Cast(strings) => Ok(Some(Cow::Borrowed(strings.value(row)))),
            ColumnText::Formatted(_, column) if column.is_null(row) => Ok(None),
            ColumnText::Formatted(formatter, column) => formatter
                .value(row)
                .try_to_string()
                .map(|text| Some(Cow::Owned(text)))
                .map_err(|e| format!("{} value out of range ({e})", column.data_type())),
        }
    }
}

/// A map column's entries as text.
struct MapText {
    nulls: Option<datafusion::arrow::buffer::NullBuffer>,
    offsets: Vec<usize>,
    keys: StringArray,
    values: StringArray,
}

impl MapText {
    fn new(column: &ArrayRef) -> Result<Self> {
        let map = column.as_map();
        Ok(MapText {
            nulls: map.logical_nulls(),
            offsets: map.value_offsets().iter().map(|o| *o as usize).collect(),
            keys: cast(map.keys(), &DataType::Utf8)?
                .as_string::<i32>()
                .clone(),
            values: cast(map.values(), &DataType::Utf8)?
                .as_string::<i32>()
                .clone(),
        })
    }

    /// Row `row`'s entries (none for a null map); a null value is `None`.
    fn entries(&self, row: usize) -> impl Iterator<Item = (&str, Option<&str>)> {
        let range = match &self.nulls {
            Some(nulls) if nulls.is_null(row) => 0..0,
            _ => self.offsets[row]..self.offsets[row + 1],
        };
        range.filter(|&e| self.keys.is_valid(e)).map(|e| {
            let value = self.values.is_valid(e).then(|| self.values.value(e));
            (self.keys.value(e), value)
        })
    }
}

/// Each row's headers from the header columns of one batch.
#[derive(Debug, Default)]
pub(crate) struct RowHeaders {
    entries: Vec<(HeaderName, HeaderValue)>,
    /// End of each row's entries in `entries`; row `i` starts at `ends[i-1]`.
    ends: Vec<usize>,
}

impl RowHeaders {
    /// The headers of each row in turn (for headers a sink sets per row itself, such as
    /// a key-value operation).
    pub(crate) fn from_rows<'a>(
        rows: impl IntoIterator<Item = &'a [(HeaderName, HeaderValue)]>,
    ) -> Self {
        let mut out = RowHeaders::default();
        for row in rows {
            out.entries.extend_from_slice(row);
            out.ends.push(out.entries.len());
        }
        out
    }

    /// Row `i`'s headers, in column order (`header_fields`, the TTL, then the map's).
    pub(crate) fn row(&self, i: usize) -> &[(HeaderName, HeaderValue)] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.entries[start..self.ends[i]]
    }
}
