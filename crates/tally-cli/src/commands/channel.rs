//! `tally channel open|topup|withdraw|status|close`: the client's onchain channel
//! operations, all through tally-chain's contract client. Every transaction is followed by a
//! read of the channel, and the command fails (exit 1) if the contract does not hold what the
//! transaction should have left there.
//!
//! Two exits: `withdraw` then `withdraw --finalize` after the delay, needing nobody; or
//! `close`, at once, with the provider's cooperation: tally-client signs the EIP-712 Close of
//! the mirror's verified head with the checkpoint key and gets the payee's Close signature
//! from the gateway (spec/HTTP.md §5.4), then `cooperativeClose` is submitted and the payout
//! and refund are checked against the token balances.

use alloy::primitives::B256;
use serde_json::{json, Value};
use tally_chain::{ChannelFunding, TallyClient, TxOutcome, WithdrawState};
use tally_core::ChannelId;

use super::gasless;
use crate::chain;
use crate::cli::{
    ChainArgs, ChannelCloseArgs, ChannelOpenArgs, ChannelStatusArgs, ChannelTopupArgs,
    ChannelWithdrawArgs,
};
use crate::error::{CliError, Result};
use crate::keys;
use crate::output::Output;
use crate::profile::Profile;

/// The profile's checkpoint key file (as `tally keygen` writes it).
const CHECKPOINT_KEY: &str = "checkpoint.key";

fn contract(a: &ChainArgs) -> Result<alloy::primitives::Address> {
    chain::rpc_url(&a.rpc)?;
    chain::address("contract", &a.contract)
}

async fn read(client: &TallyClient, id: &ChannelId) -> Result<ChannelFunding> {
    client
        .channel(id)
        .await
        .map_err(|e| CliError::Service(format!("reading channel {}: {e}", id.to_hex())))
}

fn tx_json(t: &TxOutcome) -> Value {
    json!({"transaction": t.tx_hash.to_string(), "block": t.block, "gas_used": t.gas_used})
}

/// A channel's state as JSON (amounts as decimal strings).
pub fn funding_json(f: &ChannelFunding) -> Value {
    let withdraw = match f.withdraw {
        WithdrawState::None => json!({"state": "none"}),
        WithdrawState::Pending { at } => json!({"state": "pending", "at": at}),
        WithdrawState::Closed => json!({"state": "closed"}),
    };
    json!({
        "channel_id": f.channel_id.to_hex(),
        "payer": f.payer.to_string(),
        "payee": f.payee.to_string(),
        "token": f.token.to_string(),
        "signer": f.signer.to_string(),
        "deposit": f.deposit.to_string(),
        "claimed": f.claimed.to_string(),
        "remaining": f.remaining().to_string(),
        "claimed_size": f.claimed_size,
        "claimed_root": f.claimed_root.to_hex(),
        "withdraw_delay": f.withdraw_delay,
        "withdraw": withdraw,
    })
}

fn withdraw_text(w: WithdrawState) -> String {
    match w {
        WithdrawState::None => "none".into(),
        WithdrawState::Pending { at } => format!("pending (finalize from unix time {at})"),
        WithdrawState::Closed => "closed".into(),
    }
}

/// A channel's state for humans.
pub fn funding_text(f: &ChannelFunding) -> String {
    format!(
        "channel         {}\npayer           {}\npayee           {}\ntoken           {}\nsigner          {}\ndeposit         {}\nclaimed         {}\nremaining       {}\nclaimed size    {}\nclaimed root    {}\nwithdraw delay  {}s\nwithdraw        {}",
        f.channel_id.to_hex(),
        f.payer,
        f.payee,
        f.token,
        f.signer,
        f.deposit,
        f.claimed,
        f.remaining(),
        f.claimed_size,
        f.claimed_root.to_hex(),
        f.withdraw_delay,
        withdraw_text(f.withdraw)
    )
}

fn with_tx(f: &ChannelFunding, t: &TxOutcome) -> Value {
    let mut v = funding_json(f);
    v["tx"] = tx_json(t);
    v
}

/// `tally channel open`.
pub async fn open(a: ChannelOpenArgs, out: Output) -> Result<()> {
    let salt = match &a.salt {
        Some(s) => s
            .parse::<B256>()
            .map_err(|e| CliError::Usage(format!("salt {s:?} is not 64 hex digits: {e}")))?,
        None => chain::random_salt(),
    };
    if a.amount == 0 {
        return Err(CliError::Usage("--amount must be positive".into()));
    }
    if a.withdraw_delay < tally_chain::MIN_WITHDRAW_DELAY {
        return Err(CliError::Usage(format!(
            "--withdraw-delay {} is below the contract's minimum of {}s",
            a.withdraw_delay,
            tally_chain::MIN_WITHDRAW_DELAY
        )));
    }
    if !a.client.is_dir() {
        return Err(CliError::Usage(format!(
            "{}: no such profile directory (create one with `tally keygen --dir`)",
            a.client.display()
        )));
    }
    let target = gasless::target(&a.chain, a.token.as_deref(), a.payee.as_deref()).await?;
    let (Some(token), Some(payee)) = (target.token, target.payee) else {
        return Err(CliError::Usage(
            "--token and --payee are required without --provider".into(),
        ));
    };
    let contract = target.contract;
    let signer = keys::read_secp256k1(&a.client.join(CHECKPOINT_KEY))?.address();
    let payer = keys::read_secp256k1(&a.payer_key)?;
    let params = tally_chain::OpenParams {
        payee,
        token,
        amount: a.amount,
        signer,
        withdraw_delay: a.withdraw_delay,
        salt,
    };
    let client = chain::wallet(&a.chain.rpc, contract, &payer).await?;
    let (id, tx) = match (&a.chain.provider, a.chain.gasless) {
        (Some(base), true) => gasless::open(base, &client, &payer, params, a.chain.auth).await?,
        _ => {
            client.approve(token, a.amount).await?;
            let (id, tx) = client.open(params).await?;
            (id, Some(tx))
        }
    };
    let expected = client.channel_id_for(payer.address(), payee, token, salt);
    if id != expected {
        return Err(CliError::Verification(format!(
            "channel id {} differs from the one computed offline, {}",
            id.to_hex(),
            expected.to_hex()
        )));
    }
    let f = read(&client, &id).await?;
    if f.payer != payer.address()
        || f.payee != payee
        || f.token != token
        || f.signer != signer
        || f.deposit != a.amount
        || f.withdraw_delay != a.withdraw_delay
        || f.withdraw != WithdrawState::None
    {
        return Err(CliError::Verification(format!(
            "the contract does not hold the channel that was opened:\n{}",
            funding_text(&f)
        )));
    }
    let mut v = match &tx {
        Some(t) => with_tx(&f, t),
        None => funding_json(&f),
    };
    v["salt"] = json!(salt.to_string());
    v["relayed"] = json!(a.chain.gasless);
    out.emit(&v, || id.to_hex());
    let how = match (&tx, a.chain.gasless) {
        (Some(t), true) => format!("tx {}, relayed: the provider paid the gas", t.tx_hash),
        (Some(t), false) => format!("tx {}", t.tx_hash),
        (None, _) => "the relay's answer was lost, the channel is on the chain".to_string(),
    };
    out.note(&format!(
        "opened with a deposit of {} (signer {signer}, salt {salt}, {how})",
        f.deposit
    ));
    Ok(())
}

/// `tally channel topup`.
pub async fn topup(a: ChannelTopupArgs, out: Output) -> Result<()> {
    let id = super::channel_id(&a.channel)?;
    if a.amount == 0 {
        return Err(CliError::Usage("--amount must be positive".into()));
    }
    let contract = gasless::target(&a.chain, None, None).await?.contract;
    let payer = keys::read_secp256k1(&a.payer_key)?;
    let client = chain::wallet(&a.chain.rpc, contract, &payer).await?;
    let before = read(&client, &id).await?;
    if before.withdraw == WithdrawState::Closed {
        return Err(CliError::Usage(format!(
            "channel {} is closed",
            id.to_hex()
        )));
    }
    let tx = match (&a.chain.provider, a.chain.gasless) {
        (Some(base), true) => {
            let what = (&id, before.token, a.amount);
            gasless::top_up(base, &client, &payer, what, a.chain.auth).await?
        }
        _ => {
            client.approve(before.token, a.amount).await?;
            client.top_up(&id, a.amount).await?
        }
    };
    let after = read(&client, &id).await?;
    if Some(after.deposit) != before.deposit.checked_add(a.amount) {
        return Err(CliError::Verification(format!(
            "deposit went from {} to {} after a top-up of {}",
            before.deposit, after.deposit, a.amount
        )));
    }
    let mut v = with_tx(&after, &tx);
    v["relayed"] = json!(a.chain.gasless);
    out.emit(&v, || {
        format!(
            "topped up {} by {}: deposit {} (tx {})",
            id.to_hex(),
            a.amount,
            after.deposit,
            tx.tx_hash
        )
    });
    Ok(())
}

/// `tally channel withdraw [--finalize]`.
pub async fn withdraw(a: ChannelWithdrawArgs, out: Output) -> Result<()> {
    let contract = contract(&a.chain)?;
    let id = super::channel_id(&a.channel)?;
    let payer = keys::read_secp256k1(&a.payer_key)?;
    let client = chain::wallet(&a.chain.rpc, contract, &payer).await?;
    let before = read(&client, &id).await?;
    if before.payer != payer.address() {
        return Err(CliError::Usage(format!(
            "channel {} is paid by {}, not by this key's {}",
            id.to_hex(),
            before.payer,
            payer.address()
        )));
    }
    if a.finalize {
        match before.withdraw {
            WithdrawState::Pending { .. } => {}
            other => {
                return Err(CliError::Usage(format!(
                    "channel {} has no pending withdraw (withdraw: {}); run `tally channel withdraw` first",
                    id.to_hex(),
                    withdraw_text(other)
                )))
            }
        }
        let refund = before.remaining();
        let tx = client.finalize_withdraw(&id).await?;
        let after = read(&client, &id).await?;
        if after.withdraw != WithdrawState::Closed {
            return Err(CliError::Verification(format!(
                "channel {} is not closed after finalizeWithdraw (withdraw: {})",
                id.to_hex(),
                withdraw_text(after.withdraw)
            )));
        }
        let mut v = with_tx(&after, &tx);
        v["refunded"] = json!(refund.to_string());
        out.emit(&v, || {
            format!(
                "closed {}: refunded {refund} (tx {})",
                id.to_hex(),
                tx.tx_hash
            )
        });
        return Ok(());
    }
    if before.withdraw != WithdrawState::None {
        return Err(CliError::Usage(format!(
            "channel {} cannot start a withdraw (withdraw: {})",
            id.to_hex(),
            withdraw_text(before.withdraw)
        )));
    }
    let tx = client.initiate_withdraw(&id).await?;
    let after = read(&client, &id).await?;
    let at = match after.withdraw {
        WithdrawState::Pending { at } => at,
        other => {
            return Err(CliError::Verification(format!(
                "channel {} is not withdrawing after initiateWithdraw (withdraw: {})",
                id.to_hex(),
                withdraw_text(other)
            )))
        }
    };
    out.emit(&with_tx(&after, &tx), || {
        format!(
            "withdraw started on {}: the payee can claim until unix time {at}; then run `tally channel withdraw --finalize` (tx {})",
            id.to_hex(),
            tx.tx_hash
        )
    });
    Ok(())
}

/// `tally channel status`.
pub async fn status(a: ChannelStatusArgs, out: Output) -> Result<()> {
    let contract = contract(&a.chain)?;
    let id = super::channel_id(&a.channel)?;
    let client = chain::reader(&a.chain.rpc, contract).await?;
    let f = read(&client, &id).await?;
    out.emit(&funding_json(&f), || funding_text(&f));
    Ok(())
}

/// The token balances a close moves: the channel's payee's and payer's.
async fn balances(client: &TallyClient, f: &ChannelFunding) -> Result<(u128, u128)> {
    let read = |who| async move {
        client
            .token_balance(f.token, who)
            .await
            .map_err(|e| CliError::Service(format!("reading the balance of {who}: {e}")))
    };
    Ok((read(f.payee).await?, read(f.payer).await?))
}

/// `tally channel close`.
pub async fn close(a: ChannelCloseArgs, out: Output) -> Result<()> {
    let contract = contract(&a.chain)?;
    let profile = Profile::load(&a.client)?;
    let id = profile.channel_id;
    let wallet = keys::read_secp256k1(&a.payer_key)?;
    let client = chain::wallet(&a.chain.rpc, contract, &wallet).await?;
    let before = read(&client, &id).await?;
    if before.withdraw == WithdrawState::Closed {
        return Err(CliError::Usage(format!(
            "channel {} is already closed",
            id.to_hex()
        )));
    }
    // Connecting resyncs the mirror with the provider's log, verifying every record.
    let sdk = profile.connect().await?;
    let agreement = sdk.close(before.payee).await?;
    // The SDK signed under the terms' chain and contract; the contract checks its own.
    agreement
        .verify(&client.domain(), before.signer, before.payee)
        .map_err(|e| {
            CliError::Verification(format!(
                "the close agreement would not verify at contract {contract}: {e}"
            ))
        })?;
    let cp = agreement.checkpoint;
    // The close transfers `capped - paid` to the payee (spec/CHAIN.md §4.5), whether a payout
    // (the provider's worker) is mined before the close or not, so `paid` and the balances
    // must be read together: again until no payout landed between the two channel reads.
    let mut snapshot = None;
    for _ in 0..5 {
        let pre = read(&client, &id).await?;
        let (payee, payer) = balances(&client, &pre).await?;
        if read(&client, &id).await?.paid == pre.paid {
            snapshot = Some((pre, payee, payer));
            break;
        }
    }
    let (pre, payee_before, payer_before) = snapshot.ok_or_else(|| {
        CliError::Service("the channel's paid-out amount kept changing while it was read".into())
    })?;
    let tx = client
        .cooperative_close(&cp, &agreement.signer_sig, &agreement.payee_sig)
        .await?;
    let after = read(&client, &id).await?;
    let (payee_after, payer_after) = balances(&client, &pre).await?;
    let capped = cp.cumulative.min(pre.deposit);
    let paid = capped.saturating_sub(pre.paid);
    let refund = pre.deposit - capped;
    let got_paid = payee_after.checked_sub(payee_before);
    let got_refund = payer_after.checked_sub(payer_before);
    let same_account = pre.payee == pre.payer;
    let moved_right = if same_account {
        got_paid == paid.checked_add(refund)
    } else {
        got_paid == Some(paid) && got_refund == Some(refund)
    };
    if after.withdraw != WithdrawState::Closed
        || after.claimed != capped
        || after.claimed_size != cp.size
        || after.claimed_root != cp.root
        || !moved_right
    {
        return Err(CliError::Verification(format!(
            "after cooperativeClose (tx {}) the chain does not hold the close of size {} and cumulative {}: expected {paid} paid to the payee and {refund} refunded, the balances moved by {} and {}\n{}",
            tx.tx_hash,
            cp.size,
            cp.cumulative,
            signed_delta(payee_before, payee_after),
            signed_delta(payer_before, payer_after),
            funding_text(&after)
        )));
    }
    let mut v = with_tx(&after, &tx);
    v["paid"] = json!(paid.to_string());
    v["refund"] = json!(refund.to_string());
    v["size"] = json!(cp.size);
    v["cumulative"] = json!(cp.cumulative.to_string());
    out.emit(&v, || {
        format!(
            "closed {} at size {} (cumulative {}): paid {paid} to the payee, refunded {refund} (tx {})",
            id.to_hex(),
            cp.size,
            cp.cumulative,
            tx.tx_hash
        )
    });
    Ok(())
}

/// `after - before` as a signed decimal, for the discrepancy message.
fn signed_delta(before: u128, after: u128) -> String {
    if after >= before {
        format!("+{}", after - before)
    } else {
        format!("-{}", before - after)
    }
}
