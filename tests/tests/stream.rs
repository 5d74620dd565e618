//! Streamed paid responses over real TCP (spec/HTTP.md §5.7, DESIGN.md §9): a completion
//! streamed token by token is forwarded as it arrives and paid at its end, by input and
//! output tokens; the receipt comes as a final event, as a trailer and from the receipts
//! endpoint, the same signed outcome each time; the client catches a gateway whose bytes
//! or units do not match its receipt; cut streams are recorded as specified.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use tally_cli::mock_llm::{events, PATH};
use tally_cli::upstream::{INPUT_TOKEN_PRICE, OUTPUT_TOKEN_PRICE};
use tally_client::ClientError;
use tally_core::request::{body_hash, response_hash_with_body_hash};
use tally_core::Receipt;
use tally_e2e::paid::{accepted_at, cutting_proxy, next_auth, rewriting_proxy};
use tally_e2e::{connect, read_get, tmp, Stack, TOKEN_MS};
use tally_http::api::ReceiptFound;
use tally_http::headers::{decode_header, encode_header, PAYMENT_SIGNATURE};
use tally_http::stream::{FinalEvent, FinalEventSplitter};
use tally_http::{PaymentPayload, PaymentResponse};

const PROMPT: &str = "say hello to the bill";
const PROMPT_TOKENS: u64 = 5;

fn chat(tokens: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "model": "mock",
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
    }))
    .unwrap()
}

fn streamed(tokens: u64) -> Vec<u8> {
    events(PROMPT_TOKENS, tokens).concat().into_bytes()
}

fn price(tokens: u64) -> i128 {
    (u128::from(PROMPT_TOKENS) * INPUT_TOKEN_PRICE + u128::from(tokens) * OUTPUT_TOKEN_PRICE)
        as i128
}

fn receipt_of(header: &str) -> Receipt {
    let pr: PaymentResponse = decode_header("PAYMENT-RESPONSE", header.as_bytes()).unwrap();
    pr.extra.receipt.receipt().unwrap()
}

async fn endpoint_receipt(
    stack: &Stack,
    ch: &tally_e2e::TestChannel,
    lane: u32,
    seq: u64,
) -> String {
    let url = format!(
        "{}/tally/v1/channels/{}/receipts?lane={lane}&seq={seq}",
        stack.server.url(),
        ch.id.to_hex()
    );
    for _ in 0..200 {
        let resp = read_get(ch, &url).await;
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        if status.is_success() {
            let found: ReceiptFound = serde_json::from_slice(&body).unwrap();
            assert_eq!((found.lane, found.seq), (lane, seq));
            return found.payment_response;
        }
        // Still being recorded: lane_busy.
        assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the receipt of lane {lane} seq {seq} never came");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_completion_is_forwarded_as_it_arrives_and_paid_at_its_end() {
    let stack = Stack::start(|_| {}).await;
    let (ch, client, _dir) = stack.client(1_000_000).await;
    let tokens = 6;
    let started = Instant::now();
    let mut s = client
        .post(PATH)
        .header(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        )
        .body(chat(tokens))
        .send_streaming()
        .await
        .unwrap();
    assert_eq!(s.status(), 200);
    assert!(s.headers().get("payment-response").is_none());
    let (mut got, mut first) = (Vec::new(), None);
    while let Some(c) = s.chunk().await.unwrap() {
        first.get_or_insert(started.elapsed());
        got.extend_from_slice(&c);
    }
    let last = started.elapsed();
    assert_eq!(
        got,
        streamed(tokens),
        "exactly the upstream's bytes, without the receipt"
    );
    // Forwarded as it arrived: the first token was in hand while the upstream still had
    // `tokens` more events to send, a token delay apart.
    let first = first.unwrap();
    assert!(
        last - first >= Duration::from_millis((tokens - 1) * TOKEN_MS),
        "first chunk at {first:?}, last at {last:?}: not streamed"
    );
    let paid = s.finish().await.unwrap();
    assert!(!paid.broken);
    let receipt = paid.receipt.unwrap();
    let o = receipt.outcome;
    assert_eq!(o.units, [PROMPT_TOKENS, tokens, 0, 0]);
    assert_eq!(o.amount, price(tokens));
    assert_eq!(
        o.response_hash,
        response_hash_with_body_hash(200, &body_hash(&got))
    );
    // The receipts endpoint serves the same signed outcome.
    let again = receipt_of(&endpoint_receipt(&stack, &ch, o.lane, o.seq).await);
    assert_eq!(again, receipt);
    // The record is in the client's mirror, as in the provider's log.
    client.flush().await.unwrap();
    let (size, root, cumulative) = client.mirror_head().await;
    let head = stack.gateway.store().unwrap().head(&ch.id).unwrap();
    assert_eq!((size, root), (head.size, head.root));
    assert_eq!(cumulative, price(tokens) as u128);
    // A plain send() reads the same kind of stream whole, its receipt taken off the end.
    let whole = client.post(PATH).body(chat(2)).send().await.unwrap();
    assert_eq!(&whole.body[..], &streamed(2)[..]);
    assert_eq!(whole.receipt.unwrap().outcome.amount, price(2));
    stack.stop().await;
}

/// A hand-made paid request for a completion, with `TE: trailers` over HTTP/1.1, read frame
/// by frame: the body bytes and the trailers.
async fn trailer_request(
    stack: &Stack,
    ch: &tally_e2e::TestChannel,
    path: &str,
    body: &[u8],
    max_amount: u128,
) -> (Vec<u8>, http::HeaderMap) {
    let url = stack.server.url();
    let mut auth = next_auth(&stack.gateway, ch, path, body).await;
    auth.max_amount = max_amount;
    let payload = PaymentPayload::new(
        accepted_at(&url, "POST", path).await,
        &auth,
        auth.sign(&ch.session),
    );
    let header = encode_header("PAYMENT-SIGNATURE", &payload).unwrap();
    let tcp = tokio::net::TcpStream::connect(stack.server.addr)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::post(path)
        .header(http::header::HOST, stack.server.addr.to_string())
        .header(http::header::TE, "trailers")
        .header(PAYMENT_SIGNATURE, header)
        .body(http_body_util::Full::new(Bytes::from(body.to_vec())))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("payment-response").is_none());
    let (mut data, mut trailers) = (Vec::new(), None);
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.unwrap();
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    (data, trailers.expect("trailers"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_final_event_the_trailer_and_the_endpoint_carry_one_receipt() {
    let stack = Stack::start(|_| {}).await;
    let (ch, client, _dir) = stack.client(1_000_000).await;
    drop(client);
    let tokens = 3;
    let (data, trailers) = trailer_request(
        &stack,
        &ch,
        PATH,
        &chat(tokens),
        tally_cli::upstream::CHAT_MAX,
    )
    .await;
    let mut split = FinalEventSplitter::default();
    let mut body = split.feed(&data);
    let (rest, end) = split.finish();
    body.extend(rest);
    assert_eq!(body, streamed(tokens));
    let Some(FinalEvent::Receipt(event)) = end else {
        panic!("no final event: {end:?}")
    };
    let trailer = trailers["payment-response"].to_str().unwrap().to_string();
    assert_eq!(event, trailer, "the final event and the trailer");
    let receipt = receipt_of(&trailer);
    receipt.verify(&stack.key.public()).unwrap();
    let o = receipt.outcome;
    assert_eq!(o.units, [PROMPT_TOKENS, tokens, 0, 0]);
    assert_eq!(o.amount, price(tokens));
    assert_eq!(
        o.response_hash,
        response_hash_with_body_hash(200, &body_hash(&body))
    );
    assert_eq!(endpoint_receipt(&stack, &ch, o.lane, o.seq).await, trailer);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_answer_streams_to_a_client_that_takes_trailers() {
    let stack = Stack::start(|_| {}).await;
    let (ch, client, _dir) = stack.client(1_000_000).await;
    drop(client);
    // /v1/tokens?n= is metered from a response header; the body is plain text.
    let (body, trailers) = trailer_request(&stack, &ch, "/v1/tokens", b"", 300).await;
    assert_eq!(
        &body[..],
        b"0 tokens",
        "no final event outside event streams"
    );
    let receipt = receipt_of(trailers["payment-response"].to_str().unwrap());
    assert_eq!(
        receipt.outcome.response_hash,
        response_hash_with_body_hash(200, &body_hash(&body))
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_upstream_breaks_is_a_free_502() {
    let stack = Stack::start(|_| {}).await;
    let (_ch, client, _dir) = stack.client(1_000_000).await;
    let mut s = client
        .post(&format!("{PATH}?fail_after=3"))
        .body(chat(8))
        .send_streaming()
        .await
        .unwrap();
    let mut got = Vec::new();
    while let Some(c) = s.chunk().await.unwrap() {
        got.extend_from_slice(&c);
    }
    // The tokens forwarded before the break (the upstream's last write before it died may
    // or may not have left its socket).
    let all = events(PROMPT_TOKENS, 8);
    let three: Vec<u8> = all[..3].concat().into_bytes();
    assert!(
        got.len() >= all[0].len() && three.starts_with(&got),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let paid = s.finish().await.unwrap();
    assert!(paid.broken, "recorded as a broken stream");
    let o = paid.receipt.unwrap().outcome;
    assert_eq!((o.units, o.amount), ([0; 4], 0), "server errors are free");
    assert_eq!(
        o.response_hash,
        response_hash_with_body_hash(502, &body_hash(&got))
    );
    assert_eq!(paid.exchange.status, 502);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_pays_for_what_the_upstream_reported() {
    let stack = Stack::start(|_| {}).await;
    let (ch, client, _dir) = stack.client(1_000_000).await;
    let tokens = 8;
    let mut s = client
        .post(PATH)
        .body(chat(tokens))
        .send_streaming()
        .await
        .unwrap();
    let first = s.chunk().await.unwrap().expect("a first token");
    assert!(!first.is_empty());
    drop(s); // Hangs up after the first token.
    let o = receipt_of(&endpoint_receipt(&stack, &ch, 0, 0).await).outcome;
    assert_eq!(
        o.units,
        [PROMPT_TOKENS, tokens, 0, 0],
        "the upstream's report, read to its end"
    );
    assert_eq!(o.amount, price(tokens));
    // The record covers what was forwarded before the client left, not the whole answer.
    assert_ne!(
        o.response_hash,
        response_hash_with_body_hash(200, &body_hash(&streamed(tokens)))
    );
    // The client's next call resyncs the lane and mirrors the record it never got a
    // receipt for.
    let next = client
        .post(PATH)
        .body(chat(1))
        .send_streaming()
        .await
        .unwrap();
    let paid = next.finish().await.unwrap();
    assert_eq!(paid.receipt.unwrap().outcome.index, 1);
    client.flush().await.unwrap();
    assert_eq!(client.mirror_head().await.0, 2);
    stack.stop().await;
}

/// A client behind a proxy that rewrites the gateway's stream: `edit` applies to the whole
/// answer; the receipt inside is left as the gateway signed it.
async fn through_rewriting_proxy(edit: fn(String) -> String) -> Result<(), ClientError> {
    let stack = Stack::start(|_| {}).await;
    let ch = tally_e2e::open_channel(&stack.funding, 1_000_000);
    let proxy = rewriting_proxy(
        stack.server.url(),
        std::sync::Arc::new(move |bytes: Vec<u8>| {
            edit(String::from_utf8(bytes).unwrap()).into_bytes()
        }),
    )
    .await;
    let dir = tmp();
    let client = connect(&proxy.url(), dir.path(), &ch).await;
    let s = client.post(PATH).body(chat(4)).send_streaming().await?;
    let out = s.finish().await.map(|_| ());
    let stopped = client.stopped().await;
    proxy.stop().await;
    stack.stop().await;
    assert!(out.is_err() == stopped.is_some(), "{out:?} / {stopped:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_catches_bytes_or_units_that_are_not_the_receipts() {
    // One token changed: the hash of the bytes received is not the receipt's.
    let got = through_rewriting_proxy(|s| s.replacen("\"content\":\"", "\"content\":\"X", 1)).await;
    assert!(
        matches!(
            got,
            Err(ClientError::Misbehavior(
                tally_client::Misbehavior::WrongResponseHash
            ))
        ),
        "{got:?}"
    );
    // The usage the client saw is not what was charged, at the same amount (8 prompt and 3
    // completion tokens cost what 5 and 4 do): the units are checked, not only the sum.
    let got = through_rewriting_proxy(|s| {
        s.replace("\"prompt_tokens\":5", "\"prompt_tokens\":8")
            .replace("\"completion_tokens\":4", "\"completion_tokens\":3")
    })
    .await;
    assert!(
        matches!(
            got,
            Err(ClientError::Misbehavior(
                tally_client::Misbehavior::WrongUnits { .. }
            ))
        ),
        "{got:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_cut_by_the_network_is_lost_not_a_misbehavior() {
    let stack = Stack::start(|_| {}).await;
    let ch = tally_e2e::open_channel(&stack.funding, 1_000_000);
    let proxy = cutting_proxy(stack.server.url(), 100).await;
    let dir = tmp();
    let client = connect(&proxy.url(), dir.path(), &ch).await;
    let mut s = client
        .post(PATH)
        .body(chat(3))
        .send_streaming()
        .await
        .unwrap();
    let mut got = Vec::new();
    let cut = loop {
        match s.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => panic!("the stream ended cleanly"),
            Err(e) => break e,
        }
    };
    assert!(matches!(cut, ClientError::Http(_)), "{cut:?}");
    assert!(got.len() <= 100, "only what came through");
    let end = s.finish().await;
    assert!(
        matches!(end, Err(ClientError::StreamCut { seq: 0 })),
        "{end:?}"
    );
    assert!(
        client.stopped().await.is_none(),
        "a network cut blames nobody"
    );
    // The record the gateway made comes into the mirror before the lane's next use.
    let next = client
        .post(PATH)
        .body(chat(1))
        .send_streaming()
        .await
        .unwrap();
    let paid = next.finish().await.unwrap();
    assert_eq!(paid.receipt.unwrap().outcome.index, 1);
    client.flush().await.unwrap();
    let (size, root, _) = client.mirror_head().await;
    let head = stack.gateway.store().unwrap().head(&ch.id).unwrap();
    assert_eq!((size, root), (2, head.root));
    proxy.stop().await;
    stack.stop().await;
}
