//! `tally-gateway --config gateway.toml`: the standalone metering reverse proxy.
//! Funding is read from the chain at `rpc_url` through tally-chain's `ChainFunding`.

use std::path::PathBuf;
use std::sync::Arc;

use tally_server::config::{read_key_file, GatewayConfig};
use tally_server::{proxy_app, Gateway, Proxy};

fn usage() -> ! {
    eprintln!("usage: tally-gateway --config <file.toml>");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = match (args.next().as_deref(), args.next()) {
        (Some("--config"), Some(p)) => PathBuf::from(p),
        _ => usage(),
    };
    if let Err(e) = run(path).await {
        eprintln!("tally-gateway: {e}");
        std::process::exit(1);
    }
}

async fn run(path: PathBuf) -> Result<(), String> {
    let cfg = GatewayConfig::load(&path).map_err(|e| e.to_string())?;
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
    tally_server::serve(listener, app, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
    .map_err(|e| e.to_string())
}
