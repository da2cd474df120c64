//! Prometheus series of every sink in the process, labelled `sink="<table>"`, and of
//! every source, labelled `source="<table>"`.
//!
//! The families are process-wide (counters add up over the statements that write to a
//! sink, as Prometheus expects); a host exposes them by calling [`register`] once on its
//! registry. Without that they are still counted, which costs an atomic add per event.
//! Handles are resolved once per execution ([`SinkSeries::new`]) so the hot path never
//! looks a label up.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The prefix of every sink series name.
pub const PREFIX: &str = "nats_sink";
/// The prefix of every source series name.
pub const SOURCE_PREFIX: &str = "nats_source";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabel {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    sink: String,
    class: &'static str,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~13 s: a local ack takes well under a millisecond, a replicated one a
    // few, and anything near `confirm_timeout` (5 s by default) is a problem.
    Histogram::new(exponential_buckets(0.0001, 2.0, 18))
}

/// One family per series; a sink's handles are taken from these.
struct Families {
    rows: Family<SinkLabel, Counter>,
    bytes: Family<SinkLabel, Counter>,
    batches: Family<SinkLabel, Counter>,
    in_flight: Family<SinkLabel, Gauge>,
    in_flight_bytes: Family<SinkLabel, Gauge>,
    acks: Family<SinkLabel, Counter>,
    duplicates: Family<SinkLabel, Counter>,
    skipped: Family<SinkLabel, Counter>,
    dead_lettered: Family<SinkLabel, Counter>,
    retries: Family<ClassLabels, Counter>,
    errors: Family<ClassLabels, Counter>,
    ack_latency: Family<SinkLabel, Histogram, fn() -> Histogram>,
    connected: Family<SinkLabel, Gauge>,
    reconnects: Family<SinkLabel, Counter>,
    source: SourceFamilies,
}

#[derive(Default)]
struct SourceFamilies {
    read: Family<SourceLabel, Counter>,
    skipped: Family<SourceLabel, Counter>,
    dead_lettered: Family<SourceLabel, Counter>,
    acked: Family<SourceLabel, Counter>,
    handed_back: Family<SourceLabel, Counter>,
    read_failures: Family<SourceLabel, Counter>,
    pending: Family<SourceLabel, Gauge>,
}

fn families() -> &'static Families {
    static FAMILIES: OnceLock<Families> = OnceLock::new();
    FAMILIES.get_or_init(|| Families {
        rows: Family::default(),
        bytes: Family::default(),
        batches: Family::default(),
        in_flight: Family::default(),
        in_flight_bytes: Family::default(),
        acks: Family::default(),
        duplicates: Family::default(),
        skipped: Family::default(),
        dead_lettered: Family::default(),
        retries: Family::default(),
        errors: Family::default(),
        ack_latency: Family::new_with_constructor(latency_histogram),
        connected: Family::default(),
        reconnects: Family::default(),
        source: SourceFamilies::default(),
    })
}

/// Adds every sink series to `registry`, under the `nats_sink_` prefix, and every source
/// series, under `nats_source_`. Call it once.
pub fn register(registry: &mut Registry) {
    register_source(registry.sub_registry_with_prefix(SOURCE_PREFIX));
    let f = families();
    let r = registry.sub_registry_with_prefix(PREFIX);
    r.register(
        "rows_published",
        "Rows the server confirmed (JetStream: acknowledged, duplicates included)",
        f.rows.clone(),
    );
    r.register_with_unit(
        "published",
        "Payload bytes of the confirmed rows",
        Unit::Bytes,
        f.bytes.clone(),
    );
    r.register(
        "batches",
        "Record batches the sink received from the query",
        f.batches.clone(),
    );
    r.register(
        "in_flight_messages",
        "Messages published and not yet confirmed",
        f.in_flight.clone(),
    );
    r.register_with_unit(
        "in_flight",
        "Bytes (payload and headers) of the messages published and not yet confirmed",
        Unit::Bytes,
        f.in_flight_bytes.clone(),
    );
    r.register(
        "acks",
        "JetStream acknowledgements received (one per message; one per atomic batch)",
        f.acks.clone(),
    );
    r.register(
        "duplicates",
        "Rows the stream acknowledged as duplicates of a message id it already had",
        f.duplicates.clone(),
    );
    r.register(
        "rows_skipped",
        "Rows that could not be delivered and were skipped (on_error = 'skip')",
        f.skipped.clone(),
    );
    r.register(
        "rows_dead_lettered",
        "Rows that could not be delivered and went to the dead-letter subject",
        f.dead_lettered.clone(),
    );
    r.register(
        "retries",
        "Retries after a transient failure, by error class",
        f.retries.clone(),
    );
    r.register(
        "errors",
        "Statements that failed, by error class",
        f.errors.clone(),
    );
    r.register_with_unit(
        "ack_latency",
        "Time from publishing a message to its confirmation (core: per confirmation round trip)",
        Unit::Seconds,
        f.ack_latency.clone(),
    );
    r.register(
        "connected",
        "1 while the sink has a connection to a server, 0 otherwise",
        f.connected.clone(),
    );
    r.register(
        "reconnects",
        "Connections made again after one was lost",
        f.reconnects.clone(),
    );
}

fn register_source(r: &mut Registry) {
    let f = &families().source;
    r.register(
        "messages_read",
        "Messages the source read (each becomes a row unless skipped or dead-lettered)",
        f.read.clone(),
    );
    r.register(
        "messages_skipped",
        "Messages that did not decode and were skipped (on_error = 'skip')",
        f.skipped.clone(),
    );
    r.register(
        "messages_dead_lettered",
        "Messages that did not decode and went to the dead-letter subject",
        f.dead_lettered.clone(),
    );
    r.register(
        "messages_acked",
        "Messages acknowledged to the durable consumer once their rows were confirmed",
        f.acked.clone(),
    );
    r.register(
        "messages_handed_back",
        "Messages handed back unacknowledged (-NAK) when a statement ended before confirming their rows",
        f.handed_back.clone(),
    );
    r.register(
        "read_failures",
        "Transient failures while reading (a lost connection, a missed heartbeat)",
        f.read_failures.clone(),
    );
    r.register(
        "pending_messages",
        "Messages the consumer has not delivered yet, as of the last one read",
        f.pending.clone(),
    );
}

/// The series of one source, resolved once per execution.
#[derive(Debug, Clone)]
pub(crate) struct SourceSeries {
    pub read: Counter,
    pub skipped: Counter,
    pub dead_lettered: Counter,
    pub acked: Counter,
    pub handed_back: Counter,
    pub read_failures: Counter,
    pub pending: Gauge,
}

impl SourceSeries {
    pub(crate) fn new(source: &str) -> Self {
        let f = &families().source;
        let label = SourceLabel {
            source: source.to_string(),
        };
        SourceSeries {
            read: f.read.get_or_create_owned(&label),
            skipped: f.skipped.get_or_create_owned(&label),
            dead_lettered: f.dead_lettered.get_or_create_owned(&label),
            acked: f.acked.get_or_create_owned(&label),
            handed_back: f.handed_back.get_or_create_owned(&label),
            read_failures: f.read_failures.get_or_create_owned(&label),
            pending: f.pending.get_or_create_owned(&label),
        }
    }
}

/// The series of one sink, resolved once.
#[derive(Debug, Clone)]
pub(crate) struct SinkSeries {
    sink: String,
    pub rows: Counter,
    pub bytes: Counter,
    pub batches: Counter,
    pub in_flight: Gauge,
    pub in_flight_bytes: Gauge,
    pub acks: Counter,
    pub duplicates: Counter,
    pub skipped: Counter,
    pub dead_lettered: Counter,
    pub ack_latency: Histogram,
    pub connected: Gauge,
    pub reconnects: Counter,
}

impl SinkSeries {
    pub(crate) fn new(sink: &str) -> Self {
        let f = families();
        let label = SinkLabel {
            sink: sink.to_string(),
        };
        SinkSeries {
            rows: f.rows.get_or_create_owned(&label),
            bytes: f.bytes.get_or_create_owned(&label),
            batches: f.batches.get_or_create_owned(&label),
            in_flight: f.in_flight.get_or_create_owned(&label),
            in_flight_bytes: f.in_flight_bytes.get_or_create_owned(&label),
            acks: f.acks.get_or_create_owned(&label),
            duplicates: f.duplicates.get_or_create_owned(&label),
            skipped: f.skipped.get_or_create_owned(&label),
            dead_lettered: f.dead_lettered.get_or_create_owned(&label),
            ack_latency: f.ack_latency.get_or_create_owned(&label),
            connected: f.connected.get_or_create_owned(&label),
            reconnects: f.reconnects.get_or_create_owned(&label),
            sink: label.sink,
        }
    }

    /// A retry after a transient failure of `class` (rare: looked up per event).
    pub(crate) fn retried(&self, class: &'static str) {
        let labels = self.class_labels(class);
        families().retries.get_or_create(&labels).inc();
    }

    /// A statement failed with an error of `class`.
    pub(crate) fn failed(&self, class: &'static str) {
        let labels = self.class_labels(class);
        families().errors.get_or_create(&labels).inc();
    }

    fn class_labels(&self, class: &'static str) -> ClassLabels {
        ClassLabels {
            sink: self.sink.clone(),
            class,
        }
    }
}
