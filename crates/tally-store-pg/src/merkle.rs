//! The Merkle hashes in PostgreSQL (spec/CLUSTER.md §2, version 2) and the reads built on
//! them: roots and proofs at any size up to the head, with tally-log's sled store's
//! semantics (CLUSTER.md §5).
//!
//! The tree math is tally-log's, never re-written here: [`Frontier`] computes the hashes an
//! append completes, and tally-log's proof generators run over a [`HashReader`]. That reader
//! is synchronous while the database is not, so every read runs its tally-log function twice
//! ([`with_hashes`]): once over a reader that only notes which stored hashes it asks for
//! (their positions follow from the sizes alone, never from hash values), then, after one
//! query fetched exactly those, over a reader that answers them.

use std::cell::RefCell;
use std::collections::HashMap;

use tally_log::{proof, Blake3Hasher, Frontier, Hash, HashReader, LogError};
use tokio_postgres::GenericClient;

use crate::error::{to_i64, to_u64};
use crate::{ChannelId, PgError, PgStore};

/// The stored hashes at the listed `(level, idx)` positions.
const SELECT_NODES: &str = "
SELECT n.level, n.idx, n.hash
  FROM tally_nodes n
  JOIN unnest($2::int2[], $3::int8[]) AS w(level, idx) ON n.level = w.level AND n.idx = w.idx
 WHERE n.channel = $1";

/// New stored hashes; the primary key refuses a second hash at one position.
const INSERT_NODES: &str = "
INSERT INTO tally_nodes (channel, level, idx, hash)
SELECT $1, t.level, t.idx, t.hash
  FROM unnest($2::int2[], $3::int8[], $4::bytea[]) AS t(level, idx, hash)";

/// A stored hash: `(level, index, hash)`, as [`Frontier::push`] lists them.
pub(crate) type Node = (u8, u64, Hash);

/// Notes the positions asked for; answers a placeholder.
struct Wanted(RefCell<Vec<(u8, u64)>>);

impl HashReader for Wanted {
    fn stored_hash(&self, level: u8, index: u64) -> Result<Hash, LogError> {
        self.0.borrow_mut().push((level, index));
        Ok(Hash::default())
    }
}

/// Answers the hashes fetched from the database.
struct Fetched {
    channel: ChannelId,
    hashes: HashMap<(u8, u64), Hash>,
}

impl HashReader for Fetched {
    fn stored_hash(&self, level: u8, index: u64) -> Result<Hash, LogError> {
        self.hashes
            .get(&(level, index))
            .copied()
            .ok_or_else(|| LogError::Corrupt {
                channel: self.channel,
                detail: format!("stored hash ({level}, {index}) is missing"),
            })
    }
}

/// Runs `f` over `channel`'s stored hashes in `db` (a connection or a transaction): first to
/// learn which it reads, then over exactly those, fetched in one query. An error of the first
/// run (sizes out of order, an index beyond the size) is returned without a query.
pub(crate) async fn with_hashes<C, T, F>(db: &C, channel: &ChannelId, f: F) -> Result<T, PgError>
where
    C: GenericClient + Sync,
    F: Fn(&dyn HashReader) -> Result<T, LogError> + Send,
{
    let wanted = {
        let wanted = Wanted(RefCell::default());
        f(&wanted)?;
        wanted.0.into_inner()
    };
    let mut levels = Vec::with_capacity(wanted.len());
    let mut indices = Vec::with_capacity(wanted.len());
    for (level, index) in &wanted {
        levels.push(i16::from(*level));
        indices.push(to_i64(*index, "index")?);
    }
    let mut hashes = HashMap::with_capacity(wanted.len());
    if !wanted.is_empty() {
        let rows = db
            .query(SELECT_NODES, &[&channel.0.as_slice(), &levels, &indices])
            .await?;
        for row in rows {
            let level: i16 = row.try_get(0)?;
            let level = u8::try_from(level).map_err(|_| PgError::OutOfRange("level"))?;
            let index = to_u64(row.try_get(1)?, "index")?;
            let bytes: &[u8] = row.try_get(2)?;
            let hash = <[u8; 32]>::try_from(bytes).map_err(|_| PgError::OutOfRange("hash"))?;
            hashes.insert((level, index), Hash(hash));
        }
    }
    Ok(f(&Fetched {
        channel: *channel,
        hashes,
    })?)
}

/// The stored hashes that appending `bodies` to a tree of `size` completes, from the frontier
/// at `size` read from the database: no node keeps tree state of its own (CLUSTER.md §2).
pub(crate) async fn grow<C: GenericClient + Sync>(
    db: &C,
    channel: &ChannelId,
    size: u64,
    bodies: &[&[u8]],
) -> Result<Vec<Node>, PgError> {
    let mut frontier = with_hashes(db, channel, |r| Frontier::load(r, size)).await?;
    let mut nodes = Vec::with_capacity(bodies.len() * 2);
    for body in bodies {
        nodes.extend(frontier.push_record(&Blake3Hasher, body));
    }
    Ok(nodes)
}

/// Inserts `nodes` for `channel`, in the caller's transaction.
pub(crate) async fn insert_nodes<C: GenericClient + Sync>(
    db: &C,
    channel: &ChannelId,
    nodes: &[Node],
) -> Result<(), PgError> {
    let mut levels = Vec::with_capacity(nodes.len());
    let mut indices = Vec::with_capacity(nodes.len());
    let mut hashes = Vec::with_capacity(nodes.len());
    for (level, index, hash) in nodes {
        levels.push(i16::from(*level));
        indices.push(to_i64(*index, "index")?);
        hashes.push(hash.0.as_slice());
    }
    db.execute(
        INSERT_NODES,
        &[&channel.0.as_slice(), &levels, &indices, &hashes],
    )
    .await?;
    Ok(())
}

/// The committed size of `channel` (0 without a head).
pub(crate) async fn size_of<C: GenericClient + Sync>(
    db: &C,
    channel: &ChannelId,
) -> Result<u64, PgError> {
    let row = db
        .query_opt(
            "SELECT size FROM tally_heads WHERE channel = $1",
            &[&channel.0.as_slice()],
        )
        .await?;
    match row {
        Some(row) => to_u64(row.try_get(0)?, "size"),
        None => Ok(0),
    }
}

/// Refuses a size beyond the committed `head`, as the sled store does.
fn within(size: u64, head: u64) -> Result<(), LogError> {
    if size > head {
        return Err(LogError::OutOfRange {
            index: size,
            size: head,
        });
    }
    Ok(())
}

/// Reads `channel`'s committed size, lets `check` refuse the request against it, then runs
/// `f` over the stored hashes ([`with_hashes`]): the shape of every tree read.
async fn read_tree<C, T, F>(
    db: &C,
    channel: &ChannelId,
    check: impl FnOnce(u64) -> Result<(), LogError> + Send,
    f: F,
) -> Result<T, PgError>
where
    C: GenericClient + Sync,
    F: Fn(&dyn HashReader) -> Result<T, LogError> + Send,
{
    check(size_of(db, channel).await?)?;
    with_hashes(db, channel, f).await
}

/// The root of `channel` at `size`, which must not exceed the committed head.
pub(crate) async fn root_in<C: GenericClient + Sync>(
    db: &C,
    channel: &ChannelId,
    size: u64,
) -> Result<Hash, PgError> {
    read_tree(
        db,
        channel,
        |head| within(size, head),
        |r| Ok(Frontier::load(r, size)?.root(&Blake3Hasher)),
    )
    .await
}

impl PgStore {
    /// The root of `channel`'s log at `size` (any size up to the head), as tally-log's
    /// `LogStore::root_at`: O(log n) stored hashes, one query.
    pub async fn root_at(&self, channel: &ChannelId, size: u64) -> Result<Hash, PgError> {
        let client = self.client().await?;
        root_in(&*client, channel, size).await
    }

    /// The frontier of `channel`'s tree at `size` (the hashes a node extends in memory for
    /// records not yet committed), from `popcount(size)` stored hashes.
    pub async fn frontier(&self, channel: &ChannelId, size: u64) -> Result<Frontier, PgError> {
        let client = self.client().await?;
        with_hashes(&*client, channel, |r| Frontier::load(r, size)).await
    }

    /// The record at `index`, refused at or beyond the head.
    pub async fn record(&self, channel: &ChannelId, index: u64) -> Result<Vec<u8>, PgError> {
        let size = {
            let client = self.client().await?;
            size_of(&*client, channel).await?
        };
        if index >= size {
            return Err(LogError::OutOfRange { index, size }.into());
        }
        let mut found = self.records(channel, index..index + 1).await?;
        found.pop().ok_or_else(|| {
            PgError::from(LogError::Corrupt {
                channel: *channel,
                detail: format!("record {index} is missing below head {size}"),
            })
        })
    }

    /// The inclusion proof of record `index` in the tree of `size` (RFC 9162 §2.1.3), by
    /// tally-log's generator over the stored hashes.
    pub async fn inclusion_proof(
        &self,
        channel: &ChannelId,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, PgError> {
        let client = self.client().await?;
        read_tree(
            &*client,
            channel,
            |head| within(size, head),
            |r| proof::inclusion_proof(&Blake3Hasher, r, index, size),
        )
        .await
    }

    /// The consistency proof between sizes `old` and `new` (RFC 9162 §2.1.4), refused as the
    /// sled store refuses it: `old` of 0, out of order, or `new` beyond the head.
    pub async fn consistency_proof(
        &self,
        channel: &ChannelId,
        old: u64,
        new: u64,
    ) -> Result<Vec<Hash>, PgError> {
        let client = self.client().await?;
        let check = |head| {
            if old == 0 || old > new || new > head {
                return Err(LogError::BadSizes {
                    old,
                    new,
                    size: head,
                });
            }
            Ok(())
        };
        read_tree(&*client, channel, check, |r| {
            proof::consistency_proof(&Blake3Hasher, r, old, new)
        })
        .await
    }
}
