//! The shell's `\` commands.

use crate::cli::connectors::listing;
use crate::engine::Engine;

/// What the shell does after a `\` command.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Print this and read the next entry.
    Print(String),
    /// Leave the shell.
    Quit,
}

/// The help text of `\?`.
pub(super) const HELP: &str = "\
Type SQL statements ending with ';' (they may span lines), or a command:
  \\q             quit (or Ctrl-D)
  \\?             this help
  \\connectors    the registered connectors and their options
Ctrl-C stops a running statement: an INSERT stops reading its input, confirms the rows it
read and prints its summary (a SELECT from a stream prints the rows it read); press it again
to abort the statement at once (an INSERT still prints the rows confirmed). At the prompt
Ctrl-C clears the line. Connections and tables stay defined until you quit.";

/// Runs the command `input` (which starts with `\`).
pub(super) fn command(input: &str, engine: &Engine) -> Result<Next, String> {
    match input.trim() {
        "\\q" | "\\quit" => Ok(Next::Quit),
        "\\?" | "\\h" | "\\help" => Ok(Next::Print(HELP.to_string())),
        "\\connectors" => Ok(Next::Print(
            listing(engine.registry()).trim_end().to_string(),
        )),
        other => Err(format!(
            "unknown command '{other}'; \\? lists the commands (\\q quits)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_command_does_what_help_says() {
        let engine = Engine::new();
        assert_eq!(command("\\q", &engine), Ok(Next::Quit));
        assert_eq!(command(" \\? ", &engine), Ok(Next::Print(HELP.into())));
        let Ok(Next::Print(connectors)) = command("\\connectors", &engine) else {
            panic!("no listing");
        };
        assert!(connectors.contains("nats_sink (sink)") && connectors.contains("datagen"));
        let err = command("\\dt", &engine).unwrap_err();
        assert!(
            err.contains("unknown command '\\dt'") && err.contains("\\?"),
            "{err}"
        );
    }
}
