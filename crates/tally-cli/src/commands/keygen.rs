//! `tally keygen`: key files, mode 0600, never overwritten; prints only public values.

use serde_json::json;

use crate::cli::KeygenArgs;
use crate::error::{CliError, Result};
use crate::keys;
use crate::output::Output;

/// Writes the keys.
pub fn run(a: KeygenArgs, out: Output) -> Result<()> {
    std::fs::create_dir_all(&a.dir).map_err(|e| CliError::io(&a.dir, e))?;
    if a.provider {
        let key = keys::generate_ed25519();
        let path = a.dir.join("provider.key");
        keys::write_ed25519(&path, &key)?;
        let public = key.public().to_hex();
        out.emit(
            &json!({"provider_key_file": path, "provider_key": public}),
            || format!("wrote {}\nprovider key {public}", path.display()),
        );
        return Ok(());
    }
    let session = keys::generate_ed25519();
    let checkpoint = keys::generate_secp256k1();
    let (sp, cp) = (a.dir.join("session.key"), a.dir.join("checkpoint.key"));
    if sp.exists() || cp.exists() {
        return Err(CliError::Usage(format!(
            "{} already holds key files; refusing to overwrite",
            a.dir.display()
        )));
    }
    keys::write_ed25519(&sp, &session)?;
    keys::write_secp256k1(&cp, &checkpoint)?;
    let (public, signer) = (session.public().to_hex(), keys::address(&checkpoint));
    out.emit(
        &json!({"session_key_file": sp, "session_key": public,
                "checkpoint_key_file": cp, "checkpoint_signer": signer.to_string()}),
        || {
            format!(
                "wrote {} and {}\nsession key        {public}\ncheckpoint signer  {signer} (open the channel with this signer)",
                sp.display(),
                cp.display()
            )
        },
    );
    Ok(())
}
