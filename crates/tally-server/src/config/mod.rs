//! The standalone gateway's TOML configuration (spec/HTTP.md §10) and its key files.
//!
//! A key file holds a 32-byte secret as 64 hex digits: the provider's ed25519 seed, or a
//! secp256k1 secret (the payee's wallet of `[settlement]`, a client's checkpoint key). It is
//! written with mode 0600 and refused if group or others can read it; its contents never
//! reach a log line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use alloy::primitives::B256;
use alloy::signers::local::PrivateKeySigner;
use serde::Deserialize;
use tally_chain::SettleConfig;
use tally_core::SecretKey;
use tally_http::terms::{ChainTerms, CheckpointPolicy, RefundPolicy};
use tally_http::{Amount, RoutePrice, Unmatched};

use crate::errors::StartError;
use crate::gateway::Settings;
use crate::listen::ServerLimits;

mod store;
pub use store::{PgSettings, StoreConfig, StoreKind, MAX_LEASE_MS, MAX_SHARDS, MIN_LEASE_MS};

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
    /// How many requests of one channel may be in flight at once (spec/PROTOCOL.md §5.4).
    #[serde(default = "default_max_lanes")]
    pub max_lanes: u32,
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
    /// Most time a paid request may spend at the upstream, body included, ms.
    #[serde(default = "default_upstream_timeout_ms")]
    pub upstream_timeout_ms: u64,
    /// Shortest withdraw delay (seconds) of a channel this gateway serves.
    #[serde(default = "default_min_withdraw_delay")]
    pub min_withdraw_delay: u32,
    /// The price list.
    #[serde(default)]
    pub routes: Vec<RoutePrice>,
    /// Requests no route prices: `"free"` (forwarded unmetered, the default) or `"deny"`.
    #[serde(default)]
    pub unmatched: Unmatched,
    /// Most channels whose state is held in memory at once (idle ones beyond are evicted).
    #[serde(default = "default_max_channels_in_memory")]
    pub max_channels_in_memory: usize,
    /// When receipts are sent (DESIGN.md §8): `"sync"` (default) or a promise table.
    #[serde(default)]
    pub durability: crate::durability::DurabilityConfig,
    /// The payee side: with it, `tally serve` claims by itself and cosigns cooperative
    /// closes; without it, claims are manual (`tally settle`) and closes are unavailable.
    #[serde(default)]
    pub settlement: Option<SettlementConfig>,
    /// The gasless-deposit relay (spec/HTTP.md §12); without it (or with `enabled = false`)
    /// its endpoints answer `not_found`.
    #[serde(default)]
    pub relay: Option<RelayConfig>,
    /// Connection and request limits; every key has a safe default.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// A file holding the provider's admin token for channel reads (spec/HTTP.md §5.1),
    /// mode 0600 or refused; without it only a channel's session key reads the channel.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// The token's decimals, used only to show amounts in whole tokens in the provider
    /// console (spec/HTTP.md §11.3); without it the console shows base units.
    #[serde(default)]
    pub token_decimals: Option<u8>,
    /// Where the log and the side state live: sled under `data_dir` (the default) or a
    /// PostgreSQL database shared by several nodes (spec/CLUSTER.md §10).
    #[serde(default)]
    pub store: StoreConfig,
}

/// `[limits]`: how long a client may take and how many connections and paid requests are
/// served at once (spec/HTTP.md §10). Defaults are [`ServerLimits::default`]'s.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most time from a request's first byte (a new connection: from the accept) to the end
    /// of its header, ms.
    pub header_read_timeout_ms: u64,
    /// Most time from a request's header to the end of its body, ms.
    pub body_read_timeout_ms: u64,
    /// Most time a connection stays open with no request in flight, ms.
    pub idle_timeout_ms: u64,
    /// Most connections served at once; more are refused and closed.
    pub max_connections: usize,
    /// Most paid requests in flight at once; more are refused with `overloaded` (503).
    pub max_inflight_paid: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let d = ServerLimits::default();
        LimitsConfig {
            header_read_timeout_ms: d.header_read_timeout.as_millis() as u64,
            body_read_timeout_ms: d.body_read_timeout.as_millis() as u64,
            idle_timeout_ms: d.idle_timeout.as_millis() as u64,
            max_connections: d.max_connections,
            max_inflight_paid: d.max_inflight_paid,
        }
    }
}

impl LimitsConfig {
    /// The limits the server runs with. A zero would close every connection or refuse every
    /// request, so each value must be positive; timeouts are at most a year
    /// ([`ServerLimits::MAX_TIMEOUT`]).
    pub fn server_limits(&self) -> Result<ServerLimits, StartError> {
        let positive = |key: &str, v: u64| {
            if v == 0 {
                Err(StartError::Config(format!("limits.{key} must be positive")))
            } else {
                Ok(v)
            }
        };
        let ms = |key: &str, v: u64| {
            let d = Duration::from_millis(positive(key, v)?);
            if d > ServerLimits::MAX_TIMEOUT {
                return Err(StartError::Config(format!(
                    "limits.{key} must be at most {} ms",
                    ServerLimits::MAX_TIMEOUT.as_millis()
                )));
            }
            Ok(d)
        };
        Ok(ServerLimits {
            header_read_timeout: ms("header_read_timeout_ms", self.header_read_timeout_ms)?,
            body_read_timeout: ms("body_read_timeout_ms", self.body_read_timeout_ms)?,
            idle_timeout: ms("idle_timeout_ms", self.idle_timeout_ms)?,
            max_connections: positive("max_connections", self.max_connections as u64)? as usize,
            max_inflight_paid: positive("max_inflight_paid", self.max_inflight_paid as u64)?
                as usize,
        })
    }
}

/// `[settlement]`: the payee's wallet and when the settlement worker claims (spec/HTTP.md
/// §10, spec/CHAIN.md §9).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementConfig {
    /// The payee's secp256k1 secret (64 hex digits, mode 0600); its address must be
    /// `chain.pay_to`. Relative paths are relative to the config file.
    pub payee_key_file: PathBuf,
    /// Claim a channel once its payout reaches this (token base units).
    #[serde(default = "default_threshold")]
    pub threshold: Amount,
    /// Claim every channel with a non-zero payout at least this often, seconds.
    #[serde(default = "default_claim_interval_seconds")]
    pub claim_interval_seconds: u64,
    /// Blocks deep a claim's receipt must be before it counts.
    #[serde(default = "default_confirmations")]
    pub confirmations: u64,
    /// How often the worker looks for due checkpoints, ms.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// A withdrawing channel whose claim window ends within this many seconds is claimed
    /// alone, before any batch (spec/CHAIN.md §9).
    #[serde(default = "default_deadline_margin_seconds")]
    pub deadline_margin_seconds: u64,
    /// A cooperative close the payee signed that the client has not submitted this many
    /// seconds later is submitted by the worker (spec/CHAIN.md §9, "Agreed closes").
    #[serde(default = "default_close_timeout_seconds")]
    pub close_timeout_seconds: u64,
}

fn default_threshold() -> Amount {
    Amount(SettleConfig::default().threshold)
}
fn default_claim_interval_seconds() -> u64 {
    SettleConfig::default().claim_interval.as_secs()
}
fn default_confirmations() -> u64 {
    SettleConfig::default().confirmations
}
fn default_deadline_margin_seconds() -> u64 {
    SettleConfig::default().deadline_margin.as_secs()
}
fn default_close_timeout_seconds() -> u64 {
    SettleConfig::default().close_timeout.as_secs()
}
fn default_poll_interval_ms() -> u64 {
    SettleConfig::default().poll_interval.as_millis() as u64
}

impl SettlementConfig {
    /// The worker configuration: these six values over tally-chain's defaults.
    pub fn settle_config(&self) -> SettleConfig {
        SettleConfig {
            threshold: self.threshold.0,
            claim_interval: Duration::from_secs(self.claim_interval_seconds),
            confirmations: self.confirmations,
            poll_interval: Duration::from_millis(self.poll_interval_ms),
            deadline_margin: Duration::from_secs(self.deadline_margin_seconds),
            close_timeout: Duration::from_secs(self.close_timeout_seconds),
            ..SettleConfig::default()
        }
    }
}

/// `[relay]`: submit clients' signed gasless opens and top-ups, paying the gas from a wallet
/// of the provider's (spec/HTTP.md §12, spec/CHAIN.md §2.1).
#[derive(Clone, Debug, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Turns the relay off without removing the table.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The relay wallet's secp256k1 secret (64 hex digits, mode 0600). It pays the gas, so
    /// it holds ETH; it must not be the payee key, whose settlement transactions would race
    /// it for nonces. Relative paths are relative to the config file.
    pub key_file: PathBuf,
    /// The most gas one relayed transaction may use; a deposit whose simulation needs more
    /// is refused.
    #[serde(default = "default_relay_gas_limit")]
    pub gas_limit: u64,
    /// Relayed transactions a minute across all clients (simulations: ten times that).
    #[serde(default = "default_relay_per_minute")]
    pub max_per_minute: u32,
    /// The smallest deposit or top-up relayed (token base units; at least 1). Required: the
    /// relay pays ~200k gas per open, and only the provider knows what a channel must hold
    /// to be worth that in its token.
    pub min_deposit: Amount,
}

fn default_true() -> bool {
    true
}
/// An open with an EIP-3009 authorization measures ~190k gas on anvil (GAS.md); a permit
/// open ~200k. The default leaves room for a token heavier than the test token's.
fn default_relay_gas_limit() -> u64 {
    300_000
}
fn default_relay_per_minute() -> u32 {
    10
}

impl RelayConfig {
    /// An enabled relay paying from `key_file` for deposits of at least `min_deposit`, with
    /// the default limits.
    pub fn new(key_file: PathBuf, min_deposit: u128) -> Self {
        RelayConfig {
            enabled: true,
            key_file,
            gas_limit: default_relay_gas_limit(),
            max_per_minute: default_relay_per_minute(),
            min_deposit: Amount(min_deposit),
        }
    }

    /// The relay's spending limits.
    pub fn limits(&self) -> crate::relay::RelayLimits {
        crate::relay::RelayLimits {
            gas_limit: self.gas_limit,
            max_per_minute: self.max_per_minute,
        }
    }
}

fn default_max_lanes() -> u32 {
    64
}

fn default_request_bytes() -> u64 {
    1 << 20
}
fn default_response_bytes() -> u64 {
    8 << 20
}
fn default_upstream_timeout_ms() -> u64 {
    120_000
}
fn default_funding_ttl_ms() -> u64 {
    2000
}
fn default_max_channels_in_memory() -> usize {
    100_000
}
/// Six hours (`tally_chain::DEFAULT_MIN_WITHDRAW_DELAY`, spec/CHAIN.md §5); a test or a
/// provider with a faster worker sets a shorter one explicitly (the contract's floor is 3600).
fn default_min_withdraw_delay() -> u32 {
    tally_chain::funding::DEFAULT_MIN_WITHDRAW_DELAY
}

impl GatewayConfig {
    /// Parses TOML text; `[limits]` values must be positive.
    pub fn parse(text: &str) -> Result<Self, StartError> {
        let cfg: Self = toml::from_str(text).map_err(|e| StartError::Config(e.to_string()))?;
        cfg.limits.server_limits()?;
        cfg.durability.resolve().map_err(StartError::Config)?;
        Ok(cfg)
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
        cfg.store.resolve_paths(base);
        if let Some(f) = cfg.admin_token_file.as_mut() {
            if f.is_relative() {
                *f = base.join(&*f);
            }
        }
        if let Some(s) = cfg.settlement.as_mut() {
            if s.payee_key_file.is_relative() {
                s.payee_key_file = base.join(&s.payee_key_file);
            }
        }
        if let Some(r) = cfg.relay.as_mut() {
            if r.key_file.is_relative() {
                r.key_file = base.join(&r.key_file);
            }
        }
        Ok(cfg)
    }

    /// [`settings`](Self::settings) with the secrets the file names read in: the admin
    /// token (`admin_token_file`, refused unless mode 0600). What a gateway starts with.
    pub fn gateway_settings(&self) -> Result<Settings, StartError> {
        let mut s = self.settings();
        s.admin_token = match &self.admin_token_file {
            Some(path) => Some(crate::readauth::read_admin_token_file(path)?),
            None => None,
        };
        Ok(s)
    }

    /// The gateway settings this file describes (no file is read: see
    /// [`gateway_settings`](Self::gateway_settings)).
    pub fn settings(&self) -> Settings {
        let mut s = Settings::new(
            self.data_dir.clone(),
            self.chain.clone(),
            self.routes.clone(),
        );
        s.credit_limit = self.credit_limit.0;
        s.token_decimals = self.token_decimals;
        s.max_lanes = self.max_lanes;
        s.checkpoint = self.checkpoint.clone();
        s.charge_server_errors = self.charge_server_errors;
        s.refunds = self.refunds.clone();
        s.max_request_bytes = self.max_request_bytes;
        s.max_response_bytes = self.max_response_bytes;
        s.funding_ttl = Duration::from_millis(self.funding_ttl_ms);
        s.upstream_timeout = Duration::from_millis(self.upstream_timeout_ms.max(1));
        s.min_withdraw_delay = self.min_withdraw_delay;
        s.unmatched = self.unmatched;
        s.max_channels_in_memory = self.max_channels_in_memory;
        // Checked by `parse`; a value built in code that does not resolve stays `sync`.
        s.durability = self.durability.resolve().unwrap_or_default();
        s
    }
}

/// Reads a secret file (a key, a token), refusing one that group or others can read: the one
/// place the 0600 rule is checked.
pub fn read_secret_file(path: &Path) -> Result<String, StartError> {
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
    std::fs::read_to_string(path).map_err(|e| err(e.to_string()))
}

/// Reads a key file, refusing one that group or others can read.
pub fn read_key_file(path: &Path) -> Result<SecretKey, StartError> {
    let err = |reason: String| StartError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    let text = read_secret_file(path)?;
    let seed = tally_core::encoding::parse_hex::<32>("key seed", text.trim())
        .map_err(|_| err("expected 64 hex digits".into()))?;
    Ok(SecretKey::from_seed(&seed))
}

/// Reads a secp256k1 secret key file (the payee's wallet, a checkpoint key) with the same
/// rules as [`read_key_file`]: both are 32-byte secrets as 64 hex digits.
pub fn read_secp256k1_key_file(path: &Path) -> Result<PrivateKeySigner, StartError> {
    let raw = read_key_file(path)?;
    PrivateKeySigner::from_bytes(&B256::from(raw.seed())).map_err(|_| StartError::KeyFile {
        path: path.display().to_string(),
        reason: "not a secp256k1 secret key".into(),
    })
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
