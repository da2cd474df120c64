//! `streamsql`: a streaming-SQL engine host on DataFusion.
//!
//! [`Engine`] runs SQL scripts: DataFusion's SQL plus `CREATE CONNECTION`,
//! `CREATE TABLE ... WITH (connector = ...)` and `INSERT INTO ... SELECT ... WITH (...)`
//! over the connectors of a [`Registry`] (built in: the `nats_sink` sink from
//! `connector-nats`, and the `datagen` source). The `streamsql` binary is [`cli`].

pub mod cli;
pub mod connectors;
pub mod engine;
pub mod error;
pub mod registry;
pub mod shutdown;
pub mod sources;
pub mod sql;

pub use engine::{
    Connection, Engine, InsertSummary, Outcome, SignalStop, SinkStatus, SourceStatus, State,
    Status, StatusBoard,
};
pub use error::{EngineError, StatementAt, root_message};
pub use registry::{
    Connector, ConnectorKind, DeliveryMetrics, ENGINE_OPTIONS, OptionDoc, OptionMap, OptionScope,
    ReadingMetrics, Registry,
};
pub use shutdown::{Shutdown, ShutdownSignal};
