//! The crypto floor of a metered call (DESIGN.md §5) and the cost of checking a record, on this
//! machine, in one run: ed25519 sign, strict verify, batch verify per signature, and full
//! record + receipt verification one by one and in batches.
//!
//! `cargo bench -p tally-core --bench crypto`

use std::time::Instant;

use tally_core::encoding::Canonical;
use tally_core::signature::{verify_batch, BatchItem};
use tally_core::{Authorization, ChannelId, Hash, Outcome, Record, SecretKey};

fn per_op(n: usize, f: impl FnOnce()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64() * 1e6 / n as f64
}

fn main() {
    let client = SecretKey::from_seed(&[1; 32]);
    let provider = SecretKey::from_seed(&[2; 32]);
    let (cpk, ppk) = (client.public(), provider.public());
    let n = 20_000usize;
    let mut records = Vec::with_capacity(n);
    let mut receipts = Vec::with_capacity(n);
    for seq in 0..n as u64 {
        let auth = Authorization {
            version: tally_core::VERSION,
            channel_id: ChannelId([3; 32]),
            lane: (seq % 8) as u32,
            seq: seq / 8,
            request_hash: Hash([seq as u8; 32]),
            max_amount: 1000,
            ack_size: seq,
            ack_root: Hash([4; 32]),
            ack_cumulative: seq as u128 * 10,
            terms_hash: Hash([5; 32]),
        };
        let sig = auth.sign(&client);
        let outcome = Outcome {
            version: tally_core::VERSION,
            channel_id: auth.channel_id,
            lane: auth.lane,
            seq: auth.seq,
            index: seq,
            authorization_hash: auth.signed_hash(&sig),
            units: tally_core::ONE_CALL,
            amount: 10,
            cumulative: seq as u128 * 10 + 10,
            response_hash: Hash([6; 32]),
            time_ms: seq,
        };
        let receipt = outcome.sign(&provider);
        records.push(Record::new(auth, sig, outcome));
        receipts.push(receipt.signature);
    }
    let msgs: Vec<Vec<u8>> = records.iter().map(|r| r.authorization.to_bytes()).collect();

    let sign = per_op(n, || {
        for m in &msgs {
            std::hint::black_box(client.sign(m));
        }
    });
    let verify = per_op(n, || {
        for (m, r) in msgs.iter().zip(&records) {
            assert!(cpk.verify(m, &r.client_signature).is_ok());
        }
    });
    let batch = per_op(n, || {
        for chunk in msgs.chunks(64).zip(records.chunks(64)) {
            let items: Vec<BatchItem> = chunk
                .0
                .iter()
                .zip(chunk.1)
                .map(|(m, r)| BatchItem {
                    key: &cpk,
                    message: m,
                    signature: &r.client_signature,
                })
                .collect();
            assert!(verify_batch(&items).is_ok());
        }
    });
    println!("ed25519 sign:                    {sign:.1} us");
    println!("ed25519 strict verify:           {verify:.1} us");
    println!("ed25519 batch verify (64):       {batch:.1} us per signature");
    println!(
        "crypto floor of a metered call (1 strict verify + 1 sign): {:.1} us",
        verify + sign
    );

    // A full record check: decode, consistency, client signature, provider signature.
    let bytes: Vec<Vec<u8>> = records.iter().map(|r| r.to_bytes()).collect();
    let single = per_op(n, || {
        for (b, s) in bytes.iter().zip(&receipts) {
            let r = Record::from_bytes(b).expect("record");
            r.verify(&cpk).expect("client");
            r.verify_receipt(&ppk, s).expect("provider");
        }
    });
    let batched = per_op(n, || {
        for (bs, ss) in bytes.chunks(64).zip(receipts.chunks(64)) {
            let recs: Vec<Record> = bs
                .iter()
                .map(|b| Record::from_bytes(b).expect("record"))
                .collect();
            let auth_bytes: Vec<Vec<u8>> =
                recs.iter().map(|r| r.authorization.to_bytes()).collect();
            let out_bytes: Vec<Vec<u8>> = recs.iter().map(|r| r.outcome.to_bytes()).collect();
            let mut items = Vec::with_capacity(2 * recs.len());
            for (i, r) in recs.iter().enumerate() {
                r.check_consistency().expect("consistent");
                items.push(BatchItem {
                    key: &cpk,
                    message: &auth_bytes[i],
                    signature: &r.client_signature,
                });
                items.push(BatchItem {
                    key: &ppk,
                    message: &out_bytes[i],
                    signature: &ss[i],
                });
            }
            verify_batch(&items).expect("batch");
        }
    });
    println!(
        "record + receipt check, one by one: {single:.1} us/record ({:.0} records/s per core)",
        1e6 / single
    );
    println!(
        "record + receipt check, batches of 64 records: {batched:.1} us/record ({:.0} records/s per core)",
        1e6 / batched
    );
}
