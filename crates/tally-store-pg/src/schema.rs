//! Schema creation and migration (spec/CLUSTER.md §2).

use tally_log::{Blake3Hasher, Frontier, LogError};
use tokio_postgres::{Client, Transaction};

use crate::error::{to_i64, to_u64};
use crate::merkle::{insert_nodes, Node};
use crate::{ChannelId, PgError};

/// The newest schema version this code writes and understands.
pub const SCHEMA_VERSION: i32 = 4;

/// Records read per query while a migration computes the hashes of existing logs.
const BACKFILL_CHUNK: u64 = 4096;

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

/// Version 2 (spec/CLUSTER.md §2): every complete subtree's hash, one row each, immutable once
/// written; and the checkpoints, each checked against those hashes when stored.
const V2: &str = "
CREATE TABLE tally_nodes (
    channel BYTEA NOT NULL,
    level SMALLINT NOT NULL,
    idx BIGINT NOT NULL,
    hash BYTEA NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (channel, level, idx)
);
CREATE TABLE tally_checkpoints (
    channel BYTEA NOT NULL,
    size BIGINT NOT NULL,
    root BYTEA NOT NULL CHECK (length(root) = 32),
    body BYTEA NOT NULL,
    epoch BIGINT NOT NULL,
    PRIMARY KEY (channel, size)
);
";

/// Version 3 (spec/CLUSTER.md §2): the gateway's side state, the tables of tally-log's
/// `BindingsBackend`. Stored values keep the sled store's byte shapes (decoded by the same
/// tally-log functions); the length checks are one more wall against a malformed write. The
/// `epoch` columns name the lease of the fenced writer, as in `tally_records`.
const V3: &str = "
CREATE TABLE tally_terms (
    hash BYTEA PRIMARY KEY CHECK (length(hash) = 32),
    body BYTEA NOT NULL
);
CREATE TABLE tally_sessions (
    channel BYTEA PRIMARY KEY,
    key BYTEA NOT NULL CHECK (length(key) = 32)
);
CREATE TABLE tally_salts (
    channel BYTEA PRIMARY KEY,
    salt BYTEA NOT NULL CHECK (length(salt) = 32)
);
CREATE TABLE tally_closing (
    channel BYTEA PRIMARY KEY,
    body BYTEA NOT NULL CHECK (length(body) = 186),
    agreed_at BIGINT NOT NULL,
    epoch BIGINT NOT NULL
);
CREATE TABLE tally_credits (
    channel BYTEA NOT NULL,
    idx BIGINT NOT NULL,
    body BYTEA NOT NULL CHECK (length(body) = 40),
    epoch BIGINT NOT NULL,
    PRIMARY KEY (channel, idx)
);
CREATE TABLE tally_promises (
    channel BYTEA PRIMARY KEY,
    epoch BIGINT NOT NULL
);
CREATE TABLE tally_restores (
    channel BYTEA NOT NULL,
    nonce BYTEA NOT NULL CHECK (length(nonce) = 32),
    size BIGINT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (channel, nonce, size)
);
";

/// Version 4 (spec/CLUSTER.md §7): where each node is reached, so a node that does not own a
/// channel's shard can forward the request to the lease owner named in `tally_leases`.
const V4: &str = "
CREATE TABLE tally_members (
    node TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
";

/// Applies the versions up to `target` missing from the database in one transaction under the
/// migration lock, then records or checks the shard count. `target` is
/// [`SCHEMA_VERSION`] except in migration tests.
pub(crate) async fn init(client: &mut Client, shards: u16, target: i32) -> Result<(), PgError> {
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
    if found < 1 && target >= 1 {
        tx.batch_execute(V1).await?;
        tx.execute("INSERT INTO tally_schema (version) VALUES (1)", &[])
            .await?;
    }
    if found < 2 && target >= 2 {
        tx.batch_execute(V2).await?;
        backfill(&tx).await?;
        tx.execute("INSERT INTO tally_schema (version) VALUES (2)", &[])
            .await?;
    }
    if found < 3 && target >= 3 {
        tx.batch_execute(V3).await?;
        tx.execute("INSERT INTO tally_schema (version) VALUES (3)", &[])
            .await?;
    }
    if found < 4 && target >= 4 {
        tx.batch_execute(V4).await?;
        tx.execute("INSERT INTO tally_schema (version) VALUES (4)", &[])
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

/// Computes and stores the hashes of the logs written under version 1, which kept records
/// only: each channel's records, in order, through tally-log's [`Frontier`], as the fenced
/// commit does for new ones (CLUSTER.md §2, "Migrating from version 1").
async fn backfill(tx: &Transaction<'_>) -> Result<(), PgError> {
    let heads = tx
        .query("SELECT channel, size FROM tally_heads WHERE size > 0", &[])
        .await?;
    for row in heads {
        let id: &[u8] = row.try_get(0)?;
        let id = <[u8; 32]>::try_from(id).map_err(|_| PgError::OutOfRange("channel"))?;
        let channel = ChannelId(id);
        let size = to_u64(row.try_get(1)?, "size")?;
        let mut frontier = Frontier::default();
        while frontier.size() < size {
            let start = frontier.size();
            let end = size.min(start.saturating_add(BACKFILL_CHUNK));
            let rows = tx
                .query(
                    "SELECT body FROM tally_records WHERE channel = $1 AND idx >= $2 AND idx < $3
                      ORDER BY idx",
                    &[
                        &id.as_slice(),
                        &to_i64(start, "index")?,
                        &to_i64(end, "index")?,
                    ],
                )
                .await?;
            if u64::try_from(rows.len()).ok() != Some(end - start) {
                return Err(LogError::Corrupt {
                    channel,
                    detail: format!("records missing in {start}..{end} below head {size}"),
                }
                .into());
            }
            let mut nodes: Vec<Node> = Vec::with_capacity(rows.len() * 2);
            for row in &rows {
                let body: &[u8] = row.try_get(0)?;
                nodes.extend(frontier.push_record(&Blake3Hasher, body));
            }
            insert_nodes(tx, &channel, &nodes).await?;
        }
    }
    Ok(())
}
