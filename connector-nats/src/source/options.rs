//! The options of `nats_source`, declared once, and the typed [`SourceConfig`] built from
//! them when the table is created.
//!
//! The connection options are the sink's ([`CONNECTION_OPTIONS`]), so one
//! `CREATE CONNECTION` serves both connectors. Every combination that cannot work is
//! refused here, naming the option: a JetStream-only option without `stream`, a core-only
//! one with it, `stop_at = 'end'` on a core subscription, two start positions.

use std::time::Duration;

use async_nats::jetstream::consumer::DeliverPolicy;

use crate::error::{NatsSinkError, Result};
use crate::options::config::{OnError, on_error};
use crate::options::values::ValueKind;
use crate::options::{CONNECTION_OPTIONS, OptionTable, Options, declare_options};

/// The connector's name in SQL (`connector = 'nats_source'`).
pub const SOURCE_CONNECTOR_NAME: &str = "nats_source";

/// The values of `deliver`.
pub const DELIVER_POLICIES: &[&str] = &["all", "new", "last", "last_per_subject"];
/// The values of `stop_at`.
pub const STOP_AT_VALUES: &[&str] = &["never", "end"];
/// The values of `on_error`.
pub const ON_ERROR_VALUES: &[&str] = &["fail", "skip", "dead_letter"];
/// Payload formats the source can read.
pub const FORMATS: &[&str] = &["json"];

declare_options! { SOURCE_ONLY_OPTIONS;
    STREAM = "stream", Source, ValueKind::Text, default None, secret false,
        "JetStream stream to read. Without it the source is a core NATS subscription on 'subject' (at-most-once).";
    CONSUMER = "consumer", Source, ValueKind::Text, default None, secret false,
        "Durable pull consumer of 'stream': created when missing, bound when it exists (its configuration must match these options). A message is acknowledged only once its rows are confirmed. Without it: an ephemeral consumer that acknowledges nothing.";
    FILTER_SUBJECTS = "filter_subjects", Source, ValueKind::Text, default None, secret false,
        "Comma-separated subjects (wildcards allowed) of 'stream' to read; default: every subject.";
    DELIVER = "deliver", Source, ValueKind::Choice(DELIVER_POLICIES), default Some("all"), secret false,
        "Where a new consumer starts: 'all' messages, only 'new' ones, the 'last' one, or the 'last_per_subject'.";
    START_SEQUENCE = "start_sequence", Source, ValueKind::Count { min: 1, max: u64::MAX }, default None, secret false,
        "Start at this stream sequence (instead of 'deliver').";
    START_TIME = "start_time", Source, ValueKind::Text, default None, secret false,
        "Start at the first message stored at or after this RFC 3339 time, e.g. '2026-01-31T12:00:00Z' (instead of 'deliver').";
    STOP_AT = "stop_at", Source, ValueKind::Choice(STOP_AT_VALUES), default Some("never"), secret false,
        "'end': read up to the stream's last sequence at the start, then finish (a bounded read: aggregates and sorts work). 'never': read until the statement is stopped.";
    FORMAT = "format", Source, ValueKind::Choice(FORMATS), default Some("json"), secret false,
        "Payload format. 'json': one JSON object per message, decoded into the declared columns.";
    ON_ERROR = "on_error", Source, ValueKind::Choice(ON_ERROR_VALUES), default Some("fail"), secret false,
        "A message whose payload does not decode into the columns: 'fail' the statement, 'skip' it (counted and logged), or 'dead_letter' it.";
    DEAD_LETTER_SUBJECT = "dead_letter_subject", Source, ValueKind::Subject, default None, secret false,
        "on_error = 'dead_letter': where undecodable messages go, unchanged, with headers naming the error, subject and sequence.";
    MAX_ACK_PENDING = "max_ack_pending", Source, ValueKind::Count { min: 1, max: 100_000_000 }, default None, secret false,
        "Durable consumer: most messages delivered and not yet acknowledged (server default: 1000). A bounded read acknowledges at its end, so it needs at least as many as it reads.";
    ACK_WAIT = "ack_wait", Source, ValueKind::Duration, default None, secret false,
        "Durable consumer: how long the server waits for an acknowledgement before delivering a message again (server default: 30s).";
    FETCH_SIZE = "fetch_size", Source, ValueKind::Count { min: 1, max: 100_000 }, default Some("500"), secret false,
        "Most messages per pull request and per record batch.";
    SUBJECT = "subject", Source, ValueKind::Text, default None, secret false,
        "Core NATS (no 'stream'): the subject to subscribe to (wildcards allowed).";
    QUEUE_GROUP = "queue_group", Source, ValueKind::Text, default None, secret false,
        "Core NATS: subscribe in this queue group, so subscribers of the group share the messages.";
}

/// Every option of `nats_source`.
pub static SOURCE_OPTIONS: OptionTable = OptionTable::new(
    SOURCE_CONNECTOR_NAME,
    &[CONNECTION_OPTIONS, SOURCE_ONLY_OPTIONS],
);

/// The source's own options (the connection options are the sink's) as a Markdown
/// table: the README embeds this output, and a test keeps the two identical.
pub fn markdown_table() -> String {
    crate::options::markdown_rows(SOURCE_ONLY_OPTIONS.iter(), "connection or source")
}

/// What the source reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Input {
    JetStream(JetStreamInput),
    /// A core subscription: at-most-once, nothing is acknowledged.
    Core {
        subject: String,
        queue_group: Option<String>,
    },
}

/// A JetStream read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JetStreamInput {
    pub stream: String,
    /// A durable consumer's name; `None`: an ephemeral consumer without acks.
    pub consumer: Option<String>,
    pub filter_subjects: Vec<String>,
    pub deliver: DeliverPolicy,
    pub max_ack_pending: Option<i64>,
    pub ack_wait: Option<Duration>,
}

/// The source's typed settings, with `${VAR}` resolved. Built at table creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceConfig {
    pub input: Input,
    /// `stop_at = 'end'`.
    pub bounded: bool,
    /// What happens to a message whose payload does not decode.
    pub on_poison: OnError,
    pub fetch_size: usize,
}

fn invalid(option: &str, problem: impl Into<String>) -> NatsSinkError {
    NatsSinkError::InvalidOption {
        option: option.into(),
        problem: problem.into(),
    }
}

impl SourceConfig {
    pub(crate) fn from_options(options: &Options) -> Result<Self> {
        let bounded = options.choice(STOP_AT)? == Some("end");
        let input = match options.resolved(STREAM)? {
            Some(stream) => {
                for name in [SUBJECT, QUEUE_GROUP] {
                    if options.is_given(name) {
                        return Err(invalid(
                            name,
                            "applies to a core subscription only (no 'stream'); to read some subjects of the stream use 'filter_subjects'",
                        ));
                    }
                }
                Input::JetStream(jetstream(options, stream)?)
            }
            None => core(options, bounded)?,
        };
        Ok(SourceConfig {
            input,
            bounded,
            on_poison: on_error(options)?,
            fetch_size: options.count(FETCH_SIZE)?.unwrap_or(1) as usize,
        })
    }
}

fn jetstream(options: &Options, stream: String) -> Result<JetStreamInput> {
    check_name(STREAM, &stream)?;
    let consumer = options.resolved(CONSUMER)?;
    if let Some(name) = &consumer {
        check_name(CONSUMER, name)?;
    } else {
        for name in [MAX_ACK_PENDING, ACK_WAIT] {
            if options.is_given(name) {
                return Err(invalid(
                    name,
                    "applies to a durable consumer only: give 'consumer' too (an ephemeral consumer acknowledges nothing)",
                ));
            }
        }
    }
    let filter_subjects = match options.resolved(FILTER_SUBJECTS)? {
        Some(list) => subject_filters(FILTER_SUBJECTS, &list)?,
        None => Vec::new(),
    };
    let deliver = deliver(options)?;
    // The server refuses this policy without a filter (JetStream error 10094).
    if deliver == DeliverPolicy::LastPerSubject && filter_subjects.is_empty() {
        return Err(invalid(
            FILTER_SUBJECTS,
            "missing: deliver = 'last_per_subject' needs it (the server refuses the policy without a filter); give e.g. 'orders.>', or '>' for every subject",
        ));
    }
    Ok(JetStreamInput {
        stream,
        consumer,
        filter_subjects,
        deliver,
        max_ack_pending: options.count(MAX_ACK_PENDING)?.map(|n| n as i64),
        ack_wait: options.duration(ACK_WAIT)?,
    })
}

fn core(options: &Options, bounded: bool) -> Result<Input> {
    let js_only = [
        CONSUMER,
        FILTER_SUBJECTS,
        START_SEQUENCE,
        START_TIME,
        MAX_ACK_PENDING,
        ACK_WAIT,
        DELIVER,
    ];
    if let Some(name) = js_only.into_iter().find(|name| options.is_given(name)) {
        return Err(invalid(
            name,
            "applies to JetStream only: give 'stream' too",
        ));
    }
    if bounded {
        return Err(invalid(
            STOP_AT,
            "'end' needs a stream ('stream'): a core subscription has no end to read up to",
        ));
    }
    let Some(subject) = options.resolved(SUBJECT)? else {
        return Err(invalid(
            STREAM,
            "missing: give 'stream' (read a JetStream stream) or 'subject' (a core NATS subscription)",
        ));
    };
    let subject = match subject_filters(SUBJECT, &subject)?.as_slice() {
        [one] => one.clone(),
        _ => return Err(invalid(SUBJECT, "give one subject")),
    };
    let queue_group = options.resolved(QUEUE_GROUP)?;
    if let Some(group) = &queue_group
        && (group.is_empty() || group.contains(|c: char| c.is_whitespace() || c.is_control()))
    {
        return Err(invalid(
            QUEUE_GROUP,
            format!("{group:?} is not a queue group name (no whitespace)"),
        ));
    }
    Ok(Input::Core {
        subject,
        queue_group,
    })
}

/// One start position: `deliver`, `start_sequence` or `start_time`.
fn deliver(options: &Options) -> Result<DeliverPolicy> {
    let given = [DELIVER, START_SEQUENCE, START_TIME]
        .into_iter()
        .filter(|name| options.is_given(name))
        .collect::<Vec<_>>();
    if let [first, second, ..] = given[..] {
        return Err(invalid(
            second,
            format!("cannot be combined with '{first}': give one start position"),
        ));
    }
    if let Some(sequence) = options.count(START_SEQUENCE)? {
        return Ok(DeliverPolicy::ByStartSequence {
            start_sequence: sequence,
        });
    }
    if let Some(text) = options.resolved(START_TIME)? {
        let start_time = time::OffsetDateTime::parse(
            text.trim(),
            &time::format_description::well_known::Rfc3339,
        )
        .map_err(|e| {
            invalid(
                START_TIME,
                format!(
                    "'{text}' is not an RFC 3339 time ({e}); write e.g. '2026-01-31T12:00:00Z'"
                ),
            )
        })?;
        return Ok(DeliverPolicy::ByStartTime { start_time });
    }
    Ok(match options.choice(DELIVER)? {
        Some("new") => DeliverPolicy::New,
        Some("last") => DeliverPolicy::Last,
        Some("last_per_subject") => DeliverPolicy::LastPerSubject,
        _ => DeliverPolicy::All,
    })
}

/// Stream and consumer names go into JetStream API subjects: no whitespace, control
/// characters, '.', '*', '>' or path separators (docs.nats.io, "Naming Streams,
/// Consumers, and Accounts").
fn check_name(option: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.contains(|c: char| {
            c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\')
        })
    {
        return Err(invalid(
            option,
            format!(
                "{name:?} is not a valid name (no whitespace, control characters, '.', '*', '>', '/' or '\\')"
            ),
        ));
    }
    Ok(())
}

/// A comma-separated list of subject filters: tokens are non-empty, `*` is a whole
/// token, `>` only the last one.
pub(crate) fn subject_filters(option: &str, list: &str) -> Result<Vec<String>> {
    let filters: Vec<String> = list
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if filters.is_empty() {
        return Err(invalid(option, "no subject given; write e.g. 'orders.>'"));
    }
    for filter in &filters {
        let tokens: Vec<&str> = filter.split('.').collect();
        let bad = filter.contains(|c: char| c.is_whitespace() || c.is_control())
            || tokens.iter().enumerate().any(|(i, token)| {
                token.is_empty()
                    || (token.contains(['*', '>']) && token.len() > 1)
                    || (*token == ">" && i + 1 != tokens.len())
            });
        if bad {
            return Err(invalid(
                option,
                format!(
                    "'{filter}' is not a subject filter: tokens are separated by '.', are not empty, hold no whitespace, and '*' or '>' (last only) stand alone"
                ),
            ));
        }
    }
    Ok(filters)
}
