//! Authenticated reads and salted request hashes (spec/HTTP.md §5.1, spec/PROTOCOL.md §3.3,
//! issue 8 item 7): a real gateway, real clients, loopback TCP.

use std::time::Duration;

use tally_core::encoding::Canonical;
use tally_core::request::request_hash;
use tally_core::{Record, SecretKey};
use tally_e2e::*;
use tally_http::read_auth::{READ_AUTH, READ_AUTH_WINDOW_MS};
use tally_http::{ErrorBody, Reason};
use tally_server::readauth::AdminToken;

const ADMIN: &str = "admin-token-0123456789abcdefghijklmnop";

/// Every read endpoint, as a tail under `/tally/v1/channels/{id}`, valid once the channel
/// holds two records and a checkpoint.
const READS: [&str; 5] = [
    "",
    "/records?from=0",
    "/proofs/inclusion?index=0&size=2",
    "/proofs/consistency?old=1&new=2",
    "/checkpoints",
];

fn channel_url(stack: &Stack, ch: &TestChannel, tail: &str) -> String {
    format!(
        "{}/tally/v1/channels/{}{tail}",
        stack.server.url(),
        ch.id.to_hex()
    )
}

/// Status and body of a GET with the given headers.
async fn get(url: &str, headers: &[(&str, String)]) -> (u16, Vec<u8>) {
    let mut req = reqwest::Client::new().get(url);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (
        status,
        resp.bytes().await.map(|b| b.to_vec()).unwrap_or_default(),
    )
}

/// The refusal's reason and message.
fn refusal(body: &[u8]) -> (Reason, String) {
    let e: ErrorBody = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not an error body ({e}): {}", String::from_utf8_lossy(body)));
    (e.error.reason, e.error.message)
}

fn assert_unauthorized(what: &str, (status, body): &(u16, Vec<u8>)) -> String {
    assert_eq!(*status, 401, "{what}: {}", String::from_utf8_lossy(body));
    let (reason, message) = refusal(body);
    assert_eq!(reason, Reason::Unauthorized, "{what}");
    message
}

/// A stack with an admin token, and one channel with two records and a cosigned
/// checkpoint (so every read endpoint has something to answer).
async fn busy_stack() -> (Stack, TestChannel, tally_client::Client, tempfile::TempDir) {
    let stack = Stack::start(|s| {
        s.admin_token = Some(AdminToken::new(ADMIN).unwrap());
    })
    .await;
    let (ch, client, dir) = stack.client(1_000_000).await;
    for body in ["one", "two"] {
        let r = client.post("/v1/echo").body(body).send().await.unwrap();
        assert_eq!(r.status, 200);
    }
    client.checkpoint().await.unwrap();
    (stack, ch, client, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_endpoint_refuses_a_reader_without_a_token_and_answers_the_session_key() {
    let (stack, ch, _client, _dir) = busy_stack().await;
    for tail in READS {
        let url = channel_url(&stack, &ch, tail);
        assert_unauthorized(&format!("no token: {tail}"), &get(&url, &[]).await);
        let token = read_token_at(&ch, &url, now_ms());
        let (status, body) = get(&url, &[(READ_AUTH, token)]).await;
        assert_eq!(status, 200, "{tail}: {}", String::from_utf8_lossy(&body));
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_for_another_channel_time_key_or_read_are_refused() {
    let (stack, ch, _client, _dir) = busy_stack().await;
    let (other, _other_client, _odir) = stack.client(1_000).await;
    let url = channel_url(&stack, &ch, "/records?from=0");
    let now = now_ms();
    let target = url.trim_start_matches(&stack.server.url()).to_string();
    let sign = |key: &SecretKey, id, target: &str, at| {
        tally_http::ReadToken::sign(key, id, "GET", target, at).to_header()
    };

    // Another channel: its own key over its own channel id, and this channel's key over
    // the other channel's id.
    let other_url = channel_url(&stack, &other, "/records?from=0");
    let bad_sig = assert_unauthorized(
        "other channel's token",
        &get(&url, &[(READ_AUTH, read_token_at(&other, &other_url, now))]).await,
    );
    assert_unauthorized(
        "signed for another channel id",
        &get(
            &url,
            &[(READ_AUTH, sign(&ch.session, &other.id, &target, now))],
        )
        .await,
    );
    // Another key over exactly this read.
    let stranger = SecretKey::generate(&mut rand::rngs::OsRng);
    assert_unauthorized(
        "another key",
        &get(&url, &[(READ_AUTH, sign(&stranger, &ch.id, &target, now))]).await,
    );
    // Another read of the same channel (the token binds path and query).
    let from1 = channel_url(&stack, &ch, "/records?from=1");
    assert_unauthorized(
        "token for another query",
        &get(&from1, &[(READ_AUTH, read_token_at(&ch, &url, now))]).await,
    );
    // Expired and future tokens; inside the window is fine.
    let window = READ_AUTH_WINDOW_MS;
    for at in [now - window - 5_000, now + window + 5_000] {
        assert_unauthorized(
            &format!("issued at {at}, now {now}"),
            &get(&url, &[(READ_AUTH, read_token_at(&ch, &url, at))]).await,
        );
    }
    let (status, _) = get(&url, &[(READ_AUTH, read_token_at(&ch, &url, now - 30_000))]).await;
    assert_eq!(status, 200, "a token 30 s old is inside the window");
    // A replay once the window has passed: accepted at first, refused 2 s later.
    let captured = read_token_at(&ch, &url, now_ms() - window + 1_000);
    let (status, _) = get(&url, &[(READ_AUTH, captured.clone())]).await;
    assert_eq!(status, 200, "the captured token was valid when first used");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert_unauthorized(
        "replay after the window",
        &get(&url, &[(READ_AUTH, captured)]).await,
    );
    // Not strictly encoded: upper-case hex, leading zero.
    let good = read_token_at(&ch, &url, now_ms());
    let (ms, sig) = good.split_once('.').unwrap();
    for bad in [format!("{ms}.{}", sig.to_uppercase()), format!("0{good}")] {
        assert_unauthorized(&bad, &get(&url, &[(READ_AUTH, bad.clone())]).await);
    }

    // No oracle: an unknown channel and an unbound one answer exactly as a bad signature.
    let unknown = open_channel(&stack.funding, 1);
    let never_opened = TestChannel {
        id: tally_core::ChannelId([0x42; 32]),
        session: SecretKey::generate(&mut rand::rngs::OsRng),
        checkpoint: unknown.checkpoint.clone(),
    };
    for (what, c) in [("unbound", &unknown), ("unknown", &never_opened)] {
        let u = channel_url(&stack, c, "/records?from=0");
        let message = assert_unauthorized(
            what,
            &get(&u, &[(READ_AUTH, read_token_at(c, &u, now_ms()))]).await,
        );
        assert_eq!(
            message, bad_sig,
            "{what} reads differently from a bad signature"
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_reads_every_channel_and_a_wrong_one_fails() {
    let (stack, ch, _client, _dir) = busy_stack().await;
    for tail in READS {
        let url = channel_url(&stack, &ch, tail);
        let (status, body) = get(&url, &[("authorization", format!("Bearer {ADMIN}"))]).await;
        assert_eq!(status, 200, "{tail}: {}", String::from_utf8_lossy(&body));
        for wrong in [
            format!("Bearer {ADMIN}x"),
            format!("Bearer {}", &ADMIN[..ADMIN.len() - 1]),
            format!("bearer {ADMIN}"),
            ADMIN.to_string(),
        ] {
            assert_unauthorized(
                &format!("{wrong:?} on {tail}"),
                &get(&url, &[("authorization", wrong.clone())]).await,
            );
        }
    }
    stack.stop().await;

    // A gateway without an admin token takes no bearer at all.
    let plain = Stack::start(|_| {}).await;
    let (ch, _client, _dir) = plain.client(1_000).await;
    let url = channel_url(&plain, &ch, "");
    assert_unauthorized(
        "bearer without admin_token_file",
        &get(&url, &[("authorization", format!("Bearer {ADMIN}"))]).await,
    );
    plain.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_hashes_differently_on_two_channels() {
    let stack = Stack::start(|_| {}).await;
    let (a, client_a, _da) = stack.client(1_000_000).await;
    let (b, client_b, _db) = stack.client(1_000_000).await;
    for c in [&client_a, &client_b] {
        let r = c
            .post("/v1/echo")
            .body("the same body")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }
    let stored = |id| {
        let bytes = stack.gateway.store().unwrap().record(id, 0).unwrap();
        Record::from_bytes(&bytes)
            .unwrap()
            .authorization
            .request_hash
    };
    let (ha, hb) = (stored(&a.id), stored(&b.id));
    assert_ne!(
        ha, hb,
        "request hashes of the same request must differ across channels"
    );
    let (sa, sb) = (
        client_a.request_salt().await.unwrap(),
        client_b.request_salt().await.unwrap(),
    );
    assert_ne!(sa, sb);
    assert_eq!(stack.gateway.request_salt(&a.id).await.unwrap(), sa);
    assert_eq!(
        ha,
        request_hash(&sa, "POST", "/v1/echo", "", b"the same body")
    );
    assert_ne!(
        ha,
        request_hash(
            &Default::default(),
            "POST",
            "/v1/echo",
            "",
            b"the same body"
        )
    );

    // Binding the same key again (a second client of channel a) gets the same salt, and the
    // authenticated channel state carries it.
    let again_dir = tmp();
    let again = connect(&stack.server.url(), again_dir.path(), &a).await;
    assert_eq!(again.request_salt().await, Some(sa));
    let resp = read_get(&a, &channel_url(&stack, &a, "")).await;
    let state: tally_http::api::ChannelState =
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap();
    assert_eq!(state.request_salt, Some(sa));
    stack.stop().await;
}
