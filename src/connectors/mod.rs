//! Adapters from connector plugin crates to the engine's [`Connector`](crate::registry::Connector) trait.

mod nats;
mod nats_kv;
mod nats_source;

pub use nats::NatsSinkConnector;
pub use nats_kv::NatsKvConnector;
pub use nats_source::NatsSourceConnector;
