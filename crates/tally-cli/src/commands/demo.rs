//! `tally demo`.

use crate::cli::DemoArgs;
use crate::error::Result;
use crate::output::Output;

/// Runs the demo and prints its summary.
pub async fn run(a: DemoArgs, out: Output) -> Result<()> {
    let summary = crate::demo::run(a.calls, a.keep.as_deref(), out).await?;
    out.emit(&summary, || summary.render());
    Ok(())
}
