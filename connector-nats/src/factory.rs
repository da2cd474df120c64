//! `CREATE EXTERNAL TABLE ... STORED AS NATS_SINK` (and `NATS_KV`, a key-value bucket)
//! for any DataFusion session.
//!
//! ```sql
//! CREATE EXTERNAL TABLE out (id BIGINT, subject VARCHAR)
//! STORED AS NATS_SINK LOCATION 'nats://127.0.0.1:4222'
//! OPTIONS ('subject_field' 'subject');
//! ```
//! DataFusion lowercases option keys and prefixes keys without a dot with `format.`
//! (DataFusion `CreateExternalTable` option handling); the prefix is removed here. `LOCATION` gives the servers.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::error::Result;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::CreateExternalTable;

use crate::error::NatsSinkError;
use crate::kv::{self, KV_FILE_TYPE};
use crate::options::{Options, SERVERS};
use crate::sink::NatsSinkTable;

/// The name to register the factory under (`STORED AS NATS_SINK`).
pub const FILE_TYPE: &str = "NATS_SINK";

/// Creates [`NatsSinkTable`]s from `CREATE EXTERNAL TABLE` statements. Install it with
/// [`register`], or add it to a `SessionStateBuilder`'s table factories under [`FILE_TYPE`].
#[derive(Debug, Default)]
pub struct NatsSinkFactory;

/// Creates `nats_kv` tables (a key-value bucket) from `CREATE EXTERNAL TABLE ... STORED AS
/// NATS_KV` statements; [`register`] installs it under [`KV_FILE_TYPE`].
#[derive(Debug, Default)]
pub struct NatsKvFactory;

/// Makes `STORED AS NATS_SINK` and `STORED AS NATS_KV` available in `ctx`.
pub fn register(ctx: &SessionContext) {
    let state = ctx.state_ref();
    let mut state = state.write();
    let factories = state.table_factories_mut();
    factories.insert(FILE_TYPE.to_string(), Arc::new(NatsSinkFactory));
    factories.insert(KV_FILE_TYPE.to_string(), Arc::new(NatsKvFactory));
}

#[async_trait]
impl TableProviderFactory for NatsSinkFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        external_table(cmd, |name, schema, options| {
            NatsSinkTable::try_new(name, schema, Options::parse(options, false)?)
        })
    }
}

#[async_trait]
impl TableProviderFactory for NatsKvFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        external_table(cmd, kv::table)
    }
}

/// The table `make` builds from `cmd`'s name, schema and options.
fn external_table(
    cmd: &CreateExternalTable,
    make: impl FnOnce(&str, SchemaRef, &HashMap<String, String>) -> crate::error::Result<NatsSinkTable>,
) -> Result<Arc<dyn TableProvider>> {
    let schema = Arc::new(cmd.schema.as_arrow().clone());
    let options = external_options(cmd)?;
    Ok(Arc::new(make(&cmd.name.to_string(), schema, &options)?))
}

/// The options of a `CREATE EXTERNAL TABLE`, without DataFusion's `format.` prefix, and
/// `LOCATION` as `servers`.
fn external_options(cmd: &CreateExternalTable) -> Result<HashMap<String, String>> {
    let mut options: HashMap<String, String> = cmd
        .options
        .iter()
        .map(|(k, v)| {
            (
                k.strip_prefix("format.").unwrap_or(k).to_string(),
                v.clone(),
            )
        })
        .collect();
    let locations: Vec<&str> = cmd
        .locations
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    if !locations.is_empty() {
        if options.contains_key(SERVERS) {
            return Err(NatsSinkError::InvalidOption {
                option: SERVERS.into(),
                problem: "given both as LOCATION and in OPTIONS: give the servers once".into(),
            }
            .into());
        }
        options.insert(SERVERS.into(), locations.join(","));
    }
    Ok(options)
}
