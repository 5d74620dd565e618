//! Microbenchmarks of the gateway's per-call work besides the crypto floor (BENCHMARKS.md,
//! "Lanes (protocol v2)"): decoding `PAYMENT-SIGNATURE` (base64 + JSON + canonical bytes),
//! the request hash, building and encoding the record and the outcome, rendering
//! `PAYMENT-RESPONSE`, and reading a historical log state from the store the way admission's
//! acknowledgement check does when the acknowledged size is not in memory. Each is timed in
//! the thread's CPU time (`/proc/thread-self/schedstat`), best of five rounds, so the
//! machine's other load does not inflate it.
//!
//! `cargo run --release -p tally-e2e --example hotpath`

use std::time::Instant;

use tally_core::encoding::Canonical;
use tally_core::{
    Authorization, ChannelId, Hash, Outcome, Record, RequestSalt, SecretKey, Signature,
};
use tally_http::headers::{decode_header, encode_header};
use tally_http::payment::{PaymentPayload, PaymentResponse, Requirement, RequirementExtra};

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Best of five rounds of `n` calls, µs of this thread's CPU per call.
fn time(name: &str, n: u32, mut f: impl FnMut(u32)) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..5 {
        let (c0, w0) = (thread_cpu_ns(), Instant::now());
        for i in 0..n {
            f(i);
        }
        let cpu = thread_cpu_ns() - c0;
        let ns = if cpu > 0 {
            cpu as f64
        } else {
            w0.elapsed().as_nanos() as f64
        };
        best = best.min(ns / 1e3 / f64::from(n));
    }
    println!("{name:<62} {best:>8.2} us");
    best
}

fn authorization(i: u64) -> Authorization {
    Authorization {
        version: tally_core::VERSION,
        channel_id: ChannelId([0x42; 32]),
        lane: (i % 8) as u32,
        seq: i / 8,
        request_hash: Hash([i as u8; 32]),
        max_amount: 1_000,
        ack_size: i,
        ack_root: Hash([7; 32]),
        ack_cumulative: u128::from(i) * 10,
        terms_hash: Hash([9; 32]),
    }
}

fn outcome(auth: &Authorization, sig: &Signature, index: u64) -> Outcome {
    Outcome {
        version: tally_core::VERSION,
        channel_id: auth.channel_id,
        lane: auth.lane,
        seq: auth.seq,
        index,
        authorization_hash: auth.signed_hash(sig),
        units: tally_core::ONE_CALL,
        amount: 10,
        cumulative: u128::from(index + 1) * 10,
        response_hash: Hash([4; 32]),
        time_ms: 1_700_000_000_000,
    }
}

#[tokio::main]
async fn main() {
    let key = SecretKey::from_seed(&[1u8; 32]);
    let public = key.public();
    let auth = authorization(5);
    let sig = auth.sign(&key);
    let accepted = Requirement {
        scheme: "tally".into(),
        network: "eip155:31337".into(),
        amount: tally_http::Amount(10),
        asset: format!("0x{}", "cc".repeat(20)),
        pay_to: format!("0x{}", "bb".repeat(20)),
        max_timeout_seconds: 60,
        extra: RequirementExtra {
            contract: format!("0x{}", "dd".repeat(20)),
            provider_key: public.into(),
            terms_hash: Hash([7; 32]),
            terms_url: "/.well-known/tally".into(),
        },
    };
    let header = encode_header(
        "PAYMENT-SIGNATURE",
        &PaymentPayload::new(accepted, &auth, sig),
    )
    .expect("encoding the header");
    println!("PAYMENT-SIGNATURE: {} bytes", header.len());
    let floor_verify = time("ed25519 strict verify (reference)", 2000, |_| {
        assert!(auth.verify(&public, &sig).is_ok());
    });
    let floor_sign = time("ed25519 sign (reference)", 2000, |i| {
        let mut m = [0u8; 189];
        m[0] = i as u8;
        std::hint::black_box(key.sign(&m));
    });
    let mut other = 0.0;
    other += time("decode PAYMENT-SIGNATURE (base64 + JSON)", 20_000, |_| {
        let p: PaymentPayload = decode_header("PAYMENT-SIGNATURE", header.as_bytes()).unwrap();
        std::hint::black_box(p);
    });
    let payload: PaymentPayload = decode_header("PAYMENT-SIGNATURE", header.as_bytes()).unwrap();
    other += time(
        "authorization_and_bytes (hex + canonical decode)",
        20_000,
        |_| {
            std::hint::black_box(payload.authorization_and_bytes().unwrap());
        },
    );
    let salt = RequestSalt([5; 32]);
    other += time("request hash (7-byte body)", 50_000, |_| {
        std::hint::black_box(tally_core::request::request_hash(
            &salt, "POST", "/v1/echo", "", b"payload",
        ));
    });
    let auth_bytes = auth.to_bytes();
    other += time(
        "authorization hash (blake3 of bytes + signature)",
        50_000,
        |_| {
            std::hint::black_box(tally_core::hash::blake3_of(&[&auth_bytes, &sig.0]));
        },
    );
    other += time("record: new + check_consistency + to_bytes", 20_000, |i| {
        let r = Record::new(auth, sig, outcome(&auth, &sig, u64::from(i)));
        r.check_consistency().unwrap();
        std::hint::black_box(r.to_bytes());
    });
    let out = outcome(&auth, &sig, 5);
    other += time("outcome to_bytes", 50_000, |_| {
        std::hint::black_box(out.to_bytes());
    });
    let outcome_bytes = out.to_bytes();
    let receipt_sig = key.sign(&outcome_bytes);
    other += time("render PAYMENT-RESPONSE", 50_000, |_| {
        std::hint::black_box(
            PaymentResponse::receipt_header(
                "eip155:31337",
                "0xAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAaAa",
                10,
                &outcome_bytes,
                &receipt_sig,
            )
            .unwrap(),
        );
    });
    println!(
        "sum of the above besides the crypto: {other:.2} us (crypto floor here: {:.2} us)",
        floor_verify + floor_sign
    );
    store_reads().await;
}

/// Admission's `state_at`: the root at an older size and the cumulative from the record
/// before it, from a store of 20,000 records of one channel (tiles cached).
async fn store_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = tally_log::LogStore::open(dir.path().join("log")).expect("store");
    let channel = ChannelId([0x42; 32]);
    let key = SecretKey::from_seed(&[1u8; 32]);
    let n = 20_000u64;
    for chunk in 0..(n / 500) {
        let records = (chunk * 500..(chunk + 1) * 500)
            .map(|i| {
                let a = authorization(i);
                let s = a.sign(&key);
                Record::new(a, s, outcome(&a, &s, i)).to_bytes()
            })
            .collect();
        store.append(channel, records).await.expect("append");
    }
    time("store head()", 50_000, |_| {
        std::hint::black_box(store.head(&channel));
    });
    time(
        "state_at: root_at + record + Record::from_bytes (recent size)",
        5_000,
        |i| {
            let size = n - 1 - u64::from(i % 16);
            let root = store.root_at(&channel, size).unwrap();
            let bytes = store.record(&channel, size - 1).unwrap();
            let r = Record::from_bytes(&bytes).unwrap();
            std::hint::black_box((root, r.outcome.cumulative));
        },
    );
}
