//! A real headless browser (Debian's `chromium`, or `$CHROMIUM_BIN`) for pages the
//! engine serves: the DOM after the page's scripts ran, and a screenshot.

use std::path::Path;
use std::process::{Command, Output};

/// How long the page's scripts may run, in the browser's virtual time (which waits for
/// pending fetches, so a slow machine does not cut the page short).
const SCRIPT_BUDGET_MS: u32 = 4000;

fn chromium(profile: &Path) -> Command {
    let bin = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "chromium".to_string());
    let mut command = Command::new(bin);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ]);
    command.arg(format!("--user-data-dir={}", profile.display()));
    command.arg(format!("--virtual-time-budget={SCRIPT_BUDGET_MS}"));
    command
}

fn run(mut command: Command) -> Output {
    let output = command.output().unwrap_or_else(|e| {
        panic!(
            "cannot run chromium ({e}): install Debian's package (apt-get install chromium; \
             .ci/run does) or set CHROMIUM_BIN"
        )
    });
    assert!(
        output.status.success(),
        "chromium failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// The page at `url` as the browser's DOM after its scripts ran.
pub fn dump_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut command = chromium(profile.path());
    command.args(["--dump-dom", url]);
    String::from_utf8_lossy(&run(command).stdout).into_owned()
}

/// A PNG screenshot of the page at `url`, `width` x `height` pixels, written to `path`.
pub fn screenshot(url: &str, path: &Path, width: u32, height: u32) {
    let profile = tempfile::tempdir().unwrap();
    let mut command = chromium(profile.path());
    command.arg(format!("--screenshot={}", path.display()));
    command.arg(format!("--window-size={width},{height}"));
    command.arg(url);
    run(command);
}
