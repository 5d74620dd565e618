//! The gateway in-process, from its TOML config (tally-server's `GatewayConfig`, spec/HTTP.md
//! §10), for the demo and the provider-side commands that need the `Gateway` itself (its
//! store for `export`, its checkpoints for `settle`), and claiming through tally-chain's
//! settlement worker. `tally serve` is tally-server's `standalone::run`; the metering itself
//! is all tally-server's, this module only opens it, binds it and stops it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::network::EthereumWallet;
use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use serde::Serialize;
use tally_chain::channel::connect;
use tally_chain::{SettleConfig, SettlementWorker, TallyClient};
use tally_server::config::{read_key_file, GatewayConfig};
use tally_server::{proxy_app, Gateway, Proxy};
use tokio::sync::oneshot;

use crate::chain::{address, rpc_url};
use crate::error::{CliError, Result};

/// Opens the gateway a config describes (log, bindings, terms), with funding read from the
/// chain at `rpc_url`. The node is not contacted until a channel's funding is read.
pub fn open(cfg: &GatewayConfig) -> Result<Gateway> {
    let key = read_key_file(&cfg.provider_key_file).map_err(|e| CliError::Usage(e.to_string()))?;
    let contract = address("contract", &cfg.chain.contract)?;
    let reader = PrivateKeySigner::random();
    let sender = reader.address();
    let client = TallyClient::with_chain_id(
        connect(rpc_url(&cfg.rpc_url)?, reader),
        sender,
        contract,
        cfg.chain.chain_id,
    );
    let funding = Arc::new(tally_chain::ChainFunding::new(client));
    Ok(Gateway::open(cfg.settings(), key, funding)?)
}

/// A gateway serving on a listener.
pub struct Serving {
    /// The gateway.
    pub gateway: Gateway,
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Serving {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful shutdown.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.await {
            Ok(r) => r.map_err(|e| CliError::Service(format!("gateway: {e}"))),
            Err(e) => Err(CliError::Service(format!("gateway task: {e}"))),
        }
    }
}

/// Opens the gateway and serves it as the reverse proxy to `cfg.upstream` on `cfg.listen`.
pub async fn serve(cfg: &GatewayConfig) -> Result<Serving> {
    let gateway = open(cfg)?;
    let upstream = cfg
        .upstream
        .parse()
        .map_err(|e| CliError::Usage(format!("upstream {:?}: {e}", cfg.upstream)))?;
    let proxy = Proxy::new(&upstream).map_err(CliError::Usage)?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| CliError::Service(format!("binding {}: {e}", cfg.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Service(e.to_string()))?;
    let app = proxy_app(&gateway, proxy);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(tally_server::serve(listener, app, async {
        let _ = rx.await;
    }));
    Ok(Serving {
        gateway,
        addr,
        stop: Some(tx),
        task,
    })
}

/// What one manual settlement did.
#[derive(Clone, Debug, Serialize)]
pub struct Settled {
    /// The claim transaction, hex.
    pub transaction: String,
    /// Its gas.
    pub gas_used: u64,
    /// Its block.
    pub block: u64,
    /// Channels it settled, hex.
    pub channels: Vec<String>,
}

/// Claims every channel with a claimable checkpoint in `gateway`'s store, once, through the
/// settlement worker (threshold 1, so any non-zero payout is claimed), and waits until the
/// claim is mined. `Ok(None)` when nothing was due.
pub async fn settle_once(
    gateway: &Gateway,
    rpc: &str,
    chain_id: u64,
    contract: alloy::primitives::Address,
    payee: PrivateKeySigner,
    timeout: Duration,
) -> Result<Option<Settled>> {
    let provider = connect(rpc_url(rpc)?, payee.clone());
    let client = TallyClient::with_chain_id(provider.clone(), payee.address(), contract, chain_id);
    let config = SettleConfig {
        threshold: 1,
        poll_interval: Duration::from_millis(100),
        ..SettleConfig::default()
    };
    let mut worker =
        SettlementWorker::new(client, EthereumWallet::from(payee), gateway.clone(), config)?;
    let deadline = Instant::now() + timeout;
    let mut submitted: Option<(B256, Vec<String>)> = None;
    loop {
        if Instant::now() > deadline {
            return Err(CliError::Service(format!(
                "settlement did not confirm within {} s",
                timeout.as_secs()
            )));
        }
        let report = worker.tick().await?;
        if let Some((hash, channels)) = &report.submitted {
            submitted = Some((*hash, channels.iter().map(|c| c.to_hex()).collect()));
        }
        if let Some((hash, ok)) = report.confirmed {
            if !ok {
                return Err(CliError::Service(format!("claim {hash} reverted")));
            }
            let receipt = provider
                .get_transaction_receipt(hash)
                .await
                .map_err(|e| CliError::Service(format!("claim receipt: {e}")))?
                .ok_or_else(|| CliError::Service(format!("no receipt for {hash}")))?;
            let channels = submitted.map(|s| s.1).unwrap_or_default();
            return Ok(Some(Settled {
                transaction: format!("{hash}"),
                gas_used: receipt.gas_used,
                block: receipt.block_number.unwrap_or(0),
                channels,
            }));
        }
        if submitted.is_none() && report.waiting_on.is_none() && worker.in_flight().is_none() {
            if !report.rejected.is_empty() {
                let why: Vec<String> = report
                    .rejected
                    .iter()
                    .map(|(c, w)| format!("{}: {w}", c.to_hex()))
                    .collect();
                return Err(CliError::Service(format!(
                    "claims rejected: {}",
                    why.join("; ")
                )));
            }
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
