//! The `streamsql` command line: argument parsing, logging setup and dispatch.
//! Without a command, `streamsql` opens the interactive shell.
//!
//! Exit codes: 0 success (also after a first Ctrl-C that stopped an insert from an
//! unbounded source with every row it read confirmed), 1 an error (printed to stderr
//! as `error: <message>`), 2 bad arguments (clap), [`EXIT_STOPPED`] (3) the first
//! Ctrl-C stopped the run before it completed, 130 a second Ctrl-C aborted the run. The
//! shell exits with 0, or with 128 + the signal's number when SIGTERM or SIGHUP ended it.

/// `eprintln!` that cannot panic: a message for a stderr nobody reads any more (a closed
/// pipe) is dropped, where `eprintln!` would panic, and on the signal thread lose the
/// signal. Defined before the modules so that they all use it.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod connectors;
mod http;
mod print;
mod progress;
mod run;
mod session;
mod shell;
mod signals;
mod status_page;
mod sub;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

pub use print::{format_message, format_outcome};

/// `streamsql run`'s exit code when the first SIGINT/SIGTERM stopped it before it
/// completed: a bounded insert was stopped before the end of its input, a statement
/// was cancelled after the grace period (rows read may be unconfirmed), or statements
/// were left unrun after one that would have ended by itself.
pub const EXIT_STOPPED: u8 = 3;

/// The exit code after a second signal (128 + SIGINT's number, as a shell reports it).
pub(crate) const EXIT_ABORTED: u8 = 130;
pub use progress::{ProgressMode, format_progress};

/// A streaming-SQL engine on DataFusion with a NATS sink.
#[derive(Debug, Parser)]
#[command(name = "streamsql", version, about)]
pub struct Cli {
    /// Log filter for stderr logs, e.g. `info` or `warn,streamsql=debug` (per-crate
    /// targets: see the README's Logs section).
    /// Overrides RUST_LOG; without either, warnings and errors are logged (async-nats's
    /// own logs only with an explicit filter).
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Without a command: the interactive shell (`shell` takes its options).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the SQL statements of a file (or `-` for stdin, or `-c SQL`) in order.
    Run(run::RunArgs),
    /// An interactive SQL prompt (the default without a command).
    Shell(shell::ShellArgs),
    /// List the registered connectors and their options.
    Connectors,
    /// Subscribe to a NATS subject and print each message on one line.
    Sub(sub::SubArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(message) = init_logging(cli.log_level.as_deref()) {
        say!("error: {message}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Some(Command::Run(args)) => run::run(args),
        Some(Command::Shell(args)) => shell::run(args),
        None => shell::ShellArgs::defaults().and_then(shell::run),
        Some(Command::Connectors) => connectors::run(),
        Some(Command::Sub(args)) => sub::run(args),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            say!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr so stdout carries only results.
fn init_logging(flag: Option<&str>) -> Result<(), String> {
    let filter = match flag {
        Some(spec) => EnvFilter::try_new(spec).map_err(|e| {
            format!("invalid --log-level '{spec}': {e}; try e.g. 'info' or 'debug'")
        })?,
        // async-nats logs connection failures as errors that the engine's own error
        // message already explains; by default keep only that one message.
        None => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("warn,async_nats=off")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    Ok(())
}

/// A tokio runtime: current-thread for `threads <= 1` (faster for publishing on
/// few cores: `benches/README.md`), multi-thread otherwise.
fn runtime(threads: usize) -> Result<tokio::runtime::Runtime, String> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_run_and_sub() {
        let cli = Cli::parse_from(["streamsql", "--log-level", "debug", "run", "-"]);
        assert_eq!(cli.log_level.as_deref(), Some("debug"));
        assert!(
            matches!(cli.command, Some(Command::Run(ref a)) if a.file.as_deref() == Some("-") && a.engine.stop_grace == 5.0)
        );
        let cli = Cli::parse_from(["streamsql", "run", "--stop-grace", "0.5", "x.sql"]);
        assert!(matches!(cli.command, Some(Command::Run(ref a)) if a.engine.stop_grace == 0.5));
        let cli = Cli::parse_from([
            "streamsql",
            "sub",
            "orders.>",
            "--count",
            "3",
            "--timeout",
            "1.5",
        ]);
        let Some(Command::Sub(args)) = cli.command else {
            panic!("not sub")
        };
        assert_eq!(
            (args.subject.as_str(), args.count, args.timeout),
            ("orders.>", Some(3), Some(1.5))
        );
        assert_eq!(args.server, "nats://127.0.0.1:4222");
    }

    #[test]
    fn no_command_is_the_shell() {
        assert!(Cli::parse_from(["streamsql"]).command.is_none());
        let defaults = shell::ShellArgs::defaults().unwrap();
        assert_eq!(defaults.engine.stop_grace, 5.0);
        assert!(defaults.history.is_none() && defaults.engine.metrics_addr.is_none());
        let cli = Cli::parse_from(["streamsql", "shell", "--history", "h", "--stop-grace", "1"]);
        assert!(
            matches!(cli.command, Some(Command::Shell(ref a)) if a.history.as_deref() == Some("h".as_ref()) && a.engine.stop_grace == 1.0)
        );
    }
}
