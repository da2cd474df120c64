//! `--metrics-addr HOST:PORT`: the HTTP server of an operator's views: the status page
//! at `GET /`, its figures at `GET /status.json` (`status_page`), and the sinks'
//! Prometheus series at `GET /metrics`.
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

use super::status_page;
use crate::engine::StatusBoard;

/// The OpenMetrics text format, which `prometheus_client` writes.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A client that does not send its request within this is dropped, so idle
/// connections cannot pile up.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What the server answers from.
struct Views {
    metrics: Registry,
    board: StatusBoard,
}

/// Starts serving the series of the `connectors` and the status of `board` on `addr`
/// (port 0 picks a free port); returns the bound address. Fails at once, naming the
/// address, when it cannot listen there.
pub(super) fn serve(
    addr: &str,
    connectors: &crate::registry::Registry,
    board: StatusBoard,
) -> Result<SocketAddr, String> {
    let problem = |e: std::io::Error| {
        format!(
            "--metrics-addr '{addr}': cannot listen there: {e}; give a free HOST:PORT such as 127.0.0.1:9464"
        )
    };
    let listener = TcpListener::bind(addr).map_err(problem)?;
    listener.set_nonblocking(true).map_err(problem)?;
    let bound = listener.local_addr().map_err(problem)?;
    let mut metrics = Registry::default();
    connectors.register_series(&mut metrics);
    let views = Arc::new(Views { metrics, board });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the metrics server: {e}"))?;
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || runtime.block_on(accept(listener, views)))
        .map_err(|e| format!("cannot start the metrics server: {e}"))?;
    // Always said: with port 0 this is the only way to learn the port.
    say!("serving metrics at http://{bound}/metrics");
    say!("status page at http://{bound}/");
    Ok(bound)
}

async fn accept(listener: TcpListener, views: Arc<Views>) {
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
        let views = views.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&request, &views);
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

fn respond(request: &Request<Incoming>, views: &Views) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    if request.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET is served: / (status page), /status.json, /metrics\n".into(),
        );
    }
    match request.uri().path() {
        "/" => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            status_page::HTML.into(),
        ),
        "/status.json" => match status_page::json(&views.board.status()) {
            Ok(body) => reply(StatusCode::OK, "application/json", body),
            Err(e) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                TEXT,
                format!("cannot encode the status: {e}\n"),
            ),
        },
        "/metrics" => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, &views.metrics) {
                Ok(()) => reply(StatusCode::OK, OPENMETRICS, body),
                Err(e) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    TEXT,
                    format!("cannot encode the metrics: {e}\n"),
                ),
            }
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: the status page is at /, its figures at /status.json, the metrics at \
             /metrics\n"
                .into(),
        ),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    // The page polls the figures: never a cached answer.
    response.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-store"),
    );
    response
}
