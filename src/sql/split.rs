//! Token-level SQL work that DataFusion's parser cannot do for the engine.
//!
//! - [`split_statements`] cuts a script into statements on `;` outside strings and
//!   comments (the sqlparser tokenizer decides what is a string or a comment).
//! - [`split_trailing_with`] finds a trailing `WITH ( k = 'v', ... )` clause. sqlparser
//!   reads such a clause after a table name as table hints and DataFusion ignores
//!   them, so options left in the text would be lost without a word (FACTS.md). A CTE
//!   (`WITH name AS (...)`) is never matched: its `WITH` is not followed by `(`.
//! - [`parse_options`] reads the inside of such a clause into ordered key/value pairs.
//!
//! Everything works on byte offsets into the original text, so the SQL handed on to
//! DataFusion is exactly what the user wrote, minus the clause taken out.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer, TokenizerError};

/// A token with its byte range in the text it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct SpannedToken {
    /// The token as sqlparser reads it (string literals unescaped).
    pub token: Token,
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset just past the last character.
    pub end: usize,
}

impl SpannedToken {
    /// True for whitespace and comments, which never change a statement's meaning.
    pub fn is_trivia(&self) -> bool {
        matches!(self.token, Token::Whitespace(_))
    }

    /// True if this is the unquoted word `word` (compared case-insensitively).
    pub fn is_word(&self, word: &str) -> bool {
        matches!(&self.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
    }
}

/// A syntax error found before the text reaches DataFusion. The message says what was
/// expected; the engine adds which statement it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SyntaxError(pub String);

/// One statement of a script, as written (without its `;`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptStatement {
    /// 1-based position among the non-empty statements of the script.
    pub number: usize,
    /// 1-based line of the statement's first token in the script.
    pub line: usize,
    /// The statement's text, trimmed of surrounding whitespace.
    pub text: String,
}

/// Tokenizes `sql` with the generic dialect (DataFusion's default) and returns the
/// tokens with their byte ranges, whitespace and comments included.
pub fn tokenize(sql: &str) -> Result<Vec<SpannedToken>, SyntaxError> {
    let (tokens, error) = tokenize_partial(sql);
    match error {
        Some(e) => Err(SyntaxError(e.to_string())),
        None => Ok(tokens),
    }
}

/// Like [`tokenize`], but on failure also returns the tokens read before the error.
fn tokenize_partial(sql: &str) -> (Vec<SpannedToken>, Option<TokenizerError>) {
    let dialect = GenericDialect {};
    let mut raw = Vec::new();
    let error = Tokenizer::new(&dialect, sql)
        .tokenize_with_location_into_buf(&mut raw)
        .err();
    let mut cursor = Cursor::new(sql);
    let tokens = raw
        .into_iter()
        .map(|t| {
            let start = cursor.advance_to(t.span.start);
            let end = cursor.advance_to(t.span.end);
            SpannedToken {
                token: t.token,
                start,
                end,
            }
        })
        .collect();
    (tokens, error)
}

/// Maps sqlparser's (line, column) locations to byte offsets. Tokens arrive in order,
/// so one forward walk over the text serves them all.
struct Cursor<'a> {
    text: &'a str,
    line: u64,
    column: u64,
    byte: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            line: 1,
            column: 1,
            byte: 0,
        }
    }

    fn advance_to(&mut self, target: Location) -> usize {
        // The tokenizer counts columns in chars and starts a line after each '\n'.
        while (self.line, self.column) < (target.line, target.column) {
            let Some(c) = self.text[self.byte..].chars().next() else {
                break;
            };
            self.byte += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
        self.byte
    }
}

/// A script that cannot be split: a token (usually a string or comment) is not
/// closed. `number` and `line` locate the statement it starts in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ScriptError {
    /// 1-based number of the statement holding the error.
    pub number: usize,
    /// 1-based line where that statement starts.
    pub line: usize,
    /// The tokenizer's message, with the error's own line and column.
    pub message: String,
}

/// Splits a script into its statements on `;` outside strings and comments. Empty
/// statements (only whitespace or comments) are dropped.
pub fn split_statements(script: &str) -> Result<Vec<ScriptStatement>, ScriptError> {
    let (tokens, error) = tokenize_partial(script);
    let mut statements = Vec::new();
    let mut current: Vec<&SpannedToken> = Vec::new();
    for token in &tokens {
        if token.token == Token::SemiColon {
            push_statement(script, &mut statements, &mut current);
        } else {
            current.push(token);
        }
    }
    if let Some(error) = error {
        // The failing statement is the one after the last complete one; it starts at
        // its first token read, or at the error itself.
        let line = current
            .iter()
            .find(|t| !t.is_trivia())
            .map(|t| line_of(script, t.start))
            .unwrap_or(error.location.line as usize);
        return Err(ScriptError {
            number: statements.len() + 1,
            line,
            message: error.to_string(),
        });
    }
    push_statement(script, &mut statements, &mut current);
    Ok(statements)
}

/// Ends the statement made of `current` (if it has any significant token).
fn push_statement(
    script: &str,
    statements: &mut Vec<ScriptStatement>,
    current: &mut Vec<&SpannedToken>,
) {
    let first = current.iter().find(|t| !t.is_trivia());
    let last = current.iter().rev().find(|t| !t.is_trivia());
    if let (Some(first), Some(last)) = (first, last) {
        statements.push(ScriptStatement {
            number: statements.len() + 1,
            line: line_of(script, first.start),
            text: script[first.start..last.end].to_string(),
        });
    }
    current.clear();
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte].matches('\n').count() + 1
}

/// The significant (non-trivia) tokens of `tokens`.
pub fn significant(tokens: &[SpannedToken]) -> Vec<&SpannedToken> {
    tokens.iter().filter(|t| !t.is_trivia()).collect()
}

/// A trailing `WITH ( ... )` clause split off a statement.
#[derive(Debug, Clone, PartialEq)]
pub struct TrailingWith {
    /// The statement without the clause, trimmed at the end.
    pub statement: String,
    /// The options inside the clause, in the order written.
    pub options: Vec<(String, String)>,
}

/// Splits a trailing `WITH ( k = 'v', ... )` off `sql`. Returns `Ok(None)` when the
/// statement does not end with `WITH ( ... )` at the top level; an error when it does
/// but the inside is not a list of `key = 'value'`.
pub fn split_trailing_with(sql: &str) -> Result<Option<TrailingWith>, SyntaxError> {
    let tokens = tokenize(sql)?;
    let sig = significant(&tokens);
    let Some(last) = sig.last() else {
        return Ok(None);
    };
    if last.token != Token::RParen {
        return Ok(None);
    }
    // Walk back to the `(` matching the final `)`; that pair is at the top level.
    let mut depth = 0usize;
    let mut open = None;
    for (i, t) in sig.iter().enumerate().rev() {
        match t.token {
            Token::RParen => depth += 1,
            Token::LParen => {
                depth -= 1;
                if depth == 0 {
                    open = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(open) = open else {
        return Ok(None);
    };
    if open == 0 || !sig[open - 1].is_word("WITH") {
        return Ok(None);
    }
    let with = sig[open - 1];
    let inner: Vec<&SpannedToken> = sig[open + 1..sig.len() - 1].to_vec();
    let options = parse_option_tokens(&inner)?;
    Ok(Some(TrailingWith {
        statement: sql[..with.start].trim_end().to_string(),
        options,
    }))
}

/// Parses `k = 'v', ...` (the inside of a `WITH (...)` clause, without the
/// parentheses). Keys are identifiers (dotted allowed) or single-quoted strings and are
/// lowercased: option keys are case-insensitive. Values must be single-quoted strings.
pub fn parse_options(text: &str) -> Result<Vec<(String, String)>, SyntaxError> {
    let tokens = tokenize(text)?;
    parse_option_tokens(&significant(&tokens))
}

pub(crate) fn parse_option_tokens(
    sig: &[&SpannedToken],
) -> Result<Vec<(String, String)>, SyntaxError> {
    let mut options: Vec<(String, String)> = Vec::new();
    let mut i = 0;
    while i < sig.len() {
        let key = parse_key(sig, &mut i)?;
        if sig.get(i).map(|t| &t.token) != Some(&Token::Eq) {
            return Err(SyntaxError(format!(
                "expected '=' after option '{key}', as in {key} = 'value'"
            )));
        }
        i += 1;
        let value = match sig.get(i).map(|t| &t.token) {
            Some(Token::SingleQuotedString(v)) => v.clone(),
            Some(other) => {
                return Err(SyntaxError(format!(
                    "the value of option '{key}' must be a single-quoted string, as in \
                     {key} = '{}'",
                    unquoted(other)
                )));
            }
            None => {
                return Err(SyntaxError(format!(
                    "option '{key}' has no value; write {key} = 'value'"
                )));
            }
        };
        i += 1;
        if options.iter().any(|(k, _)| *k == key) {
            return Err(SyntaxError(format!(
                "option '{key}' is given twice; keep one"
            )));
        }
        options.push((key, value));
        match sig.get(i).map(|t| &t.token) {
            None => {}
            Some(Token::Comma) => i += 1,
            Some(other) => {
                return Err(SyntaxError(format!(
                    "expected ',' or ')' after the value of option '{}', found {other}",
                    options[options.len() - 1].0
                )));
            }
        }
    }
    Ok(options)
}

/// Reads an option key at `sig[*i]`: `word(.word)*` or `'string'`.
fn parse_key(sig: &[&SpannedToken], i: &mut usize) -> Result<String, SyntaxError> {
    let mut key = match sig.get(*i).map(|t| &t.token) {
        Some(Token::Word(w)) => w.value.clone(),
        Some(Token::SingleQuotedString(s)) => s.clone(),
        Some(other) => {
            return Err(SyntaxError(format!(
                "expected an option name, found {other}; options are written key = 'value'"
            )));
        }
        None => return Err(SyntaxError("expected an option name".to_string())),
    };
    *i += 1;
    while sig.get(*i).map(|t| &t.token) == Some(&Token::Period) {
        match sig.get(*i + 1).map(|t| &t.token) {
            Some(Token::Word(w)) => {
                key.push('.');
                key.push_str(&w.value);
                *i += 2;
            }
            _ => {
                return Err(SyntaxError(format!(
                    "option name '{key}.' is cut short after the '.'"
                )));
            }
        }
    }
    Ok(key.to_lowercase())
}

/// A token's text without quotes, for a suggestion like `rows = '1000'`.
fn unquoted(token: &Token) -> String {
    match token {
        Token::Word(w) => w.value.clone(),
        Token::Number(n, _) => n.clone(),
        Token::DoubleQuotedString(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(script: &str) -> Vec<String> {
        split_statements(script)
            .unwrap()
            .into_iter()
            .map(|s| s.text)
            .collect()
    }

    #[test]
    fn splits_on_top_level_semicolons() {
        assert_eq!(
            texts("SELECT 1; SELECT 2;\n\nSELECT 3"),
            ["SELECT 1", "SELECT 2", "SELECT 3"]
        );
    }

    #[test]
    fn keeps_semicolons_in_strings_and_comments() {
        let script = "SELECT 'a;b' AS x; -- c;d\nSELECT 2 /* e; f */ AS y;";
        // A statement starts at its first token: leading comments are left out.
        assert_eq!(
            texts(script),
            ["SELECT 'a;b' AS x", "SELECT 2 /* e; f */ AS y"]
        );
    }

    #[test]
    fn drops_empty_statements_and_counts_lines() {
        let statements =
            split_statements(";; -- only a comment\n;\nSELECT 1;\n\n  SELECT 2").unwrap();
        assert_eq!(statements.len(), 2);
        assert_eq!((statements[0].number, statements[0].line), (1, 3));
        assert_eq!((statements[1].number, statements[1].line), (2, 5));
        assert_eq!(statements[1].text, "SELECT 2");
    }

    #[test]
    fn keeps_multibyte_text_intact() {
        assert_eq!(
            texts("SELECT 'héllo ✓'; SELECT 'ß'"),
            ["SELECT 'héllo ✓'", "SELECT 'ß'"]
        );
    }

    #[test]
    fn reports_unterminated_string_in_its_statement() {
        let err = split_statements("SELECT 1;\n;\nSELECT 2;\n\nSELECT\n'oops").unwrap_err();
        assert!(err.message.contains("Unterminated"), "{err}");
        assert_eq!((err.number, err.line), (3, 5));
    }

    #[test]
    fn splits_trailing_with_from_insert() {
        let sql = "INSERT INTO out SELECT a, 'x' AS subject FROM t\nWITH (connector = 'nats_sink', Subject_Field = 'subject')";
        let split = split_trailing_with(sql).unwrap().unwrap();
        assert_eq!(
            split.statement,
            "INSERT INTO out SELECT a, 'x' AS subject FROM t"
        );
        assert_eq!(
            split.options,
            [
                ("connector".to_string(), "nats_sink".to_string()),
                ("subject_field".to_string(), "subject".to_string())
            ]
        );
    }

    #[test]
    fn leaves_ctes_alone() {
        let sql = "INSERT INTO out WITH w AS (SELECT 1 AS a) SELECT a FROM w";
        assert_eq!(split_trailing_with(sql).unwrap(), None);
        let sql =
            "INSERT INTO out WITH w AS (SELECT 1 AS a) SELECT a FROM w WITH (connector = 'x')";
        let split = split_trailing_with(sql).unwrap().unwrap();
        assert_eq!(
            split.statement,
            "INSERT INTO out WITH w AS (SELECT 1 AS a) SELECT a FROM w"
        );
        assert_eq!(split.options.len(), 1);
    }

    #[test]
    fn ignores_with_inside_strings_and_nested_parentheses() {
        assert_eq!(
            split_trailing_with("INSERT INTO out SELECT 'WITH (a = ''b'')' AS s").unwrap(),
            None
        );
        assert_eq!(
            split_trailing_with("INSERT INTO o SELECT * FROM (SELECT * FROM t WITH (k = 'v'))")
                .unwrap(),
            None
        );
        let sql =
            "INSERT INTO o SELECT concat(a, (b)) AS s FROM (SELECT 1) x WITH (k = 'a;b)') -- done";
        let split = split_trailing_with(sql).unwrap().unwrap();
        assert_eq!(
            split.statement,
            "INSERT INTO o SELECT concat(a, (b)) AS s FROM (SELECT 1) x"
        );
        assert_eq!(split.options, [("k".to_string(), "a;b)".to_string())]);
    }

    #[test]
    fn strips_with_from_create_table() {
        let sql = "CREATE TABLE t (id BIGINT, name VARCHAR(20)) WITH ('connector' = 'datagen', row_limit = '10',)";
        let split = split_trailing_with(sql).unwrap().unwrap();
        assert_eq!(
            split.statement,
            "CREATE TABLE t (id BIGINT, name VARCHAR(20))"
        );
        assert_eq!(
            split.options[0],
            ("connector".to_string(), "datagen".to_string())
        );
        assert_eq!(
            split.options[1],
            ("row_limit".to_string(), "10".to_string())
        );
    }

    #[test]
    fn option_values_are_unescaped_and_keys_may_be_dotted() {
        let options = parse_options("a.b = 'it''s', \"MiXed\" = ''").unwrap();
        assert_eq!(
            options,
            [
                ("a.b".to_string(), "it's".to_string()),
                ("mixed".to_string(), String::new())
            ]
        );
    }

    #[test]
    fn option_errors_name_the_option() {
        let err = parse_options("rows_per_second = 1000").unwrap_err();
        assert!(
            err.0.contains("'rows_per_second'") && err.0.contains("= '1000'"),
            "{err}"
        );
        let err = parse_options("a = 'x', a = 'y'").unwrap_err();
        assert!(err.0.contains("'a' is given twice"), "{err}");
        let err = parse_options("a 'x'").unwrap_err();
        assert!(err.0.contains("expected '=' after option 'a'"), "{err}");
        let err = parse_options("a = 'x' b = 'y'").unwrap_err();
        assert!(err.0.contains("after the value of option 'a'"), "{err}");
        let err = parse_options("a =").unwrap_err();
        assert!(err.0.contains("option 'a' has no value"), "{err}");
        assert!(split_trailing_with("SELECT * FROM t WITH (NOLOCK)").is_err());
    }
}
