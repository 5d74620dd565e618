//! Locating and starting the project-local anvil (a local Ethereum node) for tests, the gas
//! report and demos. It comes from the pinned npm package `@foundry-rs/anvil-linux-amd64`,
//! installed by `bash tools/install.sh`; nothing here falls back to a system-wide binary.

use std::path::{Path, PathBuf};

use alloy::node_bindings::{Anvil, AnvilInstance};

use crate::error::ChainError;

/// Environment variable that overrides where the anvil binary is.
pub const ANVIL_ENV: &str = "TALLY_ANVIL";

/// Path of the binary inside the npm package, relative to the repository root.
pub const ANVIL_IN_REPO: &str = "tools/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";

const HINT: &str = "run `bash tools/install.sh` from the repository root, or set TALLY_ANVIL";

/// The repository root, derived from this crate's manifest directory at build time.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

/// Where anvil is: `$TALLY_ANVIL` if set, else the project-local npm install. Errors (never
/// silently skips) when the file is not there.
pub fn anvil_path() -> Result<PathBuf, ChainError> {
    let path = match std::env::var_os(ANVIL_ENV) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(ANVIL_IN_REPO),
    };
    if !path.is_file() {
        return Err(ChainError::AnvilNotFound {
            path: path.display().to_string(),
            hint: HINT,
        });
    }
    Ok(path)
}

/// A fresh anvil builder for the located binary, listening on 127.0.0.1 at a random port.
pub fn builder() -> Result<Anvil, ChainError> {
    Ok(Anvil::at(anvil_path()?).arg("--host").arg("127.0.0.1"))
}

/// Starts a builder with `try_spawn`, turning failure into a typed error.
///
/// anvil logs every request to stdout. A dropped pipe makes its writes fail and a full one
/// blocks it, so a background thread keeps draining stdout for the node's whole life.
pub fn spawn(builder: Anvil) -> Result<AnvilInstance, ChainError> {
    let mut node = builder
        .keep_stdout()
        .try_spawn()
        .map_err(|e| ChainError::AnvilSpawn(e.to_string()))?;
    if let Some(mut out) = node.child_mut().stdout.take() {
        std::thread::Builder::new()
            .name("anvil-stdout".into())
            .spawn(move || {
                let _ = std::io::copy(&mut out, &mut std::io::sink());
            })
            .map_err(|e| ChainError::AnvilSpawn(e.to_string()))?;
    }
    Ok(node)
}

/// Starts a default anvil (chain id 31337, ten funded dev accounts, automine).
pub fn spawn_default() -> Result<AnvilInstance, ChainError> {
    spawn(builder()?)
}
