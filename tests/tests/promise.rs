//! Promise mode (DESIGN.md §8, spec/HTTP.md §5.6): receipts before durability, the channel
//! marks that make a restart without a clean shutdown refuse appends on those channels until
//! their clients restore them, and a restore that takes only records extending the log with
//! both signatures. In-process gateway, real client, loopback TCP.

use std::time::Duration;

use tally_core::encoding::Canonical;
use tally_core::{Authorization, LogState, Outcome, Record, Restore, SecretKey};
use tally_e2e::*;
use tally_http::api::{ChannelState, RestoreUpload};
use tally_http::{Reason, WireRecord};
use tally_server::durability::Durability;

fn promise(s: &mut tally_server::Settings) {
    s.durability = Durability::Promise {
        max_delay: Duration::from_millis(5),
        max_pending: 4096,
    };
}

async fn state(url: &str, ch: &TestChannel) -> ChannelState {
    let resp = read_get(ch, &format!("{url}/tally/v1/channels/{}", ch.id.to_hex())).await;
    resp.json().await.unwrap()
}

async fn upload(url: &str, ch: &TestChannel, body: &RestoreUpload) -> (u16, Vec<u8>) {
    let resp = reqwest::Client::new()
        .post(format!(
            "{url}/tally/v1/channels/{}/restore",
            ch.id.to_hex()
        ))
        .json(body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.bytes().await.unwrap().to_vec())
}

/// The record a provider would have appended next at `head` for a request on `lane` at
/// `seq`, signed by both parties (`provider` may be a forger's key).
fn next_record(
    ch: &TestChannel,
    terms_hash: tally_core::Hash,
    head: &LogState,
    lane: u32,
    seq: u64,
    amount: i128,
) -> Record {
    let auth = Authorization {
        version: tally_core::VERSION,
        channel_id: ch.id,
        lane,
        seq,
        request_hash: tally_core::hash::blake3_of(&[b"lost request", &seq.to_le_bytes()]),
        max_amount: ECHO_PRICE,
        ack_size: head.size,
        ack_root: head.root,
        ack_cumulative: head.cumulative,
        terms_hash,
    };
    let outcome = Outcome {
        version: tally_core::VERSION,
        channel_id: ch.id,
        lane,
        seq,
        index: head.size,
        authorization_hash: tally_core::hash::blake3_of(&[b"x"]),
        units: tally_core::ONE_CALL,
        amount,
        cumulative: head.cumulative + amount as u128,
        response_hash: tally_core::hash::blake3_of(&[b"response"]),
        time_ms: now_ms(),
    };
    let sig = auth.sign(&ch.session);
    let mut outcome = outcome;
    outcome.authorization_hash = auth.signed_hash(&sig);
    Record::new(auth, sig, outcome)
}

/// The log's state once `record` follows `head` (the log's frontier from the store).
fn after(
    store: &tally_log::LogStore,
    ch: &TestChannel,
    head: &LogState,
    record: &Record,
) -> LogState {
    use tally_log::TreeHasher;
    let mut f = tally_log::frontier_at(store, &ch.id, head.size, &head.root).unwrap();
    f.push(
        &tally_log::Blake3Hasher,
        tally_log::Blake3Hasher.leaf(&record.to_bytes()),
    );
    LogState {
        size: head.size + 1,
        root: f.root(&tally_log::Blake3Hasher),
        cumulative: record.outcome.cumulative,
    }
}

/// Receipts are sent before durability once the channel is marked; a gateway stopped without
/// its shutdown (an unclean end) leaves the channel refusing appends with `restore_required`
/// while other channels are served; forged, altered and non-extending uploads are refused
/// with nothing appended; the client's own restore then opens the channel again and its
/// mirror and the log agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclean_restart_refuses_appends_until_an_honest_restore() {
    let stack = Stack::start(promise).await;
    let (ch, client, cdir) = stack.client(1_000_000).await;
    let (other, other_client, _odir) = stack.client(1_000_000).await;
    for i in 0..20 {
        client
            .post("/v1/echo")
            .body(format!("a {i}"))
            .send()
            .await
            .unwrap();
    }
    other_client
        .post("/v1/echo")
        .body("b")
        .send()
        .await
        .unwrap();
    assert_eq!(client.mirror_head().await.0, 20);
    let text = reqwest::get(format!("{}/metrics", stack.server.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("tally_promised_records "), "{text}");

    // An unclean end: no shutdown, so the promise marks stay.
    let Stack {
        funding,
        key,
        upstream,
        gateway,
        server,
        dir,
    } = stack;
    let mut s = settings(dir.path());
    promise(&mut s);
    server.stop().await;
    drop(gateway);
    drop(client);
    let (gateway, server) = reopen_gateway(s, &key, &funding, &upstream).await;
    let url = server.url();
    let st = state(&url, &ch).await;
    assert!(st.restore_required);
    let head = LogState {
        size: st.size,
        root: st.root,
        cumulative: st.cumulative.0,
    };
    let nonce = st
        .restore_nonce
        .expect("a restore nonce while a restore is required");

    // A paid request on the unrestored channel: refused, nothing appended.
    let auth = next_auth(&gateway, &ch, "/v1/echo", b"new").await;
    let (status, _, body) = raw(&url, "/v1/echo", b"new", &auth, &ch.session).await;
    assert_eq!(status, 409);
    assert!(matches!(reason(&body), Reason::RestoreRequired { size, .. } if size == head.size));

    // Liars: each refused with a reason, nothing appended, still unrestored.
    let terms = gateway.terms_hash();
    let good = next_record(&ch, terms, &head, 0, 20, ECHO_PRICE as i128);
    let provider_sig = key.sign(&good.outcome.to_bytes());
    let forger = SecretKey::generate(&mut rand::rngs::OsRng);
    let store = gateway.store().unwrap();
    let statement = |records: &[&Record], complete: bool| match records.first() {
        Some(r) => Restore::new(ch.id, nonce, &head, &after(&store, &ch, &head, r), complete),
        None => Restore::new(ch.id, nonce, &head, &head, complete),
    };
    let mut altered = good;
    altered.outcome.amount += 1;
    altered.outcome.cumulative += 1;
    let skipping = next_record(
        &ch,
        terms,
        &LogState {
            size: head.size + 1,
            ..head
        },
        0,
        20,
        ECHO_PRICE as i128,
    );
    let cases: Vec<(&str, RestoreUpload)> = vec![
        (
            "a receipt the provider never signed",
            RestoreUpload::new(
                vec![WireRecord::new(
                    &good,
                    forger.sign(&good.outcome.to_bytes()),
                )],
                &statement(&[&good], true),
                &ch.session,
            ),
        ),
        (
            "a changed amount",
            RestoreUpload::new(
                vec![WireRecord::new(&altered, provider_sig)],
                &statement(&[&altered], true),
                &ch.session,
            ),
        ),
        (
            "a record that does not extend the log",
            RestoreUpload::new(
                vec![WireRecord::new(
                    &skipping,
                    key.sign(&skipping.outcome.to_bytes()),
                )],
                &statement(&[&skipping], true),
                &ch.session,
            ),
        ),
        (
            "a statement another key signed",
            RestoreUpload::new(vec![], &statement(&[], true), &forger),
        ),
        (
            "a statement of another restore (a stale nonce)",
            RestoreUpload::new(
                vec![],
                &Restore::new(ch.id, tally_core::Hash([9; 32]), &head, &head, true),
                &ch.session,
            ),
        ),
        (
            "a statement whose state the records do not reach",
            RestoreUpload::new(
                vec![],
                &Restore::new(
                    ch.id,
                    nonce,
                    &head,
                    &LogState {
                        size: head.size + 1,
                        ..head
                    },
                    true,
                ),
                &ch.session,
            ),
        ),
    ];
    for (what, body) in &cases {
        let (status, answer) = upload(&url, &ch, body).await;
        assert!(status == 422 || status == 402, "{what}: status {status}");
        let r = reason(&answer);
        assert!(
            matches!(r, Reason::RestoreRefused { .. } | Reason::InvalidSignature),
            "{what}: {r:?}"
        );
        let now = state(&url, &ch).await;
        assert_eq!((now.size, now.root), (head.size, head.root), "{what}");
        assert!(now.restore_required, "{what}");
    }

    // Other channels are served meanwhile: one never used in the crashed run at once, one
    // that was (its client restores it on its first call).
    let fresh = open_channel(&funding, 1_000_000);
    let fdir = tmp();
    let fresh_client = connect(&url, fdir.path(), &fresh).await;
    fresh_client
        .post("/v1/echo")
        .body("c")
        .send()
        .await
        .unwrap();
    assert!(!state(&url, &fresh).await.restore_required);
    drop(other_client);
    let other_client = reconnect(&url, _odir.path(), &other).await;
    let r = other_client
        .post("/v1/echo")
        .body("b again")
        .send()
        .await
        .unwrap();
    assert_eq!(r.receipt.unwrap().outcome.index, 1);

    // The honest client: its next call restores (it holds nothing beyond the durable head,
    // since the in-process store drained on drop) and is recorded.
    let client = reconnect(&url, cdir.path(), &ch).await;
    let r = client.post("/v1/echo").body("after").send().await.unwrap();
    assert_eq!(r.receipt.unwrap().outcome.index, head.size);
    client.flush().await.unwrap();
    let st = state(&url, &ch).await;
    assert!(!st.restore_required);
    let (size, root, cumulative) = client.mirror_head().await;
    assert_eq!(
        (st.size, st.root, st.cumulative.0),
        (size, root, cumulative)
    );
    checked_log(&gateway.store().unwrap(), &ch.id, &ch.session.public());
    server.stop().await;
    upstream.stop().await;
}

/// A clean stop keeps every promise and clears the marks: the next run restores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_leaves_nothing_to_restore() {
    let stack = Stack::start(promise).await;
    let (ch, client, _cdir) = stack.client(1_000_000).await;
    for i in 0..10 {
        client
            .post("/v1/echo")
            .body(format!("a {i}"))
            .send()
            .await
            .unwrap();
    }
    let Stack {
        funding,
        key,
        upstream,
        gateway,
        server,
        dir,
    } = stack;
    server.stop().await;
    gateway.shutdown(Duration::from_secs(5)).await.unwrap();
    drop(gateway);
    let mut s = settings(dir.path());
    promise(&mut s);
    let (_gateway, server) = reopen_gateway(s, &key, &funding, &upstream).await;
    let st = state(&server.url(), &ch).await;
    assert!(!st.restore_required);
    assert_eq!(st.size, 10);
    server.stop().await;
    upstream.stop().await;
}

/// A checkpoint signed right after a promised receipt covers a record that may not be durable
/// yet: the gateway waits for it (within the promise's bound) and cosigns, never refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_over_promised_records_wait_for_durability() {
    let stack = Stack::start(promise).await;
    let (_ch, client, _cdir) = stack.client(1_000_000).await;
    for i in 0..30u64 {
        client
            .post("/v1/echo")
            .body(format!("a {i}"))
            .send()
            .await
            .unwrap();
        let signed = client.checkpoint().await.unwrap();
        assert_eq!(signed.checkpoint.size, i + 1);
        assert!(signed.provider_cosignature.is_some());
    }
    stack.stop().await;
}
