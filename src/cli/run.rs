//! `streamsql run FILE.sql | -`: runs a script statement by statement, printing each
//! outcome as soon as its statement finishes.
//!
//! The first SIGINT/SIGTERM fires the engine's shutdown latch: sources end their
//! streams, the running insert completes with what the sink confirmed, its summary is
//! printed and the command exits 0 without starting further statements. A second
//! signal aborts (exit 130, see `signals`).

use std::io::{Read, Write};
use std::process::ExitCode;

use clap::Args;

use super::metrics;
use super::print::format_outcome;
use super::progress::{ProgressLine, ProgressMode};
use super::{runtime, signals};
use crate::engine::Engine;
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
}

pub(super) fn run(args: RunArgs) -> Result<ExitCode, String> {
    let script = read_script(&args.file)?;
    let shutdown = Shutdown::new();
    let engine = Engine::with_shutdown(shutdown.clone());
    if let Some(addr) = &args.metrics_addr {
        metrics::serve(addr, engine.registry())?;
    }
    signals::install(shutdown.clone())?;
    let runtime = runtime(args.threads)?;
    let progress = ProgressLine::for_mode(args.progress);
    runtime.block_on(run_script(&script, engine, progress))
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
    for (i, statement) in statements.iter().enumerate() {
        if shutdown.is_triggered() {
            let left = statements.len() - i;
            eprintln!("stopped on signal: {left} statement(s) not run");
            break;
        }
        let outcome = engine.execute_statement(statement).await;
        if let Some(line) = &progress {
            line.clear();
        }
        let outcome = outcome.map_err(|e| e.to_string())?;
        // Not locked across statements: the progress line writes to stdout meanwhile.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", format_outcome(&outcome))
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))?;
    }
    Ok(ExitCode::SUCCESS)
}
