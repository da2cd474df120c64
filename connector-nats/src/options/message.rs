//! What each message carries besides its subject, parsed from the options: the payload
//! format (`format`, `payload_field`), headers from columns (`header_fields`,
//! `headers_field`) and the TTL (`ttl`, `ttl_field`). The columns themselves are found
//! and type-checked against the query in `encode`.

use crate::error::Result;
use crate::options::config::{Mode, SinkConfig, invalid};
use crate::options::values::{Ttl, parse_ttl};
use crate::options::{
    DELIVERY, EXPECTED_STREAM, FORMAT, HEADER_FIELDS, MSG_ID_FIELD, Options, PAYLOAD_FIELD,
    PAYLOAD_INCLUDE_ROUTING, TTL, TTL_FIELD,
};

/// Where each message's body comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PayloadFormat {
    /// The row's payload columns as one JSON object.
    Json,
    /// The bytes of this column, unchanged (`format = 'raw'`).
    Raw(String),
}

/// Where each message's `Nats-TTL` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TtlSpec {
    /// The same for every row (`ttl`).
    Fixed(Ttl),
    /// From a column (`ttl_field`).
    Column(String),
}

impl SinkConfig {
    /// The headers the sink sets itself (name, and the option that makes it set it): no
    /// header column may set them.
    pub(crate) fn sink_headers(&self) -> Vec<(&'static str, &'static str)> {
        sink_headers(&self.mode, self.msg_id_field.is_some(), &self.ttl)
    }
}

/// `ttl` or `ttl_field`, not both.
pub(super) fn ttl(options: &Options) -> Result<Option<TtlSpec>> {
    match (options.resolved(TTL)?, options.resolved(TTL_FIELD)?) {
        (Some(_), Some(_)) => Err(invalid(
            TTL,
            "give either 'ttl' (every row) or 'ttl_field' (a column), not both",
        )),
        (Some(text), None) => parse_ttl(&text)
            .map(|ttl| Some(TtlSpec::Fixed(ttl)))
            .map_err(|problem| invalid(TTL, problem)),
        (None, Some(column)) => Ok(Some(TtlSpec::Column(column))),
        (None, None) => Ok(None),
    }
}

/// `format`, with `payload_field` for `raw` (and only there).
pub(crate) fn payload(options: &Options) -> Result<PayloadFormat> {
    let raw = options.choice(FORMAT)? == Some("raw");
    match (raw, options.resolved(PAYLOAD_FIELD)?) {
        (true, Some(column)) => {
            if options.is_given(PAYLOAD_INCLUDE_ROUTING) {
                return Err(invalid(
                    PAYLOAD_INCLUDE_ROUTING,
                    "applies to format = 'json' only: a raw message is the bytes of 'payload_field' alone",
                ));
            }
            Ok(PayloadFormat::Raw(column))
        }
        (true, None) => Err(invalid(
            PAYLOAD_FIELD,
            "missing: format = 'raw' sends the bytes of one column; name it with payload_field = '<column>'",
        )),
        (false, Some(_)) => Err(invalid(
            PAYLOAD_FIELD,
            "applies to format = 'raw' only: add format = 'raw', or drop 'payload_field' to send each row as JSON",
        )),
        (false, None) => Ok(PayloadFormat::Json),
    }
}

/// The headers the sink sets itself for this configuration: no header column may set them.
fn sink_headers(
    mode: &Mode,
    has_msg_id: bool,
    ttl: &Option<TtlSpec>,
) -> Vec<(&'static str, &'static str)> {
    let mut set = Vec::new();
    if has_msg_id {
        set.push(("Nats-Msg-Id", MSG_ID_FIELD));
    }
    if ttl.is_some() {
        set.push(("Nats-TTL", TTL));
    }
    if let Mode::JetStream(js) = mode {
        if js.expected_stream {
            set.push(("Nats-Expected-Stream", EXPECTED_STREAM));
        }
        if js.atomic_batch.is_some() {
            set.extend([
                ("Nats-Batch-Id", DELIVERY),
                ("Nats-Batch-Sequence", DELIVERY),
                ("Nats-Batch-Commit", DELIVERY),
            ]);
        }
    }
    set
}

/// `header_fields` as a list of column names, each usable as a header name and none
/// naming a header that is already set otherwise (a static header, or one the sink sets).
pub(super) fn header_fields(
    options: &Options,
    static_headers: &[(String, String)],
    mode: &Mode,
    has_msg_id: bool,
    ttl: &Option<TtlSpec>,
) -> Result<Vec<String>> {
    let Some(list) = options.resolved(HEADER_FIELDS)? else {
        return Ok(Vec::new());
    };
    let reserved = sink_headers(mode, has_msg_id, ttl);
    let mut columns: Vec<String> = Vec::new();
    for column in list.split(',').map(str::trim) {
        if column.is_empty() {
            return Err(invalid(
                HEADER_FIELDS,
                format!(
                    "'{list}' has an empty column name: write the columns separated by commas, e.g. 'trace_id,tenant'"
                ),
            ));
        }
        if let Some(problem) = crate::encode::headers::name_problem(column) {
            return Err(invalid(
                HEADER_FIELDS,
                format!(
                    "column '{column}' cannot be a header name: it {problem}; rename it in the query (expr AS name)"
                ),
            ));
        }
        if columns.iter().any(|c| c.eq_ignore_ascii_case(column)) {
            return Err(invalid(
                HEADER_FIELDS,
                format!("header '{column}' is listed twice"),
            ));
        }
        if let Some((name, _)) = static_headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(column))
        {
            return Err(invalid(
                HEADER_FIELDS,
                format!(
                    "column '{column}' would set header '{name}', which 'headers' sets for every row: drop it from one of them, or rename the column in the query"
                ),
            ));
        }
        if let Some((name, option)) = reserved
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(column))
        {
            return Err(invalid(
                HEADER_FIELDS,
                format!(
                    "column '{column}' would set header '{name}', which the sink sets from '{option}': drop it from 'header_fields'"
                ),
            ));
        }
        columns.push(column.to_string());
    }
    Ok(columns)
}
