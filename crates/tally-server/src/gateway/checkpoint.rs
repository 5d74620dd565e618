//! Checkpoints (spec/HTTP.md §6).

use super::*;

impl Gateway {
    /// Accepts a client-signed checkpoint through the endpoint (spec/HTTP.md §6).
    pub async fn accept_checkpoint(
        &self,
        channel: &ChannelId,
        wire: &WireCheckpoint,
    ) -> Result<WireCheckpoint, GatewayError> {
        let mut guard = self.lock(channel).await?;
        let st = loaded(&mut guard)?;
        let store = self.inner.store.for_generation(channel, st.generation)?;
        st.sync_durable(&store).await?;
        self.accept_checkpoint_locked(st, wire).await
    }

    pub(super) async fn accept_checkpoint_locked(
        &self,
        st: &mut ChannelState,
        wire: &WireCheckpoint,
    ) -> Result<WireCheckpoint, GatewayError> {
        let i = &self.inner;
        let session = st.session_key.ok_or_else(|| {
            GatewayError::new(
                Reason::UnknownChannel,
                "no session key is bound to this channel",
            )
        })?;
        let mut signed = SignedCheckpoint::from_note(&wire.note, &session, &i.public, false)
            .map_err(|e| match e {
                tally_core::Error::InvalidSignature
                | tally_core::Error::MissingNoteSignature(_) => {
                    GatewayError::new(Reason::InvalidSignature, format!("checkpoint note: {e}"))
                }
                other => GatewayError::malformed(format!("checkpoint note: {other}")),
            })?;
        let cp = signed.checkpoint;
        if cp.channel_id != st.id {
            return Err(GatewayError::malformed(
                "the checkpoint is for another channel",
            ));
        }
        // Checkpoints cover durable records only (spec/PROTOCOL.md §5.5): one over promised
        // records waits (within the promise's bound) until they are durable.
        if cp.size > st.durable.size && cp.size <= st.next_index() {
            self.wait_durable(st, cp.size).await?;
        }
        if cp.size == 0 || cp.size > st.durable.size {
            return Err(GatewayError::malformed(format!(
                "checkpoint size {} is not within the durable log (size {})",
                cp.size, st.durable.size
            )));
        }
        let store = self.inner.store.for_generation(&st.id, st.generation)?;
        // A checkpoint that does not advance is answered, never written again: a public
        // checkpoint replayed by anyone must cost no write or fsync (spec/HTTP.md §6).
        let advances = cp.size > st.checkpoint_size;
        if !advances {
            if let Some(stored) = stored_checkpoint_at(&store, &st.id, cp.size).await? {
                if stored.eip712 == wire.eip712
                    && stored
                        .note
                        .starts_with(&wire.note[..note_body_len(&wire.note)])
                {
                    return Ok(stored);
                }
            }
        }
        let (root, cumulative) = if cp.size == st.durable.size {
            (st.durable.root, st.durable.cumulative)
        } else {
            let s = admit::state_at(&store, &st.id, cp.size).await?;
            (s.root, s.cumulative)
        };
        if root != cp.root || cumulative != cp.cumulative {
            return Err(GatewayError::new(
                Reason::StateMismatch {
                    size: cp.size,
                    root,
                    cumulative: Amount(cumulative),
                },
                "the checkpoint does not match the log",
            ));
        }
        let funding = i.funding.get(&st.id).await?;
        let domain = tally_chain::eip712::domain(i.settings.chain.chain_id, i.contract);
        ChainCheckpoint {
            checkpoint: cp,
            sig: tally_chain::Eip712Sig::from_parts(wire.eip712.parts()),
        }
        .verify(&domain, funding.signer)
        .map_err(|e| {
            GatewayError::new(Reason::InvalidSignature, format!("EIP-712 checkpoint: {e}"))
        })?;
        let now = now_ms() / 1000;
        signed.provider_cosignature = Some((now, cp.cosign_provider(&i.key, now)));
        let out = WireCheckpoint {
            note: signed.to_note(&session, &i.public),
            eip712: wire.eip712.clone(),
        };
        if !advances {
            return Ok(out);
        }
        let bytes = serde_json::to_vec(&out)
            .map_err(|e| GatewayError::internal(format!("checkpoint JSON: {e}")))?;
        store
            .put_checkpoint(&st.id, cp.size, &cp.root, bytes)
            .await?;
        st.checkpoint_size = cp.size;
        st.checkpoint_cumulative = cp.cumulative;
        st.checkpoint_at = Instant::now();
        i.metrics
            .checkpoints
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }
}

/// The length of a note's body (through the blank line that ends it).
fn note_body_len(note: &str) -> usize {
    note.find("\n\n").map_or(note.len(), |i| i + 2)
}

/// The stored, cosigned checkpoint at `size`, if there is one.
async fn stored_checkpoint_at(
    store: &crate::backend::Log,
    channel: &ChannelId,
    size: u64,
) -> Result<Option<WireCheckpoint>, GatewayError> {
    let all = store.checkpoints(channel).await?;
    match all.into_iter().find(|(s, _)| *s == size) {
        None => Ok(None),
        Some((_, bytes)) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| GatewayError::internal(format!("stored checkpoint: {e}"))),
    }
}

impl Gateway {
    /// Waits, holding the channel's lock, until the durable head reaches `size` (at most
    /// [`promise_wait`](Gateway::promise_wait)): the writer commits without the lock.
    async fn wait_durable(&self, st: &mut ChannelState, size: u64) -> Result<(), GatewayError> {
        let store = self.inner.store.for_generation(&st.id, st.generation)?;
        let deadline = Instant::now() + self.promise_wait();
        st.sync_durable(&store).await?;
        while st.durable.size < size && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
            st.sync_durable(&store).await?;
        }
        Ok(())
    }
}
