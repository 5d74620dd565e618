//! The standalone gateway `tally-gateway --config gateway.toml` runs: the reverse proxy of
//! spec/HTTP.md §10 with funding read from the chain at `rpc_url` through tally-chain's
//! `ChainFunding`, and, with a `[settlement]` table, the payee side as well: tally-chain's
//! settlement worker claims the stored checkpoints on its own, and the close endpoint cosigns
//! cooperative closes with the payee key. A library function, so the binary and test
//! harnesses that run the real gateway as a separate process share one implementation.

use std::path::Path;
use std::sync::Arc;

use alloy::network::EthereumWallet;
use tally_chain::{SettlementWorker, TallyClient};

use crate::config::{read_key_file, read_secp256k1_key_file, GatewayConfig};
use crate::errors::StartError;
use crate::{proxy_app_with_limits, Gateway, Proxy};

/// Loads the configuration at `path`, connects to the chain, opens the log and serves until
/// Ctrl-C (SIGINT); with `[settlement]`, also runs the settlement worker until then. Every
/// start-up failure is a [`StartError`] (a bad config or key file, a payee key that is not
/// `pay_to`, an unreachable chain, a busy port).
pub async fn run(path: &Path) -> Result<(), StartError> {
    let cfg = GatewayConfig::load(path)?;
    let limits = cfg.limits.server_limits()?;
    let key = read_key_file(&cfg.provider_key_file)?;
    let payee_key = match &cfg.settlement {
        Some(s) => Some(read_secp256k1_key_file(&s.payee_key_file)?),
        None => None,
    };
    let url: alloy::transports::http::reqwest::Url = cfg
        .rpc_url
        .parse()
        .map_err(|e| StartError::Config(format!("rpc_url {:?}: {e}", cfg.rpc_url)))?;
    let contract = cfg
        .chain
        .contract
        .parse()
        .map_err(|e| StartError::Config(format!("contract: {e}")))?;
    // Funding reads are view calls; the signer is never used to send.
    let reader = alloy::signers::local::PrivateKeySigner::random();
    let sender = reader.address();
    let provider = tally_chain::channel::connect(url.clone(), reader);
    let client = TallyClient::new(provider, sender, contract).await?;
    // Every signature the gateway checks or makes binds the configured chain id (EIP-712
    // domain): a node on another chain would make all of them wrong.
    if client.chain_id() != cfg.chain.chain_id {
        return Err(StartError::Config(format!(
            "chain.chain_id is {} but the node at rpc_url is on chain {}",
            cfg.chain.chain_id,
            client.chain_id()
        )));
    }
    let funding = Arc::new(tally_chain::ChainFunding::new(client));
    let upstream = cfg
        .upstream
        .parse()
        .map_err(|e| StartError::Config(format!("upstream {:?}: {e}", cfg.upstream)))?;
    let proxy = Proxy::new(&upstream).map_err(StartError::Config)?;
    let gateway =
        Gateway::open_with_payee(cfg.gateway_settings()?, key, funding, payee_key.clone())?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = match (&cfg.settlement, payee_key) {
        (Some(s), Some(payee)) => {
            let address = payee.address();
            let client = TallyClient::with_chain_id(
                tally_chain::channel::connect(url, payee.clone()),
                address,
                contract,
                cfg.chain.chain_id,
            );
            let settle = s.settle_config();
            let worker = SettlementWorker::new(
                client,
                EthereumWallet::from(payee),
                gateway.clone(),
                settle.clone(),
            )?;
            eprintln!(
                "tally-gateway: claiming for {address} (threshold {}, every {} s, {} confirmation(s))",
                settle.threshold,
                settle.claim_interval.as_secs(),
                settle.confirmations
            );
            Some(tokio::spawn(worker.run(stopped.clone())))
        }
        _ => {
            eprintln!(
                "tally-gateway: no [settlement] configured: claims are manual (`tally settle`), cooperative closes unavailable"
            );
            None
        }
    };
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: cfg.listen.clone(),
            source,
        })?;
    eprintln!(
        "tally-gateway: listening on {}, forwarding to {}, provider key {}",
        cfg.listen,
        cfg.upstream,
        gateway.public_key()
    );
    let app = proxy_app_with_limits(&gateway, proxy, &limits);
    let served = crate::serve_with_limits(listener, app, limits, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await;
    // Ctrl-C (or a failed server) stops the worker too.
    let _ = stop.send(true);
    if let Some(task) = worker {
        // The worker stops at the same Ctrl-C; a claim in flight stays recorded onchain
        // and is picked up (replaced or confirmed) by the next run.
        match task.await {
            Ok(w) => {
                let stats = w.stats();
                eprintln!(
                    "tally-gateway: settlement worker stopped after {} tick(s), {} claim(s) sent, {} error(s){}",
                    stats.ticks,
                    stats.submitted.len(),
                    stats.errors,
                    stats
                        .last_error
                        .as_ref()
                        .map(|e| format!(", last: {e}"))
                        .unwrap_or_default()
                );
            }
            Err(e) => eprintln!("tally-gateway: settlement worker task: {e}"),
        }
    }
    served.map_err(StartError::Io)
}
