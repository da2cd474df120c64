//! A plain HTTP/1.1 GET for the `--metrics-addr` server, without an HTTP client crate.

use std::io::{Read, Write};
use std::net::TcpStream;

/// One response: its status line and headers, and its body.
#[derive(Debug)]
pub struct Response {
    pub head: String,
    pub body: String,
}

impl Response {
    /// Asserts a 200 with `content_type` and returns the body.
    pub fn ok(self, content_type: &str) -> String {
        assert!(self.head.starts_with("HTTP/1.1 200"), "{}", self.head);
        assert!(
            self.head
                .to_ascii_lowercase()
                .contains(&format!("content-type: {content_type}")),
            "{}",
            self.head
        );
        self.body
    }
}

/// `GET url` (an `http://host:port/path` URL).
pub fn get(url: &str) -> Response {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut stream = TcpStream::connect(host).expect("the server accepts");
    write!(
        stream,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("headers");
    Response {
        head: head.to_string(),
        body: body.to_string(),
    }
}
