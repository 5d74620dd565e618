//! The standalone gateway `tally-gateway --config gateway.toml` runs: the reverse proxy of
//! spec/HTTP.md §10 with funding read from the chain at `rpc_url` through tally-chain's
//! `ChainFunding`. A library function, so the binary and test harnesses that run the real
//! gateway as a separate process share one implementation.

use std::path::Path;
use std::sync::Arc;

use crate::config::{read_key_file, GatewayConfig};
use crate::{proxy_app, Gateway, Proxy};

/// Loads the configuration at `path`, connects to the chain, opens the log and serves until
/// Ctrl-C (SIGINT).
pub async fn run(path: &Path) -> Result<(), String> {
    let cfg = GatewayConfig::load(path).map_err(|e| e.to_string())?;
    let key = read_key_file(&cfg.provider_key_file).map_err(|e| e.to_string())?;
    let url = cfg
        .rpc_url
        .parse()
        .map_err(|e| format!("rpc_url {:?}: {e}", cfg.rpc_url))?;
    let contract = cfg
        .chain
        .contract
        .parse()
        .map_err(|e| format!("contract: {e}"))?;
    // Funding reads are view calls; the signer is never used to send.
    let reader = alloy::signers::local::PrivateKeySigner::random();
    let sender = reader.address();
    let provider = tally_chain::channel::connect(url, reader);
    let client = tally_chain::TallyClient::new(provider, sender, contract)
        .await
        .map_err(|e| format!("connecting to the contract: {e}"))?;
    let funding = Arc::new(tally_chain::ChainFunding::new(client));
    let upstream = cfg
        .upstream
        .parse()
        .map_err(|e| format!("upstream {:?}: {e}", cfg.upstream))?;
    let proxy = Proxy::new(&upstream)?;
    let gateway = Gateway::open(cfg.settings(), key, funding).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| format!("binding {}: {e}", cfg.listen))?;
    eprintln!(
        "tally-gateway: listening on {}, forwarding to {}, provider key {}",
        cfg.listen,
        cfg.upstream,
        gateway.public_key()
    );
    let app = proxy_app(&gateway, proxy);
    crate::serve(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|e| e.to_string())
}
