//! `nats_kv`: a sink that writes each row into a NATS key-value bucket.
//!
//! Each row puts its value (its JSON, or the raw bytes of `payload_field`) under its key
//! (`key_field`), or, with `op_field`, deletes or purges the key, so that a changelog
//! becomes the bucket's state. It is the JetStream sink with routing of its own
//! (`options`): the bucket's stream, a subject per key (`keys`), headers per op (`ops`),
//! checks of the bucket at the start (`bucket`). Delivery is the JetStream window's:
//! pipelined, confirmed by acks, retried from the first unconfirmed row, with one
//! message per key in flight so that each key's revisions follow the row order even
//! under retries (`deliver/jetstream/key_order`; short of a first copy given up on that
//! the server still stores late). A row is confirmed when the bucket
//! stored it; after a failure the statement can be rerun: a put sent twice is one more
//! revision of the same value.

pub(crate) mod bucket;
pub(crate) mod columns;
pub(crate) mod keys;
pub(crate) mod ops;
pub mod options;

use std::collections::HashMap;

use datafusion::arrow::datatypes::SchemaRef;

use crate::error::Result;
use crate::options::Options;
use crate::sink::NatsSinkTable;
pub use options::{KV_CONNECTOR_NAME, KV_OPTIONS};

/// The name to register the factory under (`STORED AS NATS_KV`).
pub const KV_FILE_TYPE: &str = "NATS_KV";

/// The `nats_kv` table `name` for `schema`, from options not yet validated.
pub(crate) fn table(
    name: &str,
    schema: SchemaRef,
    options: &HashMap<String, String>,
) -> Result<NatsSinkTable> {
    let options = Options::parse_for(&KV_OPTIONS, options, false)?;
    let config = options::sink_config(&options)?;
    NatsSinkTable::with_config(name, schema, options, config)
}

#[cfg(test)]
mod tests;
