//! The engine's shutdown signal: a one-way latch.
//!
//! When it fires, the engine stops the running statement (`engine/stop/`): an
//! `INSERT`'s input ends, so its sink confirms what it has read and the statement
//! completes with its row count; a statement still running a grace period later is
//! cancelled. Aborting the process at once is the CLI's second signal.

use std::sync::Arc;

use tokio::sync::watch;

/// The side that fires the signal. Cheap to clone; all clones fire the same latch.
#[derive(Debug, Clone)]
pub struct Shutdown {
    sender: Arc<watch::Sender<bool>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A latch that has not fired.
    pub fn new() -> Self {
        let (sender, _) = watch::channel(false);
        Self {
            sender: Arc::new(sender),
        }
    }

    /// Fires the latch; idempotent. Inputs being read stop at once, also while they
    /// wait for data.
    pub fn trigger(&self) {
        // send_replace stores the value even when no receiver exists yet.
        self.sender.send_replace(true);
    }

    /// Whether the latch has fired.
    pub fn is_triggered(&self) -> bool {
        *self.sender.borrow()
    }

    /// A receiver to observe the latch.
    pub fn signal(&self) -> ShutdownSignal {
        ShutdownSignal {
            receiver: self.sender.subscribe(),
        }
    }
}

/// The observing side.
#[derive(Debug, Clone)]
pub struct ShutdownSignal {
    receiver: watch::Receiver<bool>,
}

impl ShutdownSignal {
    /// Whether the latch has fired.
    pub fn is_triggered(&self) -> bool {
        *self.receiver.borrow()
    }

    /// Completes when the latch fires (at once if it has). Never completes if every
    /// [`Shutdown`] was dropped unfired.
    pub async fn triggered(&mut self) {
        if self.receiver.wait_for(|fired| *fired).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn signal_fires_for_existing_and_later_receivers() {
        let shutdown = Shutdown::new();
        let mut early = shutdown.signal();
        assert!(!early.is_triggered());
        let waiter = tokio::spawn(async move { early.triggered().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        shutdown.clone().trigger();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("waiter woke")
            .unwrap();
        assert!(shutdown.is_triggered());
        let mut late = shutdown.signal();
        assert!(late.is_triggered());
        tokio::time::timeout(Duration::from_secs(5), late.triggered())
            .await
            .expect("late receiver sees the fired latch");
    }
}
