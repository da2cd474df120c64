//! The raw async-nats JetStream publisher the JetStream benches measure the sink
//! against, and the streams they publish to.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::{self, Context, stream};
use async_nats::{HeaderMap, Subject};
use bytes::Bytes;

/// A JetStream context configured like the sink's (connector-nats/src/deliver/driver.rs),
/// so that only the publishing loop differs.
pub fn context(client: &async_nats::Client, max_in_flight: usize) -> Context {
    jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(5))
        .ack_timeout(Duration::from_secs(5))
        .max_ack_inflight(max_in_flight.saturating_mul(4).max(1024))
        .backpressure_on_inflight(true)
        .build(client.clone())
}

/// A pre-built message: subject, headers (the `_headers` variants) and payload.
pub type Prebuilt = (Subject, Option<HeaderMap>, Bytes);

/// The best-practice client loop: at most `window` acks outstanding, awaited in order.
pub async fn publish_raw(js: &Context, messages: &[Prebuilt], window: usize) {
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

/// A stream the variants publish to, with what publishing to it needs.
pub struct Target {
    /// The sink's `servers` option.
    pub servers: String,
    pub client: async_nats::Client,
    pub admin: Context,
    pub stream: &'static str,
    /// The nats-server processes serving it, for their CPU.
    pub server_pids: Vec<u32>,
    /// The stream's leader when it was created.
    leader: Option<String>,
}

impl Target {
    /// Connects to `servers` and creates `stream`, a file stream over `bench.>` with
    /// `replicas` copies.
    pub async fn create(servers: String, stream: &'static str, replicas: usize) -> Target {
        // The sink validates each distinct subject once and tells its client to skip
        // validation; the pre-built subjects are valid, so the baseline skips it too.
        let options = nats_testkit::connect_options().skip_subject_validation(true);
        let urls: Vec<&str> = servers.split(',').collect();
        let client = options.connect(urls).await.unwrap();
        let admin = jetstream::new(client.clone());
        let mut created = admin
            .create_stream(stream::Config {
                name: stream.into(),
                subjects: vec!["bench.>".into()],
                storage: stream::StorageType::File,
                num_replicas: replicas,
                ..Default::default()
            })
            .await
            .unwrap();
        let leader = created.info().await.unwrap().cluster.clone();
        Target {
            servers,
            client,
            admin,
            stream,
            server_pids: Vec::new(),
            leader: leader.and_then(|c| c.leader),
        }
    }

    /// After an iteration: asserts the stream holds `rows` messages, warns if its leader
    /// moved (the path from the client, through a follower or not, would differ between
    /// the runs compared), and returns the stream.
    pub async fn check(&self, rows: u64) -> stream::Stream {
        let mut stream = self.admin.get_stream(self.stream).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.state.messages, rows);
        let leader = info.cluster.as_ref().and_then(|c| c.leader.clone());
        if leader != self.leader {
            eprintln!(
                "warning: stream {} is now led by {leader:?}, not {:?}: runs from here on take another path",
                self.stream, self.leader
            );
        }
        stream
    }
}
