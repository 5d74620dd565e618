//! The `WithdrawInitiated` log scan: chunked, filtered on this payee, and adaptive about how
//! wide a range the node accepts (spec/CHAIN.md §6).

use std::collections::BTreeMap;

use alloy::primitives::Address;
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::Filter;
use alloy::sol_types::SolEvent;
use tally_core::ChannelId;

use super::TickReport;
use crate::contract::Tally;
use crate::error::ChainError;

/// Where the scan is and how wide its next request may be.
pub(super) struct LogScan {
    /// The next block to read.
    pub(super) next_block: u64,
    /// Blocks the next `eth_getLogs` asks for: halved after a refusal (down to 1), doubled
    /// after each success (up to `max_chunk`). A node that refuses wide ranges, or a range
    /// with too many logs, therefore never stalls the scan for good.
    pub(super) chunk: u64,
    max_chunk: u64,
    per_tick: u32,
    /// The first block ever scanned (`from_block`): rewinds never go below it.
    from_block: u64,
    /// Blocks below the head rescanned every tick (`reorg_depth_blocks`).
    depth: u64,
}

/// What the scan saw, for the worker's counters.
pub(super) struct ScanOutcome {
    /// Whether a request failed this tick (the last failure is in the report).
    pub(super) failed: bool,
    /// Whether the cursor reached past the head (every block up to the head was read).
    pub(super) caught_up: bool,
}

impl LogScan {
    pub(super) fn new(from_block: u64, max_chunk: u64, per_tick: u32, depth: u64) -> Self {
        let max_chunk = max_chunk.max(1);
        LogScan {
            next_block: from_block,
            chunk: max_chunk,
            max_chunk,
            per_tick: per_tick.max(1),
            from_block,
            depth,
        }
    }

    /// Moves the cursor back so the last `depth` blocks up to `head` are read again
    /// (spec/CHAIN.md §9, "Reorgs"): a block the scan already read may since have been
    /// replaced by one carrying a `WithdrawInitiated` event. A cursor still catching up (below
    /// that window) is left alone.
    pub(super) fn rewind(&mut self, head: u64) {
        let floor = head
            .saturating_add(1)
            .saturating_sub(self.depth)
            .max(self.from_block);
        self.next_block = self.next_block.min(floor);
    }

    /// Reads `WithdrawInitiated` logs of `payee`'s channels (the payee is an indexed topic,
    /// so the node filters out everyone else's) from the cursor towards `head`, at most
    /// `per_tick` requests. The cursor moves after each chunk read. A failed request is
    /// retried from the same block with half the chunk (within the budget); a failure at one
    /// block ends the scan for this tick, and the same block is retried next tick. The cursor
    /// is first rewound to cover the last `depth` blocks ([`rewind`](Self::rewind)).
    pub(super) async fn run(
        &mut self,
        provider: &DynProvider,
        (contract, payee): (Address, Address),
        head: u64,
        now: u64,
        withdrawing: &mut BTreeMap<ChannelId, u64>,
        report: &mut TickReport,
    ) -> ScanOutcome {
        let mut failed = false;
        self.rewind(head);
        for _ in 0..self.per_tick {
            if self.next_block > head {
                break;
            }
            let to = head.min(self.next_block.saturating_add(self.chunk - 1));
            let filter = Filter::new()
                .address(contract)
                .event_signature(Tally::WithdrawInitiated::SIGNATURE_HASH)
                .topic2(payee.into_word())
                .from_block(self.next_block)
                .to_block(to);
            let logs = match provider.get_logs(&filter).await {
                Ok(logs) => logs,
                Err(e) => {
                    report.scan_error = Some(format!(
                        "eth_getLogs {}..={to}: {}",
                        self.next_block,
                        ChainError::from(e)
                    ));
                    failed = true;
                    if self.chunk == 1 {
                        break;
                    }
                    self.chunk /= 2;
                    continue;
                }
            };
            for log in logs {
                // Every event counts, also for channels without a checkpoint yet: one may
                // arrive during the delay. The payee check guards against a node that
                // ignores the topic filter.
                let Ok(event) = log.log_decode::<Tally::WithdrawInitiated>() else {
                    continue;
                };
                if event.inner.data.payee != payee {
                    continue;
                }
                let id = ChannelId(event.inner.data.channelId.0);
                let at = event.inner.data.withdrawAt;
                if at > now && withdrawing.insert(id, at).is_none() {
                    report.withdraw_seen.push(id);
                }
            }
            self.next_block = to + 1;
            self.chunk = self.chunk.saturating_mul(2).min(self.max_chunk);
        }
        ScanOutcome {
            failed,
            caught_up: self.next_block > head,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewind_rereads_the_last_depth_blocks_but_not_below_from_block() {
        let mut s = LogScan::new(5, 100, 1, 12);
        s.next_block = 101;
        s.rewind(100);
        assert_eq!(s.next_block, 89, "blocks 89..=100 again");
        // Catching up below the window: left alone.
        s.next_block = 40;
        s.rewind(100);
        assert_eq!(s.next_block, 40);
        // Never below from_block.
        s.next_block = 11;
        s.rewind(10);
        assert_eq!(s.next_block, 5);
        let mut off = LogScan::new(0, 100, 1, 0);
        off.next_block = 101;
        off.rewind(100);
        assert_eq!(off.next_block, 101);
    }
}
