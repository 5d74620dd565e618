//! Shard leases (spec/CLUSTER.md §3). Times are the database's clock, never the node's.

use crate::error::{to_i64, to_u64};
use tokio_postgres::Transaction;

use crate::{PgError, PgStore};

/// A node's claim on a shard, valid only as long as the database's lease row says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard leased.
    pub shard: u32,
    /// The owner's node id (unique per process start, CLUSTER.md §3).
    pub node: String,
    /// The epoch: bumped on every takeover, named by every fenced commit.
    pub epoch: u64,
    /// When the lease expires, in the database's clock (Unix milliseconds). Informational:
    /// renew well before it; the database, not this value, decides.
    pub expires_at_ms: u64,
    /// The length of each renewal.
    pub lease_ms: u64,
}

/// Takes a free or expired lease (epoch + 1) or extends one's own live lease (same epoch),
/// in one statement: racing acquirers serialize on the row lock.
const ACQUIRE: &str = "
INSERT INTO tally_leases AS l (shard, owner, epoch, expires_at)
VALUES ($1, $2, 1, now() + make_interval(secs => $3))
ON CONFLICT (shard) DO UPDATE
   SET epoch = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > now()
                    THEN l.epoch ELSE l.epoch + 1 END,
       owner = EXCLUDED.owner,
       expires_at = EXCLUDED.expires_at
 WHERE l.owner = EXCLUDED.owner OR l.expires_at <= now()
RETURNING epoch, (extract(epoch FROM expires_at) * 1000)::int8";

/// Extends a lease that is still live at the same owner and epoch.
const RENEW: &str = "
UPDATE tally_leases SET expires_at = now() + make_interval(secs => $4)
 WHERE shard = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()
RETURNING (extract(epoch FROM expires_at) * 1000)::int8";

/// Ends a lease now, so the next acquirer need not wait out `lease_ms`.
const RELEASE: &str = "
UPDATE tally_leases SET expires_at = now()
 WHERE shard = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()";

impl PgStore {
    /// Acquires `shard` for `node` for `lease_ms`: a free or expired lease is taken with
    /// epoch + 1; `node`'s own live lease is extended at the same epoch; a live lease of
    /// another node gives `None`.
    pub async fn acquire(
        &self,
        shard: u32,
        node: &str,
        lease_ms: u64,
    ) -> Result<Option<Lease>, PgError> {
        let shard_sql = shard_param(shard)?;
        let secs = seconds(lease_ms);
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(ACQUIRE, &[&shard_sql, &node, &secs])
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(Lease {
            shard,
            node: node.to_string(),
            epoch: to_u64(row.try_get(0)?, "epoch")?,
            expires_at_ms: to_u64(row.try_get(1)?, "expires_at")?,
            lease_ms,
        }))
    }

    /// Extends `lease` by its `lease_ms`. Fails with [`PgError::Fenced`] if the lease expired
    /// (even if no one took it) or another node holds the shard: the node must stop writing
    /// and [`acquire`](Self::acquire) again.
    pub async fn renew(&self, lease: &Lease) -> Result<Lease, PgError> {
        let params = (
            shard_param(lease.shard)?,
            to_i64(lease.epoch, "epoch")?,
            seconds(lease.lease_ms),
        );
        let client = self.client().await?;
        let row = client
            .query_opt(RENEW, &[&params.0, &lease.node, &params.1, &params.2])
            .await?;
        match row {
            Some(row) => Ok(Lease {
                expires_at_ms: to_u64(row.try_get(0)?, "expires_at")?,
                ..lease.clone()
            }),
            None => Err(PgError::Fenced {
                shard: lease.shard,
                epoch: lease.epoch,
            }),
        }
    }

    /// Gives `lease` up at once. Returns whether it was still held.
    pub async fn release(&self, lease: &Lease) -> Result<bool, PgError> {
        let shard = shard_param(lease.shard)?;
        let epoch = to_i64(lease.epoch, "epoch")?;
        let client = self.client().await?;
        let n = client
            .execute(RELEASE, &[&shard, &lease.node, &epoch])
            .await?;
        Ok(n == 1)
    }
}

/// The lease still held at this epoch, locked `FOR SHARE` until the transaction ends: a
/// takeover of the shard waits for the fenced write's commit, and a write that meets a
/// takeover in progress sees the new epoch and is refused (the argument of CLUSTER.md §4).
const LEASE_HELD: &str = "
SELECT 1 FROM tally_leases
 WHERE shard = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()
   FOR SHARE";

/// The fence of every owner's write other than the append's gate (checkpoints, close and
/// credit marks, promise marks; CLUSTER.md §2): run first in the write's transaction, it
/// refuses with [`PgError::Fenced`] unless the database still names `lease`'s owner and
/// epoch, and holds the lease row until the transaction ends.
pub(crate) async fn hold_lease(tx: &Transaction<'_>, lease: &Lease) -> Result<(), PgError> {
    let shard = shard_param(lease.shard)?;
    let epoch = to_i64(lease.epoch, "epoch")?;
    let held = tx
        .query_opt(LEASE_HELD, &[&shard, &lease.node, &epoch])
        .await?;
    if held.is_none() {
        return Err(PgError::Fenced {
            shard: lease.shard,
            epoch: lease.epoch,
        });
    }
    Ok(())
}

/// A shard as the INT column holds it.
pub(crate) fn shard_param(shard: u32) -> Result<i32, PgError> {
    i32::try_from(shard).map_err(|_| PgError::OutOfRange("shard"))
}

/// Milliseconds as the float seconds `make_interval` takes.
fn seconds(ms: u64) -> f64 {
    // Lease lengths are far below 2^53 ms, where f64 is exact.
    ms as f64 / 1000.0
}
