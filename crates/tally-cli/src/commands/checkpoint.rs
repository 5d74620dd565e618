//! `tally checkpoint`: sign a checkpoint at the mirror's size (session key note + EIP-712
//! with the checkpoint key) and get the provider's cosignature, kept in the mirror.

use serde_json::json;

use crate::cli::ProfileArg;
use crate::error::Result;
use crate::output::Output;
use crate::profile::Profile;

/// Signs and posts.
pub async fn run(a: ProfileArg, out: Output) -> Result<()> {
    let profile = Profile::load(&a.client)?;
    let client = profile.connect().await?;
    let cp = client.checkpoint().await?.checkpoint;
    out.emit(
        &json!({"size": cp.size, "root": cp.root.to_hex(), "cumulative": cp.cumulative.to_string()}),
        || format!("checkpoint cosigned: size {} root {} cumulative {}", cp.size, cp.root.to_hex(), cp.cumulative),
    );
    Ok(())
}
