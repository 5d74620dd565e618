//! `tally verify`: the bill audit ([`crate::audit`]) of a statement file or of the
//! provider's endpoints, against the client's mirror and the chain when given.

use tally_client::mirror::Mirror;

use crate::audit::{audit, AuditContext};
use crate::cli::VerifyArgs;
use crate::error::{CliError, Result};
use crate::output::Output;
use crate::profile::Profile;
use crate::statement::Statement;

/// Audits; exit 1 on any discrepancy.
pub async fn run(a: VerifyArgs, out: Output) -> Result<()> {
    let profile = a.client.as_deref().map(Profile::load).transpose()?;
    let statement = match (&a.statement, &a.provider, &profile) {
        (Some(path), _, _) => Statement::read(path)?,
        (None, url, Some(p)) => {
            let base = url.clone().unwrap_or_else(|| p.file.provider.clone());
            out.note(&format!("fetching the statement from {base}"));
            crate::statement::fetch(&base, &p.channel_id, &p.session_key()?).await?
        }
        (None, _, None) => {
            return Err(CliError::Usage(
                "give --statement FILE, or --client DIR (with --provider URL or the profile's)"
                    .into(),
            ))
        }
    };
    let mut ctx = AuditContext::default();
    if let Some(p) = &profile {
        if p.channel_id != statement.header.channel_id {
            return Err(CliError::Verification(format!(
                "the statement is for channel {}, the profile's is {}",
                statement.header.channel_id.to_hex(),
                p.channel_id.to_hex()
            )));
        }
        let mirror = Mirror::open(&p.mirror_dir(), p.channel_id)?;
        ctx.mirror = Some((mirror.size(), mirror.root()));
    }
    if let Some(rpc) = &a.rpc {
        let contract = match &a.contract {
            Some(c) => c.clone(),
            None => statement
                .header
                .terms
                .as_deref()
                .and_then(|t| tally_http::Terms::parse(t.as_bytes()).ok())
                .map(|t| t.chain.contract)
                .or_else(|| {
                    profile
                        .as_ref()
                        .and_then(|p| p.file.chain.as_ref().map(|c| c.contract.clone()))
                })
                .ok_or_else(|| {
                    CliError::Usage(
                        "--rpc needs --contract (neither the statement nor the profile names one)"
                            .into(),
                    )
                })?,
        };
        let contract = crate::chain::address("contract", &contract)?;
        ctx.onchain =
            Some(crate::chain::read_channel(rpc, contract, &statement.header.channel_id).await?);
    }
    let n = statement.lines().len() as u64;
    let bar = out.progress(n, "verifying");
    let b = bar.clone();
    ctx.progress = Some(Box::new(move |done| b.set_position(done)));
    let report = audit(&statement, &ctx, a.threads);
    bar.finish_and_clear();
    out.emit(&report, || report.render());
    if report.ok() {
        Ok(())
    } else {
        Err(CliError::Verification(format!(
            "the bill does not verify: {} discrepancies",
            report.discrepancies.len()
        )))
    }
}
