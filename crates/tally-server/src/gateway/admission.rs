//! A paid request's passage through the gateway, as types: the request as it is hashed,
//! the outcome of admission (a fresh request holding a reservation and a lane, or a retry
//! answered from the held response), and what a recorded request sends back
//! (spec/HTTP.md §9, spec/PROTOCOL.md §5.4).

use http::{HeaderMap, HeaderValue};
use tally_core::{Authorization, ChannelId, Hash, PublicKey, Receipt};
use tally_http::Price;

use crate::channel::{self, CachedResponse, ChannelState};

/// The request line and headers of a paid request, as the gateway hashes them
/// (spec/PROTOCOL.md §3.3). The body is not part of it: it is read only after admission.
pub struct RequestView<'a> {
    /// Upper-case method.
    pub method: &'a str,
    /// Path as sent (the signed request hash covers it; pricing uses its canonical form).
    pub path: &'a str,
    /// Raw query without `?`.
    pub query: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
}

/// The result of admitting a paid request.
// One per request, matched at once by the caller: boxing the large variant would only add
// an allocation to every paid request.
#[allow(clippy::large_enum_variant)]
pub enum Admitted {
    /// A new request at its lane's next seq: forward it, then [`Gateway::record`].
    Fresh(Admission),
    /// A retry of a lane's last seq whose response is held: answer with these bytes again,
    /// once the body is checked against `request_hash`.
    Replay {
        /// The held response.
        cached: CachedResponse,
        /// The channel.
        channel: ChannelId,
        /// The index of the record the held response answered.
        index: u64,
        /// The request hash the retry signed.
        request_hash: Hash,
        /// The channel's request salt.
        salt: tally_core::RequestSalt,
    },
}

/// A paid request admitted at its lane's next seq. It holds a reservation of its
/// `max_amount` and keeps its lane busy until [`Gateway::record`] consumes it; dropped
/// unrecorded (a refused body, an upstream failure, a hang-up), it releases both.
pub struct Admission {
    pub(super) slot: channel::Slot,
    pub(super) generation: u64,
    /// The load of the channel state this admission was taken from ([`ChannelState::load`]).
    pub(super) load: u64,
    pub(super) authorization: Authorization,
    pub(super) signature: tally_core::Signature,
    /// `authorization.signed_hash(&signature)`, from the bytes the signature was checked on.
    pub(super) authorization_hash: Hash,
    pub(super) price: Price,
    /// The channel's request salt (spec/PROTOCOL.md §3.3).
    pub(super) salt: tally_core::RequestSalt,
    /// The bound session key.
    pub(super) session_key: PublicKey,
    /// The channel's payer, from its funding (EIP-55), for `PAYMENT-RESPONSE`'s `payer`.
    pub(super) payer: String,
    /// The newest checkpoint's cumulative and the log's cumulative (with every record
    /// handed to the log) when admitted.
    pub(super) checkpoint_cumulative: u128,
    pub(super) tail_cumulative: u128,
    /// Set once `record` took the reservation over.
    pub(super) consumed: bool,
}

impl Admission {
    /// The lane and seq this request is recorded at.
    pub fn lane_seq(&self) -> (u32, u64) {
        (self.authorization.lane, self.authorization.seq)
    }

    /// The channel.
    pub fn channel(&self) -> ChannelId {
        self.authorization.channel_id
    }

    /// The client's authorization.
    pub fn authorization(&self) -> &Authorization {
        &self.authorization
    }

    /// The route's price.
    pub fn price(&self) -> &Price {
        &self.price
    }

    /// The session key bound to the channel.
    pub fn session_key(&self) -> PublicKey {
        self.session_key
    }

    /// `(newest checkpoint cumulative, log cumulative)` when admitted.
    pub fn cumulatives(&self) -> (u128, u128) {
        (self.checkpoint_cumulative, self.tail_cumulative)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.consumed {
            return;
        }
        let slot = self.slot.clone();
        let (load, auth) = (self.load, self.authorization);
        let release = move |state: &mut Option<ChannelState>| {
            if let Some(st) = state.as_mut().filter(|s| s.load == load) {
                release_reservation(st, &auth);
            }
        };
        // Usually uncontended: release at once; otherwise (or outside a runtime) later.
        if let Ok(mut guard) = slot.try_lock() {
            release(&mut guard);
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let mut guard = slot.lock().await;
                release(&mut guard);
            });
        }
    }
}

/// Returns an admitted request's reservation and frees its lane (spec/PROTOCOL.md §5.4: a
/// request not recorded does not use up its seq).
pub(crate) fn release_reservation(st: &mut ChannelState, auth: &Authorization) {
    st.reserved = st.reserved.saturating_sub(auth.max_amount);
    st.in_flight = st.in_flight.saturating_sub(1);
    if let Some(lane) = st.lanes.get_mut(&auth.lane) {
        if lane.busy.is_some_and(|(seq, _)| seq == auth.seq) {
            lane.busy = None;
        }
    }
}

/// A durable record and what to send with its response.
pub struct Recorded {
    /// The signed receipt.
    pub receipt: Receipt,
    /// The `PAYMENT-RESPONSE` header value.
    pub payment_response: HeaderValue,
    /// A checkpoint the gateway asks for (log size), if one is due.
    pub checkpoint_request: Option<u64>,
}
