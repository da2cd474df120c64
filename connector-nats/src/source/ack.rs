//! What a statement owes a durable consumer: the messages it read, acknowledged only
//! once the engine says the statement's output was confirmed ([`Acks::commit`]).
//!
//! This increment acknowledges only bounded reads (`stop_at = 'end'`), all at once when
//! the whole statement succeeded. A statement that fails, or that did not read to the
//! end (a `LIMIT`), acknowledges nothing: its messages are handed back to the server
//! (`-NAK`), so a rerun reads them again at once instead of after `ack_wait`.

use std::sync::Mutex;

use async_nats::{Client, Subject};
use bytes::Bytes;
use tracing::{debug, info, warn};

use crate::error::{NatsSinkError, Result};
use crate::source::consumer::Claim;

/// The acknowledgement state of one execution of a source.
#[derive(Debug, Default)]
pub(crate) struct Acks {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The client the messages came on; acks go back on it.
    client: Option<Client>,
    /// The reply subject of every message read and not yet settled, in order.
    replies: Vec<Subject>,
    /// The read reached its end (`stop_at = 'end'`).
    finished: bool,
    /// The durable consumer, claimed for this statement's read alone.
    claim: Option<Claim>,
}

impl Acks {
    /// The read is under way on `client`.
    pub(crate) fn start(&self, client: Client) {
        self.lock().client = Some(client);
    }

    /// Keeps `claim` until the statement's plan is dropped.
    pub(crate) fn hold(&self, claim: Claim) {
        self.lock().claim = Some(claim);
    }

    /// Messages were read (and turned into rows, skipped or dead-lettered).
    pub(crate) fn read(&self, replies: impl IntoIterator<Item = Subject>) {
        self.lock().replies.extend(replies);
    }

    /// The read reached the end of what it was to read.
    pub(crate) fn finished(&self) {
        self.lock().finished = true;
    }

    /// Called once the statement's output is confirmed: acknowledges every message read,
    /// if the read reached its end; otherwise hands them back. Returns how many were
    /// acknowledged. Returns once the server has processed the acknowledgements.
    pub(crate) async fn commit(&self) -> Result<u64> {
        let (client, replies, finished) = {
            let mut state = self.lock();
            (
                state.client.clone(),
                std::mem::take(&mut state.replies),
                state.finished,
            )
        };
        let (Some(client), Some(last)) = (client, replies.last().cloned()) else {
            return Ok(0);
        };
        if !finished {
            info!(
                messages = replies.len(),
                "nats_source: the statement did not read to the end (a LIMIT?); nothing acknowledged, the messages are delivered again"
            );
            hand_back(&client, replies).await;
            return Ok(0);
        }
        let failed = |e: String| NatsSinkError::Publish {
            problem: format!(
                "acknowledging the {} messages the statement read failed: {e}; the statement's output was confirmed, and the consumer delivers those messages again after its ack_wait",
                replies.len()
            ),
            source: None,
        };
        for reply in &replies[..replies.len() - 1] {
            client
                .publish(reply.clone(), Bytes::from_static(b"+ACK"))
                .await
                .map_err(|e| failed(e.to_string()))?;
        }
        // A reply to the last ack means the server processed every ack before it: they
        // came on the same connection, in order.
        client
            .request(last, Bytes::from_static(b"+ACK"))
            .await
            .map_err(|e| failed(e.to_string()))?;
        debug!(messages = replies.len(), "nats_source: acknowledged");
        Ok(replies.len() as u64)
    }

    /// The read failed: hands back what it read now, rather than when the plan is
    /// dropped, so that a rerun finds the messages at once.
    pub(crate) async fn abandon(&self) {
        let (client, replies) = {
            let mut state = self.lock();
            (state.client.clone(), std::mem::take(&mut state.replies))
        };
        if let Some(client) = client {
            hand_back(&client, replies).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding the lock.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `-NAK`s each message: the server delivers it again at once. Returns once the server
/// answered the last one (so it processed them all), or gave up waiting.
async fn hand_back(client: &Client, mut replies: Vec<Subject>) {
    let Some(last) = replies.pop() else {
        return;
    };
    for reply in replies {
        if let Err(e) = client.publish(reply, Bytes::from_static(b"-NAK")).await {
            warn!(
                "nats_source: handing a message back failed ({e}); it is delivered again after ack_wait"
            );
            return;
        }
    }
    if let Err(e) = client.request(last, Bytes::from_static(b"-NAK")).await {
        debug!("nats_source: handing back the last message: {e}");
    }
}

impl Drop for Acks {
    /// Whatever was read and not committed (the statement failed or was cancelled) is
    /// handed back, if a runtime is there to send it.
    fn drop(&mut self) {
        let state = std::mem::take(&mut *self.lock());
        let (Some(client), false) = (state.client, state.replies.is_empty()) else {
            return;
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { hand_back(&client, state.replies).await });
        }
    }
}
