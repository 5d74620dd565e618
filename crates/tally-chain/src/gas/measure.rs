//! Runs every scenario of the gas report on a fresh anvil.

use std::time::Instant;

use alloy::node_bindings::AnvilInstance;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use tally_core::{Checkpoint, Hash};

use super::{GasReport, X402Exact, BATCH_SIZES};
use crate::channel::{connect, finish, OpenParams, TallyClient};
use crate::contract::TestToken;
use crate::eip712::ChainCheckpoint;
use crate::error::ChainError;
use crate::gasless::{DepositDomains, GaslessOpen, GaslessTopUp};

/// Lets anvil's clock pass `seconds` (a challenge window) and mines a block.
async fn warp(p: &DynProvider, seconds: u64) -> Result<(), ChainError> {
    p.raw_request::<_, serde_json::Value>("evm_increaseTime".into(), (seconds,))
        .await?;
    p.raw_request::<_, serde_json::Value>("evm_mine".into(), ())
        .await?;
    Ok(())
}

/// The bench's channels' withdraw delay, which is also every challenge window.
const WINDOW: u64 = 3600;

struct Bench {
    payer: TallyClient,
    payee: TallyClient,
    token: Address,
    signer: PrivateKeySigner,
    salt: u64,
}

impl Bench {
    async fn open(&mut self, amount: u128) -> Result<(tally_core::ChannelId, u64), ChainError> {
        let params = self.params(amount);
        let (id, out) = self.payer.open(params).await?;
        Ok((id, out.gas_used))
    }

    fn sign(
        &self,
        id: tally_core::ChannelId,
        size: u64,
        cumulative: u128,
    ) -> Result<ChainCheckpoint, ChainError> {
        let root = Hash(alloy::primitives::keccak256(size.to_be_bytes()).0);
        self.payer.sign_checkpoint(
            &self.signer,
            Checkpoint {
                channel_id: id,
                size,
                root,
                cumulative,
            },
        )
    }
}

fn key(anvil: &AnvilInstance, i: usize) -> Result<PrivateKeySigner, ChainError> {
    let k = anvil
        .nth_key(i)
        .ok_or(ChainError::OutOfRange("anvil has too few dev keys"))?;
    Ok(PrivateKeySigner::from(k.clone()))
}

impl Bench {
    /// A fresh channel's parameters (the next salt).
    fn params(&mut self, amount: u128) -> OpenParams {
        self.salt += 1;
        OpenParams {
            payee: self.payee.sender(),
            token: self.token,
            amount,
            signer: self.signer.address(),
            withdraw_delay: WINDOW as u32,
            salt: B256::from(U256::from(self.salt)),
        }
    }
}

/// Runs every scenario on `anvil` (a fresh default node) and returns the numbers.
pub async fn measure(anvil: &AnvilInstance, x402_samples: usize) -> Result<GasReport, ChainError> {
    let url = anvil.endpoint_url();
    let (k_payer, k_payee) = (key(anvil, 1)?, key(anvil, 2)?);
    let (payer_addr, payee_addr) = (k_payer.address(), k_payee.address());
    let payer_p = connect(url.clone(), k_payer.clone());
    let payee_p = connect(url.clone(), k_payee.clone());

    let token = TestToken::deploy(payer_p.clone(), "Tally Test USD".to_string(), 0).await?;
    let payer = TallyClient::deploy(payer_p.clone(), payer_addr).await?;
    let payee = payer.as_party(payee_p.clone(), payee_addr).await?;
    finish(
        token
            .mint(payer_addr, U256::from(u128::MAX / 4))
            .send()
            .await?,
    )
    .await?;
    payer.approve(*token.address(), u128::MAX).await?;
    let signer = PrivateKeySigner::from_bytes(&B256::from(U256::from(0x7a11u64)))
        .map_err(|e| ChainError::Signature(e.to_string()))?;
    let mut b = Bench {
        payer,
        payee,
        token: *token.address(),
        signer,
        salt: 0,
    };
    let mut r = GasReport::default();
    one_channel(&mut b, &k_payee, &mut r).await?;
    let ten = batches(&mut b, &mut r).await?;
    exits(&mut b, &k_payee, &ten, &mut r).await?;
    let facilitator = connect(url, key(anvil, 3)?);
    x402(
        &facilitator,
        *token.address(),
        &k_payer,
        payee_addr,
        x402_samples,
        &mut r,
    )
    .await?;
    // Last: a permit resets the payer's standing allowance, which the plain opens above use.
    gasless(&mut b, &k_payer, &mut r).await?;
    Ok(r)
}

/// open, topUp, the first and a steady claim, payouts and a credit, on one channel.
async fn one_channel(
    b: &mut Bench,
    k_payee: &PrivateKeySigner,
    r: &mut GasReport,
) -> Result<(), ChainError> {
    let (id, open) = b.open(1_000_000_000).await?;
    r.open = open;
    r.top_up = b.payer.top_up(&id, 1_000).await?.gas_used;
    r.claim_first = b.payee.claim(&b.sign(id, 1_000, 10_000)?).await?.gas_used;
    let p = b.payer.provider().clone();
    warp(&p, WINDOW + 1).await?;
    // The second claim promotes the first state: `settled` goes from zero to non-zero once.
    b.payee.claim(&b.sign(id, 2_000, 20_000)?).await?;
    warp(&p, WINDOW + 1).await?;
    r.payout_first = b.payee.payout(&id).await?.gas_used;
    r.claim = b.payee.claim(&b.sign(id, 3_000, 30_000)?).await?.gas_used;
    warp(&p, WINDOW + 1).await?;
    r.payout = b.payee.payout(&id).await?.gas_used;
    b.payee.claim(&b.sign(id, 4_000, 40_000)?).await?;
    let credit = b.sign(id, 4_001, 35_000)?;
    let payee_sig = b.payer.sign_checkpoint(k_payee, credit.checkpoint)?.sig;
    r.claim_cosigned = b.payer.claim_cosigned(&credit, &payee_sig).await?.gas_used;
    Ok(())
}

/// claimMany at several sizes, each channel already claimed twice, each window passed
/// (steady state: `settled` already non-zero), then payoutMany of the same channels.
/// Returns the ten channels of the 10-channel batch.
async fn batches(
    b: &mut Bench,
    r: &mut GasReport,
) -> Result<Vec<tally_core::ChannelId>, ChainError> {
    let p = b.payer.provider().clone();
    let mut all = Vec::new();
    let mut ten = Vec::new();
    for n in BATCH_SIZES {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(b.open(1_000_000_000).await?.0);
        }
        for (size, cumulative) in [(10, 100), (15, 150)] {
            let states: Vec<_> = ids
                .iter()
                .map(|id| b.sign(*id, size, cumulative))
                .collect::<Result<_, _>>()?;
            b.payee.claim_many(&states).await?;
            warp(&p, WINDOW + 1).await?;
        }
        let second: Vec<_> = ids
            .iter()
            .map(|id| b.sign(*id, 20, 200))
            .collect::<Result<_, _>>()?;
        r.claim_many
            .push((n, b.payee.claim_many(&second).await?.gas_used));
        if n == 10 {
            ten.clone_from(&ids);
        }
        all.push(ids);
    }
    warp(&p, WINDOW + 1).await?;
    for ids in &all {
        let pending = b.payee.send_payout_many(ids).await?;
        r.payout_many
            .push((ids.len(), finish(pending).await?.gas_used));
    }
    Ok(ten)
}

/// A skipped claimMany entry, the unilateral exit's two steps and a cooperative close.
async fn exits(
    b: &mut Bench,
    k_payee: &PrivateKeySigner,
    ten: &[tally_core::ChannelId],
    r: &mut GasReport,
) -> Result<(), ChainError> {
    // A skipped entry: a channel whose window closes before the batch is mined.
    let (late, _) = b.open(1_000_000).await?;
    b.payer.initiate_withdraw(&late).await?;
    let honest = |b: &Bench, size: u64| -> Result<Vec<ChainCheckpoint>, ChainError> {
        ten.iter()
            .map(|id| b.sign(*id, size, size as u128 * 10))
            .collect()
    };
    let without = b.payee.claim_many(&honest(b, 30)?).await?.gas_used;

    let (wid, _) = b.open(1_000_000).await?;
    b.payee.claim(&b.sign(wid, 5, 500)?).await?;
    r.initiate_withdraw = b.payer.initiate_withdraw(&wid).await?.gas_used;
    b.payer
        .provider()
        .raw_request::<_, serde_json::Value>("evm_increaseTime".into(), (3601u64,))
        .await?;
    r.finalize_withdraw = b.payer.finalize_withdraw(&wid).await?.gas_used;
    let mut with_skip = honest(b, 40)?;
    with_skip.push(b.sign(late, 5, 500)?);
    let with = b.payee.claim_many(&with_skip).await?.gas_used;
    r.claim_many_skip = (without, with);

    let (cid, _) = b.open(1_000_000).await?;
    b.payee.claim(&b.sign(cid, 5, 500)?).await?;
    let final_cp = Checkpoint {
        channel_id: cid,
        size: 9,
        root: Hash([9; 32]),
        cumulative: 900,
    };
    let s_sig = b.payer.sign_close(&b.signer, &final_cp)?;
    let p_sig = b.payer.sign_close(k_payee, &final_cp)?;
    r.cooperative_close = b
        .payer
        .cooperative_close(&final_cp, &s_sig, &p_sig)
        .await?
        .gas_used;
    Ok(())
}

/// x402 exact: the payer authorizes one transfer per call, a facilitator submits it.
async fn x402(
    facilitator: &DynProvider,
    token: alloy::primitives::Address,
    k_payer: &PrivateKeySigner,
    payee: alloy::primitives::Address,
    samples: usize,
    r: &mut GasReport,
) -> Result<(), ChainError> {
    let exact = X402Exact::new(facilitator.clone(), token).await?;
    let mut gas = Vec::new();
    let mut times = Vec::new();
    for i in 0..samples.max(1) {
        let started = Instant::now();
        let nonce = B256::from(U256::from(i as u64 + 1));
        let out = exact.pay(k_payer, payee, 500, nonce).await?;
        times.push(started.elapsed());
        gas.push(out.gas_used);
    }
    gas.sort_unstable();
    times.sort_unstable();
    r.x402_transfer = gas[gas.len() / 2];
    r.x402_latency_median = times[times.len() / 2];
    r.x402_latency_max = times[times.len() - 1];
    r.x402_samples = times.len();
    Ok(())
}

/// The four gasless deposits (spec/CHAIN.md §2.1), signed by the payer and submitted by the
/// payee's wallet, as a provider's relay does.
async fn gasless(
    b: &mut Bench,
    k_payer: &PrivateKeySigner,
    r: &mut GasReport,
) -> Result<(), ChainError> {
    let c = &b.payee;
    let d = DepositDomains {
        chain_id: c.chain_id(),
        contract: c.address(),
        token: crate::gasless::token_domain(c.provider(), b.token, c.chain_id()).await?,
    };
    let forever = (0, u64::MAX / 2);
    let p = b.params(1_000_000);
    let open = GaslessOpen::sign_eip3009(k_payer, &d, p, forever)?;
    let (id, out) = b.payee.open_gasless(&open).await?;
    r.open_eip3009 = out.gas_used;
    let top = GaslessTopUp::sign_eip3009(k_payer, &d, &id, 1_000, B256::repeat_byte(1), forever)?;
    r.top_up_eip3009 = b.payee.top_up_gasless(&top).await?.gas_used;
    let nonce = b.payee.permit_nonce(b.token, k_payer.address()).await?;
    let p = b.params(1_000_000);
    let open = GaslessOpen::sign_permit(k_payer, &d, p, nonce, forever.1)?;
    r.open_permit = b.payee.open_gasless(&open).await?.1.gas_used;
    let nonce = b.payee.permit_nonce(b.token, k_payer.address()).await?;
    let what = (1_000, B256::repeat_byte(2));
    let top = GaslessTopUp::sign_permit(k_payer, &d, &id, what, nonce, forever.1)?;
    r.top_up_permit = b.payee.top_up_gasless(&top).await?.gas_used;
    Ok(())
}
