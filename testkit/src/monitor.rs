//! A minimal HTTP GET for nats-server's monitoring endpoint, so tests can read
//! `/varz`, `/connz` or `/jsz` without an HTTP client dependency.
//!
//! It speaks HTTP/1.0 on purpose: the server then answers with a plain body and closes
//! the connection, so there is no chunked encoding or keep-alive to handle.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

/// GETs `path` from the monitoring port and parses the body as JSON.
///
/// # Panics
/// If the request fails, the status is not 200, or the body is not JSON.
pub(crate) fn get_json(port: u16, path: &str) -> serde_json::Value {
    let url = format!("http://127.0.0.1:{port}{path}");
    let response = get(port, path).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {url}: malformed response: {response}"));
    let status = head.lines().next().unwrap_or_default();
    assert!(status.contains(" 200 "), "GET {url}: {status}\n{body}");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {url}: {e}; body: {body}"))
}

fn get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}
