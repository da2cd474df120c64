//! The shell's line editor: rustyline with a history file, and input that continues over
//! lines until a statement ends with `;` (a `\` command ends at its line).

use std::path::{Path, PathBuf};

use rustyline::completion::Completer;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::FileHistory;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Config, Editor, Helper};

use crate::sql::ends_statement;

/// Lines kept in the history file.
const HISTORY_SIZE: usize = 1000;

/// Tells rustyline when the typed text is complete.
#[derive(Debug, Default)]
pub(super) struct SqlInput;

impl Validator for SqlInput {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        Ok(if is_command(input) || ends_statement(input) {
            ValidationResult::Valid(None)
        } else {
            ValidationResult::Incomplete
        })
    }
}

impl Completer for SqlInput {
    type Candidate = String;
}
impl Hinter for SqlInput {
    type Hint = String;
}
impl Highlighter for SqlInput {}
impl Helper for SqlInput {}

/// A `\` command (`\q`, `\?`, ...): ends at its line, whatever follows.
pub(super) fn is_command(input: &str) -> bool {
    input.trim_start().starts_with('\\')
}

/// The editor, with the history of `history` loaded when the file exists.
pub(super) struct LineEditor {
    editor: Editor<SqlInput, FileHistory>,
    history: Option<PathBuf>,
}

impl LineEditor {
    pub(super) fn new(history: Option<PathBuf>) -> Result<Self, String> {
        let config = Config::builder()
            .max_history_size(HISTORY_SIZE)
            .and_then(|b| b.history_ignore_dups(true))
            .map_err(|e| format!("cannot set up the line editor: {e}"))?
            .history_ignore_space(true)
            .build();
        let mut editor = Editor::with_config(config)
            .map_err(|e| format!("cannot set up the line editor: {e}"))?;
        editor.set_helper(Some(SqlInput));
        if let Some(path) = history.as_deref().filter(|p| p.exists())
            && let Err(e) = editor.load_history(path)
        {
            tracing::warn!("cannot read the shell history {}: {e}", path.display());
        }
        Ok(LineEditor { editor, history })
    }

    /// Reads one entry: a statement (or several) up to a `;`, or a `\` command.
    pub(super) fn read(&mut self, prompt: &str) -> rustyline::Result<String> {
        self.editor.readline(prompt)
    }

    /// Keeps `entry` in the history and appends it to the history file.
    pub(super) fn remember(&mut self, entry: &str) {
        if entry.trim().is_empty() || !matches!(self.editor.add_history_entry(entry), Ok(true)) {
            return;
        }
        if let Some(path) = &self.history
            && let Err(e) = append(&mut self.editor, path)
        {
            tracing::warn!("cannot write the shell history {}: {e}", path.display());
        }
    }
}

fn append(editor: &mut Editor<SqlInput, FileHistory>, path: &Path) -> rustyline::Result<()> {
    if path.exists() {
        editor.append_history(path)
    } else {
        editor.save_history(path)
    }
}

/// The history file: `--history`, else `$STREAMSQL_HISTORY`, else
/// `~/.streamsql_history`; `None` (no history kept) without a home directory.
pub(super) fn history_path(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| std::env::var_os("STREAMSQL_HISTORY").map(PathBuf::from))
        .or_else(|| {
            std::env::var_os("HOME").map(|home| Path::new(&home).join(".streamsql_history"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_end_at_their_line_and_sql_at_its_semicolon() {
        assert!(is_command("\\q") && is_command("  \\connectors") && !is_command("SELECT '\\q'"));
    }
}
