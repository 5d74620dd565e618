//! Shared harness of tally's end-to-end tests and load benchmark: a real upstream, a real
//! gateway (reverse proxy or layer) and real clients, all over loopback TCP with sled files
//! in temporary directories. The only stand-in is [`MemFunding`], an in-memory
//! `tally_chain::Funding` for tests where the chain is not what is tested.

pub mod chain;
pub mod check;
pub mod cluster;
pub mod cluster_check;
pub mod cluster_db;
pub mod paid;
pub mod pg;
pub mod process;
pub mod tcp_proxy;
pub mod traffic;

pub use check::{assert_mirror_is_log, checked_log, open_mirror, stored_checkpoint};
pub use paid::{delaying_proxy, forward, next_auth, raw, raw_signed, reason, Hold};

use std::collections::HashMap;
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

pub use tally_cli::upstream::Server;

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
/// How long the upstream takes on `/v1/echo/long`, in ms.
pub const LONG_MS: u64 = 2_500;

/// The withdraw delay of every [`MemFunding`] channel: the contract's floor, which
/// [`settings`] lets the gateway accept (its own default is six hours).
pub const MEM_WITHDRAW_DELAY: u32 = tally_chain::MIN_WITHDRAW_DELAY;

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
            credit_size: 0,
            settle_at: 0,
            settled: 0,
            paid: 0,
            withdraw_delay: MEM_WITHDRAW_DELAY,
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
            mime_type: None,
            price: Price::Fixed {
                amount: Amount(ECHO_PRICE),
            },
        },
        RoutePrice {
            method: "*".into(),
            path: "/v1/tokens".into(),
            path_match: PathMatch::Exact,
            mime_type: None,
            price: Price::Metered(tally_http::MeteredPrice::header("x-units", 3, 300)),
        },
        RoutePrice {
            method: "*".into(),
            path: "/v1/hang".into(),
            path_match: PathMatch::Exact,
            mime_type: None,
            price: Price::Fixed {
                amount: Amount(ECHO_PRICE),
            },
        },
        RoutePrice {
            method: "*".into(),
            path: "/v1/fail".into(),
            path_match: PathMatch::Exact,
            mime_type: None,
            price: Price::Fixed {
                amount: Amount(ECHO_PRICE),
            },
        },
        RoutePrice {
            method: "POST".into(),
            path: tally_cli::mock_llm::PATH.into(),
            path_match: PathMatch::Exact,
            mime_type: None,
            price: tally_cli::upstream::chat_price(),
        },
    ]
}

/// The delay between two tokens of the upstream's streamed completion
/// ([`tally_cli::mock_llm`]): long enough that a stream forwarded whole at its end is told
/// from one forwarded as it arrives.
pub const TOKEN_MS: u64 = 40;

/// Settings for a gateway in `dir`.
pub fn settings(dir: &Path) -> Settings {
    let mut s = Settings::new(
        dir.to_path_buf(),
        ChainTerms {
            chain_id: CHAIN_ID,
            contract: CONTRACT.to_string(),
            asset: TOKEN.to_string(),
            pay_to: PAYEE.to_string(),
        },
        routes(),
    );
    s.min_withdraw_delay = MEM_WITHDRAW_DELAY;
    s
}

/// The upstream API's routes: `/v1/echo` echoes the body (`/v1/echo/slow` after 100 ms,
/// `/v1/echo/long` after [`LONG_MS`], a slow LLM completion), `/v1/tokens?n=` reports `n`
/// units, `/v1/fail` answers 500, `/free` is unpriced, and `/v1/chat/completions` streams a
/// completion token by token. Not tally-cli's built-in upstream
/// (the demo's API): these tests check bodies come back byte for byte and choose the units.
pub fn upstream_routes() -> Router {
    tally_cli::mock_llm::routes(std::time::Duration::from_millis(TOKEN_MS))
        .route(
            "/v1/echo",
            any(|body: axum::body::Bytes| async move { body }),
        )
        .route(
            "/v1/echo/slow",
            any(|body: axum::body::Bytes| async move {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                body
            }),
        )
        .route(
            "/v1/echo/long",
            any(|body: axum::body::Bytes| async move {
                tokio::time::sleep(std::time::Duration::from_millis(LONG_MS)).await;
                body
            }),
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
        .route(
            "/v1/hang",
            any(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                "too late"
            }),
        )
}

/// Serves `app` on a fresh loopback port (tally-cli's [`Server`], the one in-process server
/// of the demo and these tests).
pub async fn spawn(app: Router) -> Server {
    match Server::bind("127.0.0.1:0", app).await {
        Ok(s) => s,
        Err(e) => panic!("serving on loopback: {e}"),
    }
}

/// Starts the upstream.
pub async fn spawn_upstream() -> Server {
    spawn(upstream_routes()).await
}

/// Opens a gateway over `settings` and serves it as a reverse proxy to `upstream`.
pub async fn spawn_gateway(
    settings: Settings,
    key: &SecretKey,
    funding: &MemFunding,
    upstream: &Server,
) -> (Gateway, Server) {
    spawn_gateway_funded(settings, key, Arc::new(funding.clone()), upstream).await
}

/// As [`spawn_gateway`] over the data directory of a gateway that was just stopped: the old
/// one's sled files stay locked until its last connection task drops it, so this retries the
/// open for up to 10 s and fails with the last error after that.
pub async fn reopen_gateway(
    settings: Settings,
    key: &SecretKey,
    funding: &MemFunding,
    upstream: &Server,
) -> (Gateway, Server) {
    let mut last = String::new();
    for _ in 0..100 {
        match Gateway::open(settings.clone(), key.clone(), Arc::new(funding.clone())) {
            Ok(gateway) => {
                let running = serve_proxy(&gateway, upstream).await;
                return (gateway, running);
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("reopening the gateway: {last}")
}

/// Serves `gateway` as the reverse proxy to `upstream`.
async fn serve_proxy(gateway: &Gateway, upstream: &Server) -> Server {
    let uri = match upstream.url().parse() {
        Ok(u) => u,
        Err(e) => panic!("upstream uri: {e}"),
    };
    let proxy = match Proxy::new(&uri) {
        Ok(p) => p,
        Err(e) => panic!("proxy: {e}"),
    };
    spawn(tally_server::proxy_app(gateway, proxy)).await
}

/// A temporary directory.
pub fn tmp() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => panic!("tempdir: {e}"),
    }
}

/// Connects a paying client for `ch` to `url`, mirroring into `dir`.
pub async fn connect(url: &str, dir: &Path, ch: &TestChannel) -> tally_client::Client {
    match tally_client::Client::connect(client_config(url, dir, ch)).await {
        Ok(c) => c,
        Err(e) => panic!("connect: {e}"),
    }
}

/// The setup most end-to-end tests start from: the upstream, and a gateway over in-memory
/// funding serving as the reverse proxy in front of it, with its data in a temporary
/// directory.
pub struct Stack {
    /// Where channels are opened.
    pub funding: MemFunding,
    /// The provider's key.
    pub key: SecretKey,
    /// The upstream.
    pub upstream: Server,
    /// The gateway.
    pub gateway: Gateway,
    /// The gateway served as the reverse proxy.
    pub server: Server,
    /// The gateway's data directory.
    pub dir: tempfile::TempDir,
}

impl Stack {
    /// Starts it with [`settings`] as `tune` changes them.
    pub async fn start(tune: impl FnOnce(&mut Settings)) -> Stack {
        let funding = MemFunding::default();
        let upstream = spawn_upstream().await;
        let key = SecretKey::generate(&mut rand::rngs::OsRng);
        let dir = tmp();
        let mut s = settings(dir.path());
        tune(&mut s);
        let (gateway, server) = spawn_gateway(s, &key, &funding, &upstream).await;
        Stack {
            funding,
            key,
            upstream,
            gateway,
            server,
            dir,
        }
    }

    /// Opens a channel with `deposit` and connects a client for it to the gateway, mirroring
    /// into the returned directory (keep it while the client lives).
    pub async fn client(
        &self,
        deposit: u128,
    ) -> (TestChannel, tally_client::Client, tempfile::TempDir) {
        let ch = open_channel(&self.funding, deposit);
        let dir = tmp();
        let client = connect(&self.server.url(), dir.path(), &ch).await;
        (ch, client, dir)
    }

    /// Stops the gateway's server, then the upstream.
    pub async fn stop(self) {
        self.server.stop().await;
        self.upstream.stop().await;
    }
}

/// As [`connect`] on a mirror whose previous client was just dropped: its sled files stay
/// locked until the last handle is gone, so this retries for up to 5 s.
pub async fn reconnect(url: &str, dir: &Path, ch: &TestChannel) -> tally_client::Client {
    let mut last = String::new();
    for _ in 0..100 {
        match tally_client::Client::connect(client_config(url, dir, ch)).await {
            Ok(c) => return c,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("reconnecting: {last}")
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
    upstream: &Server,
) -> (Gateway, Server) {
    let gateway = match Gateway::open(settings, key.clone(), funding) {
        Ok(g) => g,
        Err(e) => panic!("opening gateway: {e}"),
    };
    let running = serve_proxy(&gateway, upstream).await;
    (gateway, running)
}

/// [`spawn_gateway_funded`], with the payee's wallet key: this gateway cosigns cooperative
/// closes (spec/HTTP.md §5.4) and keeps them for the settlement worker.
pub async fn spawn_gateway_with_payee(
    settings: Settings,
    key: &SecretKey,
    funding: Arc<dyn Funding>,
    payee_key: PrivateKeySigner,
    upstream: &Server,
) -> (Gateway, Server) {
    let gateway = match Gateway::open_with_payee(settings, key.clone(), funding, Some(payee_key)) {
        Ok(g) => g,
        Err(e) => panic!("opening gateway: {e}"),
    };
    let running = serve_proxy(&gateway, upstream).await;
    (gateway, running)
}

/// The `TALLY-READ-AUTH` value for a GET of `url` by `ch`'s session key, issued at
/// `issued_at_ms` (spec/HTTP.md §5.1).
pub fn read_token_at(ch: &TestChannel, url: &str, issued_at_ms: u64) -> String {
    let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let target = match parsed.query() {
        Some(q) => format!("{}?{q}", parsed.path()),
        None => parsed.path().to_string(),
    };
    tally_http::ReadToken::sign(&ch.session, &ch.id, "GET", &target, issued_at_ms).to_header()
}

/// Milliseconds since the Unix epoch, by this clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// GETs a channel read endpoint as `ch`'s client would: with a fresh read token.
pub async fn read_get(ch: &TestChannel, url: &str) -> reqwest::Response {
    reqwest::Client::new()
        .get(url)
        .header(
            tally_http::read_auth::READ_AUTH,
            read_token_at(ch, url, now_ms()),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}
