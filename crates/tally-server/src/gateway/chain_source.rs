//! What the settlement worker reads from the gateway (tally-chain's `CheckpointSource`): the
//! newest cosigned checkpoint of every channel, and the closes the payee agreed to.

use super::*;

impl tally_chain::CheckpointSource for Gateway {
    fn latest_checkpoints(
        &self,
    ) -> tally_chain::BoxFuture<'_, Result<Vec<ChainCheckpoint>, ChainError>> {
        Box::pin(async move {
            let source = |e: GatewayError| ChainError::Source(e.message);
            let store = self.log().map_err(source)?;
            let mut out = Vec::new();
            for channel in store.channels().await.map_err(source)? {
                let Some((_, bytes)) = store.latest_checkpoint(&channel).await.map_err(source)?
                else {
                    continue;
                };
                let wire: WireCheckpoint = serde_json::from_slice(&bytes)
                    .map_err(|e| ChainError::Source(format!("stored checkpoint: {e}")))?;
                let body_end = wire.note.find("\n\n").map_or(0, |i| i + 1);
                let checkpoint = tally_core::Checkpoint::parse_body(&wire.note[..body_end])
                    .map_err(|e| ChainError::Source(format!("stored checkpoint: {e}")))?;
                out.push(ChainCheckpoint {
                    checkpoint,
                    sig: tally_chain::Eip712Sig::from_parts(wire.eip712.parts()),
                });
            }
            Ok(out)
        })
    }

    /// The closes the payee signed (spec/HTTP.md §5.4), with both signatures and when they
    /// were agreed: the worker submits one nobody else did (spec/CHAIN.md §9).
    fn agreed_closes(
        &self,
    ) -> tally_chain::BoxFuture<'_, Result<Vec<tally_chain::AgreedClose>, ChainError>> {
        Box::pin(async move {
            let stored = self
                .side()
                .closings()
                .await
                .map_err(|e| ChainError::Source(e.to_string()))?;
            Ok(stored
                .into_iter()
                .map(|(channel_id, c, agreed_at)| tally_chain::AgreedClose {
                    agreement: tally_chain::CloseAgreement {
                        checkpoint: tally_core::Checkpoint {
                            channel_id,
                            size: c.size,
                            root: c.root,
                            cumulative: c.cumulative,
                        },
                        signer_sig: c.signer_sig,
                        payee_sig: c.payee_sig,
                    },
                    agreed_at,
                })
                .collect())
        })
    }
}
