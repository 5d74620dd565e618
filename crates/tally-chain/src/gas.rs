//! Gas measurements behind GAS.md and the gas regression test: every contract operation on a
//! real anvil, plus the per-call alternative x402 "exact" uses (one EIP-3009
//! `transferWithAuthorization` per call) for comparison.

use std::path::Path;
use std::time::{Duration, Instant};

use alloy::node_bindings::AnvilInstance;
use alloy::primitives::{Address, B256, U256};
use alloy::providers::{DynProvider, Provider};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::{Eip712Domain, SolStruct};
use tally_core::{Checkpoint, Hash};

use crate::channel::{connect, finish, OpenParams, TallyClient, TxOutcome};
use crate::contract::TestToken;
use crate::eip712::{sign_digest, ChainCheckpoint};
use crate::error::ChainError;

mod eip3009 {
    alloy::sol! {
        struct TransferWithAuthorization {
            address from;
            address to;
            uint256 value;
            uint256 validAfter;
            uint256 validBefore;
            bytes32 nonce;
        }
    }
}

/// How x402 "exact" settles one call: the payer signs an EIP-3009
/// `transferWithAuthorization` and a facilitator submits it, one token transfer per call.
/// Shared by the gas report and `tally demo`, so both measure the per-call alternative the
/// same way on the token they use.
pub struct X402Exact {
    token: TestToken::TestTokenInstance<DynProvider>,
    domain: Eip712Domain,
}

impl X402Exact {
    /// The token at `token`, submitting from `facilitator`'s wallet; reads the token's
    /// EIP-712 domain (name, version, chain id) from the chain.
    pub async fn new(facilitator: DynProvider, token: Address) -> Result<Self, ChainError> {
        let chain_id = facilitator.get_chain_id().await?;
        let token = TestToken::new(token, facilitator);
        let name = token.name().call().await?;
        let version = token.version().call().await?;
        let domain = Eip712Domain::new(
            Some(name.into()),
            Some(version.into()),
            Some(U256::from(chain_id)),
            Some(*token.address()),
            None,
        );
        Ok(X402Exact { token, domain })
    }

    /// Pays `value` from `payer` to `to` in one mined `transferWithAuthorization` (each
    /// `nonce` works once per payer).
    pub async fn pay(
        &self,
        payer: &PrivateKeySigner,
        to: Address,
        value: u128,
        nonce: B256,
    ) -> Result<TxOutcome, ChainError> {
        let auth = eip3009::TransferWithAuthorization {
            from: payer.address(),
            to,
            value: U256::from(value),
            validAfter: U256::ZERO,
            validBefore: U256::from(u64::MAX),
            nonce,
        };
        let sig = sign_digest(payer, &auth.eip712_signing_hash(&self.domain))?;
        let call = self.token.transferWithAuthorization(
            auth.from,
            auth.to,
            auth.value,
            auth.validAfter,
            auth.validBefore,
            auth.nonce,
            sig.v,
            sig.r,
            sig.s,
        );
        finish(call.send().await?).await
    }
}

/// Channel counts the claimMany rows are measured at.
pub const BATCH_SIZES: [usize; 3] = [1, 10, 100];

/// Measured gas (total transaction gas, including the 21000 base) and latencies.
#[derive(Clone, Debug, PartialEq)]
pub struct GasReport {
    /// `open` of a new channel.
    pub open: u64,
    /// `topUp`.
    pub top_up: u64,
    /// First `claim` on a channel (root and claimed slots go from zero to non-zero).
    pub claim_first: u64,
    /// A later `claim` on a channel, after the previous state's challenge window (so it also
    /// promotes that state to final): the steady state a provider pays per checkpoint.
    pub claim: u64,
    /// `claimCosigned` (two signatures) lowering a state inside its window: a client's credit.
    pub claim_cosigned: u64,
    /// First `payout` to a payee (its token balance goes from zero to non-zero).
    pub payout_first: u64,
    /// A later `payout`: the pull step after each claim's window.
    pub payout: u64,
    /// (channels, total gas) of a `payoutMany` over steady-state channels of one payee.
    pub payout_many: Vec<(usize, u64)>,
    /// (channels, total gas) of a steady-state `claimMany`.
    pub claim_many: Vec<(usize, u64)>,
    /// claimMany of 10 steady-state channels, and the same plus one entry whose claim window
    /// closed (skipped with `ClaimSkipped`), placed last: (without, with).
    pub claim_many_skip: (u64, u64),
    /// `initiateWithdraw`.
    pub initiate_withdraw: u64,
    /// `finalizeWithdraw` (refund transfer included).
    pub finalize_withdraw: u64,
    /// `cooperativeClose` (two signatures, two transfers).
    pub cooperative_close: u64,
    /// One EIP-3009 `transferWithAuthorization`, the per-call cost of x402 exact.
    pub x402_transfer: u64,
    /// Median wall time of one x402 exact call's settlement (sign, send, receipt) on anvil.
    pub x402_latency_median: Duration,
    /// Slowest of the measured x402 settlements.
    pub x402_latency_max: Duration,
    /// How many x402 settlements the latency figures cover.
    pub x402_samples: usize,
}

impl GasReport {
    /// Gas per additional channel in a claimMany of `n` channels versus one channel.
    pub fn claim_many_marginal(&self, n: usize) -> Option<u64> {
        let one = self.claim_many.iter().find(|(k, _)| *k == 1)?.1;
        let at = self.claim_many.iter().find(|(k, _)| *k == n)?.1;
        if n < 2 {
            return None;
        }
        Some((at.saturating_sub(one)) / (n as u64 - 1))
    }

    /// Gas per additional channel in a payoutMany of `n` channels versus one channel.
    pub fn payout_many_marginal(&self, n: usize) -> Option<u64> {
        let one = self.payout_many.iter().find(|(k, _)| *k == 1)?.1;
        let at = self.payout_many.iter().find(|(k, _)| *k == n)?.1;
        if n < 2 {
            return None;
        }
        Some((at.saturating_sub(one)) / (n as u64 - 1))
    }

    /// A whole channel's onchain life with one checkpoint: open, the first claim,
    /// initiateWithdraw, finalizeWithdraw and the payout.
    pub fn lifecycle(&self) -> u64 {
        self.open + self.claim_first + self.initiate_withdraw + self.finalize_withdraw + self.payout
    }

    /// A whole channel's onchain life when both parties agree: open, then one
    /// `cooperativeClose` (which pays the payee and refunds the payer in the same transaction).
    pub fn cooperative_lifecycle(&self) -> u64 {
        self.open + self.cooperative_close
    }
}

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
        self.salt += 1;
        let (id, out) = self
            .payer
            .open(OpenParams {
                payee: self.payee.sender(),
                token: self.token,
                amount,
                signer: self.signer.address(),
                withdraw_delay: WINDOW as u32,
                salt: B256::from(U256::from(self.salt)),
            })
            .await?;
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

    // open + topUp + first and steady claim on one channel.
    let (id, open) = b.open(1_000_000_000).await?;
    let top_up = b.payer.top_up(&id, 1_000).await?.gas_used;
    let claim_first = b.payee.claim(&b.sign(id, 1_000, 10_000)?).await?.gas_used;
    let p = b.payer.provider().clone();
    warp(&p, WINDOW + 1).await?;
    // The second claim promotes the first state: `settled` goes from zero to non-zero once.
    b.payee.claim(&b.sign(id, 2_000, 20_000)?).await?;
    warp(&p, WINDOW + 1).await?;
    let payout_first = b.payee.payout(&id).await?.gas_used;
    let claim = b.payee.claim(&b.sign(id, 3_000, 30_000)?).await?.gas_used;
    warp(&p, WINDOW + 1).await?;
    let payout = b.payee.payout(&id).await?.gas_used;
    b.payee.claim(&b.sign(id, 4_000, 40_000)?).await?;
    let credit = b.sign(id, 4_001, 35_000)?;
    let payee_sig = b.payer.sign_checkpoint(&k_payee, credit.checkpoint)?.sig;
    let claim_cosigned = b.payer.claim_cosigned(&credit, &payee_sig).await?.gas_used;

    // claimMany at several sizes, each channel already claimed twice, each window passed
    // (steady state: `settled` already non-zero), then payoutMany of the same channels.
    let mut claim_many = Vec::new();
    let mut batches = Vec::new();
    let mut ten = Vec::new();
    for n in BATCH_SIZES {
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            ids.push(b.open(1_000_000_000).await?.0);
        }
        let first: Vec<_> = ids
            .iter()
            .map(|id| b.sign(*id, 10, 100))
            .collect::<Result<_, _>>()?;
        b.payee.claim_many(&first).await?;
        warp(&p, WINDOW + 1).await?;
        let promote: Vec<_> = ids
            .iter()
            .map(|id| b.sign(*id, 15, 150))
            .collect::<Result<_, _>>()?;
        b.payee.claim_many(&promote).await?;
        warp(&p, WINDOW + 1).await?;
        let second: Vec<_> = ids
            .iter()
            .map(|id| b.sign(*id, 20, 200))
            .collect::<Result<_, _>>()?;
        claim_many.push((n, b.payee.claim_many(&second).await?.gas_used));
        if n == 10 {
            ten.clone_from(&ids);
        }
        batches.push(ids);
    }
    warp(&p, WINDOW + 1).await?;
    let mut payout_many = Vec::new();
    for ids in &batches {
        let pending = b.payee.send_payout_many(ids).await?;
        payout_many.push((ids.len(), finish(pending).await?.gas_used));
    }

    // A skipped entry: a channel whose window closes before the batch is mined.
    let (late, _) = b.open(1_000_000).await?;
    b.payer.initiate_withdraw(&late).await?;
    let honest = |b: &Bench, size: u64| -> Result<Vec<ChainCheckpoint>, ChainError> {
        ten.iter()
            .map(|id| b.sign(*id, size, size as u128 * 10))
            .collect()
    };
    let without = b.payee.claim_many(&honest(&b, 30)?).await?.gas_used;

    // exits
    let (wid, _) = b.open(1_000_000).await?;
    b.payee.claim(&b.sign(wid, 5, 500)?).await?;
    let initiate_withdraw = b.payer.initiate_withdraw(&wid).await?.gas_used;
    b.payer
        .provider()
        .raw_request::<_, serde_json::Value>("evm_increaseTime".into(), (3601u64,))
        .await?;
    let finalize_withdraw = b.payer.finalize_withdraw(&wid).await?.gas_used;
    let mut with_skip = honest(&b, 40)?;
    with_skip.push(b.sign(late, 5, 500)?);
    let with = b.payee.claim_many(&with_skip).await?.gas_used;

    let (cid, _) = b.open(1_000_000).await?;
    b.payee.claim(&b.sign(cid, 5, 500)?).await?;
    let final_cp = Checkpoint {
        channel_id: cid,
        size: 9,
        root: Hash([9; 32]),
        cumulative: 900,
    };
    let s_sig = b.payer.sign_close(&b.signer, &final_cp)?;
    let p_sig = b.payer.sign_close(&k_payee, &final_cp)?;
    let cooperative_close = b
        .payer
        .cooperative_close(&final_cp, &s_sig, &p_sig)
        .await?
        .gas_used;

    // x402 exact: the payer authorizes one transfer per call, a facilitator submits it.
    let facilitator = connect(url, key(anvil, 3)?);
    let exact = X402Exact::new(facilitator, *token.address()).await?;
    let mut gas = Vec::new();
    let mut times = Vec::new();
    for i in 0..x402_samples.max(1) {
        let started = Instant::now();
        let nonce = B256::from(U256::from(i as u64 + 1));
        let out = exact.pay(&k_payer, payee_addr, 500, nonce).await?;
        times.push(started.elapsed());
        gas.push(out.gas_used);
    }
    gas.sort_unstable();
    times.sort_unstable();
    let x402_transfer = gas[gas.len() / 2];
    Ok(GasReport {
        open,
        top_up,
        claim_first,
        claim,
        claim_cosigned,
        payout_first,
        payout,
        payout_many,
        claim_many,
        claim_many_skip: (without, with),
        initiate_withdraw,
        finalize_withdraw,
        cooperative_close,
        x402_transfer,
        x402_latency_median: times[times.len() / 2],
        x402_latency_max: times[times.len() - 1],
        x402_samples: times.len(),
    })
}

/// The recorded numbers the regression test compares against (`gas-baseline.json`).
pub fn baseline_json(r: &GasReport) -> String {
    let many: Vec<String> = r
        .claim_many
        .iter()
        .map(|(n, g)| format!("\"{n}\": {g}"))
        .collect();
    format!(
        "{{\n  \"claim\": {},\n  \"claim_first\": {},\n  \"claim_many\": {{ {} }}\n}}\n",
        r.claim,
        r.claim_first,
        many.join(", ")
    )
}

/// Reads the recorded steady-state `claim` gas from a baseline file.
pub fn recorded_claim_gas(path: &Path) -> Result<u64, ChainError> {
    let text = std::fs::read_to_string(path)?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ChainError::Io(std::io::Error::other(e)))?;
    v.get("claim")
        .and_then(serde_json::Value::as_u64)
        .ok_or(ChainError::OutOfRange("baseline has no numeric \"claim\""))
}

fn per_call(gas: u64, calls: u64) -> String {
    let v = gas as f64 / calls as f64;
    if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.4}")
    }
}

/// GAS.md: the tables, the comparison and how the numbers were made.
pub fn render_markdown(r: &GasReport, anvil_version: &str, solc_version: &str) -> String {
    let mut s = String::new();
    s.push_str("# Gas report\n\n");
    s.push_str(
        "Generated by `cargo run -p tally-chain --example gas-report --release`; do not edit by hand.\n\
         Numbers are total transaction gas (including the 21,000 base cost) measured on a real anvil\n",
    );
    s.push_str(&format!("({anvil_version}, default hardfork) with contracts from {solc_version}, optimizer 10,000 runs,\nEVM version cancun. Token: contracts/TestToken.sol.\n\n"));
    s.push_str("## tally operations\n\n| operation | gas |\n|---|---:|\n");
    let rows = [
        ("open (new channel, includes the token pull)", r.open),
        ("topUp", r.top_up),
        (
            "claim, first on a channel (root slot and payee token balance go from zero to non-zero)",
            r.claim_first,
        ),
        (
            "claim, steady state (channel claimed before, its window passed: promotes it to final)",
            r.claim,
        ),
        (
            "claimCosigned (a credit: two signatures, lowers a state inside its window)",
            r.claim_cosigned,
        ),
        (
            "payout, first to this payee (its token balance goes from zero to non-zero)",
            r.payout_first,
        ),
        ("payout, steady state (the pull step after a claim's window)", r.payout),
        ("initiateWithdraw", r.initiate_withdraw),
        (
            "finalizeWithdraw (refund transfer included)",
            r.finalize_withdraw,
        ),
        (
            "cooperativeClose (two signatures, two transfers)",
            r.cooperative_close,
        ),
    ];
    for (name, g) in rows {
        s.push_str(&format!("| {name} | {g} |\n"));
    }
    s.push_str("\n## claimMany (steady state, one token, one payee)\n\n");
    s.push_str("| channels | total gas | gas per channel | gas per additional channel |\n|---:|---:|---:|---:|\n");
    for (n, g) in &r.claim_many {
        let marginal = r
            .claim_many_marginal(*n)
            .map_or("-".to_string(), |m| m.to_string());
        s.push_str(&format!("| {n} | {g} | {} | {marginal} |\n", g / *n as u64));
    }
    let marginal100 = r.claim_many_marginal(100).unwrap_or(0);
    s.push_str("\n## payoutMany (steady state, one token, one payee: one transfer)\n\n");
    s.push_str("| channels | total gas | gas per channel | gas per additional channel |\n|---:|---:|---:|---:|\n");
    for (n, g) in &r.payout_many {
        let marginal = r
            .payout_many_marginal(*n)
            .map_or("-".to_string(), |m| m.to_string());
        s.push_str(&format!("| {n} | {g} | {} | {marginal} |\n", g / *n as u64));
    }
    let payout100 = r.payout_many_marginal(100).unwrap_or(0);
    let life = r.lifecycle();
    s.push_str(&format!(
        "\nA whole channel with one checkpoint (open, first claim, initiateWithdraw, finalizeWithdraw,\n\
         payout) costs {life} gas: {} gas per call over 1,000 calls, {} over 1,000,000.\n",
        per_call(life, 1_000),
        per_call(life, 1_000_000)
    ));
    let (without, with) = r.claim_many_skip;
    s.push_str(&format!(
        "\nA skipped entry (issue 9): claimMany of 10 channels costs {without}; the same 10 plus one entry\n\
         whose claim window closed before the batch was mined (placed last, skipped with\n\
         `ClaimSkipped`) costs {with}. The honest entries pay the same; the skip adds {} gas.\n",
        with.saturating_sub(without)
    ));
    s.push_str(&format!(
        "\nTargets: claim <= 80,000 gas (steady state measured: {}); claimMany <= 35,000 gas per additional\nchannel (measured at 100 channels: {}).\n",
        r.claim, marginal100
    ));
    s.push_str("\n## Per call: tally versus x402 exact\n\n");
    s.push_str(
        "x402 exact settles every call with one EIP-3009 `transferWithAuthorization`. tally settles a\n\
         checkpoint covering many calls with one `claim` and one `payout` after its window (or a share\n\
         of a `claimMany` and a `payoutMany`), so its onchain gas per call is that gas divided by the\n\
         calls the checkpoint covers. Nothing is sent onchain per tally call, so tally adds no chain\n\
         latency per call. The whole-channel rows also count opening and closing it: a channel of\n\
         N calls settled by one checkpoint, divided by N; a longer-lived channel adds one claim and\n\
         one payout (the steady-state rows) per further checkpoint.\n\n",
    );
    s.push_str("| | calls per checkpoint | gas per call | chain latency per call |\n|---|---:|---:|---:|\n");
    let lat = format!(
        "{:.1} ms median, {:.1} ms max over {} calls (anvil automine; about 2 s on Base)",
        r.x402_latency_median.as_secs_f64() * 1e3,
        r.x402_latency_max.as_secs_f64() * 1e3,
        r.x402_samples
    );
    s.push_str(&format!(
        "| x402 exact (transferWithAuthorization) | 1 | {} | {lat} |\n",
        r.x402_transfer
    ));
    for calls in [1_000u64, 1_000_000] {
        s.push_str(&format!(
            "| tally whole channel, unilateral exit: open + first claim + payout + initiateWithdraw + finalizeWithdraw | {calls} | {} | 0 (offchain) |\n",
            per_call(r.lifecycle(), calls)
        ));
        s.push_str(&format!(
            "| tally whole channel, cooperative: open + cooperativeClose | {calls} | {} | 0 (offchain) |\n",
            per_call(r.cooperative_lifecycle(), calls)
        ));
        s.push_str(&format!(
            "| tally claim + payout | {calls} | {} | 0 (offchain) |\n",
            per_call(r.claim + r.payout, calls)
        ));
        s.push_str(&format!(
            "| tally claimMany + payoutMany, per channel at 100 | {calls} | {} | 0 (offchain) |\n",
            per_call(marginal100 + payout100, calls)
        ));
    }
    s.push_str(
        "\nThe x402 latency is sign + submit + receipt against a local node that mines instantly, so it\n\
         is a lower bound; a real chain adds its block time.\n\n\
         `tally demo` measures its one-per-call baseline the same way (`gas::X402Exact`): one\n\
         EIP-3009 `transferWithAuthorization` of its test token on its own anvil, after its claim,\n\
         times the paid calls of its channel, against the channel's whole life as in the\n\
         unilateral whole-channel row (open, both claims, both payouts, initiateWithdraw,\n\
         finalizeWithdraw; it claims twice, since it calls again after its first claim).\n",
    );
    s
}
