//! `tally verify`: the bill audit ([`tally_audit::audit`]) of a statement file, streamed
//! from disk, or of the provider's endpoints, against the client's mirror and the chain when
//! given. This command only gathers the inputs and renders the report (and, with `--html`,
//! the bill page).

use tally_audit::{audit, AuditContext, Statement, StatementHeader, StatementReader};
use tally_client::mirror::Mirror;

use super::bill::{self, Audited};
use crate::cli::VerifyArgs;
use crate::error::{CliError, Result};
use crate::output::Output;
use crate::profile::Profile;

/// Where the statement comes from: a file (streamed) or the provider (fetched into memory).
enum Source {
    File(StatementReader<std::io::BufReader<std::fs::File>>),
    Fetched(Statement),
}

impl Source {
    fn header(&self) -> &StatementHeader {
        match self {
            Source::File(r) => r.header(),
            Source::Fetched(s) => &s.header,
        }
    }
}

/// Audits; exit 1 on any discrepancy.
pub async fn run(a: VerifyArgs, out: Output) -> Result<()> {
    let profile = a.client.as_deref().map(Profile::load).transpose()?;
    let statement = match (&a.statement, &a.provider, &profile) {
        (Some(path), _, _) => Source::File(StatementReader::open(path)?),
        (None, url, Some(p)) => {
            let base = url.clone().unwrap_or_else(|| p.file.provider.clone());
            out.note(&format!("fetching the statement from {base}"));
            Source::Fetched(crate::statement::fetch(&base, &p.channel_id, &p.session_key()?).await?)
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
        if p.channel_id != statement.header().channel_id {
            return Err(CliError::Verification(format!(
                "the statement is for channel {}, the profile's is {}",
                statement.header().channel_id.to_hex(),
                p.channel_id.to_hex()
            )));
        }
        // The statement names the keys; the profile knows which is the client's own, and a
        // statement with another client key proves nothing about this client.
        let own = p.session_key()?.public();
        if statement.header().client_key != own {
            return Err(CliError::Verification(format!(
                "the statement names client key {}, the profile's session key is {}",
                statement.header().client_key.to_hex(),
                own.to_hex()
            )));
        }
        let mirror = Mirror::open(&p.mirror_dir(), p.channel_id)?;
        ctx.mirror = Some((mirror.size(), mirror.root()));
    }
    if let Some(rpc) = &a.rpc {
        let contract = match &a.contract {
            Some(c) => c.clone(),
            None => statement
                .header()
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
            Some(crate::chain::read_channel(rpc, contract, &statement.header().channel_id).await?);
    }
    // The record count is known only at the end of a stream: the last checkpoint's size is
    // the bar's estimate.
    let estimate = statement
        .header()
        .checkpoints
        .last()
        .and_then(|c| c.note.lines().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    let bar = out.progress(estimate, "verifying");
    let b = bar.clone();
    ctx.progress = Some(Box::new(move |done| b.set_position(done)));
    let (report, fetched) = match statement {
        Source::File(reader) => (audit(reader, &ctx, a.threads)?, None),
        Source::Fetched(s) => (audit(s.reader(), &ctx, a.threads)?, Some(s)),
    };
    bar.finish_and_clear();
    out.emit(&report, || report.render());
    if let Some(html) = &a.html {
        let source = match (&fetched, &a.statement) {
            (Some(s), _) => Audited::Fetched(s),
            (None, Some(path)) => Audited::File(path),
            (None, None) => return Err(CliError::Usage("no statement to write a bill of".into())),
        };
        let started = std::time::Instant::now();
        let proofs = bill::write(html, source, &report, a.evidence, profile.is_some())?;
        out.note(&format!(
            "wrote the bill to {} in {:.1} s ({proofs} of {} records with proofs)",
            html.display(),
            started.elapsed().as_secs_f64(),
            report.records
        ));
    }
    if report.ok() {
        Ok(())
    } else {
        Err(CliError::Verification(format!(
            "the bill does not verify: {} discrepancies",
            report.discrepancy_count
        )))
    }
}
