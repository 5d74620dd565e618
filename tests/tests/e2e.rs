//! End-to-end: real upstream, real gateway (reverse proxy), real clients, loopback TCP,
//! sled files in temporary directories.

use tally_client::{Client, ClientError, Misbehavior};
use tally_core::encoding::Canonical;
use tally_core::request::request_hash;
use tally_core::SecretKey;
use tally_e2e::*;
use tally_http::headers::{decode_header, encode_header, PAYMENT_RESPONSE, PAYMENT_SIGNATURE};
use tally_http::{PaymentResponse, Reason};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_mirror_root_equals_provider_root() {
    let stack = Stack::start(|s| s.checkpoint.every_records = 10).await;
    let (ch, client, _cdir) = stack.client(1_000_000).await;
    let (gw, server) = (&stack.gateway, &stack.server);
    for i in 0..40u32 {
        let body = format!("hello {i}");
        let r = match client.post("/v1/echo").body(body.clone()).send().await {
            Ok(r) => r,
            Err(e) => panic!("request {i}: {e}"),
        };
        assert_eq!(r.status, 200);
        assert_eq!(r.body, body.as_bytes());
        let receipt = r.receipt.unwrap_or_else(|| panic!("no receipt"));
        assert_eq!(receipt.outcome.index, u64::from(i));
        assert_eq!(receipt.outcome.amount, ECHO_PRICE as i128);
    }
    // Metered route: 7 units at 3 each.
    let r = match client.get("/v1/tokens?n=7").send().await {
        Ok(r) => r,
        Err(e) => panic!("tokens: {e}"),
    };
    let o = r.receipt.map(|r| r.outcome);
    assert_eq!(o.map(|o| (o.units, o.amount)), Some(([7, 0, 0, 0], 21)));
    // Free route: no receipt, no record.
    let r = match client.get("/free").send().await {
        Ok(r) => r,
        Err(e) => panic!("free: {e}"),
    };
    assert!(r.receipt.is_none());
    let (size, root, cumulative) = client.mirror_head().await;
    let head = gw
        .store()
        .unwrap()
        .head(&ch.id)
        .unwrap_or_else(|| panic!("no head"));
    assert_eq!(size, 41);
    assert_eq!(head.size, size);
    assert_eq!(head.root, root);
    assert_eq!(cumulative, 40 * ECHO_PRICE + 21);
    // Checkpoints were requested every 10 records and handed over on the next request.
    let cps = gw.store().unwrap().checkpoints(&ch.id).unwrap_or_default();
    assert!(cps.len() >= 3, "only {} checkpoints stored", cps.len());
    let statement = match client.audit().await {
        Ok(s) => s,
        Err(e) => panic!("audit: {e}"),
    };
    assert_eq!(statement.records, 41);
    assert_eq!(statement.root, root);
    assert_eq!(statement.cumulative, cumulative);
    // The metrics endpoint reports the records.
    let metrics = reqwest::get(format!("{}/metrics", server.url()))
        .await
        .unwrap_or_else(|e| panic!("metrics: {e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metrics.contains("tally_requests_metered_total 41"),
        "{metrics}"
    );
    assert!(metrics.contains("tally_log_records 41"));
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_clients_and_channels() {
    let stack = Stack::start(|_| {}).await;
    let mut tasks = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..8 {
        let (ch, client, dir) = stack.client(1_000_000).await;
        dirs.push(dir);
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                if let Err(e) = client.post("/v1/echo/x").body(format!("{i}")).send().await {
                    panic!("request {i}: {e}");
                }
            }
            (ch.id, client.mirror_head().await)
        }));
    }
    for t in tasks {
        let (id, (size, root, cumulative)) = t.await.unwrap_or_else(|e| panic!("task: {e}"));
        let head = stack
            .gateway
            .store()
            .unwrap()
            .head(&id)
            .unwrap_or_else(|| panic!("no head"));
        assert_eq!((head.size, head.root), (size, root));
        assert_eq!(size, 25);
        assert_eq!(cumulative, 25 * ECHO_PRICE);
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_rejects_forgery_replay_reorder_and_over_limit() {
    let stack = Stack::start(|s| s.credit_limit = 1_000).await;
    // Binds the session key.
    let (ch, client, _cdir) = stack.client(25).await;
    let gw = &stack.gateway;
    let url = stack.server.url();

    // Forged signature: signed by another key.
    let auth = next_auth(gw, &ch, "/v1/echo", b"a").await;
    let other = SecretKey::generate(&mut rand::rngs::OsRng);
    let (status, _, body) = raw(&url, "/v1/echo", b"a", &auth, &other).await;
    assert_eq!((status, reason(&body)), (402, Reason::InvalidSignature));

    // The signed request hash must be the request's.
    let (status, _, body) = raw(&url, "/v1/echo", b"tampered", &auth, &ch.session).await;
    assert_eq!(status, 400);
    assert!(matches!(reason(&body), Reason::RequestMismatch { .. }));

    // A valid one is recorded.
    let (status, headers, first_body) = raw(&url, "/v1/echo", b"a", &auth, &ch.session).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&first_body));
    let first = headers.get(PAYMENT_RESPONSE).cloned();
    assert!(first.is_some());

    // Replay (same seq, same request): the same receipt, not charged twice.
    let (status, headers, again) = raw(&url, "/v1/echo", b"a", &auth, &ch.session).await;
    assert_eq!(status, 200);
    assert_eq!(again, first_body);
    assert_eq!(headers.get(PAYMENT_RESPONSE).cloned(), first);
    assert_eq!(gw.store().unwrap().head(&ch.id).map(|h| h.size), Some(1));

    // Same seq, different request: refused as stale.
    let mut other_req = auth;
    other_req.request_hash = request_hash(
        &gw.request_salt(&ch.id)
            .await
            .expect("bound channel has a salt"),
        "POST",
        "/v1/echo",
        "",
        b"b",
    );
    let (status, _, body) = raw(&url, "/v1/echo", b"b", &other_req, &ch.session).await;
    assert_eq!(status, 409);
    assert!(matches!(
        reason(&body),
        Reason::StaleSeq {
            expected_seq: 1,
            ..
        }
    ));

    // Reordered: seq 2 before seq 1.
    let mut ahead = next_auth(gw, &ch, "/v1/echo", b"c").await;
    ahead.seq += 1;
    let (status, _, body) = raw(&url, "/v1/echo", b"c", &ahead, &ch.session).await;
    assert_eq!(status, 409);
    assert!(matches!(
        reason(&body),
        Reason::StaleSeq {
            expected_seq: 1,
            ..
        }
    ));

    // Wrong acknowledged root.
    let mut fork = next_auth(gw, &ch, "/v1/echo", b"c").await;
    fork.ack_root = tally_core::Hash([7; 32]);
    let (status, _, body) = raw(&url, "/v1/echo", b"c", &fork, &ch.session).await;
    assert_eq!(status, 409);
    assert!(matches!(
        reason(&body),
        Reason::StateMismatch { size: 1, .. }
    ));

    // Over the deposit: 25 deposited, 10 spent, a second 10 fits, a third does not.
    let a = next_auth(gw, &ch, "/v1/echo", b"d").await;
    let (status, _, _) = raw(&url, "/v1/echo", b"d", &a, &ch.session).await;
    assert_eq!(status, 200);
    let a = next_auth(gw, &ch, "/v1/echo", b"e").await;
    let (status, headers, body) = raw(&url, "/v1/echo", b"e", &a, &ch.session).await;
    assert_eq!(status, 402);
    assert_eq!(
        reason(&body),
        Reason::InsufficientFunds {
            remaining: tally_http::Amount(5)
        }
    );
    assert!(headers.contains_key("payment-required"));
    // max_amount below the price.
    let mut low = next_auth(gw, &ch, "/v1/echo", b"e").await;
    low.max_amount = 1;
    let (status, _, body) = raw(&url, "/v1/echo", b"e", &low, &ch.session).await;
    assert_eq!(status, 402);
    assert!(matches!(reason(&body), Reason::AmountTooLow { .. }));

    // Malformed and missing payments.
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/echo"))
        .header(PAYMENT_SIGNATURE, "!!!not base64")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 400);
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/echo"))
        .header(
            PAYMENT_SIGNATURE,
            "A".repeat(tally_http::headers::MAX_HEADER_BYTES + 1),
        )
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 413);
    let resp = reqwest::get(format!("{url}/v1/echo"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status(), 402);
    let required = resp
        .headers()
        .get("payment-required")
        .map(|v| v.as_bytes().to_vec())
        .unwrap_or_default();
    let pr: tally_http::PaymentRequired =
        decode_header("PAYMENT-REQUIRED", &required).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pr.accepts[0].scheme, "tally");
    assert_eq!(pr.accepts[0].network, "eip155:31337");
    assert_eq!(pr.accepts[0].extra.terms_hash, gw.terms_hash());
    // Nothing refused was recorded.
    assert_eq!(gw.store().unwrap().head(&ch.id).map(|h| h.size), Some(2));
    drop(client);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_upstream_times_out_records_nothing_and_frees_the_channel() {
    let stack = Stack::start(|s| s.upstream_timeout = std::time::Duration::from_millis(500)).await;
    let (ch, client, _cdir) = stack.client(1_000_000).await;
    assert!(client.post("/v1/echo").body("before").send().await.is_ok());
    let started = std::time::Instant::now();
    match client.post("/v1/hang").send().await {
        Err(ClientError::Refused {
            reason: Reason::UpstreamUnavailable,
            ..
        }) => {}
        other => panic!("expected upstream_unavailable, got {other:?}"),
    }
    // The upstream sleeps 30 s; the gateway gave up after 0.5 s.
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let head = stack.gateway.store().unwrap().head(&ch.id).map(|h| h.size);
    assert_eq!(head, Some(1), "nothing was recorded for the hung call");
    // The channel is free again at once.
    let after = client.post("/v1/echo").body("after").send().await;
    assert_eq!(
        after.map(|r| r.receipt.map(|r| r.outcome.index)).ok(),
        Some(Some(1))
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_checkpoint_is_answered_without_a_new_write() {
    let stack = Stack::start(|_| {}).await;
    let (ch, client, _cdir) = stack.client(1_000_000).await;
    for i in 0..3 {
        let r = client.post("/v1/echo").body(format!("{i}")).send().await;
        assert!(r.is_ok(), "{r:?}");
    }
    assert!(client.checkpoint().await.is_ok());
    let stored = || {
        stack
            .gateway
            .store()
            .unwrap()
            .checkpoints(&ch.id)
            .unwrap_or_default()
    };
    let before = stored();
    assert_eq!(before.len(), 1);
    let wire: tally_http::WireCheckpoint =
        serde_json::from_slice(&before[0].1).unwrap_or_else(|e| panic!("{e}"));
    // Anyone holding the public checkpoint replays it, a second later (a new cosignature
    // time, were it signed again).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let url = format!(
        "{}/tally/v1/channels/{}/checkpoints",
        stack.server.url(),
        ch.id.to_hex()
    );
    for _ in 0..3 {
        let r = reqwest::Client::new()
            .post(&url)
            .json(&wire)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.status(), 200);
        let answer: tally_http::WireCheckpoint = r.json().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer, wire, "the replay was cosigned again");
    }
    assert_eq!(stored(), before);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_limit_requires_a_checkpoint_and_the_client_provides_it() {
    let stack = Stack::start(|s| {
        s.credit_limit = 35;
        s.checkpoint.every_records = 0;
        s.checkpoint.every_seconds = 0;
        s.checkpoint.every_amount = tally_http::Amount(0);
    })
    .await;
    let (ch, client, _cdir) = stack.client(1_000_000).await;
    for i in 0..10 {
        if let Err(e) = client.post("/v1/echo").body("x").send().await {
            panic!("request {i}: {e}");
        }
    }
    // 100 charged with a 35 credit limit: the gateway demanded checkpoints along the way.
    let cps = stack
        .gateway
        .store()
        .unwrap()
        .checkpoints(&ch.id)
        .unwrap_or_default();
    assert!(cps.len() >= 2, "{} checkpoints", cps.len());
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_restart_loses_no_receipt_and_client_resumes() {
    let stack = Stack::start(|_| {}).await;
    let (ch, client, cdir) = stack.client(1_000_000).await;
    let Stack {
        funding,
        key,
        upstream,
        gateway: gw,
        server,
        dir: gdir,
    } = stack;
    let mut receipts = Vec::new();
    for i in 0..20 {
        match client.post("/v1/echo").body(format!("{i}")).send().await {
            Ok(r) => receipts.extend(r.receipt),
            Err(e) => panic!("request {i}: {e}"),
        }
    }
    // A raw request recorded just before the crash, whose response the client never saw.
    let lost = next_auth(&gw, &ch, "/v1/echo", b"lost").await;
    let (status, _, _) = raw(&server.url(), "/v1/echo", b"lost", &lost, &ch.session).await;
    assert_eq!(status, 200);
    server.stop().await;
    drop(gw);
    // Restart on the same sled files, once every connection task let go of the old gateway.
    let (gw, server2) = reopen_gateway(settings(gdir.path()), &key, &funding, &upstream).await;
    for r in &receipts {
        let bytes = gw
            .store()
            .unwrap()
            .record(&ch.id, r.outcome.index)
            .unwrap_or_else(|e| panic!("record {} lost: {e}", r.outcome.index));
        let record = tally_core::Record::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(record.outcome, r.outcome);
        // Re-derived signatures are identical.
        assert!(record.verify_receipt(&key.public(), &r.signature).is_ok());
    }
    // The retry after restart is recognised: already recorded, not charged again.
    let (status, _, body) = raw(&server2.url(), "/v1/echo", b"lost", &lost, &ch.session).await;
    assert_eq!(status, 409);
    assert!(matches!(reason(&body), Reason::AlreadyRecorded { .. }));
    // The same client (its port changed, so reconnect with the same mirror) resyncs the
    // record it never saw through stale_seq and continues.
    drop(client);
    let client = connect(&server2.url(), cdir.path(), &ch).await;
    let r = client
        .post("/v1/echo")
        .body("after")
        .send()
        .await
        .unwrap_or_else(|e| panic!("after restart: {e}"));
    assert_eq!(r.receipt.map(|r| r.outcome.index), Some(21));
    let (size, root, _) = client.mirror_head().await;
    let head = gw
        .store()
        .unwrap()
        .head(&ch.id)
        .unwrap_or_else(|| panic!("no head"));
    assert_eq!((head.size, head.root), (size, root));
    server2.stop().await;
    upstream.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispute_of_a_charged_5xx_returns_a_cosigned_credit() {
    let stack = Stack::start(|s| s.charge_server_errors = true).await;
    let (ch, client, _cdir) = stack.client(1_000_000).await;
    let ok = client.post("/v1/echo").body("fine").send().await;
    assert!(ok.is_ok());
    let failed = client
        .post("/v1/fail")
        .send()
        .await
        .unwrap_or_else(|e| panic!("fail route: {e}"));
    assert_eq!(failed.status, 500);
    assert_eq!(
        failed.receipt.map(|r| r.outcome.amount),
        Some(ECHO_PRICE as i128)
    );
    let cp = client.checkpoint().await;
    assert!(cp.is_ok(), "{cp:?}");
    // Disputing the fine record is refused; the 5xx one is credited.
    let fine = match ok {
        Ok(r) => r.exchange,
        Err(e) => panic!("{e}"),
    };
    match client.dispute(0, fine).await {
        Err(ClientError::Refused {
            reason: Reason::DisputeRefused { .. },
            ..
        }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The checkpoint holds both charges, and nothing is claimed onchain: the credit takes
    // the cumulative below the checkpoint, which the client can answer onchain with the
    // payee-cosigned state after it (spec/HTTP.md §7, CHAIN.md §4.2).
    let granted = client
        .dispute(1, failed.exchange.clone())
        .await
        .unwrap_or_else(|e| panic!("dispute: {e}"));
    assert_eq!(granted.amount.0, -(ECHO_PRICE as i128));
    let later = client.post("/v1/echo").body("later").send().await;
    assert!(later.is_ok(), "{later:?}");
    let (size, root, cumulative) = client.mirror_head().await;
    assert_eq!(size, 4);
    assert_eq!(cumulative, 2 * ECHO_PRICE);
    let head = stack
        .gateway
        .store()
        .unwrap()
        .head(&ch.id)
        .unwrap_or_else(|| panic!("no head"));
    assert_eq!((head.size, head.root), (size, root));
    // A second dispute of the same record is refused (a new checkpoint covers it too).
    let cp = client.checkpoint().await;
    assert!(cp.is_ok());
    match client.dispute(1, failed.exchange).await {
        Err(ClientError::Refused {
            reason: Reason::DisputeRefused { why },
            ..
        }) => assert!(why.contains("already credited"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    stack.stop().await;
}

/// Two disputes of one record admitted before either is recorded (on two lanes, at once):
/// both passed the "already credited?" check at admission; the gateway credits the record
/// once, under the channel's lock, and refuses the second (a regression test: both were
/// credited before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_disputes_admitted_together_credit_the_record_once() {
    use tally_server::gateway::{Admitted, Answer, Purpose, RequestView};
    let stack = Stack::start(|s| s.charge_server_errors = true).await;
    let (ch, client, _cdir) = stack.client(1_000_000).await;
    for i in 0..4 {
        let r = client
            .post("/v1/echo")
            .body(format!("paid {i}"))
            .send()
            .await;
        assert!(r.is_ok(), "{r:?}");
    }
    let failed = client
        .post("/v1/fail")
        .send()
        .await
        .unwrap_or_else(|e| panic!("fail route: {e}"));
    let disputed = failed.receipt.map(|r| r.outcome.index).unwrap_or(u64::MAX);
    let gw = &stack.gateway;
    let path = format!("/tally/v1/channels/{}/disputes", ch.id.to_hex());
    let accepted = tally_e2e::paid::accepted_at(&stack.server.url(), "POST", &path).await;
    let mut admissions = Vec::new();
    for lane in [40u32, 41] {
        let body = format!("dispute on lane {lane}");
        let mut auth = tally_e2e::paid::next_auth(gw, &ch, &path, body.as_bytes()).await;
        (auth.lane, auth.seq, auth.max_amount) = (lane, 0, 0);
        let payload =
            tally_http::PaymentPayload::new(accepted.clone(), &auth, auth.sign(&ch.session));
        let mut headers = http::HeaderMap::new();
        headers.insert(
            PAYMENT_SIGNATURE,
            encode_header("PAYMENT-SIGNATURE", &payload)
                .unwrap()
                .parse()
                .unwrap(),
        );
        let view = RequestView {
            method: "POST",
            path: &path,
            query: "",
            headers: &headers,
        };
        match gw.admit(&view, Purpose::Dispute).await {
            Ok(Admitted::Fresh(a)) => admissions.push(a),
            Ok(Admitted::Replay { .. }) => panic!("a fresh dispute was taken for a retry"),
            Err(e) => panic!("admitting a dispute: {}", e.message),
        }
    }
    let credit = || Answer {
        status: 200,
        content_type: None,
        body: bytes::Bytes::from_static(b"{}"),
        body_hash: tally_core::request::body_hash(b"{}"),
        units: [0; tally_core::METERS],
        amount: -(ECHO_PRICE as i128),
        credits: Some(disputed),
    };
    let mut outcomes = Vec::new();
    for a in admissions {
        outcomes.push(gw.record(a, credit()).await);
    }
    assert!(outcomes[0].is_ok(), "the first credit is recorded");
    match &outcomes[1] {
        Err(e) => assert!(
            matches!(*e.reason, Reason::DisputeRefused { .. }),
            "{}",
            e.message
        ),
        Ok(_) => panic!("the record was credited twice"),
    }
    let head = gw
        .store()
        .unwrap()
        .head(&ch.id)
        .unwrap_or_else(|| panic!("no head"));
    assert_eq!(
        head.size,
        disputed + 2,
        "one credit record after the disputed one"
    );
    stack.stop().await;
}

/// A man in the middle that rewrites the gateway's answers, to check the client notices.
#[derive(Clone, Copy)]
enum Tamper {
    Signature,
    Amount,
    Undercharge,
    Cumulative,
    Root,
}

async fn tampering_proxy(gateway: String, key: SecretKey, mode: Tamper) -> Server {
    use axum::body::Body;
    let app = axum::Router::new().fallback(move |req: http::Request<Body>| {
        let gateway = gateway.clone();
        let key = key.clone();
        async move {
            let (_, status, mut headers, mut bytes) = forward(&gateway, req).await;
            if let Some(v) = headers.get(PAYMENT_RESPONSE).cloned() {
                let mut pr: PaymentResponse = decode_header("PAYMENT-RESPONSE", v.as_bytes())
                    .unwrap_or_else(|e| panic!("{e}"));
                let mut receipt = pr.extra.receipt.receipt().unwrap_or_else(|e| panic!("{e}"));
                match mode {
                    Tamper::Signature => receipt.signature.0[5] ^= 1,
                    Tamper::Amount => {
                        receipt.outcome.amount += 1;
                        receipt.outcome.cumulative += 1;
                        receipt = receipt.outcome.sign(&key);
                    }
                    Tamper::Undercharge => {
                        receipt.outcome.amount -= 1;
                        receipt.outcome.cumulative -= 1;
                        receipt = receipt.outcome.sign(&key);
                    }
                    Tamper::Cumulative => {
                        receipt.outcome.cumulative += 1;
                        receipt = receipt.outcome.sign(&key);
                    }
                    Tamper::Root => {}
                }
                pr.extra.receipt = tally_http::WireReceipt::from_receipt(&receipt);
                let text = encode_header("PAYMENT-RESPONSE", &pr).unwrap_or_default();
                if let Ok(v) = http::HeaderValue::from_str(&text) {
                    headers.insert(PAYMENT_RESPONSE, v);
                }
            }
            if matches!(mode, Tamper::Root) {
                if let Ok(mut state) =
                    serde_json::from_slice::<tally_http::api::ChannelState>(&bytes)
                {
                    if state.size > 0 {
                        state.root = tally_core::Hash([9; 32]);
                        bytes = serde_json::to_vec(&state).unwrap_or_default();
                    }
                }
            }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_detects_tampered_receipt_wrong_amount_wrong_cumulative_and_forked_root() {
    let stack = Stack::start(|_| {}).await;
    let (funding, key, server) = (&stack.funding, &stack.key, &stack.server);
    for mode in [
        Tamper::Signature,
        Tamper::Amount,
        Tamper::Undercharge,
        Tamper::Cumulative,
        Tamper::Root,
    ] {
        let ch = open_channel(funding, 1_000_000);
        let mitm = tampering_proxy(server.url(), key.clone(), mode).await;
        let cdir = tmp();
        let client = connect(&mitm.url(), cdir.path(), &ch).await;
        let first = client.post("/v1/echo").body("x").send().await;
        match (mode, &first) {
            (
                Tamper::Signature,
                Err(ClientError::Misbehavior(Misbehavior::BadReceiptSignature)),
            ) => {}
            (Tamper::Amount, Err(ClientError::Misbehavior(Misbehavior::OverMaximum { .. }))) => {}
            (
                Tamper::Undercharge,
                Err(ClientError::Misbehavior(Misbehavior::WrongAmount { .. })),
            ) => {}
            (
                Tamper::Cumulative,
                Err(ClientError::Misbehavior(Misbehavior::WrongCumulative { .. })),
            ) => {}
            (Tamper::Root, Ok(_)) => {
                // The root is forged only in the channel state; a reconnect must notice.
                drop(client);
                match Client::connect(client_config(&mitm.url(), cdir.path(), &ch)).await {
                    Err(ClientError::Misbehavior(Misbehavior::Fork { size: 1, .. })) => {}
                    Err(e) => panic!("expected a fork, got {e}"),
                    Ok(_) => panic!("expected a fork, got a connection"),
                }
                mitm.stop().await;
                continue;
            }
            _ => panic!("mode did not produce the expected misbehavior: {first:?}"),
        }
        // Once caught, the client refuses to continue.
        assert!(matches!(
            client.post("/v1/echo").body("y").send().await,
            Err(ClientError::Stopped(_))
        ));
        assert_eq!(client.mirror_head().await.0, 0);
        mitm.stop().await;
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_layer_meters_an_embedded_axum_app() {
    let (gdir, cdir) = (tmp(), tmp());
    let funding = MemFunding::default();
    let ch = open_channel(&funding, 1_000_000);
    let key = SecretKey::generate(&mut rand::rngs::OsRng);
    let gw = tally_server::Gateway::open(
        settings(gdir.path()),
        key,
        std::sync::Arc::new(funding.clone()),
    )
    .unwrap_or_else(|e| panic!("gateway: {e}"));
    let server = spawn(tally_server::app(&gw, upstream_routes())).await;
    let client = connect(&server.url(), cdir.path(), &ch).await;
    for i in 0..5 {
        let r = client
            .post("/v1/echo")
            .body(format!("{i}"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.body, format!("{i}").as_bytes());
    }
    let r = client
        .get("/v1/tokens?n=500")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // 500 units × 3 is capped at the route maximum of 300.
    assert_eq!(
        r.receipt.map(|r| (r.outcome.units, r.outcome.amount)),
        Some(([500, 0, 0, 0], 300))
    );
    let (size, root, _) = client.mirror_head().await;
    assert_eq!(
        gw.store().unwrap().head(&ch.id).map(|h| (h.size, h.root)),
        Some((size, root))
    );
    server.stop().await;
}

/// Lanes (spec/PROTOCOL.md §5.4): one client fires requests from many tasks at once; they
/// are served concurrently on several lanes, each lane's seqs stay strict, and the client's
/// mirror ends byte-identical to the provider's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_channel_serves_concurrent_requests_on_lanes() {
    let stack = Stack::start(|_| {}).await;
    let (ch, client, _cdir) = stack.client(1_000_000).await;
    let mut tasks = Vec::new();
    for i in 0..24u32 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let body = format!("slow {i}");
            let r = c.post("/v1/echo/slow").body(body.clone()).send().await;
            (body, r)
        }));
    }
    let mut lanes = std::collections::BTreeMap::<u32, Vec<u64>>::new();
    for t in tasks {
        let (body, r) = t.await.unwrap_or_else(|e| panic!("task: {e}"));
        let r = r.unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(r.body, body.as_bytes());
        let o = r.receipt.unwrap_or_else(|| panic!("no receipt")).outcome;
        lanes.entry(o.lane).or_default().push(o.seq);
    }
    // A second lane is only leased while the first is busy: more than one lane means the
    // requests were in flight together.
    assert!(lanes.len() > 1, "all requests on one lane: {lanes:?}");
    for (lane, mut seqs) in lanes {
        seqs.sort_unstable();
        let expect: Vec<u64> = (0..seqs.len() as u64).collect();
        assert_eq!(seqs, expect, "lane {lane}: seqs are strict");
    }
    client
        .flush()
        .await
        .unwrap_or_else(|e| panic!("flush: {e}"));
    let (size, root, cumulative) = client.mirror_head().await;
    let head = stack.gateway.store().unwrap().head(&ch.id).unwrap();
    assert_eq!((size, root), (head.size, head.root));
    assert_eq!(cumulative, ECHO_PRICE * 24);
    let statement = client
        .audit()
        .await
        .unwrap_or_else(|e| panic!("audit: {e}"));
    assert_eq!(statement.records, 24);
    stack.stop().await;
}

/// Bad lane input is refused with its reason and records nothing: a lane at `max_lanes`, a
/// seq gap, an acknowledgement beyond the log or naming a root the log never had, and one
/// that goes back on its lane.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lanes_seqs_and_acknowledgements_are_refused() {
    let stack = Stack::start(|_| {}).await;
    let (ch, _client, _cdir) = stack.client(1_000_000).await;
    let (gw, url) = (&stack.gateway, stack.server.url());
    let size = || gw.store().unwrap().head(&ch.id).map_or(0, |h| h.size);
    // Lane 1, seq 0, acknowledging the empty log: recorded.
    let mut first = next_auth(gw, &ch, "/v1/echo", b"a").await;
    first.lane = 1;
    let (status, _, body) = raw(&url, "/v1/echo", b"a", &first, &ch.session).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // Lane 1, seq 1, acknowledging size 1: recorded.
    let mut second = next_auth(gw, &ch, "/v1/echo", b"b").await;
    second.lane = 1;
    second.seq = 1;
    let (status, _, body) = raw(&url, "/v1/echo", b"b", &second, &ch.session).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(size(), 2);
    // Lane 0 is unused so far: its next seq is 0.
    let mut at2 = next_auth(gw, &ch, "/v1/echo", b"c").await;
    at2.seq = 0;

    let mut over = at2;
    over.lane = gw.terms().max_lanes;
    let (status, _, body) = raw(&url, "/v1/echo", b"c", &over, &ch.session).await;
    assert_eq!(status, 400);
    assert!(matches!(reason(&body), Reason::LaneOutOfRange { .. }));

    let mut gap = at2;
    gap.lane = 1;
    gap.seq = 3;
    let (status, _, body) = raw(&url, "/v1/echo", b"c", &gap, &ch.session).await;
    assert_eq!(status, 409);
    assert!(matches!(
        reason(&body),
        Reason::StaleSeq {
            lane: 1,
            expected_seq: 2,
            last_record: Some(_)
        }
    ));

    let mut beyond = at2;
    beyond.ack_size = 9;
    let (status, _, body) = raw(&url, "/v1/echo", b"c", &beyond, &ch.session).await;
    assert_eq!(status, 409);
    assert!(matches!(
        reason(&body),
        Reason::StateMismatch { size: 2, .. }
    ));

    // Size 1 existed, but not with this root.
    let mut never = at2;
    never.ack_size = 1;
    never.ack_root = tally_core::Hash([7; 32]);
    let (status, _, body) = raw(&url, "/v1/echo", b"c", &never, &ch.session).await;
    assert_eq!(status, 409);
    assert!(matches!(reason(&body), Reason::StateMismatch { .. }));

    // Lane 1 acknowledged size 1; acknowledging the (true) empty log now goes backwards.
    let mut back = next_auth(gw, &ch, "/v1/echo", b"c").await;
    back.lane = 1;
    back.seq = 2;
    back.ack_size = 0;
    back.ack_root = tally_core::hash::TreeHasher::empty(&tally_log::Blake3Hasher);
    back.ack_cumulative = 0;
    let (status, _, body) = raw(&url, "/v1/echo", b"c", &back, &ch.session).await;
    assert_eq!(status, 409);
    assert!(matches!(reason(&body), Reason::StateMismatch { .. }));
    // The same acknowledgement on a fresh lane is a true past state: accepted.
    let mut fresh = back;
    fresh.lane = 2;
    fresh.seq = 0;
    let (status, _, body) = raw(&url, "/v1/echo", b"c", &fresh, &ch.session).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(size(), 3, "only the valid requests were recorded");
    stack.stop().await;
}
