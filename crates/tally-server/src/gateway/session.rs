//! Session binding (spec/HTTP.md §5.2).

use super::*;
use tally_log::bindings::BindingsErrorKind;

impl Gateway {
    /// Binds a session key to a channel (spec/HTTP.md §5.2): the binding must be signed by
    /// the channel's onchain checkpoint signer. Binding the same key again is a no-op. The
    /// answer is the channel's request salt, drawn and stored before the key on a first
    /// binding (spec/PROTOCOL.md §3.3).
    ///
    /// The signer is recovered before the chain is read (a garbled binding costs no read),
    /// and the channel gets a slot in memory only once every check passed. The durable write
    /// and the in-memory update happen in a task that owns the channel's lock, so a client
    /// that hangs up mid-binding cannot leave memory "unbound" over a bound database (which
    /// would let a second key be bound over the first).
    pub async fn bind_session(
        &self,
        channel: &ChannelId,
        binding: &SessionBinding,
    ) -> Result<tally_core::RequestSalt, GatewayError> {
        let i = &self.inner;
        let digest = tally_chain::eip712::session_digest(
            i.settings.chain.chain_id,
            i.contract,
            channel,
            &binding.session_key,
        );
        let signer = tally_chain::Eip712Sig::from_parts(binding.eip712.parts())
            .recover(&digest)
            .map_err(|e| {
                GatewayError::new(Reason::InvalidSignature, format!("session binding: {e}"))
            })?;
        let funding = i.funding.refresh(channel).await?;
        if funding.payee != i.payee || funding.token != i.token {
            return Err(GatewayError::new(
                Reason::UnknownChannel,
                "this channel pays another payee or token",
            ));
        }
        if signer != funding.signer {
            return Err(GatewayError::new(
                Reason::InvalidSignature,
                "the session binding is not signed by the channel's checkpoint signer",
            ));
        }
        let guard = self.lock_slot(channel).await?;
        let gw = self.clone();
        let (id, key) = (*channel, binding.session_key);
        tokio::spawn(async move {
            let mut guard = guard;
            let st = guard
                .as_mut()
                .ok_or_else(|| GatewayError::internal("channel state missing under its lock"))?;
            if st.session_key.is_some_and(|k| k != key) {
                return Err(GatewayError::new(
                    Reason::SessionKeyConflict,
                    "another session key is bound to this channel",
                ));
            }
            let salt = gw.salt_for_binding(&id).await?;
            st.salt = Some(salt);
            match st.session_key {
                Some(_) => Ok(salt),
                None => {
                    gw.side().bind(id, key).await.map_err(|e| match e.kind {
                        // The store's own first-writer-wins line (spec/CLUSTER.md §2).
                        BindingsErrorKind::SessionConflict => GatewayError::new(
                            Reason::SessionKeyConflict,
                            "another session key is bound to this channel",
                        ),
                        _ => e.into_gateway("storing binding"),
                    })?;
                    st.session_key = Some(key);
                    Ok(salt)
                }
            }
        })
        .await
        .map_err(|e| GatewayError::internal(format!("binding task: {e}")))?
    }
}
