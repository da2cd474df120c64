//! A TCP proxy between the sink and a nats-server that a test can slow down or cut: a
//! network fault, which the server does not see as its own shutdown, so what it has
//! accepted it keeps processing and JetStream keeps storing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct Link {
    url: String,
    cuts: watch::Sender<u64>,
    refuse_until: Arc<Mutex<Instant>>,
    replies_held: Arc<AtomicBool>,
    requests_held: Arc<AtomicBool>,
}

impl Link {
    /// A link to `server` (a `nats://` URL). With `bytes_per_second`, what the client
    /// sends passes at about that rate (replies pass at full speed): a slow link.
    pub async fn to(server: &str, bytes_per_second: Option<usize>) -> Link {
        let upstream = server.trim_start_matches("nats://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("nats://{}", listener.local_addr().unwrap());
        let (cuts, _) = watch::channel(0);
        let refuse_until = Arc::new(Mutex::new(Instant::now()));
        let replies_held = Arc::new(AtomicBool::new(false));
        let requests_held = Arc::new(AtomicBool::new(false));
        let link = Link {
            url,
            cuts: cuts.clone(),
            refuse_until: refuse_until.clone(),
            replies_held: replies_held.clone(),
            requests_held: requests_held.clone(),
        };
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                // Refused while the link is down: the client sees the connection close
                // before the server's INFO, as when nothing listens.
                if Instant::now() < *refuse_until.lock().unwrap() {
                    continue;
                }
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                let mut cut = cuts.subscribe();
                let (replies, requests) = (replies_held.clone(), requests_held.clone());
                tokio::spawn(async move {
                    let (from_client, to_client) = client.into_split();
                    let (from_server, to_server) = server.into_split();
                    // Whichever ends first ends both directions; dropping the sockets
                    // with data unread resets them, so what was in flight is lost.
                    tokio::select! {
                        _ = pump(from_client, to_server, bytes_per_second, requests) => {}
                        _ = pump(from_server, to_client, None, replies) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        link
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// From now on, holds back everything the server sends (acks, PONGs) while the
    /// connections stay up: a server that has stopped answering.
    pub fn hold_replies(&self) {
        self.replies_held.store(true, Ordering::SeqCst);
    }

    /// Lets through again what [`Link::hold_replies`] held back, and what follows.
    pub fn release(&self) {
        self.replies_held.store(false, Ordering::SeqCst);
    }

    /// From now on, holds back everything in both directions while the connections stay
    /// up: a network that has stopped delivering. [`Link::cut`] ends it, dropping what
    /// was held.
    pub fn hold_everything(&self) {
        self.requests_held.store(true, Ordering::SeqCst);
        self.hold_replies();
    }

    /// Drops every connection through the link at once, as a failed network would, and
    /// refuses new ones for `outage`.
    pub fn cut(&self, outage: Duration) {
        *self.refuse_until.lock().unwrap() = Instant::now() + outage;
        self.cuts.send_modify(|n| *n += 1);
        self.requests_held.store(false, Ordering::SeqCst);
        self.replies_held.store(false, Ordering::SeqCst);
    }
}

async fn pump(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    bytes_per_second: Option<usize>,
    held: Arc<AtomicBool>,
) {
    // 20 chunks a second make the rate.
    let chunk = bytes_per_second.map_or(64 * 1024, |rate| (rate / 20).max(1));
    let mut buffer = vec![0u8; chunk];
    loop {
        while held.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                // What was read while waiting when the hold began is held too.
                while held.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if to.write_all(&buffer[..n]).await.is_err() {
                    return;
                }
                if bytes_per_second.is_some() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}
