//! `NatsServer`: one real nats-server process owned by a test.
//!
//! Guarantees: the server listens on 127.0.0.1 on a port no other server of this test
//! process uses (never 4222); it keeps its config, log and JetStream storage in its own
//! temporary directory, which lives exactly as long as the `NatsServer`; when a
//! constructor or `restart()` returns, the server accepts clients; when the value is
//! dropped, the process is killed.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Child;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::builder::{Placement, ServerBuilder};
use crate::monitor;
use crate::ports;
use crate::process::{self, NotReady};

/// How long a start or restart may take before it is a failure. Startup takes ~5 ms
/// here; the margin is for loaded CI machines and large JetStream stores.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How often a start on an automatically chosen port may find that port taken by
/// another process before giving up.
const PORT_ATTEMPTS: usize = 5;

/// A running nats-server, killed on drop. See the crate documentation for an example.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    version: String,
    // Declared after `child`; its directory is removed once `Drop::drop` has killed
    // the process.
    setup: Setup,
}

impl NatsServer {
    /// Starts a plain server with JetStream on a free loopback port and waits until it
    /// is ready. Same as `NatsServer::builder().start()`.
    ///
    /// # Panics
    /// If nats-server is not installed or does not become ready (see
    /// [`ServerBuilder::start`]).
    pub fn start() -> NatsServer {
        Self::builder().start()
    }

    /// A builder for a server with authentication, limits, monitoring or raw config.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    pub(crate) fn launch(settings: ServerBuilder) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("nats-testkit-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"));
        let mut setup = Setup {
            name: unique_name(),
            port: 0,
            monitor_port: None,
            settings,
            dir,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            setup.port = setup.settings.port.unwrap_or_else(ports::free_port);
            setup.monitor_port = setup.settings.monitor.then(ports::free_port);
            setup.write_config();
            match setup.spawn_ready() {
                Ok((child, version)) => {
                    return NatsServer {
                        child,
                        version,
                        setup,
                    };
                }
                // Another process took the port between our check and the server's
                // bind; a port of our own choosing can simply be chosen again.
                Err(failure)
                    if failure.port_taken
                        && setup.settings.port.is_none()
                        && attempt < PORT_ATTEMPTS => {}
                Err(failure) => setup.fail(&failure),
            }
        }
    }

    /// The URL clients connect to: `nats://127.0.0.1:<port>`, without credentials.
    ///
    /// It also serves a TLS server: async-nats switches to TLS when the server's `INFO`
    /// says `tls_required`, and checks the certificate against `127.0.0.1` (an IP SAN
    /// of [`Pki`](crate::Pki)'s server certificate). A TLS-first server needs
    /// `ConnectOptions::tls_first()` whatever the URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.setup.port)
    }

    /// `tls://127.0.0.1:<port>`: the same server, but the client itself requires TLS
    /// (as `ConnectOptions::require_tls(true)` does) and refuses a server that offers
    /// plaintext instead of being talked down to it.
    pub fn tls_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.setup.port)
    }

    /// The client port. It stays the same across [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.setup.port
    }

    /// The `server_name` the server runs with, unique among this machine's test
    /// servers. JetStream names cluster members (stream leaders, replicas) by it.
    pub fn server_name(&self) -> &str {
        &self.setup.name
    }

    /// The nats-server version this server reported when it last became ready, such
    /// as `"2.15.1"`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The JetStream storage directory given to the server (`store_dir`);
    /// nats-server keeps its files in a `jetstream/` directory below it.
    pub fn store_dir(&self) -> PathBuf {
        self.setup.store_dir()
    }

    /// The config file the server runs with (see [`ServerBuilder::config`]).
    pub fn config_path(&self) -> PathBuf {
        self.setup.config_path()
    }

    /// The server's log file: its own log plus anything it printed before reading
    /// its config, across all restarts.
    pub fn log_path(&self) -> PathBuf {
        self.setup.log_path()
    }

    /// The whole server log so far (see [`log_path`](Self::log_path)).
    pub fn log(&self) -> String {
        self.setup.log()
    }

    /// The monitoring endpoint, `http://127.0.0.1:<port>`.
    ///
    /// # Panics
    /// If the server was not built with [`ServerBuilder::monitor`].
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.monitor_port())
    }

    /// Fetches a monitoring endpoint such as `"/varz"`, `"/connz"` or
    /// `"/jsz?streams=true"` and returns its JSON.
    ///
    /// # Panics
    /// If monitoring is off, the request fails or the answer is not JSON.
    pub fn monitor_json(&self, path: &str) -> serde_json::Value {
        monitor::get_json(self.monitor_port(), path)
    }

    /// The last lines of the log, for failure messages of cluster helpers.
    pub(crate) fn log_tail(&self) -> String {
        self.setup.log_tail()
    }

    fn monitor_port(&self) -> u16 {
        self.setup
            .monitor_port
            .expect("this server has no monitoring endpoint: build it with .monitor(true)")
    }

    /// Whether the server process is still alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the server with SIGKILL, as a crash would, and waits until it is gone.
    /// What JetStream acknowledged survives: it is in the OS page cache.
    pub fn kill(&mut self) {
        // Fails only if the process has exited already, which is the goal anyway.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes the server (SIGSTOP): its connections stay open and take what fits in
    /// their socket buffers, but nothing is answered, as with a server that hangs.
    /// `stop`, `restart`, `kill` and drop work on a paused server too.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
    }

    /// Signals the process if it is still ours: once reaped, its pid may be another's.
    fn signal(&mut self, signal: libc::c_int) {
        if self.is_running() {
            process::signal(&self.child, signal);
        }
    }

    /// Stops the server gracefully with SIGTERM and waits until it has exited.
    ///
    /// # Panics
    /// If it is still running after 10 s (it is then killed).
    pub fn stop(&mut self) {
        // A paused server would not handle SIGTERM until it runs again.
        self.resume();
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + READY_TIMEOUT;
        while self.is_running() {
            if Instant::now() >= deadline {
                self.kill();
                panic!(
                    "nats-server ignored SIGTERM for {READY_TIMEOUT:?}; killed it\n{}",
                    self.setup.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Starts the server again on the same port with the same config and storage, and
    /// waits until it is ready. A running server is stopped gracefully first.
    ///
    /// Clients connected before reconnect on their own (async-nats keeps retrying).
    ///
    /// # Panics
    /// If the server does not become ready within 10 s.
    pub fn restart(&mut self) {
        if self.is_running() {
            self.stop();
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.setup.spawn_ready() {
                Ok((child, version)) => {
                    self.child = child;
                    self.version = version;
                    return;
                }
                // The port must stay the same; whoever holds it may let go soon.
                Err(failure) if failure.port_taken && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(50));
                }
                Err(failure) => self.setup.fail(&failure),
            }
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Everything about a server except its process: settings, identity, ports and the
/// directory holding its files. Survives the process across kills and restarts.
#[derive(Debug)]
struct Setup {
    settings: ServerBuilder,
    name: String,
    port: u16,
    monitor_port: Option<u16>,
    dir: TempDir,
}

impl Setup {
    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.conf")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    fn log(&self) -> String {
        let bytes = std::fs::read(self.log_path()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn write_config(&self) {
        let (store_dir, log_file) = (self.store_dir(), self.log_path());
        let config = self.settings.render(&Placement {
            name: &self.name,
            port: self.port,
            monitor_port: self.monitor_port,
            store_dir: &store_dir,
            log_file: &log_file,
        });
        let path = self.config_path();
        std::fs::write(&path, config)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Runs the server and waits until it is ready; returns the process and the
    /// version it reported. On failure the process is gone.
    fn spawn_ready(&self) -> Result<(Child, String), StartFailure> {
        let log_offset = self.log().len();
        let tls = self.settings.tls.probe();
        let mut child = process::spawn(&self.config_path(), &self.log_path());
        let deadline = Instant::now() + READY_TIMEOUT;
        let ready = process::wait_ready(&mut child, self.port, &self.name, tls.as_ref(), deadline);
        match ready {
            Ok(greeting) => {
                process::remember_real_binary(&child);
                Ok((child, greeting.version))
            }
            Err(reason) => {
                let _ = child.kill();
                let _ = child.wait();
                // Only this attempt's lines count: an earlier attempt may have failed
                // differently.
                let log = self.log();
                let this_attempt = log.get(log_offset..).unwrap_or_default();
                Err(StartFailure {
                    port_taken: this_attempt.contains("address already in use"),
                    reason,
                })
            }
        }
    }

    fn fail(&self, failure: &StartFailure) -> ! {
        let what = match failure.reason {
            NotReady::Exited(status) => format!("exited during startup ({status})"),
            NotReady::TimedOut => format!("was not ready after {READY_TIMEOUT:?}"),
        };
        panic!(
            "nats-server ({bin}) on port {port} {what}\n{tail}",
            bin = process::binary().display(),
            port = self.port,
            tail = self.log_tail(),
        );
    }

    /// The last lines of the log, for failure messages.
    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let mut text = format!("--- last lines of {} ---\n", self.log_path().display());
        for line in &lines[lines.len().saturating_sub(30)..] {
            let _ = writeln!(text, "{line}");
        }
        text
    }
}

/// Why a start failed, and whether another port could help.
struct StartFailure {
    port_taken: bool,
    reason: NotReady,
}

/// A server name unique among this machine's test processes; the readiness check
/// uses it to tell our server from another one that holds the same port.
fn unique_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "testkit-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
