//! The standalone gateway's TOML configuration (spec/HTTP.md §10) and the provider key file.
//!
//! The key file holds the 32-byte ed25519 seed as 64 hex digits. It is written with mode
//! 0600 and refused if group or others can read it; its contents never reach a log line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tally_core::SecretKey;
use tally_http::terms::{ChainTerms, CheckpointPolicy, RefundPolicy};
use tally_http::{Amount, RoutePrice};

use crate::errors::StartError;
use crate::gateway::Settings;

/// The whole configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Listen address; must be a loopback or explicit address.
    pub listen: String,
    /// The upstream API, `http://host:port`.
    pub upstream: String,
    /// Data directory (log and bindings).
    pub data_dir: PathBuf,
    /// The provider key file (relative paths are relative to the config file).
    pub provider_key_file: PathBuf,
    /// JSON-RPC endpoint of the chain, read for funding.
    pub rpc_url: String,
    /// Chain, contract, token, payee.
    pub chain: ChainTerms,
    /// Most served beyond the last checkpoint.
    pub credit_limit: Amount,
    /// Checkpoint policy.
    pub checkpoint: CheckpointPolicy,
    /// Whether 5xx are charged (default false).
    #[serde(default)]
    pub charge_server_errors: bool,
    /// Automatic refunds.
    pub refunds: RefundPolicy,
    /// Largest paid request body.
    #[serde(default = "default_request_bytes")]
    pub max_request_bytes: u64,
    /// Largest paid response body.
    #[serde(default = "default_response_bytes")]
    pub max_response_bytes: u64,
    /// Funding cache lifetime, ms.
    #[serde(default = "default_funding_ttl_ms")]
    pub funding_ttl_ms: u64,
    /// Shortest withdraw delay (seconds) of a channel this gateway serves.
    #[serde(default = "default_min_withdraw_delay")]
    pub min_withdraw_delay: u32,
    /// The price list.
    #[serde(default)]
    pub routes: Vec<RoutePrice>,
}

fn default_request_bytes() -> u64 {
    1 << 20
}
fn default_response_bytes() -> u64 {
    8 << 20
}
fn default_funding_ttl_ms() -> u64 {
    2000
}
fn default_min_withdraw_delay() -> u32 {
    tally_chain::funding::MIN_WITHDRAW_DELAY
}

impl GatewayConfig {
    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<Self, StartError> {
        toml::from_str(text).map_err(|e| StartError::Config(e.to_string()))
    }

    /// Reads and parses a file; relative paths inside resolve against its directory.
    pub fn load(path: &Path) -> Result<Self, StartError> {
        let text = std::fs::read_to_string(path)?;
        let mut cfg = Self::parse(&text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        if cfg.provider_key_file.is_relative() {
            cfg.provider_key_file = base.join(&cfg.provider_key_file);
        }
        if cfg.data_dir.is_relative() {
            cfg.data_dir = base.join(&cfg.data_dir);
        }
        Ok(cfg)
    }

    /// The gateway settings this file describes.
    pub fn settings(&self) -> Settings {
        let mut s = Settings::new(
            self.data_dir.clone(),
            self.chain.clone(),
            self.routes.clone(),
        );
        s.credit_limit = self.credit_limit.0;
        s.checkpoint = self.checkpoint.clone();
        s.charge_server_errors = self.charge_server_errors;
        s.refunds = self.refunds.clone();
        s.max_request_bytes = self.max_request_bytes;
        s.max_response_bytes = self.max_response_bytes;
        s.funding_ttl = Duration::from_millis(self.funding_ttl_ms);
        s.min_withdraw_delay = self.min_withdraw_delay;
        s
    }
}

/// Reads a key file, refusing one that group or others can read.
pub fn read_key_file(path: &Path) -> Result<SecretKey, StartError> {
    let err = |reason: String| StartError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "mode {:o} lets group or others read it; chmod 600",
                mode & 0o777
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let seed = tally_core::encoding::parse_hex::<32>("key seed", text.trim())
        .map_err(|_| err("expected 64 hex digits".into()))?;
    Ok(SecretKey::from_seed(&seed))
}

/// Writes a key file with mode 0600 (created exclusively: an existing file is never
/// overwritten).
pub fn write_key_file(path: &Path, key: &SecretKey) -> Result<(), StartError> {
    use std::io::Write;
    let err = |reason: String| StartError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|e| err(e.to_string()))?;
    f.write_all(format!("{}\n", hex::encode(key.seed())).as_bytes())
        .map_err(|e| err(e.to_string()))?;
    f.sync_all().map_err(|e| err(e.to_string()))?;
    Ok(())
}
