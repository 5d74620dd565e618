//! `tally prove --index N`: a proof bundle from the client's mirror, offline.

use serde_json::json;
use tally_client::mirror::Mirror;
use tally_core::PublicKey;

use crate::cli::ProveArgs;
use crate::error::{CliError, Result};
use crate::output::Output;
use crate::profile::Profile;

/// Writes the bundle to `--out` or stdout.
pub fn run(a: ProveArgs, out: Output) -> Result<()> {
    let profile = Profile::load(&a.profile.client)?;
    let mirror = Mirror::open(&profile.mirror_dir(), profile.channel_id)?;
    let pinned = mirror.get_meta("provider_key")?.ok_or_else(|| {
        CliError::Usage("the mirror has no provider key yet (make a call first)".into())
    })?;
    let provider = <[u8; 32]>::try_from(pinned.as_slice())
        .ok()
        .and_then(|b| PublicKey::from_bytes(&b).ok())
        .ok_or_else(|| CliError::Usage("the mirror's pinned provider key is unreadable".into()))?;
    let client = profile.session_key()?.public();
    let mut bundle = mirror
        .proof_bundle(a.index, &client, &provider)
        .map_err(|e| match e {
            tally_client::ClientError::Protocol(m) => CliError::Usage(m),
            other => other.into(),
        })?;
    bundle.chain = profile.file.chain.clone();
    match &a.out {
        Some(path) => {
            crate::proof::write(path, &bundle)?;
            out.emit(&json!({"bundle": path, "index": a.index}), || {
                format!(
                    "wrote the proof bundle of record {} to {}",
                    a.index,
                    path.display()
                )
            });
        }
        None => println!("{}", bundle.to_json()),
    }
    Ok(())
}
