//! The gateway's side state in PostgreSQL (spec/CLUSTER.md §2, version 3): session bindings,
//! request salts, close and credit marks, promise marks, restore statements and terms, with
//! the sled `Bindings`' semantics. The rules (what is accepted, what is refused) and the
//! stored byte shapes are tally-log's `bindings` module, shared with sled; this file only
//! maps them onto SQL.
//!
//! Two kinds of write (CLUSTER.md §2 says why each is which):
//! - **owner's writes**, fenced like an append (§4): `mark_closing`, `mark_credited`,
//!   `mark_promising`, `clear_promising`. Each runs in one transaction that first holds the
//!   lease row `FOR SHARE` ([`hold_lease`]), so a node that lost its lease is refused by the
//!   database, and no such write of an older epoch commits after a takeover.
//! - **facts any node may write**, unfenced: `bind` and `salt_or_insert` (first-writer-wins:
//!   `INSERT … ON CONFLICT DO NOTHING`, then a read in a new statement, which in READ
//!   COMMITTED sees the row of whichever writer won), `remember_terms` (first-writer-wins,
//!   silently) and `keep_restore` (the client's signed evidence, replaced at one key).
//!
//! Every write is acknowledged after its `COMMIT` (CLUSTER.md §4, "Durability").

use tally_core::{PublicKey, RequestSalt, Signature};
use tally_log::bindings::{
    decode_salt, decode_session, first_writer_wins, restore_value, split_restore, CloseMark,
    CreditMark, RuleError,
};
use tally_log::Hash;

use crate::error::{to_i64, to_u64};
use crate::lease::hold_lease;
use crate::{ChannelId, Lease, PgError, PgStore};

/// A close agreement, stamped with the database's clock (CLUSTER.md §3: times are the
/// database's, never a node's); a second writer's row is left alone.
const INSERT_CLOSING: &str = "
INSERT INTO tally_closing (channel, body, agreed_at, epoch)
VALUES ($1, $2, floor(extract(epoch FROM now()))::int8, $3)
ON CONFLICT (channel) DO NOTHING";

/// A credit mark replaces an earlier one of the same record (the sled store's insert).
const UPSERT_CREDIT: &str = "
INSERT INTO tally_credits (channel, idx, body, epoch) VALUES ($1, $2, $3, $4)
ON CONFLICT (channel, idx) DO UPDATE SET body = EXCLUDED.body, epoch = EXCLUDED.epoch";

/// A restore statement replaces one at the same `(channel, nonce, size)`, as in sled.
const UPSERT_RESTORE: &str = "
INSERT INTO tally_restores (channel, nonce, size, body) VALUES ($1, $2, $3, $4)
ON CONFLICT (channel, nonce, size) DO UPDATE SET body = EXCLUDED.body";

/// A channel id read back from a BYTEA column.
fn channel_from(bytes: &[u8]) -> Result<ChannelId, PgError> {
    <[u8; 32]>::try_from(bytes)
        .map(ChannelId)
        .map_err(|_| RuleError::Corrupt("stored channel id has the wrong length").into())
}

impl PgStore {
    /// Keeps a served terms document under its hash; a kept hash keeps its first document.
    pub async fn remember_terms(&self, hash: &Hash, bytes: &[u8]) -> Result<(), PgError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO tally_terms (hash, body) VALUES ($1, $2)
                 ON CONFLICT (hash) DO NOTHING",
                &[&hash.0.as_slice(), &bytes],
            )
            .await?;
        Ok(())
    }

    /// The terms document kept under `hash`.
    pub async fn terms(&self, hash: &Hash) -> Result<Option<Vec<u8>>, PgError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT body FROM tally_terms WHERE hash = $1",
                &[&hash.0.as_slice()],
            )
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// Reads the first column (BYTEA) of `sql`'s row for `channel` (`sql` is one of this
    /// file's queries, with `$1` the channel).
    async fn by_channel(
        &self,
        sql: &'static str,
        channel: &ChannelId,
    ) -> Result<Option<Vec<u8>>, PgError> {
        let client = self.client().await?;
        let row = client.query_opt(sql, &[&channel.0.as_slice()]).await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    /// The session key bound to `channel`; a stored value that is not a key is an error.
    pub async fn session(&self, channel: &ChannelId) -> Result<Option<PublicKey>, PgError> {
        let sql = "SELECT key FROM tally_sessions WHERE channel = $1";
        match self.by_channel(sql, channel).await? {
            None => Ok(None),
            Some(v) => Ok(Some(decode_session(&v)?)),
        }
    }

    /// Binds `key` to `channel`, first-writer-wins across every node: exactly one of racing
    /// binds of different keys is stored, the others are refused
    /// ([`RuleError::SessionConflict`]); the same key again is accepted. Unfenced: a binding
    /// is signed by the channel's checkpoint signer (HTTP.md §5.2), a fact about the channel
    /// whoever stores it, and the database alone keeps it to one key.
    pub async fn bind(&self, channel: &ChannelId, key: &PublicKey) -> Result<(), PgError> {
        {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO tally_sessions (channel, key) VALUES ($1, $2)
                     ON CONFLICT (channel) DO NOTHING",
                    &[&channel.0.as_slice(), &key.to_bytes().as_slice()],
                )
                .await?;
        }
        let stored = self
            .session(channel)
            .await?
            .ok_or(RuleError::Corrupt("session binding vanished"))?;
        Ok(first_writer_wins(&stored, key, RuleError::SessionConflict)?)
    }

    /// The channel's request salt (PROTOCOL.md §3.3).
    pub async fn salt(&self, channel: &ChannelId) -> Result<Option<RequestSalt>, PgError> {
        let sql = "SELECT salt FROM tally_salts WHERE channel = $1";
        match self.by_channel(sql, channel).await? {
            None => Ok(None),
            Some(v) => Ok(Some(decode_salt(&v)?)),
        }
    }

    /// The channel's salt, storing `fresh` if none is stored: racing callers on any nodes all
    /// get the one stored. Unfenced, like the binding it goes with.
    pub async fn salt_or_insert(
        &self,
        channel: &ChannelId,
        fresh: RequestSalt,
    ) -> Result<RequestSalt, PgError> {
        {
            let client = self.client().await?;
            client
                .execute(
                    "INSERT INTO tally_salts (channel, salt) VALUES ($1, $2)
                     ON CONFLICT (channel) DO NOTHING",
                    &[&channel.0.as_slice(), &fresh.0.as_slice()],
                )
                .await?;
        }
        Ok(self
            .salt(channel)
            .await?
            .ok_or(RuleError::Corrupt("request salt missing after storing it"))?)
    }

    /// The close agreement stored for `channel`.
    pub async fn closing(&self, channel: &ChannelId) -> Result<Option<CloseMark>, PgError> {
        let sql = "SELECT body FROM tally_closing WHERE channel = $1";
        match self.by_channel(sql, channel).await? {
            None => Ok(None),
            Some(v) => Ok(Some(CloseMark::from_bytes(&v)?)),
        }
    }

    /// Marks `channel` closing at `close`, fenced by `lease`: the close is agreed at the
    /// owner's head, and once stored the channel records nothing more (HTTP.md §5.4), so a
    /// stale node must not close a channel the new owner keeps appending to. First-writer-
    /// wins: a repeat of the stored agreement is accepted (its time kept), another is
    /// [`RuleError::ClosingConflict`].
    pub async fn mark_closing(
        &self,
        lease: &Lease,
        channel: &ChannelId,
        close: &CloseMark,
    ) -> Result<(), PgError> {
        self.check_shard(lease, channel)?;
        let epoch = to_i64(lease.epoch, "epoch")?;
        let body = close.to_bytes();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        hold_lease(&tx, lease).await?;
        let ch = channel.0.as_slice();
        let inserted = tx
            .execute(INSERT_CLOSING, &[&ch, &body.as_slice(), &epoch])
            .await?;
        if inserted == 0 {
            let row = tx
                .query_one("SELECT body FROM tally_closing WHERE channel = $1", &[&ch])
                .await?;
            let stored: &[u8] = row.try_get(0)?;
            first_writer_wins(
                &CloseMark::from_bytes(stored)?,
                close,
                RuleError::ClosingConflict,
            )?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every stored close with when it was first agreed (unix seconds, the database's
    /// clock), ordered by channel id: what the settlement worker submits (CHAIN.md §9).
    pub async fn closings(&self) -> Result<Vec<(ChannelId, CloseMark, Option<u64>)>, PgError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT channel, body, agreed_at FROM tally_closing ORDER BY channel",
                &[],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let id = channel_from(row.try_get(0)?)?;
            let close = CloseMark::from_bytes(row.try_get(1)?)?;
            let at = to_u64(row.try_get(2)?, "agreed_at")?;
            out.push((id, close, Some(at)));
        }
        Ok(out)
    }

    /// The credit mark of record `index` of `channel`.
    pub async fn credit_for(
        &self,
        channel: &ChannelId,
        index: u64,
    ) -> Result<Option<CreditMark>, PgError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT body FROM tally_credits WHERE channel = $1 AND idx = $2",
                &[&channel.0.as_slice(), &to_i64(index, "index")?],
            )
            .await?;
        match row {
            None => Ok(None),
            Some(r) => Ok(Some(CreditMark::from_bytes(r.try_get(0)?)?)),
        }
    }

    /// Marks record `index` credited by `mark`, fenced by `lease`: the mark names the index
    /// the owner is about to append the credit at (HTTP.md §7), and a stale node's mark,
    /// whose record it cannot append, would read as "not landed" and let the record be
    /// credited twice. Replaces an earlier mark of the record, as in sled.
    pub async fn mark_credited(
        &self,
        lease: &Lease,
        channel: &ChannelId,
        index: u64,
        mark: &CreditMark,
    ) -> Result<(), PgError> {
        self.check_shard(lease, channel)?;
        let params = (to_i64(index, "index")?, to_i64(lease.epoch, "epoch")?);
        let body = mark.to_bytes();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        hold_lease(&tx, lease).await?;
        tx.execute(
            UPSERT_CREDIT,
            &[
                &channel.0.as_slice(),
                &params.0,
                &body.as_slice(),
                &params.1,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Promise marks and restore statements (HTTP.md §5.6, CLUSTER.md §8).
impl PgStore {
    /// Marks `channel` as possibly holding promises not yet durable, fenced by `lease`: the
    /// mark precedes the owner's first promise, so a stale node that cannot mark learns it
    /// before it promises anything.
    pub async fn mark_promising(&self, lease: &Lease, channel: &ChannelId) -> Result<(), PgError> {
        self.check_shard(lease, channel)?;
        let epoch = to_i64(lease.epoch, "epoch")?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        hold_lease(&tx, lease).await?;
        tx.execute(
            "INSERT INTO tally_promises (channel, epoch) VALUES ($1, $2)
             ON CONFLICT (channel) DO NOTHING",
            &[&channel.0.as_slice(), &epoch],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether `channel` carries a promise mark.
    pub async fn is_promising(&self, channel: &ChannelId) -> Result<bool, PgError> {
        let sql = "SELECT ''::bytea FROM tally_promises WHERE channel = $1";
        Ok(self.by_channel(sql, channel).await?.is_some())
    }

    /// Clears the marks of `channels`, fenced by `lease`: clearing says "every promise made
    /// on these channels is durable", which only their current owner can say. Every channel
    /// must be in the lease's shard ([`PgError::WrongShard`] otherwise, nothing cleared).
    pub async fn clear_promising(
        &self,
        lease: &Lease,
        channels: &[ChannelId],
    ) -> Result<(), PgError> {
        for channel in channels {
            self.check_shard(lease, channel)?;
        }
        if channels.is_empty() {
            return Ok(());
        }
        let ids: Vec<&[u8]> = channels.iter().map(|c| c.0.as_slice()).collect();
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        hold_lease(&tx, lease).await?;
        tx.execute(
            "DELETE FROM tally_promises WHERE channel = ANY($1)",
            &[&ids],
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Keeps a client's signed restore statement under `(channel, nonce, size)`. Unfenced:
    /// it is the client's signed word, evidence worth keeping whichever node received it.
    pub async fn keep_restore(
        &self,
        channel: &ChannelId,
        nonce: &Hash,
        size: u64,
        statement: &[u8],
        signature: &Signature,
    ) -> Result<(), PgError> {
        let body = restore_value(statement, signature);
        let client = self.client().await?;
        client
            .execute(
                UPSERT_RESTORE,
                &[
                    &channel.0.as_slice(),
                    &nonce.0.as_slice(),
                    &to_i64(size, "size")?,
                    &body,
                ],
            )
            .await?;
        Ok(())
    }

    /// The restore statements kept for `channel`, ordered by `(nonce, size)` as in sled.
    pub async fn restores(
        &self,
        channel: &ChannelId,
    ) -> Result<Vec<(Vec<u8>, Signature)>, PgError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT body FROM tally_restores WHERE channel = $1 ORDER BY nonce, size",
                &[&channel.0.as_slice()],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            out.push(split_restore(row.try_get(0)?)?);
        }
        Ok(out)
    }
}
