//! x402 v2 conformance (spec/HTTP.md §3, issue 13): every `PAYMENT-REQUIRED`,
//! `PAYMENT-SIGNATURE` and `PAYMENT-RESPONSE` header of a short live session — the gateway's
//! and the Rust client's, plus payments shaped like a stock x402 client's — is validated by
//! the official SDK (`@x402/core`, pinned in tools/package-lock.json) through
//! tools/x402-check.mjs. Node and the package are required: without them this test fails.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use base64::Engine;
use tally_core::SecretKey;
use tally_e2e::paid::{accepted_at, forward, next_auth, reason};
use tally_e2e::*;
use tally_http::headers::{
    decode_header, encode_header, PAYMENT_REQUIRED, PAYMENT_RESPONSE, PAYMENT_SIGNATURE,
};
use tally_http::{PaymentPayload, PaymentRequired, PaymentResponse, Reason};

/// Captured `(header name, value)` pairs, in the order they crossed the wire.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

const X402: [&str; 3] = [PAYMENT_REQUIRED, PAYMENT_SIGNATURE, PAYMENT_RESPONSE];

fn note(seen: &Seen, headers: &http::HeaderMap) {
    for name in X402 {
        if let Some(v) = headers.get(name) {
            let v = v.to_str().unwrap_or_else(|e| panic!("{name}: {e}"));
            seen.lock()
                .unwrap()
                .push((name.to_uppercase(), v.to_string()));
        }
    }
}

/// A pass-through proxy in front of `gateway` that records every x402 header both ways.
async fn recording_proxy(gateway: String, seen: Seen) -> Server {
    use axum::body::Body;
    let app = axum::Router::new().fallback(move |req: http::Request<Body>| {
        let (gateway, seen) = (gateway.clone(), seen.clone());
        async move {
            note(&seen, req.headers());
            let (_, status, mut headers, bytes) = forward(&gateway, req).await;
            note(&seen, &headers);
            headers.remove(http::header::CONTENT_LENGTH);
            headers.remove(http::header::TRANSFER_ENCODING);
            let mut out = http::Response::new(Body::from(bytes));
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            out
        }
    });
    spawn(app).await
}

/// Runs tools/x402-check.mjs on `values`; panics with its report unless all pass.
fn official_sdk_accepts(values: &[(String, String)]) -> String {
    tally_chain::anvil::ensure_tools().unwrap_or_else(|e| panic!("installing tools: {e}"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tools/x402-check.mjs");
    let mut child = Command::new("node")
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("node is required for the x402 conformance test: {e}"));
    let mut input = String::new();
    for (name, value) in values {
        input.push_str(&format!("{name} {value}\n"));
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "@x402/core refused:\n{report}");
    report
}

/// A paid POST of `body` to the gateway at `url` with this `PAYMENT-SIGNATURE` value.
async fn post(url: &str, path: &str, body: &str, payment: &str) -> (u16, http::HeaderMap, Vec<u8>) {
    let r = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header(PAYMENT_SIGNATURE, payment)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_x402_header_of_a_paid_session_passes_the_official_sdk() {
    // The echo route declares its responses' type; a 402 repeats it as resource.mimeType.
    // 5xx answers are charged, so a dispute can credit one (a negative `amount`).
    let stack = Stack::start(|s| {
        s.routes[0].mime_type = Some("text/plain".into());
        s.charge_server_errors = true;
    })
    .await;
    let seen: Seen = Arc::default();
    let proxy = recording_proxy(stack.server.url(), seen.clone()).await;

    // 1. An unpaid call: a 402 with PAYMENT-REQUIRED.
    let r = reqwest::get(format!("{}/v1/echo", proxy.url()))
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    let required: PaymentRequired =
        decode_header("PAYMENT-REQUIRED", r.headers()[PAYMENT_REQUIRED].as_bytes()).unwrap();
    assert_eq!(required.error, "payment_required");
    assert_eq!(required.resource.mime_type.as_deref(), Some("text/plain"));
    let r = reqwest::get(format!("{}/v1/tokens", proxy.url()))
        .await
        .unwrap();
    let metered: PaymentRequired =
        decode_header("PAYMENT-REQUIRED", r.headers()[PAYMENT_REQUIRED].as_bytes()).unwrap();
    assert_eq!(metered.resource.mime_type, None);
    assert_eq!(metered.accepts[0].amount.0, 300);

    // 2. Paid calls by the Rust client until the deposit (45) refuses the fifth.
    let ch = open_channel(&stack.funding, 45);
    let dir = tmp();
    let client = connect(&proxy.url(), dir.path(), &ch).await;
    for i in 0..4 {
        let r = client
            .post("/v1/echo")
            .body(format!("call {i}"))
            .send()
            .await;
        assert_eq!(r.map(|r| r.status).unwrap(), 200);
    }
    assert!(client
        .post("/v1/echo")
        .body("one too many")
        .send()
        .await
        .is_err());

    let captured = seen.lock().unwrap().clone();
    let count = |name: &str| captured.iter().filter(|(n, _)| n == name).count();
    assert!(count("PAYMENT-SIGNATURE") >= 5, "{captured:?}");
    assert_eq!(count("PAYMENT-RESPONSE"), 4, "{captured:?}");
    assert!(count("PAYMENT-REQUIRED") >= 2, "{captured:?}");
    // The client pays under exactly the requirement the 402 advertised.
    let (_, first) = captured
        .iter()
        .find(|(n, _)| n == "PAYMENT-SIGNATURE")
        .unwrap();
    let payment: PaymentPayload = decode_header("PAYMENT-SIGNATURE", first.as_bytes()).unwrap();
    assert_eq!(payment.accepted, required.accepts[0]);
    // Each receipt names the channel's payer and the amount the record charged.
    for (_, v) in captured.iter().filter(|(n, _)| n == "PAYMENT-RESPONSE") {
        let pr: PaymentResponse = decode_header("PAYMENT-RESPONSE", v.as_bytes()).unwrap();
        let receipt = pr.extra.receipt.receipt().unwrap();
        assert_eq!(
            pr.payer,
            alloy::primitives::Address::repeat_byte(0xaa).to_string()
        );
        assert_eq!(pr.amount.0, ECHO_PRICE as i128);
        assert_eq!(receipt.outcome.amount, pr.amount.0);
        assert_eq!((pr.success, pr.transaction.as_str()), (true, ""));
    }
    // The refusal's PAYMENT-REQUIRED speaks x402's vocabulary.
    let (_, last) = captured
        .iter()
        .rev()
        .find(|(n, _)| n == "PAYMENT-REQUIRED")
        .unwrap();
    let refusal: PaymentRequired = decode_header("PAYMENT-REQUIRED", last.as_bytes()).unwrap();
    assert_eq!(refusal.error, "insufficient_funds");

    // 3. A dispute's credit: its PAYMENT-RESPONSE has a negative amount.
    dispute_a_charged_5xx(&stack, &proxy).await;
    let credits: Vec<i128> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| n == "PAYMENT-RESPONSE")
        .map(|(_, v)| {
            let pr: PaymentResponse = decode_header("PAYMENT-RESPONSE", v.as_bytes()).unwrap();
            pr.amount.0
        })
        .filter(|a| *a < 0)
        .collect();
    assert_eq!(credits, [-(ECHO_PRICE as i128)]);

    // 4. Payments shaped like a stock x402 client's, straight to the gateway.
    let mut all = seen.lock().unwrap().clone();
    all.extend(stock_payments(&stack).await);
    let report = official_sdk_accepts(&all);
    println!("{report}");
    proxy.stop().await;
    stack.stop().await;
}

/// Pays through the proxy on a fresh channel for a charged 5xx and disputes it as the e2e
/// dispute test does, so the proxy sees the credit's `PAYMENT-RESPONSE`.
async fn dispute_a_charged_5xx(stack: &Stack, proxy: &Server) {
    let ch = open_channel(&stack.funding, 1_000_000);
    let dir = tmp();
    let client = connect(&proxy.url(), dir.path(), &ch).await;
    let fine = client.post("/v1/echo").body("fine").send().await.unwrap();
    let failed = client.post("/v1/fail").send().await.unwrap();
    assert_eq!(failed.status, 500);
    client.checkpoint().await.unwrap();
    // A correctly charged record has no refund; the 5xx one is credited, also below the
    // checkpoint (nothing is claimed onchain, spec/HTTP.md §7).
    assert!(client.dispute(0, fine.exchange).await.is_err());
    let granted = client.dispute(1, failed.exchange).await.unwrap();
    assert_eq!(granted.amount.0, -(ECHO_PRICE as i128));
    assert!(client.post("/v1/echo").body("later").send().await.is_ok());
}

/// A payment with `resource` and `extensions` and differently cased addresses is served; one
/// whose `accepted` differs from the route's requirement is refused with
/// `requirements_mismatch` and the right requirement. Returns the headers exchanged.
async fn stock_payments(stack: &Stack) -> Vec<(String, String)> {
    let url = stack.server.url();
    let ch = open_channel(&stack.funding, 1_000);
    let dir = tmp();
    let _bound = connect(&url, dir.path(), &ch).await;
    let mut out = Vec::new();
    let sign = |auth: &tally_core::Authorization, key: &SecretKey| auth.sign(key);
    let accepted = accepted_at(&url, "POST", "/v1/echo").await;

    let auth = next_auth(&stack.gateway, &ch, "/v1/echo", b"stock").await;
    let mut p = PaymentPayload::new(accepted.clone(), &auth, sign(&auth, &ch.session));
    p.accepted.asset = p.accepted.asset.to_uppercase().replacen("0X", "0x", 1);
    let resource = serde_json::json!({"url": format!("{url}/v1/echo"),
        "description": "tally-metered resource", "mimeType": "text/plain"});
    p.resource = resource.as_object().cloned();
    p.extensions = Some(serde_json::Map::new());
    let text = encode_header("PAYMENT-SIGNATURE", &p).unwrap();
    let (status, headers, body) = post(&url, "/v1/echo", "stock", &text).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    out.push(("PAYMENT-SIGNATURE".to_string(), text));
    note_into(&mut out, &headers);

    type Change = Box<dyn Fn(&mut PaymentPayload)>;
    for (member, change) in [
        (
            "amount",
            Box::new(|p: &mut PaymentPayload| p.accepted.amount.0 += 1) as Change,
        ),
        (
            "extra.terms_hash",
            Box::new(|p: &mut PaymentPayload| p.accepted.extra.terms_hash.0[0] ^= 1),
        ),
        (
            "payTo",
            Box::new(|p: &mut PaymentPayload| p.accepted.pay_to = format!("0x{}", "12".repeat(20))),
        ),
    ] {
        let auth = next_auth(&stack.gateway, &ch, "/v1/echo", b"mismatch").await;
        let mut p = PaymentPayload::new(accepted.clone(), &auth, sign(&auth, &ch.session));
        change(&mut p);
        let text = encode_header("PAYMENT-SIGNATURE", &p).unwrap();
        let (status, headers, body) = post(&url, "/v1/echo", "mismatch", &text).await;
        assert_eq!(status, 402, "{member}");
        assert_eq!(
            reason(&body),
            Reason::RequirementsMismatch {
                member: member.into()
            }
        );
        let required: PaymentRequired =
            decode_header("PAYMENT-REQUIRED", headers[PAYMENT_REQUIRED].as_bytes()).unwrap();
        assert_eq!(required.error, "invalid_payment_requirements");
        assert_eq!(required.accepts, vec![accepted.clone()]);
        out.push(("PAYMENT-SIGNATURE".to_string(), text));
        note_into(&mut out, &headers);
    }
    // The old form of `accepted` (scheme and network only) is not x402 v2: refused unread.
    let old = serde_json::json!({"x402Version": 2,
        "accepted": {"scheme": "tally", "network": accepted.network},
        "payload": serde_json::to_value(&p.payload).unwrap()});
    let text = base64::engine::general_purpose::STANDARD.encode(old.to_string());
    let (status, _, body) = post(&url, "/v1/echo", "stock", &text).await;
    assert_eq!((status, reason(&body)), (400, Reason::Malformed));
    out
}

fn note_into(out: &mut Vec<(String, String)>, headers: &reqwest::header::HeaderMap) {
    for name in X402 {
        if let Some(v) = headers.get(name) {
            out.push((name.to_uppercase(), v.to_str().unwrap().to_string()));
        }
    }
}
