//! SIGINT/SIGTERM (and, for the shell, SIGHUP) handling for `streamsql run` and the
//! shell.
//!
//! Signals are watched on a thread of their own with its own small runtime, so a
//! busy engine runtime (one thread by default) cannot delay them. What a signal does
//! is the caller's policy: for `run` ([`install_stop`]) the first signal fires the
//! shutdown latch (the engine stops the running statement within `grace`) and the
//! second exits at once with code 130; the shell stops only the running statement.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::shutdown::Shutdown;

/// A signal the CLI reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Caught {
    Interrupt,
    Terminate,
    /// The terminal hung up (watched by the shell only: `run` keeps the default, so
    /// that `nohup streamsql run` still ignores it).
    Hangup,
}

impl Caught {
    pub(super) fn name(self) -> &'static str {
        match self {
            Caught::Interrupt => "SIGINT",
            Caught::Terminate => "SIGTERM",
            Caught::Hangup => "SIGHUP",
        }
    }

    /// The exit code of a process this signal ended: 128 + its number, as shells report.
    pub(super) fn exit_code(self) -> u8 {
        let number = match self {
            Caught::Hangup => 1,
            Caught::Interrupt => 2,
            Caught::Terminate => 15,
        };
        128 + number
    }
}

/// Calls `on_signal` on the signal thread for every SIGINT and SIGTERM, and SIGHUP when
/// `hangup`. Handlers are registered before this returns, so a signal arriving at any
/// later point is seen.
pub(super) fn watch(
    hangup: bool,
    mut on_signal: impl FnMut(Caught) + Send + 'static,
) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the signal runtime: {e}"))?;
    let (mut interrupt, mut terminate, mut hangup) = {
        let _guard = runtime.enter();
        let register = |kind| signal(kind).map_err(|e| format!("cannot watch signals: {e}"));
        (
            register(SignalKind::interrupt())?,
            register(SignalKind::terminate())?,
            hangup.then(|| register(SignalKind::hangup())).transpose()?,
        )
    };
    std::thread::Builder::new()
        .name("signals".to_string())
        .spawn(move || {
            runtime.block_on(async move {
                loop {
                    let hung_up = async {
                        match hangup.as_mut() {
                            Some(hangup) => hangup.recv().await,
                            None => std::future::pending().await,
                        }
                    };
                    let caught = tokio::select! {
                        _ = interrupt.recv() => Caught::Interrupt,
                        _ = terminate.recv() => Caught::Terminate,
                        _ = hung_up => Caught::Hangup,
                    };
                    on_signal(caught);
                }
            })
        })
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;
    Ok(())
}

/// Ends the process if the aborted statement has not ended it within [`ABORT_GRACE`];
/// writes nothing first, since stderr may be what blocks.
fn exit_after_abort_grace() {
    std::thread::sleep(ABORT_GRACE);
    exit_aborted();
}

fn exit_aborted() -> ! {
    std::process::exit(i32::from(super::EXIT_ABORTED))
}

/// How long an aborted statement has to end (and an INSERT to print what its sink
/// confirmed) before the process exits anyway.
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// `run`'s policy: the first signal fires `shutdown`; the second fires `abort`, which
/// cancels the running statement at once (an INSERT still prints what was confirmed),
/// and the process exits with code 130 then, or after [`ABORT_GRACE`] at the latest; a
/// third exits at once.
pub(super) fn install_stop(
    shutdown: Shutdown,
    abort: Shutdown,
    grace: Duration,
) -> Result<(), String> {
    let mut seen = 0;
    watch(false, move |caught| {
        let name = caught.name();
        seen += 1;
        match seen {
            1 => {
                say!(
                    "received {name}: stopping the inputs; rows read get up to {}s to be \
                     confirmed (send it again to abort)",
                    grace.as_secs_f64()
                );
                tracing::info!(signal = name, "shutdown requested");
                shutdown.trigger();
            }
            2 => {
                // Before anything is written: a blocked stderr must not delay the abort.
                abort.trigger();
                let exit_later = std::thread::Builder::new()
                    .name("abort".to_string())
                    .spawn(exit_after_abort_grace);
                if exit_later.is_err() {
                    exit_aborted();
                }
                say!("received {name} (second signal): aborting");
            }
            _ => exit_aborted(),
        }
    })
}
