//! The provider's settlement worker: turns the latest client-signed checkpoints into
//! `claim`/`claimMany` transactions.
//!
//! When it claims, per channel:
//! - the payout now possible reaches `threshold`; or
//! - the claim timer (`claim_interval`) ran out and the payout is non-zero; or
//! - an `initiateWithdraw` event was seen for the channel and the payout is non-zero (the
//!   payee must claim before the delay ends, so this skips the threshold).
//!
//! Never double-submits: at most one claim transaction is in flight, and every entry is
//! re-checked against the channel's onchain claimed size (read fresh) before it is sent.
//! RPC failures surface from [`SettlementWorker::tick`] as transient errors; [`run`]
//! retries them with exponential backoff.
//!
//! [`run`]: SettlementWorker::run

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use alloy::eips::BlockNumberOrTag;
use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use tally_core::ChannelId;

use crate::channel::TallyClient;
use crate::contract::Tally;
use crate::eip712::ChainCheckpoint;
use crate::error::ChainError;
use crate::funding::{ChannelFunding, WithdrawState};
use crate::BoxFuture;

/// Where the worker gets the latest checkpoints the clients signed; the gateway implements it.
pub trait CheckpointSource: Send + Sync {
    /// The newest EIP-712-signed checkpoint of every channel this provider is payee of.
    fn latest_checkpoints(&self) -> BoxFuture<'_, Result<Vec<ChainCheckpoint>, ChainError>>;
}

/// When and how the worker claims.
#[derive(Clone, Debug)]
pub struct SettleConfig {
    /// Claim a channel as soon as its payout reaches this amount.
    pub threshold: u128,
    /// Claim every channel with a non-zero payout at least this often.
    pub claim_interval: Duration,
    /// How often [`SettlementWorker::run`] ticks when all is well.
    pub poll_interval: Duration,
    /// At most this many channels per claimMany.
    pub max_batch: usize,
    /// First retry delay after an error.
    pub backoff_initial: Duration,
    /// Retry delays double up to this.
    pub backoff_max: Duration,
    /// An unmined claim older than this that the node no longer knows is treated as dropped.
    pub pending_timeout: Duration,
    /// First block to scan for `WithdrawInitiated` events.
    pub from_block: u64,
}

impl Default for SettleConfig {
    fn default() -> Self {
        SettleConfig {
            threshold: 1_000_000,
            claim_interval: Duration::from_secs(3600),
            poll_interval: Duration::from_secs(2),
            max_batch: 100,
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(30),
            pending_timeout: Duration::from_secs(120),
            from_block: 0,
        }
    }
}

/// What one tick did, for tests and monitoring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// A claim transaction sent this tick, with the channels it covers.
    pub submitted: Option<(B256, Vec<ChannelId>)>,
    /// A claim transaction whose receipt arrived this tick, and whether it succeeded.
    pub confirmed: Option<(B256, bool)>,
    /// Set when a claim is still in flight, so nothing new was sent.
    pub waiting_on: Option<B256>,
    /// Channels newly seen entering a withdrawal.
    pub withdraw_seen: Vec<ChannelId>,
    /// Checkpoints the contract would reject (bad signature, stale, not ours), with why.
    pub rejected: Vec<(ChannelId, String)>,
}

/// Counters kept by [`SettlementWorker::run`].
#[derive(Clone, Debug, Default)]
pub struct WorkerStats {
    /// Ticks attempted.
    pub ticks: u64,
    /// Ticks that failed.
    pub errors: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// Every claim transaction sent.
    pub submitted: Vec<B256>,
}

struct InFlight {
    hash: B256,
    sent_at: Instant,
    /// Per channel: the (size, claimed) the chain will hold once this lands.
    expect: Vec<(ChannelId, u64, u128)>,
}

/// The worker. Drive it with [`tick`](Self::tick) or hand it to [`run`](Self::run).
pub struct SettlementWorker<S> {
    client: TallyClient,
    source: S,
    config: SettleConfig,
    next_block: u64,
    withdrawing: BTreeSet<ChannelId>,
    last_timer: Instant,
    in_flight: Option<InFlight>,
    /// Last onchain (claimed size, claimed amount) seen or caused, per channel.
    known: HashMap<ChannelId, (u64, u128)>,
    stats: WorkerStats,
}

impl<S: CheckpointSource> SettlementWorker<S> {
    /// A worker claiming as `client.sender()` (the payee).
    pub fn new(client: TallyClient, source: S, config: SettleConfig) -> Self {
        SettlementWorker {
            client,
            source,
            next_block: config.from_block,
            config,
            withdrawing: BTreeSet::new(),
            last_timer: Instant::now(),
            in_flight: None,
            known: HashMap::new(),
            stats: WorkerStats::default(),
        }
    }

    /// Counters from [`run`](Self::run).
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// The claim currently in flight, if any.
    pub fn in_flight(&self) -> Option<B256> {
        self.in_flight.as_ref().map(|f| f.hash)
    }

    /// Runs ticks until `shutdown` turns true, backing off after errors. Returns the worker so
    /// its stats can be read.
    pub async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) -> Self {
        let mut delay = Duration::ZERO;
        loop {
            if *shutdown.borrow() {
                return self;
            }
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return self;
                    }
                    continue;
                }
                _ = tokio::time::sleep(delay) => {}
            }
            self.stats.ticks += 1;
            match self.tick().await {
                Ok(report) => {
                    if let Some((hash, _)) = report.submitted {
                        self.stats.submitted.push(hash);
                    }
                    delay = self.config.poll_interval;
                }
                Err(e) => {
                    self.stats.errors += 1;
                    self.stats.last_error = Some(e.to_string());
                    delay = if delay < self.config.backoff_initial {
                        self.config.backoff_initial
                    } else {
                        (delay * 2).min(self.config.backoff_max)
                    };
                }
            }
        }
    }

    /// One round: settle the in-flight claim, scan withdraw events, claim what is due.
    pub async fn tick(&mut self) -> Result<TickReport, ChainError> {
        let mut report = TickReport::default();
        if !self.check_in_flight(&mut report).await? {
            return Ok(report);
        }

        let mut latest: BTreeMap<ChannelId, ChainCheckpoint> = BTreeMap::new();
        for cp in self.source.latest_checkpoints().await? {
            let id = cp.checkpoint.channel_id;
            match latest.get(&id) {
                Some(have) if have.checkpoint.size >= cp.checkpoint.size => {}
                _ => {
                    latest.insert(id, cp);
                }
            }
        }

        let provider = self.client.provider().clone();
        let head = provider.get_block_number().await?;
        let block = provider
            .get_block_by_number(BlockNumberOrTag::Number(head))
            .await?
            .ok_or_else(|| ChainError::Rpc(format!("node has no block {head}")))?;
        let now = block.header.timestamp;
        if self.next_block <= head {
            let filter = Filter::new()
                .address(self.client.address())
                .event_signature(Tally::WithdrawInitiated::SIGNATURE_HASH)
                .from_block(self.next_block)
                .to_block(head);
            for log in provider.get_logs(&filter).await? {
                if let Some(topic) = log.topics().get(1) {
                    let id = ChannelId(topic.0);
                    if latest.contains_key(&id) && self.withdrawing.insert(id) {
                        report.withdraw_seen.push(id);
                    }
                }
            }
            self.next_block = head + 1;
        }

        let timer_due = self.last_timer.elapsed() >= self.config.claim_interval;
        let mut due: Vec<(Address, ChainCheckpoint, u128)> = Vec::new();
        for (id, cp) in &latest {
            let urgent = self.withdrawing.contains(id);
            let (known_size, known_claimed) = self.known.get(id).copied().unwrap_or((0, 0));
            if cp.checkpoint.size <= known_size {
                continue; // nothing newer than what the chain already holds
            }
            let estimate = cp.checkpoint.cumulative.saturating_sub(known_claimed);
            if !(urgent || timer_due || estimate >= self.config.threshold) {
                continue;
            }
            let state = match self.client.channel(id).await {
                Ok(s) => s,
                Err(ChainError::UnknownChannel(_)) => {
                    report.rejected.push((*id, "unknown channel".into()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.known.insert(*id, (state.claimed_size, state.claimed));
            if cp.checkpoint.size <= state.claimed_size {
                continue;
            }
            if !state.claimable_at(now) {
                self.withdrawing.remove(id);
                continue;
            }
            if matches!(state.withdraw, WithdrawState::Pending { .. }) {
                self.withdrawing.insert(*id);
            }
            if let Some(why) = self.unclaimable(&state, cp) {
                report.rejected.push((*id, why));
                continue;
            }
            let payout = state.payout_for(cp.checkpoint.cumulative);
            let wanted = payout >= self.config.threshold
                || (payout > 0 && (timer_due || self.withdrawing.contains(id)));
            if wanted {
                due.push((
                    state.token,
                    *cp,
                    cp.checkpoint.cumulative.min(state.deposit),
                ));
            }
        }
        due.sort_by_key(|(token, cp, _)| (*token, cp.checkpoint.channel_id));
        due.truncate(self.config.max_batch.max(1));
        let expected: HashMap<ChannelId, u128> = due
            .iter()
            .map(|(_, cp, capped)| (cp.checkpoint.channel_id, *capped))
            .collect();
        let mut batch: Vec<ChainCheckpoint> = due.into_iter().map(|(_, cp, _)| cp).collect();

        if !batch.is_empty() {
            if let Err(e) = self.client.simulate_claim_many(&batch).await {
                if e.is_transient() {
                    return Err(e);
                }
                batch = self.isolate_failures(batch, &mut report).await?;
            }
        }
        if !batch.is_empty() {
            let pending = if batch.len() == 1 {
                self.client.send_claim(&batch[0]).await?
            } else {
                self.client.send_claim_many(&batch).await?
            };
            let hash = *pending.tx_hash();
            let channels: Vec<ChannelId> = batch.iter().map(|c| c.checkpoint.channel_id).collect();
            let expect = batch
                .iter()
                .map(|c| {
                    let id = c.checkpoint.channel_id;
                    (
                        id,
                        c.checkpoint.size,
                        expected.get(&id).copied().unwrap_or(0),
                    )
                })
                .collect();
            self.in_flight = Some(InFlight {
                hash,
                sent_at: Instant::now(),
                expect,
            });
            report.submitted = Some((hash, channels));
            // A fast chain may already have mined it; confirm now rather than next tick.
            self.check_in_flight(&mut report).await?;
        }
        if timer_due {
            self.last_timer = Instant::now();
        }
        Ok(report)
    }

    /// Why the contract would refuse `cp` for `state`, checked offchain; None if it would not.
    fn unclaimable(&self, state: &ChannelFunding, cp: &ChainCheckpoint) -> Option<String> {
        if state.payee != self.client.sender() {
            return Some(format!(
                "payee is {}, not this worker's {}",
                state.payee,
                self.client.sender()
            ));
        }
        if cp.checkpoint.cumulative < state.claimed {
            return Some(format!(
                "cumulative {} below claimed {}",
                cp.checkpoint.cumulative, state.claimed
            ));
        }
        if let Err(e) = cp.verify(&self.client.domain(), state.signer) {
            return Some(e.to_string());
        }
        None
    }

    /// A batch failed simulation: keep only the entries that pass alone.
    async fn isolate_failures(
        &self,
        batch: Vec<ChainCheckpoint>,
        report: &mut TickReport,
    ) -> Result<Vec<ChainCheckpoint>, ChainError> {
        let mut good = Vec::new();
        for cp in batch {
            match self
                .client
                .simulate_claim_many(std::slice::from_ref(&cp))
                .await
            {
                Ok(()) => good.push(cp),
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => report
                    .rejected
                    .push((cp.checkpoint.channel_id, e.to_string())),
            }
        }
        Ok(good)
    }

    /// Looks for the in-flight claim's receipt. Returns true when nothing is in flight any more
    /// (so a new claim may be sent).
    async fn check_in_flight(&mut self, report: &mut TickReport) -> Result<bool, ChainError> {
        let Some(flight) = &self.in_flight else {
            return Ok(true);
        };
        let provider = self.client.provider().clone();
        if let Some(receipt) = provider.get_transaction_receipt(flight.hash).await? {
            let ok = receipt.status();
            report.confirmed = Some((flight.hash, ok));
            if ok {
                for (id, size, claimed) in &flight.expect {
                    self.known.insert(*id, (*size, *claimed));
                }
            } else {
                // Reverted: forget what we assumed, so the next tick re-reads the chain.
                for (id, _, _) in &flight.expect {
                    self.known.remove(id);
                }
            }
            self.in_flight = None;
            return Ok(true);
        }
        if flight.sent_at.elapsed() >= self.config.pending_timeout
            && provider
                .get_transaction_by_hash(flight.hash)
                .await?
                .is_none()
        {
            // The node forgot it: it was dropped and can no longer be mined with its nonce
            // reused. The next claim re-reads every claimed size, so nothing is paid twice.
            self.in_flight = None;
            return Ok(true);
        }
        report.waiting_on = Some(flight.hash);
        Ok(false)
    }
}
