//! The payee's signature over the state after a credit (spec/HTTP.md §7, CHAIN.md §4.2).

use super::*;
use tally_http::api::CreditState;
use tally_http::headers::{encode_header, CREDIT_STATE};

impl Gateway {
    /// The `TALLY-CREDIT-STATE` header value for the durable credit record at `index`: the
    /// log's state right after it (`size = index + 1`, its root and cumulative) with the
    /// payee's EIP-712 **Checkpoint** signature. With it the client can post the credit
    /// onchain (`claimCosigned`) if the payee ever claims an older, higher state, without
    /// the provider's help (issue 9, finding 2). `None` when this gateway holds no payee key.
    ///
    /// The provider gives up nothing it is owed by signing: the state is its own log's, and
    /// every later client-signed checkpoint (a larger size) still replaces it onchain.
    pub(crate) async fn credit_state(
        &self,
        channel: &ChannelId,
        index: u64,
        cumulative: u128,
    ) -> Result<Option<HeaderValue>, GatewayError> {
        let i = &self.inner;
        let Some(payee_key) = i.payee_key.as_ref() else {
            return Ok(None);
        };
        let size = index
            .checked_add(1)
            .ok_or_else(|| GatewayError::internal("credit index out of range"))?;
        let root = self.log()?.root_at(channel, size).await?;
        let cp = Checkpoint {
            channel_id: *channel,
            size,
            root,
            cumulative,
        };
        let domain = tally_chain::eip712::domain(i.settings.chain.chain_id, i.contract);
        let sig = ChainCheckpoint::sign(payee_key, &domain, cp)
            .map_err(|e| GatewayError::internal(format!("signing the credit state: {e}")))?
            .sig;
        let state = CreditState {
            size,
            root,
            cumulative: tally_http::Amount(cumulative),
            payee_eip712: WireEip712Sig::from_parts(sig.parts()),
        };
        let text = encode_header(CREDIT_STATE, &state)
            .map_err(|e| GatewayError::internal(format!("credit state header: {e}")))?;
        HeaderValue::from_str(&text)
            .map(Some)
            .map_err(|e| GatewayError::internal(format!("credit state header: {e}")))
    }
}
