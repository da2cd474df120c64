//! `--metrics-addr HOST:PORT`: the sinks' Prometheus series at `GET /metrics`.
//!
//! Served from a thread with its own runtime, so that a scrape is answered even while a
//! statement keeps the main (by default single-threaded) runtime busy.

use std::convert::Infallible;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tracing::{debug, warn};

/// The OpenMetrics text format, which `prometheus_client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A client that does not send its request within this is dropped, so idle
/// connections cannot pile up.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Starts serving the series of the `connectors` on `addr` (port 0 picks a free port);
/// returns the bound address. Fails at once, naming the address, when it cannot listen
/// there.
pub(super) fn serve(
    addr: &str,
    connectors: &crate::registry::Registry,
) -> Result<SocketAddr, String> {
    let problem = |e: std::io::Error| {
        format!(
            "--metrics-addr '{addr}': cannot listen there: {e}; give a free HOST:PORT such as 127.0.0.1:9464"
        )
    };
    let listener = TcpListener::bind(addr).map_err(problem)?;
    listener.set_nonblocking(true).map_err(problem)?;
    let bound = listener.local_addr().map_err(problem)?;
    let mut registry = Registry::default();
    connectors.register_series(&mut registry);
    let registry = Arc::new(registry);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the metrics server: {e}"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || runtime.block_on(accept(listener, registry)))
        .map_err(|e| format!("cannot start the metrics server: {e}"))?;
    // Always said: with port 0 this is the only way to learn the port.
    eprintln!("serving metrics at http://{bound}/metrics");
    Ok(bound)
}

async fn accept(listener: TcpListener, registry: Arc<Registry>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            warn!("the metrics server stopped: {e}");
            return;
        }
    };
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // E.g. out of file descriptors: back off rather than spin a core.
                debug!("metrics server: accepting a connection failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&request, &registry);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(e) = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!("metrics server: a connection failed: {e}");
            }
        });
    }
}

fn respond(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    let reply = |status, content_type, body: String| {
        Response::builder()
            .status(status)
            .header(CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    if request.method() != Method::GET || request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the metrics are at GET /metrics\n".into(),
        );
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => reply(StatusCode::OK, OPENMETRICS, body),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("cannot encode the metrics: {e}\n"),
        ),
    }
}
