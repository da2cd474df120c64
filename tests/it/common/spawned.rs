//! A `streamsql run -` in the background whose output goes to files, read once it ends.

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// A `streamsql run -` process whose output goes to files, so a test can watch the
/// stream, kill the server and wait with a deadline while it runs.
pub struct Spawned {
    child: Child,
    _dir: tempfile::TempDir,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Spawned {
    pub fn start(script: &str) -> Spawned {
        let dir = tempfile::tempdir().unwrap();
        let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let mut child = super::streamsql()
            .args(["run", "-"])
            .stdin(Stdio::piped())
            .stdout(File::create(&stdout).unwrap())
            .stderr(File::create(&stderr).unwrap())
            .spawn()
            .expect("spawn streamsql");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(script.as_bytes()).unwrap();
        drop(stdin);
        Spawned {
            child,
            _dir: dir,
            stdout,
            stderr,
        }
    }

    /// Waits until the process exits; kills it and panics after `limit`.
    pub async fn finish(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "streamsql still ran after {limit:?}; killed it. stderr:\n{}",
                    String::from_utf8_lossy(&std::fs::read(&self.stderr).unwrap_or_default())
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Output {
            status,
            stdout: std::fs::read(&self.stdout).unwrap(),
            stderr: std::fs::read(&self.stderr).unwrap(),
        }
    }
}

impl Drop for Spawned {
    /// A test that fails while the statement runs leaves no process behind.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
