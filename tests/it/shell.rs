//! The interactive shell as a person uses it: under a real pseudo-terminal (expectrl),
//! against a real nats-server. Statements span lines, state persists between them, a
//! running INSERT shows its progress line, Ctrl-C stops only that statement (its
//! summary gives the rows confirmed, which is what a subscriber received) and the prompt
//! comes back for the next statement; `\q` leaves with exit code 0 and the history file
//! holds what was typed.

use std::process::Command;
use std::time::Duration;

use expectrl::{ControlCode, Eof, Expect, Regex, Session};
use nats_testkit::{Collector, NatsServer, payload_json};

const PROMPT: &str = "streamsql> ";

/// `streamsql` with no command, in a pseudo-terminal, keeping its history in `history`.
fn shell(history: &std::path::Path) -> expectrl::session::OsSession {
    let mut command = Command::new(env!("CARGO_BIN_EXE_streamsql"));
    command
        .env("STREAMSQL_HISTORY", history)
        .env("TERM", "xterm")
        .env("COLUMNS", "200")
        .env_remove("RUST_LOG");
    let mut session = Session::spawn(command).expect("a pseudo-terminal");
    // Generous: a loaded 2-core machine may be slow; nothing here waits this long when
    // it works.
    session.set_expect_timeout(Some(Duration::from_secs(60)));
    session
}

/// The first capture of `pattern` in the shell's output, as text.
fn capture(session: &mut expectrl::session::OsSession, pattern: &str) -> String {
    let found = session
        .expect(Regex(pattern))
        .unwrap_or_else(|e| panic!("no {pattern:?} on the terminal: {e}"));
    String::from_utf8_lossy(found.get(1).expect("a capture group")).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_only_the_running_insert_and_the_session_goes_on() {
    let server = NatsServer::start();
    let url = server.url();
    let client = nats_testkit::connect(&url).await;
    let mut clicks = Collector::subscribe(&client, "shell.clicks").await;
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");

    let typed = tokio::task::spawn_blocking(move || {
        let mut sh = shell(&history);
        sh.expect(PROMPT).unwrap();
        sh.send_line(format!(
            "CREATE CONNECTION local FROM nats_sink WITH (servers = '{url}');"
        ))
        .unwrap();
        sh.expect("CREATE CONNECTION local (nats_sink)").unwrap();
        // One statement over two lines: it runs at the `;`.
        sh.send_line("CREATE TABLE clicks (id BIGINT)").unwrap();
        sh.send_line("  WITH (connector = 'datagen', rows_per_second = '200');")
            .unwrap();
        sh.expect("CREATE TABLE clicks (datagen source)").unwrap();
        sh.send_line(
            "INSERT INTO shell_out SELECT id FROM clicks \
             WITH (connection = 'local', subject = 'shell.clicks');",
        )
        .unwrap();
        // The progress line, once some rows are confirmed.
        capture(
            &mut sh,
            r"INSERT INTO shell_out: ([1-9][0-9]*) rows confirmed, ",
        );
        sh.send(ControlCode::EndOfText).unwrap();
        let confirmed: u64 = capture(
            &mut sh,
            r"INSERT INTO shell_out: stopped on signal; ([0-9]+) rows? confirmed before shutdown",
        )
        .parse()
        .unwrap();
        sh.expect(PROMPT).unwrap();

        // The session goes on: the table and the connection are still there.
        sh.send_line(
            "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'clicks';",
        )
        .unwrap();
        assert_eq!(capture(&mut sh, r"\|\s+(\d+)\s+\|"), "1");
        sh.send_line("\\connectors").unwrap();
        sh.expect("nats_sink (sink)").unwrap();
        sh.send_line("\\nope").unwrap();
        sh.expect("unknown command '\\nope'").unwrap();
        sh.send_line("\\q").unwrap();
        sh.expect(Eof).unwrap();
        // nix's WaitStatus, read through its Debug form: `Exited(Pid(..), 0)`.
        let status = format!("{:?}", sh.get_process().wait().unwrap());
        assert!(
            status.starts_with("Exited(") && status.ends_with(", 0)"),
            "{status}"
        );
        (
            confirmed,
            std::fs::read_to_string(dir.path().join("history")).unwrap(),
        )
    });
    let (confirmed, history) = typed.await.unwrap();

    // What the summary said was confirmed is what a subscriber received, in order.
    let received = clicks.collect_until_idle(Duration::from_millis(500)).await;
    assert_eq!(received.len() as u64, confirmed);
    for (i, message) in received.iter().enumerate() {
        assert_eq!(payload_json(message), serde_json::json!({ "id": i }));
    }
    for typed in [
        "CREATE CONNECTION local",
        "rows_per_second = '200'",
        "\\connectors",
    ] {
        assert!(
            history.contains(typed),
            "history lacks {typed:?}:\n{history}"
        );
    }
}
