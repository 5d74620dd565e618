//! The channel's request salt (spec/PROTOCOL.md §3.3, spec/HTTP.md §5.2): drawn by the
//! gateway when a session key is first bound, stored durably next to the binding, returned
//! on every (re)binding and in the authenticated channel state, and mixed into every request
//! hash of the channel, so request hashes in statements and records resist dictionaries.

use rand::RngCore;
use tally_core::{ChannelId, RequestSalt};
use tally_http::Reason;

use crate::errors::GatewayError;
use crate::gateway::Gateway;

impl Gateway {
    /// The salt of a bound channel, for recomputing its request hashes (admission,
    /// disputes). A channel bound before salts existed has none: it must bind again (the
    /// same key), which draws one, so the client learns it before its next request.
    pub async fn request_salt(&self, channel: &ChannelId) -> Result<RequestSalt, GatewayError> {
        self.side()
            .salt(channel)
            .await
            .map_err(|e| e.into_gateway("request salt"))?
            .ok_or_else(|| {
                GatewayError::new(
                    Reason::UnknownChannel,
                    "this channel has no request salt; bind the session key again",
                )
            })
    }

    /// The stored salt if there is one, else a fresh random one stored durably first.
    pub(crate) async fn salt_for_binding(
        &self,
        channel: &ChannelId,
    ) -> Result<RequestSalt, GatewayError> {
        let mut fresh = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut fresh);
        self.side()
            .salt_or_insert(*channel, RequestSalt(fresh))
            .await
            .map_err(|e| e.into_gateway("storing request salt"))
    }
}
