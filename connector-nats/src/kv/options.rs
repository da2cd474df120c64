//! The options of `nats_kv`, declared once, and the sink configuration they map to.
//!
//! A key-value bucket is a JetStream stream (`KV_<bucket>`) whose subjects are
//! `$KV.<bucket>.<key>`, so `nats_kv` is the JetStream sink with its routing fixed: the
//! stream is the bucket's, each row's subject comes from its key, and its op sets the
//! headers. [`sink_config`] builds that [`SinkConfig`]; delivery, retries, `on_error` and
//! metrics are the sink's. The connection options are the sink's too
//! ([`CONNECTION_OPTIONS`]), so one `CREATE CONNECTION ... FROM nats_sink` serves both.

use crate::error::Result;
use crate::options::config::{
    JetStreamConfig, Mode, SinkConfig, SubjectSpec, invalid, on_error, window_bytes,
};
use crate::options::message::payload;
use crate::options::values::ValueKind;
use crate::options::{
    CONNECTION_OPTIONS, DEFAULT_WINDOW_BYTES, FORMATS, ON_ERROR_POLICIES, OptionTable, Options,
    WINDOW_BYTES, declare_options,
};
use crate::subject::rules::SubjectRules;

/// The connector's name in SQL (`connector = 'nats_kv'`).
pub const KV_CONNECTOR_NAME: &str = "nats_kv";

declare_options! { KV_ONLY_OPTIONS;
    BUCKET = "bucket", Sink, ValueKind::Text, default None, secret false,
        "The key-value bucket to write (letters, digits, '-' and '_'). It must exist: create it with `nats kv add NAME`.";
    KEY_FIELD = "key_field", Sink, ValueKind::Text, default None, secret false,
        "Column holding each row's key (a string or integer column): letters, digits and '-', '/', '_', '=', '.', not starting or ending with '.'. A row with another key follows 'on_error'.";
    OP_FIELD = "op_field", Sink, ValueKind::Text, default None, secret false,
        "Column holding each row's operation: 'put' (store the row's value under its key), 'delete' or 'del' (delete the key; DEL is the word NATS's KV-Operation header uses) or 'purge' (delete the key and its history), in any letter case; a null or another word follows 'on_error'. Without it every row is a put.";
    FORMAT = "format", Sink, ValueKind::Choice(FORMATS), default Some("json"), secret false,
        "Value format. 'json': the row's other columns as one JSON object. 'raw': the bytes of 'payload_field', unchanged.";
    PAYLOAD_FIELD = "payload_field", Sink, ValueKind::Text, default None, secret false,
        "format = 'raw': the column whose bytes are the value (binary or string); a null makes a put undeliverable.";
    PAYLOAD_INCLUDE_ROUTING = "payload_include_routing", Sink, ValueKind::Bool, default Some("false"), secret false,
        "Keep the key and op columns in the JSON value ('true') or leave them out ('false').";
    CONFIRM_TIMEOUT = "confirm_timeout", Sink, ValueKind::Duration, default Some("5s"), secret false,
        "How long to wait for the bucket's ack of a row before it is sent again.";
    MAX_IN_FLIGHT = "max_in_flight", Sink, ValueKind::Count { min: 1, max: 65536 }, default Some("1024"), secret false,
        "How many rows may wait for their ack at once; at most one per key (a row waits for the ack of its key's previous row).";
    MAX_IN_FLIGHT_BYTES = "max_in_flight_bytes", Sink, WINDOW_BYTES, default Some(DEFAULT_WINDOW_BYTES), secret false,
        "How many bytes of rows (value and headers) may wait for their acks at once ('64MiB', '512KiB'; 'MB' and a bare 'M' count in 1000s). Sending pauses once they reach it (the row that crosses it still goes) or at max_in_flight, whichever comes first.";
    ON_ERROR = "on_error", Sink, ValueKind::Choice(ON_ERROR_POLICIES), default Some("fail"), secret false,
        "A row that can never be delivered (null or invalid key, unknown op, oversize or unencodable value): 'fail' the statement, 'skip' it (counted and logged), or 'dead_letter' it.";
    DEAD_LETTER_SUBJECT = "dead_letter_subject", Sink, ValueKind::Subject, default None, secret false,
        "on_error = 'dead_letter': where undeliverable rows go (a stream must capture it), with headers giving the reason, the row number, the key (StreamSQL-Key) and, for a delete or purge, StreamSQL-KV-Operation: DEL or PURGE.";
}

/// Every option of `nats_kv`.
pub static KV_OPTIONS: OptionTable =
    OptionTable::new(KV_CONNECTOR_NAME, &[CONNECTION_OPTIONS, KV_ONLY_OPTIONS]);

/// The connector's own options (the connection options are the sink's) as a Markdown
/// table: the README embeds this output, and a test keeps the two identical.
pub fn markdown_table() -> String {
    crate::options::markdown_rows(KV_ONLY_OPTIONS.iter(), "connection or sink")
}

/// Where each row goes in a bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub bucket: String,
    /// The key column (`key_field`).
    pub column: String,
    /// The op column (`op_field`); without it every row is a put.
    pub op_column: Option<String>,
}

/// The sink configuration of a `nats_kv` table: JetStream into the bucket's stream, the
/// subject from the key. Every combination that cannot work is refused, naming the option.
pub(crate) fn sink_config(options: &Options) -> Result<SinkConfig> {
    let bucket = options.resolved(BUCKET)?.ok_or_else(|| {
        invalid(
            BUCKET,
            "missing: name the key-value bucket to write, e.g. bucket = 'profiles'",
        )
    })?;
    // The bucket's name is part of a stream name and of subjects (async-nats
    // `is_valid_bucket_name`).
    if bucket.is_empty()
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            BUCKET,
            format!("{bucket:?} is not a bucket name (letters, digits, '-' and '_' only)"),
        ));
    }
    let column = options.resolved(KEY_FIELD)?.ok_or_else(|| {
        invalid(
            KEY_FIELD,
            "missing: name the column holding each row's key, e.g. key_field = 'user_id'",
        )
    })?;
    let op_column = options.resolved(OP_FIELD)?;
    if op_column.as_ref() == Some(&column) {
        return Err(invalid(
            OP_FIELD,
            format!("names the key column '{column}' too: the op needs a column of its own"),
        ));
    }
    // A dead letter there would become a key's value, outside the per-key order.
    if let Some(subject) = options.resolved(DEAD_LETTER_SUBJECT)?
        && subject.starts_with("$KV.")
    {
        return Err(invalid(
            DEAD_LETTER_SUBJECT,
            format!(
                "'{subject}' is inside a key-value bucket: dead letters would become values; use a subject a stream of its own captures"
            ),
        ));
    }
    Ok(SinkConfig {
        mode: Mode::JetStream(JetStreamConfig {
            stream: format!("KV_{bucket}"),
            max_in_flight: options.count(MAX_IN_FLIGHT)?.unwrap_or(1) as usize,
            max_in_flight_bytes: window_bytes(options, MAX_IN_FLIGHT_BYTES)?,
            expected_stream: false,
            atomic_batch: None,
        }),
        subject: SubjectSpec::Key(KeySpec {
            bucket,
            column,
            op_column,
        }),
        // Subjects are built from keys under the bucket's prefix, never taken as given.
        subject_rules: SubjectRules::default(),
        reply_to_field: None,
        msg_id_field: None,
        headers: Vec::new(),
        header_fields: Vec::new(),
        headers_field: None,
        ttl: None,
        payload: payload(options)?,
        payload_include_routing: options.bool(PAYLOAD_INCLUDE_ROUTING)?,
        confirm_timeout: options.duration(CONFIRM_TIMEOUT)?.unwrap_or_default(),
        on_error: on_error(options)?,
    })
}
