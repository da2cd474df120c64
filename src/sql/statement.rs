//! Sorts one statement into what the engine handles itself and what goes to
//! DataFusion unchanged, and parses `CREATE CONNECTION`, which DataFusion does not know.
//!
//! Engine statements:
//! - `CREATE [OR REPLACE] CONNECTION [IF NOT EXISTS] name FROM connector [WITH (k = 'v', ...)]`
//! - `CREATE TABLE ... WITH (k = 'v', ...)`: a connector table; the `WITH` is split off.
//! - `INSERT INTO ... WITH (k = 'v', ...)`: a sink defined by the statement itself.
//! - `EXPLAIN [ANALYZE] [VERBOSE] INSERT INTO ... WITH (k = 'v', ...)`: the same sink,
//!   created for DataFusion to explain the insert into it.
//!
//! Everything else, including `INSERT` and `CREATE TABLE` without a trailing `WITH`,
//! is DataFusion's.

use std::fmt;

use datafusion::sql::sqlparser::tokenizer::Token;

use super::split::{
    SpannedToken, SyntaxError, parse_option_tokens, redacted, significant, split_trailing_with,
    tokenize,
};

/// What the engine does with one statement. `Debug` hides option values (see
/// [`redact`](crate::registry::redact)).
#[derive(Clone, PartialEq)]
pub enum EngineStatement {
    /// `CREATE CONNECTION`, handled by the engine alone.
    CreateConnection(CreateConnection),
    /// `CREATE TABLE name (cols) WITH (...)`: `create` is the statement without the
    /// `WITH` clause, for DataFusion to map the column types.
    CreateTableWith {
        create: String,
        options: Vec<(String, String)>,
    },
    /// `INSERT INTO name SELECT ... WITH (...)`: `insert` is the statement without
    /// the `WITH` clause.
    InsertWith {
        insert: String,
        options: Vec<(String, String)>,
    },
    /// `EXPLAIN ... INSERT INTO name SELECT ... WITH (...)`: `explain` is the whole
    /// statement and `insert` its `INSERT`, both without the `WITH` clause.
    ExplainInsertWith {
        explain: String,
        insert: String,
        options: Vec<(String, String)>,
    },
    /// Anything else: passed to DataFusion as written.
    DataFusion,
}

impl EngineStatement {
    /// The kind of statement, for logs; never holds option values.
    pub fn label(&self) -> &'static str {
        match self {
            EngineStatement::CreateConnection(_) => "CREATE CONNECTION",
            EngineStatement::CreateTableWith { .. } => "CREATE TABLE ... WITH",
            EngineStatement::InsertWith { .. } => "INSERT ... WITH",
            EngineStatement::ExplainInsertWith { .. } => "EXPLAIN INSERT ... WITH",
            EngineStatement::DataFusion => "DataFusion",
        }
    }
}

impl fmt::Debug for EngineStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineStatement::CreateConnection(c) => {
                f.debug_tuple("CreateConnection").field(c).finish()
            }
            EngineStatement::CreateTableWith { create, options } => f
                .debug_struct("CreateTableWith")
                .field("create", create)
                .field("options", &redacted(options))
                .finish(),
            EngineStatement::InsertWith { insert, options } => f
                .debug_struct("InsertWith")
                .field("insert", insert)
                .field("options", &redacted(options))
                .finish(),
            EngineStatement::ExplainInsertWith {
                explain,
                insert,
                options,
            } => f
                .debug_struct("ExplainInsertWith")
                .field("explain", explain)
                .field("insert", insert)
                .field("options", &redacted(options))
                .finish(),
            EngineStatement::DataFusion => f.write_str("DataFusion"),
        }
    }
}

/// A parsed `CREATE CONNECTION`. Option values are kept raw: `${VAR}` references are
/// resolved by the connector when it connects, not here. `Debug` hides them.
#[derive(Clone, PartialEq)]
pub struct CreateConnection {
    /// Connection name; unquoted names are lowercased like DataFusion identifiers.
    pub name: String,
    /// Connector name, lowercased.
    pub connector: String,
    /// The options in the order written, keys lowercased.
    pub options: Vec<(String, String)>,
    /// `CREATE OR REPLACE CONNECTION`.
    pub or_replace: bool,
    /// `CREATE CONNECTION IF NOT EXISTS`.
    pub if_not_exists: bool,
}

impl fmt::Debug for CreateConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateConnection")
            .field("name", &self.name)
            .field("connector", &self.connector)
            .field("options", &redacted(&self.options))
            .field("or_replace", &self.or_replace)
            .field("if_not_exists", &self.if_not_exists)
            .finish()
    }
}

/// Decides what to do with `sql` (one statement, no `;`).
pub fn classify(sql: &str) -> Result<EngineStatement, SyntaxError> {
    let tokens = tokenize(sql)?;
    let sig = significant(&tokens);
    let first = |word: &str| sig.first().is_some_and(|t| t.is_word(word));
    if first("CREATE") {
        if let Some(create) = parse_create_connection(&sig)? {
            return Ok(EngineStatement::CreateConnection(create));
        }
        if is_create_table(&sig)
            && let Some(split) = split_trailing_with(sql)?
        {
            return Ok(EngineStatement::CreateTableWith {
                create: split.statement,
                options: split.options,
            });
        }
    } else if first("INSERT")
        && let Some(split) = split_trailing_with(sql)?
    {
        return Ok(EngineStatement::InsertWith {
            insert: split.statement,
            options: split.options,
        });
    } else if first("PREPARE") && split_trailing_with(sql)?.is_some() {
        // The sink of an `INSERT ... WITH` lives for its statement only, and a prepared
        // statement outlives it: DataFusion would read the options as a syntax error or
        // as ignored table hints.
        return Err(SyntaxError(
            "PREPARE cannot take connector options (WITH (...) at the end): declare the sink \
             with CREATE TABLE name (columns) WITH (connector = ...), then PREPARE p AS \
             INSERT INTO name SELECT ... and EXECUTE p"
                .to_string(),
        ));
    } else if first("EXPLAIN")
        && let Some(insert_at) = explained_insert(&sig)
        && let Some(split) = split_trailing_with(sql)?
        && let Some(insert) = split.statement.get(insert_at..)
    {
        return Ok(EngineStatement::ExplainInsertWith {
            insert: insert.to_string(),
            explain: split.statement,
            options: split.options,
        });
    }
    Ok(EngineStatement::DataFusion)
}

/// The byte offset of the `INSERT` an `EXPLAIN` applies to: the first top-level word
/// `INSERT` (what comes between, `ANALYZE`, `VERBOSE`, `FORMAT x` or `(...)`, is
/// DataFusion's to read).
fn explained_insert(sig: &[&SpannedToken]) -> Option<usize> {
    let mut depth = 0usize;
    for token in sig.iter().skip(1) {
        match token.token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ if depth == 0 && token.is_word("INSERT") => return Some(token.start),
            // Anything else that starts a statement: not an EXPLAIN of an INSERT.
            _ if depth == 0
                && [
                    "SELECT", "WITH", "VALUES", "CREATE", "COPY", "UPDATE", "DELETE",
                ]
                .iter()
                .any(|w| token.is_word(w)) =>
            {
                return None;
            }
            _ => {}
        }
    }
    None
}

/// `CREATE [OR REPLACE] [TEMPORARY] TABLE`, but not `CREATE EXTERNAL TABLE`, whose
/// options are DataFusion's own `OPTIONS (...)`.
fn is_create_table(sig: &[&SpannedToken]) -> bool {
    let mut i = 1;
    if sig.get(i).is_some_and(|t| t.is_word("OR")) {
        i += 2;
    }
    if sig
        .get(i)
        .is_some_and(|t| t.is_word("TEMPORARY") || t.is_word("TEMP"))
    {
        i += 1;
    }
    sig.get(i).is_some_and(|t| t.is_word("TABLE"))
}

const CONNECTION_FORM: &str =
    "write CREATE CONNECTION name FROM connector WITH (key = 'value', ...)";

/// Parses `CREATE CONNECTION`; `Ok(None)` if the statement is some other `CREATE`.
fn parse_create_connection(sig: &[&SpannedToken]) -> Result<Option<CreateConnection>, SyntaxError> {
    let mut i = 1;
    let or_replace = sig.get(i).is_some_and(|t| t.is_word("OR"))
        && sig.get(i + 1).is_some_and(|t| t.is_word("REPLACE"));
    if or_replace {
        i += 2;
    }
    if !sig.get(i).is_some_and(|t| t.is_word("CONNECTION")) {
        return Ok(None);
    }
    i += 1;
    let if_not_exists = sig.get(i).is_some_and(|t| t.is_word("IF"));
    if if_not_exists {
        if !(sig.get(i + 1).is_some_and(|t| t.is_word("NOT"))
            && sig.get(i + 2).is_some_and(|t| t.is_word("EXISTS")))
        {
            return Err(SyntaxError(format!(
                "expected IF NOT EXISTS after CREATE CONNECTION; {CONNECTION_FORM}"
            )));
        }
        i += 3;
    }
    let name = match sig.get(i).map(|t| &t.token) {
        Some(Token::Word(w)) if w.quote_style.is_some() => w.value.clone(),
        Some(Token::Word(w)) if !w.value.eq_ignore_ascii_case("FROM") => w.value.to_lowercase(),
        _ => {
            return Err(SyntaxError(format!(
                "CREATE CONNECTION needs a name; {CONNECTION_FORM}"
            )));
        }
    };
    i += 1;
    if !sig.get(i).is_some_and(|t| t.is_word("FROM")) {
        return Err(SyntaxError(format!(
            "expected FROM <connector> after CREATE CONNECTION {name}; {CONNECTION_FORM}"
        )));
    }
    i += 1;
    let connector = match sig.get(i).map(|t| &t.token) {
        Some(Token::Word(w)) => w.value.to_lowercase(),
        Some(Token::SingleQuotedString(s)) => s.to_lowercase(),
        _ => {
            return Err(SyntaxError(format!(
                "expected a connector name after FROM in CREATE CONNECTION {name}; \
                 {CONNECTION_FORM}"
            )));
        }
    };
    i += 1;
    let options = match sig.get(i) {
        None => Vec::new(),
        Some(t) if t.is_word("WITH") => {
            let open = sig.get(i + 1).is_some_and(|t| t.token == Token::LParen);
            let close = sig.last().is_some_and(|t| t.token == Token::RParen);
            if !open || !close || sig.len() < i + 3 {
                return Err(SyntaxError(format!(
                    "expected WITH (key = 'value', ...) in CREATE CONNECTION {name}; \
                     {CONNECTION_FORM}"
                )));
            }
            parse_option_tokens(&sig[i + 2..sig.len() - 1])?
        }
        Some(t) => {
            return Err(SyntaxError(format!(
                "unexpected {} after CREATE CONNECTION {name} FROM {connector}; \
                 {CONNECTION_FORM}",
                t.token
            )));
        }
    };
    Ok(Some(CreateConnection {
        name,
        connector,
        options,
        or_replace,
        if_not_exists,
    }))
}

/// A short label for a statement DataFusion ran, for the CLI to confirm it: its
/// leading keywords and the name after them, e.g. `CREATE EXTERNAL TABLE orders`.
pub fn summary(sql: &str) -> String {
    let Ok(tokens) = tokenize(sql) else {
        return String::new();
    };
    let mut words = Vec::new();
    for token in significant(&tokens).into_iter().take(6) {
        match &token.token {
            Token::Word(w) => {
                words.push(w.to_string());
                let keyword = w.quote_style.is_none()
                    && w.keyword != datafusion::sql::sqlparser::keywords::Keyword::NoKeyword;
                if !keyword {
                    break;
                }
            }
            _ => break,
        }
    }
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connection(sql: &str) -> CreateConnection {
        match classify(sql).unwrap() {
            EngineStatement::CreateConnection(c) => c,
            other => panic!("not a connection: {other:?}"),
        }
    }

    #[test]
    fn parses_the_reference_connection() {
        let c = connection(
            "CREATE CONNECTION nats_sink_conn FROM nats_sink\nWITH (servers = '[\"nats://localhost:4222\"]', username = 'publisher', password = '${NATS_PASSWORD}')",
        );
        assert_eq!(c.name, "nats_sink_conn");
        assert_eq!(c.connector, "nats_sink");
        assert!(!c.or_replace && !c.if_not_exists);
        assert_eq!(
            c.options,
            [
                (
                    "servers".to_string(),
                    "[\"nats://localhost:4222\"]".to_string()
                ),
                ("username".to_string(), "publisher".to_string()),
                ("password".to_string(), "${NATS_PASSWORD}".to_string()),
            ]
        );
    }

    #[test]
    fn parses_connection_variants() {
        let c = connection("create or replace connection \"Conn\" from 'NATS_SINK'");
        assert_eq!(
            (c.name.as_str(), c.connector.as_str()),
            ("Conn", "nats_sink")
        );
        assert!(c.or_replace && c.options.is_empty());
        let c = connection("CREATE CONNECTION IF NOT EXISTS Conn FROM x WITH ()");
        assert_eq!(c.name, "conn");
        assert!(c.if_not_exists);
    }

    #[test]
    fn connection_syntax_errors_show_the_form() {
        for sql in [
            "CREATE CONNECTION",
            "CREATE CONNECTION c nats_sink",
            "CREATE CONNECTION c FROM",
            "CREATE CONNECTION c FROM x (a = 'b')",
            "CREATE CONNECTION c FROM x WITH a = 'b'",
            "CREATE CONNECTION IF EXISTS c FROM x",
        ] {
            let err = classify(sql).unwrap_err();
            assert!(
                err.0.contains("CREATE CONNECTION name FROM connector"),
                "{sql}: {err}"
            );
        }
    }

    #[test]
    fn sorts_statements() {
        assert!(matches!(
            classify("CREATE TABLE t (a INT) WITH (connector = 'datagen')").unwrap(),
            EngineStatement::CreateTableWith { create, .. } if create == "CREATE TABLE t (a INT)"
        ));
        assert!(matches!(
            classify("INSERT INTO t SELECT 1 WITH (connector = 'x')").unwrap(),
            EngineStatement::InsertWith { insert, .. } if insert == "INSERT INTO t SELECT 1"
        ));
        for sql in [
            "CREATE TABLE t (a INT)",
            "INSERT INTO t SELECT 1",
            "INSERT INTO t WITH c AS (SELECT 1) SELECT * FROM c",
            "CREATE EXTERNAL TABLE t (a INT) STORED AS CSV LOCATION 'x.csv'",
            "CREATE VIEW v AS SELECT 1",
            "SELECT 'CREATE CONNECTION'",
        ] {
            assert_eq!(classify(sql).unwrap(), EngineStatement::DataFusion, "{sql}");
        }
    }

    #[test]
    fn sorts_explain_of_insert_with() {
        let sql = "EXPLAIN ANALYZE VERBOSE INSERT INTO o SELECT * FROM t WITH (connector = 'x')";
        let EngineStatement::ExplainInsertWith {
            explain,
            insert,
            options,
        } = classify(sql).unwrap()
        else {
            panic!("not an explained insert");
        };
        assert_eq!(
            explain,
            "EXPLAIN ANALYZE VERBOSE INSERT INTO o SELECT * FROM t"
        );
        assert_eq!(insert, "INSERT INTO o SELECT * FROM t");
        assert_eq!(options, [("connector".to_string(), "x".to_string())]);
        for sql in [
            "EXPLAIN INSERT INTO o SELECT 1",
            "EXPLAIN SELECT * FROM t WITH (k = 'v')",
            "EXPLAIN WITH c AS (SELECT 1) INSERT INTO o SELECT * FROM c WITH (k = 'v')",
        ] {
            assert_eq!(classify(sql).unwrap(), EngineStatement::DataFusion, "{sql}");
        }
    }

    #[test]
    fn prepare_with_connector_options_is_refused_without_echoing_them() {
        for sql in [
            "PREPARE p AS INSERT INTO o SELECT 1 AS v WITH (connector = 'nats_sink', password = 'hunter2')",
            "PREPARE p AS INSERT INTO o SELECT v FROM t WITH (connector = 'nats_sink')",
        ] {
            let err = classify(sql).unwrap_err().0;
            assert!(
                err.starts_with("PREPARE cannot take connector options")
                    && err.contains("CREATE TABLE"),
                "{err}"
            );
            assert!(!err.contains("hunter2"));
        }
        let plain = "PREPARE p(BIGINT) AS INSERT INTO o SELECT $1";
        assert_eq!(classify(plain).unwrap(), EngineStatement::DataFusion);
    }

    #[test]
    fn debug_hides_option_values() {
        for sql in [
            "CREATE CONNECTION c FROM nats_sink WITH (password = 'hunter2')",
            "CREATE TABLE t (a INT) WITH (connector = 'rec', token = 'hunter2')",
            "INSERT INTO t SELECT 1 WITH (connection = 'c', password = 'hunter2')",
            "EXPLAIN INSERT INTO t SELECT 1 WITH (connector = 'rec', password = 'hunter2')",
        ] {
            let statement = classify(sql).unwrap();
            let debug = format!("{statement:?} {statement:#?}");
            assert!(!debug.contains("hunter2"), "{debug}");
            assert!(debug.contains("***"), "{debug}");
            assert!(!statement.label().contains("hunter2"));
        }
        // Engine keys are never secret.
        let statement = classify("INSERT INTO t SELECT 1 WITH (connection = 'c')").unwrap();
        assert!(format!("{statement:?}").contains("\"c\""));
    }

    #[test]
    fn summarises_statements() {
        assert_eq!(
            summary("CREATE EXTERNAL TABLE orders (a INT) STORED AS CSV LOCATION 'x'"),
            "CREATE EXTERNAL TABLE orders"
        );
        assert_eq!(summary("drop view if exists v"), "drop view if exists v");
    }
}
