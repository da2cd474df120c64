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
//! Groups: `jetstream_e2e` (the default window), `max_in_flight` (a curve of windows),
//! `jetstream_headers` (the default window, two header columns per row: the sink's
//! `header_fields = 'trace_id,tenant'` against the raw client publishing the same
//! messages with the same headers, pre-built) and `jetstream_r3` (a stream with three
//! replicas on a 3-node loopback cluster, where each ack waits for a quorum: raw and
//! engine at several windows). On each stream the summary also compares the engine at
//! its default window with raw at its best one, back to back.
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
use std::collections::BTreeMap;
use std::time::Duration;

use common::jetstream::{Prebuilt, Target, context, publish_raw};
use common::measure::{self, Run};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use nats_testkit::{NatsCluster, NatsServer};
use streamsql::{Engine, Outcome};
use tokio::runtime::Runtime;
use tokio::sync::Mutex;

/// Rows per iteration when benchmarking, and in criterion's test mode.
const ROWS: u64 = 200_000;
const TEST_MODE_ROWS: u64 = 10_000;
const STREAM: &str = "BENCH";
/// The replicated stream, on a 3-node cluster.
const STREAM_R3: &str = "BENCH_R3";
const CURVE: [usize; 4] = [64, 256, 1024, 4096];
/// The windows measured on R3; raw's best of them is the R3 baseline. The default is
/// among them.
const R3_WINDOWS: [usize; 5] = [1024, 2048, 4096, 8192, 16384];
/// Back-to-back raw/engine pairs per window after the criterion groups.
const PAIRS: usize = 5;

const RAW: &str = "raw_async_nats";
const ENGINE: &str = "engine_insert";
const RAW_HEADERS: &str = "raw_async_nats_headers";
const ENGINE_HEADERS: &str = "engine_insert_headers";
const RAW_R3: &str = "raw_async_nats_r3";
const ENGINE_R3: &str = "engine_insert_r3";
/// Per stream (its name, the baseline, the engine variant): the windows among which
/// raw's best is the baseline for the engine at its default window.
const BEST_OF: [(&str, &str, &str, &[usize]); 2] = [
    ("R1", RAW, ENGINE, &CURVE),
    ("R3", RAW_R3, ENGINE_R3, &R3_WINDOWS),
];
/// Each baseline and the engine variant measured against it.
const PAIRINGS: [(&str, &str); 3] = [
    (RAW, ENGINE),
    (RAW_HEADERS, ENGINE_HEADERS),
    (RAW_R3, ENGINE_R3),
];
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

fn insert(target: &Target, rows: u64, max_in_flight: usize, headers: bool) -> String {
    let (query, options) = if headers {
        (
            headers_query(rows),
            format!(", header_fields = '{HEADER_FIELDS}'"),
        )
    } else {
        (query(rows), String::new())
    };
    format!(
        "INSERT INTO out {query} WITH (connector = 'nats_sink', servers = '{}', \
         subject_field = 'subject', stream = '{}', max_in_flight = '{max_in_flight}'{options})",
        target.servers, target.stream
    )
}

/// Back-to-back (raw, engine) runs by max_in_flight and baseline.
type Pairs = BTreeMap<(usize, &'static str), Vec<(Run, Run)>>;

/// The servers the bench runs against; dropping it stops them.
struct Servers {
    _single: NatsServer,
    _cluster: NatsCluster,
}

/// Everything a measurement needs, shared by all benchmark functions.
struct Setup {
    runtime: Runtime,
    rows: u64,
    /// One server, the stream with one replica.
    single: Target,
    /// A 3-node cluster, the stream with three replicas (the `_r3` variants).
    replicated: Target,
    messages: Vec<Prebuilt>,
    /// The same rows with their header columns, for the `_headers` variants.
    header_messages: Vec<Prebuilt>,
    engine: Mutex<Engine>,
    /// Every iteration criterion timed, by (max_in_flight, variant).
    runs: RefCell<BTreeMap<(usize, &'static str), Vec<Run>>>,
    /// The back-to-back pairs, by max_in_flight and baseline: (raw, engine).
    pairs: RefCell<Pairs>,
    /// Per baseline of [`BEST_OF`]: raw at its best window against the engine at its
    /// default, back to back.
    best_pairs: RefCell<BTreeMap<&'static str, Vec<(Run, Run)>>>,
}

impl Setup {
    fn new() -> (Setup, Servers) {
        let rows = common::rows(ROWS, TEST_MODE_ROWS);
        let runtime = common::runtime();
        let single = NatsServer::start();
        let single_pids = measure::child_servers();
        let cluster = NatsCluster::start(3);
        let cluster_pids: Vec<u32> = measure::child_servers()
            .into_iter()
            .filter(|p| !single_pids.contains(p))
            .collect();
        let mut engine = Engine::new();
        let (mut one, mut three, messages, header_messages) = runtime.block_on(async {
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
            let one = Target::create(single.url(), STREAM, 1).await;
            // Both clients on one node, a follower of the stream: a client connected to
            // any node of a cluster (async-nats picks one at random) would make runs
            // differ by whether it happens to be the leader. Through a follower is the
            // longer path, which a window must cover.
            let any = Target::create(cluster.servers(), STREAM_R3, 3).await;
            let leader = cluster.stream_leader(&any.client, STREAM_R3).await;
            let follower = cluster.node((leader + 1) % cluster.size()).url();
            let three = Target::create(follower, STREAM_R3, 3).await;
            (one, three, messages, header_messages)
        });
        one.server_pids = single_pids;
        three.server_pids = cluster_pids;
        assert_eq!(messages.len() as u64, rows);
        assert_eq!(header_messages.len() as u64, rows);
        assert!(header_messages.iter().all(|(_, h, _)| h.is_some()));
        let total_bytes: usize = messages.iter().map(|(_, _, p)| p.len()).sum();
        println!(
            "{rows} rows, {} bytes of JSON per row on average; file streams {STREAM} (one \
             server) and {STREAM_R3} (3-node cluster, 3 replicas, published to through a \
             follower) purged before each iteration",
            total_bytes as u64 / rows
        );
        let setup = Setup {
            runtime,
            rows,
            single: one,
            replicated: three,
            messages,
            header_messages,
            engine: Mutex::new(engine),
            runs: RefCell::default(),
            pairs: RefCell::default(),
            best_pairs: RefCell::default(),
        };
        let servers = Servers {
            _single: single,
            _cluster: cluster,
        };
        (setup, servers)
    }

    /// One iteration of `variant` on an empty stream; only the publishing is timed (not
    /// the purge before nor the check after).
    async fn run_once(&self, variant: &str, max_in_flight: usize) -> Run {
        let target = if matches!(variant, RAW_R3 | ENGINE_R3) {
            &self.replicated
        } else {
            &self.single
        };
        let js = context(&target.client, max_in_flight);
        let headers = matches!(variant, RAW_HEADERS | ENGINE_HEADERS);
        let sql = insert(target, self.rows, max_in_flight, headers);
        target
            .admin
            .get_stream(target.stream)
            .await
            .unwrap()
            .purge()
            .await
            .unwrap();
        let run = measure::timed(&target.server_pids, async {
            match variant {
                RAW | RAW_R3 => publish_raw(&js, &self.messages, max_in_flight).await,
                RAW_HEADERS => publish_raw(&js, &self.header_messages, max_in_flight).await,
                _ => {
                    let outcomes = self.engine.lock().await.execute(&sql).await.unwrap();
                    match outcomes.last() {
                        Some(Outcome::Insert(summary)) => assert_eq!(summary.rows, self.rows),
                        other => panic!("expected an INSERT summary, got {other:?}"),
                    }
                }
            }
        })
        .await;
        let stream = target.check(self.rows).await;
        if headers {
            // Untimed: the stored rows carry their header columns.
            let first_sequence = stream.cached_info().state.first_sequence;
            let first = stream.get_raw_message(first_sequence).await.unwrap();
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

    /// `PAIRS` raw/engine pairs back to back, the order alternating so that a drift in
    /// machine speed hits both alike.
    async fn pairs_of(
        &self,
        raw: (&'static str, usize),
        engine: (&'static str, usize),
    ) -> Vec<(Run, Run)> {
        let mut pairs = Vec::with_capacity(PAIRS);
        for k in 0..PAIRS {
            pairs.push(if k % 2 == 0 {
                let raw = self.run_once(raw.0, raw.1).await;
                (raw, self.run_once(engine.0, engine.1).await)
            } else {
                let engine = self.run_once(engine.0, engine.1).await;
                (self.run_once(raw.0, raw.1).await, engine)
            });
        }
        pairs
    }

    /// Pairs at each window and baseline criterion measured, then on each stream
    /// measured, raw at its best window against the engine at its default.
    async fn measure_pairs(&self) {
        for (n, raw, engine) in self.measured() {
            let pairs = self.pairs_of((raw, n), (engine, n)).await;
            self.pairs.borrow_mut().insert((n, raw), pairs);
        }
        for (_, raw, engine, windows) in BEST_OF {
            if let Some(best) = self.best_raw_window(raw, engine, windows) {
                let pairs = self
                    .pairs_of((raw, best), (engine, default_in_flight()))
                    .await;
                self.best_pairs.borrow_mut().insert(raw, pairs);
            }
        }
    }

    /// The window of `windows` at which `raw` was fastest in criterion's phase, if
    /// criterion measured `engine` at its default window too.
    fn best_raw_window(&self, raw: &str, engine: &str, windows: &[usize]) -> Option<usize> {
        let runs = self.runs.borrow();
        let rate = |n: usize| runs.get(&(n, raw)).map(|v| self.median_rate(v));
        let measured = runs.contains_key(&(default_in_flight(), engine));
        let best = windows
            .iter()
            .filter_map(|&n| Some((n, rate(n)?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        measured.then_some(best.0)
    }

    /// Each window and pairing criterion measured: (window, baseline, engine variant).
    fn measured(&self) -> Vec<(usize, &'static str, &'static str)> {
        let runs = self.runs.borrow();
        let mut windows: Vec<usize> = runs.keys().map(|(n, _)| *n).collect();
        windows.sort_unstable();
        windows.dedup();
        windows
            .into_iter()
            .flat_map(|n| PAIRINGS.iter().map(move |&(raw, engine)| (n, raw, engine)))
            .filter(|(n, raw, engine)| {
                runs.contains_key(&(*n, *raw)) && runs.contains_key(&(*n, *engine))
            })
            .collect()
    }

    fn rate(&self, run: &Run) -> f64 {
        self.rows as f64 / run.elapsed.as_secs_f64()
    }

    fn median_rate(&self, runs: &[Run]) -> f64 {
        measure::median(runs.iter().map(|r| self.rate(r)).collect())
    }

    fn print_summary(&self) {
        let runs = self.runs.borrow();
        let pairs = self.pairs.borrow();
        println!(
            "\nJetStream publish, {} rows per iteration. Criterion phase: median rows/s \
             (iterations). Pairs: median of {PAIRS} back-to-back engine/raw ratios. CPU: mean \
             microseconds per message of the client process and of nats-server(s), raw/engine, \
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
            let all = |variant, side: fn(&(Run, Run)) -> &Run| -> Vec<&Run> {
                runs.get(&(n, variant))
                    .into_iter()
                    .flatten()
                    .chain(paired.iter().map(side))
                    .collect()
            };
            let raw = all(raw_variant, |(r, _)| r);
            let engine = all(engine_variant, |(_, e)| e);
            let criterion = |variant| runs.get(&(n, variant)).map(|v| self.median_rate(v));
            let (raw_rate, engine_rate) = (criterion(raw_variant), criterion(engine_variant));
            let show_rate = |rate: Option<f64>, variant| {
                rate.map_or("-".into(), |r| {
                    format!("{r:.0} ({})", runs.get(&(n, variant)).map_or(0, Vec::len))
                })
            };
            let ratio = match (raw_rate, engine_rate) {
                (Some(raw), Some(engine)) => format!("{:.2}", engine / raw),
                _ => "-".into(),
            };
            let cpu = |cpu: fn(&Run) -> Option<Duration>| {
                let per_message = |all: &[&Run]| measure::per_message(all, self.rows, cpu);
                format!("{}/{}", per_message(&raw), per_message(&engine))
            };
            println!(
                "{raw_variant:>22} {n:>13} {:>16} {:>16} {ratio:>6} {:>6} {:>13} {:>13}",
                show_rate(raw_rate, raw_variant),
                show_rate(engine_rate, engine_variant),
                self.paired_ratio(paired),
                cpu(|r| r.client_cpu),
                cpu(|r| r.server_cpu)
            );
        }
        let best_pairs = self.best_pairs.borrow();
        for (name, raw, engine, windows) in BEST_OF {
            let Some(best) = self.best_raw_window(raw, engine, windows) else {
                continue;
            };
            let engine = runs[&(default_in_flight(), engine)].as_slice();
            let paired = best_pairs.get(raw).map_or(&[][..], Vec::as_slice);
            let each: Vec<String> = self
                .ratios(paired)
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect();
            println!(
                "{name}: the engine at its default max_in_flight ({}) against raw at its best \
                 window ({best}): criterion {:.2}, pairs {} ({})",
                default_in_flight(),
                self.median_rate(engine) / self.median_rate(&runs[&(best, raw)]),
                self.paired_ratio(paired),
                each.join(" ")
            );
        }
    }

    /// The median engine/raw ratio of `pairs`, as text.
    fn paired_ratio(&self, pairs: &[(Run, Run)]) -> String {
        if pairs.is_empty() {
            return "-".into();
        }
        format!("{:.2}", measure::median(self.ratios(pairs)))
    }

    fn ratios(&self, pairs: &[(Run, Run)]) -> Vec<f64> {
        pairs
            .iter()
            .map(|(r, e)| self.rate(e) / self.rate(r))
            .collect()
    }
}

/// The sink's default `max_in_flight`, as its option declares it.
fn default_in_flight() -> usize {
    connector_nats::options::spec("max_in_flight")
        .and_then(|spec| spec.default)
        .and_then(|d| d.parse().ok())
        .expect("max_in_flight has a numeric default")
}

/// Criterion's settings for a group whose iterations take about a second each.
fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
    rows: u64,
    measurement: u64,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(rows));
    // One iteration per sample.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(measurement));
    group
}

fn bench_jetstream(c: &mut Criterion) {
    let (setup, servers) = Setup::new();
    let s = &setup;
    let default = default_in_flight();

    let mut g = group(c, "jetstream_e2e", s.rows, 8);
    for variant in [RAW, ENGINE] {
        g.bench_function(variant, |b| {
            b.to_async(&s.runtime)
                .iter_custom(|iters| s.measure(variant, default, iters))
        });
    }
    g.finish();

    let mut g = group(c, "max_in_flight", s.rows, 5);
    for n in CURVE {
        for variant in [RAW, ENGINE] {
            g.bench_with_input(BenchmarkId::new(variant, n), &n, |b, &n| {
                b.to_async(&s.runtime)
                    .iter_custom(|iters| s.measure(variant, n, iters))
            });
        }
    }
    g.finish();

    let mut g = group(c, "jetstream_headers", s.rows, 8);
    for variant in [RAW_HEADERS, ENGINE_HEADERS] {
        g.bench_function(variant, |b| {
            b.to_async(&s.runtime)
                .iter_custom(|iters| s.measure(variant, default, iters))
        });
    }
    g.finish();

    let mut g = group(c, "jetstream_r3", s.rows, 8);
    for n in R3_WINDOWS {
        for variant in [RAW_R3, ENGINE_R3] {
            g.bench_with_input(BenchmarkId::new(variant, n), &n, |b, &n| {
                b.to_async(&s.runtime)
                    .iter_custom(|iters| s.measure(variant, n, iters))
            });
        }
    }
    g.finish();

    if common::bench_mode() {
        s.runtime.block_on(s.measure_pairs());
    }
    setup.print_summary();
    drop(setup);
    drop(servers);
}

criterion_group!(benches, bench_jetstream);
criterion_main!(benches);
