//! Proof bundles (spec/PROTOCOL.md §7.3): reading and writing the JSON file, checking it
//! offline with tally-log's `verify_bundle`, and comparing its checkpoint with the
//! channel's claimed state onchain.

use std::path::Path;

use serde::Serialize;
use tally_core::ProofBundle;

use crate::error::{CliError, Result};

/// Reads a bundle file (size limit, unknown fields and format checked by tally-core).
pub fn read(path: &Path) -> Result<ProofBundle> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?;
    ProofBundle::from_json(&text)
        .map_err(|e| CliError::Verification(format!("{}: {e}", path.display())))
}

/// Writes a bundle file.
pub fn write(path: &Path, bundle: &ProofBundle) -> Result<()> {
    std::fs::write(path, bundle.to_json()).map_err(|e| CliError::io(path, e))
}

/// What a verified bundle proves.
#[derive(Clone, Debug, Serialize)]
pub struct ProofReport {
    /// The channel, hex.
    pub channel_id: String,
    /// The record's index.
    pub index: u64,
    /// Its net amount.
    pub amount: String,
    /// Its units, one count per meter of its route.
    pub units: tally_core::Units,
    /// The checkpoint's size.
    pub checkpoint_size: u64,
    /// The checkpoint's root, hex.
    pub checkpoint_root: String,
    /// The checkpoint's cumulative.
    pub checkpoint_cumulative: String,
    /// `"offline"`, or `"onchain"` when the checkpoint was matched with the chain.
    pub checked: &'static str,
    /// The chain's claimed size, when read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onchain_claimed_size: Option<u64>,
}

/// Verifies `bundle` offline; with `rpc`, also requires the channel's claimed (size, root)
/// onchain to be the bundle's checkpoint (the contract is the bundle's `chain` reference).
pub async fn verify(bundle: &ProofBundle, rpc: Option<&str>) -> Result<ProofReport> {
    let v = tally_log::bundle::verify_bundle(bundle)
        .map_err(|e| CliError::Verification(format!("bundle does not verify: {e}")))?;
    let cp = v.checkpoint.checkpoint;
    let mut report = ProofReport {
        channel_id: cp.channel_id.to_hex(),
        index: bundle.index,
        amount: v.record.outcome.amount.to_string(),
        units: v.record.outcome.units,
        checkpoint_size: cp.size,
        checkpoint_root: cp.root.to_hex(),
        checkpoint_cumulative: cp.cumulative.to_string(),
        checked: "offline",
        onchain_claimed_size: None,
    };
    if let Some(rpc) = rpc {
        let chain = bundle.chain.as_ref().ok_or_else(|| {
            CliError::Usage("the bundle has no chain reference to check against".into())
        })?;
        let contract = crate::chain::address("contract", &chain.contract)?;
        let client = crate::chain::reader(rpc, contract).await?;
        if client.chain_id() != chain.chain_id {
            return Err(CliError::Verification(format!(
                "the node at {rpc} is chain {}, the bundle names chain {}",
                client.chain_id(),
                chain.chain_id
            )));
        }
        let f = client
            .channel(&cp.channel_id)
            .await
            .map_err(|e| CliError::Service(format!("reading the channel onchain: {e}")))?;
        report.onchain_claimed_size = Some(f.claimed_size);
        if f.claimed_size != cp.size || f.claimed_root != cp.root {
            return Err(CliError::Verification(format!(
                "the chain's claimed state is size {} root {}, not the bundle's checkpoint (size {} root {})",
                f.claimed_size,
                f.claimed_root.to_hex(),
                cp.size,
                cp.root.to_hex()
            )));
        }
        report.checked = "onchain";
    }
    Ok(report)
}

impl ProofReport {
    /// The human form.
    pub fn render(&self) -> String {
        format!(
            "VERIFIED ({}): record {} of channel {}\n  amount {} for {} units\n  included in checkpoint size {} root {} (cumulative {}){}\n",
            self.checked,
            self.index,
            self.channel_id,
            self.amount,
            crate::output::units_text(&self.units),
            self.checkpoint_size,
            self.checkpoint_root,
            self.checkpoint_cumulative,
            if self.checked == "onchain" { "\n  which is the channel's claimed state onchain" } else { "" }
        )
    }
}
