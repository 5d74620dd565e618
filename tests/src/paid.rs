//! Hand-made paid requests, bypassing the client's checks, to test what the gateway does
//! with exactly the bytes a test chooses; and a proxy that delays chosen answers, to test
//! what the client does when receipts arrive late or not at all.

use std::sync::Arc;
use std::time::Duration;

use tally_core::encoding::Canonical;
use tally_core::request::request_hash;
use tally_core::{Authorization, SecretKey};
use tally_http::headers::{encode_header, PAYMENT_SIGNATURE};
use tally_http::payment::Requirement;
use tally_http::{ErrorBody, PaymentPayload, Reason, Terms};

use crate::{spawn, Server, TestChannel, ECHO_PRICE};

/// A raw paid POST of `body` to `url` + `path` under `auth` signed by `key`: the status, the
/// headers and the body of the answer.
pub async fn raw(
    url: &str,
    path: &str,
    body: &[u8],
    auth: &Authorization,
    key: &SecretKey,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    raw_signed(url, path, body, auth, &auth.sign(key)).await
}

/// As [`raw`] with the signature given (a retry of exactly what a client sent).
pub async fn raw_signed(
    url: &str,
    path: &str,
    body: &[u8],
    auth: &Authorization,
    sig: &tally_core::Signature,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let accepted = accepted_at(url, "POST", path).await;
    let payload = PaymentPayload::new(accepted, auth, *sig);
    let header = encode_header("PAYMENT-SIGNATURE", &payload).unwrap_or_default();
    let resp = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header(PAYMENT_SIGNATURE, header)
        .body(body.to_vec())
        .send()
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
    (status, headers, bytes)
}

/// The terms the gateway at `url` serves, and their hash.
pub async fn served_terms(url: &str) -> (Terms, tally_core::Hash) {
    let resp = reqwest::get(format!("{url}{}", tally_http::headers::WELL_KNOWN_PATH))
        .await
        .unwrap_or_else(|e| panic!("GET terms: {e}"));
    let bytes = resp
        .bytes()
        .await
        .unwrap_or_else(|e| panic!("terms body: {e}"));
    let terms = Terms::parse(&bytes).unwrap_or_else(|e| panic!("terms: {e}"));
    (terms, tally_http::terms::terms_hash(&bytes))
}

/// The x402 requirement a payment for `method` `path` (query ignored) pays under, derived
/// from `terms` as the client derives it (spec/HTTP.md §3.2).
pub fn accepted(terms: &Terms, hash: tally_core::Hash, method: &str, path: &str) -> Requirement {
    let path = path.split('?').next().unwrap_or(path);
    let price = terms.price_for(method, path);
    Requirement::tally(&terms.chain, terms.provider_key, hash, price)
}

/// [`accepted`] under the terms the gateway at `url` serves now.
pub async fn accepted_at(url: &str, method: &str, path: &str) -> Requirement {
    let (terms, hash) = served_terms(url).await;
    accepted(&terms, hash, method, path)
}

/// The reason of a refusal's body.
pub fn reason(body: &[u8]) -> Reason {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.error.reason,
        Err(e) => panic!("not an error body ({e}): {}", String::from_utf8_lossy(body)),
    }
}

/// An authorization on lane 0 for a POST of `body` to `path`, acknowledging the gateway's
/// durable head, at seq = the log's size (right when lane 0 is the only lane used).
pub async fn next_auth(
    gw: &tally_server::Gateway,
    ch: &TestChannel,
    path: &str,
    body: &[u8],
) -> Authorization {
    let head = gw.store().unwrap().head(&ch.id);
    let (size, root) = head.map_or((0, tally_core::hash::blake3_of(&[])), |h| (h.size, h.root));
    let cumulative = if size == 0 {
        0
    } else {
        let bytes = gw
            .store()
            .unwrap()
            .record(&ch.id, size - 1)
            .unwrap_or_default();
        tally_core::Record::from_bytes(&bytes).map_or(0, |r| r.outcome.cumulative)
    };
    Authorization {
        version: tally_core::VERSION,
        channel_id: ch.id,
        lane: 0,
        seq: size,
        request_hash: request_hash(
            &gw.request_salt(&ch.id)
                .await
                .expect("bound channel has a salt"),
            "POST",
            path,
            "",
            body,
        ),
        max_amount: ECHO_PRICE,
        ack_size: size,
        ack_root: root,
        ack_cumulative: cumulative,
        terms_hash: gw.terms_hash(),
    }
}

/// How long the delaying proxy holds the gateway's answer to a request, by its body.
pub type Hold = Arc<dyn Fn(&[u8]) -> Duration + Send + Sync>;

/// Forwards `req` to `gateway` as it came (less `Host`) and returns the request's body and
/// the answer's status, headers and body: the pass-through both test proxies build on.
pub async fn forward(
    gateway: &str,
    req: http::Request<axum::body::Body>,
) -> (Vec<u8>, http::StatusCode, http::HeaderMap, Vec<u8>) {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default()
        .to_vec();
    let url = format!(
        "{gateway}{}",
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut headers = parts.headers.clone();
    headers.remove(http::header::HOST);
    let resp = reqwest::Client::new()
        .request(parts.method.clone(), url)
        .headers(headers)
        .body(body.clone())
        .send()
        .await
        .unwrap_or_else(|e| panic!("proxy: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default().to_vec();
    (body, status, headers, bytes)
}

/// What a rewriting proxy does to an answer's body.
pub type Rewrite = Arc<dyn Fn(Vec<u8>) -> Vec<u8> + Send + Sync>;

/// A proxy in front of `gateway` that forwards every request at once and holds the gateway's
/// answer for `hold(request body)` before passing it on unchanged: the request is recorded
/// when the gateway answers, and its receipt reaches the client late (or, past the client's
/// timeout, never).
pub async fn delaying_proxy(gateway: String, hold: Hold) -> Server {
    proxy(gateway, hold, Arc::new(|body| body)).await
}

/// A proxy in front of `gateway` that passes every answer on at once, its body rewritten:
/// a gateway whose bytes are not what it signed.
pub async fn rewriting_proxy(gateway: String, rewrite: Rewrite) -> Server {
    proxy(gateway, Arc::new(|_| Duration::ZERO), rewrite).await
}

/// A proxy in front of `gateway` that passes on the first `keep` bytes of the first
/// event-stream answer, then breaks the connection (a stream cut by the network); every
/// other answer passes whole.
pub async fn cutting_proxy(gateway: String, keep: usize) -> Server {
    use axum::body::Body;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let app = axum::Router::new().fallback(move |req: http::Request<Body>| {
        let (gateway, done) = (gateway.clone(), done.clone());
        async move {
            let (_, status, mut headers, bytes) = forward(&gateway, req).await;
            headers.remove(http::header::CONTENT_LENGTH);
            headers.remove(http::header::TRANSFER_ENCODING);
            let sse = headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
            let body = if sse && !done.swap(true, std::sync::atomic::Ordering::AcqRel) {
                let (tx, body) = tally_server::channel_body::channel_body::<std::io::Error>(2);
                let kept = bytes::Bytes::from(bytes[..keep.min(bytes.len())].to_vec());
                tokio::spawn(async move {
                    let _ = tx.send(Ok(http_body::Frame::data(kept))).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let _ = tx.send(Err(std::io::Error::other("cut"))).await;
                });
                Body::new(body)
            } else {
                Body::from(bytes)
            };
            let mut out = http::Response::new(body);
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            out
        }
    });
    spawn(app).await
}

async fn proxy(gateway: String, hold: Hold, rewrite: Rewrite) -> Server {
    use axum::body::Body;
    let app = axum::Router::new().fallback(move |req: http::Request<Body>| {
        let (gateway, hold, rewrite) = (gateway.clone(), hold.clone(), rewrite.clone());
        async move {
            let (body, status, mut headers, bytes) = forward(&gateway, req).await;
            tokio::time::sleep(hold(&body)).await;
            headers.remove(http::header::CONTENT_LENGTH);
            headers.remove(http::header::TRANSFER_ENCODING);
            let mut out = http::Response::new(Body::from(rewrite(bytes)));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            out
        }
    });
    spawn(app).await
}
