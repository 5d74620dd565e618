//! Locating, installing and starting the project-local anvil (a local Ethereum node) for
//! tests, the gas report and demos. It comes from the pinned npm package
//! `@foundry-rs/anvil-linux-amd64`, installed with solc by `bash tools/install.sh`; nothing
//! here falls back to a system-wide binary.
//!
//! One rule, one place: whoever needs the tools (the demo, every chain test, the artifact
//! check that runs solc) goes through [`ensure_tools`], which runs the idempotent install
//! script once per process under a file lock, so a fresh clone's `cargo test` needs nothing
//! run before it and parallel test binaries never run npm twice at once.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

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

/// The lock file (gitignored) that serializes installs across processes.
pub const INSTALL_LOCK: &str = "tools/.install.lock";

/// Installs the project-local tools (solc and anvil, pinned by `tools/package-lock.json`) if
/// they are missing or not at the locked versions, by running `bash tools/install.sh` while
/// holding an exclusive lock on [`INSTALL_LOCK`]. The script is idempotent, so a second
/// process that waited on the lock finds everything installed and does nothing; within one
/// process the outcome (success or error) is remembered. Installing needs Node.js and npm: a
/// missing npm is an error ([`ChainError::ToolsInstall`]), never a skip.
pub fn ensure_tools() -> Result<(), ChainError> {
    static OUTCOME: OnceLock<Result<(), String>> = OnceLock::new();
    OUTCOME
        .get_or_init(|| install_under_lock(&repo_root(), None))
        .clone()
        .map_err(ChainError::ToolsInstall)
}

/// Runs `ROOT/tools/install.sh` under the lock; `path_var` overrides `PATH` (for tests).
fn install_under_lock(root: &Path, path_var: Option<&OsStr>) -> Result<(), String> {
    let lock_path = root.join(INSTALL_LOCK);
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("opening {}: {e}", lock_path.display()))?;
    // Blocks until no other process is installing; released when `lock` is dropped.
    lock.lock()
        .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("tools").join("install.sh"))
        .current_dir(root)
        .stdin(Stdio::null());
    if let Some(p) = path_var {
        cmd.env("PATH", p);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running bash tools/install.sh: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "bash tools/install.sh failed ({}); installing solc and anvil needs Node.js and npm \
         on PATH: {}",
        out.status,
        stderr.trim()
    ))
}

/// Where anvil is, installing the project-local tools first ([`ensure_tools`]) unless
/// `$TALLY_ANVIL` overrides the location, in which case that file must exist.
pub fn ensure_anvil() -> Result<PathBuf, ChainError> {
    if std::env::var_os(ANVIL_ENV).is_none_or(|v| v.is_empty()) {
        ensure_tools()?;
    }
    anvil_path()
}

/// A fresh anvil builder for the located (installed if need be, [`ensure_anvil`]) binary,
/// listening on 127.0.0.1 at a random port.
pub fn builder() -> Result<Anvil, ChainError> {
    Ok(Anvil::at(ensure_anvil()?).arg("--host").arg("127.0.0.1"))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy of tools/ with nothing installed, run with a PATH that has node but no npm:
    /// the install fails with an error that names npm (a missing npm is never a skip).
    #[test]
    fn install_without_npm_is_a_clear_error() {
        let root = tempfile::tempdir().unwrap();
        let tools = root.path().join("tools");
        std::fs::create_dir(&tools).unwrap();
        for f in ["install.sh", "package.json", "package-lock.json"] {
            std::fs::copy(repo_root().join("tools").join(f), tools.join(f)).unwrap();
        }
        let bin = root.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for tool in ["bash", "node", "dirname", "head"] {
            let found = std::env::split_paths(&std::env::var_os("PATH").unwrap())
                .map(|d| d.join(tool))
                .find(|p| p.is_file())
                .unwrap_or_else(|| panic!("{tool} not on PATH"));
            std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
        }
        let err = install_under_lock(root.path(), Some(bin.as_os_str())).unwrap_err();
        assert!(err.contains("npm"), "{err}");
        assert!(err.contains("install.sh failed"), "{err}");
        assert!(root.path().join(INSTALL_LOCK).is_file());
    }
}
