//! `NatsCluster`: a JetStream cluster of real nats-server processes, for tests that
//! crash a stream leader mid-run.
//!
//! Guarantees: every node is a [`NatsServer`] (free loopback client port, its own
//! temporary directory with config, log and JetStream storage, killed on drop) whose
//! config adds a `cluster` block with routes to every other node. When
//! [`NatsCluster::start`] or [`NatsCluster::restart`] returns, every running node
//! accepts clients, all of them follow the same JetStream meta leader, and that leader
//! counts every running node as current, so a stream with one replica per node can be
//! created at once. A restarted node keeps its ports, config and storage, and rejoins
//! as the same JetStream peer (peers are known by server name).

use std::thread;
use std::time::{Duration, Instant};

use async_nats::Client;
use async_nats::jetstream::{self, stream::ClusterInfo};

use crate::{NatsServer, ServerBuilder, ports};

/// How long the meta group may take to form. It takes ~0.5 s here; the margin is for
/// loaded CI machines.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stream may go without the leader a caller waits for. After a leader is
/// SIGKILLed the others wait for a Raft election timeout (seconds) before voting.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// How often cluster state is polled while waiting.
const POLL: Duration = Duration::from_millis(20);

/// Nodes are numbered `0..size`; every method taking a node index panics on an index
/// out of range.
///
/// ```no_run
/// # async fn demo() {
/// let mut cluster = nats_testkit::NatsCluster::start(3);
/// let client = nats_testkit::connect_options().connect(cluster.urls()).await.unwrap();
/// // ... create an R=3 stream "ORDERS" and publish ...
/// let leader = cluster.stream_leader(&client, "ORDERS").await;
/// cluster.kill(leader);
/// let successor = cluster.wait_for_stream_leader_change(&client, "ORDERS", leader).await;
/// cluster.restart(leader);
/// # }
/// ```
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` JetStream nodes routed to each other and waits until the cluster
    /// is ready (see the module documentation).
    ///
    /// # Panics
    /// If `size` is 0, a node does not start, or the meta group does not form within
    /// 30 s (the message then ends with the tail of every node's log).
    pub fn start(size: usize) -> NatsCluster {
        Self::start_with(size, |_, node| node)
    }

    /// [`start`](Self::start) with each node's settings adjusted by `configure(i,
    /// builder)`, for a cluster whose members differ: say one serving TLS and another
    /// plaintext (client TLS and routes are configured apart, so they still form one
    /// cluster and announce each other's client URLs). The builder comes with
    /// monitoring on; the `cluster` block is appended after `configure`.
    ///
    /// # Panics
    /// As [`start`](Self::start).
    pub fn start_with(
        size: usize,
        configure: impl Fn(usize, ServerBuilder) -> ServerBuilder,
    ) -> NatsCluster {
        assert!(size > 0, "a cluster needs at least one node");
        // Route ports are fixed before any node starts because every config lists all
        // of them; client and monitoring ports are left to the builder.
        let route_ports: Vec<u16> = (0..size).map(|_| ports::free_port()).collect();
        // free_port never hands out a port twice in this process, and no other process
        // can listen on it while node 0 does: a name unique for the cluster's life.
        let name = format!("testkit-cluster-{}", route_ports[0]);
        let nodes = (0..size)
            .map(|i| {
                configure(i, NatsServer::builder().monitor(true))
                    .config(cluster_block(&name, &route_ports, i))
                    .start()
            })
            .collect();
        let mut cluster = NatsCluster { nodes };
        cluster.wait_until_ready(&(0..size).collect::<Vec<_>>(), "start");
        cluster
    }

    /// The number of nodes, running or not.
    pub fn size(&self) -> usize {
        self.nodes.len()
    }

    /// Every node's client URL, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Every node's client URL joined by commas, as a `servers` option takes them:
    /// `nats://127.0.0.1:<p0>,nats://127.0.0.1:<p1>,...`.
    pub fn servers(&self) -> String {
        self.urls().join(",")
    }

    /// Node `i`, for its URL, log, monitoring endpoint and so on.
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// Node `i`, to `stop()` it or ask whether it `is_running()`. Prefer
    /// [`restart`](Self::restart) over restarting the node directly: that also waits
    /// until it has rejoined the cluster.
    pub fn node_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// Node `i`'s `server_name`, the name JetStream gives leaders and replicas.
    pub fn server_name(&self, i: usize) -> &str {
        self.nodes[i].server_name()
    }

    /// The index of the node called `server_name`, if it is one of ours.
    pub fn node_index(&self, server_name: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.server_name() == server_name)
    }

    /// Kills node `i` with SIGKILL, as a crash would, and waits until it is gone.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts node `i` again with the same ports, config and storage (stopping it
    /// gracefully first if it runs), and waits until it accepts clients and is a
    /// current member of the meta group again. Its stream replicas may still be
    /// catching up: see [`wait_for_stream_replica`](Self::wait_for_stream_replica).
    ///
    /// # Panics
    /// If the node does not start or the cluster is not ready within 30 s.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].restart();
        self.wait_until_ready(&[i], "restart");
    }

    /// The index of the node leading `stream`, waiting until it has a leader.
    ///
    /// # Panics
    /// If the stream has no leader for 30 s (or does not exist).
    pub async fn stream_leader(&self, client: &Client, stream: &str) -> usize {
        self.wait_for_stream(client, stream, "no leader", |info| self.leader_of(info))
            .await
    }

    /// Waits until `stream` is led by a node other than `old`, typically after `old`
    /// was killed, and returns that node's index.
    ///
    /// # Panics
    /// If no other node leads the stream within 30 s.
    pub async fn wait_for_stream_leader_change(
        &self,
        client: &Client,
        stream: &str,
        old: usize,
    ) -> usize {
        let what = format!("still no leader other than node {old}");
        self.wait_for_stream(client, stream, &what, |info| {
            self.leader_of(info).filter(|&leader| leader != old)
        })
        .await
    }

    /// Waits until node `i` holds an up-to-date replica of `stream` (it leads the
    /// stream, or the leader reports it current), for example after a restart.
    ///
    /// # Panics
    /// If it is not current within 30 s.
    pub async fn wait_for_stream_replica(&self, client: &Client, stream: &str, i: usize) {
        let name = self.server_name(i);
        let what = format!("node {i} ({name}) is no current replica");
        self.wait_for_stream(client, stream, &what, |info| {
            let leads = info.leader.as_deref() == Some(name);
            let current = info.replicas.iter().any(|r| r.name == name && r.current);
            (leads || current).then_some(())
        })
        .await;
    }

    fn leader_of(&self, info: &ClusterInfo) -> Option<usize> {
        self.node_index(info.leader.as_deref()?)
    }

    /// Polls the stream's cluster info until `found` returns a value. Errors are
    /// expected meanwhile: during an election nobody answers, or the client is
    /// reconnecting to another node.
    async fn wait_for_stream<T>(
        &self,
        client: &Client,
        stream: &str,
        what: &str,
        mut found: impl FnMut(&ClusterInfo) -> Option<T>,
    ) -> T {
        let mut js = jetstream::new(client.clone());
        // Short, so that an unanswered request is retried rather than waited out.
        js.set_timeout(Duration::from_secs(1));
        let deadline = Instant::now() + LEADER_TIMEOUT;
        loop {
            let last = match js.get_stream(stream).await {
                Ok(s) => match &s.cached_info().cluster {
                    Some(info) => match found(info) {
                        Some(value) => return value,
                        None => format!("{info:?}"),
                    },
                    None => "the stream info has no cluster section".to_string(),
                },
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                panic!(
                    "stream {stream}: {what} after {LEADER_TIMEOUT:?}; last answer: {last}\n{}",
                    self.log_tails()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the running nodes form a ready meta group; `must_run` are nodes
    /// whose exit is a failure rather than a node left out on purpose.
    fn wait_until_ready(&mut self, must_run: &[usize], during: &str) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(&i) = must_run.iter().find(|&&i| !self.nodes[i].is_running()) {
                panic!("cluster {during}: node {i} exited\n{}", self.log_tails());
            }
            let Some(problem) = self.meta_problem() else {
                return;
            };
            if Instant::now() >= deadline {
                panic!(
                    "cluster {during}: JetStream was not ready after {READY_TIMEOUT:?}: \
                     {problem}\n{}",
                    self.log_tails()
                );
            }
            thread::sleep(POLL);
        }
    }

    /// Why the meta group is not ready yet, or `None` once every running node follows
    /// one running leader that counts all of them current. Agreement alone is not
    /// enough: a follower that is not current yet cannot be given a stream replica.
    fn meta_problem(&mut self) -> Option<String> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .collect();
        let views: Vec<MetaView> = running.iter().map(|&i| meta_view(&self.nodes[i])).collect();
        let leaders: Vec<&str> = views.iter().map(|view| view.leader.as_str()).collect();
        let Some(&leader) = leaders.first() else {
            return Some("no node is running".to_string());
        };
        if leader.is_empty() || leaders.iter().any(|&l| l != leader) {
            return Some(format!("the running nodes' meta leaders are {leaders:?}"));
        }
        let Some(at) = running.iter().position(|&i| self.server_name(i) == leader) else {
            return Some(format!("the meta leader {leader} is not a running node"));
        };
        let is_current = |i: usize| views[at].current.iter().any(|n| n == self.server_name(i));
        let behind: Vec<usize> = running
            .iter()
            .copied()
            .filter(|&i| i != running[at] && !is_current(i))
            .collect();
        (!behind.is_empty()).then(|| format!("the meta leader counts nodes {behind:?} behind"))
    }

    /// The last lines of every node's log, for failure messages.
    fn log_tails(&self) -> String {
        let tail = |i: usize| format!("node {i}: {}", self.nodes[i].log_tail());
        (0..self.size()).map(tail).collect()
    }
}

/// One node's view of the JetStream meta group, from its `/jsz`.
struct MetaView {
    /// The leader's server name; empty while the node knows none.
    leader: String,
    /// The replicas the node counts current (meaningful on the leader only).
    current: Vec<String>,
}

fn meta_view(node: &NatsServer) -> MetaView {
    let jsz = node.monitor_json("/jsz");
    let meta = &jsz["meta_cluster"];
    let replicas = meta["replicas"].as_array().into_iter().flatten();
    MetaView {
        leader: meta["leader"].as_str().unwrap_or_default().to_string(),
        current: replicas
            .filter(|r| r["current"] == true)
            .filter_map(|r| r["name"].as_str().map(str::to_string))
            .collect(),
    }
}

/// The config block that makes node `i` a member of cluster `name`. Routes to itself
/// are left out: nats-server would only detect and drop them.
fn cluster_block(name: &str, route_ports: &[u16], i: usize) -> String {
    let routes: Vec<String> = (0..route_ports.len())
        .filter(|&j| j != i)
        .map(|j| format!("\"nats-route://127.0.0.1:{}\"", route_ports[j]))
        .collect();
    format!(
        "cluster {{\n  name: \"{name}\"\n  listen: \"127.0.0.1:{port}\"\n  routes: [{routes}]\n}}",
        port = route_ports[i],
        routes = routes.join(", "),
    )
}
