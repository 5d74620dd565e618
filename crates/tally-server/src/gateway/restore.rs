//! Restoring a channel after an unclean restart in promise mode (spec/HTTP.md §5.6,
//! DESIGN.md §8): the client uploads, in chunks, the co-signed records it holds beyond the
//! durable head, each signed chunk statement saying where the log stands after it; the last
//! chunk (`complete`) says the client holds nothing further, and the channel takes appends
//! again.
//!
//! Every uploaded record must carry both signatures (the session key's authorization and
//! this provider's receipt, so it is a record the provider really promised) and take the
//! exact next place in the log (spec/PROTOCOL.md §5.5, `check_position`). A chunk is checked
//! whole before anything of it is appended: a refusal appends nothing.

use tally_core::{Lanes, LogState, Restore};
use tally_http::api::{RestoreUpload, Restored};
use tally_log::{Blake3Hasher, TreeHasher};

use super::*;

/// The most records one restore chunk may carry; an endpoint body holds about 120 anyway.
pub const MAX_RESTORE_CHUNK: usize = 1024;

fn refused(index: Option<u64>, why: impl Into<String>) -> GatewayError {
    GatewayError::new(Reason::RestoreRefused { index }, why)
}

impl Gateway {
    /// `POST /tally/v1/channels/{id}/restore`.
    pub async fn restore(
        &self,
        channel: &ChannelId,
        upload: &RestoreUpload,
    ) -> Result<Restored, GatewayError> {
        let statement = upload.decode_statement().map_err(wire_error)?;
        if statement.channel_id != *channel {
            return Err(refused(None, "the statement names another channel"));
        }
        if upload.records.len() > MAX_RESTORE_CHUNK {
            return Err(refused(
                None,
                format!("at most {MAX_RESTORE_CHUNK} records per chunk"),
            ));
        }
        // Authenticated before any channel state is touched: a stranger's upload costs a
        // binding read and one verification.
        let key = self
            .stored_session(channel)
            .await?
            .ok_or_else(admit::unbound)?;
        statement
            .verify(&key, &upload.signature)
            .map_err(|_| GatewayError::new(Reason::InvalidSignature, "restore statement"))?;
        let mut guard = self.lock(channel).await?;
        let generation = loaded(&mut guard)?.generation;
        let store = self.inner.store.for_generation(channel, generation)?;
        let st = loaded(&mut guard)?;
        st.sync_durable(&store).await?;
        if !st.restore_required {
            // A repeat of a restore that already took effect (a client's concurrent requests
            // each met `restore_required`) is answered as done; anything else is refused.
            return if statement.after() == st.durable {
                Ok(restored(0, st))
            } else {
                Err(refused(None, "this channel needs no restore"))
            };
        }
        if statement.nonce != st.restore_nonce {
            return Err(refused(
                None,
                "the statement is for another restore; read the channel's restore_nonce",
            ));
        }
        check_base(st, &statement)?;
        let checked = self
            .check_chunk(st, &store, &statement, upload, &key)
            .await?;
        let appended = checked.len() as u64;
        // The client's word is kept before anything it releases is acted on.
        let bytes = statement.to_bytes();
        let sig = upload.signature;
        self.side()
            .keep_restore(*channel, statement.nonce, statement.size, bytes, sig)
            .await
            .map_err(|e| e.into_gateway("keeping the restore statement"))?;
        if !checked.is_empty() {
            let start = st.durable.size;
            // From here the state in memory is stale; if this future is dropped or the append
            // fails, the channel reloads from the log on its next use (and still needs its
            // restore, with a new nonce).
            *guard = None;
            store.append_keyed(*channel, start, checked).await?;
        }
        // Reload from the log (lanes, head, edge); the channel is open again only once the
        // client said it holds nothing further.
        let mut fresh =
            ChannelState::load(*channel, &store, generation, self.side(), false).await?;
        if statement.complete {
            self.note_promising(*channel, Some(generation));
            fresh.promising = true;
            fresh.restore_required = false;
        } else {
            fresh.restore_nonce = statement.nonce;
        }
        let answer = restored(appended, &fresh);
        *guard = Some(fresh);
        tracing::info!(channel = %channel, appended, complete = statement.complete, "restore");
        Ok(answer)
    }

    /// Checks every record of the chunk (both signatures, exact extension of the log, lanes
    /// and acknowledgements) and that they lead to the statement's state; returns them keyed
    /// by lane for the append.
    async fn check_chunk(
        &self,
        st: &ChannelState,
        store: &crate::backend::Log,
        statement: &Restore,
        upload: &RestoreUpload,
        key: &PublicKey,
    ) -> Result<Vec<(u32, Vec<u8>)>, GatewayError> {
        let mut lanes = Lanes::default();
        for (lane, s) in &st.lanes {
            lanes.set(*lane, s.tail);
        }
        let mut frontier = st.frontier.clone();
        let mut head = st.durable;
        let mut states = vec![head];
        let mut out = Vec::with_capacity(upload.records.len());
        for wr in &upload.records {
            let index = head.size;
            let bad = |why: String| refused(Some(index), why);
            let record = wr.decode().map_err(|e| bad(e.to_string()))?;
            if record.authorization.channel_id != st.id {
                return Err(bad("another channel's record".into()));
            }
            record
                .verify(key)
                .map_err(|e| bad(format!("client: {e}")))?;
            record
                .verify_receipt(&self.inner.public, &wr.provider_signature)
                .map_err(|_| bad("not a receipt this provider signed".into()))?;
            let base = st.durable.size;
            // The one state `check_position` asks for is the acknowledged one; below the
            // durable head it is read from the log first.
            let ack = record.authorization.ack_size;
            let durable_ack = match ack < base {
                true => admit::state_at(store, &st.id, ack).await.ok(),
                false => None,
            };
            let state_at = |size: u64| match size.checked_sub(base) {
                Some(k) => usize::try_from(k).ok().and_then(|k| states.get(k)).copied(),
                None => durable_ack.filter(|s| s.size == size),
            };
            let cumulative = tally_core::check_position(&record, head, &lanes, state_at)
                .map_err(|e| bad(e.to_string()))?;
            let a = &record.authorization;
            lanes.advance(a);
            let bytes = record.to_bytes();
            frontier.push(&Blake3Hasher, Blake3Hasher.leaf(&bytes));
            head = LogState {
                size: index + 1,
                root: frontier.root(&Blake3Hasher),
                cumulative,
            };
            states.push(head);
            out.push((a.lane, bytes));
        }
        if head != statement.after() {
            return Err(refused(
                None,
                format!(
                    "the records lead to size {} (root {}, cumulative {}), not the signed state",
                    head.size, head.root, head.cumulative
                ),
            ));
        }
        Ok(out)
    }
}

/// The statement must start at the durable head the gateway gave in `restore_required`.
fn check_base(st: &ChannelState, statement: &Restore) -> Result<(), GatewayError> {
    use subtle::ConstantTimeEq;
    let same_root: bool = statement.base_root.0.ct_eq(&st.durable.root.0).into();
    if statement.base_size != st.durable.size || !same_root {
        return Err(refused(
            None,
            format!(
                "the upload must start at the durable head, size {}",
                st.durable.size
            ),
        ));
    }
    Ok(())
}

fn restored(appended: u64, st: &ChannelState) -> Restored {
    Restored {
        appended,
        size: st.durable.size,
        root: st.durable.root,
        cumulative: Amount(st.durable.cumulative),
    }
}

/// `restore_required`, with the durable state the client uploads from.
pub(super) fn restore_required(st: &ChannelState) -> GatewayError {
    GatewayError::new(
        Reason::RestoreRequired {
            size: st.durable.size,
            root: st.durable.root,
            cumulative: Amount(st.durable.cumulative),
            nonce: st.restore_nonce,
        },
        "the gateway restarted without committing every promised record; upload the records \
         held beyond the durable head (POST .../restore)",
    )
}
