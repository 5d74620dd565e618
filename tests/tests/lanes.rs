//! Lanes from the client's side (spec/PROTOCOL.md §5.4–§5.5): receipts that arrive out of
//! index order, a receipt that never arrives, and a client that restarts while its requests
//! are in flight. Real upstream, real gateway, real client, loopback TCP.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tally_client::ClientError;
use tally_core::request::request_hash;
use tally_core::Record;
use tally_e2e::*;
use tally_http::headers::PAYMENT_RESPONSE;
use tally_http::Reason;

/// Waits until the gateway's log of `ch` has `size` records (at most 5 s).
async fn wait_for_size(stack: &Stack, ch: &TestChannel, size: u64) {
    for _ in 0..500 {
        if stack
            .gateway
            .store()
            .unwrap()
            .head(&ch.id)
            .map_or(0, |h| h.size)
            >= size
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the gateway never recorded {size} records");
}

fn log_of(stack: &Stack, ch: &TestChannel) -> Vec<Record> {
    checked_log(
        &stack.gateway.store().unwrap(),
        &ch.id,
        &ch.session.public(),
    )
}

/// A slow answer on one lane and fast ones on others: the fast receipts arrive first, for
/// indices after the slow one's, and are held (the mirror does not move past the gap) until
/// the slow receipt fills it; the mirror then holds the log in index order, byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_receipts_are_held_until_the_gap_fills() {
    let stack = Stack::start(|_| {}).await;
    let ch = open_channel(&stack.funding, 1_000_000);
    let hold: Hold = Arc::new(|body: &[u8]| {
        if body.starts_with(b"late") {
            Duration::from_millis(1_500)
        } else {
            Duration::ZERO
        }
    });
    let proxy = delaying_proxy(stack.server.url(), hold).await;
    let cdir = tmp();
    let client = connect(&proxy.url(), cdir.path(), &ch).await;

    let c = client.clone();
    let late = tokio::spawn(async move { c.post("/v1/echo").body("late").send().await });
    // Recorded at index 0; its receipt is held by the proxy.
    wait_for_size(&stack, &ch, 1).await;
    let mut fast = Vec::new();
    for i in 0..4 {
        let c = client.clone();
        fast.push(tokio::spawn(async move {
            c.post("/v1/echo").body(format!("fast {i}")).send().await
        }));
    }
    let mut indices = Vec::new();
    for t in fast {
        let r = t.await.unwrap().unwrap_or_else(|e| panic!("fast: {e}"));
        let o = r.receipt.unwrap().outcome;
        assert_ne!(o.lane, 0, "lane 0 is busy with the late request");
        indices.push(o.index);
    }
    indices.sort_unstable();
    assert_eq!(indices, vec![1, 2, 3, 4]);
    assert!(
        !late.is_finished(),
        "the late receipt arrived before the fast ones"
    );
    // The fast receipts wait behind the gap at index 0.
    assert_eq!(client.mirror_head().await.0, 0, "the mirror skipped a gap");

    let r = late.await.unwrap().unwrap_or_else(|e| panic!("late: {e}"));
    let o = r.receipt.unwrap().outcome;
    assert_eq!((o.index, o.lane, o.seq), (0, 0, 0));
    client.flush().await.unwrap();
    let (size, root, cumulative) = client.mirror_head().await;
    let head = stack.gateway.store().unwrap().head(&ch.id).unwrap();
    assert_eq!((size, root), (head.size, head.root));
    assert_eq!(cumulative, 5 * ECHO_PRICE);
    assert_eq!(log_of(&stack, &ch).len(), 5);
    drop(client);
    assert_mirror_is_log(cdir.path(), &ch, &stack.gateway.store().unwrap()).await;
    stack.stop().await;
}

/// A request the gateway records but whose answer never reaches the client (its transport
/// times out): later requests on other lanes succeed, the gap is filled from the records
/// endpoint, the lost request's lane continues at the next seq, and a retry of exactly the
/// lost request is answered without a second charge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_receipt_is_fetched_later_and_never_charged_twice() {
    let stack = Stack::start(|_| {}).await;
    let ch = open_channel(&stack.funding, 1_000_000);
    let hold: Hold = Arc::new(|body: &[u8]| {
        if body == b"lost" {
            Duration::from_secs(4)
        } else {
            Duration::ZERO
        }
    });
    let proxy = delaying_proxy(stack.server.url(), hold).await;
    let cdir = tmp();
    let mut config = client_config(&proxy.url(), cdir.path(), &ch);
    config.timeout = Duration::from_millis(600);
    config.retries = 0;
    let client = tally_client::Client::connect(config).await.unwrap();

    match client.post("/v1/echo").body("lost").send().await {
        Err(ClientError::Http(_)) => {}
        other => panic!("expected a transport timeout, got {other:?}"),
    }
    // The provider recorded it; the client has not seen it.
    let log = log_of(&stack, &ch);
    assert_eq!(log.len(), 1);
    assert_eq!(client.mirror_head().await.0, 0);
    // A retry of exactly the lost request (same lane, seq, signature), while it is its
    // lane's last: the held response again, not a second charge.
    let (auth, sig) = (log[0].authorization, log[0].client_signature);
    let gateway_url = stack.server.url();
    let retry = || raw_signed(&gateway_url, "/v1/echo", b"lost", &auth, &sig);
    let (status, headers, body) = retry().await;
    assert_eq!((status, body.as_slice()), (200, b"lost".as_slice()));
    assert!(headers.contains_key(PAYMENT_RESPONSE));
    assert_eq!(log_of(&stack, &ch).len(), 1, "the retry was charged again");

    let mut tasks = Vec::new();
    for i in 0..4 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            c.post("/v1/echo").body(format!("after {i}")).send().await
        }));
    }
    let mut lanes = BTreeMap::new();
    for t in tasks {
        let r = t.await.unwrap().unwrap_or_else(|e| panic!("after: {e}"));
        let o = r.receipt.unwrap().outcome;
        assert!(o.index >= 1);
        lanes.insert(o.lane, o.seq);
    }
    // Whichever request took lane 0 again learned that seq 0 was used.
    if let Some(seq) = lanes.get(&0) {
        assert_eq!(*seq, 1, "lane 0 reused the lost request's seq");
    }
    client.flush().await.unwrap();
    let (size, root, cumulative) = client.mirror_head().await;
    let head = stack.gateway.store().unwrap().head(&ch.id).unwrap();
    assert_eq!(
        (size, root),
        (head.size, head.root),
        "the gap was not filled"
    );
    assert_eq!(size, 5);
    assert_eq!(cumulative, 5 * ECHO_PRICE);

    let log = log_of(&stack, &ch);
    let salt = client.request_salt().await.unwrap();
    let lost_hash = request_hash(&salt, "POST", "/v1/echo", "", b"lost");
    let lost = log
        .iter()
        .filter(|r| r.authorization.request_hash == lost_hash)
        .count();
    assert_eq!(lost, 1, "the lost request is in the log once");
    // Once its lane moved on, the same retry is stale: refused, not recorded.
    if lanes.contains_key(&0) {
        let (status, _, body) = retry().await;
        assert_eq!(status, 409);
        assert!(matches!(reason(&body), Reason::StaleSeq { lane: 0, .. }));
    }
    assert_eq!(log_of(&stack, &ch).len(), 5, "the retry was recorded again");
    drop(client);
    assert_mirror_is_log(cdir.path(), &ch, &stack.gateway.store().unwrap()).await;
    stack.stop().await;
}

/// A client dropped while its requests are in flight (the upstream takes `LONG_MS`), and a
/// new one started on the same mirror at once: its requests on the same lanes wait for the
/// old ones (`lane_busy`), learn their seqs (`stale_seq`, resync) and are recorded after
/// them; every lane's seqs are strict, nothing is charged twice, the mirror is the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_restarting_with_requests_in_flight_continues_its_lanes() {
    const K: u64 = 6;
    let stack = Stack::start(|_| {}).await;
    let (ch, client, cdir) = stack.client(1_000_000).await;
    let mut before = Vec::new();
    for i in 0..K {
        let c = client.clone();
        before.push(tokio::spawn(async move {
            c.post("/v1/echo/long")
                .body(format!("before {i}"))
                .send()
                .await
        }));
    }
    // Admitted and at the upstream; then the client goes away mid-request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for t in &before {
        t.abort();
    }
    for t in before {
        assert!(t.await.is_err_and(|e| e.is_cancelled()));
    }
    drop(client);
    let client = reconnect(&stack.server.url(), cdir.path(), &ch).await;
    assert_eq!(
        client.mirror_head().await.0,
        0,
        "the old requests were still in flight at the reconnect"
    );
    let mut after = Vec::new();
    for i in 0..K {
        let c = client.clone();
        after.push(tokio::spawn(async move {
            c.post("/v1/echo").body(format!("after {i}")).send().await
        }));
    }
    for t in after {
        let r = t
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("after the restart: {e}"));
        let o = r.receipt.unwrap().outcome;
        // Each lane's seq 0 went to an old request, recorded first.
        assert_eq!(o.seq, 1, "lane {} continued at seq {}", o.lane, o.seq);
        assert!(o.index >= K);
    }
    client.flush().await.unwrap();
    let (size, root, cumulative) = client.mirror_head().await;
    let head = stack.gateway.store().unwrap().head(&ch.id).unwrap();
    assert_eq!((size, root), (head.size, head.root));
    assert_eq!(size, 2 * K);
    assert_eq!(cumulative, u128::from(2 * K) * ECHO_PRICE);
    let log = log_of(&stack, &ch);
    let salt = client.request_salt().await.unwrap();
    for (i, prefix) in (0..K).flat_map(|i| [(i, "before"), (i, "after")]) {
        let path = if prefix == "before" {
            "/v1/echo/long"
        } else {
            "/v1/echo"
        };
        let h = request_hash(&salt, "POST", path, "", format!("{prefix} {i}").as_bytes());
        let n = log
            .iter()
            .filter(|r| r.authorization.request_hash == h)
            .count();
        assert_eq!(n, 1, "{prefix} {i} recorded {n} times");
    }
    drop(client);
    assert_mirror_is_log(cdir.path(), &ch, &stack.gateway.store().unwrap()).await;
    stack.stop().await;
}
