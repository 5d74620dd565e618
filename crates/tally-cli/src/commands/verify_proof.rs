//! `tally verify-proof BUNDLE [--rpc URL]`.

use crate::cli::VerifyProofArgs;
use crate::error::Result;
use crate::output::Output;

/// Verifies; exit 1 if the bundle does not verify (or does not match the chain).
pub async fn run(a: VerifyProofArgs, out: Output) -> Result<()> {
    let bundle = crate::proof::read(&a.bundle)?;
    let report = crate::proof::verify(&bundle, a.rpc.as_deref()).await?;
    out.emit(&report, || report.render());
    Ok(())
}
