//! A `streamsql run --metrics-addr 127.0.0.1:0 -` in the background, its output read
//! line by line, for tests that watch a run from outside (metrics, the status page).

use std::io::{BufRead, BufReader, Read};
use std::process::Child;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// A `streamsql run` in the background, its output read line by line.
pub struct Running {
    child: Child,
    /// The URL of `/metrics`.
    pub metrics: String,
    stdout: Receiver<String>,
    stdout_seen: Vec<String>,
    stderr: Receiver<String>,
}

impl Running {
    pub fn start(args: &[&str], script: &str) -> Running {
        let args = [&["run", "--metrics-addr", "127.0.0.1:0"], args, &["-"]].concat();
        let mut child = super::spawn_with_args(&args, script, &[]);
        let stdout = lines(child.stdout.take().unwrap());
        let stderr = lines(child.stderr.take().unwrap());
        let first = stderr
            .recv_timeout(Duration::from_secs(10))
            .expect("the metrics address on stderr");
        let metrics = first
            .strip_prefix("serving metrics at ")
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_string();
        // The status page's address follows on the next line.
        let status = stderr
            .recv_timeout(Duration::from_secs(10))
            .expect("the status page address on stderr");
        assert!(status.starts_with("status page at "), "{status}");
        Running {
            child,
            metrics,
            stdout,
            stdout_seen: Vec::new(),
            stderr,
        }
    }

    /// Waits for a stdout line starting with `prefix`.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    self.stdout_seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line starting with {prefix:?}; stdout so far: {:?}; stderr: {:?}",
                    self.stdout_seen,
                    self.stderr.try_iter().collect::<Vec<_>>()
                ),
            }
        }
    }

    /// `http://HOST:PORT` of the server, without a path.
    pub fn base(&self) -> &str {
        self.metrics.trim_end_matches("/metrics")
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process's peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Kills the process at once (SIGKILL): a crash, with nothing flushed or handed back.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Stops the run as Ctrl-C would; returns its whole stdout and stderr once it exited 0.
    pub fn interrupt(self) -> (String, String) {
        self.send_interrupt();
        self.wait_for_exit()
    }

    /// Sends SIGINT, as Ctrl-C would, and returns at once.
    pub fn send_interrupt(&self) {
        let pid = self.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Returns the run's whole stdout and stderr once it exited 0.
    pub fn wait_for_exit(self) -> (String, String) {
        let (code, stdout, stderr) = self.wait_for_end();
        assert_eq!(code, Some(0), "stderr: {stderr}");
        (stdout, stderr)
    }

    /// Returns the run's exit code, whole stdout and stderr once it exited.
    pub fn wait_for_end(mut self) -> (Option<i32>, String, String) {
        let status = self.child.wait().unwrap();
        let stderr: Vec<_> = self.stderr.iter().collect();
        self.stdout_seen.extend(self.stdout.iter());
        (
            status.code(),
            self.stdout_seen.join("\n"),
            stderr.join("\n"),
        )
    }
}

/// A test that fails before [`Running::interrupt`] must not leave the run (often an
/// unbounded source) going for the rest of the suite.
impl Drop for Running {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The lines of `stream`, read on a thread of their own as they come.
pub fn lines(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
