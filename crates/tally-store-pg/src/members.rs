//! Where nodes are reached (spec/CLUSTER.md §7, schema version 4): each node registers its
//! base URL under its node id at start, so another node can forward a request to the owner of
//! a shard named in `tally_leases`.

use crate::error::to_u64;
use crate::lease::shard_param;
use crate::{PgError, PgStore};

/// Who holds a shard's lease, as the database says now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The owner's node id.
    pub node: String,
    /// The owner's base URL, if it registered one.
    pub url: Option<String>,
    /// The owner's epoch.
    pub epoch: u64,
    /// Milliseconds until the lease expires in the database's clock (0: expired).
    pub expires_in_ms: u64,
}

const HOLDER: &str = "
SELECT l.owner, m.url, l.epoch,
       GREATEST(0, extract(epoch FROM l.expires_at - now()) * 1000)::int8
  FROM tally_leases l LEFT JOIN tally_members m ON m.node = l.owner
 WHERE l.shard = $1";

impl PgStore {
    /// Registers (or re-registers) `node` as reachable at `url`, and forgets nodes that
    /// started over a day ago and hold no live lease (every process start is a new node id,
    /// so the table would otherwise only grow).
    pub async fn register_member(&self, node: &str, url: &str) -> Result<(), PgError> {
        let client = self.client().await?;
        client
            .execute(
                "DELETE FROM tally_members m
                  WHERE m.started_at < now() - interval '1 day'
                    AND NOT EXISTS (SELECT 1 FROM tally_leases l
                                     WHERE l.owner = m.node AND l.expires_at > now())",
                &[],
            )
            .await?;
        client
            .execute(
                "INSERT INTO tally_members (node, url) VALUES ($1, $2)
                 ON CONFLICT (node) DO UPDATE SET url = EXCLUDED.url",
                &[&node, &url],
            )
            .await?;
        Ok(())
    }

    /// The holder of `shard`'s lease row, live or not; `None` if no node ever took it.
    pub async fn holder(&self, shard: u32) -> Result<Option<Holder>, PgError> {
        let shard = shard_param(shard)?;
        let client = self.client().await?;
        let Some(row) = client.query_opt(HOLDER, &[&shard]).await? else {
            return Ok(None);
        };
        Ok(Some(Holder {
            node: row.try_get(0)?,
            url: row.try_get(1)?,
            epoch: to_u64(row.try_get(2)?, "epoch")?,
            expires_in_ms: to_u64(row.try_get(3)?, "expires_at")?,
        }))
    }
}
