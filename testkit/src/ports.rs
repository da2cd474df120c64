//! Free loopback ports for test servers.
//!
//! The kernel picks a free port when we bind `127.0.0.1:0`; we release it at once so
//! nats-server can bind it. Two guards make that safe enough for parallel tests:
//! - a process-wide set of ports already handed out, so two tests in one process never
//!   get the same port even if the kernel offers it twice (it does, once released);
//! - the caller retries with a new port when nats-server still finds the port taken
//!   (another process grabbed it in between); see `NatsServer::start`.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

/// The port a developer's own nats-server most likely listens on; a test must never
/// talk to it by accident.
pub(crate) const DEFAULT_NATS_PORT: u16 = 4222;

/// Ports handed out in this process. Never shrinks: a port stays reserved after its
/// server is gone, which costs nothing (tens of thousands are available) and keeps a
/// killed server's port free for its `restart()`.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Returns a loopback port that was free a moment ago and that no other caller in
/// this process has received, never 4222.
///
/// Use it when a test needs a port of its own (for example a cluster route in
/// `ServerBuilder::config`); servers pick their ports with it already.
///
/// # Panics
/// If the kernel refuses to bind a loopback socket at all.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("cannot bind a loopback port to find a free one: {e}"));
        let port = listener
            .local_addr()
            .expect("a bound socket has a local address")
            .port();
        drop(listener);
        if port == DEFAULT_NATS_PORT {
            continue;
        }
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// Records a port the caller chose itself, so `free_port` will not hand it out too.
pub(crate) fn reserve(port: u16) {
    HANDED_OUT
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(port);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_never_handed_out_twice_and_never_4222() {
        let ports: Vec<u16> = (0..500).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        assert!(!distinct.contains(&DEFAULT_NATS_PORT));
    }
}
