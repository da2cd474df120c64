//! Ctrl-C in the shell: stops the running statement, never the session.
//!
//! At the prompt the line editor reads Ctrl-C as a key. While a statement runs, the
//! terminal sends SIGINT: the first one fires that statement's shutdown latch (its
//! input ends and an INSERT confirms what it read, as with `run`), the second aborts
//! it. SIGTERM does the same and then ends the shell.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    quit: Arc<AtomicBool>,
}

impl Interrupts {
    /// Starts watching signals; `grace` is what the engine gives a stopped statement.
    pub(super) fn install(grace: Duration) -> Result<Self, String> {
        let interrupts = Interrupts::default();
        let seen = interrupts.clone();
        watch(move |caught| seen.on_signal(caught, grace))?;
        Ok(interrupts)
    }

    fn on_signal(&self, caught: Caught, grace: Duration) {
        let name = caught.name();
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match running.as_ref() {
            Some(now) if !now.stop.is_triggered() => {
                say!(
                    "\nreceived {name}: stopping the statement; rows read get up to {}s to be \
                     confirmed (Ctrl-C again aborts it)",
                    grace.as_secs_f64()
                );
                now.stop.trigger();
            }
            Some(now) => now.abort.trigger(),
            None if caught == Caught::Terminate => {
                say!("received {name}: leaving the shell");
                std::process::exit(0);
            }
            None => {}
        }
        if caught == Caught::Terminate {
            self.quit.store(true, Ordering::Release);
        }
    }

    /// A statement starts: gives `engine` a fresh stop latch and returns the abort one.
    pub(super) fn begin(&self, engine: &mut Engine) -> Shutdown {
        let stop = Shutdown::new();
        let abort = Shutdown::new();
        engine.set_shutdown(stop.clone());
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

    /// SIGTERM came: leave once the running statement ended.
    pub(super) fn quit_requested(&self) -> bool {
        self.quit.load(Ordering::Acquire)
    }
}
