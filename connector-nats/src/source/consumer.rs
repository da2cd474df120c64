//! The stream and the consumer a JetStream source reads through.
//!
//! A durable consumer (`consumer`) is created when missing and bound when it exists;
//! an existing one whose configuration differs from the table's options is refused,
//! naming the option, rather than silently read with other settings (or changed under
//! whoever else uses it). Its ack policy is explicit: each message is acknowledged on
//! its own, so several readers can share it. Without `consumer`, an ephemeral consumer
//! with no acks at all is made for the statement.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use tracing::{info, warn};

use crate::error::{NatsSinkError, Result};
use crate::source::options::{ACK_WAIT, DELIVER, FILTER_SUBJECTS, JetStreamInput, MAX_ACK_PENDING};

/// The durable consumers this process is reading, by servers, stream and name.
static READING: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// A durable consumer claimed by one scan until it is dropped: two scans of one durable
/// consumer (a table read twice in a statement, as in a self-join) would each get only
/// part of its messages, and the result would be wrong without a word.
#[derive(Debug)]
pub(crate) struct Claim(String);

impl Claim {
    pub(crate) fn new(servers: &str, stream: &str, consumer: &str) -> Result<Self> {
        let key = format!("{servers}\n{stream}\n{consumer}");
        let mut reading = READING.lock().unwrap_or_else(|p| p.into_inner());
        if !reading.insert(key.clone()) {
            return Err(NatsSinkError::InvalidOption {
                option: "consumer".into(),
                problem: format!(
                    "consumer '{consumer}' of stream '{stream}' is already being read here (the table is read twice in one statement, e.g. a self-join or a UNION): each read would get only part of its messages; read the table once per statement, or leave out 'consumer' (an ephemeral consumer per read)"
                ),
            });
        }
        Ok(Claim(key))
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        READING
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.0);
    }
}

/// The consumer to pull from, and for a bounded read the stream's last sequence at the
/// start (`None`: read until stopped).
pub(crate) struct Opened {
    pub consumer: PullConsumer,
    pub end: Option<u64>,
}

fn js_error(stream: &str, problem: String) -> NatsSinkError {
    NatsSinkError::JetStream {
        stream: stream.into(),
        problem,
    }
}

/// Finds the stream and creates or binds the consumer.
pub(crate) async fn open(
    js: &jetstream::Context,
    input: &JetStreamInput,
    bounded: bool,
) -> Result<Opened> {
    let name = &input.stream;
    let mut stream = js.get_stream(name).await.map_err(|e| match e.kind() {
        GetStreamErrorKind::JetStream(err) if err.error_code() == ErrorCode::STREAM_NOT_FOUND => {
            js_error(
                name,
                "not found: create the stream first, or check 'stream' (names are case-sensitive)"
                    .into(),
            )
        }
        _ => js_error(
            name,
            format!(
                "cannot read its information ({e}): check that JetStream is enabled on the server and that the user may use the JetStream API"
            ),
        ),
    })?;
    let last_sequence = stream
        .info()
        .await
        .map(|info| info.state.last_sequence)
        .map_err(|e| js_error(name, format!("cannot read its state: {e}")))?;
    let wanted = PullConfig {
        durable_name: input.consumer.clone(),
        deliver_policy: input.deliver,
        ack_policy: if input.consumer.is_some() {
            AckPolicy::Explicit
        } else {
            AckPolicy::None
        },
        ack_wait: input.ack_wait.unwrap_or_default(),
        max_ack_pending: input.max_ack_pending.unwrap_or_default(),
        filter_subjects: input.filter_subjects.clone(),
        // An ephemeral consumer outlives a lost connection by this much, so the client's
        // own reconnect can resume it.
        inactive_threshold: if input.consumer.is_none() {
            Duration::from_secs(60)
        } else {
            Duration::ZERO
        },
        ..Default::default()
    };
    let consumer: PullConsumer = match &input.consumer {
        None => stream
            .create_consumer(wanted)
            .await
            .map_err(|e| js_error(name, format!("cannot create an ephemeral consumer: {e}")))?,
        Some(durable) => match stream.consumer_info(durable).await {
            Ok(info) => {
                check_matches(name, durable, &info.config, input)?;
                info!(stream = %name, consumer = %durable, "nats_source: bound to the durable consumer");
                stream
                    .get_consumer(durable)
                    .await
                    .map_err(|e| js_error(name, format!("cannot bind consumer '{durable}': {e}")))?
            }
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                info!(stream = %name, consumer = %durable, "nats_source: creating the durable consumer");
                stream.create_consumer(wanted).await.map_err(|e| {
                    js_error(name, format!("cannot create consumer '{durable}': {e}"))
                })?
            }
            Err(e) => {
                return Err(js_error(
                    name,
                    format!("cannot read consumer '{durable}': {e}"),
                ));
            }
        },
    };
    let mut consumer = consumer;
    if bounded && input.consumer.is_some() {
        check_room_for_bounded_read(name, &mut consumer).await?;
    }
    Ok(Opened {
        consumer,
        end: bounded.then_some(last_sequence),
    })
}

/// A bounded read acknowledges at its end, so the server must let it hold every message
/// it reads unacknowledged at once.
async fn check_room_for_bounded_read(stream: &str, consumer: &mut PullConsumer) -> Result<()> {
    let info = consumer
        .info()
        .await
        .map_err(|e| js_error(stream, format!("cannot read the consumer's state: {e}")))?;
    let limit = info.config.max_ack_pending;
    let to_read = info.num_pending;
    if info.num_ack_pending > 0 {
        warn!(
            stream,
            consumer = %info.name,
            unacknowledged = info.num_ack_pending,
            "nats_source: messages of this consumer were delivered and not acknowledged (another reader, or a run that stopped); they are delivered again after the consumer's ack_wait"
        );
    }
    if limit > 0 && to_read.saturating_add(info.num_ack_pending as u64) > limit as u64 {
        return Err(NatsSinkError::InvalidOption {
            option: MAX_ACK_PENDING.into(),
            problem: format!(
                "consumer '{}' has {to_read} messages to read but lets only {limit} wait for their acknowledgement, and a bounded read acknowledges at its end: raise max_ack_pending to at least {to_read} (a new consumer name takes the option; an existing consumer keeps its own)",
                info.name
            ),
        });
    }
    Ok(())
}

/// Refuses an existing durable consumer whose configuration differs from the options.
fn check_matches(
    stream: &str,
    durable: &str,
    existing: &consumer::Config,
    input: &JetStreamInput,
) -> Result<()> {
    let conflict = |option: &str, has: String, wants: String| NatsSinkError::InvalidOption {
        option: option.into(),
        problem: format!(
            "consumer '{durable}' of stream '{stream}' exists with {option} {has}, but this table asks for {wants}: give the consumer's setting, use another 'consumer' name, or delete the consumer"
        ),
    };
    let mut has_filters: Vec<String> = existing.filter_subjects.clone();
    if !existing.filter_subject.is_empty() {
        has_filters.push(existing.filter_subject.clone());
    }
    has_filters.sort();
    let mut wants_filters = input.filter_subjects.clone();
    wants_filters.sort();
    if has_filters != wants_filters {
        let show = |f: &[String]| {
            if f.is_empty() {
                "(every subject)".to_string()
            } else {
                format!("'{}'", f.join(","))
            }
        };
        return Err(conflict(
            FILTER_SUBJECTS,
            show(&has_filters),
            show(&wants_filters),
        ));
    }
    if existing.deliver_policy != input.deliver {
        return Err(conflict(
            DELIVER,
            describe_deliver(existing.deliver_policy),
            describe_deliver(input.deliver),
        ));
    }
    if existing.ack_policy != AckPolicy::Explicit {
        return Err(conflict(
            "ack policy",
            format!("{:?}", existing.ack_policy).to_lowercase(),
            "explicit (each message acknowledged on its own)".into(),
        ));
    }
    if let Some(wanted) = input.max_ack_pending
        && wanted != existing.max_ack_pending
    {
        return Err(conflict(
            MAX_ACK_PENDING,
            existing.max_ack_pending.to_string(),
            wanted.to_string(),
        ));
    }
    if let Some(wanted) = input.ack_wait
        && wanted != existing.ack_wait
    {
        return Err(conflict(
            ACK_WAIT,
            format!("{:?}", existing.ack_wait),
            format!("{wanted:?}"),
        ));
    }
    Ok(())
}

fn describe_deliver(policy: DeliverPolicy) -> String {
    match policy {
        DeliverPolicy::All => "'all'".into(),
        DeliverPolicy::New => "'new'".into(),
        DeliverPolicy::Last => "'last'".into(),
        DeliverPolicy::LastPerSubject => "'last_per_subject'".into(),
        DeliverPolicy::ByStartSequence { start_sequence } => {
            format!("start_sequence {start_sequence}")
        }
        DeliverPolicy::ByStartTime { start_time } => format!("start_time {start_time}"),
    }
}
