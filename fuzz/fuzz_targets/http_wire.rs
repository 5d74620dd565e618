//! The HTTP binding's decoders (tally-http, spec/HTTP.md §2–§8) on arbitrary bytes: every
//! header value a gateway or client reads (`base64(JSON)`) and every JSON body it parses
//! never panics, and whatever decodes is taken on through its inner decoders (the canonical
//! authorization, outcome and record bytes, the EIP-712 signature, the checkpoint note).
//! Each input is tried both as a raw header value and as the JSON inside one, so the fuzzer
//! reaches the JSON decoders without having to discover base64 first.
#![no_main]
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use tally_http::api::{
    ChannelState, Checkpoints, CloseRequest, CloseSigned, ConsistencyProof, DisputeGranted,
    DisputeRequest, DisputedExchange, InclusionProof, RecordsPage, RestoreUpload, Restored,
    SessionBound,
};
use tally_http::headers::decode_header;
use tally_http::{
    ErrorBody, PaymentPayload, PaymentRequired, PaymentResponse, SessionBinding, Terms,
    WireCheckpoint,
};

fn headers(value: &[u8]) {
    if let Ok(p) = decode_header::<PaymentPayload>("PAYMENT-SIGNATURE", value) {
        let _ = p.authorization_and_bytes();
        // Any requirement matches itself (spec/HTTP.md §3.2).
        assert_eq!(p.accepted.mismatch(&p.accepted), None);
    }
    if let Ok(r) = decode_header::<PaymentResponse>("PAYMENT-RESPONSE", value) {
        let _ = r.extra.receipt.receipt();
    }
    let _ = decode_header::<PaymentRequired>("PAYMENT-REQUIRED", value);
    if let Ok(c) = decode_header::<WireCheckpoint>("TALLY-CHECKPOINT", value) {
        let _ = c.eip712.parts();
        let body_end = c.note.find("\n\n").map_or(0, |i| i + 1);
        let _ = tally_core::Checkpoint::parse_body(&c.note[..body_end]);
    }
    // TALLY-READ-AUTH is not base64(JSON): a parsed token must re-render to the same bytes.
    if let Ok(t) = tally_http::ReadToken::parse(value) {
        assert_eq!(
            t.to_header().as_bytes(),
            value,
            "read token is not canonical"
        );
    }
}

fn bodies(json: &[u8]) {
    let _ = serde_json::from_slice::<Terms>(json);
    let _ = serde_json::from_slice::<ErrorBody>(json);
    let _ = serde_json::from_slice::<SessionBinding>(json);
    let _ = serde_json::from_slice::<SessionBound>(json);
    let _ = serde_json::from_slice::<ChannelState>(json);
    let _ = serde_json::from_slice::<InclusionProof>(json);
    let _ = serde_json::from_slice::<ConsistencyProof>(json);
    let _ = serde_json::from_slice::<Checkpoints>(json);
    let _ = serde_json::from_slice::<DisputeRequest>(json);
    let _ = serde_json::from_slice::<DisputeGranted>(json);
    let _ = serde_json::from_slice::<DisputedExchange>(json);
    let _ = serde_json::from_slice::<Restored>(json);
    if let Ok(u) = serde_json::from_slice::<RestoreUpload>(json) {
        let _ = u.decode_statement();
        for r in &u.records {
            let _ = r.decode();
        }
    }
    if let Ok(c) = serde_json::from_slice::<WireCheckpoint>(json) {
        let _ = c.eip712.parts();
    }
    if let Ok(c) = serde_json::from_slice::<CloseRequest>(json) {
        let _ = c.eip712.parts();
    }
    if let Ok(c) = serde_json::from_slice::<CloseSigned>(json) {
        let _ = (c.signer_eip712.parts(), c.payee_eip712.parts());
    }
    if let Ok(page) = serde_json::from_slice::<RecordsPage>(json) {
        for r in &page.records {
            let _ = r.decode();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    headers(data);
    headers(
        base64::engine::general_purpose::STANDARD
            .encode(data)
            .as_bytes(),
    );
    bodies(data);
});
