//! The interactive shell as a person uses it: under a real pseudo-terminal (expectrl),
//! against a real nats-server. Statements span lines, state persists between them, a
//! running INSERT shows its progress line, Ctrl-C stops only that statement (its
//! summary gives the rows confirmed, which is what a subscriber received) and the prompt
//! comes back for the next statement; `\q` leaves with exit code 0 and the history file
//! holds what was typed. Also the one-liners of `run -c`, piped input, and signals when
//! stderr is a closed pipe.

use std::io::Write;
use std::ops::{Deref, DerefMut};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use expectrl::session::{OsProcess, OsStream};
use expectrl::stream::log::LogStream;
use expectrl::{ControlCode, Eof, Expect, Regex, Session};
use nats_testkit::{Collector, NatsServer, payload_json};

const PROMPT: &str = "streamsql> ";

/// A shell under a pseudo-terminal. What went through its terminal is kept and printed,
/// with the terminal's flags, when the test panics while the shell lives: an expect that
/// timed out says nothing of what the shell showed instead.
struct Shell {
    session: Session<OsProcess, LogStream<OsStream, Transcript>>,
    transcript: Transcript,
}

/// Every read from and write to the terminal, as expectrl's log writes them.
#[derive(Clone, Default)]
struct Transcript(Arc<Mutex<Vec<u8>>>);

impl Write for Transcript {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Deref for Shell {
    type Target = Session<OsProcess, LogStream<OsStream, Transcript>>;

    fn deref(&self) -> &Self::Target {
        &self.session
    }
}

impl DerefMut for Shell {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.session
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let flags = self
            .get_process()
            .get_raw_handle()
            .ok()
            .and_then(|pty| nix::sys::termios::tcgetattr(&pty).ok())
            .map(|t| format!("{:?}", t.local_flags));
        let transcript = self.transcript.0.lock().unwrap_or_else(|e| e.into_inner());
        eprintln!(
            "--- the shell's terminal (local flags now: {flags:?}) ---\n{}\n--- end ---",
            String::from_utf8_lossy(&transcript)
        );
    }
}

/// `streamsql` with no command, in a pseudo-terminal, keeping its history in `history`.
fn shell(history: &std::path::Path) -> Shell {
    shell_with(history, &[])
}

/// `streamsql args...` (e.g. `shell --stop-grace 9`), as [`shell`].
fn shell_with(history: &std::path::Path, args: &[&str]) -> Shell {
    let mut command = Command::new(env!("CARGO_BIN_EXE_streamsql"));
    command
        .args(args)
        .env("STREAMSQL_HISTORY", history)
        .env("TERM", "xterm")
        .env("COLUMNS", "200")
        .env_remove("RUST_LOG");
    let transcript = Transcript::default();
    let session = Session::spawn(command).expect("a pseudo-terminal");
    let mut session = expectrl::session::log(session, transcript.clone()).unwrap();
    // Generous: a loaded 2-core machine may be slow; nothing here waits this long when
    // it works.
    session.set_expect_timeout(Some(Duration::from_secs(60)));
    Shell {
        session,
        transcript,
    }
}

/// Asserts the shell exited with code 0.
fn assert_exited_0(session: &mut Shell) {
    assert_exited(session, 0);
}

/// Asserts the shell exited with `code` (nix's WaitStatus, read through its Debug form:
/// `Exited(Pid(..), 0)`).
fn assert_exited(session: &mut Shell, code: i32) {
    let status = format!("{:?}", session.get_process().wait().unwrap());
    assert!(
        status.starts_with("Exited(") && status.ends_with(&format!(", {code})")),
        "{status}"
    );
}

/// The first capture of `pattern` in the shell's output, as text.
fn capture(session: &mut Shell, pattern: &str) -> String {
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
        // A line that starts with a space stays out of the history file.
        sh.send_line(format!(
            " CREATE CONNECTION hidden FROM nats_sink WITH (servers = '{url}', \
             token = 'never-in-history');"
        ))
        .unwrap();
        sh.expect("CREATE CONNECTION hidden (nats_sink)").unwrap();
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
        // Ctrl-D at an empty prompt leaves.
        sh.send(ControlCode::EndOfTransmission).unwrap();
        sh.expect(Eof).unwrap();
        assert_exited_0(&mut sh);
        let file = dir.path().join("history");
        // It may hold what was typed into connections: for its owner's eyes only.
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&file).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
        (confirmed, std::fs::read_to_string(file).unwrap())
    });
    let (confirmed, history) = typed.await.unwrap();

    // What the summary said was confirmed is what a subscriber received, in order.
    let received = clicks.collect_until_idle(Duration::from_millis(500)).await;
    assert_eq!(received.len() as u64, confirmed);
    for (i, message) in received.iter().enumerate() {
        assert_eq!(payload_json(message), serde_json::json!({ "id": i }));
    }
    assert!(!history.contains("never-in-history"), "{history}");
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

/// A second Ctrl-C while an INSERT is stopping (its sink retrying against a server that
/// went down) aborts it at once, and the summary still says how many rows the stream had
/// confirmed; those are stored. The prompt comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_aborts_the_insert_and_still_prints_what_was_confirmed() {
    let mut server = NatsServer::start();
    let url = server.url();
    let client = nats_testkit::connect(&url).await;
    crate::common::js::create_stream(&client, "SHELL_ABORT", &["shell.abort"], |_| {}).await;
    drop(client);
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    let (rows_seen, wait_for_rows) = std::sync::mpsc::channel::<()>();
    let (server_down, wait_for_down) = std::sync::mpsc::channel::<()>();

    let sink_url = url.clone();
    let typed = tokio::task::spawn_blocking(move || {
        let url = sink_url;
        // Long enough that only the second Ctrl-C can end the stopping insert.
        let mut sh = shell_with(&history, &["shell", "--stop-grace", "300"]);
        sh.expect(PROMPT).unwrap();
        sh.send_line(
            "CREATE TABLE clicks (id BIGINT) WITH (connector = 'datagen', rows_per_second = '200');",
        )
        .unwrap();
        sh.expect("CREATE TABLE clicks (datagen source)").unwrap();
        sh.send_line(format!(
            "INSERT INTO kept SELECT id FROM clicks WITH (connector = 'nats_sink', \
             servers = '{url}', stream = 'SHELL_ABORT', subject = 'shell.abort');"
        ))
        .unwrap();
        capture(&mut sh, r"INSERT INTO kept: ([1-9][0-9]*) rows confirmed, ");
        // The server goes down: the sink retries, and cannot confirm what it sent.
        rows_seen.send(()).unwrap();
        wait_for_down.recv().unwrap();
        sh.expect("retrying: ").unwrap();
        sh.send(ControlCode::EndOfText).unwrap();
        sh.expect("stopping the statement").unwrap();
        sh.send(ControlCode::EndOfText).unwrap();
        let confirmed: u64 = capture(
            &mut sh,
            r"INSERT INTO kept: stopped on signal; ([0-9]+) rows? confirmed before shutdown; aborted by a second signal",
        )
        .parse()
        .unwrap();
        sh.expect(PROMPT).unwrap();
        // The session goes on.
        sh.send_line("SELECT 'still here' AS s;").unwrap();
        sh.expect("| still here |").unwrap();
        sh.send_line("\\q").unwrap();
        sh.expect(Eof).unwrap();
        assert_exited_0(&mut sh);
        confirmed
    });
    tokio::task::spawn_blocking(move || wait_for_rows.recv())
        .await
        .unwrap()
        .unwrap();
    server.kill();
    server_down.send(()).unwrap();
    let confirmed = typed.await.unwrap();
    assert!(
        confirmed > 0,
        "rows were confirmed before the server went down"
    );

    // What the stream acknowledged survived; what was in flight may have arrived too.
    server.restart();
    let client = nats_testkit::connect(&url).await;
    let stored = crate::common::js::stored(&client, "SHELL_ABORT").await;
    assert!(
        stored >= confirmed,
        "{stored} stored, {confirmed} confirmed"
    );
}

/// SIGTERM or SIGHUP at the prompt, where the line editor holds the terminal in raw mode:
/// the shell puts the terminal back as it found it and exits with 128 + the
/// signal's number, as a shell killed by it would.
#[test]
fn a_signal_at_the_prompt_puts_the_terminal_back_and_exits_non_zero() {
    for (signal, code) in [("TERM", 143), ("HUP", 129)] {
        let dir = tempfile::tempdir().unwrap();
        let mut sh = shell(&dir.path().join("history"));
        // Line editing by the terminal (canonical mode) is what raw mode turns off.
        let canonical = |sh: &Shell| {
            let pty = sh.get_process().get_raw_handle().unwrap();
            let settings = nix::sys::termios::tcgetattr(&pty).unwrap();
            settings
                .local_flags
                .contains(nix::sys::termios::LocalFlags::ICANON)
        };
        sh.expect(PROMPT).unwrap();
        assert!(!canonical(&sh), "raw mode at the prompt");
        let pid = sh.get_process().pid().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        sh.expect(format!("received SIG{signal}: leaving the shell"))
            .unwrap();
        sh.expect(Eof).unwrap();
        assert_exited(&mut sh, code);
        assert!(canonical(&sh), "SIG{signal} left the terminal in raw mode");
    }
}

/// `\q` leaves too, and the history of an earlier session is there to recall.
#[test]
fn backslash_q_leaves_and_the_history_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("history");
    std::fs::write(&history, "#V2\nSELECT 1 AS kept;\n").unwrap();
    let mut sh = shell(&history);
    sh.expect(PROMPT).unwrap();
    // Up arrow recalls the last entry of the history file; Enter runs it.
    sh.send("\x1b[A").unwrap();
    sh.send_line("").unwrap();
    sh.expect("| kept |").unwrap();
    sh.expect(PROMPT).unwrap();
    sh.send_line("\\q").unwrap();
    sh.expect(Eof).unwrap();
    assert_exited_0(&mut sh);
}

/// `run -c` runs statements given on the command line, each `-c` ending one, with the
/// output and exit codes of a file; `streamsql` with piped input runs it as a script.
#[tokio::test]
async fn one_liners_and_piped_input_run_like_a_file() {
    let server = NatsServer::start();
    let url = server.url();
    let client = nats_testkit::connect(&url).await;
    let mut pings = Collector::subscribe(&client, "oneliner.ping").await;
    let output = crate::common::streamsql()
        .args([
            "run",
            "-c",
            &format!("CREATE CONNECTION c FROM nats_sink WITH (servers = '{url}')"),
            "-c",
            "INSERT INTO out SELECT value AS id FROM generate_series(1, 3) \
             WITH (connection = 'c', subject = 'oneliner.ping') -- no ';' needed",
            "-c",
            "SELECT md5('order-42') AS msg_id;",
        ])
        .output()
        .unwrap();
    let out = crate::common::stdout(&output);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(crate::common::inserted_rows(&out, "out"), 3);
    assert!(out.contains("4f416b0c12aa8c754209da955fb755cc"), "{out}");
    let received = pings.collect(3, Duration::from_secs(10)).await;
    let ids: Vec<_> = received
        .iter()
        .map(|m| payload_json(m)["id"].clone())
        .collect();
    assert_eq!(ids, [1, 2, 3]);

    // A bad statement: exit 1 naming it; a script given twice: a usage error.
    let output = crate::common::streamsql()
        .args(["run", "-c", "SELECT 1", "-c", "SELEC 2"])
        .output()
        .unwrap();
    crate::common::assert_fails_with(&output, &["error: statement 2", "SELEC"]);
    let output = crate::common::streamsql()
        .args(["run", "x.sql", "-c", "SELECT 1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    assert!(crate::common::stderr(&output).contains("cannot be used with"));

    // Piped into the shell: run as a script.
    let output = crate::common::run_with_args(&[], "SELECT 6 * 7 AS answer;", &[]);
    assert!(output.status.success(), "{output:?}");
    assert!(
        crate::common::stdout(&output).contains("| 42 "),
        "{output:?}"
    );
}

/// A signal still stops `run` when nobody reads its stderr any more (a supervisor's log
/// reader gone): what it would say there is dropped, not a panic that loses the signal.
#[test]
fn a_signal_stops_the_run_when_stderr_is_a_closed_pipe() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let mut child = crate::common::streamsql()
        .args([
            "run",
            "-c",
            "CREATE TABLE g (id BIGINT) WITH (connector = 'datagen', rows_per_second = '10')",
            "-c",
            "SELECT id FROM g",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    // Signals are watched before the first statement runs.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.starts_with("CREATE TABLE g"), "{first}");
    let pid = child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    // Generous: a loaded machine may be slow to start the statement.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the run ignored SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Stopped by the signal, not by a failed write to the closed stderr (1) or a panic
    // (101): 0 once the SELECT over the unbounded source ran (it ends with the rows it
    // read), 3 if the signal came first and left it unrun (a loaded machine).
    assert!(matches!(status.code(), Some(0 | 3)), "{status}");
}
