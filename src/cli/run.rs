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

use super::print::format_outcome;
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
}

pub(super) fn run(args: RunArgs) -> Result<ExitCode, String> {
    let script = read_script(&args.file)?;
    let shutdown = Shutdown::new();
    signals::install(shutdown.clone())?;
    let runtime = runtime(args.threads)?;
    runtime.block_on(run_script(&script, shutdown))
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

async fn run_script(script: &str, shutdown: Shutdown) -> Result<ExitCode, String> {
    let statements = Engine::parse_script(script).map_err(|e| e.to_string())?;
    let mut engine = Engine::with_shutdown(shutdown.clone());
    let mut stdout = std::io::stdout().lock();
    for (i, statement) in statements.iter().enumerate() {
        if shutdown.is_triggered() {
            let left = statements.len() - i;
            eprintln!("stopped on signal: {left} statement(s) not run");
            break;
        }
        let outcome = engine
            .execute_statement(statement)
            .await
            .map_err(|e| e.to_string())?;
        writeln!(stdout, "{}", format_outcome(&outcome))
            .and_then(|()| stdout.flush())
            .map_err(|e| format!("cannot write to stdout: {e}"))?;
    }
    Ok(ExitCode::SUCCESS)
}
