//! A claim's EIP-1559 fees: the first version's bid under an optional cap, and the raise a
//! same-nonce replacement needs to be accepted by the node (spec/CHAIN.md §9). Pure.

/// The EIP-1559 fees one version of a claim bids, in wei per gas.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeeBid {
    /// `maxFeePerGas`.
    pub max_fee_per_gas: u128,
    /// `maxPriorityFeePerGas`.
    pub max_priority_fee_per_gas: u128,
}

/// The minimum raise of both fees for a replacement: 1/8 (12.5%). geth and reth refuse a
/// same-nonce replacement that raises either fee by less than 10%.
pub const FEE_BUMP: (u128, u128) = (1, 8);

fn raised(x: u128) -> u128 {
    let (num, den) = FEE_BUMP;
    let step = (x.saturating_mul(num)).div_ceil(den).max(1);
    x.saturating_add(step)
}

/// The first version's fees: the market estimate, limited by `cap`.
pub fn initial_fees(market: FeeBid, cap: Option<u128>) -> FeeBid {
    let max_fee = cap.map_or(market.max_fee_per_gas, |c| market.max_fee_per_gas.min(c));
    FeeBid {
        max_fee_per_gas: max_fee,
        max_priority_fee_per_gas: market.max_priority_fee_per_gas.min(max_fee),
    }
}

/// What an urgent claim bids at its deadline, as a multiple of the market estimate.
pub const URGENT_MAX_MULTIPLIER: u128 = 4;

/// The market estimate scaled for an urgent claim (spec/CHAIN.md §9, "Fees near a deadline"):
/// `remaining` seconds before the claim window closes, with a `margin` (the worker's
/// `deadline_margin`, in seconds) inside which claims are urgent. Both fees are multiplied by
/// a factor that rises linearly from 1 with `margin` or more left to
/// [`URGENT_MAX_MULTIPLIER`] at the deadline, rounded up. A claim mined after the deadline
/// pays the payee nothing, so overpaying for inclusion near it is the cheaper mistake. The
/// result still goes through [`initial_fees`] or [`bumped_fees`], so the cap applies.
pub fn urgent_fees(market: FeeBid, remaining: u64, margin: u64) -> FeeBid {
    let left = u128::from(remaining.min(margin));
    let margin = u128::from(margin);
    // factor = 1 + (MAX - 1) * (margin - left) / margin = num / den
    let (num, den) = if margin == 0 {
        (1, 1)
    } else {
        (
            margin + (URGENT_MAX_MULTIPLIER - 1) * (margin - left),
            margin,
        )
    };
    let scale = |x: u128| x.checked_mul(num).map_or(u128::MAX, |v| v.div_ceil(den));
    FeeBid {
        max_fee_per_gas: scale(market.max_fee_per_gas),
        max_priority_fee_per_gas: scale(market.max_priority_fee_per_gas),
    }
}

/// The fees of a replacement for a version that bid `prev`: each fee raised by at least
/// [`FEE_BUMP`], and at least the current `market` estimate. `None` when `cap` does not leave
/// room for a raise the node would accept (then the worker keeps waiting).
pub fn bumped_fees(prev: FeeBid, market: FeeBid, cap: Option<u128>) -> Option<FeeBid> {
    let floor_max = raised(prev.max_fee_per_gas);
    let floor_tip = raised(prev.max_priority_fee_per_gas);
    let mut max_fee = floor_max.max(market.max_fee_per_gas);
    let mut tip = floor_tip.max(market.max_priority_fee_per_gas);
    if let Some(cap) = cap {
        if floor_max > cap || floor_tip > cap {
            return None;
        }
        max_fee = max_fee.min(cap);
        tip = tip.min(max_fee);
    }
    Some(FeeBid {
        max_fee_per_gas: max_fee.max(tip),
        max_priority_fee_per_gas: tip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bid(max: u128, tip: u128) -> FeeBid {
        FeeBid {
            max_fee_per_gas: max,
            max_priority_fee_per_gas: tip,
        }
    }

    #[test]
    fn replacement_raises_both_fees_by_at_least_an_eighth() {
        let prev = bid(2_000_000_000, 1_000_000_000);
        let b = bumped_fees(prev, bid(1, 1), None).unwrap();
        assert_eq!(b, bid(2_250_000_000, 1_125_000_000));
        // Rounding up, and a zero tip still moves.
        let b = bumped_fees(bid(9, 0), bid(0, 0), None).unwrap();
        assert_eq!(b, bid(11, 1));
        // A market above the raise wins.
        let b = bumped_fees(prev, bid(5_000_000_000, 3_000_000_000), None).unwrap();
        assert_eq!(b, bid(5_000_000_000, 3_000_000_000));
        // Every replacement is strictly above 112.5% of what it replaces.
        let mut f = bid(1_000, 100);
        for _ in 0..20 {
            let n = bumped_fees(f, bid(0, 0), None).unwrap();
            assert!(n.max_fee_per_gas * 8 >= f.max_fee_per_gas * 9);
            assert!(n.max_priority_fee_per_gas * 8 >= f.max_priority_fee_per_gas * 9);
            assert!(n.max_priority_fee_per_gas <= n.max_fee_per_gas);
            f = n;
        }
    }

    #[test]
    fn urgent_fees_rise_from_the_market_at_the_margin_to_four_times_at_the_deadline() {
        let market = bid(1_000, 100);
        // At or beyond the margin: the market estimate.
        assert_eq!(urgent_fees(market, 600, 600), market);
        assert_eq!(urgent_fees(market, 10_000, 600), market);
        // Halfway: 2.5x. At (or past) the deadline: 4x.
        assert_eq!(urgent_fees(market, 300, 600), bid(2_500, 250));
        assert_eq!(urgent_fees(market, 0, 600), bid(4_000, 400));
        // Rounded up, never below the market, and rising as the deadline nears.
        assert_eq!(urgent_fees(bid(3, 1), 599, 600), bid(4, 2));
        let mut last = urgent_fees(market, 600, 600);
        for left in (0..600).rev() {
            let f = urgent_fees(market, left, 600);
            assert!(f.max_fee_per_gas >= last.max_fee_per_gas);
            assert!(f.max_priority_fee_per_gas <= f.max_fee_per_gas);
            last = f;
        }
        // No margin: nothing is urgent, nothing is scaled.
        assert_eq!(urgent_fees(market, 0, 0), market);
        // No overflow, and the cap still applies to what is bid.
        let huge = urgent_fees(bid(u128::MAX, u128::MAX), 0, 600);
        assert_eq!(huge, bid(u128::MAX, u128::MAX));
        let scaled = urgent_fees(market, 0, 600);
        assert_eq!(initial_fees(scaled, Some(2_000)), bid(2_000, 400));
        assert_eq!(
            bumped_fees(market, scaled, Some(2_000)),
            Some(bid(2_000, 400))
        );
    }

    #[test]
    fn the_fee_cap_limits_and_then_stops_replacements() {
        let prev = bid(1_000, 100);
        // The market is above the cap: bid the cap, which is still a valid raise.
        let b = bumped_fees(prev, bid(10_000, 5_000), Some(1_200)).unwrap();
        assert_eq!(b, bid(1_200, 1_200));
        // No valid raise fits under the cap: wait instead.
        assert_eq!(bumped_fees(prev, bid(0, 0), Some(1_100)), None);
        assert_eq!(
            initial_fees(bid(10_000, 5_000), Some(3_000)),
            bid(3_000, 3_000)
        );
        assert_eq!(initial_fees(bid(10_000, 5_000), None), bid(10_000, 5_000));
    }
}
