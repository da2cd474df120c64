//! At most one message per subject in flight, for a key-value bucket (`nats_kv`), where a
//! subject is a key and the last message stored on it is the key's value.
//!
//! Why: the window keeps up to `max_in_flight` messages waiting for their acks and, after
//! a failure, sends again from the first unconfirmed one. With two puts of one key in
//! flight, a refusal of the first that the stream gets over before the second arrives
//! (no leader yet, storage full, a message lost with an old leader) stores the second
//! first; the first, sent again, then lands after it, so the bucket holds the older value
//! and a watcher sees the key go back in time. The second is sent again too and would
//! mend the value, but not if the statement fails or is cancelled before that.
//!
//! With this gate a message goes out only once the ack of its key's previous message is
//! in: that message is stored and is never sent again (a resend starts at the first
//! unconfirmed row). So every key's revisions follow the row order, whatever is retried,
//! and the last one is the last row's; what no gate can stop is a first copy given up on
//! (ack timeout, lost connection) that the server or cluster still stores later. The
//! price: a row whose key is still in flight waits for that ack, and the rows after it
//! wait with it (the window sends in row order), so updates of one key in quick
//! succession go one ack round trip each.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};

use async_nats::Subject;

use crate::encode::EncodedBatch;

/// The subjects with a message in flight.
#[derive(Debug, Default)]
pub(crate) struct KeyOrder {
    in_flight: HashSet<InFlight>,
}

/// A subject in the set, looked up by its text (`Subject` itself has no `Hash`).
#[derive(Debug, PartialEq, Eq)]
struct InFlight(Subject);

impl Hash for InFlight {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that lookups by `&str` find it.
        self.0.as_str().hash(state);
    }
}

impl Borrow<str> for InFlight {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl KeyOrder {
    /// Whether row `row` of `batch` must wait: its subject has a message in flight. A
    /// rejected row (skipped or dead-lettered) never waits.
    pub(crate) fn waits(&self, batch: &EncodedBatch, row: usize) -> bool {
        batch.rejection(row).is_none()
            && batch
                .subject(row)
                .is_some_and(|subject| self.in_flight.contains(subject.as_str()))
    }

    /// A message on `subject` was published.
    pub(crate) fn sent(&mut self, subject: &Subject) {
        let first = self.in_flight.insert(InFlight(subject.clone()));
        debug_assert!(first, "two rows of '{subject}' in flight");
    }

    /// The message on `subject` was acknowledged.
    pub(crate) fn acked(&mut self, subject: &Subject) {
        self.in_flight.remove(subject.as_str());
    }

    /// Everything in flight was forgotten (to be sent again).
    pub(crate) fn clear(&mut self) {
        self.in_flight.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_waits_from_its_send_to_its_ack() {
        let mut keys = KeyOrder::default();
        let a = Subject::from("$KV.b.a");
        keys.sent(&a);
        assert!(keys.in_flight.contains("$KV.b.a"));
        assert!(!keys.in_flight.contains("$KV.b.b"));
        keys.acked(&a);
        assert!(!keys.in_flight.contains("$KV.b.a"));
        keys.sent(&a);
        keys.clear();
        assert!(keys.in_flight.is_empty());
    }
}
