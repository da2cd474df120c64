//! JetStream mode: the checks made before the first row, and what they find out.
//!
//! At start the sink makes sure JetStream is enabled, the stream exists, a fixed subject
//! is captured by it, a dead-letter subject is captured by some stream, and (for
//! `exactly_once`) that the server and stream allow atomic batches, and (for `ttl` or
//! `ttl_field`) per-message TTLs. Each failure says what
//! to create or change. It also reads the stream's message size limit and duplicate
//! window, which decide which rows are oversize and how long message ids deduplicate.

pub(crate) mod atomic;
pub(crate) mod captures;
pub(crate) mod classify;
pub(crate) mod key_order;
pub(crate) mod stream;
pub(crate) mod window;

use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::context::{
    AccountErrorKind, GetStreamByNameErrorKind, GetStreamError, GetStreamErrorKind,
};
use async_trait::async_trait;
use tracing::{info, warn};

use crate::deliver::driver::{self, Link, Step, Work};
use crate::deliver::failure::{Failure, TransientKind};
use crate::deliver::retry::Retry;
use crate::deliver::rows::Limit;
use crate::error::{NatsSinkError, Result};
use crate::kv;
use crate::options::config::{JetStreamConfig, OnError, SinkConfig, SubjectSpec};
use crate::options::message::TtlSpec;
use crate::options::{TTL, TTL_FIELD};
pub(crate) use captures::Captures;

/// What to do when JetStream is off.
const JETSTREAM_DISABLED: &str = "JetStream is not enabled on the server (or for this account): start nats-server with -js (or a jetstream {} block), or drop 'stream' to publish to core NATS";

/// The oldest nats-server with atomic batch publish.
const ATOMIC_SINCE: (u64, u64) = (2, 12);
/// The oldest nats-server with per-message TTLs.
const TTL_SINCE: (u64, u64) = (2, 11);

/// What the checks found out about the stream.
pub(crate) struct StreamSetup {
    pub captures: Captures,
    pub limit: Limit,
    /// The dead-letter stream's limit, where it is another stream.
    pub dead_letter_limit: Option<Limit>,
}

/// The largest message a stream with `max_message_size` takes on a server with
/// `max_payload`.
fn message_limit(max_message_size: i32, max_payload: usize) -> Limit {
    match usize::try_from(max_message_size) {
        Ok(max) if max > 0 && max < max_payload => Limit {
            bytes: max,
            source: "the stream's max_msg_size",
        },
        _ => Limit {
            bytes: max_payload,
            source: "the server's max_payload",
        },
    }
}

/// The start checks as work for the driver.
struct Checks<'a> {
    config: &'a JetStreamConfig,
    sink: &'a SinkConfig,
    found: Option<StreamSetup>,
}

#[async_trait]
impl Work for Checks<'_> {
    async fn attempt(&mut self, link: &mut Link) -> std::result::Result<Step, Failure> {
        match check(link, self.config, self.sink).await {
            Ok(setup) => {
                self.found = Some(setup);
                Ok(Step::Done)
            }
            // Without a connection any check fails; it is made again on a new one.
            Err(Failure::Permanent(_)) if link.connection.lost() => {
                Err(Failure::lost("during the start checks"))
            }
            Err(failure) => Err(failure),
        }
    }
}

/// Runs the start checks, retrying the transient failures (no quorum, timeouts, a lost
/// connection, which is replaced).
pub(crate) async fn setup(
    link: &mut Link,
    config: &JetStreamConfig,
    sink: &SinkConfig,
    retry: &mut Retry,
) -> Result<StreamSetup> {
    let mut checks = Checks {
        config,
        sink,
        found: None,
    };
    driver::run(link, retry, &mut checks).await?;
    link.connection.forget_refusals();
    Ok(checks.found.expect("the checks are done"))
}

async fn check(
    link: &Link,
    config: &JetStreamConfig,
    sink: &SinkConfig,
) -> std::result::Result<StreamSetup, Failure> {
    let (connection, js) = (&link.connection, link.js());
    let name = &config.stream;
    let fail = |problem: String| {
        Failure::Permanent(NatsSinkError::JetStream {
            stream: name.clone(),
            problem,
        })
    };
    // The server says in its INFO whether JetStream is on. Without it, an API request can
    // go unanswered instead of getting "no responders" (when anything subscribes to `>`)
    // and would be retried as a timeout forever.
    if !connection.client.server_info().jetstream {
        return Err(fail(JETSTREAM_DISABLED.into()));
    }
    match js.query_account().await {
        Ok(_) => {}
        Err(e) => {
            return Err(match e.kind() {
                AccountErrorKind::JetStreamUnavailable => fail(JETSTREAM_DISABLED.into()),
                AccountErrorKind::TimedOut => Failure::Transient(
                    TransientKind::Timeout,
                    "the JetStream API did not answer".into(),
                ),
                AccountErrorKind::JetStream(api)
                    if api.error_code() == ErrorCode::CLUSTER_NOT_AVAILABLE =>
                {
                    Failure::Transient(
                        TransientKind::NoLeader,
                        format!("JetStream is not available yet: {api}"),
                    )
                }
                _ => fail(format!("cannot use JetStream: {e}")),
            });
        }
    }
    let bucket = match &sink.subject {
        SubjectSpec::Key(spec) => Some(spec),
        _ => None,
    };
    let stream = js.get_stream(name).await.map_err(|e| {
        stream_unreadable(&e, || {
            fail(match bucket {
                Some(spec) => kv::bucket::missing(spec),
                None => format!(
                    "the stream does not exist: create it first (for example `nats stream add {name} --subjects '<subjects>'`), or fix 'stream'"
                ),
            })
        })
        .unwrap_or_else(|| fail(format!("cannot read the stream's configuration: {e}")))
    })?;
    let info = stream.cached_info();
    if let Some(spec) = bucket {
        kv::bucket::check(&info.config, spec).map_err(fail)?;
    }
    let captures = Captures::new(name, info.config.subjects.clone());
    if info.config.no_ack {
        return Err(fail("the stream has no_ack set, so it acknowledges nothing and no row could be confirmed: unset no_ack on the stream, or publish in core mode (leave out 'stream')".into()));
    }
    if info.config.subjects.is_empty() {
        return Err(fail("the stream captures no subjects (a mirror or sourced stream?): publish into a stream with subjects".into()));
    }
    if let SubjectSpec::Fixed(subject) = &sink.subject
        && !captures.matches(subject)
    {
        return Err(fail(format!(
            "it does not capture subject '{subject}' (its subjects: {}): add the subject to the stream, or publish to one it captures",
            captures.filters.join(", ")
        )));
    }
    let mut dead_letter_limit = None;
    if let OnError::DeadLetter(subject) = &sink.on_error {
        let dead_letters = match js.stream_by_subject(subject.clone()).await {
            Ok(stream) => stream,
            Err(e) if matches!(e.kind(), GetStreamByNameErrorKind::NotFound) => {
                return Err(fail(format!(
                    "no stream captures dead_letter_subject '{subject}': create one that does (dead letters are stored and acknowledged like rows)"
                )));
            }
            // The request went unanswered (the kind async-nats gives a timeout).
            Err(e) if matches!(e.kind(), GetStreamByNameErrorKind::Request) => {
                return Err(Failure::Transient(
                    TransientKind::Timeout,
                    format!("cannot find the stream for dead_letter_subject '{subject}': {e}"),
                ));
            }
            Err(e) => {
                return Err(fail(format!(
                    "cannot find the stream for dead_letter_subject '{subject}': {e}"
                )));
            }
        };
        // Dead letters go to their own stream: its limit is theirs.
        if dead_letters != *name {
            let problem = |e: &dyn std::fmt::Display| {
                format!("cannot read dead-letter stream '{dead_letters}': {e}")
            };
            let stream = js.get_stream(&dead_letters).await.map_err(|e| {
                stream_unreadable(&e, || fail(problem(&"it no longer exists")))
                    .unwrap_or_else(|| fail(problem(&e)))
            })?;
            let info = stream.cached_info();
            dead_letter_limit = Some(message_limit(
                info.config.max_message_size,
                connection.max_payload(),
            ));
        }
    }
    if config.atomic_batch.is_some() {
        let version = connection.client.server_info().version;
        if version_below(&version, ATOMIC_SINCE) {
            return Err(fail(format!(
                "delivery = 'exactly_once' needs atomic batch publish, which nats-server {version} does not have: upgrade to 2.12 or later"
            )));
        }
        if !info.config.allow_atomic_publish {
            return Err(fail(
                "delivery = 'exactly_once' needs atomic batch publish, which the stream does not allow: set allow_atomic on it (stream config \"allow_atomic\": true)".into(),
            ));
        }
    }
    if let Some(ttl) = &sink.ttl {
        let option = match ttl {
            TtlSpec::Fixed(_) => TTL,
            TtlSpec::Column(_) => TTL_FIELD,
        };
        let version = connection.client.server_info().version;
        if version_below(&version, TTL_SINCE) {
            return Err(fail(format!(
                "'{option}' sends a per-message TTL (Nats-TTL), which nats-server {version} does not have: upgrade to 2.11 or later, or drop '{option}'"
            )));
        }
        if !info.config.allow_message_ttl {
            return Err(fail(format!(
                "'{option}' sends a per-message TTL (Nats-TTL), which the stream does not allow: enable it with `nats stream edit {name} --allow-msg-ttl` (stream config \"allow_msg_ttl\": true), or drop '{option}'"
            )));
        }
    }
    let limit = message_limit(info.config.max_message_size, connection.max_payload());
    // A put sent again is one more revision of the same value: nothing to warn about.
    if bucket.is_none() {
        report_dedup(
            name,
            info.config.duplicate_window,
            sink.msg_id_field.as_deref(),
        );
    }
    Ok(StreamSetup {
        captures,
        limit,
        dead_letter_limit,
    })
}

/// The failure for a stream that cannot be read: `missing()` when it does not exist,
/// transient when it has no leader or the request went unanswered; `None` for anything
/// else, which the caller reports as permanent.
fn stream_unreadable(e: &GetStreamError, missing: impl FnOnce() -> Failure) -> Option<Failure> {
    match e.kind() {
        GetStreamErrorKind::JetStream(api) if api.error_code() == ErrorCode::STREAM_NOT_FOUND => {
            Some(missing())
        }
        GetStreamErrorKind::JetStream(api)
            if matches!(
                api.error_code(),
                ErrorCode::CLUSTER_NOT_AVAILABLE | ErrorCode::CLUSTER_NOT_LEADER
            ) =>
        {
            Some(Failure::Transient(
                TransientKind::NoLeader,
                format!("the stream has no leader yet: {api}"),
            ))
        }
        GetStreamErrorKind::Request => Some(Failure::Transient(
            TransientKind::Timeout,
            format!("cannot read the stream's configuration: {e}"),
        )),
        _ => None,
    }
}

fn report_dedup(stream: &str, window: Duration, msg_id_field: Option<&str>) {
    let window = humantime::format_duration(window);
    match msg_id_field {
        Some(column) => info!(
            "nats_sink: stream '{stream}' has a duplicate window of {window}: a row whose id (column '{column}') it stored within that time is dropped as a duplicate"
        ),
        None => warn!(
            "nats_sink: stream '{stream}' has a duplicate window of {window}, but without msg_id_field a row resent after a failure may be stored twice"
        ),
    }
}

/// `version < (major, minor)` for a server version like "2.15.1".
fn version_below(version: &str, (major, minor): (u64, u64)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found < (major, minor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_by_number() {
        assert!(version_below("2.9.10", (2, 12)));
        assert!(!version_below("2.12.0", (2, 12)));
        assert!(!version_below("2.15.1", (2, 12)));
        assert!(!version_below("3.0.0", (2, 12)));
    }
}
