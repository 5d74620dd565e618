//! The provider's settlement worker: turns the latest client-signed checkpoints into
//! `claim`/`claimMany` transactions.
//!
//! When it claims, per channel:
//! - the payout now possible reaches `threshold`; or
//! - the claim timer (`claim_interval`) ran out and the payout is non-zero; or
//! - the channel is withdrawing (a `WithdrawInitiated` event was seen, or a read showed a
//!   pending withdrawal) and the payout is non-zero: the payee must claim before the delay
//!   ends, so this skips the threshold. A withdrawing channel is read again on every tick,
//!   so a claim a reorg dropped, or a withdrawal a reorg undid, is seen at once.
//!
//! Challenge windows and payouts (spec/CHAIN.md §4, §9): a claim moves no tokens; what it makes
//! owed becomes payable once the posted state's window (the channel's withdraw delay) has
//! passed without a newer amount. A channel whose current state is still in its window is not
//! claimed again outside a withdrawal (that would restart the window and postpone the payout):
//! it is reported in `in_window`, held unread until the window ends, and claimed on the next
//! timer or threshold after it. Every tick with no transaction in flight, the channels whose
//! payout is due are read fresh and paid out with one `payoutMany` (`TickReport::payout`); a
//! refused payout (a paused token) is reported in `payout_error` and retried after
//! [`payout::PAYOUT_RETRY_SECONDS`], and never fails the tick.
//!
//! A batch takes withdrawing channels first (earliest deadline first), then over-threshold
//! ones, then timer-due ones, up to `max_batch`; the chosen entries are ordered by token so
//! `claimMany` merges their transfers. The timer restarts only when nothing due was left out.
//!
//! Deadlines (spec/CHAIN.md §6, DESIGN-DECISIONS "claimMany skips"): a withdrawing channel
//! whose claim window ends within `deadline_margin` is never batched. It is claimed alone,
//! before any batch, as an urgent single `claim` (earliest deadline first), so a batch mined a
//! little late can never carry an entry whose window closed. Every batch is simulated first;
//! when the simulation says `claimMany` would skip entries, each entry is simulated alone and
//! the ones `claim` would reject are left out (reported in `rejected`). If a mined batch still
//! skipped entries (`ClaimSkipped`), those channels are quarantined: never batched again, only
//! claimed alone after a fresh simulation, and counted in [`WorkerStats::skipped`].
//! An urgent claim bids the market estimate scaled by how close its deadline is (1× at the
//! margin up to 4× at the deadline, [`urgent_fees`]; still under `max_fee_per_gas`), and is
//! replaced after the shorter `urgent_pending_timeout`, each version scaled again.
//!
//! Never double-submits: at most one claim is in flight, and it owns one nonce. The worker
//! signs a claim locally and records its hash and nonce *before* broadcasting, so a send that
//! fails after the node accepted the transaction leaves the claim in flight rather than
//! forgotten. Until a receipt for one of its versions is `confirmations` blocks deep, the
//! worker only ever re-broadcasts the same signed bytes (when the node does not know them) or
//! signs a replacement with the same nonce and fees raised by at least 12.5% (after
//! `pending_timeout`): all versions share the nonce, so at most one can be mined. A new claim
//! is signed only after the previous one settled or its nonce was used by something else, and
//! every entry is re-checked against the channel's onchain claimed size (read fresh) first.
//! New claims use the account's mined nonce, so after a restart a claim left pending by the
//! previous process is replaced, never followed by a second one. The worker's account must
//! therefore send nothing but claims.
//!
//! RPC failures surface from [`SettlementWorker::tick`] as transient errors; [`run`] retries
//! them with exponential backoff. A failing `WithdrawInitiated` scan does not fail the tick:
//! the scan resumes from the failed chunk next tick, and meanwhile every channel with a newer
//! checkpoint has its state read, which shows pending withdrawals too. Every tick the scan
//! reads the last `reorg_depth_blocks` blocks again, so an event in a block that a reorg
//! replaced after the scan passed it is still found (spec/CHAIN.md §9, "Reorgs").
//!
//! Agreed closes (spec/CHAIN.md §9): a cooperative close the payee cosigned that nobody
//! submitted within `close_timeout` (or whose channel starts withdrawing) is submitted by the
//! worker, and its channel is not claimed meanwhile (module `closes`).
//!
//! [`run`]: SettlementWorker::run

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use alloy::eips::eip2718::Encodable2718;
use alloy::eips::BlockNumberOrTag;
use alloy::network::{EthereumWallet, NetworkWallet, TransactionBuilder};
use alloy::primitives::B256;
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::TransactionRequest;
use tally_core::ChannelId;

use crate::channel::TallyClient;
use crate::eip712::ChainCheckpoint;
use crate::error::ChainError;
use crate::funding::{ChannelFunding, WithdrawState};
use crate::BoxFuture;

mod batch;
mod checks;
mod closes;
mod fees;
mod payout;
mod report;
mod scan;
mod skips;
mod submit;

use batch::{choose_batch, Candidate, Why};
pub use fees::{bumped_fees, initial_fees, urgent_fees, FeeBid, FEE_BUMP, URGENT_MAX_MULTIPLIER};

pub use closes::AgreedClose;
pub use report::{TickReport, WorkerStats};
pub use skips::{skip_reason, skipped_in};

/// Where the worker gets the latest checkpoints the clients signed; the gateway implements it.
pub trait CheckpointSource: Send + Sync {
    /// The newest EIP-712-signed checkpoint of every channel this provider is payee of.
    fn latest_checkpoints(&self) -> BoxFuture<'_, Result<Vec<ChainCheckpoint>, ChainError>>;

    /// Every cooperative close the payee signed and that the worker should submit if nobody
    /// else does within `close_timeout` (spec/CHAIN.md §9, "Agreed closes"). A closed
    /// channel may stay in the list; the worker reads the chain before submitting. The
    /// default is none, for a source that keeps no closes.
    fn agreed_closes(&self) -> BoxFuture<'_, Result<Vec<AgreedClose>, ChainError>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// When and how the worker claims.
#[derive(Clone, Debug)]
pub struct SettleConfig {
    /// Claim a channel as soon as its payout reaches this amount.
    pub threshold: u128,
    /// Claim every channel with a non-zero payout at least this often. When it runs out the
    /// worker also re-reads every channel it has a checkpoint for, so a claim undone by a
    /// reorg is found and claimed again.
    pub claim_interval: Duration,
    /// How often [`SettlementWorker::run`] ticks when all is well.
    pub poll_interval: Duration,
    /// At most this many channels per claimMany.
    pub max_batch: usize,
    /// First retry delay after an error.
    pub backoff_initial: Duration,
    /// Retry delays double up to this.
    pub backoff_max: Duration,
    /// A claim still unmined this long after its newest version was signed is replaced: same
    /// nonce and calldata, fees raised by at least [`FEE_BUMP`] (or to the market rate).
    pub pending_timeout: Duration,
    /// Never bid more than this max fee per gas (wei); `None` for no cap. At the cap the worker
    /// stops bumping and waits.
    pub max_fee_per_gas: Option<u128>,
    /// A claim's outcome is trusted once its receipt's block is this many blocks deep
    /// (1 = in the head block). Until then it stays in flight.
    pub confirmations: u64,
    /// First block to scan for `WithdrawInitiated` events.
    pub from_block: u64,
    /// Blocks per `eth_getLogs` request at most (many providers refuse wide ranges). After a
    /// failed request the next one asks for half as many blocks, down to one; each success
    /// doubles it again up to this.
    pub log_chunk_blocks: u64,
    /// At most this many `eth_getLogs` requests per tick, so catching up from an old
    /// `from_block` is spread over ticks instead of delaying claims.
    pub log_chunks_per_tick: u32,
    /// A withdrawing channel whose claim window ends within this is not batched but claimed
    /// alone, first (urgent): a batch can be mined later than simulated, and this margin is
    /// the delay the worker plans for.
    pub deadline_margin: Duration,
    /// Every tick the `WithdrawInitiated` scan reads the last this many blocks again, so an
    /// event in a block that was reorged out and back in (or replaced) after the scan passed
    /// it is still seen. Set it to at least the chain's usual reorg depth.
    pub reorg_depth_blocks: u64,
    /// Like `pending_timeout`, for an urgent claim (deadline within `deadline_margin`): it is
    /// replaced sooner, and each version bids more as the deadline nears
    /// ([`urgent_fees`]).
    pub urgent_pending_timeout: Duration,
    /// A cooperative close both parties signed ([`CheckpointSource::agreed_closes`]) that is
    /// still not onchain this long after the payee signed it is submitted by the worker; at
    /// once if the channel is withdrawing. Until then (and while it is pending) the channel is
    /// not claimed.
    pub close_timeout: Duration,
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
            max_fee_per_gas: None,
            confirmations: 1,
            from_block: 0,
            log_chunk_blocks: 2_000,
            log_chunks_per_tick: 32,
            deadline_margin: Duration::from_secs(600),
            reorg_depth_blocks: 12,
            urgent_pending_timeout: Duration::from_secs(24),
            close_timeout: Duration::from_secs(DEFAULT_CLOSE_TIMEOUT_SECONDS),
        }
    }
}

/// The default `close_timeout`, seconds (15 minutes): a client that closes submits its close
/// right after the payee signs it (`tally channel close` does), so this is ample, and it is
/// far below the shortest withdraw delay (3600 s), so an agreed close lands before any
/// withdrawal the payer starts instead could end (spec/CHAIN.md §9).
pub const DEFAULT_CLOSE_TIMEOUT_SECONDS: u64 = 900;

/// One signed version of the claim in flight.
struct Attempt {
    hash: B256,
    fees: FeeBid,
    raw: Vec<u8>,
}

struct InFlight {
    nonce: u64,
    /// The unsigned transaction (nonce, gas, calldata); each version adds its fees.
    request: TransactionRequest,
    /// The version signed last.
    newest: Attempt,
    /// Hashes of the versions it replaced. All share `nonce`: at most one is ever mined.
    replaced: Vec<B256>,
    /// When the newest version was signed.
    signed_at: Instant,
    /// Per channel: the (size, claimed) the chain will hold once this lands.
    expect: Vec<(ChannelId, u64, u128)>,
    /// Whether this is a `claimMany` (whose receipt may carry `ClaimSkipped`).
    batch: bool,
    /// For a `payoutMany`, the channels it pays out (empty for a claim).
    payouts: Vec<ChannelId>,
    /// For an urgent claim, when its claim window closes (chain time): its fees scale with
    /// how close that is, and it is replaced after `urgent_pending_timeout`.
    deadline: Option<u64>,
    /// For a `cooperativeClose`, its channel.
    close: Option<ChannelId>,
}

/// Called by [`SettlementWorker::run`] after every tick with its outcome, so the embedding
/// process can log each failure (and what each tick sent) as it happens.
pub type TickObserver = Box<dyn FnMut(&Result<TickReport, ChainError>) + Send + Sync>;

/// The worker. Drive it with [`tick`](Self::tick) or hand it to [`run`](Self::run).
pub struct SettlementWorker<S> {
    client: TallyClient,
    wallet: EthereumWallet,
    source: S,
    config: SettleConfig,
    scan: scan::LogScan,
    /// Channels a mined batch skipped, with why: claimed alone only, never batched.
    quarantined: BTreeMap<ChannelId, String>,
    /// Channels known to be withdrawing, with the time their claims stop.
    withdrawing: BTreeMap<ChannelId, u64>,
    last_timer: Instant,
    in_flight: Option<InFlight>,
    /// Last onchain (claimed size, claimed amount) seen or caused, per channel.
    known: HashMap<ChannelId, (u64, u128)>,
    /// Channels whose payee is owed more than was paid out, with the chain time from which
    /// a payout pays something (spec/CHAIN.md §4.4).
    unpaid: BTreeMap<ChannelId, u64>,
    /// Channels with a due checkpoint held until their current window ends (chain time).
    held: HashMap<ChannelId, u64>,
    /// Agreed cooperative closes, per channel.
    closes: BTreeMap<ChannelId, closes::Tracked>,
    stats: WorkerStats,
    observer: Option<TickObserver>,
}

impl<S: CheckpointSource> SettlementWorker<S> {
    /// A worker claiming as `client.sender()` (the payee). `wallet` signs its transactions
    /// locally and must have that address as its default signer ([`ChainError::WalletMismatch`]).
    pub fn new(
        client: TallyClient,
        wallet: EthereumWallet,
        source: S,
        config: SettleConfig,
    ) -> Result<Self, ChainError> {
        let signer = NetworkWallet::<alloy::network::Ethereum>::default_signer_address(&wallet);
        if signer != client.sender() {
            return Err(ChainError::WalletMismatch {
                wallet: signer,
                sender: client.sender(),
            });
        }
        Ok(SettlementWorker {
            client,
            wallet,
            source,
            scan: scan::LogScan::new(
                config.from_block,
                config.log_chunk_blocks,
                config.log_chunks_per_tick,
                config.reorg_depth_blocks,
            ),
            quarantined: BTreeMap::new(),
            config,
            withdrawing: BTreeMap::new(),
            last_timer: Instant::now(),
            in_flight: None,
            known: HashMap::new(),
            unpaid: BTreeMap::new(),
            held: HashMap::new(),
            closes: BTreeMap::new(),
            stats: WorkerStats::default(),
            observer: None,
        })
    }

    /// Sets the function [`run`](Self::run) calls after every tick with its outcome.
    pub fn on_tick(
        mut self,
        observer: impl FnMut(&Result<TickReport, ChainError>) + Send + Sync + 'static,
    ) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// Counters kept so far.
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// The newest version of the claim currently in flight, if any.
    pub fn in_flight(&self) -> Option<B256> {
        self.in_flight.as_ref().map(|f| f.newest.hash)
    }

    /// The next block the `WithdrawInitiated` scan will read.
    pub fn scan_cursor(&self) -> u64 {
        self.scan.next_block
    }

    /// Blocks the next `WithdrawInitiated` request asks for (shrinks after refusals).
    pub fn scan_chunk(&self) -> u64 {
        self.scan.chunk
    }

    /// Channels quarantined after a mined batch skipped them, with the reason.
    pub fn quarantined(&self) -> &BTreeMap<ChannelId, String> {
        &self.quarantined
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
            let outcome = self.tick().await;
            if let Some(observe) = self.observer.as_mut() {
                observe(&outcome);
            }
            match outcome {
                Ok(_) => delay = self.config.poll_interval,
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

    /// One round: settle the in-flight claim, scan withdraw events, claim what is due: an
    /// urgent channel alone if there is one, else a batch, else a quarantined channel alone;
    /// with nothing claimed, submit a due agreed close; with nothing sent, pay out.
    pub async fn tick(&mut self) -> Result<TickReport, ChainError> {
        let mut report = TickReport::default();
        if !self.check_in_flight(&mut report, true).await? {
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
        let parties = (self.client.address(), self.client.sender());
        let scanned = self
            .scan
            .run(
                &provider,
                parties,
                head,
                now,
                &mut self.withdrawing,
                &mut report,
            )
            .await;
        if scanned.failed {
            self.stats.scan_errors += 1;
        }
        // A channel with an agreed close is closed, not claimed (spec/CHAIN.md §9).
        self.learn_closes(now).await?;
        latest.retain(|id, _| !self.close_pending(id, now));
        // Past its deadline a withdrawing channel can no longer be claimed.
        self.withdrawing.retain(|_, at| *at > now);
        // While the scan lags, events may be unseen: read every channel with news instead.
        let scan_behind = !scanned.caught_up;

        let timer_due = self.last_timer.elapsed() >= self.config.claim_interval;
        let candidates = self
            .candidates(
                &latest,
                now,
                timer_due || scan_behind,
                timer_due,
                &mut report,
            )
            .await?;
        let cut = self.claim_candidates(candidates, now, &mut report).await?;
        // The timer restarts only if nothing due was cut; a channel held for its window waits
        // for the next timer, or its threshold, after the window.
        if timer_due && cut == 0 {
            self.last_timer = Instant::now();
        }
        if self.in_flight.is_none() {
            self.submit_due_close(now, &mut report).await?;
        }
        if self.in_flight.is_none() {
            self.pay_out(now, &mut report).await?;
        }
        Ok(report)
    }

    /// Reads the chain for every channel with news (all of them when `read_all`) and returns
    /// the ones due for a claim.
    async fn candidates(
        &mut self,
        latest: &BTreeMap<ChannelId, ChainCheckpoint>,
        now: u64,
        read_all: bool,
        timer_due: bool,
        report: &mut TickReport,
    ) -> Result<Vec<Candidate>, ChainError> {
        let mut candidates = Vec::new();
        for (id, cp) in latest {
            let (known_size, known_claimed) = self.known.get(id).copied().unwrap_or((0, 0));
            let urgent = self.withdrawing.contains_key(id);
            // On the timer every channel is read again, even one we believe claimed up to
            // this checkpoint: a reorg may have undone that claim. A withdrawing channel is
            // read on every tick for the same reason, since its window is closing (§9).
            if cp.checkpoint.size <= known_size && !timer_due && !urgent {
                continue;
            }
            // Held for its challenge window: not read again before it ends (unless urgent or
            // on the timer), so a busy channel costs no read per tick meanwhile.
            if !urgent && !timer_due && self.held.get(id).is_some_and(|end| *end > now) {
                continue;
            }
            let estimate = cp.checkpoint.cumulative.saturating_sub(known_claimed);
            if !(urgent || read_all || estimate >= self.config.threshold) {
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
            self.note_unpaid(&state, now);
            if !state.claimable_at(now) {
                self.withdrawing.remove(id);
                continue;
            }
            match state.withdraw {
                WithdrawState::Pending { at } => {
                    if self.withdrawing.insert(*id, at).is_none() {
                        report.withdraw_seen.push(*id);
                    }
                }
                // The withdrawal we saw was undone by a reorg: the chain's word wins.
                _ => {
                    self.withdrawing.remove(id);
                }
            }
            if !state.accepts_claim(cp.checkpoint.size, cp.checkpoint.cumulative) {
                continue;
            }
            if let Some(why) = self.unclaimable(&state, cp) {
                report.rejected.push((*id, why));
                continue;
            }
            let payout = state.payout_for(cp.checkpoint.cumulative);
            let why = match self.withdrawing.get(id) {
                Some(&at) if payout > 0 => Why::Withdrawing { at },
                _ if payout >= self.config.threshold => Why::OverThreshold,
                _ if payout > 0 && timer_due => Why::Timer,
                _ => continue,
            };
            // A claim inside the current state's challenge window restarts it and postpones
            // the payout; outside a withdrawal the worker waits for the window (§9).
            if !matches!(why, Why::Withdrawing { .. }) && state.settle_at > now {
                report.in_window.push(*id);
                self.held.insert(*id, state.settle_at);
                continue;
            }
            self.held.remove(id);
            candidates.push(Candidate {
                why,
                token: state.token,
                payout,
                capped: cp.checkpoint.cumulative.min(state.deposit),
                cp: *cp,
            });
        }
        Ok(candidates)
    }

    /// Sends at most one claim for `candidates`: the most urgent channel alone if any is
    /// within the deadline margin, else a batch of the non-quarantined ones, else one
    /// quarantined channel alone. Returns how many due channels were left waiting.
    async fn claim_candidates(
        &mut self,
        candidates: Vec<Candidate>,
        now: u64,
        report: &mut TickReport,
    ) -> Result<usize, ChainError> {
        let margin = self.config.deadline_margin.as_secs();
        let (mut alone, rest): (Vec<Candidate>, Vec<Candidate>) = candidates.into_iter().partition(
            |c| matches!(c.why, Why::Withdrawing { at } if at.saturating_sub(now) <= margin),
        );
        let (mut suspects, normal): (Vec<Candidate>, Vec<Candidate>) = rest
            .into_iter()
            .partition(|c| self.quarantined.contains_key(&c.cp.checkpoint.channel_id));
        let waiting = alone.len() + suspects.len() + normal.len();
        // Urgent ones go first, earliest deadline first; they are never batched.
        alone.sort_by_key(|c| (c.why, c.cp.checkpoint.channel_id));
        for c in alone {
            if self.submit_alone(&c, true, report).await? {
                report.urgent = Some(c.cp.checkpoint.channel_id);
                self.stats.urgent += 1;
                report.deferred = waiting - 1;
                return Ok(waiting - 1);
            }
        }
        let (chosen, cut) = choose_batch(normal, self.config.max_batch);
        let expected: HashMap<ChannelId, u128> = chosen
            .iter()
            .map(|c| (c.cp.checkpoint.channel_id, c.capped))
            .collect();
        let mut batch: Vec<ChainCheckpoint> = chosen.into_iter().map(|c| c.cp).collect();
        if !batch.is_empty() {
            // A batch that would skip an entry is split: only entries `claim` accepts stay.
            match self.client.simulate_claim_many(&batch).await {
                Ok(0) => {}
                Err(e) if e.is_transient() => return Err(e),
                Ok(_) | Err(_) => batch = self.isolate_failures(batch, report).await?,
            }
        }
        if !batch.is_empty() {
            self.submit(&batch, &expected, None, report).await?;
            report.deferred = cut + suspects.len();
            return Ok(cut + suspects.len());
        }
        suspects.sort_by_key(|c| (c.why, Reverse(c.payout), c.cp.checkpoint.channel_id));
        for c in suspects {
            if self.submit_alone(&c, false, report).await? {
                report.deferred = waiting - 1;
                return Ok(waiting - 1);
            }
        }
        report.deferred = cut;
        Ok(cut)
    }
}
