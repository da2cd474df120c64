//! The terminal's settings as the shell found them, to put back when a signal ends the
//! shell at its prompt.
//!
//! The line editor switches the terminal to raw mode while it reads a line and restores
//! it when the read returns. A SIGTERM or SIGHUP is handled on the signal thread, and the
//! read does not return for it, so the shell restores the settings itself before it
//! exits; otherwise the user's terminal would be left without echo or line editing.

use nix::sys::termios::{SetArg, Termios, tcgetattr, tcsetattr};

/// The settings of the terminal on stdin, taken before the line editor changed them.
#[derive(Debug)]
pub(super) struct Terminal(Option<Termios>);

impl Terminal {
    /// Takes the settings now; none when stdin is not a terminal.
    pub(super) fn capture() -> Self {
        Terminal(tcgetattr(std::io::stdin()).ok())
    }

    /// Puts the settings back. Best effort: after a hangup the terminal is gone.
    pub(super) fn restore(&self) {
        if let Some(settings) = &self.0
            && let Err(e) = tcsetattr(std::io::stdin(), SetArg::TCSANOW, settings)
        {
            tracing::debug!("cannot restore the terminal settings: {e}");
        }
    }
}
