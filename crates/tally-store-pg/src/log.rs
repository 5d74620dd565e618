//! The fenced group commit and the reads of records (spec/CLUSTER.md §4, §5).

use std::collections::BTreeMap;
use std::ops::Range;

use tokio_postgres::types::ToSql;
use tokio_postgres::Transaction;

use crate::error::{to_i64, to_u64};
use crate::lease::shard_param;
use crate::merkle;
use crate::{shard_of, ChannelId, Lease, PgError, PgStore};

/// A channel's durable head in the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Number of committed records.
    pub size: u64,
    /// The lease epoch of the commit that last moved the head.
    pub epoch: u64,
}

/// The gate of every commit (CLUSTER.md §4): the head moves only from the expected size and
/// only while the lease row names this owner and epoch, locked `FOR SHARE` so a takeover and
/// this commit serialize.
const ADVANCE_HEAD: &str = "
UPDATE tally_heads SET size = $2, epoch = $3
 WHERE channel = $1 AND size = $4
   AND EXISTS (SELECT 1 FROM tally_leases
                WHERE shard = $5 AND owner = $6 AND epoch = $3 AND expires_at > now()
                FOR SHARE)
RETURNING size";

/// Why the gate refused, read in the same transaction.
const DIAGNOSE: &str = "
SELECT (SELECT size FROM tally_heads WHERE channel = $1),
       EXISTS (SELECT 1 FROM tally_leases
                WHERE shard = $2 AND owner = $3 AND epoch = $4 AND expires_at > now())";

const INSERT_RECORDS: &str = "
INSERT INTO tally_records (channel, idx, epoch, body)
SELECT $1, $2 + t.ord - 1, $3, t.body
  FROM unnest($4::bytea[]) WITH ORDINALITY AS t(body, ord)";

const UPSERT_KEYED: &str = "
INSERT INTO tally_keyed (channel, key, idx)
SELECT $1, t.key, t.idx FROM unnest($2::int4[], $3::int8[]) AS t(key, idx)
ON CONFLICT (channel, key) DO UPDATE SET idx = EXCLUDED.idx";

impl PgStore {
    /// Appends `records` to `channel` at `expected_size..` as one group commit, fenced by
    /// `lease` (CLUSTER.md §4). Returns the indices written, once committed. Fails with
    /// [`PgError::Fenced`] if the lease is no longer held in the database, and with
    /// [`PgError::SizeMismatch`] if the head is not at `expected_size`; nothing is written
    /// then.
    pub async fn append(
        &self,
        lease: &Lease,
        channel: &ChannelId,
        expected_size: u64,
        records: &[Vec<u8>],
    ) -> Result<Range<u64>, PgError> {
        let bodies: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        self.commit(lease, channel, expected_size, &bodies, &[])
            .await
    }

    /// [`append`](Self::append), also noting each record as the newest under its key (its
    /// lane) in the same transaction, as tally-log's `append_keyed` does (DESIGN-DECISIONS.md,
    /// "Lanes"); [`keyed`](Self::keyed) then finds each lane's newest record without a scan.
    pub async fn append_keyed(
        &self,
        lease: &Lease,
        channel: &ChannelId,
        expected_size: u64,
        records: &[(u32, Vec<u8>)],
    ) -> Result<Range<u64>, PgError> {
        let bodies: Vec<&[u8]> = records.iter().map(|(_, r)| r.as_slice()).collect();
        let keys: Vec<u32> = records.iter().map(|(k, _)| *k).collect();
        self.commit(lease, channel, expected_size, &bodies, &keys)
            .await
    }

    /// One fenced transaction: create the head at 0 if new, pass the gate, insert the
    /// records, their Merkle hashes and the keys, commit. `keys` is empty or one per body.
    async fn commit(
        &self,
        lease: &Lease,
        channel: &ChannelId,
        expected: u64,
        bodies: &[&[u8]],
        keys: &[u32],
    ) -> Result<Range<u64>, PgError> {
        if bodies.is_empty() {
            return Err(PgError::EmptyBatch);
        }
        self.check_shard(lease, channel)?;
        let count = u64::try_from(bodies.len()).map_err(|_| PgError::OutOfRange("batch"))?;
        let new_size = expected
            .checked_add(count)
            .ok_or(PgError::OutOfRange("size"))?;
        let p = CommitParams {
            shard: shard_param(lease.shard)?,
            epoch: to_i64(lease.epoch, "epoch")?,
            expected: to_i64(expected, "size")?,
            new_size: to_i64(new_size, "size")?,
        };
        let keyed = newest_per_key(keys, expected)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let ch = channel.0.as_slice();
        tx.execute(
            "INSERT INTO tally_heads (channel, shard, size, epoch) VALUES ($1, $2, 0, 0)
             ON CONFLICT (channel) DO NOTHING",
            &[&ch, &p.shard],
        )
        .await?;
        let gate = [
            &ch as &(dyn ToSql + Sync),
            &p.new_size,
            &p.epoch,
            &p.expected,
            &p.shard,
            &lease.node,
        ];
        if tx.query_opt(ADVANCE_HEAD, &gate).await?.is_none() {
            return Err(refusal(&tx, lease, channel, &p, expected).await?);
        }
        // The gate holds the head row: the frontier at `expected` cannot move under us.
        let nodes = merkle::grow(&tx, channel, expected, bodies).await?;
        tx.execute(INSERT_RECORDS, &[&ch, &p.expected, &p.epoch, &bodies])
            .await?;
        merkle::insert_nodes(&tx, channel, &nodes).await?;
        if !keyed.0.is_empty() {
            tx.execute(UPSERT_KEYED, &[&ch, &keyed.0, &keyed.1]).await?;
        }
        tx.commit().await?;
        Ok(expected..new_size)
    }

    /// Refuses a write through `lease` to a channel of another shard: its fencing would
    /// check the wrong lease row (CLUSTER.md §3).
    pub(crate) fn check_shard(&self, lease: &Lease, channel: &ChannelId) -> Result<(), PgError> {
        let channel_shard = shard_of(channel, self.shards());
        if channel_shard != lease.shard {
            return Err(PgError::WrongShard {
                channel_shard,
                lease_shard: lease.shard,
            });
        }
        Ok(())
    }

    /// The durable head of `channel`, or `None` if it has no records.
    pub async fn head(&self, channel: &ChannelId) -> Result<Option<Head>, PgError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT size, epoch FROM tally_heads WHERE channel = $1 AND size > 0",
                &[&channel.0.as_slice()],
            )
            .await?;
        match row {
            None => Ok(None),
            Some(row) => Ok(Some(Head {
                size: to_u64(row.try_get(0)?, "size")?,
                epoch: to_u64(row.try_get(1)?, "epoch")?,
            })),
        }
    }

    /// Every channel with at least one record, in id order.
    pub async fn channels(&self) -> Result<Vec<ChannelId>, PgError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT channel FROM tally_heads WHERE size > 0 ORDER BY channel",
                &[],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let bytes: &[u8] = row.try_get(0)?;
                let id = <[u8; 32]>::try_from(bytes).map_err(|_| PgError::OutOfRange("channel"))?;
                Ok(ChannelId(id))
            })
            .collect()
    }

    /// Which epochs wrote `channel`'s records: `(epoch, first index, count)` per epoch, in
    /// order of first index. Since a takeover fences every older epoch (CLUSTER.md §4), the
    /// runs are contiguous and the epochs increase along the log; audits check exactly that.
    pub async fn writers(&self, channel: &ChannelId) -> Result<Vec<(u64, u64, u64)>, PgError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT epoch, min(idx), count(*) FROM tally_records WHERE channel = $1
                  GROUP BY epoch ORDER BY min(idx)",
                &[&channel.0.as_slice()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok((
                    to_u64(row.try_get(0)?, "epoch")?,
                    to_u64(row.try_get(1)?, "index")?,
                    to_u64(row.try_get(2)?, "count")?,
                ))
            })
            .collect()
    }

    /// How many channels have records, and how many records they hold in all (for metrics).
    pub async fn totals(&self) -> Result<(u64, u64), PgError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*), COALESCE(sum(size), 0)::int8 FROM tally_heads WHERE size > 0",
                &[],
            )
            .await?;
        Ok((
            to_u64(row.try_get(0)?, "channels")?,
            to_u64(row.try_get(1)?, "records")?,
        ))
    }

    /// The records of `channel` in `range`, clamped to the committed head, in order.
    pub async fn records(
        &self,
        channel: &ChannelId,
        range: Range<u64>,
    ) -> Result<Vec<Vec<u8>>, PgError> {
        let start = to_i64(range.start, "index")?;
        let end = to_i64(range.end.min(i64::MAX as u64), "index")?;
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT r.body FROM tally_records r JOIN tally_heads h ON h.channel = r.channel
                  WHERE r.channel = $1 AND r.idx >= $2 AND r.idx < LEAST($3, h.size)
                  ORDER BY r.idx",
                &[&channel.0.as_slice(), &start, &end],
            )
            .await?;
        rows.iter()
            .map(|row| row.try_get(0).map_err(PgError::from))
            .collect()
    }

    /// The newest record index under each key of `channel`, in key order.
    pub async fn keyed(&self, channel: &ChannelId) -> Result<Vec<(u32, u64)>, PgError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT key, idx FROM tally_keyed WHERE channel = $1 ORDER BY key",
                &[&channel.0.as_slice()],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let key: i32 = row.try_get(0)?;
                let key = u32::try_from(key).map_err(|_| PgError::OutOfRange("key"))?;
                Ok((key, to_u64(row.try_get(1)?, "index")?))
            })
            .collect()
    }
}

/// The commit's numbers as the database's columns hold them.
struct CommitParams {
    shard: i32,
    epoch: i64,
    expected: i64,
    new_size: i64,
}

/// Each key's newest index in a batch starting at `start` (a key may repeat in one batch;
/// one upsert may not touch a row twice), as the two arrays `UPSERT_KEYED` takes.
fn newest_per_key(keys: &[u32], start: u64) -> Result<(Vec<i32>, Vec<i64>), PgError> {
    let mut newest = BTreeMap::new();
    for (offset, key) in (0u64..).zip(keys) {
        let key = i32::try_from(*key).map_err(|_| PgError::OutOfRange("key"))?;
        let index = start
            .checked_add(offset)
            .ok_or(PgError::OutOfRange("index"))?;
        newest.insert(key, to_i64(index, "index")?);
    }
    Ok(newest.into_iter().unzip())
}

/// Why the gate refused: the lease first (a fenced node must learn it is fenced), then the
/// head. The transaction is dropped, so rolled back, by the caller's return.
async fn refusal(
    tx: &Transaction<'_>,
    lease: &Lease,
    channel: &ChannelId,
    p: &CommitParams,
    expected: u64,
) -> Result<PgError, PgError> {
    let row = tx
        .query_one(
            DIAGNOSE,
            &[&channel.0.as_slice(), &p.shard, &lease.node, &p.epoch],
        )
        .await?;
    let size: Option<i64> = row.try_get(0)?;
    let holds: bool = row.try_get(1)?;
    if !holds {
        return Ok(PgError::Fenced {
            shard: lease.shard,
            epoch: lease.epoch,
        });
    }
    Ok(PgError::SizeMismatch {
        expected,
        actual: to_u64(size.unwrap_or(0), "size")?,
    })
}
