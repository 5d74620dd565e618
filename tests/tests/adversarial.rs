//! A live gateway attacked from outside: the standalone gateway runs as its own OS process
//! (`tally-e2e-gateway`, i.e. `tally serve`) with funding read from a real anvil, and each
//! test plays a hostile client, a hostile upstream or a hostile network against it. Every
//! attack here got through an earlier version (issue "Close the holes found by attacking a
//! live gateway"); each assertion is the refusal it must get now, and what it must not cost.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use tally_cli::gateway::GatewayFile;
use tally_client::{Client, ClientError};
use tally_core::request::request_hash;
use tally_core::{Authorization, ChannelId, Hash, RequestSalt, SecretKey};
use tally_e2e::chain::ChainEnv;
use tally_e2e::process::{free_port, GatewayProcess};
use tally_e2e::*;
use tally_http::headers::{encode_header, PAYMENT_RESPONSE, PAYMENT_SIGNATURE};
use tally_http::terms::PathMatch;
use tally_http::{Amount, PaymentPayload, Price, Reason, RoutePrice, Unmatched};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// Requests the upstream served, by path.
#[derive(Default)]
struct Hits(Mutex<HashMap<String, usize>>);

impl Hits {
    fn of(&self, path: &str) -> usize {
        self.0
            .lock()
            .map(|m| m.get(path).copied().unwrap_or(0))
            .unwrap_or(0)
    }
    fn total(&self) -> usize {
        self.0.lock().map(|m| m.values().sum()).unwrap_or(0)
    }
}

async fn count(State(hits): State<Arc<Hits>>, req: Request, next: Next) -> Response {
    if let Ok(mut m) = hits.0.lock() {
        *m.entry(req.uri().path().to_string()).or_default() += 1;
    }
    next.run(req).await
}

/// The upstream: `/v1/echo`, `/v1/tokens?n=`, `GET /v1/items/{id}`, `/v1/slow` (answers
/// after 500 ms), `/v1/inject` (tries to speak the payment protocol), `/free`.
fn upstream(hits: Arc<Hits>) -> Router {
    Router::new()
        .route("/v1/echo", any(|b: axum::body::Bytes| async move { b }))
        .route(
            "/v1/tokens",
            any(|q: axum::extract::RawQuery| async move {
                let n = q.0.and_then(|q| q.strip_prefix("n=").map(str::to_string));
                let n = n.unwrap_or_else(|| "0".into());
                ([("x-units", n.clone())], format!("{n} tokens"))
            }),
        )
        .route("/v1/items/{id}", get(|| async { "item" }))
        .route(
            "/v1/slow",
            any(|| async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                "slow"
            }),
        )
        .route(
            "/v1/inject",
            any(|| async {
                (
                    [
                        ("payment-response", "forged"),
                        ("tally-checkpoint-request", "1"),
                    ],
                    "injected",
                )
            }),
        )
        .route("/free", any(|| async { "free" }))
        .layer(axum::middleware::from_fn_with_state(hits, count))
}

fn route(method: &str, path: &str, path_match: PathMatch, price: Price) -> RoutePrice {
    RoutePrice {
        method: method.into(),
        path: path.into(),
        path_match,
        mime_type: None,
        price,
    }
}

fn fixed(amount: u128) -> Price {
    Price::Fixed {
        amount: Amount(amount),
    }
}

/// The price list of these tests.
fn price_list(echo_price: u128) -> Vec<RoutePrice> {
    vec![
        route("*", "/v1/echo", PathMatch::Exact, fixed(echo_price)),
        route(
            "*",
            "/v1/tokens",
            PathMatch::Exact,
            Price::Metered(tally_http::MeteredPrice::header("x-units", 3, 300)),
        ),
        route("GET", "/v1/items", PathMatch::Prefix, fixed(7)),
        route("*", "/v1/slow", PathMatch::Exact, fixed(10)),
        route("*", "/v1/inject", PathMatch::Exact, fixed(10)),
    ]
}

/// anvil, the upstream and the gateway process, with its files in `dir`.
struct Live {
    env: ChainEnv,
    hits: Arc<Hits>,
    upstream: Server,
    gateway: GatewayProcess,
    file: GatewayFile,
    config: PathBuf,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Live {
    async fn start(tune: impl FnOnce(&mut GatewayFile)) -> Live {
        Live::start_on(ChainEnv::new().await, tune).await
    }

    async fn start_on(env: ChainEnv, tune: impl FnOnce(&mut GatewayFile)) -> Live {
        let hits = Arc::new(Hits::default());
        let upstream = spawn(upstream(hits.clone())).await;
        let dir = tmp();
        let key = SecretKey::generate(&mut rand::rngs::OsRng);
        ok(
            "provider key",
            tally_server::config::write_key_file(&dir.path().join("provider.key"), &key),
        );
        let port = free_port();
        let mut file = GatewayFile::new(
            &format!("127.0.0.1:{port}"),
            &upstream.url(),
            &env.rpc_url(),
            env.chain_terms(),
            price_list(10),
        );
        // The test chain opens channels at the contract's minimum delay.
        file.min_withdraw_delay = Some(tally_e2e::chain::WITHDRAW_DELAY);
        tune(&mut file);
        let config = dir.path().join("gateway.toml");
        ok("config", file.write(&config));
        let mut gateway = GatewayProcess::new(
            env!("CARGO_BIN_EXE_tally-e2e-gateway"),
            config.clone(),
            dir.path().join("gateway.log"),
            format!("http://127.0.0.1:{port}"),
        );
        gateway.start().await;
        Live {
            env,
            hits,
            upstream,
            gateway,
            file,
            config,
            _dir: dir,
            port,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Restarts the gateway process with `tune` applied to its config.
    async fn restart(&mut self, tune: impl FnOnce(&mut GatewayFile)) {
        self.gateway.crash();
        tune(&mut self.file);
        ok("config", self.file.write(&self.config));
        self.gateway.start().await;
    }

    /// A new channel and a client paying on it.
    async fn client(&mut self, deposit: u128) -> (TestChannel, Client, tempfile::TempDir) {
        let ch = self.env.open(deposit).await;
        let dir = tmp();
        let client = ok(
            "connect",
            Client::connect(client_config(&self.url(), dir.path(), &ch)).await,
        );
        (ch, client, dir)
    }

    /// One Prometheus sample from `/metrics`.
    async fn metric(&self, name: &str) -> u64 {
        let text = ok(
            "metrics",
            ok(
                "GET /metrics",
                reqwest::get(format!("{}/metrics", self.url())).await,
            )
            .text()
            .await,
        );
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }

    async fn terms_hash(&self) -> Hash {
        let url = format!("{}/.well-known/tally", self.url());
        let bytes = ok(
            "terms",
            ok("GET terms", reqwest::get(url).await).bytes().await,
        );
        tally_http::terms::terms_hash(&bytes)
    }
}

/// What an authorization acknowledges: the log as the client holds it.
struct At {
    seq: u64,
    root: Hash,
    cumulative: u128,
    terms_hash: Hash,
    salt: RequestSalt,
    /// The terms the gateway serves (for each payment's `accepted`).
    terms: tally_http::Terms,
}

impl At {
    async fn of(client: &Client, terms_hash: Hash, url: &str) -> At {
        let (terms, _) = tally_e2e::paid::served_terms(url).await;
        let (seq, root, cumulative) = client.mirror_head().await;
        let salt = client
            .request_salt()
            .await
            .unwrap_or_else(|| panic!("the client learned no request salt"));
        At {
            seq,
            root,
            cumulative,
            terms_hash,
            salt,
            terms,
        }
    }
}

/// A `PAYMENT-SIGNATURE` value for `method path?query` with `body`, signed by `key`.
fn payment(
    channel: ChannelId,
    key: &SecretKey,
    at: &At,
    (method, path, query, body): (&str, &str, &str, &[u8]),
    max_amount: u128,
) -> String {
    let auth = Authorization {
        version: tally_core::VERSION,
        channel_id: channel,
        // The test clients send one request at a time, so everything is on lane 0 and the
        // lane's next seq is the log's size.
        lane: 0,
        seq: at.seq,
        request_hash: request_hash(&at.salt, method, path, query, body),
        max_amount,
        ack_size: at.seq,
        ack_root: at.root,
        ack_cumulative: at.cumulative,
        terms_hash: at.terms_hash,
    };
    // anvil's chain id is the test gateway's too.
    let accepted = tally_e2e::paid::accepted(&at.terms, at.terms_hash, method, path);
    let payload = PaymentPayload::new(accepted, &auth, auth.sign(key));
    ok("encode", encode_header("PAYMENT-SIGNATURE", &payload))
}

/// One HTTP/1.1 exchange over a raw TCP connection, so paths reach the gateway byte for byte
/// (an HTTP client library would normalize them first). Returns status, head and body.
async fn raw_http(port: u16, request: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = ok(
        "connect",
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await,
    );
    ok("write", s.write_all(request).await);
    let mut out = Vec::new();
    ok(
        "read",
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string())),
    );
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&out)));
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head}"));
    (status, head, out[split + 4..].to_vec())
}

fn request(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut bytes = r.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// The reason code of an error body.
fn reason_code(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)));
    v["error"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Chunked header value of a response head, lower-cased name.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_requests_are_refused_before_they_cost_anything() {
    let mut live = Live::start(|_| {}).await;
    let (ch, client, _cdir) = live.client(1_000_000).await;
    let first = ok(
        "first call",
        client.post("/v1/echo").body("hello").send().await,
    );
    assert_eq!(first.status, 200);
    let terms_hash = live.terms_hash().await;
    let hits = live.hits.total();
    let records = live.metric("tally_log_records").await;

    // 1. A zero maximum pays for nothing: refused on metered and fixed routes alike.
    let at = At::of(&client, terms_hash, &live.url()).await;
    for (target, path, query) in [
        ("/v1/tokens?n=50", "/v1/tokens", "n=50"),
        ("/v1/echo", "/v1/echo", ""),
    ] {
        let pay = payment(ch.id, &ch.session, &at, ("POST", path, query, b"x"), 0);
        let (status, _, body) = raw_http(
            live.port,
            &request("POST", target, &[(PAYMENT_SIGNATURE, &pay)], b"x"),
        )
        .await;
        assert_eq!(
            (status, reason_code(&body).as_str()),
            (402, "amount_too_low"),
            "{target}"
        );
    }
    // One unit below the metered minimum is refused too.
    let pay = payment(ch.id, &ch.session, &at, ("POST", "/v1/tokens", "", b""), 2);
    let (status, _, body) = raw_http(
        live.port,
        &request("POST", "/v1/tokens", &[(PAYMENT_SIGNATURE, &pay)], b""),
    )
    .await;
    assert_eq!(
        (status, reason_code(&body).as_str()),
        (402, "amount_too_low")
    );

    // 1b. The body is read only after the payment header checks out: a forged header with
    //     a large declared body is answered at once, without waiting for a byte of it, and a
    //     declared body over the limit is refused unread.
    let forged = payment(
        ChannelId(rand::random()),
        &SecretKey::generate(&mut rand::rngs::OsRng),
        &at,
        ("POST", "/v1/echo", "", b""),
        10,
    );
    for (length, code) in [
        ("1000000", "unknown_channel"),
        ("1048577", "payload_too_large"),
    ] {
        let head = format!(
            "POST /v1/echo HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n{PAYMENT_SIGNATURE}: {forged}\r\ncontent-length: {length}\r\n\r\n"
        );
        let started = Instant::now();
        let mut s = ok(
            "connect",
            tokio::net::TcpStream::connect(("127.0.0.1", live.port)).await,
        );
        ok("write", s.write_all(head.as_bytes()).await);
        // The gateway answers and closes without the body.
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
        let text = String::from_utf8_lossy(&answer).to_string();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(text.contains(code), "{length}: {text}");
    }

    // 2. Spellings of a priced path and HEAD of a priced GET are priced, not forwarded free.
    for (method, target) in [
        ("POST", "//v1/echo"),
        ("POST", "/v1/./echo"),
        ("POST", "/v1/x/../echo"),
        ("POST", "/v1/%65cho"),
        ("POST", "/v1//echo"),
        ("GET", "//v1/items/1"),
        ("HEAD", "/v1/items/1"),
    ] {
        let (status, head, body) = raw_http(live.port, &request(method, target, &[], b"")).await;
        assert_eq!(status, 402, "{method} {target}: {head}");
        if method != "HEAD" {
            assert_eq!(reason_code(&body), "payment_required", "{method} {target}");
        }
    }
    let (status, _, body) = raw_http(live.port, &request("GET", "/v1/%zz", &[], b"")).await;
    assert_eq!((status, reason_code(&body).as_str()), (400, "malformed"));
    assert_eq!(
        live.hits.total(),
        hits,
        "nothing unpaid reached the upstream"
    );

    // 3. An exact x402 version and lower-case hex only.
    let pay = payment(ch.id, &ch.session, &at, ("POST", "/v1/echo", "", b"v"), 10);
    let mut payload: serde_json::Value = ok(
        "payload",
        tally_http::headers::decode_header("PAYMENT-SIGNATURE", pay.as_bytes()),
    );
    let mut v1 = payload.clone();
    v1["x402Version"] = 1.into();
    let upper = payload["payload"]["authorization"]
        .as_str()
        .unwrap_or_default()
        .to_uppercase();
    payload["payload"]["authorization"] = upper.into();
    for bad in [v1, payload] {
        let text = ok("encode", encode_header("PAYMENT-SIGNATURE", &bad));
        let (status, _, body) = raw_http(
            live.port,
            &request("POST", "/v1/echo", &[(PAYMENT_SIGNATURE, &text)], b"v"),
        )
        .await;
        assert_eq!((status, reason_code(&body).as_str()), (400, "malformed"));
    }
    assert_eq!(live.metric("tally_log_records").await, records);

    // 4. Random channel ids and forged signatures cost no memory and no chain reads.
    let reads = live.metric("tally_chain_reads_total").await;
    let http = reqwest::Client::new();
    for _ in 0..2000 {
        let stranger = SecretKey::generate(&mut rand::rngs::OsRng);
        let id = ChannelId(rand::random());
        let pay = payment(id, &stranger, &at, ("POST", "/v1/echo", "", b"s"), 10);
        let r = ok(
            "stranger",
            http.post(format!("{}/v1/echo", live.url()))
                .header(PAYMENT_SIGNATURE, pay)
                .body("s")
                .send()
                .await,
        );
        assert_eq!(r.status(), 402);
    }
    // Even on a real channel, a signature by another key is refused the same way.
    let forged = payment(
        ch.id,
        &SecretKey::generate(&mut rand::rngs::OsRng),
        &at,
        ("POST", "/v1/echo", "", b"s"),
        10,
    );
    let (status, _, body) = raw_http(
        live.port,
        &request("POST", "/v1/echo", &[(PAYMENT_SIGNATURE, &forged)], b"s"),
    )
    .await;
    assert_eq!(
        (status, reason_code(&body).as_str()),
        (402, "invalid_signature")
    );
    assert_eq!(live.metric("tally_channels_in_memory").await, 1);
    assert_eq!(live.metric("tally_chain_reads_total").await, reads);
    // Session bindings for random ids: one chain read each at most, and only a bounded
    // burst of them.
    for _ in 0..100 {
        let id = ChannelId(rand::random());
        let signer = alloy::signers::local::PrivateKeySigner::random();
        let session = SecretKey::generate(&mut rand::rngs::OsRng).public();
        let terms = live.env.chain_terms();
        let contract = ok("contract", terms.contract.parse());
        let digest = tally_chain::eip712::session_digest(terms.chain_id, contract, &id, &session);
        let sig = ok("sign", tally_chain::eip712::sign_digest(&signer, &digest));
        let binding = tally_http::SessionBinding {
            session_key: session,
            eip712: tally_http::payment::WireEip712Sig::from_parts(sig.parts()),
        };
        let r = ok(
            "bind",
            http.post(format!(
                "{}/tally/v1/channels/{}/session",
                live.url(),
                id.to_hex()
            ))
            .json(&binding)
            .send()
            .await,
        );
        assert!(r.status() == 402 || r.status() == 503, "{}", r.status());
    }
    let cold = live.metric("tally_chain_reads_total").await - reads;
    assert!(cold <= 40, "{cold} chain reads for 100 random bindings");
    assert_eq!(live.metric("tally_channels_in_memory").await, 1);

    // 5. An upstream cannot speak the payment protocol.
    let at = At::of(&client, terms_hash, &live.url()).await;
    let pay = payment(ch.id, &ch.session, &at, ("POST", "/v1/inject", "", b""), 10);
    let (status, head, _) = raw_http(
        live.port,
        &request("POST", "/v1/inject", &[(PAYMENT_SIGNATURE, &pay)], b""),
    )
    .await;
    assert_eq!(status, 200, "{head}");
    let receipt = header(&head, PAYMENT_RESPONSE).unwrap_or_default();
    assert_ne!(receipt, "forged");
    let decoded: Result<tally_http::PaymentResponse, _> =
        tally_http::headers::decode_header("PAYMENT-RESPONSE", receipt.as_bytes());
    assert!(decoded.is_ok(), "{receipt}");
    assert_eq!(header(&head, "tally-checkpoint-request"), None, "{head}");

    // 6. A client that hangs up after sending still gets (and owes) the upstream's work:
    //    the record is written, and the retry of the same seq is answered from it.
    let (seq, root, cumulative) = {
        // The raw call above moved the log past the client's mirror; read the state back.
        let r = ok(
            "resync",
            client.post("/v1/echo").body("resync").send().await,
        );
        assert_eq!(r.status, 200);
        client.mirror_head().await
    };
    let at = At {
        seq,
        root,
        cumulative,
        terms_hash,
        salt: at.salt,
        terms: at.terms,
    };
    let pay = payment(ch.id, &ch.session, &at, ("POST", "/v1/slow", "", b"w"), 10);
    let req = request("POST", "/v1/slow", &[(PAYMENT_SIGNATURE, &pay)], b"w");
    {
        let mut s = ok(
            "connect",
            tokio::net::TcpStream::connect(("127.0.0.1", live.port)).await,
        );
        ok("write", s.write_all(&req).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    } // hung up while the upstream works
    let until = Instant::now() + Duration::from_secs(10);
    // Records so far: the first call, the injected one, the resync and now the slow one.
    while live.metric("tally_log_records").await < records + 3 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(live.hits.of("/v1/slow"), 1);
    assert_eq!(live.metric("tally_log_records").await, records + 3);
    let (status, head, body) = raw_http(live.port, &req).await;
    assert_eq!((status, body.as_slice()), (200, &b"slow"[..]), "{head}");
    assert!(header(&head, PAYMENT_RESPONSE).is_some());
    assert_eq!(
        live.hits.of("/v1/slow"),
        1,
        "the retry was not forwarded again"
    );

    // 7. Disputes too need an acceptable channel: once the payer starts withdrawing, a
    //    dispute (max_amount 0) and a paid call are both refused cleanly.
    let exchange = first.exchange.clone();
    ok("checkpoint", client.checkpoint().await);
    ok("withdraw", live.env.payer.initiate_withdraw(&ch.id).await);
    tokio::time::sleep(Duration::from_millis(2200)).await; // the funding cache's lifetime
    match client.dispute(0, exchange).await {
        Err(ClientError::Refused {
            reason: Reason::ChannelClosed,
            ..
        }) => {}
        other => panic!("dispute on a withdrawing channel: {other:?}"),
    }
    match client.post("/v1/echo").body("late").send().await {
        Err(ClientError::Refused {
            reason: Reason::ChannelClosed,
            ..
        }) => {}
        other => panic!("paid call on a withdrawing channel: {other:?}"),
    }
    live.upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmatched_requests_can_be_denied() {
    let live = Live::start(|f| f.unmatched = Unmatched::Deny).await;
    let (status, _, body) = raw_http(live.port, &request("GET", "/free", &[], b"")).await;
    assert_eq!((status, reason_code(&body).as_str()), (404, "not_found"));
    assert_eq!(live.hits.total(), 0);
    // Priced routes still answer with their price.
    let (status, _, _) = raw_http(live.port, &request("GET", "/v1/items/1", &[], b"")).await;
    assert_eq!(status, 402);
    live.upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disputes_are_judged_under_the_terms_the_record_signed() {
    let mut live = Live::start(|_| {}).await;
    let (_ch, client, _cdir) = live.client(1_000_000).await;
    let charged = ok("call", client.post("/v1/echo").body("at 10").send().await);
    assert_eq!(charged.receipt.map(|r| r.outcome.amount), Some(10));
    ok("checkpoint", client.checkpoint().await);
    // The provider lowers the price and restarts. Under today's terms record 0 charged
    // over the route's maximum; under the terms it signed it charged exactly the price.
    live.restart(|f| f.routes = price_list(4)).await;
    for i in 0..5 {
        let r = client
            .post("/v1/echo")
            .body(format!("at 4, {i}"))
            .send()
            .await;
        assert_eq!(ok("call", r).receipt.map(|r| r.outcome.amount), Some(4));
    }
    match client.dispute(0, charged.exchange).await {
        Err(ClientError::Refused {
            reason: Reason::DisputeRefused { why },
            ..
        }) => assert!(why.contains("no refund rule"), "{why}"),
        other => panic!("a correctly charged record was refundable: {other:?}"),
    }
    live.upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_and_logs_never_carry_the_rpc_url() {
    // The gateway reads the chain through a forwarder whose URL holds an "API key"; the
    // forwarder then goes away, so funding reads fail with errors that quote the URL.
    let env = ChainEnv::new().await;
    let forwarder = Forwarder::start(&env.rpc_url()).await;
    let secret = "sekrit-api-key-0123";
    let mut live = Live::start_on(env, |f| {
        f.rpc_url = format!("http://127.0.0.1:{}/v3/{secret}", forwarder.port);
    })
    .await;
    let ch = live.env.open(1_000).await;
    forwarder.stop().await;
    let dir = tmp();
    let r = Client::connect(client_config(&live.url(), dir.path(), &ch)).await;
    match r {
        Err(ClientError::Refused {
            reason: Reason::ChainUnavailable,
            message,
        }) => assert!(!message.contains(secret), "{message}"),
        other => panic!("expected chain_unavailable, got {:?}", other.err()),
    }
    let raw = ok(
        "bind",
        reqwest::Client::new()
            .post(format!(
                "{}/tally/v1/channels/{}/session",
                live.url(),
                ch.id.to_hex()
            ))
            .body("{}")
            .send()
            .await,
    );
    let body = ok("body", raw.text().await);
    assert!(!body.contains(secret), "{body}");
    let log = live.gateway.output();
    assert!(!log.contains(secret), "the gateway logged the key:\n{log}");
    live.upstream.stop().await;
}

/// A TCP forwarder to a JSON-RPC node that strips the request path (as a node behind an
/// API-key URL would see it), and can be stopped.
struct Forwarder {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Forwarder {
    async fn start(node: &str) -> Forwarder {
        let node = node.to_string();
        let listener = ok(
            "bind forwarder",
            tokio::net::TcpListener::bind("127.0.0.1:0").await,
        );
        let port = ok("addr", listener.local_addr()).port();
        let app = Router::new().fallback(any(move |body: axum::body::Bytes| {
            let node = node.clone();
            async move {
                let r = reqwest::Client::new()
                    .post(node)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                match r {
                    Ok(r) => r.bytes().await.unwrap_or_default().to_vec(),
                    Err(_) => Vec::new(),
                }
            }
        }));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Forwarder { port, task }
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A small tmpfs, unmounted when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size_mib: u32) -> Tmpfs {
        ok("mkdir", std::fs::create_dir_all(path));
        let status = ok(
            "mount",
            std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
                .arg(path)
                .status(),
        );
        assert!(status.success(), "mounting a tmpfs (the test runs as root)");
        Tmpfs {
            path: path.to_path_buf(),
        }
    }

    /// Fills the file system; returns the filler's path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let filler = self.path.join("filler");
        let mut f = ok("filler", std::fs::File::create(&filler));
        let chunk = vec![0u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Pays on a filling disk until three calls are refused with `store_unavailable` (at most 200
/// calls); returns how many were refused and how many of those reached the upstream anyway.
async fn pay_until_refused(live: &Live, client: &Client) -> (u32, u32) {
    let (mut refused, mut forwarded) = (0, 0);
    for i in 0..200 {
        let before = live.hits.of("/v1/echo");
        match client
            .post("/v1/echo")
            .body(format!("full {i}"))
            .send()
            .await
        {
            Err(ClientError::Refused {
                reason: Reason::StoreUnavailable,
                ..
            }) => {
                refused += 1;
                if live.hits.of("/v1/echo") != before {
                    forwarded += 1;
                }
                if refused >= 3 {
                    break;
                }
            }
            Ok(r) => assert_eq!(r.status, 200),
            Err(_) => {}
        }
    }
    (refused, forwarded)
}

/// Waits (at most 20 s) until `/healthz` answers 200: the log was reopened.
async fn wait_until_healthy(url: &str) {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let h = ok("healthz", reqwest::get(format!("{url}/healthz")).await);
        if h.status() == 200 {
            return;
        }
        assert!(Instant::now() < until, "the store did not reopen");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_paid_requests_then_recovers_without_a_restart() {
    let mnt = tmp();
    let disk = Tmpfs::mount(mnt.path(), 48);
    let data = disk.path.join("data");
    let mut live = Live::start(|f| f.data_dir = data.clone()).await;
    let (_ch, client, _cdir) = live.client(1_000_000_000).await;
    for i in 0..5 {
        let r = ok(
            "call",
            client.post("/v1/echo").body(format!("{i}")).send().await,
        );
        assert_eq!(r.status, 200);
    }
    let filler = disk.fill();
    // Calls fail once a commit hits the full disk; after that the log is known to be
    // poisoned and paid calls are refused before the upstream is called.
    let (refused_fast, forwarded_while_poisoned) = pay_until_refused(&live, &client).await;
    assert!(
        refused_fast >= 3,
        "paid calls never failed fast on a full disk"
    );
    assert_eq!(forwarded_while_poisoned, 0);
    let health = ok(
        "healthz",
        reqwest::get(format!("{}/healthz", live.url())).await,
    );
    assert_eq!(health.status(), 503);
    // Space comes back: the store reopens by itself, and paying resumes on the same log.
    ok("remove filler", std::fs::remove_file(&filler));
    wait_until_healthy(&live.url()).await;
    let mut resumed = false;
    for i in 0..5 {
        if let Ok(r) = client
            .post("/v1/echo")
            .body(format!("after {i}"))
            .send()
            .await
        {
            assert_eq!(r.status, 200);
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(resumed, "paid calls did not resume");
    assert_eq!(live.gateway.starts, 1, "no restart was needed");
    live.restart(|_| {}).await; // the reopened log also opens cleanly from scratch
    let r = ok(
        "after restart",
        client.post("/v1/echo").body("again").send().await,
    );
    assert_eq!(r.status, 200);
    let Live {
        upstream, gateway, ..
    } = live;
    drop(gateway);
    upstream.stop().await;
    drop(disk);
}

/// Promise mode on a disk that fills up: receipts promised for records whose group commit
/// then fails are not lost. The failed commit poisons the log and takes the channel out of
/// the run's promising set; once space is back and the log is reopened (a new generation, no
/// restart), the channel answers `restore_required` until the client's own restore, which
/// uploads what it holds, and then the provider's log is the client's mirror exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_promises_leads_to_a_restore_not_a_loss() {
    let mnt = tmp();
    let disk = Tmpfs::mount(mnt.path(), 48);
    let data = disk.path.join("data");
    let mut live = Live::start(|f| {
        f.data_dir = data.clone();
        f.durability = Some(tally_server::durability::DurabilityConfig::Mode(
            "promise".into(),
        ));
    })
    .await;
    let (ch, client, _cdir) = live.client(1_000_000_000).await;
    for i in 0..5 {
        let r = ok(
            "call",
            client.post("/v1/echo").body(format!("{i}")).send().await,
        );
        assert_eq!(r.status, 200);
    }
    let filler = disk.fill();
    let (refused, _) = pay_until_refused(&live, &client).await;
    assert!(refused >= 3, "paid calls never failed fast on a full disk");
    ok("remove filler", std::fs::remove_file(&filler));
    wait_until_healthy(&live.url()).await;
    let state_url = format!("{}/tally/v1/channels/{}", live.url(), ch.id.to_hex());
    let state: tally_http::api::ChannelState =
        ok("state", read_get(&ch, &state_url).await.json().await);
    assert!(
        state.restore_required,
        "a channel that took promises is open after its log was reopened"
    );
    let r = ok(
        "after the reopen",
        client.post("/v1/echo").body("after").send().await,
    );
    assert_eq!(r.status, 200);
    ok("flush", client.flush().await);
    let state: tally_http::api::ChannelState =
        ok("state", read_get(&ch, &state_url).await.json().await);
    let (size, root, cumulative) = client.mirror_head().await;
    assert!(!state.restore_required);
    assert_eq!(
        (state.size, state.root, state.cumulative.0),
        (size, root, cumulative),
        "the provider's log is not the client's mirror after the restore"
    );
    assert_eq!(live.gateway.starts, 1, "no restart was needed");
    let Live {
        upstream, gateway, ..
    } = live;
    drop(gateway);
    upstream.stop().await;
    drop(disk);
}
