//! One Ctrl-C stops any statement: bounded inputs (generate_series, a file, VALUES) stop
//! being read, a sink retrying against a dead server is cancelled after the grace period,
//! and the run says how many rows were confirmed and exits 3 (a bounded statement did not
//! complete). The unbounded datagen case is in `streaming.rs` (exit 0).

use std::io::{Read, Write};
use std::process::{Child, ExitStatus};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::common::js::{create_stream, stored};
use crate::common::running::lines;
use crate::common::spawn_with_args;
use nats_testkit::NatsServer;

/// The bound the issue asks for: the first signal ends any statement within it.
const STOP_BOUND: Duration = Duration::from_secs(10);
/// How long a test waits before it kills a run that ignores the signal.
const GIVE_UP: Duration = Duration::from_secs(30);
/// `streamsql run`'s exit code for a statement the first signal left incomplete.
const EXIT_INCOMPLETE: i32 = 3;

/// A `streamsql run --progress always -` in the background, stdout read by line.
struct Run {
    child: Child,
    stdout: Receiver<String>,
    seen: Vec<String>,
}

/// How a run ended after the signal.
struct Stopped {
    status: ExitStatus,
    took: Duration,
    stdout: String,
    stderr: String,
}

impl Run {
    fn start(script: &str) -> Run {
        let mut child = spawn_with_args(&["run", "--progress", "always", "-"], script, &[]);
        let stdout = lines(child.stdout.take().unwrap());
        Run {
            child,
            stdout,
            seen: Vec::new(),
        }
    }

    /// Waits (20 s at most) for a stdout line for which `ready` holds.
    fn wait_for(&mut self, what: &str, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if ready(&line) {
                        return line;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    let mut err = String::new();
                    let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
                    panic!("never saw {what}; stdout: {:?}; stderr: {err}", self.seen);
                }
            }
        }
    }

    /// Sends SIGINT once and waits for the run to end (killing it after
    /// [`GIVE_UP`], which fails the test).
    fn interrupt(mut self) -> Stopped {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > GIVE_UP {
                self.child.kill().unwrap();
                self.child.wait().unwrap();
                let mut err = String::new();
                let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
                panic!(
                    "still running {GIVE_UP:?} after the first SIGINT; stdout: {:?}; stderr: {err}",
                    self.seen
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let took = started.elapsed();
        self.seen.extend(self.stdout.iter());
        let mut stderr = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        eprintln!("stopped {took:?} after the signal");
        Stopped {
            status,
            took,
            stdout: self.seen.join("\n"),
            stderr,
        }
    }
}

impl Stopped {
    /// The run ended within [`STOP_BOUND`] with `code`, and said it stopped on the
    /// signal; returns the confirmed count it printed for `table`.
    fn confirmed(&self, table: &str, code: i32) -> u64 {
        let context = format!("stdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        assert!(
            self.took < STOP_BOUND,
            "took {:?} to stop; {context}",
            self.took
        );
        assert_eq!(self.status.code(), Some(code), "{context}");
        let prefix = format!("INSERT INTO {table}: stopped on signal; ");
        let line = self
            .stdout
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no stop line; {context}"));
        let confirmed: u64 = line[prefix.len()..]
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {line:?}"));
        assert!(
            line.contains("confirmed before shutdown"),
            "{line}; {context}"
        );
        // The summary line (after the progress lines) says the same.
        let summary = format!("INSERT INTO {table}: {confirmed} rows published in ");
        assert!(
            self.stdout.lines().any(|l| l.starts_with(&summary)),
            "no {summary:?}; {context}"
        );
        confirmed
    }
}

/// The rows-confirmed figure of a progress line (`INSERT INTO t: N rows confirmed, ...`).
fn progress_rows(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once(": ")?;
    let (count, rest) = rest.split_once(' ')?;
    rest.starts_with("rows confirmed")
        .then(|| count.parse().ok())
        .flatten()
}

#[test]
fn first_sigint_stops_a_large_generate_series_into_core_nats() {
    let server = NatsServer::start();
    const TOTAL: u64 = 1_000_000_000;
    let mut run = Run::start(&format!(
        "INSERT INTO big SELECT value AS id, 'gs.big' AS subject FROM generate_series(1, {TOTAL})
         WITH (connector = 'nats_sink', servers = '{}', subject_field = 'subject');",
        server.url()
    ));
    let line = run.wait_for("rows confirmed", |l| {
        progress_rows(l).is_some_and(|rows| rows > 0)
    });
    let before = progress_rows(&line).unwrap();
    let stopped = run.interrupt();
    let confirmed = stopped.confirmed("big", EXIT_INCOMPLETE);
    assert!(
        (before..TOTAL).contains(&confirmed),
        "{before} <= {confirmed} < {TOTAL}"
    );
}

#[tokio::test]
async fn first_sigint_stops_a_file_input_and_every_confirmed_row_is_stored() {
    let server = NatsServer::start();
    let client = nats_testkit::connect(&server.url()).await;
    create_stream(&client, "FILE", &["file.>"], |_| {}).await;
    // One ack in flight at a time: the rows are delivered slowly, so the signal
    // comes long before the end of the file. Small batches: the sink still delivers
    // the rows it has read (a batch, and one encoded ahead) after the signal.
    const ROWS: u64 = 300_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.csv");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(file, "id,name").unwrap();
    for i in 0..ROWS {
        writeln!(file, "{i},name-{i}").unwrap();
    }
    file.into_inner().unwrap().sync_all().unwrap();
    let mut run = Run::start(&format!(
        "SET datafusion.execution.batch_size = 500;
         CREATE EXTERNAL TABLE events (id BIGINT, name VARCHAR)
         STORED AS CSV LOCATION '{}' OPTIONS ('format.has_header' 'true');
         INSERT INTO from_file SELECT id, name, 'file.events' AS subject FROM events
         WITH (connector = 'nats_sink', servers = '{}', subject_field = 'subject',
               stream = 'FILE', max_in_flight = '1');
         SELECT 'never runs';",
        path.display(),
        server.url()
    ));
    run.wait_for("rows confirmed", |l| {
        progress_rows(l).is_some_and(|rows| rows > 0)
    });
    let stopped = run.interrupt();
    let confirmed = stopped.confirmed("from_file", EXIT_INCOMPLETE);
    assert!(confirmed > 0 && confirmed < ROWS, "{confirmed}");
    // Everything the run counted is in the stream, and nothing more: reading
    // stopped, and what was read was confirmed before the exit.
    assert_eq!(stored(&client, "FILE").await, confirmed);
    assert!(
        stopped.stderr.contains("1 statement(s) not run"),
        "{}",
        stopped.stderr
    );
    assert!(!stopped.stdout.contains("never runs"), "{}", stopped.stdout);
}

#[test]
fn first_sigint_cancels_a_values_insert_retrying_against_a_dead_server() {
    // No retry_timeout: the sink would retry the connection forever.
    let mut server = NatsServer::start();
    let url = server.url();
    server.stop();
    let mut run = Run::start(&format!(
        "INSERT INTO dead SELECT * FROM (VALUES (1, 'dead.a'), (2, 'dead.b')) AS v(id, subject)
         WITH (connector = 'nats_sink', servers = '{url}', subject_field = 'subject',
               connect_timeout = '500ms');"
    ));
    run.wait_for("a retry", |l| l.contains("retrying: cannot connect"));
    let stopped = run.interrupt();
    assert_eq!(stopped.confirmed("dead", EXIT_INCOMPLETE), 0);
    assert!(
        stopped.stdout.contains("cancelled: not finished within"),
        "{}",
        stopped.stdout
    );
}

#[test]
fn a_second_signal_aborts_at_once_with_130_and_the_summary_of_what_was_confirmed() {
    let mut server = NatsServer::start();
    let url = server.url();
    server.stop();
    let mut run = Run::start(&format!(
        "INSERT INTO dead SELECT value AS id, 'dead.x' AS subject FROM generate_series(1, 10)
         WITH (connector = 'nats_sink', servers = '{url}', subject_field = 'subject',
               connect_timeout = '500ms');"
    ));
    run.wait_for("a retry", |l| l.contains("retrying: cannot connect"));
    let pid = run.child.id().to_string();
    let started = Instant::now();
    for signal in ["-INT", "-TERM"] {
        let sent = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = run.child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    // Well before the grace period of the first signal would have ended.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The insert still says what was confirmed, and why it ended.
    run.seen.extend(run.stdout.iter());
    let summary = run
        .seen
        .iter()
        .find(|l| l.starts_with("INSERT INTO dead: stopped on signal"))
        .unwrap_or_else(|| panic!("no summary: {:?}", run.seen));
    assert!(
        summary.contains("0 rows confirmed before shutdown; aborted by a second signal")
            && summary.contains("retrying: cannot connect"),
        "{summary}"
    );
}
