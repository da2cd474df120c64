//! Source connectors built into the engine.

mod datagen;
mod datagen_reading;
mod datagen_values;

pub use datagen::{DATAGEN, DATAGEN_OPTIONS, DatagenConfig, DatagenConnector};
pub use datagen_values::{generate, supported};
