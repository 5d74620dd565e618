//! What the console shows, gathered from the gateway's own sources (spec/HTTP.md §11.3): the
//! channel state the state endpoint answers, the funding view admission uses, the metrics
//! registry `/metrics` renders, the log store's records, and the settlement worker's ticks.
//! Nothing here keeps numbers of its own: there is no second source of truth.
//!
//! The work is bounded: at most [`MAX_CHANNELS`] channels, and of each at most its newest
//! [`MAX_RECORDS_PER_CHANNEL`] records, of which those of the last [`ACTIVITY_WINDOW`] are
//! charted.

use std::time::Duration;

use serde::Serialize;
use tally_chain::funding::WithdrawState;
use tally_chain::ChannelFunding;
use tally_core::encoding::Canonical;
use tally_core::{ChannelId, Record};
use tally_http::Amount;

use super::settlement::SettlementState;
use crate::errors::GatewayError;
use crate::gateway::Gateway;

/// Channels shown, in the log's (channel id) order.
pub const MAX_CHANNELS: usize = 200;
/// Newest records read per channel for the activity charts and the credit list.
pub const MAX_RECORDS_PER_CHANNEL: u64 = 2_000;
/// The span the activity charts cover, ending now.
pub const ACTIVITY_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Bars in an activity chart at most.
pub const MAX_BUCKETS: usize = 48;
/// Credits listed, newest first (the rest are in the totals and the log).
pub const MAX_CREDITS: usize = 200;

/// Everything the console page shows; also the body of `GET /tally/console/data.json`.
#[derive(Clone, Debug, Serialize)]
pub struct ConsoleData {
    /// When this was gathered (unix ms).
    pub generated_at_ms: u64,
    /// The provider's ed25519 key.
    pub provider_key: String,
    /// The chain id, the token and the payee the gateway serves.
    pub chain_id: u64,
    /// The token (ERC-20 address).
    pub asset: String,
    /// The payee.
    pub pay_to: String,
    /// The token's decimals, if configured (`token_decimals`); amounts are base units.
    pub decimals: Option<u8>,
    /// Channels with records in the log (all of them, shown or not).
    pub channels_in_log: usize,
    /// The first [`MAX_CHANNELS`] of them.
    pub channels: Vec<ChannelRow>,
    /// The metrics registry's counters since start.
    pub totals: Totals,
    /// Refusals by reason code since start (metrics registry).
    pub refusals: Vec<Refusal>,
    /// Calls and revenue over time (log records).
    pub activity: Activity,
    /// Credit records (dispute refunds) among the records read, newest first.
    pub credits: Vec<CreditRow>,
    /// The settlement worker's claims.
    pub settlement: SettlementState,
}

/// One channel's row.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelRow {
    /// The channel id (hex).
    pub channel_id: String,
    /// Durable records.
    pub size: u64,
    /// Cumulative net amount at `size`.
    pub cumulative: Amount,
    /// Size of the latest client-signed checkpoint (0 if none).
    pub checkpoint_size: u64,
    /// Its cumulative.
    pub checkpoint_cumulative: Amount,
    /// Whether the channel waits for its client's restore (spec/HTTP.md §5.6).
    pub restore_required: bool,
    /// The onchain view, if the chain answered.
    pub funding: Option<FundingRow>,
    /// Why there is no onchain view.
    pub funding_error: Option<String>,
    /// Why the channel's state could not be read now (its numbers are then zero and not
    /// shown); one such channel does not take the page down.
    pub state_error: Option<String>,
}

/// A channel's onchain state (the gateway's funding cache).
#[derive(Clone, Debug, Serialize)]
pub struct FundingRow {
    /// Total deposited.
    pub deposit: Amount,
    /// The capped cumulative of the state claimed onchain.
    pub claimed: Amount,
    /// Log size of that state.
    pub claimed_size: u64,
    /// Paid out to the payee so far.
    pub paid: Amount,
    /// End of the claimed state's challenge window (unix s; 0 before any claim).
    pub settle_at: u64,
    /// `open`, `withdrawing` or `closed`.
    pub withdraw: &'static str,
    /// While withdrawing: the time claims stop (unix s).
    pub withdraw_deadline: Option<u64>,
    /// The channel's withdraw delay (s).
    pub withdraw_delay: u32,
}

/// The metrics registry's counters.
#[derive(Clone, Debug, Serialize)]
pub struct Totals {
    /// Paid requests recorded.
    pub metered: u64,
    /// Requests on free routes.
    pub free: u64,
    /// Retries answered from a stored record.
    pub replays: u64,
    /// Checkpoints accepted.
    pub checkpoints: u64,
    /// Sum of charges.
    pub charged: Amount,
    /// Sum of credits.
    pub credited: Amount,
}

/// Refusals of one reason.
#[derive(Clone, Debug, Serialize)]
pub struct Refusal {
    /// The reason code (spec/HTTP.md §8).
    pub reason: String,
    /// How many.
    pub count: u64,
}

/// Calls and revenue per time bucket and channel.
#[derive(Clone, Debug, Serialize)]
pub struct Activity {
    /// Start of the first bucket (unix ms).
    pub start_ms: u64,
    /// Bucket width (ms).
    pub step_ms: u64,
    /// Buckets.
    pub buckets: usize,
    /// Records read per channel at most.
    pub max_records_per_channel: u64,
    /// One entry per channel with records in the window.
    pub series: Vec<ActivitySeries>,
}

/// One channel's buckets.
#[derive(Clone, Debug, Serialize)]
pub struct ActivitySeries {
    /// The channel id (hex).
    pub channel_id: String,
    /// Charged records per bucket (a credit record is not a call).
    pub calls: Vec<u64>,
    /// Sum of charges per bucket.
    pub revenue: Vec<Amount>,
}

/// A credit record.
#[derive(Clone, Debug, Serialize)]
pub struct CreditRow {
    /// The channel id (hex).
    pub channel_id: String,
    /// The credit record's index.
    pub index: u64,
    /// The amount credited.
    pub amount: Amount,
    /// When (unix ms).
    pub time_ms: u64,
}

/// The bucket grid of the activity window ending at `now_ms`: (start, step, buckets).
pub fn grid(now_ms: u64) -> (u64, u64, usize) {
    let window = ACTIVITY_WINDOW.as_millis() as u64;
    let step = tally_chart::step_for(window, MAX_BUCKETS);
    let n = window.div_ceil(step);
    let end = (now_ms / step + 1).saturating_mul(step);
    (end.saturating_sub(n * step), step, n as usize)
}

/// Gathers the console's data now.
pub async fn gather(gw: &Gateway, now_ms: u64) -> Result<ConsoleData, GatewayError> {
    let store = gw.log()?;
    let all = store.channels().await?;
    let ids: Vec<ChannelId> = all.iter().take(MAX_CHANNELS).copied().collect();
    let mut channels = Vec::with_capacity(ids.len());
    for id in &ids {
        channels.push(channel_row(gw, id).await);
    }
    let (start_ms, step_ms, buckets) = grid(now_ms);
    let mut fetched = Vec::with_capacity(ids.len());
    for id in &ids {
        let size = store.head(id).await?.map_or(0, |h| h.size);
        let from = size.saturating_sub(MAX_RECORDS_PER_CHANNEL);
        fetched.push((*id, store.records(id, from..size).await?));
    }
    let (series, credits) =
        tokio::task::spawn_blocking(move || scan(fetched, (start_ms, step_ms, buckets)))
            .await
            .map_err(|e| GatewayError::internal(format!("console scan: {e}")))??;
    let m = gw.metrics();
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let chain = &gw.terms().chain;
    Ok(ConsoleData {
        generated_at_ms: now_ms,
        provider_key: gw.public_key().to_string(),
        chain_id: chain.chain_id,
        asset: chain.asset.clone(),
        pay_to: chain.pay_to.clone(),
        decimals: gw.settings().token_decimals,
        channels_in_log: all.len(),
        channels,
        totals: Totals {
            metered: load(&m.metered),
            free: load(&m.free),
            replays: load(&m.replays),
            checkpoints: load(&m.checkpoints),
            charged: Amount(m.charged.lock().map(|v| *v).unwrap_or(0)),
            credited: Amount(m.credited.lock().map(|v| *v).unwrap_or(0)),
        },
        refusals: m
            .refusals()
            .into_iter()
            .map(|(reason, count)| Refusal {
                reason: reason.to_string(),
                count,
            })
            .collect(),
        activity: Activity {
            start_ms,
            step_ms,
            buckets,
            max_records_per_channel: MAX_RECORDS_PER_CHANNEL,
            series,
        },
        credits,
        settlement: gw.settlement_view().snapshot(),
    })
}

/// A channel's row: its state as the state endpoint answers it, and its funding as
/// admission last read it (the funding cache, whatever its age).
async fn channel_row(gw: &Gateway, id: &ChannelId) -> ChannelRow {
    // What admission last read, never a new chain read: a page load must not spend the RPC
    // quota or the cold-read bucket paying clients need.
    let (funding, funding_error) = match gw.inner.funding.peek(id) {
        Some(f) => (Some(funding_row(&f)), None),
        None => (
            None,
            Some("not read from the chain since this gateway started".to_string()),
        ),
    };
    let mut row = ChannelRow {
        channel_id: id.to_hex(),
        size: 0,
        cumulative: Amount(0),
        checkpoint_size: 0,
        checkpoint_cumulative: Amount(0),
        restore_required: false,
        funding,
        funding_error,
        state_error: None,
    };
    match gw.channel_state(id).await {
        Ok(st) => {
            row.size = st.size;
            row.cumulative = st.cumulative;
            row.checkpoint_size = st.checkpoint_size;
            row.checkpoint_cumulative = st.checkpoint_cumulative;
            row.restore_required = st.restore_required;
        }
        Err(e) => row.state_error = Some(crate::redact::redact_text(&e.message)),
    }
    row
}

fn funding_row(f: &ChannelFunding) -> FundingRow {
    let (withdraw, withdraw_deadline) = match f.withdraw {
        WithdrawState::None => ("open", None),
        WithdrawState::Pending { at } => ("withdrawing", Some(at)),
        WithdrawState::Closed => ("closed", None),
    };
    FundingRow {
        deposit: Amount(f.deposit),
        claimed: Amount(f.claimed),
        claimed_size: f.claimed_size,
        paid: Amount(f.paid),
        settle_at: f.settle_at,
        withdraw,
        withdraw_deadline,
        withdraw_delay: f.withdraw_delay,
    }
}

type Scanned = (Vec<ActivitySeries>, Vec<CreditRow>);

/// Buckets each channel's newest records (CPU work: run off the async workers).
fn scan(
    fetched: Vec<(ChannelId, Vec<Vec<u8>>)>,
    (start_ms, step_ms, n): (u64, u64, usize),
) -> Result<Scanned, GatewayError> {
    let mut series = Vec::new();
    let mut credits = Vec::new();
    for (id, records) in fetched {
        let mut calls = vec![0u64; n];
        let mut revenue = vec![0u128; n];
        let mut seen = false;
        for bytes in records {
            let r = Record::from_bytes(&bytes)
                .map_err(|e| GatewayError::internal(format!("stored record: {e}")))?;
            let o = &r.outcome;
            if o.amount < 0 {
                credits.push(CreditRow {
                    channel_id: id.to_hex(),
                    index: o.index,
                    amount: Amount(o.amount.unsigned_abs()),
                    time_ms: o.time_ms,
                });
                continue;
            }
            let Some(k) = o
                .time_ms
                .checked_sub(start_ms)
                .map(|d| (d / step_ms) as usize)
                .filter(|k| *k < n)
            else {
                continue;
            };
            seen = true;
            calls[k] += 1;
            revenue[k] = revenue[k].saturating_add(o.amount.unsigned_abs());
        }
        if seen {
            series.push(ActivitySeries {
                channel_id: id.to_hex(),
                calls,
                revenue: revenue.into_iter().map(Amount).collect(),
            });
        }
    }
    credits.sort_by_key(|c| std::cmp::Reverse(c.time_ms));
    credits.truncate(MAX_CREDITS);
    Ok((series, credits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_covers_the_window_and_now() {
        let now = 1_796_612_991_000;
        let (start, step, n) = grid(now);
        assert_eq!(step, 30 * 60 * 1000);
        assert_eq!(n, 48);
        assert!(
            start + (n as u64) * step > now,
            "now falls in the last bucket"
        );
        assert!(start <= now - ACTIVITY_WINDOW.as_millis() as u64 + step);
        assert_eq!(start % step, 0, "buckets start on the step");
    }
}
