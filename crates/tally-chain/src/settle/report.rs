//! What the worker reports: per tick ([`TickReport`]) and in total ([`WorkerStats`]), for
//! tests, logs and monitoring (spec/CHAIN.md §9).

use alloy::primitives::B256;
use tally_core::ChannelId;

/// What one tick did, for tests and monitoring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TickReport {
    /// A new claim transaction signed and sent this tick, with the channels it covers.
    pub submitted: Option<(B256, Vec<ChannelId>)>,
    /// A `payoutMany` signed and sent this tick, with the channels it pays out.
    pub payout: Option<(B256, Vec<ChannelId>)>,
    /// Why a due payout could not be sent this tick (e.g. the token is paused); retried later.
    pub payout_error: Option<String>,
    /// Channels with a newer checkpoint whose current state is still in its challenge window:
    /// not claimed now, so that window can end and its amount be paid out.
    pub in_window: Vec<ChannelId>,
    /// A replacement for the claim in flight (same nonce, higher fees) sent this tick.
    pub resent: Option<B256>,
    /// The claim in flight was broadcast again, unchanged, because the node did not know it.
    pub rebroadcast: Option<B256>,
    /// A claim transaction whose receipt is now deep enough, and whether it succeeded.
    pub confirmed: Option<(B256, bool)>,
    /// The claim in flight's nonce was used by a transaction that is none of its versions;
    /// the worker dropped it and re-reads the chain. The hash is its newest version.
    pub abandoned: Option<B256>,
    /// Set when a claim is still in flight (unmined, or mined but not yet deep enough), so
    /// nothing new was sent.
    pub waiting_on: Option<B256>,
    /// Channels newly seen entering a withdrawal.
    pub withdraw_seen: Vec<ChannelId>,
    /// Why the `WithdrawInitiated` scan stopped early this tick, if it failed.
    pub scan_error: Option<String>,
    /// Checkpoints the contract would reject (bad signature, stale, not ours), with why.
    pub rejected: Vec<(ChannelId, String)>,
    /// Due channels left out of this tick's batch by `max_batch`, or waiting because an
    /// urgent claim went first.
    pub deferred: usize,
    /// The channel claimed alone this tick because its claim window ends within
    /// `deadline_margin`.
    pub urgent: Option<ChannelId>,
    /// Entries the claim confirmed this tick skipped (`ClaimSkipped`), with the contract
    /// error's name; these channels are now quarantined.
    pub skipped: Vec<(ChannelId, String)>,
    /// An agreed cooperative close the worker signed and sent this tick (nobody submitted it
    /// within `close_timeout`, or the channel is withdrawing), with its channel.
    pub close: Option<(B256, ChannelId)>,
    /// A close the worker sent that is now confirmed: the channel is closed at the agreed
    /// split.
    pub closed: Option<ChannelId>,
    /// Agreed closes the contract would refuse now (simulated), with why; the channel is
    /// claimed as usual and the close tried again later.
    pub close_rejected: Vec<(ChannelId, String)>,
}

/// Counters kept by the worker.
#[derive(Clone, Debug, Default)]
pub struct WorkerStats {
    /// Ticks attempted by [`SettlementWorker::run`].
    pub ticks: u64,
    /// Ticks that failed.
    pub errors: u64,
    /// The last failure.
    pub last_error: Option<String>,
    /// The first version of every claim signed.
    pub submitted: Vec<B256>,
    /// Every fee-bumped replacement signed.
    pub resent: Vec<B256>,
    /// `WithdrawInitiated` scans that failed (the tick went on).
    pub scan_errors: u64,
    /// Entries of mined batches the contract skipped.
    pub skipped: u64,
    /// Channels quarantined after a skip (never batched again), in the order found.
    pub quarantined: Vec<ChannelId>,
    /// Urgent single claims sent (deadline within the margin).
    pub urgent: u64,
    /// Every `payoutMany` signed, in order.
    pub payouts: Vec<B256>,
    /// Every `cooperativeClose` signed (first versions), in order.
    pub closes: Vec<B256>,
}
