//! The engine's typed errors. Each names the statement (number and line) and says
//! what is wrong and what to do; DataFusion errors are reduced to their root cause so
//! users never read `External error:` or context chains.

use std::fmt;

use datafusion::error::DataFusionError;

use crate::registry::{ConnectorKind, list_or_none};

/// Where in the script an error happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementAt {
    /// 1-based position among the script's statements.
    pub number: usize,
    /// 1-based line of the statement's first token.
    pub line: usize,
}

impl fmt::Display for StatementAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "statement {} (line {})", self.number, self.line)
    }
}

/// Why a statement failed. Display gives a complete message for users.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The script could not be tokenized, or an engine statement is malformed.
    #[error("{at}: {message}")]
    Syntax { at: StatementAt, message: String },

    /// `connection = 'x'` or `CREATE CONNECTION` refers to no defined connection.
    #[error(
        "{at}: unknown connection '{name}'; defined connections: {}. Define it first with \
         CREATE CONNECTION {name} FROM <connector> WITH (...)",
        list_or_none(defined)
    )]
    UnknownConnection {
        at: StatementAt,
        name: String,
        defined: Vec<String>,
    },

    /// A connector name that is not registered.
    #[error(
        "{at}: unknown connector '{name}'; registered connectors: {} (see `streamsql connectors`)",
        list_or_none(registered)
    )]
    UnknownConnector {
        at: StatementAt,
        name: String,
        registered: Vec<String>,
    },

    /// `WITH (...)` with neither `connector` nor `connection`.
    #[error(
        "{at}: WITH (...) needs connector = '<name>' (registered connectors: {}) or \
         connection = '<name of a CREATE CONNECTION>'",
        list_or_none(registered)
    )]
    MissingConnector {
        at: StatementAt,
        registered: Vec<String>,
    },

    /// `CREATE CONNECTION` of a name already defined.
    #[error(
        "{at}: connection '{name}' already exists; use CREATE OR REPLACE CONNECTION {name} \
         to change it, or pick another name"
    )]
    ConnectionExists { at: StatementAt, name: String },

    /// `connection` and `connector` name different connectors.
    #[error(
        "{at}: connection '{connection}' is for connector '{connection_connector}', but the \
         statement says connector = '{connector}'; leave out connector, or use a connection \
         of that connector"
    )]
    ConnectorMismatch {
        at: StatementAt,
        connection: String,
        connection_connector: String,
        connector: String,
    },

    /// A source used where a sink is needed, or the other way round.
    #[error("{at}: connector '{connector}' is a {kind}; {advice}")]
    WrongKind {
        at: StatementAt,
        connector: String,
        kind: ConnectorKind,
        advice: String,
    },

    /// `INSERT ... WITH (connector = ...)` into a table that is not a connector table.
    #[error(
        "{at}: table '{name}' already exists and is not a connector table, so INSERT ... \
         WITH (connector = ...) cannot replace it; insert under another name, or DROP TABLE \
         {name} first"
    )]
    TableExists { at: StatementAt, name: String },

    /// A statement form the engine does not support with connector options.
    #[error("{at}: {message}")]
    Unsupported { at: StatementAt, message: String },

    /// A connector refused its options or schema.
    #[error("{at}: {message}")]
    Connector {
        at: StatementAt,
        connector: String,
        message: String,
        #[source]
        source: DataFusionError,
    },

    /// The shutdown signal came while the statement ran, and it had not finished
    /// `grace` later, so it was cancelled. (An `INSERT` is not cancelled this way: it
    /// ends with an [`InsertSummary`](crate::InsertSummary) that says what it confirmed.)
    #[error(
        "{at}: stopped on signal: not finished within the {}s grace period, so it was cancelled",
        grace.as_secs_f64()
    )]
    Stopped {
        at: StatementAt,
        grace: std::time::Duration,
    },

    /// The abort latch ([`Engine::set_abort`](crate::Engine::set_abort)) fired while
    /// the statement ran, so it was cancelled at once. (An `INSERT` ends with its
    /// summary instead.)
    #[error("{at}: aborted on a second signal: the statement was cancelled at once")]
    Aborted { at: StatementAt },

    /// DataFusion failed to plan or run the statement; `message` is the root cause.
    #[error("{at}: {message}")]
    DataFusion {
        at: StatementAt,
        message: String,
        #[source]
        source: DataFusionError,
    },
}

impl EngineError {
    /// The statement the error belongs to.
    pub fn at(&self) -> StatementAt {
        match self {
            EngineError::Syntax { at, .. }
            | EngineError::UnknownConnection { at, .. }
            | EngineError::UnknownConnector { at, .. }
            | EngineError::MissingConnector { at, .. }
            | EngineError::ConnectionExists { at, .. }
            | EngineError::ConnectorMismatch { at, .. }
            | EngineError::WrongKind { at, .. }
            | EngineError::TableExists { at, .. }
            | EngineError::Unsupported { at, .. }
            | EngineError::Connector { at, .. }
            | EngineError::Stopped { at, .. }
            | EngineError::Aborted { at }
            | EngineError::DataFusion { at, .. } => *at,
        }
    }

    /// Wraps a DataFusion error of statement `at`, keeping only its root cause in the
    /// message.
    pub fn datafusion(at: StatementAt, source: DataFusionError) -> Self {
        EngineError::DataFusion {
            at,
            message: root_message(&source),
            source,
        }
    }

    /// Wraps a connector's refusal of statement `at`.
    pub fn connector(at: StatementAt, connector: &str, source: DataFusionError) -> Self {
        EngineError::Connector {
            at,
            connector: connector.to_string(),
            message: root_message(&source),
            source,
        }
    }
}

/// The message of the innermost DataFusion error in `err`'s chain, without the
/// `External error:` / `Error during planning:` prefixes.
pub fn root_message(err: &DataFusionError) -> String {
    let message = match err.find_root() {
        // message() shows a parser error with Debug formatting; Display reads better.
        DataFusionError::SQL(e, _) => e.to_string(),
        root => root.message().trim_end().to_string(),
    };
    // DataFusion's sanity checker appends a multi-kilobyte Debug dump of the plan.
    if message.starts_with(PIPELINE_BREAKING) {
        return UNBOUNDED_ADVICE.to_string();
    }
    message
}

const PIPELINE_BREAKING: &str = "Cannot execute pipeline breaking queries";
const UNBOUNDED_ADVICE: &str = "this query reads an unbounded source (a connector table without \
     a row limit) but needs all of its input before it can answer (an aggregate, sort or join); \
     give the source a limit (e.g. row_limit for datagen) or drop that part of the query";

#[cfg(test)]
mod tests {
    use datafusion::arrow::error::ArrowError;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("option 'x': bad value")]
    struct PluginError;

    #[test]
    fn root_message_unwraps_external_and_context() {
        let err = DataFusionError::Context(
            "while inserting".to_string(),
            Box::new(DataFusionError::External(Box::new(PluginError))),
        );
        assert_eq!(root_message(&err), "option 'x': bad value");
        let nested = DataFusionError::ArrowError(
            Box::new(ArrowError::ExternalError(Box::new(DataFusionError::Plan(
                "table 't' not found".to_string(),
            )))),
            None,
        );
        assert_eq!(root_message(&nested), "table 't' not found");
    }

    #[test]
    fn pipeline_breaking_dump_becomes_advice() {
        let err = DataFusionError::Plan(format!(
            "{PIPELINE_BREAKING}, operator: AggregateExec {{ huge dump }}"
        ));
        let message = root_message(&err);
        assert!(message.contains("unbounded source") && !message.contains("AggregateExec"));
    }

    #[test]
    fn display_names_statement_and_remedy() {
        let at = StatementAt { number: 2, line: 5 };
        let err = EngineError::UnknownConnection {
            at,
            name: "c".to_string(),
            defined: vec!["a".to_string(), "b".to_string()],
        };
        assert_eq!(
            err.to_string(),
            "statement 2 (line 5): unknown connection 'c'; defined connections: a, b. \
             Define it first with CREATE CONNECTION c FROM <connector> WITH (...)"
        );
        let err = EngineError::datafusion(at, DataFusionError::External(Box::new(PluginError)));
        assert_eq!(
            err.to_string(),
            "statement 2 (line 5): option 'x': bad value"
        );
        assert_eq!(err.at(), at);
    }
}
