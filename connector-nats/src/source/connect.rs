//! The source's client: the sink's credentials, TLS and error explanations
//! (`connect::security`), so one connection definition serves both.
//!
//! Unlike the sink's, this client may reconnect by itself: nothing the source sends can
//! be reordered by a reconnect, and a JetStream pull resumes on the new connection
//! (the credentials gate is never closed). Connecting at the start retries while the
//! servers cannot be reached, up to `retry_timeout`, like the sink.

use std::time::Duration;

use async_nats::{Client, Event, ServerAddr};
use tracing::{debug, info, warn};

use crate::connect::credentials::ConnectOnce;
use crate::connect::security;
use crate::deliver::driver;
use crate::deliver::failure::{Failure, TransientKind};
use crate::deliver::retry::Retry;
use crate::error::{NatsSinkError, Result};
use crate::options::config::ConnectionConfig;

/// Subscription buffer of the source's client: a pull delivers up to `fetch_size`
/// messages at once, and a full buffer would drop messages (a slow consumer).
const SUBSCRIPTION_CAPACITY: usize = 65_536;

/// Connects for the source table `table`, retrying while the servers cannot be reached.
pub(crate) async fn connect(config: &ConnectionConfig, table: &str) -> Result<Client> {
    let mut retry = Retry::unobserved(config.retry_timeout);
    driver::until_ok(&mut retry, || try_connect(config))
        .await
        .map_err(|e| match e {
            // Said without the sink's count of rows published.
            NatsSinkError::RetryTimeout { waited, last, .. } => NatsSinkError::Read {
                problem: format!(
                    "source '{table}' gave up connecting after {waited:?} (retry_timeout): {last}; raise 'retry_timeout' or leave it unset to retry until the statement is stopped"
                ),
            },
            other => other,
        })
}

async fn try_connect(config: &ConnectionConfig) -> std::result::Result<Client, Failure> {
    let servers = config.servers_display();
    let addrs = config
        .servers
        .iter()
        .map(|s| s.parse::<ServerAddr>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| NatsSinkError::Connect {
            servers: servers.clone(),
            problem: format!("invalid server address: {e}"),
            source: None,
        })?;
    let (credentials, who) = security::credentials(&config.auth)?;
    // Never closed: this client may reconnect (see the module doc).
    let gate = ConnectOnce::new(credentials);
    let options = gate
        .options()
        .name("streamsql nats_source")
        .connection_timeout(config.connect_timeout)
        .subscription_capacity(SUBSCRIPTION_CAPACITY)
        .event_callback(|event| async move {
            match event {
                Event::Connected => debug!("nats_source: connected"),
                other => warn!("nats_source: {other}"),
            }
        });
    let options = security::tls(options, &config.tls)?;
    let overall = config
        .connect_timeout
        .saturating_mul(addrs.len() as u32)
        .saturating_add(Duration::from_secs(1));
    match tokio::time::timeout(overall, options.connect(addrs)).await {
        Err(_) => Err(Failure::Transient(
            TransientKind::Connection,
            format!(
                "cannot connect to NATS at {servers}: {}",
                security::timed_out(config.connect_timeout)
            ),
        )),
        Ok(Err(e)) => {
            let (problem, transient) = security::explain(&e, config, &who);
            Err(if transient {
                Failure::Transient(
                    TransientKind::Connection,
                    format!("cannot connect to NATS at {servers}: {problem}"),
                )
            } else {
                Failure::Permanent(NatsSinkError::Connect {
                    servers,
                    problem,
                    source: Some(e),
                })
            })
        }
        Ok(Ok(client)) => {
            info!(servers = %servers, "nats_source: connected");
            Ok(client)
        }
    }
}
