//! Cooperative close (spec/HTTP.md §5.4).

use super::*;

impl Gateway {
    /// Cosigns a cooperative close (spec/HTTP.md §5.4). Under the channel's lock: the
    /// request must be at the log's durable final state (the provider never agrees to less
    /// than it served), signed over the EIP-712 Close struct by the channel's onchain signer,
    /// for a channel that pays this gateway's payee in its token. The channel is then marked
    /// closing durably, before the answer, so it records nothing more, also after a restart.
    /// A repeat of the same close gets the stored signature back.
    pub async fn close(
        &self,
        channel: &ChannelId,
        req: &CloseRequest,
    ) -> Result<CloseSigned, GatewayError> {
        let i = &self.inner;
        let payee_key = i.payee_key.as_ref().ok_or_else(|| {
            GatewayError::new(
                Reason::CloseUnavailable,
                "this gateway holds no payee key ([settlement] is not configured); exit with a withdrawal",
            )
        })?;
        // A channel nobody bound a session to may still close (at size 0, all refunded): its
        // Close signature is checked before it gets a slot in memory.
        let bound = self.inner.channels.existing(channel).is_some()
            || self.stored_session(channel).await?.is_some();
        if !bound {
            self.check_close_signature(channel, req).await?;
        }
        let mut guard = self.lock_slot(channel).await?;
        let generation = loaded(&mut guard)?.generation;
        let store = self.inner.store.for_generation(channel, generation)?;
        let st = loaded(&mut guard)?;
        st.sync_durable(&store).await?;
        // Promised records may be missing from the durable log until the client restores
        // them (spec/HTTP.md §5.6): no close below them.
        if st.restore_required {
            return Err(super::restore::restore_required(st));
        }
        // Never agree below what was served: nothing may be in flight or on its way to the
        // disk (spec/HTTP.md §5.4).
        if st.in_flight > 0 || !st.pending.is_empty() {
            return Err(state_mismatch(
                st,
                "requests of this channel are in flight; close once they are answered",
            ));
        }
        let head = st.durable;
        if req.size != head.size || req.root != head.root || req.cumulative.0 != head.cumulative {
            return Err(state_mismatch(
                st,
                "a close must be at the log's final state: its size, root and cumulative",
            ));
        }
        // The cached funding read serves the checks a stranger can trigger; the chain is read
        // afresh only for a correctly signed first close.
        let funding = i.funding.get(channel).await?;
        if funding.payee != i.payee || funding.token != i.token {
            return Err(GatewayError::new(
                Reason::UnknownChannel,
                "this channel pays another payee or token",
            ));
        }
        let cp = Checkpoint {
            channel_id: *channel,
            size: head.size,
            root: head.root,
            cumulative: head.cumulative,
        };
        let domain = tally_chain::eip712::domain(i.settings.chain.chain_id, i.contract);
        let signer_sig = tally_chain::Eip712Sig::from_parts(req.eip712.parts());
        tally_chain::eip712::verify_close(&signer_sig, &domain, &cp, funding.signer).map_err(
            |e| GatewayError::new(Reason::InvalidSignature, format!("EIP-712 close: {e}")),
        )?;
        let (signer_sig, payee_sig, fresh) = match st.closing {
            Some(c) if (c.size, c.root, c.cumulative) == (cp.size, cp.root, cp.cumulative) => {
                (c.signer_sig, c.payee_sig, None)
            }
            Some(c) => {
                return Err(GatewayError::internal(format!(
                    "the log moved past the close agreed at size {}",
                    c.size
                )))
            }
            None => {
                let funding = i.funding.refresh(channel).await?;
                if funding.withdraw == WithdrawState::Closed {
                    return Err(GatewayError::new(
                        Reason::ChannelClosed,
                        "the channel is already closed onchain",
                    ));
                }
                // Never below the claimed state (the dispute's floor too, spec/HTTP.md §7).
                // The newest stored checkpoint may be higher (a credit after it): if the
                // worker claims it, the close (a larger size) still applies until that
                // claim's window passes and it is paid out, far beyond the close's timeout.
                if cp.size < funding.claimed_size || cp.cumulative < funding.claimed {
                    return Err(GatewayError::new(
                        Reason::CloseUnavailable,
                        format!(
                            "the contract could refuse this close at size {} and cumulative {}: {} is claimed at size {}; exit with a withdrawal",
                            cp.size, cp.cumulative, funding.claimed, funding.claimed_size
                        ),
                    ));
                }
                let payee_sig = tally_chain::eip712::sign_close(payee_key, &domain, &cp)
                    .map_err(|e| GatewayError::internal(format!("signing the close: {e}")))?;
                let closing = Closing {
                    size: cp.size,
                    root: cp.root,
                    cumulative: cp.cumulative,
                    signer_sig,
                    payee_sig,
                };
                (signer_sig, payee_sig, Some(closing))
            }
        };
        if let Some(closing) = fresh {
            // The write runs in its own task, which owns the channel's lock: even if this
            // request is dropped meanwhile, the in-memory state changes only once the mark
            // is durable, and nothing is admitted in between.
            let gw = self.clone();
            let id = *channel;
            tokio::spawn(async move {
                let mut guard = guard;
                let written = gw.side().mark_closing(id, closing, generation).await;
                match written {
                    Ok(()) => {
                        if let Some(st) = guard.as_mut() {
                            st.closing = Some(closing);
                        }
                        Ok(())
                    }
                    // Unknown whether the mark landed: forget the state, so the next use
                    // reloads it (and the mark, if it is there) from the database.
                    Err(e) => {
                        *guard = None;
                        Err(e.into_gateway("storing the close"))
                    }
                }
            })
            .await
            .map_err(|e| GatewayError::internal(format!("close writer task: {e}")))??;
        }
        Ok(CloseSigned {
            size: cp.size,
            root: cp.root,
            cumulative: Amount(cp.cumulative),
            signer_eip712: WireEip712Sig::from_parts(signer_sig.parts()),
            payee_eip712: WireEip712Sig::from_parts(payee_sig.parts()),
        })
    }

    /// The request's Close signature, by the channel's onchain signer, over the state it
    /// names (which the caller still compares with the log's).
    async fn check_close_signature(
        &self,
        channel: &ChannelId,
        req: &CloseRequest,
    ) -> Result<(), GatewayError> {
        let i = &self.inner;
        let funding = i.funding.get(channel).await?;
        let cp = Checkpoint {
            channel_id: *channel,
            size: req.size,
            root: req.root,
            cumulative: req.cumulative.0,
        };
        let domain = tally_chain::eip712::domain(i.settings.chain.chain_id, i.contract);
        tally_chain::eip712::verify_close(
            &tally_chain::Eip712Sig::from_parts(req.eip712.parts()),
            &domain,
            &cp,
            funding.signer,
        )
        .map_err(|e| GatewayError::new(Reason::InvalidSignature, format!("EIP-712 close: {e}")))
    }
}
