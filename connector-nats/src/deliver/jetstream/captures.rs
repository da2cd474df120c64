//! The subjects a stream captures, and which row subjects fall under them: a row whose
//! subject no filter of the stream matches could only fail to publish, so it is rejected
//! before sending and follows `on_error`.

use std::collections::HashMap;

use crate::encode::EncodedBatch;

/// The subjects a stream captures, and which row subjects fall under them.
pub(crate) struct Captures {
    stream: String,
    pub(crate) filters: Vec<String>,
    cache: HashMap<String, bool, foldhash::fast::RandomState>,
}

impl Captures {
    pub(crate) fn new(stream: &str, filters: Vec<String>) -> Self {
        Captures {
            stream: stream.to_string(),
            filters,
            cache: HashMap::default(),
        }
    }

    /// Whether one of the stream's subject filters matches `subject`.
    pub(crate) fn matches(&self, subject: &str) -> bool {
        self.filters.iter().any(|f| filter_matches(f, subject))
    }

    /// Rejects the rows of `batch` whose subject the stream does not capture: their
    /// publish could only fail.
    pub(crate) fn check(&mut self, batch: &mut EncodedBatch) {
        for i in 0..batch.len() {
            let Some(subject) = batch.subject(i) else {
                continue;
            };
            let captured = match self.cache.get(subject.as_str()) {
                Some(&captured) => captured,
                None => {
                    let captured = self.matches(subject);
                    self.cache.insert(subject.to_string(), captured);
                    captured
                }
            };
            if !captured {
                let subject = subject.to_string();
                batch.reject(
                    i,
                    format!(
                        "subject '{subject}' is not captured by stream '{}' (its subjects: {})",
                        self.stream,
                        self.filters.join(", ")
                    ),
                );
            }
        }
    }
}

/// NATS subject matching: `*` matches one token, a final `>` one or more.
fn filter_matches(filter: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for f in filter.split('.') {
        match (f, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (f, Some(t)) if f == t => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_like_nats() {
        assert!(filter_matches("orders.>", "orders.eu.1"));
        assert!(filter_matches("orders.>", "orders.1"));
        assert!(!filter_matches("orders.>", "orders"));
        assert!(filter_matches("orders.*", "orders.1"));
        assert!(!filter_matches("orders.*", "orders.1.2"));
        assert!(filter_matches("*.created", "orders.created"));
        assert!(filter_matches("orders", "orders"));
        assert!(!filter_matches("orders", "orders.1"));
        assert!(!filter_matches("orders.1", "orders"));
    }
}
