//! End-to-end JetStream publishing through the engine, against raw async-nats.
//!
//! Baseline: the async-nats client publishing the very same messages (payloads and
//! subjects pre-built by the sink's encoder) into the same stream, pipelined the way a
//! careful client would: publish, keep the ack future, await the oldest one once
//! `max_in_flight` are outstanding, await the rest at the end. Engine: `INSERT INTO out
//! SELECT ... FROM generate_series(...) WITH (..., stream = 'BENCH', max_in_flight = 'N')`
//! through `streamsql::Engine`, which connects, checks the stream, plans the query,
//! encodes every row and waits for every ack. Both run on one current-thread runtime
//! (fastest on 2 cores, and the CLI's default: see `benches/README.md`) against a real nats-server
//! with a file stream that is purged, untimed, before every iteration; every iteration
//! is checked to have stored every row.
//!
//! Groups: `jetstream_e2e` (the default window), `max_in_flight` (a curve of windows) and
//! `jetstream_headers` (the default window, two header columns per row: the sink's
//! `header_fields = 'trace_id,tenant'` against the raw client publishing the same
//! messages with the same headers, pre-built).
//! Criterion measures each variant in a block of its own, and throughput on a small
//! shared machine drifts by tens of percent over minutes, so after the groups the bench
//! also runs raw/engine pairs back to back at each window it measured and prints a
//! summary: criterion-phase medians, the paired ratio, and the CPU per message used by
//! the client process and by nats-server (from /proc). Report: engine / raw.
//!
//! Under `cargo test --benches` (criterion's test mode, no `--bench` argument) it runs
//! each benchmark once with fewer rows and skips the pairs.

mod common;

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, Context, stream};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use nats_testkit::NatsServer;
use streamsql::{Engine, Outcome};
use tokio::runtime::Runtime;
use tokio::sync::Mutex;

/// Rows per iteration when benchmarking, and in criterion's test mode.
const ROWS: u64 = 200_000;
const TEST_MODE_ROWS: u64 = 10_000;
const STREAM: &str = "BENCH";
/// The sink's default `max_in_flight`.
const DEFAULT_IN_FLIGHT: usize = 1024;
const CURVE: [usize; 4] = [64, 256, 1024, 4096];
/// Back-to-back raw/engine pairs per window after the criterion groups.
const PAIRS: usize = 5;

const RAW: &str = "raw_async_nats";
const ENGINE: &str = "engine_insert";
const RAW_HEADERS: &str = "raw_async_nats_headers";
const ENGINE_HEADERS: &str = "engine_insert_headers";
/// Each baseline and the engine variant measured against it.
const PAIRINGS: [(&str, &str); 2] = [(RAW, ENGINE), (RAW_HEADERS, ENGINE_HEADERS)];
/// The header columns of the `_headers` variants.
const HEADER_FIELDS: &str = "trace_id,tenant";

/// About 200 bytes of JSON per row; 100 distinct subjects under `bench.>`.
fn query(rows: u64) -> String {
    common::orders_query(
        "bench",
        "placed through the web shop, standard delivery, no gift wrap, leave at front door",
        rows,
    )
}

/// [`query`] with two header columns: a trace id per row and one of ten tenants.
fn headers_query(rows: u64) -> String {
    format!(
        "SELECT *, concat('trace-', CAST(order_id AS VARCHAR)) AS trace_id, \
                concat('tenant-', CAST(order_id % 10 AS VARCHAR)) AS tenant \
         FROM ({})",
        query(rows)
    )
}

fn insert(url: &str, rows: u64, max_in_flight: usize, headers: bool) -> String {
    let (query, options) = if headers {
        (
            headers_query(rows),
            format!(", header_fields = '{HEADER_FIELDS}'"),
        )
    } else {
        (query(rows), String::new())
    };
    format!(
        "INSERT INTO out {query} WITH (connector = 'nats_sink', servers = '{url}', \
         subject_field = 'subject', stream = '{STREAM}', max_in_flight = '{max_in_flight}'{options})"
    )
}

/// A JetStream context configured like the sink's (connector-nats/src/jetstream/mod.rs),
/// so that only the publishing loop differs.
fn context(client: &async_nats::Client, max_in_flight: usize) -> Context {
    jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .ack_timeout(Duration::from_secs(5))
        .max_ack_inflight(max_in_flight.saturating_mul(4).max(1024))
        .backpressure_on_inflight(true)
        .build(client.clone())
}

/// A pre-built message: subject, headers (the `_headers` variants) and payload.
type Prebuilt = (Subject, Option<HeaderMap>, Bytes);

/// The best-practice client loop: at most `window` acks outstanding, awaited in order.
async fn publish_raw(js: &Context, messages: &[Prebuilt], window: usize) {
    let mut acks = VecDeque::with_capacity(window);
    for (subject, headers, payload) in messages {
        if acks.len() == window {
            let ack: jetstream::context::PublishAckFuture = acks.pop_front().unwrap();
            ack.await.unwrap();
        }
        let ack = match headers {
            Some(headers) => js
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
                .unwrap(),
            None => js.publish(subject.clone(), payload.clone()).await.unwrap(),
        };
        acks.push_back(ack);
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

/// CPU time (user + system) process `pid` has used so far, all its threads together;
/// `None` where /proc is not available.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    // utime and stime (fields 14 and 15 of the file) in clock ticks of 1/100 s (USER_HZ).
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The pid of the nats-server this process started, found by its parent pid.
fn server_pid() -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: u32 = stat[stat.rfind(')')? + 2..]
            .split(' ')
            .nth(1)?
            .parse()
            .ok()?;
        (ppid == me && stat.contains("(nats-server)")).then_some(pid)
    })
}

/// One timed iteration: how long it took, and the CPU the client (this process) and
/// the server used meanwhile.
struct Run {
    elapsed: Duration,
    client_cpu: Option<Duration>,
    server_cpu: Option<Duration>,
}

/// Back-to-back (raw, engine) runs by max_in_flight and baseline.
type Pairs = BTreeMap<(usize, &'static str), Vec<(Run, Run)>>;

/// Everything a measurement needs, shared by all benchmark functions.
struct Setup {
    runtime: Runtime,
    rows: u64,
    url: String,
    client: async_nats::Client,
    admin: Context,
    messages: Vec<Prebuilt>,
    /// The same rows with their header columns, for the `_headers` variants.
    header_messages: Vec<Prebuilt>,
    engine: Mutex<Engine>,
    server_pid: Option<u32>,
    /// Every iteration criterion timed, by (max_in_flight, variant).
    runs: RefCell<BTreeMap<(usize, &'static str), Vec<Run>>>,
    /// The back-to-back pairs, by max_in_flight and baseline: (raw, engine).
    pairs: RefCell<Pairs>,
}

impl Setup {
    fn new() -> (Setup, NatsServer) {
        let rows = common::rows(ROWS, TEST_MODE_ROWS);
        let runtime = common::runtime();
        let server = NatsServer::start();
        let url = server.url();
        let mut engine = Engine::new();
        let (client, admin, messages, header_messages) = runtime.block_on(async {
            let messages: Vec<Prebuilt> = common::prebuilt_messages(&mut engine, &query(rows))
                .await
                .into_iter()
                .map(|(subject, payload)| (subject, None, payload))
                .collect();
            let header_messages = common::prebuilt_messages_with(
                &mut engine,
                &headers_query(rows),
                &[("header_fields", HEADER_FIELDS)],
            )
            .await;
            // The sink validates each distinct subject once and tells its client to skip
            // validation; the pre-built subjects are valid, so the baseline skips it too.
            let options = nats_testkit::connect_options().skip_subject_validation(true);
            let client = nats_testkit::connect_with(&url, options).await;
            let admin = jetstream::new(client.clone());
            admin
                .create_stream(stream::Config {
                    name: STREAM.into(),
                    subjects: vec!["bench.>".into()],
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .unwrap();
            (client, admin, messages, header_messages)
        });
        assert_eq!(messages.len() as u64, rows);
        assert_eq!(header_messages.len() as u64, rows);
        assert!(header_messages.iter().all(|(_, h, _)| h.is_some()));
        let total_bytes: usize = messages.iter().map(|(_, _, p)| p.len()).sum();
        println!(
            "{rows} rows, {} bytes of JSON per row on average, file stream {STREAM} purged before each iteration",
            total_bytes as u64 / rows
        );
        let setup = Setup {
            runtime,
            rows,
            url,
            client,
            admin,
            messages,
            header_messages,
            engine: Mutex::new(engine),
            server_pid: server_pid(),
            runs: RefCell::default(),
            pairs: RefCell::default(),
        };
        (setup, server)
    }

    /// One iteration of `variant` on an empty stream; only the publishing is timed (not
    /// the purge before nor the check after).
    async fn run_once(&self, variant: &str, max_in_flight: usize) -> Run {
        let js = context(&self.client, max_in_flight);
        let headers = matches!(variant, RAW_HEADERS | ENGINE_HEADERS);
        let sql = insert(&self.url, self.rows, max_in_flight, headers);
        let client_pid = Some(std::process::id());
        let cpu = |pid: Option<u32>| pid.and_then(cpu_time);

        self.admin
            .get_stream(STREAM)
            .await
            .unwrap()
            .purge()
            .await
            .unwrap();
        let (client_before, server_before) = (cpu(client_pid), cpu(self.server_pid));
        let start = Instant::now();
        match variant {
            RAW => publish_raw(&js, &self.messages, max_in_flight).await,
            RAW_HEADERS => publish_raw(&js, &self.header_messages, max_in_flight).await,
            _ => {
                let outcomes = self.engine.lock().await.execute(&sql).await.unwrap();
                match outcomes.last() {
                    Some(Outcome::Insert(summary)) => assert_eq!(summary.rows, self.rows),
                    other => panic!("expected an INSERT summary, got {other:?}"),
                }
            }
        }
        let elapsed = start.elapsed();
        let used = |before: Option<Duration>, pid| Some(cpu(pid)?.saturating_sub(before?));
        let run = Run {
            elapsed,
            client_cpu: used(client_before, client_pid),
            server_cpu: used(server_before, self.server_pid),
        };
        let mut stream = self.admin.get_stream(STREAM).await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        assert_eq!(state.messages, self.rows);
        if headers {
            // Untimed: the stored rows carry their header columns.
            let first = stream.get_raw_message(state.first_sequence).await.unwrap();
            assert!(
                first.headers.get("trace_id").is_some() && first.headers.get("tenant").is_some()
            );
        }
        run
    }

    /// Criterion's routine: `iters` iterations, each recorded for the summary.
    async fn measure(&self, variant: &'static str, max_in_flight: usize, iters: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let run = self.run_once(variant, max_in_flight).await;
            total += run.elapsed;
            self.runs
                .borrow_mut()
                .entry((max_in_flight, variant))
                .or_default()
                .push(run);
        }
        total
    }

    /// Raw and engine back to back, `PAIRS` times per window and baseline criterion
    /// measured, the order alternating so that a drift in machine speed hits both alike.
    async fn measure_pairs(&self) {
        for (n, raw_variant, engine_variant) in self.measured() {
            for k in 0..PAIRS {
                let (raw, engine) = if k % 2 == 0 {
                    let raw = self.run_once(raw_variant, n).await;
                    (raw, self.run_once(engine_variant, n).await)
                } else {
                    let engine = self.run_once(engine_variant, n).await;
                    (self.run_once(raw_variant, n).await, engine)
                };
                self.pairs
                    .borrow_mut()
                    .entry((n, raw_variant))
                    .or_default()
                    .push((raw, engine));
            }
        }
    }

    /// Each window and pairing criterion measured: (window, baseline, engine variant).
    fn measured(&self) -> Vec<(usize, &'static str, &'static str)> {
        let runs = self.runs.borrow();
        let windows: Vec<usize> = runs.keys().map(|(n, _)| *n).collect();
        dedup(windows)
            .into_iter()
            .flat_map(|n| PAIRINGS.iter().map(move |&(raw, engine)| (n, raw, engine)))
            .filter(|(n, raw, _)| runs.contains_key(&(*n, *raw)))
            .collect()
    }

    fn rate(&self, run: &Run) -> f64 {
        self.rows as f64 / run.elapsed.as_secs_f64()
    }

    fn print_summary(&self) {
        let runs = self.runs.borrow();
        let pairs = self.pairs.borrow();
        println!(
            "\nJetStream publish, {} rows per iteration. Criterion phase: median rows/s \
             (iterations). Pairs: median of {PAIRS} back-to-back engine/raw ratios. CPU: mean \
             microseconds per message of the client process and of nats-server, raw/engine, \
             over all iterations.",
            self.rows
        );
        println!(
            "{:>22} {:>13} {:>16} {:>16} {:>6} {:>6} {:>13} {:>13}",
            "baseline",
            "max_in_flight",
            "raw msg/s",
            "engine rows/s",
            "ratio",
            "pairs",
            "client us",
            "server us"
        );
        for (n, raw_variant, engine_variant) in self.measured() {
            let no_pairs = Vec::new();
            let paired = pairs.get(&(n, raw_variant)).unwrap_or(&no_pairs);
            let raw: Vec<&Run> = runs
                .get(&(n, raw_variant))
                .into_iter()
                .flatten()
                .chain(paired.iter().map(|(r, _)| r))
                .collect();
            let engine: Vec<&Run> = runs
                .get(&(n, engine_variant))
                .into_iter()
                .flatten()
                .chain(paired.iter().map(|(_, e)| e))
                .collect();
            let criterion_median = |variant| {
                runs.get(&(n, variant))
                    .map(|v| median(v.iter().map(|r| self.rate(r)).collect()))
            };
            let (raw_rate, engine_rate) = (
                criterion_median(raw_variant),
                criterion_median(engine_variant),
            );
            let show_rate = |rate: Option<f64>, variant| {
                rate.map_or("-".into(), |r| {
                    format!("{r:.0} ({})", runs.get(&(n, variant)).map_or(0, Vec::len))
                })
            };
            let ratio = match (raw_rate, engine_rate) {
                (Some(raw), Some(engine)) => format!("{:.2}", engine / raw),
                _ => "-".into(),
            };
            let pair_ratio = if paired.is_empty() {
                "-".into()
            } else {
                let ratios = paired
                    .iter()
                    .map(|(r, e)| self.rate(e) / self.rate(r))
                    .collect();
                format!("{:.2}", median(ratios))
            };
            let per_message = |all: &[&Run], cpu: fn(&Run) -> Option<Duration>| {
                let total: Option<Duration> = all.iter().map(|r| cpu(r)).sum();
                let messages = (self.rows * all.len() as u64) as f64;
                match total {
                    Some(t) if !all.is_empty() => {
                        format!("{:.2}", t.as_secs_f64() * 1e6 / messages)
                    }
                    _ => "-".into(),
                }
            };
            let cpu = |cpu: fn(&Run) -> Option<Duration>| {
                format!("{}/{}", per_message(&raw, cpu), per_message(&engine, cpu))
            };
            println!(
                "{raw_variant:>22} {n:>13} {:>16} {:>16} {ratio:>6} {pair_ratio:>6} {:>13} {:>13}",
                show_rate(raw_rate, raw_variant),
                show_rate(engine_rate, engine_variant),
                cpu(|r| r.client_cpu),
                cpu(|r| r.server_cpu)
            );
        }
    }
}

fn dedup(mut windows: Vec<usize>) -> Vec<usize> {
    windows.sort_unstable();
    windows.dedup();
    windows
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn bench_jetstream(c: &mut Criterion) {
    let (setup, server) = Setup::new();
    let s = &setup;

    let mut group = c.benchmark_group("jetstream_e2e");
    group.throughput(Throughput::Elements(s.rows));
    // An iteration takes about a second: one per sample.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    group.bench_function(RAW, |b| {
        b.to_async(&s.runtime)
            .iter_custom(|iters| s.measure(RAW, DEFAULT_IN_FLIGHT, iters))
    });
    group.bench_function(ENGINE, |b| {
        b.to_async(&s.runtime)
            .iter_custom(|iters| s.measure(ENGINE, DEFAULT_IN_FLIGHT, iters))
    });
    group.finish();

    let mut group = c.benchmark_group("max_in_flight");
    group.throughput(Throughput::Elements(s.rows));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for n in CURVE {
        for variant in [RAW, ENGINE] {
            group.bench_with_input(BenchmarkId::new(variant, n), &n, |b, &n| {
                b.to_async(&s.runtime)
                    .iter_custom(|iters| s.measure(variant, n, iters))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("jetstream_headers");
    group.throughput(Throughput::Elements(s.rows));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(8));
    for variant in [RAW_HEADERS, ENGINE_HEADERS] {
        group.bench_function(variant, |b| {
            b.to_async(&s.runtime)
                .iter_custom(|iters| s.measure(variant, DEFAULT_IN_FLIGHT, iters))
        });
    }
    group.finish();

    if common::bench_mode() {
        s.runtime.block_on(s.measure_pairs());
    }
    setup.print_summary();
    drop(setup);
    drop(server);
}

criterion_group!(benches, bench_jetstream);
criterion_main!(benches);
