//! `streamsql run FILE.sql | - | -f FILE | -c SQL`: runs a script statement by
//! statement, printing each outcome as soon as its statement finishes.
//!
//! The first SIGINT/SIGTERM fires the engine's shutdown latch: the running statement
//! stops reading its input, a running insert ends once its sink confirmed what it had
//! read, and anything still running `--stop-grace` seconds later is cancelled. The
//! insert's summary says how many rows were confirmed, and no further statement starts.
//! The exit code is 0 when the signal stopped an insert from an unbounded source with
//! every row it read confirmed (the way such a run ends), [`EXIT_STOPPED`] when it left
//! something incomplete. A second signal aborts: the running statement is cancelled at
//! once, an insert's summary still says what was confirmed, and the exit code is 130
//! (see `signals`).

use std::io::Read;
use std::process::ExitCode;

use clap::{ArgGroup, Args};

use super::session::{EngineArgs, Ran, Session, execute};
use super::{EXIT_ABORTED, EXIT_STOPPED, signals};
use crate::engine::Engine;
use crate::shutdown::Shutdown;

/// Arguments of `streamsql run`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("script").required(true).args(["file", "file_option", "command"])))]
pub struct RunArgs {
    /// The SQL script to run, or `-` to read it from stdin.
    pub file: Option<String>,

    /// The SQL script to run (the same as giving it without `-f`).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file_option: Option<String>,

    /// SQL to run instead of a file, e.g. -c 'SELECT 1; SELECT 2'; repeat -c to run
    /// several in order.
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    pub command: Vec<String>,

    #[command(flatten)]
    pub engine: EngineArgs,
}

impl RunArgs {
    /// The script's text, from `-c`, the file or stdin.
    fn script(&self) -> Result<String, String> {
        if !self.command.is_empty() {
            // A statement without its `;` still ends where its -c ends, also after a
            // trailing `--` comment.
            return Ok(self.command.join("\n;\n"));
        }
        match self.file.as_deref().or(self.file_option.as_deref()) {
            Some("-") => {
                let mut script = String::new();
                std::io::stdin()
                    .read_to_string(&mut script)
                    .map_err(|e| format!("cannot read the script from stdin: {e}"))?;
                Ok(script)
            }
            Some(file) => {
                std::fs::read_to_string(file).map_err(|e| format!("cannot read '{file}': {e}"))
            }
            None => Err("give a script: FILE, -f FILE, - (stdin) or -c 'SQL'".to_string()),
        }
    }
}

pub(super) fn run(args: RunArgs) -> Result<ExitCode, String> {
    let script = args.script()?;
    run_text(&script, &args.engine)
}

/// Runs `script` with the engine `args` describe: `run` itself, and the shell when its
/// input is not a terminal.
pub(super) fn run_text(script: &str, args: &EngineArgs) -> Result<ExitCode, String> {
    let shutdown = Shutdown::new();
    let abort = Shutdown::new();
    let mut session = Session::start(args, shutdown.clone())?;
    session.engine.set_abort(abort.clone());
    signals::install_stop(shutdown, abort.clone(), session.grace)?;
    let result = session.runtime.block_on(run_script(
        script,
        &mut session.engine,
        session.progress.as_ref(),
    ));
    // A cancelled statement may leave tasks behind (e.g. a client's connection task):
    // they must not delay the exit.
    session.runtime.shutdown_background();
    if abort.is_triggered() {
        // The abort's own error (an aborted query), or one that came with it: said, not
        // hidden behind the exit code.
        if let Err(e) = &result {
            say!("error: {e}");
        }
        return Ok(ExitCode::from(EXIT_ABORTED));
    }
    result
}

async fn run_script(
    script: &str,
    engine: &mut Engine,
    progress: Option<&super::progress::ProgressLine>,
) -> Result<ExitCode, String> {
    let statements = Engine::parse_script(script).map_err(|e| e.to_string())?;
    let shutdown = engine.shutdown().clone();
    // Whether the last statement run did all it was meant to; an unbounded insert
    // stopped by the signal counts, since that is the only way it ends.
    let mut completed = true;
    let mut ended_unbounded = false;
    for (i, statement) in statements.iter().enumerate() {
        if shutdown.is_triggered() {
            let left = statements.len() - i;
            say!("stopped on signal: {left} statement(s) not run");
            // Statements after an unbounded insert could never run: the run ended the
            // way it was written to.
            completed = ended_unbounded;
            break;
        }
        match execute(engine, statement, progress).await? {
            Ran::Cancelled => return Ok(ExitCode::from(EXIT_STOPPED)),
            Ran::Finished {
                completed: done,
                ended_unbounded: unbounded,
            } => {
                completed = done;
                ended_unbounded = unbounded;
            }
        }
    }
    Ok(if completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_STOPPED)
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    fn run_args(args: &[&str]) -> Result<super::RunArgs, String> {
        let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
        match cli.command {
            Some(Command::Run(args)) => Ok(args),
            other => Err(format!("not run: {other:?}")),
        }
    }

    #[test]
    fn the_script_comes_from_exactly_one_of_file_f_and_c() {
        let args = run_args(&["streamsql", "run", "-c", "SELECT 1", "-c", "SELECT 2;"]).unwrap();
        assert_eq!(args.script().unwrap(), "SELECT 1\n;\nSELECT 2;");
        let args = run_args(&["streamsql", "run", "-f", "/nonexistent/x.sql"]).unwrap();
        let err = args.script().unwrap_err();
        assert!(err.starts_with("cannot read '/nonexistent/x.sql'"), "{err}");
        for both in [
            &["streamsql", "run", "x.sql", "-c", "SELECT 1"][..],
            &["streamsql", "run", "-f", "x.sql", "-c", "SELECT 1"],
            &["streamsql", "run", "x.sql", "-f", "y.sql"],
        ] {
            let err = run_args(both).unwrap_err();
            assert!(err.contains("cannot be used with"), "{err}");
        }
        let err = run_args(&["streamsql", "run"]).unwrap_err();
        assert!(err.contains("required"), "{err}");
    }
}
