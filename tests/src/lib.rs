//! Shared harness of tally's end-to-end tests and load benchmark: a real upstream, a real
//! gateway (reverse proxy or layer) and real clients, all over loopback TCP with sled files
//! in temporary directories. The only stand-in is [`MemFunding`], an in-memory
//! `tally_chain::Funding` for tests where the chain is not what is tested.

pub mod chain;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use axum::routing::any;
use axum::Router;
use tally_chain::{BoxFuture, ChainError, ChannelFunding, Funding, WithdrawState};
use tally_core::{ChannelId, Hash, SecretKey};
use tally_http::terms::{ChainTerms, PathMatch};
use tally_http::{Amount, Price, RoutePrice};
use tally_server::{Gateway, Proxy, Settings};
use tokio::sync::oneshot;

/// The payee address the test gateway is configured with.
pub const PAYEE: Address = Address::repeat_byte(0xbb);
/// The token.
pub const TOKEN: Address = Address::repeat_byte(0xcc);
/// The contract.
pub const CONTRACT: Address = Address::repeat_byte(0xdd);
/// The chain id.
pub const CHAIN_ID: u64 = 31337;
/// Price of `/v1/echo`.
pub const ECHO_PRICE: u128 = 10;

/// In-memory funding: channels the test "opened".
#[derive(Default, Clone)]
pub struct MemFunding {
    channels: Arc<Mutex<HashMap<ChannelId, ChannelFunding>>>,
}

impl MemFunding {
    /// Opens a channel paying [`PAYEE`] with `deposit`, checkpoint signer `signer`.
    pub fn open(&self, id: ChannelId, signer: Address, deposit: u128) {
        let f = ChannelFunding {
            channel_id: id,
            payer: Address::repeat_byte(0xaa),
            payee: PAYEE,
            token: TOKEN,
            signer,
            deposit,
            claimed: 0,
            claimed_size: 0,
            claimed_root: Hash::default(),
            withdraw_delay: 3600,
            withdraw: WithdrawState::None,
        };
        if let Ok(mut m) = self.channels.lock() {
            m.insert(id, f);
        }
    }
}

impl Funding for MemFunding {
    fn funding<'a>(
        &'a self,
        channel: &'a ChannelId,
    ) -> BoxFuture<'a, Result<ChannelFunding, ChainError>> {
        let found = self
            .channels
            .lock()
            .ok()
            .and_then(|m| m.get(channel).copied());
        Box::pin(async move { found.ok_or(ChainError::UnknownChannel(*channel)) })
    }
}

/// A fresh channel: id, session key, checkpoint key.
pub struct TestChannel {
    /// The id.
    pub id: ChannelId,
    /// Session key.
    pub session: SecretKey,
    /// Checkpoint key.
    pub checkpoint: PrivateKeySigner,
}

/// Opens a channel in `funding` with `deposit`.
pub fn open_channel(funding: &MemFunding, deposit: u128) -> TestChannel {
    let checkpoint = PrivateKeySigner::random();
    let salt = B256::from(rand::random::<[u8; 32]>());
    let id = tally_chain::channel_id(
        CHAIN_ID,
        CONTRACT,
        Address::repeat_byte(0xaa),
        PAYEE,
        TOKEN,
        salt,
    );
    funding.open(id, checkpoint.address(), deposit);
    TestChannel {
        id,
        session: SecretKey::generate(&mut rand::rngs::OsRng),
        checkpoint,
    }
}

/// The price list the test gateway uses.
pub fn routes() -> Vec<RoutePrice> {
    vec![
        RoutePrice {
            method: "*".into(),
            path: "/v1/echo".into(),
            path_match: PathMatch::Prefix,
            price: Price::Fixed {
                amount: Amount(ECHO_PRICE),
            },
        },
        RoutePrice {
            method: "*".into(),
            path: "/v1/tokens".into(),
            path_match: PathMatch::Exact,
            price: Price::Metered {
                units_header: "x-units".into(),
                unit_price: Amount(3),
                max_amount: Amount(300),
            },
        },
        RoutePrice {
            method: "*".into(),
            path: "/v1/fail".into(),
            path_match: PathMatch::Exact,
            price: Price::Fixed {
                amount: Amount(ECHO_PRICE),
            },
        },
    ]
}

/// Settings for a gateway in `dir`.
pub fn settings(dir: &Path) -> Settings {
    Settings::new(
        dir.to_path_buf(),
        ChainTerms {
            chain_id: CHAIN_ID,
            contract: CONTRACT.to_string(),
            asset: TOKEN.to_string(),
            pay_to: PAYEE.to_string(),
        },
        routes(),
    )
}

/// The upstream API's routes: `/v1/echo` echoes the body, `/v1/tokens?n=` reports `n`
/// units, `/v1/fail` answers 500, `/free` is unpriced.
pub fn upstream_routes() -> Router {
    Router::new()
        .route(
            "/v1/echo",
            any(|body: axum::body::Bytes| async move { body }),
        )
        .route(
            "/v1/echo/{*rest}",
            any(|body: axum::body::Bytes| async move { body }),
        )
        .route(
            "/v1/tokens",
            any(|q: axum::extract::RawQuery| async move {
                let n =
                    q.0.and_then(|q| q.strip_prefix("n=").map(str::to_string))
                        .unwrap_or_else(|| "0".into());
                ([("x-units", n.clone())], format!("{n} tokens"))
            }),
        )
        .route(
            "/v1/fail",
            any(|| async { (http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route("/free", any(|| async { "free" }))
}

/// A running server; dropping it does not stop it, [`Running::stop`] does.
pub struct Running {
    /// Its address.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Graceful shutdown, waiting until the server task ended.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.task.await;
    }

    /// Hard stop: abort the task (connections dropped mid-flight), like a crash of the
    /// serving loop.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Whether the serving task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Serves `app` on a fresh loopback port.
pub async fn spawn(app: Router) -> Running {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("binding loopback: {e}"),
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("local addr: {e}"),
    };
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = tally_server::serve(listener, app, async {
            let _ = rx.await;
        })
        .await;
    });
    Running {
        addr,
        stop: Some(tx),
        task,
    }
}

/// Starts the upstream.
pub async fn spawn_upstream() -> Running {
    spawn(upstream_routes()).await
}

/// Opens a gateway over `settings` and serves it as a reverse proxy to `upstream`.
pub async fn spawn_gateway(
    settings: Settings,
    key: &SecretKey,
    funding: &MemFunding,
    upstream: &Running,
) -> (Gateway, Running) {
    let gateway = match Gateway::open(settings, key.clone(), Arc::new(funding.clone())) {
        Ok(g) => g,
        Err(e) => panic!("opening gateway: {e}"),
    };
    let uri = match upstream.url().parse() {
        Ok(u) => u,
        Err(e) => panic!("upstream uri: {e}"),
    };
    let proxy = match Proxy::new(&uri) {
        Ok(p) => p,
        Err(e) => panic!("proxy: {e}"),
    };
    let running = spawn(tally_server::proxy_app(&gateway, proxy)).await;
    (gateway, running)
}

/// As [`spawn_gateway`] over the data directory of a gateway that was just stopped: the old
/// one's sled files stay locked until its last connection task drops it, so this retries the
/// open for up to 10 s and fails with the last error after that.
pub async fn reopen_gateway(
    settings: Settings,
    key: &SecretKey,
    funding: &MemFunding,
    upstream: &Running,
) -> (Gateway, Running) {
    let mut last = String::new();
    for _ in 0..100 {
        match Gateway::open(settings.clone(), key.clone(), Arc::new(funding.clone())) {
            Ok(gateway) => {
                let uri = match upstream.url().parse() {
                    Ok(u) => u,
                    Err(e) => panic!("upstream uri: {e}"),
                };
                let proxy = match Proxy::new(&uri) {
                    Ok(p) => p,
                    Err(e) => panic!("proxy: {e}"),
                };
                let running = spawn(tally_server::proxy_app(&gateway, proxy)).await;
                return (gateway, running);
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("reopening the gateway: {last}")
}

/// A client config for `channel` against `gateway_url`, mirroring into `dir`.
pub fn client_config(
    gateway_url: &str,
    dir: &Path,
    ch: &TestChannel,
) -> tally_client::ClientConfig {
    tally_client::ClientConfig::new(
        gateway_url,
        dir.to_path_buf(),
        ch.id,
        ch.session.clone(),
        ch.checkpoint.clone(),
    )
}

/// As [`spawn_gateway`] with any funding source (the chain tests pass tally-chain's
/// `ChainFunding`).
pub async fn spawn_gateway_funded(
    settings: Settings,
    key: &SecretKey,
    funding: Arc<dyn Funding>,
    upstream: &Running,
) -> (Gateway, Running) {
    let gateway = match Gateway::open(settings, key.clone(), funding) {
        Ok(g) => g,
        Err(e) => panic!("opening gateway: {e}"),
    };
    let uri = match upstream.url().parse() {
        Ok(u) => u,
        Err(e) => panic!("upstream uri: {e}"),
    };
    let proxy = match Proxy::new(&uri) {
        Ok(p) => p,
        Err(e) => panic!("proxy: {e}"),
    };
    let running = spawn(tally_server::proxy_app(&gateway, proxy)).await;
    (gateway, running)
}
