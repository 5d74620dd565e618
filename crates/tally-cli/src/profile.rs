//! The client profile: a directory holding `client.toml`, the two key files, the mirror
//! (`mirror/`, tally-client's sled log) and `exchanges.jsonl`, the request/response hashes
//! of every paid call, kept so a record can be disputed later.

use std::io::Write;
use std::path::{Path, PathBuf};

use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};
use tally_core::{ChannelId, SecretKey};
use tally_http::api::DisputedExchange;

use crate::error::{CliError, Result};
use crate::keys;

/// The profile's file name.
pub const PROFILE_FILE: &str = "client.toml";

/// `client.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    /// The gateway's base URL, e.g. `http://127.0.0.1:8402`.
    pub provider: String,
    /// The channel, 64 hex digits.
    pub channel_id: String,
    /// The ed25519 session key file (relative to the profile directory).
    pub session_key_file: PathBuf,
    /// The secp256k1 checkpoint key file (relative to the profile directory).
    pub checkpoint_key_file: PathBuf,
    /// JSON-RPC URL of the chain (informational: `verify` and `verify-proof` read the chain
    /// only when given `--rpc`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpc_url: Option<String>,
    /// Chain id and contract, written into proof bundles.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<tally_core::bundle::ChainRef>,
}

/// A loaded profile.
pub struct Profile {
    /// Its directory.
    pub dir: PathBuf,
    /// The file's contents.
    pub file: ProfileFile,
    /// The channel.
    pub channel_id: ChannelId,
}

impl Profile {
    /// Loads `dir/client.toml`.
    pub fn load(dir: &Path) -> Result<Profile> {
        let path = dir.join(PROFILE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| CliError::io(&path, e))?;
        let file: ProfileFile = toml::from_str(&text)
            .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
        let channel_id = ChannelId::from_hex(file.channel_id.trim_start_matches("0x"))
            .map_err(|e| CliError::Usage(format!("{}: channel_id: {e}", path.display())))?;
        Ok(Profile {
            dir: dir.to_path_buf(),
            file,
            channel_id,
        })
    }

    /// Writes `dir/client.toml` (creating `dir`).
    pub fn save(dir: &Path, file: &ProfileFile) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| CliError::io(dir, e))?;
        let path = dir.join(PROFILE_FILE);
        let text = toml::to_string(file).map_err(|e| CliError::Usage(e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| CliError::io(&path, e))
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_relative() {
            self.dir.join(p)
        } else {
            p.to_path_buf()
        }
    }

    /// The session key.
    pub fn session_key(&self) -> Result<SecretKey> {
        keys::read_ed25519(&self.resolve(&self.file.session_key_file))
    }

    /// The checkpoint key.
    pub fn checkpoint_key(&self) -> Result<PrivateKeySigner> {
        keys::read_secp256k1(&self.resolve(&self.file.checkpoint_key_file))
    }

    /// The mirror directory.
    pub fn mirror_dir(&self) -> PathBuf {
        self.dir.join("mirror")
    }

    /// Connects a paying client (discovers terms, binds the session key, resyncs). Terms
    /// that charge more than the ones accepted before are refused for paying (spec/HTTP.md
    /// §4.4); [`Profile::connect_accepting`] opts in.
    pub async fn connect(&self) -> Result<tally_client::Client> {
        self.connect_accepting(false).await
    }

    /// [`Profile::connect`], adopting raised terms when `accept_terms_changes`
    /// (`--accept-terms`).
    pub async fn connect_accepting(
        &self,
        accept_terms_changes: bool,
    ) -> Result<tally_client::Client> {
        let mut cfg = tally_client::ClientConfig::new(
            self.file.provider.clone(),
            self.mirror_dir(),
            self.channel_id,
            self.session_key()?,
            self.checkpoint_key()?,
        );
        cfg.accept_terms_changes = accept_terms_changes;
        Ok(tally_client::Client::connect(cfg).await?)
    }

    fn exchanges_path(&self) -> PathBuf {
        self.dir.join("exchanges.jsonl")
    }

    /// Remembers the exchange behind record `seq`.
    pub fn keep_exchange(&self, seq: u64, exchange: &DisputedExchange) -> Result<()> {
        let path = self.exchanges_path();
        let line = serde_json::to_string(&KeptExchange {
            seq,
            exchange: exchange.clone(),
        })
        .map_err(|e| CliError::Usage(e.to_string()))?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| CliError::io(&path, e))?;
        writeln!(f, "{line}").map_err(|e| CliError::io(&path, e))
    }

    /// The exchange behind record `seq`, if this profile made the call.
    pub fn exchange(&self, seq: u64) -> Result<Option<DisputedExchange>> {
        let path = self.exchanges_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(CliError::io(&path, e)),
        };
        for line in text.lines().rev() {
            let kept: KeptExchange = serde_json::from_str(line)
                .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
            if kept.seq == seq {
                return Ok(Some(kept.exchange));
            }
        }
        Ok(None)
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeptExchange {
    seq: u64,
    exchange: DisputedExchange,
}
