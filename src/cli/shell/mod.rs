//! `streamsql` (no command) or `streamsql shell`: an interactive SQL prompt.
//!
//! One engine lives for the whole session, so connections and tables stay defined from
//! one statement to the next. Statements are run and printed as `run` does
//! (`session::execute`). Ctrl-C stops only the running statement: its input ends and an
//! INSERT prints its summary with the rows confirmed (a second Ctrl-C aborts it at
//! once, and the summary still says what was confirmed), then the prompt returns. Each
//! statement gets fresh shutdown and abort latches, since a latch fires only once.
//! SIGTERM and SIGHUP end the shell (`interrupts`). With input that is not a terminal,
//! the shell runs it as a script, exactly like `run -`.

mod commands;
mod editor;
mod interrupts;
mod terminal;

use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, FromArgMatches};
use rustyline::error::ReadlineError;

use self::commands::{Next, command};
use self::editor::{LineEditor, history_path, is_command};
use self::interrupts::Interrupts;
use super::progress::ProgressLine;
use super::session::{EngineArgs, Session, execute};
use crate::engine::Engine;
use crate::shutdown::Shutdown;

const PROMPT: &str = "streamsql> ";

/// Arguments of `streamsql shell` (`streamsql` alone takes their defaults).
#[derive(Debug, Clone, Args)]
pub struct ShellArgs {
    /// The history file (default: $STREAMSQL_HISTORY, else ~/.streamsql_history).
    #[arg(long, value_name = "FILE")]
    pub history: Option<PathBuf>,

    #[command(flatten)]
    pub engine: EngineArgs,
}

impl ShellArgs {
    /// The options of `streamsql` alone: every default, as declared above.
    pub(super) fn defaults() -> Result<Self, String> {
        let command = Self::augment_args(clap::Command::new("shell"));
        let matches = command
            .try_get_matches_from(["shell"])
            .map_err(|e| e.to_string())?;
        Self::from_arg_matches(&matches).map_err(|e| e.to_string())
    }
}

pub(super) fn run(args: ShellArgs) -> Result<ExitCode, String> {
    if !std::io::stdin().is_terminal() {
        let mut script = String::new();
        std::io::stdin()
            .read_to_string(&mut script)
            .map_err(|e| format!("cannot read the script from stdin: {e}"))?;
        return super::run::run_text(&script, &args.engine);
    }
    let mut session = Session::start(&args.engine, Shutdown::new())?;
    let interrupts = Interrupts::install(session.grace)?;
    let mut editor = LineEditor::new(history_path(args.history))?;
    println!(
        "streamsql {}: end statements with ';', \\? for help, \\q or Ctrl-D to quit",
        env!("CARGO_PKG_VERSION")
    );
    while interrupts.quit_requested().is_none() {
        let entry = match editor.read(PROMPT) {
            Ok(entry) => entry,
            // Ctrl-C at the prompt discards the line, as in psql.
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(format!("cannot read from the terminal: {e}")),
        };
        editor.remember(&entry);
        if is_command(&entry) {
            match command(&entry, &session.engine) {
                Ok(Next::Quit) => break,
                Ok(Next::Print(text)) => println!("{text}"),
                Err(e) => say!("error: {e}"),
            }
            continue;
        }
        let Session {
            engine,
            runtime,
            progress,
            ..
        } = &mut session;
        runtime.block_on(run_entry(&entry, engine, progress.as_ref(), &interrupts));
    }
    // A cancelled statement may leave tasks behind; they must not delay the exit.
    session.runtime.shutdown_background();
    Ok(match interrupts.quit_requested() {
        Some(signal) => {
            say!("received {}: leaving the shell", signal.name());
            ExitCode::from(signal.exit_code())
        }
        None => ExitCode::SUCCESS,
    })
}

/// Runs the statements of one entry in order; an error or a Ctrl-C ends the entry (the
/// engine keeps what the statements before did).
async fn run_entry(
    entry: &str,
    engine: &mut Engine,
    progress: Option<&ProgressLine>,
    interrupts: &Interrupts,
) {
    let statements = match Engine::parse_script(entry) {
        Ok(statements) => statements,
        Err(e) => return say!("error: {e}"),
    };
    for (i, statement) in statements.iter().enumerate() {
        let mut abort = interrupts.begin(engine).signal();
        // The engine handles the abort itself, and an INSERT's summary then says what
        // was confirmed; `biased` lets it. Dropping the statement here is for one that
        // does not end at the abort (waiting outside the engine's grace handling).
        let result = tokio::select! {
            biased;
            result = execute(engine, statement, progress) => Some(result),
            () = abort.triggered() => None,
        };
        let stopped = interrupts.end();
        match result {
            Some(Ok(_)) => {}
            Some(Err(e)) => return say!("error: {e}"),
            None => {
                if let Some(line) = progress {
                    line.clear();
                }
                return say!(
                    "aborted: the statement was dropped at once; rows it had sent but not yet \
                     confirmed may or may not have arrived"
                );
            }
        }
        let left = statements.len() - i - 1;
        if stopped && left > 0 {
            return say!("stopped: {left} statement(s) of this entry not run");
        }
    }
}
