//! `tally dispute submit BUNDLE`: posts the bundle (with the exchange kept when the call was
//! made) to the provider's dispute endpoint; the credit is mirrored like any record.

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
    out.emit(
        &json!({"disputed_index": granted.disputed_index, "credit": granted.amount.0.to_string(),
                "rule": granted.rule}),
        || {
            format!(
                "dispute granted: record {} credited {} ({})",
                granted.disputed_index, granted.amount.0, granted.rule
            )
        },
    );
    Ok(())
}
