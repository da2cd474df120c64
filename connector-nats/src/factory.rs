//! `CREATE EXTERNAL TABLE ... STORED AS NATS_SINK` for any DataFusion session.
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
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::error::Result;
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::CreateExternalTable;

use crate::error::NatsSinkError;
use crate::options::{Options, SERVERS};
use crate::sink::NatsSinkTable;

/// The name to register the factory under (`STORED AS NATS_SINK`).
pub const FILE_TYPE: &str = "NATS_SINK";

/// Creates [`NatsSinkTable`]s from `CREATE EXTERNAL TABLE` statements. Install it with
/// [`register`], or add it to a `SessionStateBuilder`'s table factories under [`FILE_TYPE`].
#[derive(Debug, Default)]
pub struct NatsSinkFactory;

/// Makes `STORED AS NATS_SINK` available in `ctx`.
pub fn register(ctx: &SessionContext) {
    ctx.state_ref()
        .write()
        .table_factories_mut()
        .insert(FILE_TYPE.to_string(), Arc::new(NatsSinkFactory));
}

#[async_trait]
impl TableProviderFactory for NatsSinkFactory {
    async fn create(
        &self,
        _state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
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
        let schema = Arc::new(cmd.schema.as_arrow().clone());
        let options = Options::parse(&options, false)?;
        Ok(Arc::new(NatsSinkTable::try_new(
            &cmd.name.to_string(),
            schema,
            options,
        )?))
    }
}
