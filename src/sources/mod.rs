//! Source connectors built into the engine.

mod datagen;

pub use datagen::{DATAGEN, DATAGEN_OPTIONS, DatagenConfig, DatagenConnector, generate};
