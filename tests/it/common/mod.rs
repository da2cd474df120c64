//! Helpers shared by the integration tests: running the `streamsql` binary on a script,
//! and reading what a real subscriber received.
#![allow(dead_code)] // each test file uses a different subset

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use async_nats::Message;
use nats_testkit::Collector;

pub mod browser;
pub mod engine;
pub mod http;
pub mod js;
pub mod leak;
pub mod link;
pub mod running;
pub mod source;
pub mod spawned;

/// The `streamsql` binary built for these tests.
pub fn streamsql() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_streamsql"));
    // Variables the examples read: a test states the ones it wants.
    cmd.env_remove("NATS_URL")
        .env_remove("NATS_PASSWORD")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs `script` with `streamsql run -` and the given environment.
pub fn run_script(script: &str, envs: &[(&str, &str)]) -> Output {
    run_with_args(&["run", "-"], script, envs)
}

/// [`run_script`], and how long the run took (for "fails fast" checks).
pub fn run_script_timed(script: &str, envs: &[(&str, &str)]) -> (Output, Duration) {
    let started = std::time::Instant::now();
    let output = run_script(script, envs);
    (output, started.elapsed())
}

/// `script` with the value of every `servers = '...'` option replaced by `url` (in the
/// same form, a JSON array or a plain URL): an example runs as written against a test's
/// own server.
pub fn with_servers(script: &str, url: &str) -> String {
    const KEY: &str = "servers = '";
    let mut out = String::with_capacity(script.len());
    let mut rest = script;
    while let Some(start) = rest.find(KEY) {
        let value = start + KEY.len();
        let end = value + rest[value..].find('\'').expect("a closing quote");
        out.push_str(&rest[..value]);
        if rest[value..].starts_with('[') {
            out.push_str(&format!("[\"{url}\"]"));
        } else {
            out.push_str(url);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Runs `streamsql <args>` with `script` on standard input.
pub fn run_with_args(args: &[&str], script: &str, envs: &[(&str, &str)]) -> Output {
    spawn_with_args(args, script, envs)
        .wait_with_output()
        .unwrap()
}

/// Starts `streamsql <args>` with `script` on standard input and piped output.
pub fn spawn_with_args(args: &[&str], script: &str, envs: &[(&str, &str)]) -> Child {
    let mut child = streamsql()
        .args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn streamsql");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    child
}

/// The text of `sql-examples/<name>`.
pub fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sql-examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts the run failed with exit code 1 and an error containing every `needle`.
pub fn assert_fails_with(output: &Output, needles: &[&str]) {
    let err = stderr(output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected exit 1; stderr:\n{err}\nstdout:\n{}",
        stdout(output)
    );
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
}

/// Messages that reached a subscriber on `>` until it was idle for a moment, leaving out
/// request/reply inboxes (the sink's own confirmation round trips travel there) and the
/// server's `$SYS` advisories (e.g. for a failed login).
pub async fn published(collector: &mut Collector) -> Vec<Message> {
    collector
        .collect_until_idle(Duration::from_millis(300))
        .await
        .into_iter()
        .filter(|m| !m.subject.starts_with("_INBOX.") && !m.subject.starts_with("$SYS."))
        .collect()
}

/// The count in an error's "N rows were published and confirmed" (or "N earlier rows").
pub fn confirmed_in_error(stderr: &str) -> u64 {
    let at = stderr
        .find(" rows were published and confirmed")
        .or_else(|| stderr.find(" earlier rows were published and confirmed"))
        .unwrap_or_else(|| panic!("the error says how many rows were confirmed:\n{stderr}"));
    let before = &stderr[..at];
    let before = before.strip_suffix(" earlier").unwrap_or(before);
    let digits = before
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or_default();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no count before 'rows were published':\n{stderr}"))
}

/// The payload as text.
pub fn text(message: &Message) -> String {
    String::from_utf8_lossy(&message.payload).into_owned()
}

/// The row count from the `INSERT INTO <table>: N rows ...` summary line.
pub fn inserted_rows(stdout: &str, table: &str) -> u64 {
    let prefix = format!("INSERT INTO {table}: ");
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no summary line for {table} in:\n{stdout}"));
    line[prefix.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no row count in {line:?}"))
}

/// A `summary` line's figure for `what` (e.g. "duplicates"): `..., 12 duplicates, ...`.
pub fn summary_count(stdout: &str, table: &str, what: &str) -> Option<u64> {
    let prefix = format!("INSERT INTO {table}: ");
    let line = stdout.lines().find(|l| l.starts_with(&prefix))?;
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || c == ',' || c == '(' || c == ')')
        .collect();
    words
        .windows(2)
        .find(|w| w[1] == what)
        .and_then(|w| w[0].parse().ok())
}
