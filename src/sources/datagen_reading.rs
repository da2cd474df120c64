//! How many rows a running `datagen` scan has produced, for the status page's `sources`
//! ([`Connector::reading`](crate::registry::Connector::reading)).
//!
//! DataFusion plans a datagen table as a `StreamingTableExec` over the table's partition,
//! and a `PartitionStream` cannot be downcast. So the connector keeps a list of the
//! partitions it made (weakly: a dropped table leaves it) and recognises a plan node by
//! the identity of the partition it reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use datafusion::physical_plan::streaming::PartitionStream;

/// Rows produced by the latest execution of one partition.
#[derive(Debug, Default)]
pub(super) struct Produced(AtomicU64);

impl Produced {
    /// An execution starts again at row 0.
    pub(super) fn restart(&self) {
        self.0.store(0, Ordering::Relaxed);
    }

    pub(super) fn add(&self, rows: u64) {
        self.0.fetch_add(rows, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

type Entry = (Weak<dyn PartitionStream>, Arc<Produced>);

/// The partitions one connector made, with their counters.
#[derive(Debug, Default, Clone)]
pub(super) struct Partitions {
    made: Arc<Mutex<Vec<Entry>>>,
}

impl Partitions {
    /// Remembers `partition`, whose executions count their rows in `produced`.
    pub(super) fn add(&self, partition: &Arc<dyn PartitionStream>, produced: Arc<Produced>) {
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        made.retain(|(weak, _)| weak.strong_count() > 0);
        made.push((Arc::downgrade(partition), produced));
    }

    /// The rows produced by whichever of `partitions` is one of ours.
    pub(super) fn produced(&self, partitions: &[Arc<dyn PartitionStream>]) -> Option<u64> {
        let made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        partitions.iter().find_map(|partition| {
            let address = Arc::as_ptr(partition).cast::<()>();
            made.iter()
                .find(|(weak, _)| weak.as_ptr().cast::<()>() == address)
                .map(|(_, produced)| produced.get())
        })
    }
}
