//! TLS on failover, against a cluster whose members do not all serve TLS: once a sink
//! uses TLS (from a `tls://` URL or a `tls_*` option), no connection of it, to a listed
//! or an announced server, goes without; a failover target refused for that, or for a
//! certificate that does not name its announced address, is retried, not fatal.

use crate::common;
use crate::security::path;

use std::process::{Child, Output};
use std::time::{Duration, Instant};

use common::*;
use nats_testkit::{NatsCluster, NatsServer, Pki};

/// The sink's connection name, as `/connz` shows it.
const SINK_CONNECTION: &str = "streamsql nats_sink";

/// The one user of the failover clusters.
const FAILOVER_USER: &str = "publisher";
const FAILOVER_PASSWORD: &str = "pw-failover-7";

/// Rows of a failover statement, and the most datagen produces per second: the run
/// lasts at least 4 s, so the sink's server can be killed in the middle of it.
const FAILOVER_ROWS: u64 = 800;
const FAILOVER_RATE: u64 = 200;

/// The longest a failover statement or anything the test waits for may take.
const FAILOVER_LIMIT: Duration = Duration::from_secs(60);

/// A cluster of three with one user: node 0 serves TLS, node 1 plaintext only (it
/// announces itself to TLS clients of node 0 all the same: client TLS is configured per
/// server), node 2 TLS with a certificate valid for its address, or, `misnamed`, for
/// another name only.
fn mixed_tls_cluster(pki: &Pki, misnamed: bool) -> NatsCluster {
    NatsCluster::start_with(3, |i, node| {
        let node = node.user(FAILOVER_USER, FAILOVER_PASSWORD);
        match i {
            0 => node.tls(pki),
            1 => node,
            _ => node.tls(pki).tls_misnamed(misnamed),
        }
    })
}

/// How a failover statement gets TLS.
struct TlsVariant {
    what: &'static str,
    /// The `servers` option and any TLS option.
    options: String,
    /// `SSL_CERT_FILE` for the statement: the CA it trusts as a system root.
    system_roots: Option<String>,
}

/// TLS only from a `tls://` URL, with the CA trusted through the system roots
/// (`SSL_CERT_FILE`, which rustls-native-certs reads in place of the platform's store);
/// or only from `tls_ca_file`, with a `nats://` URL.
fn tls_variants(cluster: &NatsCluster, pki: &Pki) -> [TlsVariant; 2] {
    let ca = path(&pki.ca_file()).to_string();
    [
        TlsVariant {
            what: "tls:// URL only",
            options: format!("servers = '{}'", cluster.node(0).tls_url()),
            system_roots: Some(ca.clone()),
        },
        TlsVariant {
            what: "tls_ca_file only",
            options: format!(
                "servers = '{}', tls_ca_file = '{ca}'",
                cluster.node(0).url()
            ),
            system_roots: None,
        },
    ]
}

/// Starts a statement publishing [`FAILOVER_ROWS`] rows as [`FAILOVER_USER`] with the
/// servers and TLS of `variant`.
fn spawn_failover_statement(variant: &TlsVariant) -> Child {
    let script = format!(
        "SET datafusion.execution.target_partitions = 1;
         CREATE TABLE gen (id BIGINT) WITH (connector = 'datagen', \
           rows_per_second = '{FAILOVER_RATE}', row_limit = '{FAILOVER_ROWS}');
         INSERT INTO out SELECT id, concat('failover.', CAST(id % 4 AS VARCHAR)) AS subject \
           FROM gen WITH (connector = 'nats_sink', subject_field = 'subject', \
           username = '{FAILOVER_USER}', password = '{FAILOVER_PASSWORD}', \
           retry_timeout = '60s', connect_timeout = '2s', {options});",
        options = variant.options
    );
    let envs: Vec<(&str, &str)> = variant
        .system_roots
        .iter()
        .map(|ca| ("SSL_CERT_FILE", ca.as_str()))
        .collect();
    spawn_with_args(&["run", "-"], &script, &envs)
}

/// The sink's connections to `node` since it started, open and closed (`/connz` keeps
/// closed ones), with the user each logged in as.
fn sink_connections(node: &NatsServer) -> Vec<serde_json::Value> {
    let connz = node.monitor_json("/connz?state=all&auth=1");
    connz["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == SINK_CONNECTION)
        .cloned()
        .collect()
}

/// The users that ever logged in on `node`. On a plaintext server, a login means the
/// password crossed the network in clear.
fn logins(node: &NatsServer) -> Vec<String> {
    let connz = node.monitor_json("/connz?state=all&auth=1");
    connz["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["authorized_user"].as_str())
        .filter(|user| !user.is_empty())
        .map(str::to_string)
        .collect()
}

/// Waits until the sink has an open connection on `node`, failing if the statement
/// ends first.
fn wait_for_sink_on(node: &NatsServer, statement: &mut Child) {
    let deadline = Instant::now() + FAILOVER_LIMIT;
    loop {
        let open = sink_connections(node)
            .iter()
            .any(|c| c["stop"].is_null() || c["stop"] == "");
        if open {
            return;
        }
        if let Some(status) = statement.try_wait().unwrap() {
            panic!("the statement ended ({status}) before the sink connected");
        }
        assert!(Instant::now() < deadline, "the sink never connected");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The statement's output once it ends; killed and failed after [`FAILOVER_LIMIT`].
fn finish(mut statement: Child) -> Output {
    let deadline = Instant::now() + FAILOVER_LIMIT;
    while statement.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            statement.kill().unwrap();
            let output = statement.wait_with_output().unwrap();
            panic!(
                "the statement ran for {FAILOVER_LIMIT:?}; stderr:\n{}",
                stderr(&output)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    statement.wait_with_output().unwrap()
}

fn assert_every_row_published(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: the statement failed\nstderr:\n{}",
        stderr(output)
    );
    assert_eq!(
        inserted_rows(&stdout(output), "out"),
        FAILOVER_ROWS,
        "{what}"
    );
}

/// The sink's TLS member (node 0) dies mid-run; the cluster announced a plaintext member
/// (node 1) and a TLS one (node 2). The sink goes on over TLS through node 2 and never
/// logs in on node 1, whether TLS came from a `tls://` URL or from `tls_ca_file`.
#[test]
fn after_failover_the_sink_keeps_tls_and_never_logs_in_on_a_plaintext_member() {
    let pki = Pki::new();
    let mut cluster = mixed_tls_cluster(&pki, false);
    for variant in tls_variants(&cluster, &pki) {
        let what = variant.what;
        let before = sink_connections(cluster.node(2)).len();
        let mut statement = spawn_failover_statement(&variant);
        wait_for_sink_on(cluster.node(0), &mut statement);
        cluster.kill(0);
        let output = finish(statement);
        let logins_on_plaintext = logins(cluster.node(1));
        assert!(
            logins_on_plaintext.is_empty(),
            "{what}: the plaintext member admitted {logins_on_plaintext:?}: the password went \
             in clear\nstderr:\n{}",
            stderr(&output)
        );
        assert_every_row_published(&output, what);
        let on_node_2 = sink_connections(cluster.node(2));
        let new = &on_node_2[before..];
        assert!(
            !new.is_empty(),
            "{what}: the sink never connected to node 2\nstderr:\n{}",
            stderr(&output)
        );
        for c in new {
            assert!(
                c["tls_version"].as_str().is_some_and(|v| !v.is_empty()),
                "{what}: a connection to node 2 without TLS: {c}"
            );
            assert_eq!(c["authorized_user"], FAILOVER_USER, "{what}: {c}");
        }
        eprintln!(
            "{what}: failed over to node 2 over TLS ({}); no login on the plaintext node",
            new[0]["tls_version"]
        );
        cluster.restart(0);
    }
}

/// The sink's TLS member (node 0) dies mid-run and neither announced member will do: node
/// 1 is plaintext, node 2's certificate does not name its announced address. The sink
/// keeps retrying (a failover target's TLS failure is no reason to give up) without ever
/// logging in on node 1, and finishes once node 0 is back.
#[test]
fn with_no_usable_tls_member_the_sink_retries_until_its_server_is_back() {
    /// How long the outage lasts: several retries, each trying both announced members.
    const OUTAGE: Duration = Duration::from_secs(3);
    let pki = Pki::new();
    let mut cluster = mixed_tls_cluster(&pki, true);
    for variant in tls_variants(&cluster, &pki) {
        let what = variant.what;
        let mut statement = spawn_failover_statement(&variant);
        wait_for_sink_on(cluster.node(0), &mut statement);
        cluster.kill(0);
        std::thread::sleep(OUTAGE);
        let ended = statement.try_wait().unwrap();
        let logins_on_plaintext = logins(cluster.node(1));
        let on_misnamed = sink_connections(cluster.node(2));
        cluster.restart(0);
        let output = finish(statement);
        assert!(
            logins_on_plaintext.is_empty(),
            "{what}: the plaintext member admitted {logins_on_plaintext:?}: the password went \
             in clear\nstderr:\n{}",
            stderr(&output)
        );
        assert!(
            on_misnamed.is_empty(),
            "{what}: the sink connected to the misnamed member: {on_misnamed:?}"
        );
        assert!(
            ended.is_none(),
            "{what}: the statement ended ({ended:?}) during the outage\nstderr:\n{}",
            stderr(&output)
        );
        assert_every_row_published(&output, what);
        // The announced members were tried, and their refusal taken for transient.
        let err = stderr(&output);
        let refusals: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("the servers the cluster announced") && l.contains("retrying"))
            .collect();
        assert!(
            !refusals.is_empty(),
            "{what}: no refusal by an announced member retried:\n{err}"
        );
        eprintln!(
            "{what}: retried through a {OUTAGE:?} outage, no plaintext login; {} retries \
             for announced members' TLS, the last:\n{}",
            refusals.len(),
            refusals[refusals.len() - 1]
        );
    }
}
