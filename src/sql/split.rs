//! Token-level SQL work that DataFusion's parser cannot do for the engine.
//!
//! - [`split_statements`] cuts a script into statements on `;` outside strings and
//!   comments (the sqlparser tokenizer decides what is a string or a comment).
//! - [`split_trailing_with`] finds a trailing `WITH ( k = 'v', ... )` clause. sqlparser
//!   reads such a clause after a table name as table hints and DataFusion ignores
//!   them, so options left in the text would be lost without a word (sqlparser reads them as table hints). A CTE
//!   (`WITH name AS (...)`) is never matched: its `WITH` is not followed by `(`.
//! - [`parse_options`] reads the inside of such a clause into ordered key/value pairs.
//!
//! Everything works on byte offsets into the original text, so the SQL handed on to
//! DataFusion is exactly what the user wrote, minus the clause taken out.

use std::fmt;

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Location, Token, Tokenizer, TokenizerError};

use super::statement::summary;
use crate::registry::redact;

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

/// One statement of a script, as written (without its `;`). `Debug` shows only the
/// statement's leading keywords and name: the text may hold secret option values.
#[derive(Clone, PartialEq, Eq)]
pub struct ScriptStatement {
    /// 1-based position among the non-empty statements of the script.
    pub number: usize,
    /// 1-based line of the statement's first token in the script.
    pub line: usize,
    /// The statement's text, trimmed of surrounding whitespace.
    pub text: String,
}

impl fmt::Debug for ScriptStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScriptStatement")
            .field("number", &self.number)
            .field("line", &self.line)
            .field("statement", &summary(&self.text))
            .finish_non_exhaustive()
    }
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

/// Whether `text` is ready to run as typed at a prompt: it ends with a `;` outside
/// strings and comments, or holds nothing but whitespace and comments. An unclosed
/// string or comment is not ready: the user is still typing it.
pub fn ends_statement(text: &str) -> bool {
    let (tokens, error) = tokenize_partial(text);
    if error.is_some() {
        return false;
    }
    match tokens.iter().rev().find(|t| !t.is_trivia()) {
        None => true,
        Some(last) => last.token == Token::SemiColon,
    }
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

/// A trailing `WITH ( ... )` clause split off a statement. `Debug` hides the option
/// values (see [`redact`]).
#[derive(Clone, PartialEq)]
pub struct TrailingWith {
    /// The statement without the clause, trimmed at the end.
    pub statement: String,
    /// The options inside the clause, in the order written.
    pub options: Vec<(String, String)>,
}

impl fmt::Debug for TrailingWith {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrailingWith")
            .field("statement", &self.statement)
            .field("options", &redacted(&self.options))
            .finish()
    }
}

/// `options` for `Debug`: without the connector's option docs every value but the
/// engine keys' is hidden.
pub(crate) fn redacted(options: &[(String, String)]) -> Vec<(String, String)> {
    redact(
        options.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        |_| true,
    )
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
            // The value is not echoed: it may be a secret.
            Some(_) => {
                return Err(SyntaxError(format!(
                    "the value of option '{key}' must be a single-quoted string, as in \
                     {key} = '...'"
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
                    "expected ',' or ')' after the value of option '{}', found {}",
                    options.last().map(|(k, _)| k.as_str()).unwrap_or_default(),
                    describe(other)
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
                "expected an option name, found {}; options are written key = 'value'",
                describe(other)
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

/// A token for an error message. Literals are named by kind, not shown: an option
/// list holds values that may be secrets.
fn describe(token: &Token) -> String {
    match token {
        Token::Word(w) => w.to_string(),
        Token::Number(..) => "a number".to_string(),
        other => {
            let text = other.to_string();
            if text.chars().any(char::is_alphanumeric) {
                "a literal".to_string()
            } else {
                text
            }
        }
    }
}

#[cfg(test)]
#[path = "split_tests.rs"]
mod tests;
