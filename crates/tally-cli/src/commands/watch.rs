//! `tally channel watch`: the client's side of a credit (spec/CHAIN.md §4.6). It reads the
//! newest payee-cosigned credit state from the profile's mirror (kept there by `dispute
//! submit`, spec/HTTP.md §7) and the channel from the chain, and when the payee's current
//! state is older and higher than the credit, posts the credit with `claimCosigned`, signed
//! by the profile's checkpoint key. It never talks to the gateway: a provider that is down or
//! hostile cannot stop it.

use std::time::Duration;

use serde_json::{json, Value};
use tally_client::client::credit::{answer_claim, read_credit};
use tally_client::mirror::Mirror;
use tally_client::{ClaimAnswer, Quiet};

use crate::chain;
use crate::cli::ChannelWatchArgs;
use crate::error::{CliError, Result};
use crate::keys;
use crate::output::Output;
use crate::profile::Profile;

fn quiet_text(q: Quiet) -> &'static str {
    match q {
        Quiet::NoCredit => "no_credit",
        Quiet::Closed => "closed",
        Quiet::AlreadyPosted => "already_posted",
        Quiet::NotOlder => "not_older",
        Quiet::NotHigher => "not_higher",
    }
}

fn answer_json(a: &ClaimAnswer) -> Value {
    match a {
        ClaimAnswer::Answered {
            credit,
            replaced,
            tx,
        } => json!({
            "answered": true,
            "size": credit.checkpoint.size,
            "cumulative": credit.checkpoint.cumulative.to_string(),
            "replaced_size": replaced.0,
            "replaced_claimed": replaced.1.to_string(),
            "transaction": tx.tx_hash.to_string(),
            "block": tx.block,
            "gas_used": tx.gas_used,
        }),
        ClaimAnswer::Quiet(q) => json!({"answered": false, "reason": quiet_text(*q)}),
    }
}

fn answer_text(a: &ClaimAnswer) -> String {
    match a {
        ClaimAnswer::Answered {
            credit,
            replaced,
            tx,
        } => format!(
            "the payee claimed size {} ({}); posted the credit state of size {} (cumulative {}) with claimCosigned (tx {})",
            replaced.0, replaced.1, credit.checkpoint.size, credit.checkpoint.cumulative, tx.tx_hash
        ),
        ClaimAnswer::Quiet(Quiet::NoCredit) => "no payee-cosigned credit held: nothing to answer".into(),
        ClaimAnswer::Quiet(Quiet::Closed) => "the channel is closed".into(),
        ClaimAnswer::Quiet(Quiet::AlreadyPosted) => "the newest credit is already posted".into(),
        ClaimAnswer::Quiet(Quiet::NotOlder) => "the claimed state already includes the newest credit".into(),
        ClaimAnswer::Quiet(Quiet::NotHigher) => "the claimed amount is not above the newest credit's".into(),
    }
}

/// Watches; exit 0 when the channel is closed (or after one check with `--once`), 2 when
/// the chain cannot be read or the answer cannot be sent.
pub async fn run(a: ChannelWatchArgs, out: Output) -> Result<()> {
    if a.interval == 0 {
        return Err(CliError::Usage(
            "--interval must be at least 1 second".into(),
        ));
    }
    chain::rpc_url(&a.chain.rpc)?;
    let contract = chain::address("contract", &a.chain.contract)?;
    let profile = Profile::load(&a.client)?;
    let id = profile.channel_id;
    let key = profile.checkpoint_key()?;
    let wallet = keys::read_secp256k1(&a.payer_key)?;
    let client = chain::wallet(&a.chain.rpc, contract, &wallet).await?;
    // Read once and let go of the mirror: nothing else adds credits while this runs.
    let credit = read_credit(&Mirror::open(&profile.mirror_dir(), id)?, id)?;
    loop {
        let answer = answer_claim(&client, &key, id, credit.as_ref()).await?;
        let closed = answer == ClaimAnswer::Quiet(Quiet::Closed);
        if a.once || closed || matches!(answer, ClaimAnswer::Answered { .. }) {
            let mut v = answer_json(&answer);
            v["channel_id"] = json!(id.to_hex());
            out.emit(&v, || answer_text(&answer));
        }
        if a.once || closed {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(a.interval)).await;
    }
}
