//! How far a statement's output has got, for the sources that acknowledge what they read
//! only once the rows derived from it are confirmed.
//!
//! The output (a sink) counts the rows it takes from its input, in order, and says how
//! many of the first rows it took are settled: confirmed by the server, or skipped or
//! dead-lettered under `on_error`. A source whose rows reach the output through operators
//! that hold no rows (projections, unbuffered filters; see `source::link`) knows that
//! when it is asked for its next batch, every row derived from the batches it gave before
//! was taken by the output already. So it notes `taken()` then, and may acknowledge
//! those batches' messages once `settled` reaches that figure.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// The rows one execution of an output took and settled.
#[derive(Debug)]
pub(crate) struct OutputProgress {
    taken: AtomicU64,
    settled: watch::Sender<u64>,
}

impl Default for OutputProgress {
    fn default() -> Self {
        OutputProgress {
            taken: AtomicU64::new(0),
            settled: watch::Sender::new(0),
        }
    }
}

impl OutputProgress {
    /// The output took `rows` more rows from its input (before it asks for more).
    pub(crate) fn took(&self, rows: u64) {
        self.taken.fetch_add(rows, Ordering::SeqCst);
    }

    /// Rows taken so far.
    pub(crate) fn taken(&self) -> u64 {
        self.taken.load(Ordering::SeqCst)
    }

    /// The first `rows` rows taken are settled.
    pub(crate) fn settled_through(&self, rows: u64) {
        self.settled.send_if_modified(|settled| {
            let advanced = rows > *settled;
            if advanced {
                *settled = rows;
            }
            advanced
        });
    }

    /// How many of the first rows taken are settled.
    pub(crate) fn settled(&self) -> u64 {
        *self.settled.borrow()
    }

    /// Waits until the first `rows` rows taken are settled.
    pub(crate) async fn settled_at_least(&self, rows: u64) {
        let mut settled = self.settled.subscribe();
        // The sender lives in `self`, so the wait ends only by the condition.
        let _ = settled.wait_for(|settled| *settled >= rows).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_wait_ends_when_the_settled_rows_reach_its_figure_and_not_before() {
        let progress = Arc::new(OutputProgress::default());
        progress.took(10);
        let waiting = {
            let progress = Arc::clone(&progress);
            tokio::spawn(async move { progress.settled_at_least(10).await })
        };
        progress.settled_through(9);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "9 of 10 rows settled");
        progress.settled_through(10);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("10 of 10 rows settled")
            .unwrap();
        // Settled figures never go back.
        progress.settled_through(3);
        progress.settled_at_least(10).await;
    }
}
