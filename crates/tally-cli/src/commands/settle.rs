//! `tally settle`: a manual claim of every due checkpoint through the settlement worker, with
//! the payee key from `--payee-key` or else the config's `[settlement].payee_key_file`.

use std::time::Duration;

use serde_json::json;
use tally_server::config::GatewayConfig;

use crate::cli::SettleArgs;
use crate::error::{CliError, Result};
use crate::output::Output;

/// Claims and waits for the transaction.
pub async fn run(a: SettleArgs, out: Output) -> Result<()> {
    let cfg = GatewayConfig::load(&a.config)?;
    let key_file = match (&a.payee_key, &cfg.settlement) {
        (Some(k), _) => k.clone(),
        (None, Some(s)) => s.payee_key_file.clone(),
        (None, None) => {
            return Err(CliError::Usage(format!(
                "no payee key: pass --payee-key FILE or set [settlement] payee_key_file in {}",
                a.config.display()
            )))
        }
    };
    let payee = crate::keys::read_secp256k1(&key_file)?;
    let gateway = crate::gateway::open(&cfg)?;
    let contract = crate::chain::address("contract", &cfg.chain.contract)?;
    let settled = crate::gateway::settle_once(
        &gateway,
        &cfg.rpc_url,
        cfg.chain.chain_id,
        contract,
        payee,
        Duration::from_secs(a.timeout),
    )
    .await?;
    match settled {
        Some(s) => out.emit(&s, || {
            format!(
                "claimed {} channel(s) in {} (block {}, {} gas)",
                s.channels.len(),
                s.transaction,
                s.block,
                s.gas_used
            )
        }),
        None => out.emit(&json!({"claimed": null}), || "nothing to claim".into()),
    }
    Ok(())
}
