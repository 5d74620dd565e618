//! Schema creation and migration (spec/CLUSTER.md §2).

use tokio_postgres::Client;

use crate::PgError;

/// The newest schema version this code writes and understands.
pub const SCHEMA_VERSION: i32 = 1;

/// A constant key for `pg_advisory_xact_lock`, so nodes starting together migrate one at a
/// time ("tall" in ASCII).
const MIGRATION_LOCK: i64 = 0x7461_6c6c;

/// Version 1 (spec/CLUSTER.md §2): the shard count, leases, heads, records, the keyed lane
/// index.
const V1: &str = "
CREATE TABLE tally_cluster (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    shards INT NOT NULL
);
CREATE TABLE tally_leases (
    shard INT PRIMARY KEY,
    owner TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE tally_heads (
    channel BYTEA PRIMARY KEY,
    shard INT NOT NULL,
    size BIGINT NOT NULL,
    epoch BIGINT NOT NULL
);
CREATE TABLE tally_records (
    channel BYTEA NOT NULL,
    idx BIGINT NOT NULL,
    epoch BIGINT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (channel, idx)
);
CREATE TABLE tally_keyed (
    channel BYTEA NOT NULL,
    key INT NOT NULL,
    idx BIGINT NOT NULL,
    PRIMARY KEY (channel, key)
);
";

/// Applies the missing versions in one transaction under the migration lock, then records
/// or checks the shard count.
pub(crate) async fn init(client: &mut Client, shards: u16) -> Result<(), PgError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS tally_schema (
             version INT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await?;
    let row = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM tally_schema", &[])
        .await?;
    let found: i32 = row.try_get(0)?;
    if found > SCHEMA_VERSION {
        return Err(PgError::SchemaTooNew {
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 1 {
        tx.batch_execute(V1).await?;
        tx.execute("INSERT INTO tally_schema (version) VALUES (1)", &[])
            .await?;
    }
    tx.execute(
        "INSERT INTO tally_cluster (shards) VALUES ($1) ON CONFLICT (singleton) DO NOTHING",
        &[&i32::from(shards)],
    )
    .await?;
    let stored: i32 = tx
        .query_one("SELECT shards FROM tally_cluster", &[])
        .await?
        .try_get(0)?;
    if stored != i32::from(shards) {
        return Err(PgError::ShardsMismatch {
            database: i64::from(stored),
            configured: shards,
        });
    }
    tx.commit().await?;
    Ok(())
}
