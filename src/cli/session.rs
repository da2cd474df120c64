//! What `run` and the shell share: the engine options, starting an engine with them,
//! and running one statement with its progress line and printed outcome.
//!
//! Both front ends go through [`execute`], so a statement prints the same way (tables,
//! insert summaries, the confirmed count after Ctrl-C) whether it came from a file,
//! `-c` or the prompt.

use std::io::Write;
use std::time::Duration;

use clap::Args;

use super::http;
use super::print::format_outcome;
use super::progress::{ProgressLine, ProgressMode};
use crate::engine::{DEFAULT_STOP_GRACE, Engine, Outcome, SignalStop};
use crate::error::EngineError;
use crate::shutdown::Shutdown;
use crate::sql::ScriptStatement;

/// Options of the engine, the same for `run` and `shell`.
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Worker threads; 1 runs everything on one thread, which publishes fastest on
    /// small machines.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub threads: usize,

    /// Serve a live status page at http://HOST:PORT/ (its figures as JSON at
    /// /status.json) and the sinks' Prometheus metrics at /metrics while statements run
    /// (port 0 picks a free port; the address is printed on stderr).
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

/// An engine set up from [`EngineArgs`], with its runtime and progress line.
pub(super) struct Session {
    pub engine: Engine,
    pub runtime: tokio::runtime::Runtime,
    pub progress: Option<ProgressLine>,
    pub grace: Duration,
}

impl Session {
    /// Checks the options, builds the engine on `shutdown` and starts the status server
    /// when asked. Fails, naming the option, on a bad value or an address in use.
    pub(super) fn start(args: &EngineArgs, shutdown: Shutdown) -> Result<Self, String> {
        let grace = stop_grace(args.stop_grace)?;
        let mut engine = Engine::with_shutdown(shutdown);
        engine.set_stop_grace(grace);
        if let Some(addr) = &args.metrics_addr {
            http::serve(addr, engine.registry(), engine.status_board())?;
        }
        let progress = ProgressLine::for_mode(args.progress);
        if let Some(line) = &progress {
            engine.set_progress(line.progress());
        }
        Ok(Session {
            engine,
            runtime: super::runtime(args.threads)?,
            progress,
            grace,
        })
    }
}

/// `--stop-grace` as a duration: zero or more seconds, finite.
fn stop_grace(secs: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|_| {
        format!("--stop-grace must be zero or more seconds (fractions allowed), got {secs}")
    })
}

/// How a statement run by [`execute`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ran {
    /// It finished (its outcome is printed). `completed` is false when the signal left
    /// it incomplete; `ended_unbounded` when the signal ended an unbounded insert.
    Finished {
        completed: bool,
        ended_unbounded: bool,
    },
    /// It was cancelled after the grace period (said on stderr).
    Cancelled,
}

/// Runs `statement` and prints its outcome to stdout (a cancel after the grace period
/// to stderr). An error is returned, not printed.
pub(super) async fn execute(
    engine: &mut Engine,
    statement: &ScriptStatement,
    progress: Option<&ProgressLine>,
) -> Result<Ran, String> {
    let outcome = engine.execute_statement(statement).await;
    if let Some(line) = progress {
        line.clear();
    }
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(stopped @ EngineError::Stopped { .. }) => {
            say!("{stopped}");
            return Ok(Ran::Cancelled);
        }
        Err(e) => return Err(e.to_string()),
    };
    let ran = match &outcome {
        Outcome::Insert(summary) => Ran::Finished {
            completed: summary.completed(),
            ended_unbounded: summary.stopped == Some(SignalStop::Unbounded),
        },
        _ => Ran::Finished {
            completed: true,
            ended_unbounded: false,
        },
    };
    // Not locked across statements: the progress line writes to stdout meanwhile.
    let printed = {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", format_outcome(&outcome)).and_then(|()| stdout.flush())
    };
    // Printed, a query's sources acknowledge what they read; if not, they hand it back.
    let settled = engine.result_shown(printed.is_ok()).await;
    printed.map_err(|e| format!("cannot write to stdout: {e}"))?;
    settled.map_err(|e| e.to_string())?;
    Ok(ran)
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
