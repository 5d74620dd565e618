//! The gasless-deposit relay (spec/HTTP.md §12, spec/CHAIN.md §2.1): a client that holds the
//! token but no ETH signs an open or a top-up, and the gateway submits it from a wallet of
//! its own that pays the gas.
//!
//! A stranger's request costs the provider, in order: a bounded body read and a JSON parse;
//! the policy ([`RelayPolicy`]: this payee, this token, a delay the gateway accepts, a
//! minimum amount); one or two signature recoveries; then, metered by a token bucket, one
//! simulation on the node (which runs the token's and the contract's own checks); and only
//! for a deposit that simulates successfully within `gas_limit`, metered by a second
//! bucket, one transaction. Transactions are broadcast one at a time (the lock is held from
//! simulation to broadcast, never while waiting to be mined), so the relay wallet's nonces
//! never race; at most [`MAX_QUEUED`] requests wait for that lock, and one payer has at most
//! one deposit in flight, so two deposits that each need the payer's whole balance cannot
//! both simulate successfully.
//!
//! What it must never do: pay gas for a deposit to anyone but this provider, submit a
//! request whose signatures were not checked, or log a request body.

mod policy;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use alloy::primitives::Address;
use alloy::rpc::types::TransactionRequest;
use serde::de::DeserializeOwned;
use tally_chain::{ChainError, DepositDomains, GaslessOpen, GaslessTopUp, TallyClient, TxOutcome};
use tally_core::{ChannelId, Hash};
use tally_http::api::Relayed;
use tally_http::Reason;

use crate::bucket::Bucket;
use crate::errors::GatewayError;

pub use policy::{RelayPolicy, MIN_VALIDITY_SECONDS};

/// Requests that may wait for the send lock; more answer `rate_limited` at once, so a slow
/// chain cannot pile requests (and connections) up behind it.
pub const MAX_QUEUED: usize = 4;

/// How long a relayed transaction may take to be mined before the request answers
/// `chain_unavailable` (with its hash: it may still be mined).
pub const RECEIPT_WAIT: Duration = Duration::from_secs(90);

/// How much the relay spends (the `[relay]` table, spec/HTTP.md §10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// The most gas one relayed transaction may use (its simulation must fit).
    pub gas_limit: u64,
    /// Relayed transactions a minute, across all clients.
    pub max_per_minute: u32,
}

impl RelayLimits {
    /// Simulations a minute: each is one node call, cheaper than a transaction, and a
    /// deposit whose simulation fails must not use up the transactions' budget.
    fn simulations_per_minute(&self) -> u32 {
        self.max_per_minute.saturating_mul(10)
    }
}

/// The relay: the wallet that pays, the domains deposits are signed in, and its limits.
pub struct Relay {
    client: TallyClient,
    domains: DepositDomains,
    policy: RelayPolicy,
    limits: RelayLimits,
    simulations: Mutex<Bucket>,
    sends: Mutex<Bucket>,
    send_lock: tokio::sync::Mutex<()>,
    queued: AtomicUsize,
    /// Payers (or funders) with a relayed deposit not yet mined.
    in_flight: Mutex<HashSet<Address>>,
}

impl Relay {
    /// A relay sending from `client`'s wallet; reads the token's EIP-712 domain once (a
    /// token whose domain cannot be reproduced is refused here, at start-up).
    pub async fn new(
        client: TallyClient,
        policy: RelayPolicy,
        limits: RelayLimits,
    ) -> Result<Relay, ChainError> {
        let chain_id = client.chain_id();
        let token =
            tally_chain::gasless::token_domain(client.provider(), policy.token, chain_id).await?;
        let domains = DepositDomains {
            chain_id,
            contract: client.address(),
            token,
        };
        Ok(Relay {
            client,
            domains,
            policy,
            limits,
            simulations: Mutex::new(Bucket::per_minute(limits.simulations_per_minute())),
            sends: Mutex::new(Bucket::per_minute(limits.max_per_minute)),
            send_lock: tokio::sync::Mutex::new(()),
            queued: AtomicUsize::new(0),
            in_flight: Mutex::new(HashSet::new()),
        })
    }

    /// The wallet that pays relayed gas.
    pub fn wallet(&self) -> Address {
        self.client.sender()
    }

    /// `POST /tally/v1/relay/open`.
    pub async fn open(&self, body: &[u8]) -> Result<Relayed, GatewayError> {
        let open: GaslessOpen = parse(body)?;
        self.policy.check_open(&open).map_err(refused)?;
        RelayPolicy::check_window(&open.auth, unix_now()).map_err(refused)?;
        open.verify(&self.domains)
            .map_err(|e| refused(format!("the payer's signature: {e}")))?;
        let id = open.channel_id(&self.domains);
        self.take(&self.simulations)?;
        let tx = self.client.gasless_open_tx(&open);
        let done = self.simulate_and_send(open.payer, tx).await?;
        tracing::info!(channel = %id.to_hex(), payer = %open.payer, gas = done.gas_used, "relayed a gasless open");
        Ok(relayed(id, done))
    }

    /// `POST /tally/v1/relay/topup`.
    pub async fn top_up(&self, body: &[u8]) -> Result<Relayed, GatewayError> {
        let top_up: GaslessTopUp = parse(body)?;
        self.policy.check_top_up_amount(&top_up).map_err(refused)?;
        RelayPolicy::check_window(&top_up.auth, unix_now()).map_err(refused)?;
        top_up
            .verify(&self.domains)
            .map_err(|e| refused(format!("the funder's signature: {e}")))?;
        self.take(&self.simulations)?;
        let id = top_up.channel();
        let ch = match self.client.channel(&id).await {
            Ok(ch) => ch,
            Err(ChainError::UnknownChannel(_)) => {
                return Err(GatewayError::new(
                    Reason::UnknownChannel,
                    "no such channel onchain",
                ))
            }
            Err(e) => return Err(chain_error(e)),
        };
        self.policy.check_top_up(&top_up, &ch).map_err(refused)?;
        let tx = self.client.gasless_top_up_tx(&top_up);
        let done = self.simulate_and_send(top_up.from, tx).await?;
        tracing::info!(channel = %id.to_hex(), from = %top_up.from, gas = done.gas_used, "relayed a gasless top-up");
        Ok(relayed(id, done))
    }

    /// Simulates `tx` (the caller took a simulation token) for a deposit paid by `payer`; if
    /// it succeeds within the gas limit and a send token is left, broadcasts it and waits (at
    /// most [`RECEIPT_WAIT`], outside the lock) for it to be mined.
    async fn simulate_and_send(
        &self,
        payer: Address,
        tx: TransactionRequest,
    ) -> Result<TxOutcome, GatewayError> {
        let _payer = PayerInFlight::claim(&self.in_flight, payer)?;
        let pending = {
            let _queued = Queued::enter(&self.queued)?;
            let _one_at_a_time = self.send_lock.lock().await;
            let gas = self.client.estimate(&tx).await.map_err(chain_error)?;
            if gas > self.limits.gas_limit {
                return Err(refused(format!(
                    "the deposit needs {gas} gas, over this relay's limit of {}",
                    self.limits.gas_limit
                )));
            }
            self.take(&self.sends)?;
            // Headroom over the estimate for state that changes between simulation and
            // mining, never over the configured limit.
            let limit = (gas + gas / 5).min(self.limits.gas_limit);
            self.client
                .broadcast(tx, limit)
                .await
                .map_err(chain_error)?
        };
        let hash = *pending.tx_hash();
        match tokio::time::timeout(RECEIPT_WAIT, tally_chain::channel::finish(pending)).await {
            Ok(done) => done.map_err(chain_error),
            Err(_) => Err(GatewayError::new(
                Reason::ChainUnavailable,
                format!(
                    "sent as {hash}, not mined within {} s; it may still be mined: read the chain",
                    RECEIPT_WAIT.as_secs()
                ),
            )),
        }
    }

    fn take(&self, bucket: &Mutex<Bucket>) -> Result<(), GatewayError> {
        let taken = bucket
            .lock()
            .map_err(|_| GatewayError::internal("relay limiter poisoned"))?
            .take();
        taken.map_err(|wait| {
            let retry_after = wait.min(Duration::from_secs(3_600)).as_secs().max(1);
            GatewayError::new(
                Reason::RateLimited { retry_after },
                "the relay is at its rate limit; retry later or submit the deposit yourself",
            )
        })
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A place among the requests waiting for the send lock, given back when dropped.
struct Queued<'a>(&'a AtomicUsize);

impl<'a> Queued<'a> {
    fn enter(count: &'a AtomicUsize) -> Result<Self, GatewayError> {
        if count.fetch_add(1, Ordering::SeqCst) >= MAX_QUEUED {
            count.fetch_sub(1, Ordering::SeqCst);
            return Err(GatewayError::new(
                Reason::RateLimited { retry_after: 5 },
                "the relay is busy; retry shortly or submit the deposit yourself",
            ));
        }
        Ok(Queued(count))
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A payer's one deposit in flight, released when dropped.
struct PayerInFlight<'a> {
    set: &'a Mutex<HashSet<Address>>,
    payer: Address,
}

impl<'a> PayerInFlight<'a> {
    fn claim(set: &'a Mutex<HashSet<Address>>, payer: Address) -> Result<Self, GatewayError> {
        let mut s = set
            .lock()
            .map_err(|_| GatewayError::internal("relay payer set poisoned"))?;
        if !s.insert(payer) {
            return Err(GatewayError::new(
                Reason::RateLimited { retry_after: 5 },
                "a deposit from this payer is already being relayed; retry once it is mined",
            ));
        }
        Ok(PayerInFlight { set, payer })
    }
}

impl Drop for PayerInFlight<'_> {
    fn drop(&mut self) {
        if let Ok(mut s) = self.set.lock() {
            s.remove(&self.payer);
        }
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, GatewayError> {
    serde_json::from_slice(body).map_err(|e| GatewayError::malformed(format!("relay request: {e}")))
}

fn refused(why: impl Into<String>) -> GatewayError {
    let why = why.into();
    GatewayError::new(Reason::RelayRefused { why: why.clone() }, why)
}

/// A chain failure as the client sees it: a revert is the deposit's fault (refused, with the
/// contract's error); anything else is the chain's (retry later). Transport errors may quote
/// the RPC URL, so their detail is not passed on.
fn chain_error(e: ChainError) -> GatewayError {
    match e {
        ChainError::Reverted(err) => refused(format!("the chain would revert it: {err:?}")),
        ChainError::RevertedOther(data) => refused(format!("the chain would revert it: {data}")),
        ChainError::TxFailed(tx) => refused(format!(
            "transaction {tx} was mined but reverted (the relay paid for it)"
        )),
        other => {
            tracing::warn!(error = %crate::redact::redact_text(&other.to_string()), "relay chain call failed");
            GatewayError::new(
                Reason::ChainUnavailable,
                "the chain could not be reached; retry later",
            )
        }
    }
}

fn relayed(id: ChannelId, t: TxOutcome) -> Relayed {
    Relayed {
        channel_id: id,
        transaction: Hash(t.tx_hash.0),
        block: t.block,
        gas_used: t.gas_used,
    }
}
