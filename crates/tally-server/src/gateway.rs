//! The metering core shared by the tower layer, the reverse proxy and the dispute endpoint:
//! admit a paid request (spec/HTTP.md §9, DESIGN.md §3 steps 1–2), then record its outcome
//! durably and sign the receipt (steps 4–5); and, with the payee key, cosign a cooperative
//! close at the log's final state, after which the channel records nothing more.
//!
//! A channel's lock is held for admission and for the append, never across the upstream
//! call (DESIGN.md §7): an [`Admission`] holds a reservation of its `max_amount` and its
//! lane, so up to `max_lanes` requests of one channel are served at once; the log store's
//! group commit batches the appends of all channels.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use bytes::Bytes;
use http::HeaderValue;
use tally_chain::funding::WithdrawState;
use tally_chain::{ChainCheckpoint, ChainError};
use tally_core::encoding::Canonical;
use tally_core::record::apply_amount;
use tally_core::request::request_hash;
use tally_core::{
    Authorization, ChannelId, Checkpoint, Hash, Outcome, PublicKey, Receipt, Record, SecretKey,
    SignedCheckpoint,
};
use tally_http::api::{CloseRequest, CloseSigned};
use tally_http::headers::{
    decode_header, network, CHECKPOINT, PAYMENT_SIGNATURE, SCHEME, X402_VERSION,
};
use tally_http::payment::{Requirement, Resource, WireEip712Sig};
use tally_http::terms::{CheckpointPolicy, TERMS_FORMAT};
use tally_http::{
    Amount, PaymentPayload, PaymentRequired, PaymentResponse, Price, Reason, RoutePrice,
    SessionBinding, Terms, WireCheckpoint, WireError, WireRecord,
};
use tally_log::LogStore;
use tokio::sync::OwnedMutexGuard;

use crate::backend::{Backend, Log, Side, StoreSlot};
use crate::bindings::{Bindings, Closing};
use crate::channel::{self, CachedResponse, ChannelState, Channels};
use crate::durability::Durability;
use crate::errors::{GatewayError, StartError};
use crate::funding::FundingCache;
use crate::metrics::Metrics;

pub(crate) use admission::release_reservation;
pub use admission::{Admission, Admitted, Recorded, RequestView};
pub use admit::Purpose;
pub use record::Answer;
pub use settings::Settings;

/// A channel's lock with its state (`None` until loaded from the log).
pub(crate) type ChannelGuard = OwnedMutexGuard<Option<ChannelState>>;

/// The state under a channel's lock, which [`Gateway::lock_slot`] always loads: the one
/// place that turns a missing state into an error.
pub(crate) fn loaded(guard: &mut ChannelGuard) -> Result<&mut ChannelState, GatewayError> {
    guard
        .as_mut()
        .ok_or_else(|| GatewayError::internal("channel state missing under its lock"))
}

mod admission;
mod admit;
mod chain_source;
mod checkpoint;
mod close;
mod credit;
mod open;
mod receipts;
mod record;
mod restore;
mod session;
mod settings;

pub(crate) struct Inner {
    /// `eip155:<chain id>`, rendered once.
    pub(crate) network: String,
    pub(crate) key: SecretKey,
    pub(crate) public: PublicKey,
    pub(crate) terms: Terms,
    pub(crate) terms_bytes: Bytes,
    pub(crate) terms_hash: Hash,
    pub(crate) contract: Address,
    pub(crate) payee: Address,
    pub(crate) token: Address,
    pub(crate) settings: Settings,
    pub(crate) store: crate::backend::Backend,
    pub(crate) side: crate::backend::Side,
    pub(crate) channels: Channels,
    pub(crate) funding: FundingCache,
    pub(crate) metrics: Metrics,
    /// One records page is signed at a time (spec/HTTP.md §5.1).
    pub(crate) page_renders: tokio::sync::Semaphore,
    /// The payee's wallet key (`[settlement]`): signs cooperative closes. `None` means the
    /// close endpoint answers `close_unavailable`.
    pub(crate) payee_key: Option<PrivateKeySigner>,
    /// The channels this run (this process, this generation of the log store) marked as
    /// promising (spec/HTTP.md §5.6); emptied when the store is reopened.
    pub(crate) promising: std::sync::Mutex<std::collections::HashMap<ChannelId, u64>>,
    /// Receipts promised and not yet durable.
    pub(crate) promises: crate::durability::Promises,
    /// What the provider console shows of the settlement worker (spec/HTTP.md §11.3).
    pub(crate) settlement: crate::console::SettlementView,
    /// Failed console logins (spec/HTTP.md §11.2).
    pub(crate) console_logins: crate::console::auth::LoginLimiter,
    /// The gasless-deposit relay (`[relay]`, spec/HTTP.md §12); unset means its endpoints
    /// answer `not_found`.
    pub(crate) relay: std::sync::OnceLock<Arc<crate::relay::Relay>>,
}

/// A metering gateway: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn parse_address(what: &str, text: &str) -> Result<Address, StartError> {
    text.parse()
        .map_err(|e| StartError::Config(format!("{what} {text:?} is not an address: {e}")))
}

fn wire_error(e: WireError) -> GatewayError {
    match e {
        WireError::TooLarge { limit, .. } => GatewayError::new(
            Reason::PayloadTooLarge {
                limit: limit as u64,
            },
            e.to_string(),
        ),
        _ => GatewayError::malformed(e.to_string()),
    }
}

fn state_mismatch(st: &ChannelState, message: impl Into<String>) -> GatewayError {
    GatewayError::new(
        Reason::StateMismatch {
            size: st.durable.size,
            root: st.durable.root,
            cumulative: Amount(st.durable.cumulative),
        },
        message,
    )
}

impl Gateway {
    /// The terms being served.
    pub fn terms(&self) -> &Terms {
        &self.inner.terms
    }

    /// The canonical form of a request's path and the route pricing it there (spec/HTTP.md
    /// §4.1, §4.3): the one lookup the metering layer and the in-flight cap share.
    pub fn route_of(
        &self,
        method: &str,
        raw_path: &str,
    ) -> Result<(String, Option<&RoutePrice>), tally_http::path::PathError> {
        let path = tally_http::path::canonical_path(raw_path)?;
        let route = self.inner.terms.route_for(method, &path);
        Ok((path, route))
    }

    /// Their hash, which authorizations must sign.
    pub fn terms_hash(&self) -> Hash {
        self.inner.terms_hash
    }

    /// The provider's public key.
    pub fn public_key(&self) -> PublicKey {
        self.inner.public
    }

    /// The sled log store of a single-node gateway (read side: proofs and records), for
    /// tools and tests that read it directly. `store_unavailable` while it is being reopened
    /// after a failed write; refused in cluster mode, whose log is in PostgreSQL.
    pub fn store(&self) -> Result<Arc<LogStore>, GatewayError> {
        match self.inner.store.reader()? {
            Log::Sled(s) => Ok(s),
            Log::Pg(..) => Err(GatewayError::internal(
                "cluster mode: the log is in PostgreSQL, not in a sled store",
            )),
        }
    }

    /// The log for reads (either store).
    pub(crate) fn log(&self) -> Result<Log, GatewayError> {
        self.inner.store.reader()
    }

    /// Why the log cannot take writes, if it cannot (for `/healthz`).
    pub fn store_problem(&self) -> Option<String> {
        self.inner.store.problem()
    }

    /// Fails fast with `store_unavailable` while the log cannot take writes, and starts a
    /// recovery attempt ([`store`] module docs).
    pub fn ensure_writable(&self) -> Result<(), GatewayError> {
        let gw = self.clone();
        // The reopened store has a new generation: the set of promising channels of the old
        // one is void from then on (`set_promising`), so its channels restore first.
        self.inner
            .store
            .ensure_writable(move || gw.inner.channels.clear())
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The settlement worker's state as the console shows it: the standalone gateway feeds it
    /// every tick ([`crate::console::SettlementView::observe`]).
    pub fn settlement_view(&self) -> &crate::console::SettlementView {
        &self.inner.settlement
    }

    /// Serves the gasless-deposit relay from now on (spec/HTTP.md §12). A gateway has at most
    /// one: a second call is refused and changes nothing.
    pub fn enable_relay(&self, relay: crate::relay::Relay) -> Result<(), StartError> {
        self.inner
            .relay
            .set(Arc::new(relay))
            .map_err(|_| StartError::Config("the relay is already enabled".into()))
    }

    /// The relay, if one is enabled.
    pub(crate) fn relay(&self) -> Option<&Arc<crate::relay::Relay>> {
        self.inner.relay.get()
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The x402 requirement of a route priced `price` (spec/HTTP.md §3.1): what a 402
    /// advertises and what a payment's `accepted` must match (§3.2).
    pub fn requirement(&self, price: &Price) -> Requirement {
        let i = &self.inner;
        Requirement::tally(&i.settings.chain, i.public, i.terms_hash, price)
    }

    /// The x402 PaymentRequired for a route priced `price` whose responses are of type
    /// `mime_type`, when the route declares one (spec/HTTP.md §3.1).
    pub fn payment_required(
        &self,
        url: &str,
        price: &Price,
        mime_type: Option<String>,
    ) -> PaymentRequired {
        PaymentRequired {
            x402_version: X402_VERSION,
            error: "payment_required".into(),
            resource: Resource {
                url: url.to_string(),
                description: "tally-metered resource".into(),
                mime_type,
            },
            accepts: vec![self.requirement(price)],
        }
    }

    /// The session key bound to `channel`, read from the database.
    pub(crate) async fn stored_session(
        &self,
        channel: &ChannelId,
    ) -> Result<Option<PublicKey>, GatewayError> {
        self.inner
            .side
            .session(channel)
            .await
            .map_err(|e| e.into_gateway("session binding"))
    }

    /// Locks `channel` and loads its state if needed, creating its slot. Only for channels
    /// known to be bound, or being bound after every check passed: the map of slots is what
    /// a stranger must not be able to grow.
    async fn lock_slot(&self, channel: &ChannelId) -> Result<ChannelGuard, GatewayError> {
        let slot = self.inner.channels.slot(channel);
        let mut guard = slot.lock_owned().await;
        let keep = match guard.as_ref() {
            None => false,
            Some(st) if st.stale => false,
            Some(st) => self.still_current(channel, st.generation).await?,
        };
        if !keep {
            let i = &self.inner;
            let (store, generation) = i.store.current(channel).await?;
            // Appends of a state dropped after a failed commit may still be queued: they
            // could commit after the head is read.
            if store.quiesce(channel).await? {
                self.note_promising(*channel, None);
            }
            let promising = self.promising_here(channel, generation);
            *guard =
                Some(ChannelState::load(*channel, &store, generation, &i.side, promising).await?);
        }
        Ok(guard)
    }

    /// Whether a state loaded under `generation` may still be used. A cluster node that lost
    /// its own trust in the channel's shard (late renewals) and got the same epoch back held
    /// the shard throughout, so nobody else wrote: the state stays. A new epoch means another
    /// node may have appended in between: the state is reloaded.
    async fn still_current(
        &self,
        channel: &ChannelId,
        generation: u64,
    ) -> Result<bool, GatewayError> {
        let store = &self.inner.store;
        if store.for_generation(channel, generation).is_ok() {
            return Ok(true);
        }
        Ok(store.current(channel).await?.1 == generation)
    }

    /// Whether this run marked `channel` as promising under `generation` (spec/HTTP.md
    /// §5.6). A mark of an older generation (a reopened sled store; a cluster shard lost and
    /// retaken, so another node may have served the channel in between) does not count: its
    /// promises may be lost, so the channel restores first.
    pub(crate) fn promising_here(&self, channel: &ChannelId, generation: u64) -> bool {
        self.promising_set().get(channel) == Some(&generation)
    }

    /// Notes (`Some`) or drops (`None`) this run's promise mark of `channel`.
    pub(crate) fn note_promising(&self, channel: ChannelId, generation: Option<u64>) {
        let mut set = self.promising_set();
        match generation {
            Some(g) => set.insert(channel, g),
            None => set.remove(&channel),
        };
    }

    fn promising_set(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<ChannelId, u64>> {
        match self.inner.promising.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Locks a channel that has a bound session key; any other id is `unknown_channel`
    /// without a slot being created.
    async fn lock(&self, channel: &ChannelId) -> Result<ChannelGuard, GatewayError> {
        if self.inner.channels.existing(channel).is_none()
            && self.stored_session(channel).await?.is_none()
        {
            return Err(GatewayError::new(
                Reason::UnknownChannel,
                "no session key is bound to this channel",
            ));
        }
        self.lock_slot(channel).await
    }

    /// The provider's signature over a stored record's outcome, recomputed.
    pub fn wire_record(&self, record: &Record) -> WireRecord {
        WireRecord::new(record, self.inner.key.sign(&record.outcome.to_bytes()))
    }

    /// Record `index` of a loaded channel: from memory while pending, else from the log.
    async fn record_of(&self, st: &ChannelState, index: u64) -> Result<Record, GatewayError> {
        match st.pending_record(index) {
            Some(bytes) => Record::from_bytes(bytes)
                .map_err(|e| GatewayError::internal(format!("pending record {index}: {e}"))),
            None => self.stored_record(&st.id, index).await,
        }
    }

    async fn stored_record(&self, channel: &ChannelId, index: u64) -> Result<Record, GatewayError> {
        crate::channel::read_record(&self.log()?, channel, index).await
    }

    /// A snapshot of a channel's state for the state endpoint.
    pub async fn channel_state(
        &self,
        channel: &ChannelId,
    ) -> Result<tally_http::api::ChannelState, GatewayError> {
        let mut guard = self.lock(channel).await?;
        let store = self.log()?;
        // Promised records become durable within `max_delay`: the state read waits for them,
        // so a client never sees a head below the receipts it holds (its mirror would take
        // that for lost records).
        let deadline = Instant::now() + self.promise_wait();
        // In promise mode, every record handed to the log before this read (later ones, on
        // a busy channel, are not waited for); in sync mode no receipt is out before its
        // record is durable, so the durable head is the answer.
        let target = match self.inner.settings.durability {
            Durability::Sync => 0,
            Durability::Promise { .. } => loaded(&mut guard)?.next_index(),
        };
        loop {
            let st = loaded(&mut guard)?;
            st.sync_durable(&store).await?;
            if st.durable.size >= target {
                break;
            }
            if Instant::now() >= deadline {
                // Never a head below receipts already sent: the client would take it for
                // lost records.
                return Err(GatewayError::new(
                    Reason::Overloaded,
                    "promised records are not durable yet; retry shortly",
                ));
            }
            drop(guard);
            tokio::time::sleep(Duration::from_millis(1)).await;
            guard = self.lock(channel).await?;
        }
        let st = loaded(&mut guard)?;
        let last_record = match st.durable.size {
            0 => None,
            n => Some(self.wire_record(&self.stored_record(&st.id, n - 1).await?)),
        };
        Ok(tally_http::api::ChannelState {
            channel_id: st.id,
            session_key: st.session_key,
            request_salt: st.salt,
            size: st.durable.size,
            root: st.durable.root,
            cumulative: Amount(st.durable.cumulative),
            checkpoint_size: st.checkpoint_size,
            checkpoint_cumulative: Amount(st.checkpoint_cumulative),
            last_record,
            restore_required: st.restore_required,
            restore_nonce: st.restore_required.then_some(st.restore_nonce),
        })
    }

    /// How long a read waits for promised records to become durable: the promise's bound
    /// and a second for a loaded machine.
    pub(crate) fn promise_wait(&self) -> Duration {
        match self.inner.settings.durability {
            Durability::Sync => Duration::ZERO,
            Durability::Promise { max_delay, .. } => max_delay + Duration::from_secs(1),
        }
    }

    /// Ends a run cleanly: waits until every promised record is durable, then clears the
    /// promise marks (spec/HTTP.md §5.6), so the next run needs no restore. Call once no
    /// request is served any more. If a promise cannot be kept (the log failed, or it takes
    /// longer than `wait`), the marks stay and the next run restores those channels.
    pub async fn shutdown(&self, wait: Duration) -> Result<(), GatewayError> {
        let deadline = Instant::now() + wait;
        while self.inner.promises.outstanding().0 > 0 {
            if Instant::now() >= deadline {
                return Err(GatewayError::internal(
                    "promised records are still not durable; their channels restore next run",
                ));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if let Some(problem) = self.store_problem() {
            return Err(GatewayError::internal(format!(
                "the log cannot take writes ({problem}); promised channels restore next run"
            )));
        }
        // Only the marks this run holds the promises of: a channel still waiting for its
        // restore keeps its mark for the next run.
        let held: Vec<(ChannelId, u64)> = self
            .promising_set()
            .iter()
            .filter(|(c, g)| self.inner.store.for_generation(c, **g).is_ok())
            .map(|(c, g)| (*c, *g))
            .collect();
        self.inner
            .side
            .clear_promising(held)
            .await
            .map_err(|e| GatewayError::internal(format!("clearing promise marks: {e}")))
    }

    /// The channel's funding read from the chain now (the checks that money depends on).
    pub(crate) async fn funding_fresh(
        &self,
        channel: &ChannelId,
    ) -> Result<tally_chain::ChannelFunding, GatewayError> {
        self.inner.funding.refresh(channel).await
    }

    pub(crate) fn side(&self) -> &Side {
        &self.inner.side
    }
}

fn url_of(req: &RequestView<'_>) -> String {
    if req.query.is_empty() {
        req.path.to_string()
    } else {
        format!("{}?{}", req.path, req.query)
    }
}
