//! Credits the client can post onchain itself (spec/HTTP.md §7, CHAIN.md §4.2 and §4.6).
//!
//! A granted dispute carries `TALLY-CREDIT-STATE`: the payee's EIP-712 Checkpoint signature
//! over the log's state right after the credit record. The client checks it (the state is
//! the one its receipt and mirror show, the signature recovers to the terms' payee) and keeps
//! the newest in its mirror. If the payee later claims an older, higher state onchain, the
//! client answers within the challenge window with `claimCosigned` of that credit state,
//! signed also by its own checkpoint key: the payee is then owed the lower amount, and the
//! older state can never come back (issue 9, finding 2). Nobody at the provider has to help.

use super::*;
use tally_chain::{ChannelFunding, Eip712Sig, TallyClient, TxOutcome, WithdrawState};
use tally_http::api::CreditState;
use tally_http::headers::{decode_header, CREDIT_STATE};

/// The mirror's meta key of the newest payee-cosigned credit state.
const CREDIT_META: &str = "credit_state";

/// A credit's state with the payee's Checkpoint signature: with the checkpoint key's own
/// signature over the same state, what `claimCosigned` takes (spec/CHAIN.md §4.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CosignedCredit {
    /// The state right after the credit record.
    pub checkpoint: Checkpoint,
    /// The payee's signature over its Checkpoint digest.
    pub payee_sig: Eip712Sig,
}

/// Why [`Client::answer_older_claim`] posted nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quiet {
    /// No payee-cosigned credit is held.
    NoCredit,
    /// The channel is closed; nothing can be posted.
    Closed,
    /// The credit (or a later one) is already the channel's last accepted cosigned state.
    AlreadyPosted,
    /// The current state is at or after the credit's size: it already includes the credit.
    NotOlder,
    /// The current state's amount is not above the credit's: posting would gain nothing.
    NotHigher,
}

/// What [`Client::answer_older_claim`] did.
// One per read of the chain, seconds apart: boxing the large variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimAnswer {
    /// The payee's current state was older and higher than the credit: the credit was
    /// posted with `claimCosigned`.
    Answered {
        /// The state posted.
        credit: CosignedCredit,
        /// The state it replaced: (size, capped cumulative).
        replaced: (u64, u128),
        /// The transaction.
        tx: TxOutcome,
    },
    /// Nothing to post, and why.
    Quiet(Quiet),
}

impl Client {
    /// Checks and keeps the `TALLY-CREDIT-STATE` of a granted dispute's response (`None`
    /// when the gateway sent none: it holds no payee key). A state that is not the one the
    /// credit's receipt and the mirror show, or a signature that does not recover to the
    /// terms' `pay_to`, stops the client ([`Misbehavior::BadCredit`]): the provider handed
    /// out a credit the chain would not honour.
    pub(super) async fn keep_credit_state(
        &self,
        resp: &PaidResponse,
    ) -> Result<Option<CosignedCredit>, ClientError> {
        let Some(value) = resp.headers.get(CREDIT_STATE) else {
            return Ok(None);
        };
        let mut st = self.state.lock().await;
        let state: CreditState = match decode_header(CREDIT_STATE, value.as_bytes()) {
            Ok(s) => s,
            Err(e) => return Err(Self::stop(&mut st, Misbehavior::BadCredit(e.to_string()))),
        };
        let Some(receipt) = &resp.receipt else {
            return Err(ClientError::Protocol("a credit without a receipt".into()));
        };
        let outcome = &receipt.outcome;
        let cp = Checkpoint {
            channel_id: self.channel,
            size: state.size,
            root: state.root,
            cumulative: state.cumulative.0,
        };
        let payee_sig = Eip712Sig::from_parts(state.payee_eip712.parts());
        if let Err(why) = self
            .check_credit_state(&mut st, outcome, &cp, &payee_sig)
            .await
        {
            return Err(Self::stop(&mut st, Misbehavior::BadCredit(why)));
        }
        let credit = CosignedCredit {
            checkpoint: cp,
            payee_sig,
        };
        let newer = match read_credit(&st.mirror, self.channel)? {
            Some(old) => old.checkpoint.size < cp.size,
            None => true,
        };
        if newer {
            let text = serde_json::to_vec(&state)
                .map_err(|e| ClientError::Mirror(format!("credit state: {e}")))?;
            st.mirror.put_meta(CREDIT_META, &text)?;
        }
        Ok(Some(credit))
    }

    /// Why a credit state is not the one the credit's receipt shows, signed by the payee.
    async fn check_credit_state(
        &self,
        st: &mut State,
        outcome: &tally_core::Outcome,
        cp: &Checkpoint,
        payee_sig: &Eip712Sig,
    ) -> Result<(), String> {
        if outcome.amount >= 0 {
            return Err("a credit state on a record that is no credit".into());
        }
        if Some(cp.size) != outcome.index.checked_add(1) || cp.cumulative != outcome.cumulative {
            return Err(format!(
                "state (size {}, cumulative {}) is not the one after credit record {} (cumulative {})",
                cp.size, cp.cumulative, outcome.index, outcome.cumulative
            ));
        }
        // The contract does not read the root, but a wrong one would be a lie all the same.
        st.mirror.sync().await.map_err(|e| e.to_string())?;
        if st.mirror.size() >= cp.size {
            let root = st.mirror.root_at(cp.size).map_err(|e| e.to_string())?;
            if root != cp.root {
                return Err(format!("root at size {} is not the mirror's", cp.size));
            }
        }
        let payee: Address = st
            .terms
            .terms
            .chain
            .pay_to
            .parse()
            .map_err(|e| format!("terms pay_to: {e}"))?;
        let digest = tally_chain::eip712::checkpoint_digest(&Self::domain(st), cp);
        payee_sig
            .verify(&digest, payee)
            .map_err(|e| format!("payee signature: {e}"))
    }

    /// The newest payee-cosigned credit state this client holds (kept in its mirror).
    pub async fn credit_state(&self) -> Result<Option<CosignedCredit>, ClientError> {
        read_credit(&self.state.lock().await.mirror, self.channel)
    }

    /// Answers a payee's older, higher claim (spec/CHAIN.md §4.6): reads the channel through
    /// `chain` (whose wallet pays the gas; anyone may post) and, if its current state is
    /// older than the newest credit held and owes the payee more, posts the credit with
    /// `claimCosigned`, signed by the checkpoint key. Must run within the challenge window
    /// of the payee's claim (`withdrawDelay` seconds): run it at least that often, or keep
    /// [`Client::watch_claims`] running.
    pub async fn answer_older_claim(
        &self,
        chain: &TallyClient,
    ) -> Result<ClaimAnswer, ClientError> {
        let credit = self.credit_state().await?;
        answer_claim(chain, &self.checkpoint_key, self.channel, credit.as_ref()).await
    }

    /// Runs [`Client::answer_older_claim`] every `every` until the channel is closed; calls
    /// `on_answer` with each credit posted. Returns once the channel is closed.
    pub async fn watch_claims(
        &self,
        chain: &TallyClient,
        every: Duration,
        mut on_answer: impl FnMut(&ClaimAnswer),
    ) -> Result<(), ClientError> {
        loop {
            let answer = self.answer_older_claim(chain).await?;
            match answer {
                ClaimAnswer::Quiet(Quiet::Closed) => return Ok(()),
                ClaimAnswer::Answered { .. } => on_answer(&answer),
                ClaimAnswer::Quiet(_) => {}
            }
            tokio::time::sleep(every).await;
        }
    }
}

/// Why the channel's current state needs no answer with `credit`, if it needs none.
fn quiet_reason(f: &ChannelFunding, credit: &CosignedCredit) -> Option<Quiet> {
    let cp = &credit.checkpoint;
    if f.withdraw == WithdrawState::Closed {
        Some(Quiet::Closed)
    } else if f.credit_size >= cp.size {
        Some(Quiet::AlreadyPosted)
    } else if f.claimed_size >= cp.size {
        Some(Quiet::NotOlder)
    } else if f.claimed <= cp.cumulative.min(f.deposit) {
        Some(Quiet::NotHigher)
    } else {
        None
    }
}

/// The newest payee-cosigned credit state kept in a client's mirror (what
/// [`Client::credit_state`] returns), read without the provider: a watcher needs only the
/// mirror, the checkpoint key and a chain node.
pub fn read_credit(
    mirror: &Mirror,
    channel: ChannelId,
) -> Result<Option<CosignedCredit>, ClientError> {
    let Some(bytes) = mirror.get_meta(CREDIT_META)? else {
        return Ok(None);
    };
    let s: CreditState = serde_json::from_slice(&bytes)
        .map_err(|e| ClientError::Mirror(format!("stored credit state: {e}")))?;
    Ok(Some(CosignedCredit {
        checkpoint: Checkpoint {
            channel_id: channel,
            size: s.size,
            root: s.root,
            cumulative: s.cumulative.0,
        },
        payee_sig: Eip712Sig::from_parts(s.payee_eip712.parts()),
    }))
}

/// [`Client::answer_older_claim`] without a connected client (spec/CHAIN.md §4.6): reads
/// `channel` through `chain` and, if its current state is older than `credit` and owes the
/// payee more, posts `credit` with `claimCosigned`, signed by `checkpoint_key` (the
/// channel's signer). `chain`'s wallet pays the gas.
pub async fn answer_claim(
    chain: &TallyClient,
    checkpoint_key: &PrivateKeySigner,
    channel: ChannelId,
    credit: Option<&CosignedCredit>,
) -> Result<ClaimAnswer, ClientError> {
    let Some(credit) = credit else {
        return Ok(ClaimAnswer::Quiet(Quiet::NoCredit));
    };
    let f = chain.channel(&channel).await?;
    if let Some(quiet) = quiet_reason(&f, credit) {
        return Ok(ClaimAnswer::Quiet(quiet));
    }
    let signed = ChainCheckpoint::sign(checkpoint_key, &chain.domain(), credit.checkpoint)
        .map_err(|e| ClientError::Signing(e.to_string()))?;
    let tx = chain.claim_cosigned(&signed, &credit.payee_sig).await?;
    Ok(ClaimAnswer::Answered {
        credit: *credit,
        replaced: (f.claimed_size, f.claimed),
        tx,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::Address;

    fn funding(claimed_size: u64, claimed: u128, credit_size: u64) -> ChannelFunding {
        ChannelFunding {
            channel_id: ChannelId([7; 32]),
            payer: Address::repeat_byte(1),
            payee: Address::repeat_byte(2),
            token: Address::repeat_byte(3),
            signer: Address::repeat_byte(4),
            deposit: 1_000,
            claimed,
            claimed_size,
            claimed_root: Hash([0; 32]),
            credit_size,
            settle_at: 0,
            settled: 0,
            paid: 0,
            withdraw_delay: 3_600,
            withdraw: WithdrawState::None,
        }
    }

    fn credit(size: u64, cumulative: u128) -> CosignedCredit {
        CosignedCredit {
            checkpoint: Checkpoint {
                channel_id: ChannelId([7; 32]),
                size,
                root: Hash([9; 32]),
                cumulative,
            },
            payee_sig: Eip712Sig::from_parts((27, [1; 32], [2; 32])),
        }
    }

    #[test]
    fn answers_only_an_older_higher_state() {
        let c = credit(11, 600);
        // The payee's older, higher state: answer.
        assert_eq!(quiet_reason(&funding(10, 900, 0), &c), None);
        // Nothing claimed, or not more than the credit: nothing to gain.
        assert_eq!(quiet_reason(&funding(0, 0, 0), &c), Some(Quiet::NotHigher));
        assert_eq!(
            quiet_reason(&funding(10, 600, 0), &c),
            Some(Quiet::NotHigher)
        );
        // A newer state already includes the credit, whatever its amount.
        assert_eq!(
            quiet_reason(&funding(11, 900, 0), &c),
            Some(Quiet::NotOlder)
        );
        assert_eq!(
            quiet_reason(&funding(12, 900, 0), &c),
            Some(Quiet::NotOlder)
        );
        // Posted already (this credit or a newer one).
        assert_eq!(
            quiet_reason(&funding(10, 900, 11), &c),
            Some(Quiet::AlreadyPosted)
        );
        let mut closed = funding(10, 900, 0);
        closed.withdraw = WithdrawState::Closed;
        assert_eq!(quiet_reason(&closed, &c), Some(Quiet::Closed));
        // The credit counts capped at the deposit, as the contract caps it.
        let big = credit(11, 5_000);
        assert_eq!(
            quiet_reason(&funding(10, 1_000, 0), &big),
            Some(Quiet::NotHigher)
        );
        assert_eq!(quiet_reason(&funding(10, 999, 0), &credit(11, 998)), None);
    }
}
