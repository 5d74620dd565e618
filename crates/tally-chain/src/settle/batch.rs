//! Which due channels one `claimMany` takes, and in what order (spec/CHAIN.md §9). Pure.

use std::cmp::Reverse;

use alloy::primitives::Address;

use crate::eip712::ChainCheckpoint;

/// Why a channel is in the candidate list; the order is the batch priority.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Why {
    /// Withdrawing: claims stop at `at`.
    Withdrawing {
        at: u64,
    },
    OverThreshold,
    Timer,
}

#[derive(Clone, Debug)]
pub(super) struct Candidate {
    pub(super) why: Why,
    pub(super) token: Address,
    pub(super) payout: u128,
    /// What the channel's claimed amount becomes (cumulative capped at the deposit).
    pub(super) capped: u128,
    pub(super) cp: ChainCheckpoint,
}

/// Picks at most `max` candidates: withdrawing channels first (earliest deadline first), then
/// over-threshold ones, then timer-due ones, larger payouts first within a class. The chosen
/// ones are ordered by token (then id) so claimMany merges their transfers. Returns them and
/// how many were left out.
pub(super) fn choose_batch(mut all: Vec<Candidate>, max: usize) -> (Vec<Candidate>, usize) {
    let max = max.max(1);
    all.sort_by_key(|c| (c.why, Reverse(c.payout), c.cp.checkpoint.channel_id));
    let cut = all.len().saturating_sub(max);
    all.truncate(max);
    all.sort_by_key(|c| (c.token, c.cp.checkpoint.channel_id));
    (all, cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eip712::Eip712Sig;
    use alloy::primitives::B256;

    fn cand(n: u8, why: Why, token: u8, payout: u128) -> Candidate {
        Candidate {
            why,
            token: Address::repeat_byte(token),
            payout,
            capped: payout,
            cp: ChainCheckpoint {
                checkpoint: crate::eip712::checkpoint(B256::repeat_byte(n), 1, B256::ZERO, 1),
                sig: Eip712Sig {
                    v: 27,
                    r: B256::ZERO,
                    s: B256::ZERO,
                },
            },
        }
    }

    fn ids(c: &[Candidate]) -> Vec<u8> {
        c.iter().map(|c| c.cp.checkpoint.channel_id.0[0]).collect()
    }

    #[test]
    fn batch_takes_withdrawing_then_threshold_then_timer_and_orders_by_token() {
        let all = vec![
            cand(1, Why::Timer, 1, 900),
            cand(2, Why::OverThreshold, 2, 5_000),
            cand(3, Why::Withdrawing { at: 200 }, 3, 1),
            cand(4, Why::Timer, 1, 10),
            cand(5, Why::OverThreshold, 1, 7_000),
            cand(6, Why::Withdrawing { at: 100 }, 2, 1),
        ];
        // Room for four: both withdrawing, both over threshold; timer-due ones are cut.
        let (chosen, cut) = choose_batch(all.clone(), 4);
        assert_eq!(cut, 2);
        // Sorted by token, then id.
        assert_eq!(ids(&chosen), vec![5, 2, 6, 3]);
        // Room for one: the earliest withdrawal deadline.
        let (chosen, cut) = choose_batch(all.clone(), 1);
        assert_eq!((ids(&chosen), cut), (vec![6], 5));
        // Room for five: the larger timer payout goes first.
        let (chosen, cut) = choose_batch(all.clone(), 5);
        assert_eq!((ids(&chosen), cut), (vec![1, 5, 2, 6, 3], 1));
        let (chosen, cut) = choose_batch(all, 100);
        assert_eq!((chosen.len(), cut), (6, 0));
        // max_batch 0 still makes progress.
        let (chosen, _) = choose_batch(vec![cand(9, Why::Timer, 1, 1)], 0);
        assert_eq!(ids(&chosen), vec![9]);
    }
}
