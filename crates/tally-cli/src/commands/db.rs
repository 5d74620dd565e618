//! `tally db init --config gateway.toml`: the cluster database's schema (spec/CLUSTER.md §2),
//! created or migrated ahead of the nodes, so a deployment can fail early on a wrong shard
//! count or an unreachable database instead of at a node's start.

use serde_json::json;
use tally_server::config::GatewayConfig;

use crate::cli::DbInitArgs;
use crate::error::{CliError, Result};
use crate::output::Output;

/// Connects to `[store]`'s database and applies the schema.
pub async fn init(a: DbInitArgs, out: Output) -> Result<()> {
    let cfg = GatewayConfig::load(&a.config).map_err(|e| CliError::Usage(e.to_string()))?;
    let pg = cfg
        .store
        .postgres()
        .map_err(|e| CliError::Usage(e.to_string()))?
        .ok_or_else(|| {
            CliError::Usage(format!(
                "{}: [store] kind is not \"postgres\"; a sled store needs no init",
                a.config.display()
            ))
        })?;
    let limits = tally_store_pg::Limits::default();
    let store = tally_store_pg::PgStore::connect_to(&pg.target, pg.shards, limits)
        .await
        .map_err(|e| CliError::Service(format!("cluster database: {e}")))?;
    store
        .init()
        .await
        .map_err(|e| CliError::Service(format!("cluster database: {e}")))?;
    let version = tally_store_pg::SCHEMA_VERSION;
    out.emit(
        &json!({"schema_version": version, "shards": pg.shards}),
        || {
            format!(
                "cluster schema at version {version}, {} shards\n",
                pg.shards
            )
        },
    );
    Ok(())
}
