//! `tally export`: a channel's log as a statement file, from a gateway's store (records with
//! the provider's signatures recomputed by the gateway) or from a client mirror.

use serde_json::json;
use tally_client::mirror::Mirror;
use tally_core::PublicKey;
use tally_http::WireRecord;
use tally_server::config::GatewayConfig;

use crate::cli::ExportArgs;
use crate::error::{CliError, Result};
use crate::output::Output;
use crate::profile::Profile;
use crate::statement::{StatementHeader, StatementWriter, STATEMENT_FORMAT};

/// Writes the statement.
pub async fn run(a: ExportArgs, out: Output) -> Result<()> {
    let records = match (&a.config, &a.client) {
        (Some(cfg), None) => {
            let channel = super::channel_id(a.channel.as_deref().unwrap_or_default())?;
            from_gateway(&GatewayConfig::load(cfg)?, &channel, &a, out).await?
        }
        (None, Some(dir)) => from_mirror(&Profile::load(dir)?, &a, out)?,
        _ => {
            return Err(CliError::Usage(
                "give --config FILE --channel ID, or --client DIR".into(),
            ))
        }
    };
    out.emit(&json!({"statement": a.out, "records": records}), || {
        format!("wrote {records} records to {}", a.out.display())
    });
    Ok(())
}

async fn from_gateway(
    cfg: &GatewayConfig,
    channel: &tally_core::ChannelId,
    a: &ExportArgs,
    out: Output,
) -> Result<u64> {
    let gateway = crate::gateway::open(cfg)?;
    let state = gateway
        .channel_state(channel)
        .await
        .map_err(|e| CliError::Service(format!("channel {}: {e:?}", channel.to_hex())))?;
    let client_key = state.session_key.ok_or_else(|| {
        CliError::Usage(format!(
            "channel {} has no session key bound",
            channel.to_hex()
        ))
    })?;
    let store = gateway
        .store()
        .map_err(|e| CliError::Service(format!("log store: {}", e.message)))?;
    let mut checkpoints = Vec::new();
    for (_, bytes) in store.checkpoints(channel)? {
        checkpoints.push(
            serde_json::from_slice(&bytes)
                .map_err(|e| CliError::Service(format!("stored checkpoint: {e}")))?,
        );
    }
    let header = StatementHeader {
        format: STATEMENT_FORMAT.into(),
        channel_id: *channel,
        client_key,
        provider_key: gateway.public_key(),
        terms: Some(String::from_utf8_lossy(&gateway.terms().render()).into_owned()),
        checkpoints,
    };
    let mut w = StatementWriter::create(&a.out, &header)?;
    let size = state.size;
    let bar = out.progress(size, "exporting");
    let mut from = 0;
    while from < size {
        let to = (from + 4096).min(size);
        for bytes in store.records(channel, from..to)? {
            let record =
                <tally_core::Record as tally_core::encoding::Canonical>::from_bytes(&bytes)
                    .map_err(|e| CliError::Service(format!("stored record: {e}")))?;
            w.push(&gateway.wire_record(&record))?;
        }
        bar.set_position(to);
        from = to;
    }
    bar.finish_and_clear();
    w.finish()?;
    Ok(size)
}

fn from_mirror(profile: &Profile, a: &ExportArgs, out: Output) -> Result<u64> {
    let mirror = Mirror::open(&profile.mirror_dir(), profile.channel_id)?;
    let pinned = mirror
        .get_meta("provider_key")?
        .ok_or_else(|| CliError::Usage("the mirror has no provider key yet".into()))?;
    let provider_key = <[u8; 32]>::try_from(pinned.as_slice())
        .ok()
        .and_then(|b| PublicKey::from_bytes(&b).ok())
        .ok_or_else(|| CliError::Usage("the mirror's pinned provider key is unreadable".into()))?;
    // The mirror keeps only the latest cosigned note, without the EIP-712 signature the
    // statement format carries, so a mirror export lists no checkpoints.
    let header = StatementHeader {
        format: STATEMENT_FORMAT.into(),
        channel_id: profile.channel_id,
        client_key: profile.session_key()?.public(),
        provider_key,
        terms: None,
        checkpoints: Vec::new(),
    };
    let mut w = StatementWriter::create(&a.out, &header)?;
    let size = mirror.size();
    let bar = out.progress(size, "exporting");
    for i in 0..size {
        let record = mirror.record(i)?;
        let sig = mirror.provider_signature(i)?.ok_or_else(|| {
            CliError::Service(format!(
                "the mirror lacks the provider signature of record {i}"
            ))
        })?;
        w.push(&WireRecord::new(&record, sig))?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    w.finish()?;
    Ok(size)
}
