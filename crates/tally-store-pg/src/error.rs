//! The store's errors.

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// The database or the connection failed. After a failed `append`, whether it committed
    /// is unknown: re-read the head (CLUSTER.md §4, "Durability").
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// The lease is gone: another node took the shard (a higher epoch), or it expired in the
    /// database's clock. Nothing was written; the node must stop writing the shard.
    #[error("fenced: the lease of shard {shard} at epoch {epoch} is no longer held")]
    Fenced {
        /// The shard of the lease.
        shard: u32,
        /// The epoch the caller named.
        epoch: u64,
    },
    /// The lease holds but the channel's head is not where the caller expected: another
    /// commit appended first. Nothing was written.
    #[error("size mismatch: expected head {expected}, database has {actual}")]
    SizeMismatch {
        /// The size the caller expected.
        expected: u64,
        /// The head in the database.
        actual: u64,
    },
    /// The channel belongs to another shard than the lease's.
    #[error("channel is in shard {channel_shard}, the lease is for shard {lease_shard}")]
    WrongShard {
        /// The channel's shard.
        channel_shard: u32,
        /// The lease's shard.
        lease_shard: u32,
    },
    /// The database was set up by a newer version of tally.
    #[error("database schema version {found} is newer than this code's {supported}")]
    SchemaTooNew {
        /// The newest version in `tally_schema`.
        found: i32,
        /// [`crate::SCHEMA_VERSION`].
        supported: i32,
    },
    /// The database was set up with another shard count.
    #[error("database has {database} shards, this node was configured with {configured}")]
    ShardsMismatch {
        /// The count stored in the database.
        database: i64,
        /// The count given to `connect`.
        configured: u16,
    },
    /// A shard's lease changed hands every time this node looked it up; ask again shortly.
    #[error("the lease of shard {shard} is changing hands; retry")]
    Unsettled {
        /// The shard looked up.
        shard: u32,
    },
    /// `shards` was 0.
    #[error("shards must be at least 1")]
    BadShards,
    /// An append of no records: it would prove nothing about the head.
    #[error("an append needs at least one record")]
    EmptyBatch,
    /// The log's own refusal, as tally-log's sled store words it (a size beyond the head,
    /// proof sizes out of order, a checkpoint whose root is not the log's), or a stored hash
    /// found missing (`LogError::Corrupt`).
    #[error(transparent)]
    Log(#[from] tally_log::LogError),
    /// The side state's rules refused a write (another session key bound, another close
    /// agreed), or a stored value does not decode (tally-log's `bindings` rules, shared with
    /// the sled store). Nothing was written.
    #[error(transparent)]
    Rule(#[from] tally_log::RuleError),
    /// A number does not fit the database's column (BIGINT, INT) or back.
    #[error("{0} is out of range")]
    OutOfRange(&'static str),
}

/// Converts a `u64` to a BIGINT.
pub(crate) fn to_i64(value: u64, what: &'static str) -> Result<i64, PgError> {
    i64::try_from(value).map_err(|_| PgError::OutOfRange(what))
}

/// Converts a BIGINT read from the database to a `u64`.
pub(crate) fn to_u64(value: i64, what: &'static str) -> Result<u64, PgError> {
    u64::try_from(value).map_err(|_| PgError::OutOfRange(what))
}
