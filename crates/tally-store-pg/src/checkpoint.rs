//! Signed checkpoints in PostgreSQL (spec/CLUSTER.md §2, version 2): stored by the shard's
//! owner only, fenced like an append (§4), and only when their root is the log's root at
//! their size, as tally-log's sled store requires.

use tally_log::{Hash, LogError};

use crate::error::{to_i64, to_u64};
use crate::lease::hold_lease;
use crate::merkle::root_in;
use crate::{ChannelId, Lease, PgError, PgStore};

/// A checkpoint replaces one at the same size, as in the sled store.
const UPSERT_CHECKPOINT: &str = "
INSERT INTO tally_checkpoints (channel, size, root, body, epoch) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (channel, size) DO UPDATE
   SET root = EXCLUDED.root, body = EXCLUDED.body, epoch = EXCLUDED.epoch";

impl PgStore {
    /// Stores the checkpoint `body` of `channel` at `size` (at most the committed head),
    /// fenced by `lease`. Refused with [`PgError::Fenced`] if the lease is no longer held in
    /// the database, and with `LogError::CheckpointMismatch` (in [`PgError::Log`]) if `root`
    /// is not the log's root at `size`: a checkpoint that contradicts the log is never
    /// stored. The root is compared in constant time (`Hash`'s equality), as in the sled
    /// store, since it comes from the parties' signed message.
    pub async fn put_checkpoint(
        &self,
        lease: &Lease,
        channel: &ChannelId,
        size: u64,
        root: &Hash,
        body: &[u8],
    ) -> Result<(), PgError> {
        self.check_shard(lease, channel)?;
        let epoch = to_i64(lease.epoch, "epoch")?;
        let size_sql = to_i64(size, "size")?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        hold_lease(&tx, lease).await?;
        let actual = root_in(&tx, channel, size).await?;
        if actual != *root {
            return Err(LogError::CheckpointMismatch {
                channel: *channel,
                size,
            }
            .into());
        }
        tx.execute(
            UPSERT_CHECKPOINT,
            &[
                &channel.0.as_slice(),
                &size_sql,
                &root.0.as_slice(),
                &body,
                &epoch,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The checkpoint of `channel` with the largest size, as `(size, body)`.
    pub async fn latest_checkpoint(
        &self,
        channel: &ChannelId,
    ) -> Result<Option<(u64, Vec<u8>)>, PgError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT size, body FROM tally_checkpoints WHERE channel = $1
                  ORDER BY size DESC LIMIT 1",
                &[&channel.0.as_slice()],
            )
            .await?;
        row.as_ref().map(checkpoint_row).transpose()
    }

    /// Every checkpoint of `channel`, smallest size first, as `(size, body)`.
    pub async fn checkpoints(&self, channel: &ChannelId) -> Result<Vec<(u64, Vec<u8>)>, PgError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT size, body FROM tally_checkpoints WHERE channel = $1 ORDER BY size",
                &[&channel.0.as_slice()],
            )
            .await?;
        rows.iter().map(checkpoint_row).collect()
    }
}

/// A `(size, body)` row as the caller gets it.
fn checkpoint_row(row: &tokio_postgres::Row) -> Result<(u64, Vec<u8>), PgError> {
    Ok((to_u64(row.try_get(0)?, "size")?, row.try_get(1)?))
}
