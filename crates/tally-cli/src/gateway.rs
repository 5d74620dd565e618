//! The gateway in-process, from its TOML config (tally-server's `GatewayConfig`, spec/HTTP.md
//! §10), for the demo and the provider-side commands that need the `Gateway` itself (its
//! store for `export`, its checkpoints for `settle`), and claiming through tally-chain's
//! settlement worker. `tally serve` is tally-server's `standalone::run`; the metering itself
//! is all tally-server's, this module only opens it, binds it and stops it. It also writes
//! the config file ([`GatewayFile`]) for the demo and the tests that run a gateway.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::network::EthereumWallet;
use alloy::primitives::B256;
use alloy::providers::Provider;
use alloy::signers::local::PrivateKeySigner;
use serde::Serialize;
use tally_chain::channel::connect;
use tally_chain::{SettleConfig, SettlementWorker, TallyClient};
use tally_http::terms::{ChainTerms, CheckpointPolicy, RefundPolicy};
use tally_http::{Amount, RoutePrice};
use tally_server::config::{read_key_file, GatewayConfig};
use tally_server::{proxy_app_with_limits, Gateway, Proxy};
use tokio::sync::oneshot;

use crate::chain::{address, rpc_url};
use crate::error::{CliError, Result};

/// The gateway config file (spec/HTTP.md §10) that `tally demo` and the tests write, so its
/// text comes from one place. It holds the [`GatewayConfig`] fields they set; everything
/// else (body limits, the funding cache, optional tables) is left out and takes tally-server's
/// default when [`GatewayConfig::load`] reads it back.
#[derive(Clone, Debug, Serialize)]
pub struct GatewayFile {
    /// Listen address, e.g. `127.0.0.1:0` for any free loopback port.
    pub listen: String,
    /// The upstream API, `http://host:port`.
    pub upstream: String,
    /// Data directory, relative to the file.
    pub data_dir: PathBuf,
    /// The provider key file, relative to the file.
    pub provider_key_file: PathBuf,
    /// JSON-RPC endpoint funding is read from.
    pub rpc_url: String,
    /// Most served beyond the last checkpoint.
    pub credit_limit: Amount,
    /// The shortest withdraw delay of a channel served (seconds); `None` leaves
    /// tally-server's default (six hours). Test chains open channels at the contract's
    /// minimum and set it to that.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_withdraw_delay: Option<u32>,
    /// Whether 5xx answers are charged (and so can be disputed for a credit).
    pub charge_server_errors: bool,
    /// Requests no route prices: forwarded free (the default) or refused.
    pub unmatched: tally_http::Unmatched,
    /// Chain, contract, token, payee.
    pub chain: ChainTerms,
    /// When the gateway asks for a checkpoint.
    pub checkpoint: CheckpointPolicy,
    /// Automatic refunds.
    pub refunds: RefundPolicy,
    /// The price list.
    pub routes: Vec<RoutePrice>,
    /// When receipts are sent; `None` leaves tally-server's default (`sync`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub durability: Option<tally_server::durability::DurabilityConfig>,
    /// The gasless-deposit relay (`[relay]`); `None` runs none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay: Option<tally_server::config::RelayConfig>,
    /// `[store]`; `None` leaves tally-server's default (sled under `data_dir`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<tally_server::config::StoreConfig>,
}

impl GatewayFile {
    /// A gateway on `listen` in front of `upstream`, with the demo's policy: `data/` and
    /// `provider.key` next to the file, a credit limit of 1,000,000, charged (and
    /// refundable) 5xx answers, and a checkpoint every 500 records.
    pub fn new(
        listen: &str,
        upstream: &str,
        rpc_url: &str,
        chain: ChainTerms,
        routes: Vec<RoutePrice>,
    ) -> Self {
        GatewayFile {
            listen: listen.into(),
            upstream: upstream.into(),
            data_dir: "data".into(),
            provider_key_file: "provider.key".into(),
            rpc_url: rpc_url.into(),
            credit_limit: Amount(1_000_000),
            min_withdraw_delay: None,
            charge_server_errors: true,
            unmatched: tally_http::Unmatched::Free,
            chain,
            checkpoint: CheckpointPolicy {
                every_records: 500,
                every_seconds: 0,
                every_amount: Amount(0),
            },
            refunds: RefundPolicy {
                server_errors: true,
                over_max: true,
            },
            routes,
            durability: None,
            relay: None,
            store: None,
        }
    }

    /// The TOML text.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| CliError::Usage(format!("gateway config: {e}")))
    }

    /// Writes the file at `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.to_toml()?).map_err(|e| CliError::io(path, e))
    }
}

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
    Ok(Gateway::open(cfg.gateway_settings()?, key, funding)?)
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

    /// Graceful shutdown: stops serving, then keeps every promise (spec/HTTP.md §5.6).
    pub async fn stop(mut self) -> Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match self.task.await {
            Ok(r) => r.map_err(|e| CliError::Service(format!("gateway: {e}")))?,
            Err(e) => return Err(CliError::Service(format!("gateway task: {e}"))),
        }
        self.gateway
            .shutdown(Duration::from_secs(30))
            .await
            .map_err(|e| CliError::Service(format!("gateway shutdown: {}", e.message)))
    }
}

/// Opens the gateway and serves it as the reverse proxy to `cfg.upstream` on `cfg.listen`.
pub async fn serve(cfg: &GatewayConfig) -> Result<Serving> {
    let limits = cfg
        .limits
        .server_limits()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    let gateway = open(cfg)?;
    if let Some(rc) = cfg.relay.as_ref().filter(|r| r.enabled) {
        // The payee key, if any, only to refuse a relay that would share it.
        let payee = match &cfg.settlement {
            Some(st) => Some(tally_server::config::read_secp256k1_key_file(
                &st.payee_key_file,
            )?),
            None => None,
        };
        let url = rpc_url(&cfg.rpc_url)?;
        tally_server::standalone::start_relay(rc, &url, &gateway, payee.as_ref()).await?;
    }
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
    let app = proxy_app_with_limits(&gateway, proxy, &limits);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(tally_server::serve_with_limits(
        listener,
        app,
        limits,
        async {
            let _ = rx.await;
        },
    ));
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
        // A confirmed payout (the worker pulls what earlier claims made owed once their
        // challenge window passed, spec/CHAIN.md §4.4) is not this command's claim.
        let claim_confirmed = report
            .confirmed
            .filter(|(hash, _)| submitted.as_ref().is_some_and(|s| s.0 == *hash));
        if let Some((hash, ok)) = claim_confirmed {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_file_reads_back_as_the_same_gateway_config() {
        let chain = ChainTerms {
            chain_id: 31337,
            contract: "0x00000000000000000000000000000000000000dd".into(),
            asset: "0x00000000000000000000000000000000000000cc".into(),
            pay_to: "0x00000000000000000000000000000000000000bb".into(),
        };
        let file = GatewayFile::new(
            "127.0.0.1:0",
            "http://127.0.0.1:9",
            "http://127.0.0.1:8545",
            chain.clone(),
            crate::upstream::prices(),
        );
        let text = match file.to_toml() {
            Ok(t) => t,
            Err(e) => panic!("to_toml: {e}"),
        };
        let cfg = match GatewayConfig::parse(&text) {
            Ok(c) => c,
            Err(e) => panic!("parse: {e}\n{text}"),
        };
        assert_eq!(cfg.listen, file.listen);
        assert_eq!(cfg.upstream, file.upstream);
        assert_eq!(cfg.data_dir, file.data_dir);
        assert_eq!(cfg.provider_key_file, file.provider_key_file);
        assert_eq!(cfg.rpc_url, file.rpc_url);
        assert_eq!(cfg.credit_limit, file.credit_limit);
        assert_eq!(cfg.charge_server_errors, file.charge_server_errors);
        assert_eq!(cfg.chain, chain);
        assert_eq!(cfg.checkpoint, file.checkpoint);
        assert_eq!(cfg.refunds, file.refunds);
        assert_eq!(cfg.routes, file.routes);
    }
}
