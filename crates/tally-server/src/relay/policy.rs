//! What the relay agrees to pay gas for (spec/HTTP.md §12.2): pure checks over a signed
//! request and, for a top-up, the channel as the chain holds it. The signatures are checked
//! separately (tally-chain's `verify`); these rules are the provider's own interest: it pays
//! gas only for deposits into its own channels, in its token, that its gateway would accept.

use alloy::primitives::Address;
use tally_chain::{ChannelFunding, DepositAuth, GaslessOpen, GaslessTopUp, WithdrawState};

/// The least time an authorization must still be valid when the relay takes it: longer than
/// a queued send plus mining, so a deposit that simulates successfully does not expire
/// before it is mined and make the relay pay for a revert (spec/HTTP.md §12.2).
pub const MIN_VALIDITY_SECONDS: u64 = 120;

/// The provider's side of every relayed deposit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayPolicy {
    /// The gateway's `pay_to`: the only payee the relay opens channels for.
    pub payee: Address,
    /// The terms' asset: the only token.
    pub token: Address,
    /// The gateway's accepted minimum withdraw delay (a channel below it would be refused
    /// at the first paid call, so its open would be gas wasted).
    pub min_withdraw_delay: u32,
    /// The smallest deposit or top-up relayed: below it, the gas would outweigh the business.
    pub min_deposit: u128,
}

impl RelayPolicy {
    /// Whether the relay opens this channel; `Err` says why not, for the client.
    pub fn check_open(&self, o: &GaslessOpen) -> Result<(), String> {
        if o.payee != self.payee {
            return Err(format!("this relay opens channels to {} only", self.payee));
        }
        self.check_token(o.token)?;
        if o.withdraw_delay < self.min_withdraw_delay {
            return Err(format!(
                "withdraw_delay {} is below this gateway's minimum of {} s",
                o.withdraw_delay, self.min_withdraw_delay
            ));
        }
        self.check_amount(o.amount)
    }

    /// What the relay checks of a top-up before reading its channel: the amount, so dust
    /// costs no chain read.
    pub fn check_top_up_amount(&self, t: &GaslessTopUp) -> Result<(), String> {
        self.check_amount(t.amount)
    }

    /// Whether the relay tops up this channel (`ch` read from the chain).
    pub fn check_top_up(&self, t: &GaslessTopUp, ch: &ChannelFunding) -> Result<(), String> {
        if ch.payee != self.payee {
            return Err(format!(
                "this relay tops up channels to {} only",
                self.payee
            ));
        }
        self.check_token(ch.token)?;
        if ch.withdraw != WithdrawState::None {
            return Err("the channel is closed or withdrawing".into());
        }
        self.check_amount(t.amount)
    }

    /// Whether `auth` is valid now (unix seconds) and stays valid for
    /// [`MIN_VALIDITY_SECONDS`]: an authorization about to expire is refused before any chain
    /// call, so its expiry between simulation and mining cannot cost the relay a revert.
    pub fn check_window(auth: &DepositAuth, now: u64) -> Result<(), String> {
        let (after, until) = match *auth {
            DepositAuth::Eip3009 {
                valid_after,
                valid_before,
                ..
            } => (Some(valid_after), valid_before),
            DepositAuth::Permit { deadline, .. } => (None, deadline),
        };
        if after.is_some_and(|a| a >= now) {
            return Err("the authorization is not valid yet".into());
        }
        if until < now.saturating_add(MIN_VALIDITY_SECONDS) {
            return Err(format!(
                "the authorization expires within {MIN_VALIDITY_SECONDS} s; sign one valid for longer"
            ));
        }
        Ok(())
    }

    fn check_token(&self, token: Address) -> Result<(), String> {
        if token != self.token {
            return Err(format!("this relay moves {} only", self.token));
        }
        Ok(())
    }

    fn check_amount(&self, amount: u128) -> Result<(), String> {
        if amount < self.min_deposit.max(1) {
            return Err(format!(
                "amount {amount} is below this relay's minimum of {}",
                self.min_deposit.max(1)
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::B256;
    use tally_chain::Eip712Sig;
    use tally_core::{ChannelId, Hash};

    fn policy() -> RelayPolicy {
        RelayPolicy {
            payee: Address::repeat_byte(1),
            token: Address::repeat_byte(2),
            min_withdraw_delay: 21_600,
            min_deposit: 1_000,
        }
    }

    fn sig() -> Eip712Sig {
        Eip712Sig {
            v: 27,
            r: B256::repeat_byte(1),
            s: B256::repeat_byte(1),
        }
    }

    fn open() -> GaslessOpen {
        GaslessOpen {
            payer: Address::repeat_byte(9),
            payee: Address::repeat_byte(1),
            token: Address::repeat_byte(2),
            amount: 1_000,
            signer: Address::repeat_byte(8),
            withdraw_delay: 21_600,
            salt: B256::ZERO,
            auth: DepositAuth::Eip3009 {
                valid_after: 0,
                valid_before: 1,
                sig: sig(),
            },
        }
    }

    fn channel() -> ChannelFunding {
        ChannelFunding {
            channel_id: ChannelId([3; 32]),
            payer: Address::repeat_byte(9),
            payee: Address::repeat_byte(1),
            token: Address::repeat_byte(2),
            signer: Address::repeat_byte(8),
            deposit: 5_000,
            claimed: 0,
            claimed_size: 0,
            claimed_root: Hash([0; 32]),
            credit_size: 0,
            settle_at: 0,
            settled: 0,
            paid: 0,
            withdraw_delay: 21_600,
            withdraw: WithdrawState::None,
        }
    }

    #[test]
    fn an_open_to_this_provider_in_its_token_passes() {
        assert_eq!(policy().check_open(&open()), Ok(()));
    }

    /// A refusal's expected words and the change that causes it.
    type Case = (&'static str, fn(&mut GaslessOpen));

    #[test]
    fn an_open_for_another_payee_token_short_delay_or_dust_is_refused() {
        let cases: [Case; 5] = [
            ("opens channels to", |o| o.payee = Address::repeat_byte(7)),
            ("moves", |o| o.token = Address::repeat_byte(7)),
            ("below this gateway's minimum", |o| o.withdraw_delay = 3_600),
            ("below this relay's minimum", |o| o.amount = 999),
            ("below this relay's minimum", |o| o.amount = 0),
        ];
        for (why, change) in cases {
            let mut o = open();
            change(&mut o);
            let err = policy().check_open(&o).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }

    #[test]
    fn a_zero_minimum_still_refuses_a_zero_amount() {
        let p = RelayPolicy {
            min_deposit: 0,
            ..policy()
        };
        let mut o = open();
        o.amount = 0;
        assert!(p.check_open(&o).is_err());
        o.amount = 1;
        assert!(p.check_open(&o).is_ok());
    }

    #[test]
    fn an_authorization_must_be_valid_now_and_for_a_while() {
        let now = 1_000_000;
        let auth = |after, before| DepositAuth::Eip3009 {
            valid_after: after,
            valid_before: before,
            sig: sig(),
        };
        let check = |a| RelayPolicy::check_window(&a, now);
        assert_eq!(check(auth(0, now + MIN_VALIDITY_SECONDS)), Ok(()));
        assert!(
            check(auth(0, now + MIN_VALIDITY_SECONDS - 1)).is_err(),
            "expires too soon"
        );
        assert!(check(auth(now, now + 600)).is_err(), "not valid yet");
        assert!(check(auth(0, 5)).is_err(), "expired");
        let permit = |deadline| DepositAuth::Permit {
            deadline,
            permit: sig(),
            intent: sig(),
        };
        assert_eq!(check(permit(now + 600)), Ok(()));
        assert!(check(permit(now + 60)).is_err());
    }

    #[test]
    fn a_top_up_needs_an_open_channel_of_this_provider() {
        let t = GaslessTopUp {
            channel_id: B256::repeat_byte(3),
            from: Address::repeat_byte(9),
            amount: 2_000,
            salt: B256::ZERO,
            auth: open().auth,
        };
        assert_eq!(policy().check_top_up(&t, &channel()), Ok(()));
        let mut other = channel();
        other.payee = Address::repeat_byte(7);
        assert!(policy().check_top_up(&t, &other).is_err());
        let mut other = channel();
        other.token = Address::repeat_byte(7);
        assert!(policy().check_top_up(&t, &other).is_err());
        for w in [WithdrawState::Closed, WithdrawState::Pending { at: 5 }] {
            let mut other = channel();
            other.withdraw = w;
            assert!(policy().check_top_up(&t, &other).is_err());
        }
        let small = GaslessTopUp { amount: 10, ..t };
        assert!(policy().check_top_up(&small, &channel()).is_err());
    }
}
