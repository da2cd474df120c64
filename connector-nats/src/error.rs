//! The sink's typed errors.
//!
//! Each variant says what is wrong and what to do about it, and none of them ever holds a
//! secret: option values reach an error only for non-secret options, and connection
//! failures name the server with any userinfo stripped. Errors cross into DataFusion as
//! `DataFusionError::External`, so callers can downcast and match on the variant.

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

/// What went wrong in a NATS sink, grouped by what the user has to change.
#[derive(Debug, thiserror::Error)]
pub enum NatsSinkError {
    /// An option key that no option of the connector has.
    #[error("unknown option '{key}' for connector '{connector}'{hint}")]
    UnknownOption {
        key: String,
        connector: &'static str,
        /// " (did you mean 'x'?)" or a list of valid options.
        hint: String,
    },

    /// A known option given where it does not belong (e.g. `subject` in CREATE CONNECTION).
    #[error(
        "option '{option}' belongs on the sink or source (CREATE TABLE or INSERT ... WITH), not on CREATE CONNECTION"
    )]
    NotAConnectionOption { option: String },

    /// An option whose value cannot be used.
    #[error("option '{option}': {problem}")]
    InvalidOption { option: String, problem: String },

    /// `${VAR}` in an option value, with VAR unset and no `:-default`.
    #[error(
        "option '{option}' uses ${{{var}}} but environment variable '{var}' is not set: set it, or give a default as ${{{var}:-default}}"
    )]
    UnresolvedVariable { option: String, var: String },

    /// A routing option names a column the query does not produce.
    #[error(
        "option '{option}' names column '{column}', which the query does not produce (columns: {available})"
    )]
    MissingColumn {
        option: &'static str,
        column: String,
        available: String,
    },

    /// A routing column with a type that cannot hold subjects.
    #[error(
        "option '{option}' names column '{column}' of type {data_type}, but it must be a string column (Utf8, LargeUtf8, Utf8View or a dictionary of strings): CAST it to VARCHAR"
    )]
    NotAStringColumn {
        option: &'static str,
        column: String,
        data_type: DataType,
    },

    /// A payload column whose type has no JSON form.
    #[error("column '{column}' has type {data_type}, which has no JSON form: {advice}")]
    UnsupportedType {
        column: String,
        data_type: DataType,
        advice: &'static str,
    },

    /// A row that cannot become a message. `row` counts from 1 over the whole statement.
    #[error(
        "row {row}: {problem} ({published} earlier rows were published and confirmed before this one; nothing after it was sent)"
    )]
    BadRow {
        row: u64,
        problem: String,
        published: u64,
    },

    /// The connection could not be established.
    #[error("cannot connect to NATS at {servers}: {problem}")]
    Connect {
        servers: String,
        problem: String,
        #[source]
        source: Option<async_nats::ConnectError>,
    },

    /// A publish was refused by the client or the connection is gone.
    #[error("publishing to NATS failed: {problem}")]
    Publish {
        problem: String,
        #[source]
        source: Option<async_nats::Error>,
    },

    /// A source could not subscribe, read or acknowledge.
    #[error("reading from NATS failed: {problem}")]
    Read { problem: String },

    /// A transient failure lasted longer than `retry_timeout`.
    #[error(
        "gave up after retrying for {waited:.1?} (retry_timeout): {last} ({published} rows were published and confirmed; raise 'retry_timeout' or leave it unset to retry until the statement is cancelled)"
    )]
    RetryTimeout {
        waited: std::time::Duration,
        last: String,
        published: u64,
    },

    /// The stream or the JetStream setup does not allow the sink to run.
    #[error("JetStream stream '{stream}': {problem}")]
    JetStream { stream: String, problem: String },

    /// The server refused something the sink did, for a reason that retrying cannot fix.
    #[error("{problem} ({published} rows were published and confirmed before it)")]
    Refused { problem: String, published: u64 },

    /// A source message whose payload does not decode into the table's columns
    /// (`on_error = 'fail'`).
    #[error(
        "the message on {message} does not decode into the table's columns: {problem}. Fix or remove the message, or set on_error = 'skip' (count and log it) or 'dead_letter' (with dead_letter_subject)"
    )]
    Undecodable { message: String, problem: String },

    /// arrow-json refused a batch (types are checked up front, so this is unexpected).
    #[error("encoding a batch as JSON failed: {0}")]
    Encode(#[from] ArrowError),
}

impl NatsSinkError {
    /// The class of a failure that ended a statement: the `class` label of the
    /// `nats_sink_errors_total` series.
    pub fn class(&self) -> &'static str {
        match self {
            NatsSinkError::UnknownOption { .. }
            | NatsSinkError::NotAConnectionOption { .. }
            | NatsSinkError::InvalidOption { .. }
            | NatsSinkError::UnresolvedVariable { .. } => "config",
            NatsSinkError::MissingColumn { .. }
            | NatsSinkError::NotAStringColumn { .. }
            | NatsSinkError::UnsupportedType { .. } => "schema",
            NatsSinkError::BadRow { .. } => "row",
            NatsSinkError::Undecodable { .. } => "decode",
            NatsSinkError::Connect { .. } => "connect",
            NatsSinkError::Publish { .. } => "publish",
            NatsSinkError::Read { .. } => "read",
            NatsSinkError::RetryTimeout { .. } => "retry_timeout",
            NatsSinkError::JetStream { .. } => "jetstream",
            NatsSinkError::Refused { .. } => "refused",
            NatsSinkError::Encode(_) => "encode",
        }
    }
}

impl NatsSinkError {
    /// Sets the count of rows confirmed before the failure, for the errors that report it.
    /// The sink calls this once, as the statement fails, with the count its metrics hold:
    /// the one place that count is taken.
    pub(crate) fn with_confirmed(mut self, confirmed: u64) -> Self {
        match &mut self {
            NatsSinkError::BadRow { published, .. }
            | NatsSinkError::RetryTimeout { published, .. }
            | NatsSinkError::Refused { published, .. } => *published = confirmed,
            _ => {}
        }
        self
    }
}

impl From<NatsSinkError> for DataFusionError {
    fn from(err: NatsSinkError) -> Self {
        DataFusionError::External(Box::new(err))
    }
}

/// Shorthand used throughout the crate.
pub type Result<T, E = NatsSinkError> = std::result::Result<T, E>;
