//! The metering core shared by the tower layer, the reverse proxy and the dispute endpoint:
//! admit a paid request (spec/HTTP.md §9, DESIGN.md §3 steps 1–2), then record its outcome
//! durably and sign the receipt (steps 4–5); and, with the payee key, cosign a cooperative
//! close at the log's final state, after which the channel records nothing more.
//!
//! An [`Admission`] holds the channel's lock from admission to receipt, so the requests of
//! one channel are strictly serialized while other channels proceed; the log store's group
//! commit batches the appends of all channels.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy::primitives::Address;
use alloy::signers::local::PrivateKeySigner;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use tally_chain::funding::WithdrawState;
use tally_chain::{ChainCheckpoint, ChainError};
use tally_core::encoding::Canonical;
use tally_core::record::apply_amount;
use tally_core::request::{body_hash, request_hash_with_body_hash};
use tally_core::{
    Authorization, ChannelId, Checkpoint, Hash, Outcome, PublicKey, Receipt, Record, SecretKey,
    SignedCheckpoint,
};
use tally_http::api::{CloseRequest, CloseSigned};
use tally_http::headers::{
    decode_header, network, CHECKPOINT, PAYMENT_SIGNATURE, SCHEME, WELL_KNOWN_PATH, X402_VERSION,
};
use tally_http::payment::{Requirement, RequirementExtra, Resource, WireEip712Sig};
use tally_http::terms::{ChainTerms, CheckpointPolicy, RefundPolicy, TERMS_FORMAT};
use tally_http::{
    Amount, PaymentPayload, PaymentRequired, PaymentResponse, Price, Reason, RoutePrice,
    SessionBinding, Terms, WireCheckpoint, WireError, WireRecord,
};
use tally_log::{LogStore, StoreConfig};
use tokio::sync::OwnedMutexGuard;

use crate::bindings::{Bindings, Closing};
use crate::channel::{CachedResponse, ChannelState, Channels};
use crate::errors::{GatewayError, StartError};
use crate::funding::FundingCache;
use crate::metrics::Metrics;

/// Everything a gateway is configured with besides its key and funding source.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the log (`log/`) and bindings (`bindings/`) sled databases live.
    pub data_dir: PathBuf,
    /// Chain, contract, token and payee.
    pub chain: ChainTerms,
    /// Most served beyond the last client-signed checkpoint (P5).
    pub credit_limit: u128,
    /// When to ask for checkpoints.
    pub checkpoint: CheckpointPolicy,
    /// Whether upstream 5xx responses are charged.
    pub charge_server_errors: bool,
    /// Automatic refunds on dispute.
    pub refunds: RefundPolicy,
    /// Largest paid request body read.
    pub max_request_bytes: u64,
    /// Largest paid response body returned.
    pub max_response_bytes: u64,
    /// The price list.
    pub routes: Vec<RoutePrice>,
    /// How long a funding read is trusted.
    pub funding_ttl: Duration,
    /// The shortest withdraw delay a channel may have to be served (seconds): the payee's
    /// window to claim after the payer starts an exit (P4). Never below the contract's
    /// `MIN_WITHDRAW_DELAY`.
    pub min_withdraw_delay: u32,
    /// Responses up to this size are kept for byte-identical retries of the last seq.
    pub replay_cache_bytes: usize,
    /// Log store tuning.
    pub store: StoreConfig,
    /// The provider's admin token for channel reads (spec/HTTP.md §5.1); `None`: only the
    /// channel's session key can read.
    pub admin_token: Option<crate::readauth::AdminToken>,
}

impl Settings {
    /// Defaults for everything but chain and routes.
    pub fn new(data_dir: PathBuf, chain: ChainTerms, routes: Vec<RoutePrice>) -> Self {
        Settings {
            data_dir,
            chain,
            credit_limit: 1_000_000,
            checkpoint: CheckpointPolicy {
                every_records: 1000,
                every_seconds: 60,
                every_amount: Amount(100_000),
            },
            charge_server_errors: false,
            refunds: RefundPolicy {
                server_errors: true,
                over_max: true,
            },
            max_request_bytes: 1 << 20,
            max_response_bytes: 8 << 20,
            min_withdraw_delay: tally_chain::funding::MIN_WITHDRAW_DELAY,
            routes,
            funding_ttl: Duration::from_secs(2),
            replay_cache_bytes: 64 << 10,
            store: StoreConfig::default(),
            admin_token: None,
        }
    }
}

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
    pub(crate) store: LogStore,
    pub(crate) bindings: Bindings,
    pub(crate) channels: Channels,
    pub(crate) funding: FundingCache,
    pub(crate) metrics: Metrics,
    /// The payee's wallet key (`[settlement]`): signs cooperative closes. `None` means the
    /// close endpoint answers `close_unavailable`.
    pub(crate) payee_key: Option<PrivateKeySigner>,
}

/// A metering gateway: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<Inner>,
}

/// The request as the gateway hashes it (spec/PROTOCOL.md §3.3).
pub struct RequestView<'a> {
    /// Upper-case method.
    pub method: &'a str,
    /// Path as sent.
    pub path: &'a str,
    /// Raw query without `?`.
    pub query: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// The whole body.
    pub body: &'a [u8],
}

/// The result of admitting a paid request.
// One per request, matched at once by the caller: boxing the large variant would only add
// an allocation to every paid request.
#[allow(clippy::large_enum_variant)]
pub enum Admitted {
    /// A new request at the next seq: forward it, then [`Gateway::record`].
    Fresh(Admission),
    /// A retry of the last seq whose response is held: answer with these bytes again.
    Replay(CachedResponse),
}

/// A paid request admitted at the next seq, holding its channel's lock.
pub struct Admission {
    guard: OwnedMutexGuard<Option<ChannelState>>,
    authorization: Authorization,
    signature: tally_core::Signature,
    /// `authorization.signed_hash(&signature)`, from the bytes the signature was checked on.
    authorization_hash: Hash,
    price: Price,
}

impl Admission {
    /// The seq this request will be recorded at.
    pub fn seq(&self) -> u64 {
        self.authorization.seq
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

    pub(crate) fn state(&self) -> Option<&ChannelState> {
        self.guard.as_ref()
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

fn chain_error(e: ChainError) -> GatewayError {
    match e {
        ChainError::UnknownChannel(id) => GatewayError::new(
            Reason::UnknownChannel,
            format!("channel {id} does not exist onchain"),
        ),
        other => GatewayError::new(
            Reason::ChainUnavailable,
            format!("reading funding: {other}"),
        ),
    }
}

fn state_mismatch(st: &ChannelState, message: &str) -> GatewayError {
    GatewayError::new(
        Reason::StateMismatch {
            size: st.size,
            root: st.root,
            cumulative: Amount(st.cumulative),
        },
        message,
    )
}

impl Gateway {
    /// Opens the log and bindings under `settings.data_dir` and renders the terms. The
    /// gateway holds no payee key: it meters, but cannot cosign cooperative closes.
    pub fn open(
        settings: Settings,
        key: SecretKey,
        funding: Arc<dyn tally_chain::Funding>,
    ) -> Result<Gateway, StartError> {
        Self::open_with_payee(settings, key, funding, None)
    }

    /// [`open`](Self::open), also holding the payee's wallet key so the gateway can cosign
    /// cooperative closes (spec/HTTP.md §5.4). The key must be `pay_to`'s
    /// ([`StartError::PayeeKeyMismatch`]).
    pub fn open_with_payee(
        settings: Settings,
        key: SecretKey,
        funding: Arc<dyn tally_chain::Funding>,
        payee_key: Option<PrivateKeySigner>,
    ) -> Result<Gateway, StartError> {
        let contract = parse_address("contract", &settings.chain.contract)?;
        let payee = parse_address("pay_to", &settings.chain.pay_to)?;
        let token = parse_address("asset", &settings.chain.asset)?;
        if let Some(k) = &payee_key {
            if k.address() != payee {
                return Err(StartError::PayeeKeyMismatch {
                    key: k.address().to_string(),
                    pay_to: settings.chain.pay_to.clone(),
                });
            }
        }
        if settings.max_request_bytes == 0 || settings.max_response_bytes == 0 {
            return Err(StartError::Config("body limits must be positive".into()));
        }
        for r in &settings.routes {
            if let Price::Metered { units_header, .. } = &r.price {
                if http::HeaderName::from_bytes(units_header.as_bytes()).is_err() {
                    return Err(StartError::Config(format!(
                        "units header {units_header:?} is not a header name"
                    )));
                }
            }
        }
        std::fs::create_dir_all(&settings.data_dir)?;
        let store = LogStore::open_with(
            settings.data_dir.join("log"),
            tally_log::Blake3Hasher,
            settings.store.clone(),
        )?;
        let bindings = Bindings::open(&settings.data_dir.join("bindings"))?;
        let public = key.public();
        let terms = Terms {
            format: TERMS_FORMAT.into(),
            provider_key: public,
            chain: settings.chain.clone(),
            credit_limit: Amount(settings.credit_limit),
            checkpoint: settings.checkpoint.clone(),
            charge_server_errors: settings.charge_server_errors,
            refunds: settings.refunds.clone(),
            max_request_bytes: settings.max_request_bytes,
            max_response_bytes: settings.max_response_bytes,
            routes: settings.routes.clone(),
        };
        let terms_bytes = Bytes::from(terms.render());
        let terms_hash = tally_http::terms::terms_hash(&terms_bytes);
        let funding = FundingCache::new(funding, settings.funding_ttl);
        Ok(Gateway {
            inner: Arc::new(Inner {
                network: network(settings.chain.chain_id),
                key,
                public,
                terms,
                terms_bytes,
                terms_hash,
                contract,
                payee,
                token,
                settings,
                store,
                bindings,
                channels: Channels::default(),
                funding,
                metrics: Metrics::default(),
                payee_key,
            }),
        })
    }

    /// The terms being served.
    pub fn terms(&self) -> &Terms {
        &self.inner.terms
    }

    /// Their hash, which authorizations must sign.
    pub fn terms_hash(&self) -> Hash {
        self.inner.terms_hash
    }

    /// The provider's public key.
    pub fn public_key(&self) -> PublicKey {
        self.inner.public
    }

    /// The log store (read side: proofs and records).
    pub fn store(&self) -> &LogStore {
        &self.inner.store
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The x402 requirements for a priced route.
    pub fn payment_required(&self, url: &str, price: &Price) -> PaymentRequired {
        let i = &self.inner;
        PaymentRequired {
            x402_version: X402_VERSION,
            error: "payment_required".into(),
            resource: Resource {
                url: url.to_string(),
                description: "tally-metered resource".into(),
                mime_type: String::new(),
            },
            accepts: vec![Requirement {
                scheme: SCHEME.into(),
                network: network(i.settings.chain.chain_id),
                amount: Amount(price.max_per_call().unwrap_or(0)),
                asset: i.settings.chain.asset.clone(),
                pay_to: i.settings.chain.pay_to.clone(),
                max_timeout_seconds: 60,
                extra: RequirementExtra {
                    contract: i.settings.chain.contract.clone(),
                    provider_key: i.public,
                    terms_hash: i.terms_hash,
                    terms_url: WELL_KNOWN_PATH.into(),
                },
            }],
        }
    }

    /// Locks `channel` and loads its state if this is its first use.
    async fn lock(
        &self,
        channel: &ChannelId,
    ) -> Result<OwnedMutexGuard<Option<ChannelState>>, GatewayError> {
        let slot = self.inner.channels.slot(channel);
        let mut guard = slot.lock_owned().await;
        if guard.is_none() {
            let i = &self.inner;
            *guard = Some(ChannelState::load(*channel, &i.store, &i.bindings, &i.key)?);
        }
        Ok(guard)
    }

    /// The provider's signature over a stored record's outcome, recomputed.
    pub fn wire_record(&self, record: &Record) -> WireRecord {
        WireRecord::new(record, self.inner.key.sign(&record.outcome.to_bytes()))
    }

    fn stored_record(&self, channel: &ChannelId, index: u64) -> Result<Record, GatewayError> {
        let bytes = self
            .inner
            .store
            .record(channel, index)
            .map_err(|e| GatewayError::internal(format!("reading record {index}: {e}")))?;
        Record::from_bytes(&bytes)
            .map_err(|e| GatewayError::internal(format!("stored record {index}: {e}")))
    }

    /// Steps 1–2 of DESIGN.md §3: parse and check the payment, take the channel's lock, check
    /// seq, acknowledged state, terms, price and funding. A refusal records nothing.
    pub async fn admit(
        &self,
        req: &RequestView<'_>,
        price: &Price,
    ) -> Result<Admitted, GatewayError> {
        let i = &self.inner;
        let required = || self.payment_required(&url_of(req), price);
        let header = req.headers.get(PAYMENT_SIGNATURE).ok_or_else(|| {
            GatewayError::new(
                Reason::PaymentRequired,
                "this route is priced; send PAYMENT-SIGNATURE",
            )
            .with_required(required())
        })?;
        let payload: PaymentPayload =
            decode_header("PAYMENT-SIGNATURE", header.as_bytes()).map_err(wire_error)?;
        if payload.accepted.scheme != SCHEME || payload.accepted.network != i.network {
            return Err(GatewayError::malformed(format!(
                "payment is for scheme {:?} on {:?}; this gateway takes {SCHEME:?} on {:?}",
                payload.accepted.scheme,
                payload.accepted.network,
                network(i.settings.chain.chain_id)
            )));
        }
        // The decoder only accepts canonical bytes, so these are `auth.to_bytes()`.
        let (auth, auth_bytes) = payload.authorization_and_bytes().map_err(wire_error)?;
        let sig = payload.payload.signature;
        let checkpoint = match req.headers.get(CHECKPOINT) {
            Some(v) => Some(
                decode_header::<WireCheckpoint>("TALLY-CHECKPOINT", v.as_bytes())
                    .map_err(wire_error)?,
            ),
            None => None,
        };
        let body_hash = body_hash(req.body);

        let mut guard = self.lock(&auth.channel_id).await?;
        let st = guard
            .as_mut()
            .ok_or_else(|| GatewayError::internal("channel state missing under its lock"))?;
        let session = st.session_key.ok_or_else(|| {
            GatewayError::new(
                Reason::UnknownChannel,
                "no session key is bound to this channel; POST it to /tally/v1/channels/{id}/session",
            )
        })?;
        // Strict single verification: a fresh authorization is a non-repudiation decision
        // (spec/PROTOCOL.md §4.2).
        session.verify(&auth_bytes, &sig).map_err(|_| {
            GatewayError::new(
                Reason::InvalidSignature,
                "authorization signature does not verify",
            )
        })?;
        let salt = self.request_salt(&auth.channel_id)?;
        let computed =
            request_hash_with_body_hash(&salt, req.method, req.path, req.query, &body_hash);
        if auth.request_hash != computed {
            return Err(GatewayError::new(
                Reason::RequestMismatch {
                    request_hash: computed,
                },
                "the authorization signs a different request than the one received",
            ));
        }
        if auth.terms_hash != i.terms_hash {
            return Err(GatewayError::new(
                Reason::TermsChanged {
                    terms_hash: i.terms_hash,
                },
                "the terms changed; fetch /.well-known/tally again",
            )
            .with_required(required()));
        }
        if let Some(cp) = &checkpoint {
            self.accept_checkpoint_locked(st, cp).await?;
        }
        if auth.seq < st.size {
            let stored = self.stored_record(&st.id, auth.seq)?;
            if stored.authorization.request_hash == auth.request_hash {
                i.metrics
                    .replays
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(c) = st.cached.as_ref().filter(|c| c.seq == auth.seq) {
                    return Ok(Admitted::Replay(c.clone()));
                }
                return Err(GatewayError::new(
                    Reason::AlreadyRecorded {
                        record: self.wire_record(&stored),
                    },
                    format!(
                        "seq {} is already recorded; its response is no longer held",
                        auth.seq
                    ),
                ));
            }
        }
        if let Some(c) = &st.closing {
            return Err(GatewayError::new(
                Reason::ChannelClosed,
                format!(
                    "the payee agreed to a cooperative close at size {}; nothing more is recorded",
                    c.size
                ),
            )
            .with_required(required()));
        }
        if auth.seq != st.size {
            return Err(GatewayError::new(
                Reason::StaleSeq {
                    expected_seq: st.size,
                    last_record: st.last.as_ref().map(|(r, s)| WireRecord::new(r, *s)),
                },
                format!("seq {} is not the next seq {}", auth.seq, st.size),
            ));
        }
        if auth.prev_root != st.root || auth.prev_cumulative != st.cumulative {
            return Err(state_mismatch(
                st,
                "the acknowledged root or cumulative is not the log's",
            ));
        }
        if let Price::Fixed { amount } = price {
            if auth.max_amount < amount.0 {
                return Err(GatewayError::new(
                    Reason::AmountTooLow { price: *amount },
                    format!(
                        "max_amount {} is below the price {}",
                        auth.max_amount, amount
                    ),
                )
                .with_required(required()));
            }
        }
        // A zero maximum cannot raise what the client owes, so it needs no funds (credits).
        if auth.max_amount > 0 {
            self.check_funds(st, &auth).await.map_err(|e| {
                if e.reason.status() == 402 {
                    e.with_required(required())
                } else {
                    e
                }
            })?;
        }
        Ok(Admitted::Fresh(Admission {
            guard,
            authorization: auth,
            signature: sig,
            authorization_hash: tally_core::hash::blake3_of(&[&auth_bytes, &sig.0]),
            price: price.clone(),
        }))
    }

    async fn check_funds(
        &self,
        st: &ChannelState,
        auth: &Authorization,
    ) -> Result<(), GatewayError> {
        let i = &self.inner;
        let need = auth.prev_cumulative.checked_add(auth.max_amount);
        let mut funding = i.funding.get(&st.id).await.map_err(chain_error)?;
        let short = |f: &tally_chain::ChannelFunding| need.is_none_or(|n| n > f.deposit);
        if short(&funding) {
            funding = i.funding.refresh(&st.id).await.map_err(chain_error)?;
        }
        let min_delay = i
            .settings
            .min_withdraw_delay
            .max(tally_chain::funding::MIN_WITHDRAW_DELAY);
        if let Err(refusal) = funding.acceptable(min_delay, i.payee, i.token) {
            use tally_chain::funding::FundingRefusal as F;
            let reason = match refusal {
                F::Closed | F::Withdrawing { .. } => Reason::ChannelClosed,
                _ => Reason::UnknownChannel,
            };
            return Err(GatewayError::new(reason, refusal.to_string()));
        }
        if short(&funding) {
            return Err(GatewayError::new(
                Reason::InsufficientFunds {
                    remaining: Amount(funding.deposit.saturating_sub(auth.prev_cumulative)),
                },
                "the deposit does not cover this call's maximum",
            ));
        }
        let exposure = need
            .unwrap_or(u128::MAX)
            .saturating_sub(st.checkpoint_cumulative);
        if exposure > i.settings.credit_limit {
            return Err(GatewayError::new(
                Reason::CheckpointRequired { size: st.size },
                format!(
                    "serving would put {exposure} beyond the last checkpoint (limit {})",
                    i.settings.credit_limit
                ),
            ));
        }
        Ok(())
    }

    /// Steps 4–5: build the outcome, append the record, wait until it is durable (P8), sign
    /// the receipt. `charge` is `(units, amount)`; `amount` is already capped by the caller.
    ///
    /// Cancel-safe: if the caller is dropped (a client that hangs up) while the record is
    /// being committed, the channel stays locked until the record is durable and its state is
    /// then reloaded from the log ([`Committing`]), so the next request of the channel is
    /// never admitted at a seq the log already holds.
    pub async fn record(
        &self,
        admission: Admission,
        status: u16,
        content_type: Option<HeaderValue>,
        body: Bytes,
        units: u64,
        amount: i128,
    ) -> Result<Recorded, GatewayError> {
        let i = &self.inner;
        let auth = admission.authorization;
        let cumulative = apply_amount(auth.prev_cumulative, amount).ok_or_else(|| {
            GatewayError::internal("the amount would take the cumulative out of range")
        })?;
        let outcome = Outcome {
            version: tally_core::VERSION,
            channel_id: auth.channel_id,
            seq: auth.seq,
            authorization_hash: admission.authorization_hash,
            units,
            amount,
            cumulative,
            response_hash: tally_core::request::response_hash(status, &body),
            time_ms: now_ms(),
        };
        let record = Record::new(auth, admission.signature, outcome);
        record
            .check_consistency()
            .map_err(|e| GatewayError::internal(format!("built an invalid record: {e}")))?;
        let commit_start = Instant::now();
        let mut committing = Committing {
            ticket: Some(i.store.append(auth.channel_id, vec![record.to_bytes()])),
            guard: Some(admission.guard),
        };
        let range = committing
            .durable()
            .await
            .map_err(|e| GatewayError::internal(format!("log append: {e}")))?;
        let mut guard = committing
            .into_guard()
            .ok_or_else(|| GatewayError::internal("channel lock lost while committing"))?;
        i.metrics.commit.observe(commit_start.elapsed());
        if range.start != auth.seq || range.end != auth.seq + 1 {
            return Err(GatewayError::internal(format!(
                "the log appended at {range:?}, expected seq {}",
                auth.seq
            )));
        }
        let head = i
            .store
            .head(&auth.channel_id)
            .ok_or_else(|| GatewayError::internal("no head after a durable append"))?;
        // Encode the outcome once: it is both the signed message and the receipt's payload.
        let outcome_bytes = outcome.to_bytes();
        let receipt = Receipt {
            outcome,
            signature: i.key.sign(&outcome_bytes),
        };
        let payment_response =
            PaymentResponse::receipt_header(&i.network, &outcome_bytes, &receipt.signature)
                .ok()
                .and_then(|t| HeaderValue::from_maybe_shared(Bytes::from(t)).ok())
                .ok_or_else(|| GatewayError::internal("rendering PAYMENT-RESPONSE"))?;
        let st = guard
            .as_mut()
            .ok_or_else(|| GatewayError::internal("channel state missing under its lock"))?;
        st.size = head.size;
        st.root = head.root;
        st.cumulative = cumulative;
        st.last = Some((record, receipt.signature));
        st.cached = (body.len() <= i.settings.replay_cache_bytes).then(|| CachedResponse {
            seq: auth.seq,
            status,
            content_type,
            body,
            payment_response: payment_response.clone(),
        });
        let checkpoint_request = checkpoint_due(&i.settings.checkpoint, st);
        i.metrics
            .metered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        i.metrics.add_amount(amount);
        Ok(Recorded {
            receipt,
            payment_response,
            checkpoint_request,
        })
    }

    /// Accepts a client-signed checkpoint through the endpoint (spec/HTTP.md §6).
    pub async fn accept_checkpoint(
        &self,
        channel: &ChannelId,
        wire: &WireCheckpoint,
    ) -> Result<WireCheckpoint, GatewayError> {
        let mut guard = self.lock(channel).await?;
        let st = guard
            .as_mut()
            .ok_or_else(|| GatewayError::internal("channel state missing under its lock"))?;
        self.accept_checkpoint_locked(st, wire).await
    }

    async fn accept_checkpoint_locked(
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
        if cp.size == 0 || cp.size > st.size {
            return Err(GatewayError::malformed(format!(
                "checkpoint size {} is not within the log (size {})",
                cp.size, st.size
            )));
        }
        let (root, cumulative) = if cp.size == st.size {
            (st.root, st.cumulative)
        } else {
            let root = i
                .store
                .root_at(&st.id, cp.size)
                .map_err(|e| GatewayError::internal(format!("root at {}: {e}", cp.size)))?;
            (
                root,
                self.stored_record(&st.id, cp.size - 1)?.outcome.cumulative,
            )
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
        let funding = i.funding.get(&st.id).await.map_err(chain_error)?;
        let domain = tally_chain::eip712::domain(i.settings.chain.chain_id, i.contract);
        ChainCheckpoint {
            checkpoint: cp,
            sig: wire.eip712.to_sig(),
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
        let bytes = serde_json::to_vec(&out)
            .map_err(|e| GatewayError::internal(format!("checkpoint JSON: {e}")))?;
        let gw = self.clone();
        let id = st.id;
        tokio::task::spawn_blocking(move || {
            gw.inner
                .store
                .put_checkpoint(&id, cp.size, &cp.root, &bytes)
        })
        .await
        .map_err(|e| GatewayError::internal(format!("checkpoint writer: {e}")))?
        .map_err(|e| GatewayError::internal(format!("storing checkpoint: {e}")))?;
        if cp.size > st.checkpoint_size {
            st.checkpoint_size = cp.size;
            st.checkpoint_cumulative = cp.cumulative;
            st.checkpoint_at = Instant::now();
        }
        i.metrics
            .checkpoints
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }

    /// Binds a session key to a channel (spec/HTTP.md §5.2): the binding must be signed by
    /// the channel's onchain checkpoint signer. Binding the same key again is a no-op. The
    /// answer is the channel's request salt, drawn and stored before the key on a first
    /// binding (spec/PROTOCOL.md §3.3).
    pub async fn bind_session(
        &self,
        channel: &ChannelId,
        binding: &SessionBinding,
    ) -> Result<tally_core::RequestSalt, GatewayError> {
        let i = &self.inner;
        let funding = i.funding.refresh(channel).await.map_err(chain_error)?;
        if funding.payee != i.payee || funding.token != i.token {
            return Err(GatewayError::new(
                Reason::UnknownChannel,
                "this channel pays another payee or token",
            ));
        }
        let digest = tally_http::session::session_digest(
            i.settings.chain.chain_id,
            i.contract,
            channel,
            &binding.session_key,
        );
        let signer = binding.eip712.to_sig().recover(&digest).map_err(|e| {
            GatewayError::new(Reason::InvalidSignature, format!("session binding: {e}"))
        })?;
        if signer != funding.signer {
            return Err(GatewayError::new(
                Reason::InvalidSignature,
                "the session binding is not signed by the channel's checkpoint signer",
            ));
        }
        let mut guard = self.lock(channel).await?;
        let st = guard
            .as_mut()
            .ok_or_else(|| GatewayError::internal("channel state missing under its lock"))?;
        if st.session_key.is_some_and(|k| k != binding.session_key) {
            return Err(GatewayError::new(
                Reason::SessionKeyConflict,
                "another session key is bound to this channel",
            ));
        }
        let salt = self.salt_for_binding(channel).await?;
        match st.session_key {
            Some(_) => Ok(salt),
            None => {
                let gw = self.clone();
                let (id, key) = (*channel, binding.session_key);
                tokio::task::spawn_blocking(move || gw.inner.bindings.bind(&id, &key))
                    .await
                    .map_err(|e| GatewayError::internal(format!("binding writer: {e}")))?
                    .map_err(|e| GatewayError::internal(format!("storing binding: {e}")))?;
                st.session_key = Some(binding.session_key);
                Ok(salt)
            }
        }
    }

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
        let mut guard = self.lock(channel).await?;
        let st = guard
            .as_mut()
            .ok_or_else(|| GatewayError::internal("channel state missing under its lock"))?;
        if req.size != st.size || req.root != st.root || req.cumulative.0 != st.cumulative {
            return Err(state_mismatch(
                st,
                "a close must be at the log's final state: its size, root and cumulative",
            ));
        }
        // The in-memory state must be the durable log's: never agree below what was served.
        let durable = i
            .store
            .head(channel)
            .map_or((0, st.root), |h| (h.size, h.root));
        if durable != (st.size, st.root) {
            *guard = None;
            return Err(GatewayError::internal(
                "the channel's state is behind its log; it reloads on the next request",
            ));
        }
        // The cached funding read serves the checks a stranger can trigger; the chain is read
        // afresh only for a correctly signed first close.
        let funding = i.funding.get(channel).await.map_err(chain_error)?;
        if funding.payee != i.payee || funding.token != i.token {
            return Err(GatewayError::new(
                Reason::UnknownChannel,
                "this channel pays another payee or token",
            ));
        }
        let cp = Checkpoint {
            channel_id: *channel,
            size: st.size,
            root: st.root,
            cumulative: st.cumulative,
        };
        let domain = tally_chain::eip712::domain(i.settings.chain.chain_id, i.contract);
        let signer_sig = req.eip712.to_sig();
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
                let funding = i.funding.refresh(channel).await.map_err(chain_error)?;
                if funding.withdraw == WithdrawState::Closed {
                    return Err(GatewayError::new(
                        Reason::ChannelClosed,
                        "the channel is already closed onchain",
                    ));
                }
                // `cooperativeClose` reverts below the claimed state, and the settlement
                // worker may still claim the newest stored checkpoint: the close must be at
                // or above both (a credit after them makes it lower).
                let floor = funding.claimed.max(st.checkpoint_cumulative);
                if cp.size < funding.claimed_size || cp.cumulative < floor {
                    return Err(GatewayError::new(
                        Reason::CloseUnavailable,
                        format!(
                            "the contract could refuse this close at size {} and cumulative {}: {} is claimed at size {} and the newest checkpoint holds {}; exit with a withdrawal",
                            cp.size, cp.cumulative, funding.claimed, funding.claimed_size, st.checkpoint_cumulative
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
                let written = tokio::task::spawn_blocking(move || {
                    gw.inner.bindings.mark_closing(&id, &closing)
                })
                .await;
                match written {
                    Ok(Ok(())) => {
                        if let Some(st) = guard.as_mut() {
                            st.closing = Some(closing);
                        }
                        Ok(())
                    }
                    // Unknown whether the mark landed: forget the state, so the next use
                    // reloads it (and the mark, if it is there) from the database.
                    Ok(Err(e)) => {
                        *guard = None;
                        Err(format!("storing the close: {e}"))
                    }
                    Err(e) => {
                        *guard = None;
                        Err(format!("close writer: {e}"))
                    }
                }
            })
            .await
            .map_err(|e| GatewayError::internal(format!("close writer task: {e}")))?
            .map_err(GatewayError::internal)?;
        }
        Ok(CloseSigned {
            size: cp.size,
            root: cp.root,
            cumulative: Amount(cp.cumulative),
            signer_eip712: WireEip712Sig::from_sig(&signer_sig),
            payee_eip712: WireEip712Sig::from_sig(&payee_sig),
        })
    }

    /// A snapshot of a channel's state for the state endpoint.
    pub async fn channel_state(
        &self,
        channel: &ChannelId,
    ) -> Result<tally_http::api::ChannelState, GatewayError> {
        let guard = self.lock(channel).await?;
        let st = guard
            .as_ref()
            .ok_or_else(|| GatewayError::internal("channel state missing under its lock"))?;
        Ok(tally_http::api::ChannelState {
            channel_id: st.id,
            session_key: st.session_key,
            request_salt: self
                .bindings()
                .salt(channel)
                .map_err(|e| GatewayError::internal(format!("request salt: {e}")))?,
            size: st.size,
            root: st.root,
            cumulative: Amount(st.cumulative),
            checkpoint_size: st.checkpoint_size,
            checkpoint_cumulative: Amount(st.checkpoint_cumulative),
            last_record: st.last.as_ref().map(|(r, s)| WireRecord::new(r, *s)),
        })
    }

    pub(crate) fn bindings(&self) -> &Bindings {
        &self.inner.bindings
    }
}

/// A record handed to the log, with its channel's lock. Dropped before the append resolved
/// (the request's future was cancelled), it forgets the channel's in-memory state, which is
/// then rebuilt from the durable log on next use, and keeps the channel locked until the
/// append has resolved, so nothing is admitted against a log that is about to grow.
struct Committing {
    ticket: Option<tally_log::Ticket>,
    guard: Option<OwnedMutexGuard<Option<ChannelState>>>,
}

impl Committing {
    /// Waits until the record is durable.
    async fn durable(&mut self) -> Result<std::ops::Range<u64>, tally_log::LogError> {
        let result = match self.ticket.as_mut() {
            Some(ticket) => ticket.await,
            None => Err(tally_log::LogError::WriterStopped),
        };
        self.ticket = None;
        result
    }

    fn into_guard(mut self) -> Option<OwnedMutexGuard<Option<ChannelState>>> {
        self.guard.take()
    }
}

impl Drop for Committing {
    fn drop(&mut self) {
        let (Some(mut guard), Some(ticket)) = (self.guard.take(), self.ticket.take()) else {
            return;
        };
        *guard = None;
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = ticket.await;
                    drop(guard);
                });
            }
            // Outside a runtime nothing else can take the lock meanwhile.
            Err(_) => {
                let _ = ticket.wait();
                drop(guard);
            }
        }
    }
}

/// Whether a checkpoint is due after the record just appended (spec/HTTP.md §6).
fn checkpoint_due(policy: &CheckpointPolicy, st: &ChannelState) -> Option<u64> {
    if st.size <= st.checkpoint_size {
        return None;
    }
    let records = st.size - st.checkpoint_size;
    let amount = st.cumulative.saturating_sub(st.checkpoint_cumulative);
    let due = (policy.every_records > 0 && records >= policy.every_records)
        || (policy.every_seconds > 0
            && st.checkpoint_at.elapsed() >= Duration::from_secs(policy.every_seconds))
        || (policy.every_amount.0 > 0 && amount >= policy.every_amount.0);
    due.then_some(st.size)
}

fn url_of(req: &RequestView<'_>) -> String {
    if req.query.is_empty() {
        req.path.to_string()
    } else {
        format!("{}?{}", req.path, req.query)
    }
}

impl tally_chain::CheckpointSource for Gateway {
    fn latest_checkpoints(
        &self,
    ) -> tally_chain::BoxFuture<'_, Result<Vec<ChainCheckpoint>, ChainError>> {
        Box::pin(async move {
            let store = &self.inner.store;
            let mut out = Vec::new();
            for channel in store.channels() {
                let Some((_, bytes)) = store
                    .latest_checkpoint(&channel)
                    .map_err(|e| ChainError::Source(e.to_string()))?
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
                    sig: wire.eip712.to_sig(),
                });
            }
            Ok(out)
        })
    }
}
