//! Reopening a lost connection: the configured servers first, then the ones the cluster
//! announced (a server's INFO `connect_urls`: `host:port`, no scheme), with the sink's
//! TLS requirement on every one of them.
//!
//! A sink that uses TLS requires it on every connection ([`Tls::required`], which a
//! `tls://` URL sets too), and an announced server is tried as `tls://`. Without that,
//! async-nats would connect to an announced server in plaintext unless the server itself
//! asks for TLS, and send the credentials in clear (async-nats `connector.rs`,
//! `try_connect_to`: TLS when the options require it, the URL is `tls://` or the INFO
//! says `tls_required`).
//!
//! A TLS failure on an announced server (it serves no TLS, or its certificate does not
//! name the address it was announced under), or an announced name that does not
//! resolve, is transient: the sink's options cannot fix it, and a configured server may
//! come back. The same failure on a configured server stays permanent, as at the first
//! connect. Trying the two groups apart is what tells them apart: async-nats reports
//! only the error of the last server it tried (`Connector::try_connect`).
//!
//! [`Tls::required`]: crate::options::config::Tls::required

use async_nats::ServerAddr;

use crate::connect::{Connection, security};
use crate::deliver::driver;
use crate::deliver::failure::{Failure, TransientKind};
use crate::deliver::retry::Retry;
use crate::error::Result;
use crate::metrics::SinkMetrics;
use crate::options::config::ConnectionConfig;

/// The servers in `connect_urls` that `config` does not list (compared by host and port:
/// a listed `tls://h:p` is the announced `h:p`), as URLs to connect to: `tls://` when the
/// sink requires TLS.
pub(super) fn announced(config: &ConnectionConfig, connect_urls: Vec<String>) -> Vec<String> {
    let endpoint = |addr: &ServerAddr| (addr.host().to_ascii_lowercase(), addr.port());
    let listed: Vec<_> = config
        .servers
        .iter()
        .filter_map(|server| server.parse::<ServerAddr>().ok())
        .map(|addr| endpoint(&addr))
        .collect();
    let mut announced: Vec<String> = Vec::new();
    for addr in connect_urls
        .iter()
        .filter_map(|url| url.parse::<ServerAddr>().ok())
    {
        if listed.contains(&endpoint(&addr)) {
            continue;
        }
        let url = if config.tls.required {
            with_tls(addr)
        } else {
            addr.as_url_str().to_string()
        };
        if !announced.contains(&url) {
            announced.push(url);
        }
    }
    announced
}

/// `addr` with the `tls` scheme if it has `nats` (the scheme async-nats gives a URL
/// without one).
fn with_tls(addr: ServerAddr) -> String {
    if addr.scheme() != "nats" {
        return addr.as_url_str().to_string();
    }
    let mut url = addr.into_inner();
    // `nats` and `tls` are both non-special schemes (WHATWG URL): `set_scheme` changes
    // one into the other without fail.
    let _ = url.set_scheme("tls");
    url.to_string()
}

impl Connection {
    /// [`Connection::open`] after a lost connection: each attempt tries the configured
    /// servers, then the `announced` ones (see the module doc).
    pub(super) async fn reopen(
        config: &ConnectionConfig,
        announced: &[String],
        retry: &mut Retry,
        metrics: &SinkMetrics,
    ) -> Result<Self> {
        driver::until_ok(retry, || Self::try_reopen(config, announced, metrics)).await
    }

    async fn try_reopen(
        config: &ConnectionConfig,
        announced: &[String],
        metrics: &SinkMetrics,
    ) -> Result<Self, Failure> {
        let listed = match Self::try_open(config, metrics).await {
            Err(Failure::Transient(_, reason)) if !announced.is_empty() => reason,
            other => return other,
        };
        // The same config (and so the same TLS), other servers.
        let mut elsewhere = config.clone();
        elsewhere.servers = announced.to_vec();
        match Self::try_open(&elsewhere, metrics).await {
            Ok(mut connection) => {
                // It keeps the configured list: it learns its own announced servers.
                connection.config = config.clone();
                Ok(connection)
            }
            Err(Failure::Transient(class, reason)) => {
                Err(Failure::Transient(class, format!("{listed}; {reason}")))
            }
            Err(Failure::Permanent(error)) => {
                match security::announced_refusal(&error, &config.tls) {
                    Some(cause) => Err(Failure::Transient(
                        TransientKind::Connection,
                        format!(
                            "{listed}; the servers the cluster announced ({}) cannot be used: {cause}",
                            elsewhere.servers_display()
                        ),
                    )),
                    None => Err(Failure::Permanent(error)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::options::config::{Auth, Tls};

    fn config(servers: &[&str], tls_required: bool) -> ConnectionConfig {
        ConnectionConfig {
            servers: servers.iter().map(|s| s.to_string()).collect(),
            auth: Auth::None,
            tls: Tls {
                required: tls_required,
                ..Tls::default()
            },
            connect_timeout: Duration::from_secs(1),
            retry_timeout: None,
        }
    }

    fn urls(urls: &[&str]) -> Vec<String> {
        urls.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn announced_servers_get_the_sinks_tls_and_listed_ones_are_left_out_whatever_the_scheme() {
        let announcement = urls(&[
            "10.0.0.1:4222",
            "10.0.0.2:4222",
            "[::1]:4223",
            "nats-3:4222",
        ]);
        let tls = config(&["tls://10.0.0.1:4222"], true);
        assert_eq!(
            announced(&tls, announcement.clone()),
            [
                "tls://10.0.0.2:4222",
                "tls://[::1]:4223",
                "tls://nats-3:4222"
            ]
        );
        let plain = config(&["nats://user:pw@10.0.0.2:4222", "NATS-3"], false);
        assert_eq!(
            announced(&plain, announcement),
            ["nats://10.0.0.1:4222", "nats://[::1]:4223"]
        );
        // Each announced once, even if a server repeats one.
        assert_eq!(
            announced(&tls, urls(&["10.0.0.9:4222", "10.0.0.9:4222"])),
            ["tls://10.0.0.9:4222"]
        );
    }
}
