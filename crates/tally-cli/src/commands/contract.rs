//! `tally contract deploy`: a provider deploys the settlement contract on a real chain
//! (spec/CHAIN.md §10) and, with `--config`, points its gateway config at it.
//!
//! The deploy itself is tally-chain's ([`tally_chain::deploy::deploy_tally`]): it refuses a
//! chain without EVM version cancun and reads the new contract back before the address is
//! printed. This module only reads the key, edits the config and reports. The config is
//! parsed before anything is sent, so a wrong path costs no gas, and it is edited with
//! toml_edit so the operator's comments and layout survive; the new file replaces the old
//! one by a rename, never half written.

use std::path::{Path, PathBuf};

use alloy::primitives::Address;
use serde_json::json;
use tally_chain::channel::connect;
use tally_chain::deploy::deploy_tally;
use toml_edit::{DocumentMut, TableLike, Value};

use crate::chain;
use crate::cli::ContractDeployArgs;
use crate::error::{CliError, Result};
use crate::keys;
use crate::output::Output;

/// `tally contract deploy`.
pub async fn deploy(a: ContractDeployArgs, out: Output) -> Result<()> {
    let url = chain::rpc_url(&a.rpc)?;
    let key = keys::read_secp256k1(&a.key)?;
    let config = match &a.config {
        Some(p) => Some((p.clone(), load_config(p)?)),
        None => None,
    };
    let deployer = keys::address(&key);
    out.note(&format!("deploying Tally from {deployer} at {}", a.rpc));
    let (client, tx) = deploy_tally(connect(url, key), deployer)
        .await
        .map_err(|e| CliError::Service(format!("deploying at {}: {e}", a.rpc)))?;
    let (address, chain_id) = (client.address(), client.chain_id());
    let written = match config {
        Some((path, doc)) => {
            write_config(&path, doc, address, chain_id)?;
            out.note(&format!(
                "wrote [chain] contract and chain_id into {}",
                path.display()
            ));
            Some(path)
        }
        None => None,
    };
    let report = json!({
        "contract": address.to_string(),
        "chain_id": chain_id,
        "deployer": deployer.to_string(),
        "tx": {
            "transaction": tx.tx_hash.to_string(),
            "block": tx.block,
            "gas_used": tx.gas_used,
        },
        "config": written.as_ref().map(|p| p.display().to_string()),
    });
    out.emit(&report, || address.to_string());
    Ok(())
}

/// Reads and parses a gateway config for editing; `[chain]`, if present, must be a table.
fn load_config(path: &Path) -> Result<DocumentMut> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::io(path, e))?;
    let doc: DocumentMut = text
        .parse()
        .map_err(|e| CliError::Usage(format!("{}: not TOML: {e}", path.display())))?;
    if let Some(item) = doc.get("chain") {
        if item.as_table_like().is_none() {
            return Err(CliError::Usage(format!(
                "{}: `chain` is not a table",
                path.display()
            )));
        }
    }
    Ok(doc)
}

/// Sets `[chain] contract` and `chain_id` and replaces the file atomically (a sibling
/// temporary file with the original's permissions, then a rename).
fn write_config(path: &Path, mut doc: DocumentMut, contract: Address, chain_id: u64) -> Result<()> {
    let chain_id = i64::try_from(chain_id)
        .map_err(|_| CliError::Usage(format!("chain id {chain_id} does not fit a TOML integer")))?;
    if doc.get("chain").is_none() {
        doc.insert("chain", toml_edit::table());
    }
    let table = doc
        .get_mut("chain")
        .and_then(|i| i.as_table_like_mut())
        .ok_or_else(|| CliError::Usage(format!("{}: `chain` is not a table", path.display())))?;
    set_keeping_comment(table, "chain_id", chain_id.into());
    set_keeping_comment(table, "contract", contract.to_string().into());
    let tmp = sibling_tmp(path);
    let perms = std::fs::metadata(path)
        .map_err(|e| CliError::io(path, e))?
        .permissions();
    std::fs::write(&tmp, doc.to_string()).map_err(|e| CliError::io(&tmp, e))?;
    let renamed = std::fs::set_permissions(&tmp, perms).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = renamed {
        let _ = std::fs::remove_file(&tmp);
        return Err(CliError::io(path, e));
    }
    Ok(())
}

/// Replaces `key`'s value, keeping the spacing and trailing comment around the old one.
fn set_keeping_comment(table: &mut dyn TableLike, key: &str, value: Value) {
    match table.get_mut(key).and_then(|i| i.as_value_mut()) {
        Some(old) => {
            let decor = old.decor().clone();
            *old = value;
            *old.decor_mut() = decor;
        }
        None => {
            table.insert(key, toml_edit::Item::Value(value));
        }
    }
}

/// `DIR/.NAME.tally-tmp`, beside `path` so the rename stays on one filesystem.
fn sibling_tmp(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config".into());
    path.with_file_name(format!(".{name}.tally-tmp"))
}
