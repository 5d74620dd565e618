//! The standalone gateway `tally-gateway --config gateway.toml` runs: the reverse proxy of
//! spec/HTTP.md §10 with funding read from the chain at `rpc_url` through tally-chain's
//! `ChainFunding`, and, with a `[settlement]` table, the payee side as well: tally-chain's
//! settlement worker claims the stored checkpoints on its own, and the close endpoint cosigns
//! cooperative closes with the payee key. A library function, so the binary and test
//! harnesses that run the real gateway as a separate process share one implementation.
//!
//! It logs through `tracing` (the binary installs the subscriber, [`init_logging`]): start-up,
//! every settlement-worker tick that failed or sent something, and the worker's final stats.
//! URLs are logged through [`redact_url`]/[`redact_text`], since an `rpc_url` may carry an
//! API key; keys and bodies are never logged.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use alloy::network::EthereumWallet;
use tally_chain::{ChainError, SettlementWorker, TallyClient, TickReport};

use crate::config::{read_key_file, read_secp256k1_key_file, GatewayConfig};
use crate::errors::StartError;
use crate::redact::{redact_text, redact_url};
use crate::{proxy_app_with_limits, Gateway, Proxy};

/// How log events are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line (timestamp, level, target, fields), for log collectors.
    Json,
}

/// The filter used when `RUST_LOG` is unset or empty.
pub const DEFAULT_LOG_FILTER: &str = "info";

/// Installs the process-wide `tracing` subscriber: events to stderr in `format`, filtered by
/// `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]). Call once, from a binary (`tally serve`,
/// `tally-gateway`); a library never installs one. An invalid `RUST_LOG` is an error rather
/// than a silently different filter.
pub fn init_logging(format: LogFormat) -> Result<(), StartError> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::try_new(&v)
            .map_err(|e| StartError::Config(format!("RUST_LOG {v:?}: {e}")))?,
        _ => EnvFilter::new(DEFAULT_LOG_FILTER),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| StartError::Config(format!("log subscriber: {e}")))
}

/// Logs one settlement-worker tick as it happens: a failure (transient ones are retried with
/// backoff) or what it sent and confirmed; quiet ticks log nothing.
fn log_tick(outcome: &Result<TickReport, ChainError>) {
    let r = match outcome {
        Err(e) => {
            let transient = e.is_transient();
            tracing::warn!(transient, error = %redact_text(&e.to_string()), "settlement tick failed");
            return;
        }
        Ok(r) => r,
    };
    if let Some((tx, channels)) = &r.submitted {
        tracing::info!(%tx, channels = channels.len(), "settlement claim sent");
    }
    if let Some(tx) = &r.resent {
        tracing::info!(%tx, "settlement claim replaced with higher fees");
    }
    if let Some((tx, ok)) = &r.confirmed {
        tracing::info!(%tx, success = *ok, "settlement claim confirmed");
    }
    if let Some(tx) = &r.abandoned {
        tracing::warn!(%tx, "settlement claim abandoned: its nonce was used elsewhere");
    }
    if let Some(e) = &r.scan_error {
        tracing::warn!(error = %redact_text(e), "withdraw event scan failed");
    }
    for (channel, why) in &r.rejected {
        tracing::warn!(channel = %channel.to_hex(), why = %why, "checkpoint not claimable");
    }
}

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
    let rpc = redact_url(&cfg.rpc_url);
    let url: alloy::transports::http::reqwest::Url = cfg
        .rpc_url
        .parse()
        .map_err(|e| StartError::Config(format!("rpc_url {rpc:?}: {e}")))?;
    let contract = cfg
        .chain
        .contract
        .parse()
        .map_err(|e| StartError::Config(format!("contract: {e}")))?;
    // Funding reads are view calls; the signer is never used to send.
    let reader = alloy::signers::local::PrivateKeySigner::random();
    let sender = reader.address();
    let provider = tally_chain::channel::connect(url.clone(), reader);
    tracing::info!(rpc_url = %rpc, "connecting to the chain");
    // Transport errors quote the URL they failed on: redact it before it is shown anywhere.
    let client = TallyClient::new(provider, sender, contract)
        .await
        .map_err(|e| {
            StartError::Config(format!("chain at rpc_url: {}", redact_text(&e.to_string())))
        })?;
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
    let node = match cfg.store.postgres()? {
        None => None,
        Some(pg) => Some(join_cluster(&pg).await?),
    };
    let gateway = match &node {
        None => Gateway::open_with_payee(cfg.gateway_settings()?, key, funding, payee_key.clone())?,
        Some(node) => {
            let settings = cfg.gateway_settings()?;
            Gateway::open_cluster(settings, key, funding, payee_key.clone(), node.clone()).await?
        }
    };
    if let Some(rc) = cfg.relay.as_ref().filter(|r| r.enabled) {
        start_relay(rc, &url, &gateway, payee_key.as_ref()).await?;
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = match (&cfg.settlement, payee_key) {
        (Some(s), Some(payee)) => {
            let start = worker_starter(&gateway, &url, contract, cfg.chain.chain_id, s, payee)?;
            Some(match &node {
                // One worker across the cluster: the holder of the settlement lease's.
                Some(node) => tokio::spawn(crate::cluster::run_while_leader(
                    node.clone(),
                    stopped.clone(),
                    start,
                )),
                None => start(stopped.clone()),
            })
        }
        _ => {
            tracing::info!(
                "no [settlement] configured: claims are manual (`tally settle`), cooperative closes unavailable"
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
    tracing::info!(
        upstream = %redact_url(&cfg.upstream),
        provider_key = %gateway.public_key(),
        "listening on {}",
        cfg.listen
    );
    let mut app = proxy_app_with_limits(&gateway, proxy, &limits);
    if let Some(node) = &node {
        // Requests for channels another node owns go there (spec/CLUSTER.md §7).
        let timeout = Duration::from_millis(cfg.upstream_timeout_ms) + Duration::from_secs(5);
        let router = crate::cluster::Router::new(node.clone(), timeout);
        app = app.layer(axum::middleware::from_fn_with_state(
            router,
            crate::cluster::route,
        ));
    }
    let served = crate::serve_with_limits(listener, app, limits, stop_signal()).await;
    // Every promised record durable, then the promise marks cleared: the next run needs no
    // restore (spec/HTTP.md §5.6).
    match gateway.shutdown(Duration::from_secs(30)).await {
        Ok(()) => tracing::info!("every promised record is durable; clean shutdown"),
        Err(e) => tracing::error!(error = %e.message, "unclean shutdown"),
    }
    // Ctrl-C (or a failed server) stops the worker too.
    let _ = stop.send(true);
    if let Some(task) = worker {
        // The worker stops at the same Ctrl-C; a claim in flight stays recorded onchain
        // and is picked up (replaced or confirmed) by the next run.
        if let Err(e) = task.await {
            tracing::error!(error = %e, "settlement worker task failed");
        }
    }
    if let Some(node) = &node {
        // Other nodes take this node's shards at once instead of waiting out the leases.
        node.release_all().await;
    }
    served.map_err(StartError::Io)
}

/// Joins the cluster database (spec/CLUSTER.md): connects, migrates the schema, registers
/// this node and starts renewing its leases.
async fn join_cluster(
    pg: &crate::config::PgSettings,
) -> Result<Arc<tally_store_pg::PgNode>, StartError> {
    let node = tally_store_pg::PgNode::start(tally_store_pg::NodeConfig {
        target: pg.target.clone(),
        shards: pg.shards,
        lease_ms: pg.lease_ms,
        node_url: pg.node_url.clone(),
    })
    .await
    .map_err(|e| {
        StartError::Config(format!("cluster database: {}", redact_text(&e.to_string())))
    })?;
    tracing::info!(
        node = node.id(),
        shards = pg.shards,
        lease_ms = pg.lease_ms,
        "joined the cluster"
    );
    Ok(node)
}

/// What starts a settlement worker for the payee (spec/CHAIN.md §9): a new worker each call,
/// run until its receiver turns true, its stats logged when it stops.
fn worker_starter(
    gateway: &Gateway,
    url: &alloy::transports::http::reqwest::Url,
    contract: alloy::primitives::Address,
    chain_id: u64,
    s: &crate::config::SettlementConfig,
    payee: alloy::signers::local::PrivateKeySigner,
) -> Result<impl Fn(tokio::sync::watch::Receiver<bool>) -> tokio::task::JoinHandle<()>, StartError>
{
    let address = payee.address();
    let settle = s.settle_config();
    let make = {
        let (gateway, url, settle) = (gateway.clone(), url.clone(), settle.clone());
        move || {
            let client = TallyClient::with_chain_id(
                tally_chain::channel::connect(url.clone(), payee.clone()),
                address,
                contract,
                chain_id,
            );
            SettlementWorker::new(
                client,
                EthereumWallet::from(payee.clone()),
                gateway.clone(),
                settle.clone(),
            )
        }
    };
    // Checked once now, so a bad configuration fails the start, not the first lease.
    drop(make()?);
    tracing::info!(
        threshold = %settle.threshold,
        interval_s = settle.claim_interval.as_secs(),
        confirmations = settle.confirmations,
        "claiming for {address}"
    );
    let view = gateway.settlement_view().clone();
    Ok(move |stopped: tokio::sync::watch::Receiver<bool>| {
        let worker = match make() {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "the settlement worker could not start");
                return tokio::spawn(async {});
            }
        };
        let view = view.clone();
        view.started();
        let worker = worker.on_tick(move |tick| {
            view.observe(tick);
            log_tick(tick);
        });
        tokio::spawn(async move {
            let w = worker.run(stopped).await;
            let stats = w.stats();
            tracing::info!(
                ticks = stats.ticks,
                claims = stats.submitted.len(),
                errors = stats.errors,
                last_error = %stats.last_error.as_deref().map(redact_text).unwrap_or_default(),
                "settlement worker stopped"
            );
        })
    })
}

/// Starts the relay `[relay]` describes (spec/HTTP.md §12) on `gateway`: for its payee,
/// its token and its minimum withdraw delay. The relay's wallet must not be the payee's:
/// both send transactions, and two senders sharing a key race for nonces.
pub async fn start_relay(
    rc: &crate::config::RelayConfig,
    url: &alloy::transports::http::reqwest::Url,
    gateway: &Gateway,
    payee_key: Option<&alloy::signers::local::PrivateKeySigner>,
) -> Result<(), StartError> {
    let key = read_secp256k1_key_file(&rc.key_file)?;
    let wallet = key.address();
    if payee_key.is_some_and(|p| p.address() == wallet) {
        return Err(StartError::Config(
            "[relay] key_file is the payee key: give the relay a wallet of its own".into(),
        ));
    }
    let inner = &gateway.inner;
    let policy = crate::relay::RelayPolicy {
        payee: inner.payee,
        token: inner.token,
        min_withdraw_delay: inner.settings.min_withdraw_delay,
        min_deposit: rc.min_deposit.0,
    };
    let client = TallyClient::with_chain_id(
        tally_chain::channel::connect(url.clone(), key),
        wallet,
        inner.contract,
        inner.settings.chain.chain_id,
    );
    let relay = crate::relay::Relay::new(client, policy, rc.limits())
        .await
        .map_err(|e| StartError::Config(format!("[relay]: {}", redact_text(&e.to_string()))))?;
    tracing::info!(
        wallet = %wallet,
        gas_limit = rc.gas_limit,
        per_minute = rc.max_per_minute,
        "relaying gasless deposits"
    );
    gateway.enable_relay(relay)
}

/// Ctrl-C, or SIGTERM (what a service manager sends) on Unix.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
