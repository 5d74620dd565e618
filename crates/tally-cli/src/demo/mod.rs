//! `tally demo`: the whole protocol on one machine, end to end, in a temporary directory:
//! a local chain (anvil), the contracts, a channel, a gateway in front of the built-in
//! upstream, thousands of paid calls, a checkpoint settled onchain in one claim, one x402
//! "exact" payment (an EIP-3009 `transferWithAuthorization`) measured as the per-call
//! alternative, the bill audited, a proof bundle made and checked against the chain, a
//! dispute that yields a credit, and the payer's unilateral exit, so the gas compared with
//! one transfer per call is the channel's whole life (open, claims, payouts, withdraw). Every step goes through the same library code as the
//! matching command; any failure ends the demo with an error (and a non-zero exit).

pub mod cluster;
mod exit;
mod stream;
mod summary;

pub use summary::DemoSummary;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy::primitives::B256;
use tally_chain::gas::X402Exact;
use tally_core::bundle::ChainRef;

use crate::error::{CliError, Result};
use crate::output::Output;
use crate::profile::{Profile, ProfileFile};
use crate::{chain, gateway, keys, proof, statement, upstream};
use tally_audit::{audit, AuditContext};

/// The channel's deposit.
pub const DEPOSIT: u128 = 1_000_000_000;
/// What the one-per-call alternative pays each call with: how x402 "exact" settles a call.
pub const PER_CALL_TRANSFER: &str = "x402 exact EIP-3009 transferWithAuthorization";
/// How many steps the demo reports.
const STEPS: u32 = 12;

fn step(out: &Output, n: u32, text: &str) {
    out.note(&format!("[{n}/{STEPS}] {text}"));
}

/// Runs the demo in a fresh temporary directory (or in `keep`, which must not exist yet,
/// and is left in place). `calls` paid calls are made.
pub async fn run(calls: u64, keep: Option<&Path>, out: Output) -> Result<DemoSummary> {
    if calls < 3 {
        return Err(CliError::Usage("--calls must be at least 3".into()));
    }
    let started = Instant::now();
    let temp;
    let dir: PathBuf = match keep {
        Some(k) => {
            if k.exists() {
                return Err(CliError::Usage(format!("{} already exists", k.display())));
            }
            std::fs::create_dir_all(k).map_err(|e| CliError::io(k, e))?;
            k.to_path_buf()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("tally-demo-")
                .tempdir()
                .map_err(|e| CliError::io(Path::new("temporary directory"), e))?;
            temp.path().to_path_buf()
        }
    };

    step(&out, 1, "starting anvil (local chain)");
    let note = |t: &str| out.note(t);
    let local = chain::start_local(u128::MAX / 4, &note).await?;
    step(
        &out,
        2,
        &format!(
            "deployed Tally at {} and a test token at {}",
            local.contract, local.token
        ),
    );
    let rpc = local.rpc.clone();
    let chain_id = chain::reader(&rpc, local.contract).await?.chain_id();

    // Keys: provider (gateway), session + checkpoint (client profile).
    let gdir = dir.join("gateway");
    let pdir = dir.join("client");
    std::fs::create_dir_all(&gdir).map_err(|e| CliError::io(&gdir, e))?;
    std::fs::create_dir_all(&pdir).map_err(|e| CliError::io(&pdir, e))?;
    keys::write_ed25519(&gdir.join("provider.key"), &keys::generate_ed25519())?;
    keys::write_ed25519(&pdir.join("session.key"), &keys::generate_ed25519())?;
    let checkpoint_key = keys::generate_secp256k1();
    keys::write_secp256k1(&pdir.join("checkpoint.key"), &checkpoint_key)?;

    let upstream = upstream::start().await?;
    let cfg_path = gdir.join("gateway.toml");
    keys::write_secp256k1(&gdir.join("relay.key"), &local.relayer)?;
    let mut file = gateway::GatewayFile::new(
        "127.0.0.1:0",
        &upstream.url(),
        &rpc,
        local.chain_terms(chain_id),
        upstream::prices(),
    );
    file.relay = Some(tally_server::config::RelayConfig::new(
        "relay.key".into(),
        DEPOSIT,
    ));
    file.write(&cfg_path)?;
    let cfg = tally_server::config::GatewayConfig::load(&cfg_path)?;
    let serving = gateway::serve(&cfg).await?;
    step(
        &out,
        3,
        &format!(
            "gateway on {} in front of the upstream on {}, relaying gasless deposits",
            serving.url(),
            upstream.url()
        ),
    );

    let opened = open_gasless(&serving, &local, checkpoint_key.address()).await;
    let (channel_id, opened) = match opened {
        Ok(o) => o,
        Err(e) => {
            let _ = serving.stop().await;
            upstream.stop().await;
            return Err(e);
        }
    };
    step(
        &out,
        4,
        &format!(
            "opened channel {} with a deposit of {DEPOSIT}, gasless: the payer signed an EIP-3009 authorization and the gateway's relay paid the {} gas",
            channel_id.to_hex(),
            opened.gas_used
        ),
    );

    let result = paid_part(
        &out, &dir, &pdir, &serving, &local, chain_id, channel_id, calls,
    )
    .await;
    let stopped = serving.stop().await;
    upstream.stop().await;
    drop(local);
    let mut summary = result?;
    stopped?;
    summary.count_channel(opened.gas_used);
    summary.seconds = started.elapsed().as_secs_f64();
    summary.kept = keep.map(|k| k.display().to_string());
    Ok(summary)
}

/// Opens the demo's channel the way an agent without ETH would (spec/HTTP.md §12): the payer
/// signs an EIP-3009 authorization, the gateway's relay submits it. Checks that the payer's
/// ETH balance did not move: the relay paid all the gas.
async fn open_gasless(
    serving: &gateway::Serving,
    local: &chain::LocalChain,
    signer: alloy::primitives::Address,
) -> Result<(tally_core::ChannelId, tally_chain::TxOutcome)> {
    use alloy::providers::Provider;
    let reader = chain::reader(&local.rpc, local.contract).await?;
    let p = reader.provider().clone();
    let eth = || async {
        p.get_balance(local.payer.address())
            .await
            .map_err(|e| CliError::Service(format!("reading a balance: {e}")))
    };
    let before = eth().await?;
    let params = tally_chain::OpenParams {
        payee: local.payee.address(),
        token: local.token,
        amount: DEPOSIT,
        signer,
        withdraw_delay: chain::DEFAULT_WITHDRAW_DELAY,
        salt: chain::random_salt(),
    };
    let auth = crate::cli::GaslessAuth::Eip3009;
    let (id, tx) =
        crate::commands::gasless::open(&serving.url(), &reader, &local.payer, params, auth).await?;
    let opened = (
        id,
        tx.ok_or_else(|| CliError::Service("the relay answered no transaction".into()))?,
    );
    if eth().await? != before {
        return Err(CliError::Verification(
            "the payer paid gas for a gasless open".into(),
        ));
    }
    let f = reader.channel(&opened.0).await?;
    if (f.payer, f.deposit, f.signer) != (local.payer.address(), DEPOSIT, signer) {
        return Err(CliError::Verification(format!(
            "the relayed open left channel {} with payer {}, deposit {}, signer {}",
            opened.0.to_hex(),
            f.payer,
            f.deposit,
            f.signer
        )));
    }
    Ok(opened)
}

/// One call paid the way x402 "exact" pays each call: the payer signs an EIP-3009
/// `transferWithAuthorization` of one item's price and the provider submits it, on the demo's
/// chain and token. After the claim, so the payee's balance is already non-zero, as it is
/// for every call but the first of one-per-call settlement.
async fn per_call_transfer(local: &chain::LocalChain) -> Result<tally_chain::TxOutcome> {
    let submitter = tally_chain::channel::connect(chain::rpc_url(&local.rpc)?, local.payee.clone());
    let exact = X402Exact::new(submitter, local.token).await?;
    let nonce = B256::from(rand::random::<[u8; 32]>());
    Ok(exact
        .pay(
            &local.payer,
            local.payee.address(),
            upstream::ITEM_PRICE,
            nonce,
        )
        .await?)
}

/// One tick of the provider's settlement worker, which must claim something (`none` says
/// what it means if it does not).
pub(super) async fn claim_now(
    serving: &gateway::Serving,
    local: &chain::LocalChain,
    chain_id: u64,
    none: &str,
) -> Result<gateway::Settled> {
    gateway::settle_once(
        &serving.gateway,
        &local.rpc,
        chain_id,
        local.contract,
        local.payee.clone(),
        Duration::from_secs(60),
    )
    .await?
    .ok_or_else(|| CliError::Verification(none.into()))
}

/// The pull step after the claim (spec/CHAIN.md §4.4): moves the local chain's clock past the
/// claim's challenge window (the channel's withdraw delay), has the payee send `payout`, and
/// checks the channel now shows `claimed` paid in full.
pub(super) async fn pay_out(
    local: &chain::LocalChain,
    id: &tally_core::ChannelId,
    window: u32,
    claimed: u128,
    out: &Output,
) -> Result<tally_chain::TxOutcome> {
    out.note(&format!(
        "       moving the local chain's clock past the {window} s challenge window; paying out"
    ));
    chain::warp(&local.rpc, u64::from(window) + 1).await?;
    let payee = chain::wallet(&local.rpc, local.contract, &local.payee).await?;
    let sent = payee.payout(id).await?;
    let after = payee
        .channel(id)
        .await
        .map_err(|e| CliError::Service(format!("reading channel {}: {e}", id.to_hex())))?;
    if after.paid != claimed {
        return Err(CliError::Verification(format!(
            "after the payout the channel shows {} paid, expected {claimed}",
            after.paid
        )));
    }
    Ok(sent)
}

/// How many of the demo's calls are in flight at once.
const DEMO_LANES: usize = 8;

/// What the demo's call `i` is: one failing call in the middle, every third a metered
/// completion, the rest fixed-price item reads.
enum DemoCall {
    Flaky,
    Complete(String),
    Item,
}

/// Writes the demo client's profile (keys `session.key` and `checkpoint.key` already in
/// `pdir`) for `channel` at `provider` on the local chain, and loads it.
pub(super) fn save_profile(
    pdir: &Path,
    provider: &str,
    channel: tally_core::ChannelId,
    local: &chain::LocalChain,
    chain_id: u64,
) -> Result<Profile> {
    Profile::save(
        pdir,
        &ProfileFile {
            provider: provider.into(),
            channel_id: channel.to_hex(),
            session_key_file: "session.key".into(),
            checkpoint_key_file: "checkpoint.key".into(),
            rpc_url: Some(local.rpc.clone()),
            chain: Some(ChainRef {
                chain_id,
                contract: local.contract.to_string(),
            }),
        },
    )?;
    Profile::load(pdir)
}

fn demo_call(i: u64, flaky_at: u64) -> DemoCall {
    if i == flaky_at {
        DemoCall::Flaky
    } else if i % 3 == 2 {
        let words = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do";
        let n = (i % 10 + 1) as usize;
        DemoCall::Complete(words.split(' ').take(n).collect::<Vec<_>>().join(" "))
    } else {
        DemoCall::Item
    }
}

async fn send_demo_call(
    client: &tally_client::Client,
    i: u64,
    flaky_at: u64,
) -> Result<tally_client::PaidResponse> {
    Ok(match demo_call(i, flaky_at) {
        DemoCall::Flaky => client.get("/v1/flaky").send().await?,
        DemoCall::Complete(body) => client.post("/v1/complete").body(body).send().await?,
        DemoCall::Item => client.get(&format!("/v1/items/{i}")).send().await?,
    })
}

#[allow(clippy::too_many_arguments)]
async fn paid_part(
    out: &Output,
    dir: &Path,
    pdir: &Path,
    serving: &gateway::Serving,
    local: &chain::LocalChain,
    chain_id: u64,
    channel_id: tally_core::ChannelId,
    calls: u64,
) -> Result<DemoSummary> {
    let profile = save_profile(pdir, &serving.url(), channel_id, local, chain_id)?;
    let client = profile.connect().await?;

    step(
        out,
        5,
        &format!("making {calls} paid calls, {DEMO_LANES} at a time on one channel"),
    );
    let bar = out.progress(calls, "calls");
    let flaky_at = calls / 2;
    let (mut fixed, mut metered, mut failed) = (0u64, 0u64, 0u64);
    let mut flaky = None;
    // Calls run concurrently on the channel's lanes (spec/PROTOCOL.md §5.4).
    let mut running = tokio::task::JoinSet::new();
    let mut next = 0u64;
    while next < calls || !running.is_empty() {
        while next < calls && running.len() < DEMO_LANES {
            let (c, i) = (client.clone(), next);
            match demo_call(i, flaky_at) {
                DemoCall::Flaky => failed += 1,
                DemoCall::Complete(_) => metered += 1,
                DemoCall::Item => fixed += 1,
            }
            running.spawn(async move { (i, send_demo_call(&c, i, flaky_at).await) });
            next += 1;
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (i, resp) = joined.map_err(|e| CliError::Service(format!("call task: {e}")))?;
        let resp = resp?;
        let receipt = resp.receipt.ok_or_else(|| {
            CliError::Verification(format!("call {i} came back without a receipt"))
        })?;
        profile.keep_exchange(receipt.outcome.index, &resp.exchange)?;
        if i == flaky_at {
            if resp.status != http::StatusCode::INTERNAL_SERVER_ERROR {
                return Err(CliError::Verification(format!(
                    "/v1/flaky answered {}",
                    resp.status
                )));
            }
            flaky = Some((receipt.outcome.index, receipt.outcome.amount));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    client.flush().await?;
    let (flaky, flaky_amount) =
        flaky.ok_or_else(|| CliError::Verification("no failed call was made".into()))?;

    let cp = client.checkpoint().await?;
    let (size, _, cumulative) = client.mirror_head().await;
    step(
        out,
        6,
        &format!(
            "checkpoint at size {} (cumulative {}) signed and cosigned; settling onchain",
            cp.checkpoint.size, cp.checkpoint.cumulative
        ),
    );
    let settled = claim_now(
        serving,
        local,
        chain_id,
        "the settlement worker found nothing to claim",
    )
    .await?;
    let (funding, domain) = chain::read_channel(&local.rpc, local.contract, &channel_id).await?;
    if funding.claimed != cumulative || funding.claimed_size != size {
        return Err(CliError::Verification(format!(
            "onchain: claimed {} at size {}, expected {cumulative} at size {size}",
            funding.claimed, funding.claimed_size
        )));
    }

    let payout = pay_out(local, &channel_id, funding.withdraw_delay, cumulative, out).await?;

    step(
        out,
        7,
        &format!("paying one call the one-per-call way, for its gas: an {PER_CALL_TRANSFER}"),
    );
    let transfer = per_call_transfer(local).await?;

    step(out, 8, "auditing the bill from the provider's endpoints");
    let stmt = statement::fetch(&serving.url(), &channel_id, &profile.session_key()?).await?;
    let report = audit(
        stmt.reader(),
        &AuditContext {
            mirror: Some((size, client.mirror_head().await.1)),
            onchain: Some((funding, domain.clone())),
            progress: None,
        },
        0,
    )?;
    if !report.ok() {
        return Err(CliError::Verification(format!(
            "audit failed:\n{}",
            report.render()
        )));
    }

    step(
        out,
        9,
        &format!("proving record {flaky} (the failed call) and verifying the bundle"),
    );
    let mut bundle = client.proof_bundle(flaky).await?;
    bundle.chain = profile.file.chain.clone();
    let bundle_path = dir.join("bundle.json");
    proof::write(&bundle_path, &bundle)?;
    let bundle = proof::read(&bundle_path)?;
    let checked = proof::verify(&bundle, Some(&local.rpc)).await?;
    if checked.checked != "onchain" {
        return Err(CliError::Verification(
            "the bundle was not checked onchain".into(),
        ));
    }

    // The claim made the cumulative onchain final up to there, and it only grows: a credit
    // nets against usage after it, so the client keeps calling until that covers the refund.
    let mut after_claim = 0u64;
    let mut charged_after_claim = 0u128;
    while client.mirror_head().await.2 < cumulative + flaky_amount.unsigned_abs() {
        let resp = client
            .get(&format!("/v1/items/after-{after_claim}"))
            .send()
            .await?;
        let receipt = resp.receipt.ok_or_else(|| {
            CliError::Verification("a call after the claim came back without a receipt".into())
        })?;
        profile.keep_exchange(receipt.outcome.index, &resp.exchange)?;
        after_claim += 1;
        charged_after_claim += receipt.outcome.amount.unsigned_abs();
    }
    step(
        out,
        10,
        &format!("disputing record {flaky} (after {after_claim} more call(s), which the credit nets against)"),
    );
    let exchange = profile
        .exchange(flaky)?
        .ok_or_else(|| CliError::Verification(format!("no exchange kept for record {flaky}")))?;
    let granted = client.dispute_bundle(bundle, exchange).await?;
    if granted.amount.0 >= 0 {
        return Err(CliError::Verification(format!(
            "the dispute granted {}",
            granted.amount.0
        )));
    }
    let net = client.mirror_head().await.2;
    step(
        out,
        11,
        "streaming paid completions token by token, priced per input and output token",
    );
    let streamed = stream::stream_completions(&client, &profile, out).await?;
    client.flush().await?;
    let (final_size, final_root, _) = client.mirror_head().await;
    // The final bill, credit included, audited again before the exit.
    let last = statement::fetch(&serving.url(), &channel_id, &profile.session_key()?).await?;
    let again = audit(
        last.reader(),
        &AuditContext {
            mirror: Some((final_size, final_root)),
            onchain: Some((funding, domain.clone())),
            progress: None,
        },
        0,
    )?;
    if !again.ok() || again.credited != granted.amount.0.unsigned_abs().to_string() {
        return Err(CliError::Verification(format!(
            "the final bill does not verify with the credit:\n{}",
            again.render()
        )));
    }
    step(
        out,
        12,
        "leaving: initiateWithdraw, the worker claims the final checkpoint, payout, finalizeWithdraw",
    );
    let exit = exit::leave(&client, serving, local, chain_id, &channel_id, DEPOSIT, out).await?;
    // Kept as the provider serves it after the exit (with the final checkpoint), audited
    // again, and written as the page people open: statement.jsonl and bill.html.
    let closed = statement::fetch(&serving.url(), &channel_id, &profile.session_key()?).await?;
    if closed.header.client_key != profile.session_key()?.public() {
        return Err(CliError::Verification(
            "the provider's statement names another client key than the demo client's".into(),
        ));
    }
    let final_bill = audit(
        closed.reader(),
        &AuditContext {
            mirror: Some((final_size, final_root)),
            onchain: Some((funding, domain)),
            progress: None,
        },
        0,
    )?;
    if !final_bill.ok() {
        return Err(CliError::Verification(format!(
            "the bill after the exit does not verify:\n{}",
            final_bill.render()
        )));
    }
    closed.write(&dir.join("statement.jsonl"))?;
    crate::commands::bill::write(
        &dir.join("bill.html"),
        crate::commands::bill::Audited::Fetched(&closed),
        &final_bill,
        None,
        true,
    )?;
    drop(client);

    Ok(DemoSummary {
        calls,
        fixed_calls: fixed,
        metered_calls: metered,
        failed_calls: failed,
        charged: report.charged.clone(),
        calls_after_claim: after_claim,
        charged_after_claim: charged_after_claim.to_string(),
        net_after_dispute: net.to_string(),
        checkpoint_size: size,
        checkpoints: stmt.header.checkpoints.len(),
        claim_transaction: settled.transaction,
        claim_gas: settled.gas_used,
        gas_per_call: settled.gas_used as f64 / size as f64,
        payout_transaction: payout.tx_hash.to_string(),
        payout_gas: payout.gas_used,
        settle_gas_per_call: (settled.gas_used + payout.gas_used) as f64 / size as f64,
        per_call_transfer: PER_CALL_TRANSFER.into(),
        per_call_transfer_transaction: format!("{}", transfer.tx_hash),
        per_call_transfer_gas: transfer.gas_used,
        open_gas: 0,
        withdraw_gas: exit.withdraw.gas_used,
        final_claim_transaction: exit.claim.transaction,
        final_claim_gas: exit.claim.gas_used,
        final_payout_gas: exit.payout.gas_used,
        finalize_gas: exit.finalize.gas_used,
        final_size: exit.size,
        paid_onchain: exit.cumulative.to_string(),
        refund: exit.refund.to_string(),
        // Every record but the credit is a paid call.
        channel_calls: exit.size.saturating_sub(1),
        // Filled in by `count_channel` once the open's gas is added.
        channel_gas: 0,
        channel_gas_per_call: 0.0,
        one_per_call_transactions: 0,
        one_per_call_gas: 0,
        one_per_call_ratio: 0.0,
        claimed_onchain: cumulative.to_string(),
        audit_records_per_second: report.records_per_second,
        audit_discrepancies: report.discrepancy_count as usize,
        disputed_index: granted.disputed_index,
        credit: granted.amount.0.to_string(),
        credit_rule: granted.rule,
        streamed,
        seconds: 0.0,
        kept: None,
    })
}
