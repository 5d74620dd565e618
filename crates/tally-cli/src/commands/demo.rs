//! `tally demo`.

use crate::cli::DemoArgs;
use crate::error::Result;
use crate::output::Output;

/// Runs the demo and prints its summary.
pub async fn run(a: DemoArgs, out: Output) -> Result<()> {
    if let Some(nodes) = a.cluster {
        let summary = crate::demo::cluster::run(nodes, a.calls, out).await?;
        out.emit(&summary, || summary.render());
        return Ok(());
    }
    let summary = crate::demo::run(a.calls, a.keep.as_deref(), out).await?;
    out.emit(&summary, || summary.render());
    Ok(())
}
