//! Signals in the shell: Ctrl-C stops the running statement, never the session.
//!
//! At the prompt the line editor reads Ctrl-C as a key. While a statement runs, the
//! terminal sends SIGINT: the first one fires that statement's shutdown latch (its
//! input ends and an INSERT confirms what it read, as with `run`), the second fires its
//! abort latch (the engine cancels it at once, and an INSERT still prints what its sink
//! confirmed). SIGTERM and SIGHUP do the same to a running statement and then end the
//! shell; at the prompt they end it at once, with the terminal's settings put back.
//! Either way the shell exits with 128 + the signal's number.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::terminal::Terminal;
use crate::cli::signals::{Caught, watch};
use crate::engine::Engine;
use crate::shutdown::Shutdown;

/// The latches of the statement running now.
#[derive(Debug)]
struct Running {
    stop: Shutdown,
    abort: Shutdown,
}

#[derive(Debug, Clone, Default)]
pub(super) struct Interrupts {
    running: Arc<Mutex<Option<Running>>>,
    /// The SIGTERM or SIGHUP that asked the shell to end.
    quit: Arc<Mutex<Option<Caught>>>,
}

impl Interrupts {
    /// Starts watching signals; `grace` is what the engine gives a stopped statement.
    /// Call before the line editor first reads, while the terminal has its own settings.
    pub(super) fn install(grace: Duration) -> Result<Self, String> {
        let interrupts = Interrupts::default();
        let seen = interrupts.clone();
        let terminal = Terminal::capture();
        watch(true, move |caught| seen.on_signal(caught, grace, &terminal))?;
        Ok(interrupts)
    }

    fn on_signal(&self, caught: Caught, grace: Duration, terminal: &Terminal) {
        let name = caught.name();
        let ends_shell = caught != Caught::Interrupt;
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        if ends_shell {
            self.quit
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(caught);
        }
        match running.as_ref() {
            Some(now) if !now.stop.is_triggered() => {
                let again = if ends_shell {
                    "then the shell ends"
                } else {
                    "Ctrl-C again aborts it"
                };
                say!(
                    "\nreceived {name}: stopping the statement; rows read get up to {}s to be \
                     confirmed ({again})",
                    grace.as_secs_f64()
                );
                now.stop.trigger();
            }
            Some(now) => now.abort.trigger(),
            // At the prompt the line editor holds the terminal in raw mode and goes on
            // reading: put the terminal back and leave from here.
            None if ends_shell => {
                terminal.restore();
                say!("\nreceived {name}: leaving the shell");
                std::process::exit(i32::from(caught.exit_code()));
            }
            None => {}
        }
    }

    /// A statement starts: gives `engine` fresh stop and abort latches.
    pub(super) fn begin(&self, engine: &mut Engine) -> Shutdown {
        let stop = Shutdown::new();
        let abort = Shutdown::new();
        engine.set_shutdown(stop.clone());
        engine.set_abort(abort.clone());
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(Running {
            stop,
            abort: abort.clone(),
        });
        abort
    }

    /// The statement ended; returns whether a signal stopped it.
    pub(super) fn end(&self) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .is_some_and(|r| r.stop.is_triggered())
    }

    /// The SIGTERM or SIGHUP that asked the shell to end once the running statement
    /// ended, if one came.
    pub(super) fn quit_requested(&self) -> Option<Caught> {
        *self.quit.lock().unwrap_or_else(|e| e.into_inner())
    }
}
