//! The progress line of a running `INSERT`: rows confirmed, rows/s, messages in flight,
//! and the reason while the sink retries.
//!
//! On a terminal it is one line redrawn in place and erased before the statement's
//! summary is printed; with `--progress always` on anything else, one line per update
//! (for CI logs); by default nothing when stdout is not a terminal.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::ValueEnum;

use crate::engine::{InsertProgress, Progress};

/// How often the line is updated.
const EVERY: Duration = Duration::from_secs(1);
/// Erases the current terminal line and returns to its start.
const ERASE_LINE: &str = "\r\x1b[2K";

/// When to show progress (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// Only when stdout is a terminal.
    Auto,
    /// Always; one line per update when stdout is not a terminal.
    Always,
    /// Never.
    Never,
}

/// Writes progress lines to stdout.
#[derive(Debug, Clone)]
pub(super) struct ProgressLine {
    terminal: bool,
    state: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    /// The previous report, for the rate over the last interval.
    last: Option<(Duration, u64)>,
    /// A line is on screen and must be erased before other output.
    drawn: bool,
}

impl ProgressLine {
    /// The progress line for `mode`, or `None` when nothing is to be shown.
    pub(super) fn for_mode(mode: ProgressMode) -> Option<Self> {
        let terminal = std::io::stdout().is_terminal();
        let show = match mode {
            ProgressMode::Auto => terminal,
            ProgressMode::Always => true,
            ProgressMode::Never => false,
        };
        show.then(|| ProgressLine {
            terminal,
            state: Arc::default(),
        })
    }

    /// The engine's callback, reporting every second.
    pub(super) fn progress(&self) -> Progress {
        let line = self.clone();
        Progress {
            every: EVERY,
            report: Arc::new(move |now| line.show(now)),
        }
    }

    fn show(&self, now: &InsertProgress) {
        let mut state = self.state.lock().expect("not poisoned");
        let mut text = format_progress(now, rate(state.last, now));
        if self.terminal {
            // A wrapped line could not be redrawn in place.
            fit(&mut text, terminal_width());
        }
        state.last = Some((now.elapsed, now.rows));
        let mut stdout = std::io::stdout().lock();
        // Progress is best effort: a closed stdout shows up when the summary is written.
        let _ = if self.terminal {
            state.drawn = true;
            write!(stdout, "{ERASE_LINE}{text}")
        } else {
            writeln!(stdout, "{text}")
        };
        let _ = stdout.flush();
    }

    /// Erases the line (on a terminal) and starts afresh for the next statement; call
    /// before printing anything else to stdout.
    pub(super) fn clear(&self) {
        let mut state = self.state.lock().expect("not poisoned");
        if std::mem::take(&mut state.drawn) {
            let mut stdout = std::io::stdout().lock();
            let _ = write!(stdout, "{ERASE_LINE}");
            let _ = stdout.flush();
        }
        state.last = None;
    }
}

/// The terminal's width from `COLUMNS` (shells export it), else the classic 80.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c| c > 0)
        .unwrap_or(80)
}

/// Cuts `text` to fewer than `width` characters, marking the cut with `…`.
fn fit(text: &mut String, width: usize) {
    let max = width.saturating_sub(1).max(2);
    if text.chars().count() > max {
        let end = text
            .char_indices()
            .nth(max - 1)
            .map_or(text.len(), |(i, _)| i);
        text.truncate(end);
        text.push('…');
    }
}

/// Rows per second since the previous report (since the start for the first one).
fn rate(last: Option<(Duration, u64)>, now: &InsertProgress) -> f64 {
    let (at, rows) = last.unwrap_or((Duration::ZERO, 0));
    let secs = now.elapsed.saturating_sub(at).as_secs_f64();
    if secs > 0.0 {
        now.rows.saturating_sub(rows) as f64 / secs
    } else {
        0.0
    }
}

/// `INSERT INTO t: 12000 rows confirmed, 4000 rows/s, 1024 in flight, 3s[, retrying: why]`
pub fn format_progress(now: &InsertProgress, rows_per_second: f64) -> String {
    let mut text = format!(
        "INSERT INTO {}: {} rows confirmed, {:.0} rows/s, {} in flight, {}s",
        now.table,
        now.rows,
        rows_per_second,
        now.in_flight,
        now.elapsed.as_secs()
    );
    if let Some(reason) = &now.retrying {
        text.push_str(", retrying: ");
        text.push_str(reason);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, rows: u64, retrying: Option<&str>) -> InsertProgress {
        InsertProgress {
            table: "orders".into(),
            rows,
            in_flight: 1024,
            retrying: retrying.map(Into::into),
            elapsed: Duration::from_secs(secs),
        }
    }

    #[test]
    fn the_line_gives_rows_rate_in_flight_and_why_it_retries() {
        assert_eq!(
            format_progress(&at(3, 12000, None), 4000.0),
            "INSERT INTO orders: 12000 rows confirmed, 4000 rows/s, 1024 in flight, 3s"
        );
        assert_eq!(
            format_progress(&at(9, 12000, Some("cannot connect to NATS")), 0.0),
            "INSERT INTO orders: 12000 rows confirmed, 0 rows/s, 1024 in flight, 9s, \
             retrying: cannot connect to NATS"
        );
    }

    #[test]
    fn a_long_line_is_cut_to_the_terminal_width() {
        let mut text = "INSERT INTO orders: retrying: cannot connect".to_string();
        fit(&mut text, 20);
        assert_eq!(text, "INSERT INTO orders…");
        assert_eq!(text.chars().count(), 19);
        let mut short = "short".to_string();
        fit(&mut short, 80);
        assert_eq!(short, "short");
    }

    #[test]
    fn the_rate_is_over_the_last_interval() {
        assert_eq!(rate(None, &at(2, 1000, None)), 500.0);
        assert_eq!(
            rate(Some((Duration::from_secs(2), 1000)), &at(3, 4000, None)),
            3000.0
        );
        assert_eq!(
            rate(Some((Duration::from_secs(3), 4000)), &at(3, 4000, None)),
            0.0
        );
    }
}
