//! Restoring the provider's log after it restarted in promise mode without committing every
//! promise (spec/HTTP.md §5.6): the client uploads the co-signed records its mirror holds
//! beyond the provider's durable head, in chunks, each under a signed restore statement
//! (spec/PROTOCOL.md §5.7); the last says the client holds nothing further.
//!
//! Receipts held ahead of a gap cannot extend the log: they are dropped, and the final
//! statement disowns them (the provider was not paid for them; the client is not charged).

use tally_core::{LogState, Restore};
use tally_http::api::{RestoreUpload, Restored};
use tally_http::WireRecord;

use super::*;

/// Records per restore chunk: well inside the gateway's 128 KiB endpoint body (about 1 KB of
/// JSON per record).
const CHUNK: u64 = 100;

impl Client {
    /// Brings the provider's log back to the mirror from its durable state (read afresh; the
    /// state a refusal named may be stale).
    pub(super) async fn restore(&self, st: &mut State) -> Result<(), ClientError> {
        // Another of our requests may have restored the channel meanwhile (each request in
        // flight at the crash meets `restore_required`): then there is nothing to do.
        let now: ChannelState = self.get_json(self.channel_url("")).await?;
        if !now.restore_required {
            return Ok(());
        }
        let nonce = now.restore_nonce.ok_or_else(|| {
            ClientError::Protocol("restore_required without a restore nonce".into())
        })?;
        // Receipts of requests signed before this restore are disowned by it, whether they
        // are held ahead of a gap or still on their way: none may enter the mirror after.
        st.restores += 1;
        let base = LogState {
            size: now.size,
            root: now.root,
            cumulative: now.cumulative.0,
        };
        st.mirror.sync().await?;
        if st.mirror.size() < base.size {
            // The provider kept records this client never got receipts for: mirror them
            // first (checked like any resync), then restore from there.
            self.resync(st).await?;
        }
        st.mirror.sync().await?;
        if st.mirror.root_at(base.size)? != base.root
            || st.mirror.cumulative_at(base.size)? != base.cumulative
        {
            let ours = st.mirror.root_at(base.size)?;
            return Err(Self::stop(
                st,
                Misbehavior::Fork {
                    size: base.size,
                    ours,
                    theirs: base.root,
                },
            ));
        }
        // Held receipts beyond a gap: the final statement disowns them.
        st.ahead.clear();
        let end = st.mirror.size();
        let mut from = base;
        loop {
            let to = end.min(from.size + CHUNK);
            let upload = self.restore_chunk(st, nonce, &from, to, to == end)?;
            let back: Restored = self.post_json("/restore", &upload).await?;
            let ours = self.mirror_state(st, to)?;
            if back.size != to {
                return Err(Self::stop(
                    st,
                    Misbehavior::LostRecords {
                        ours: to,
                        theirs: back.size,
                    },
                ));
            }
            if back.root != ours.root || back.cumulative.0 != ours.cumulative {
                return Err(Self::stop(
                    st,
                    Misbehavior::Fork {
                        size: to,
                        ours: ours.root,
                        theirs: back.root,
                    },
                ));
            }
            if to == end {
                return Ok(());
            }
            from = self.mirror_state(st, to)?;
        }
    }

    /// The mirror's records `from.size..to` with their provider signatures, under a
    /// statement signed by the session key.
    fn restore_chunk(
        &self,
        st: &State,
        nonce: tally_core::Hash,
        from: &LogState,
        to: u64,
        complete: bool,
    ) -> Result<RestoreUpload, ClientError> {
        let mut records = Vec::new();
        for index in from.size..to {
            let record = st.mirror.record(index)?;
            let sig = st.mirror.provider_signature(index)?.ok_or_else(|| {
                ClientError::Mirror(format!("record {index} has no provider signature"))
            })?;
            records.push(WireRecord::new(&record, sig));
        }
        let after = self.mirror_state(st, to)?;
        let statement = Restore::new(self.channel, nonce, from, &after, complete);
        Ok(RestoreUpload::new(records, &statement, &self.session_key))
    }

    fn mirror_state(&self, st: &State, size: u64) -> Result<LogState, ClientError> {
        Ok(LogState {
            size,
            root: st.mirror.root_at(size)?,
            cumulative: st.mirror.cumulative_at(size)?,
        })
    }
}
