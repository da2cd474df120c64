//! `streamsql run FILE.sql | -`: runs a script statement by statement, printing each
//! outcome as soon as its statement finishes.
//!
//! The first SIGINT/SIGTERM fires the engine's shutdown latch: the running statement
//! stops reading its input, a running insert ends once its sink confirmed what it had
//! read, and anything still running `--stop-grace` seconds later is cancelled. The
//! insert's summary says how many rows were confirmed, and no further statement starts.
//! The exit code is 0 when the signal stopped an insert from an unbounded source with
//! every row it read confirmed (the way such a run ends), [`EXIT_STOPPED`] when it left
//! something incomplete. A second signal aborts (exit 130, see `signals`).

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::metrics;
use super::print::format_outcome;
use super::progress::{ProgressLine, ProgressMode};
use super::{EXIT_STOPPED, runtime, signals};
use crate::engine::{DEFAULT_STOP_GRACE, Engine, Outcome, SignalStop};
use crate::error::EngineError;
use crate::shutdown::Shutdown;

/// Arguments of `streamsql run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The SQL script to run, or `-` to read it from stdin.
    pub file: String,

    /// Worker threads; 1 runs everything on one thread, which publishes fastest on
    /// small machines.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,

    /// Serve the sinks' Prometheus metrics at http://HOST:PORT/metrics while the script
    /// runs (port 0 picks a free port; the address is printed on stderr).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,

    /// Show a progress line for running inserts: `auto` when stdout is a terminal.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto, value_name = "WHEN")]
    pub progress: ProgressMode,

    /// After the first Ctrl-C (SIGINT or SIGTERM), how long the running statement may
    /// take to confirm the rows it has read before it is cancelled (fractions allowed).
    #[arg(long, default_value_t = DEFAULT_STOP_GRACE.as_secs_f64(), value_name = "SECS")]
    pub stop_grace: f64,
}

pub(super) fn run(args: RunArgs) -> Result<ExitCode, String> {
    let grace = stop_grace(args.stop_grace)?;
    let script = read_script(&args.file)?;
    let shutdown = Shutdown::new();
    let mut engine = Engine::with_shutdown(shutdown.clone());
    engine.set_stop_grace(grace);
    if let Some(addr) = &args.metrics_addr {
        metrics::serve(addr, engine.registry())?;
    }
    signals::install(shutdown.clone(), grace)?;
    let runtime = runtime(args.threads)?;
    let progress = ProgressLine::for_mode(args.progress);
    let result = runtime.block_on(run_script(&script, engine, progress));
    // A cancelled statement may leave tasks behind (e.g. a client's connection task):
    // they must not delay the exit.
    runtime.shutdown_background();
    result
}

/// `--stop-grace` as a duration: zero or more seconds, finite.
fn stop_grace(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        format!("--stop-grace must be zero or more seconds (fractions allowed), got {secs}")
    })
}

fn read_script(file: &str) -> Result<String, String> {
    if file == "-" {
        let mut script = String::new();
        std::io::stdin()
            .read_to_string(&mut script)
            .map_err(|e| format!("cannot read the script from stdin: {e}"))?;
        Ok(script)
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read '{file}': {e}"))
    }
}

async fn run_script(
    script: &str,
    mut engine: Engine,
    progress: Option<ProgressLine>,
) -> Result<ExitCode, String> {
    let statements = Engine::parse_script(script).map_err(|e| e.to_string())?;
    let shutdown = engine.shutdown().clone();
    if let Some(line) = &progress {
        engine.set_progress(line.progress());
    }
    // Whether the last statement run did all it was meant to; an unbounded insert
    // stopped by the signal counts, since that is the only way it ends.
    let mut completed = true;
    let mut ended_unbounded = false;
    for (i, statement) in statements.iter().enumerate() {
        if shutdown.is_triggered() {
            let left = statements.len() - i;
            eprintln!("stopped on signal: {left} statement(s) not run");
            // Statements after an unbounded insert could never run: the run ended the
            // way it was written to.
            completed = ended_unbounded;
            break;
        }
        let outcome = engine.execute_statement(statement).await;
        if let Some(line) = &progress {
            line.clear();
        }
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(stopped @ EngineError::Stopped { .. }) => {
                eprintln!("{stopped}");
                return Ok(ExitCode::from(EXIT_STOPPED));
            }
            Err(e) => return Err(e.to_string()),
        };
        if let Outcome::Insert(summary) = &outcome {
            completed = summary.completed();
            ended_unbounded = summary.stopped == Some(SignalStop::Unbounded);
        }
        // Not locked across statements: the progress line writes to stdout meanwhile.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", format_outcome(&outcome))
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))?;
    }
    Ok(if completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_STOPPED)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_grace_is_zero_or_more_finite_seconds() {
        assert_eq!(stop_grace(0.0), Ok(Duration::ZERO));
        assert_eq!(stop_grace(2.5), Ok(Duration::from_millis(2500)));
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            let err = stop_grace(bad).unwrap_err();
            assert!(
                err.starts_with("--stop-grace must be zero or more seconds"),
                "{err}"
            );
        }
    }
}
