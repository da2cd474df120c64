//! Adapters from connector plugin crates to the engine's [`Connector`](crate::registry::Connector) trait.

mod nats;

pub use nats::NatsSinkConnector;
