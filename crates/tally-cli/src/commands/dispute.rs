//! `tally dispute submit BUNDLE`: posts the bundle (with the exchange kept when the call was
//! made) to the provider's dispute endpoint; the credit is mirrored like any record, and the
//! payee's signature over the state after it (if sent) kept for `tally channel watch`.

use serde_json::json;

use crate::cli::DisputeSubmitArgs;
use crate::error::{CliError, Result};
use crate::output::Output;
use crate::profile::Profile;

/// Submits; exit 1 if the provider refuses.
pub async fn submit(a: DisputeSubmitArgs, out: Output) -> Result<()> {
    let mut profile = Profile::load(&a.profile.client)?;
    let bundle = crate::proof::read(&a.bundle)?;
    let exchange = profile.exchange(bundle.index)?.ok_or_else(|| {
        CliError::Usage(format!(
            "this profile kept no exchange for record {} (it was not paid with `tally pay` or the demo)",
            bundle.index
        ))
    })?;
    if let Some(p) = &a.provider {
        profile.file.provider = p.clone();
    }
    let client = profile.connect().await?;
    let granted = client.dispute_bundle(bundle, exchange).await?;
    // The payee's signature over the state after the credit, if the gateway sent one: what
    // `tally channel watch` posts if the payee claims an older, higher state (spec/HTTP.md §7).
    let (size, _, _) = client.mirror_head().await;
    let cosigned = client
        .credit_state()
        .await?
        .filter(|c| c.checkpoint.size == size)
        .map(|c| c.checkpoint.size);
    out.emit(
        &json!({"disputed_index": granted.disputed_index, "credit": granted.amount.0.to_string(),
                "rule": granted.rule, "payee_cosigned_size": cosigned}),
        || {
            let kept = match cosigned {
                Some(s) => format!("; the payee's signature over the state at size {s} is kept for `tally channel watch`"),
                None => "; the provider sent no payee signature over it (no [settlement]): it nets against later usage only".into(),
            };
            format!(
                "dispute granted: record {} credited {} ({}){kept}",
                granted.disputed_index, granted.amount.0, granted.rule
            )
        },
    );
    Ok(())
}
