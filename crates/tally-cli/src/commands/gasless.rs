//! `--provider` and `--gasless` for `tally channel open|topup` (spec/HTTP.md §12, spec/CHAIN.md
//! §2.1): the provider's terms name the contract, token and payee, and its relay submits a
//! deposit the payer only signed. The CLI still reads the chain itself: the relay's answer is
//! a transaction hash, and what counts is the channel the contract then holds.

use alloy::primitives::{Address, B256};
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use std::time::Duration;
use tally_chain::gasless::token_domain;
use tally_chain::{DepositDomains, GaslessOpen, GaslessTopUp, OpenParams, TallyClient, TxOutcome};
use tally_core::ChannelId;
use tally_http::api::Relayed;

use crate::chain;
use crate::cli::{FundingChainArgs, GaslessAuth};
use crate::error::{CliError, Result};

/// How long a signed gasless deposit stays valid: long enough for a relay to submit it on a
/// busy chain, short enough that a leaked signature soon expires.
const VALIDITY: u64 = 600;

/// How long the CLI waits for the relay, which answers once the transaction is mined (the
/// relay itself gives up waiting for a receipt after 90 s).
const RELAY_TIMEOUT: Duration = Duration::from_secs(150);

/// Where a deposit goes: the contract, and (for an open) the token and payee, from the flags
/// and the provider's terms.
pub struct Target {
    /// The Tally contract.
    pub contract: Address,
    /// The deposit token (an open needs it).
    pub token: Option<Address>,
    /// The payee (an open needs it).
    pub payee: Option<Address>,
}

/// Resolves the target: a flag wins only if it agrees with the provider's terms (a mismatch
/// is a usage error: one of them names a different deployment); without `--provider`, the
/// flags must say everything.
pub async fn target(
    chain_args: &FundingChainArgs,
    token: Option<&str>,
    payee: Option<&str>,
) -> Result<Target> {
    let flag = |what: &str, v: Option<&str>| v.map(|t| chain::address(what, t)).transpose();
    let mut t = Target {
        contract: match &chain_args.contract {
            Some(c) => chain::address("contract", c)?,
            None => Address::ZERO,
        },
        token: flag("token", token)?,
        payee: flag("payee", payee)?,
    };
    let Some(base) = &chain_args.provider else {
        if chain_args.contract.is_none() {
            return Err(CliError::Usage(
                "--contract is required without --provider".into(),
            ));
        }
        return Ok(t);
    };
    let terms = tally_client::discovery::discover(&http()?, base)
        .await?
        .terms;
    let named = |what: &str, text: &str| {
        chain::address(what, text).map_err(|_| {
            CliError::Service(format!(
                "the provider's terms name {what} {text:?}, not an address"
            ))
        })
    };
    let given_contract = chain_args.contract.as_ref().map(|_| t.contract);
    t.contract = agree(
        "contract",
        given_contract,
        named("chain.contract", &terms.chain.contract)?,
    )?;
    t.token = Some(agree(
        "token",
        t.token,
        named("chain.asset", &terms.chain.asset)?,
    )?);
    t.payee = Some(agree(
        "payee",
        t.payee,
        named("chain.pay_to", &terms.chain.pay_to)?,
    )?);
    let reader = chain::reader(&chain_args.rpc, t.contract).await?;
    if reader.chain_id() != terms.chain.chain_id {
        return Err(CliError::Usage(format!(
            "--rpc is chain {}, the provider's terms chain {}",
            reader.chain_id(),
            terms.chain.chain_id
        )));
    }
    // A contract only the provider named gets the payer's tokens (an approval, a permit or
    // an EIP-3009 `to`) only if it runs this build's Tally code: a provider must not be able
    // to point a payer at a contract of its own that merely answers like Tally.
    if given_contract.is_none() {
        tally_chain::deploy::check_tally_code(&reader)
            .await
            .map_err(|e| {
                CliError::Verification(format!(
                    "the provider's terms name contract {}: {e}; refusing to fund it (pass --contract to choose one yourself)",
                    t.contract
                ))
            })?;
    }
    Ok(t)
}

/// The terms' value, unless the flag named a different one.
fn agree(what: &str, flag: Option<Address>, terms: Address) -> Result<Address> {
    match flag {
        Some(mine) if mine != terms => Err(CliError::Usage(format!(
            "--{what} {mine} differs from the provider's terms ({terms})"
        ))),
        _ => Ok(terms),
    }
}

/// The chain's own clock (its newest block's time): the token checks validity windows
/// against it, and a local chain's clock may run ahead of this machine's.
async fn chain_now(reader: &TallyClient) -> Result<u64> {
    let fail = |e: String| CliError::Service(format!("reading the chain's time: {e}"));
    let p = reader.provider();
    let n = p
        .get_block_number()
        .await
        .map_err(|e| fail(e.to_string()))?;
    let block = p
        .get_block_by_number(n.into())
        .await
        .map_err(|e| fail(e.to_string()))?
        .ok_or_else(|| fail(format!("block {n} not found")))?;
    Ok(block.header.timestamp)
}

async fn domains(reader: &TallyClient, token: Address) -> Result<DepositDomains> {
    Ok(DepositDomains {
        chain_id: reader.chain_id(),
        contract: reader.address(),
        token: token_domain(reader.provider(), token, reader.chain_id()).await?,
    })
}

fn http() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(RELAY_TIMEOUT)
        .build()
        .map_err(|e| CliError::Service(format!("http client: {e}")))
}

/// A relay that refuses or fails is a service that could not be used (exit 2): nothing was
/// verified and found wrong, and the deposit can still be sent without --gasless. The signed
/// authorization stays valid until `until` (chain time), so the message says so, and for an
/// open names the salt: retrying with it can never open a second channel.
fn relay_failed(e: tally_client::ClientError, until: u64, salt: Option<B256>) -> CliError {
    let retry = match salt {
        Some(s) => format!("; retry with --salt {s} to never open twice"),
        None => String::new(),
    };
    CliError::Service(format!(
        "the provider's relay: {e} (the signed authorization stays valid until unix time {until}{retry})"
    ))
}

fn outcome(r: &Relayed) -> TxOutcome {
    TxOutcome {
        tx_hash: B256::from(r.transaction.0),
        gas_used: r.gas_used,
        block: r.block,
    }
}

/// Signs an open with `payer` (`auth` chooses the token authorization) and has the relay at
/// `base` submit it; returns the channel id and the relayed transaction, which is `None` when
/// the relay failed but the channel is on the chain all the same (the caller checks it).
pub async fn open(
    base: &str,
    reader: &TallyClient,
    payer: &PrivateKeySigner,
    p: OpenParams,
    auth: GaslessAuth,
) -> Result<(ChannelId, Option<TxOutcome>)> {
    let d = domains(reader, p.token).await?;
    let until = chain_now(reader).await? + VALIDITY;
    let signed = match auth {
        GaslessAuth::Eip3009 => GaslessOpen::sign_eip3009(payer, &d, p, (0, until))?,
        GaslessAuth::Permit => {
            let nonce = reader.permit_nonce(p.token, payer.address()).await?;
            GaslessOpen::sign_permit(payer, &d, p, nonce, until)?
        }
    };
    match tally_client::relay::relay_open(&http()?, base, &signed).await {
        Ok(relayed) => Ok((relayed.channel_id, Some(outcome(&relayed)))),
        Err(e) => {
            // The relay may have sent it before failing (a timeout, a lost answer): the id is
            // known offline, so the chain says whether the channel exists after all.
            let id = signed.channel_id(&d);
            match reader.channel(&id).await {
                Ok(_) => Ok((id, None)),
                Err(_) => Err(relay_failed(e, until, Some(p.salt))),
            }
        }
    }
}

/// Signs a top-up of `channel` (whose token is `token`) and has the relay submit it.
pub async fn top_up(
    base: &str,
    reader: &TallyClient,
    payer: &PrivateKeySigner,
    (channel, token, amount): (&ChannelId, Address, u128),
    auth: GaslessAuth,
) -> Result<TxOutcome> {
    let d = domains(reader, token).await?;
    let until = chain_now(reader).await? + VALIDITY;
    let salt = chain::random_salt();
    let signed = match auth {
        GaslessAuth::Eip3009 => {
            GaslessTopUp::sign_eip3009(payer, &d, channel, amount, salt, (0, until))?
        }
        GaslessAuth::Permit => {
            let nonce = reader.permit_nonce(token, payer.address()).await?;
            GaslessTopUp::sign_permit(payer, &d, channel, (amount, salt), nonce, until)?
        }
    };
    let relayed = tally_client::relay::relay_top_up(&http()?, base, &signed)
        .await
        .map_err(|e| relay_failed(e, until, None))?;
    Ok(outcome(&relayed))
}
