//! The integration tests of `streamsql`, in one test binary: each file here is a module
//! (`cargo test --test it <module>::` runs one of them). One binary instead of one per
//! file links DataFusion once instead of sixteen times, which is most of an incremental
//! test build on 2 cores.
//!
//! Tests in this binary share a process, as tests of one file always did: anything
//! process-wide (a `tracing` subscriber, the sink's Prometheus families) is set up with
//! `try_init`-style calls or only read from a spawned `streamsql`, and no test sets an
//! environment variable of its own process (a child's environment is given per command).

mod common;

mod bad_input;
mod cli_sub;
mod datafusion_slt;
mod engine_sql;
mod exactly_once;
mod headers;
mod jetstream;
mod jetstream_errors;
mod jetstream_faults;
mod kv;
mod memory;
mod multi_server;
mod observability;
mod reconnect;
mod routing;
mod secrets;
mod security;
mod shell;
mod source;
mod source_acks;
mod source_crash;
mod source_follow;
mod source_memory;
mod sql_examples;
mod status_page;
mod stop_signal;
mod streaming;
mod subject_safety;
mod tls_failover;
