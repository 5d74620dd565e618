//! Generates a valid synthetic statement for benchmarking `tally verify`:
//!
//! ```sh
//! cargo run --release -p tally-cli --example gen-statement -- 1000000 /tmp/statement.jsonl
//! target/release/tally verify --statement /tmp/statement.jsonl
//! ```
//!
//! Records alternate between a fixed-price route (10) and a metered one (2 per unit, 1–50
//! units), all signed by fixed test keys, with a cosigned checkpoint (note + EIP-712) every
//! 100,000 records and at the end. Keys are derived from constant seeds: this is test data.

use std::time::Instant;

use alloy::primitives::{Address, B256};
use alloy::signers::local::PrivateKeySigner;
use tally_core::encoding::Canonical;
use tally_core::request::{request_hash, response_hash, RequestSalt};
use tally_core::{
    Authorization, ChannelId, Checkpoint, Outcome, Record, SecretKey, SignedCheckpoint,
};
use tally_http::payment::WireEip712Sig;
use tally_http::terms::{ChainTerms, CheckpointPolicy, PathMatch, RefundPolicy, TERMS_FORMAT};
use tally_http::{Amount, Price, RoutePrice, Terms, WireCheckpoint, WireRecord};
use tally_log::{Blake3Hasher, MemoryTree};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (n, out) = match (
        args.first().and_then(|a| a.parse::<u64>().ok()),
        args.get(1),
    ) {
        (Some(n), Some(o)) => (n, std::path::PathBuf::from(o)),
        _ => {
            eprintln!("usage: gen-statement RECORDS OUT.jsonl");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let client = SecretKey::from_seed(&[1; 32]);
    let provider = SecretKey::from_seed(&[2; 32]);
    let signer = PrivateKeySigner::from_bytes(&B256::repeat_byte(3)).unwrap_or_else(|e| {
        eprintln!("checkpoint key: {e}");
        std::process::exit(2)
    });
    let contract = Address::repeat_byte(0xdd);
    let channel = ChannelId([7; 32]);
    let terms = Terms {
        format: TERMS_FORMAT.into(),
        provider_key: provider.public(),
        chain: ChainTerms {
            chain_id: 31337,
            contract: contract.to_string(),
            asset: Address::repeat_byte(0xcc).to_string(),
            pay_to: Address::repeat_byte(0xbb).to_string(),
        },
        credit_limit: Amount(u128::MAX / 2),
        max_lanes: 1,
        checkpoint: CheckpointPolicy {
            every_records: 100_000,
            every_seconds: 0,
            every_amount: Amount(0),
        },
        charge_server_errors: false,
        refunds: RefundPolicy {
            server_errors: true,
            over_max: true,
        },
        max_request_bytes: 1 << 20,
        max_response_bytes: 8 << 20,
        routes: vec![
            RoutePrice {
                method: "GET".into(),
                path: "/v1/items".into(),
                path_match: PathMatch::Prefix,
                price: Price::Fixed { amount: Amount(10) },
            },
            RoutePrice {
                method: "POST".into(),
                path: "/v1/complete".into(),
                path_match: PathMatch::Exact,
                price: Price::Metered {
                    units_header: "x-tokens".into(),
                    unit_price: Amount(2),
                    max_amount: Amount(4000),
                    min_charge: Amount(0),
                },
            },
        ],
        unmatched: Default::default(),
    };
    let terms_bytes = terms.render();
    let terms_hash = tally_http::terms::terms_hash(&terms_bytes);
    let domain = tally_chain::eip712::domain(31337, contract);
    let mut tree = MemoryTree::new(Blake3Hasher);
    let mut cumulative = 0u128;
    let mut records = Vec::with_capacity(n as usize);
    let mut checkpoints = Vec::new();
    for seq in 0..n {
        let metered = seq % 2 == 1;
        let (method, path, max, units, amount) = if metered {
            let units = seq % 50 + 1;
            (
                "POST",
                "/v1/complete",
                4000u128,
                units,
                i128::from(units as u32) * 2,
            )
        } else {
            ("GET", "/v1/items", 10u128, 1, 10)
        };
        // One lane, each request acknowledging the log before it.
        let auth = Authorization {
            version: tally_core::VERSION,
            channel_id: channel,
            lane: 0,
            seq,
            // A statement never carries the salt: any fixed one makes a valid bill.
            request_hash: request_hash(
                &RequestSalt([0x5a; 32]),
                method,
                path,
                "",
                &seq.to_le_bytes(),
            ),
            max_amount: max,
            ack_size: seq,
            ack_root: tree.root(),
            ack_cumulative: cumulative,
            terms_hash,
        };
        let sig = auth.sign(&client);
        cumulative += amount as u128;
        let outcome = Outcome {
            version: tally_core::VERSION,
            channel_id: channel,
            lane: 0,
            seq,
            index: seq,
            authorization_hash: auth.signed_hash(&sig),
            units,
            amount,
            cumulative,
            response_hash: response_hash(200, b"ok"),
            time_ms: 1_700_000_000_000 + seq,
        };
        let record = Record::new(auth, sig, outcome);
        tree.push(&record.to_bytes());
        records.push(record);
        let size = seq + 1;
        if size % 100_000 == 0 || size == n {
            let cp = Checkpoint {
                channel_id: channel,
                size,
                root: tree.root(),
                cumulative,
            };
            let note = SignedCheckpoint {
                checkpoint: cp,
                client_signature: cp.sign_client(&client),
                provider_cosignature: Some((
                    1_700_000_000,
                    cp.cosign_provider(&provider, 1_700_000_000),
                )),
            }
            .to_note(&client.public(), &provider.public());
            let chain =
                tally_chain::ChainCheckpoint::sign(&signer, &domain, cp).unwrap_or_else(|e| {
                    eprintln!("eip712: {e}");
                    std::process::exit(2)
                });
            checkpoints.push(WireCheckpoint {
                note,
                eip712: WireEip712Sig::from_sig(&chain.sig),
            });
        }
    }
    eprintln!(
        "signed {n} authorizations in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Provider signatures are not part of the leaves: sign them on all cores.
    let threads = std::thread::available_parallelism().map_or(2, |t| t.get());
    let chunk = records.len().div_ceil(threads).max(1);
    let mut wire: Vec<WireRecord> = Vec::with_capacity(records.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = records
            .chunks(chunk)
            .map(|part| {
                let provider = &provider;
                s.spawn(move || {
                    part.iter()
                        .map(|r| WireRecord::new(r, provider.sign(&r.outcome.to_bytes())))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(v) => wire.extend(v),
                Err(_) => {
                    eprintln!("a signing thread panicked");
                    std::process::exit(2)
                }
            }
        }
    });
    let header = tally_cli::statement::StatementHeader {
        format: tally_cli::statement::STATEMENT_FORMAT.into(),
        channel_id: channel,
        client_key: client.public(),
        provider_key: provider.public(),
        terms: Some(String::from_utf8_lossy(&terms_bytes).into_owned()),
        checkpoints,
    };
    let mut w = match tally_cli::statement::StatementWriter::create(&out, &header) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2)
        }
    };
    for r in &wire {
        if let Err(e) = w.push(r) {
            eprintln!("{e}");
            std::process::exit(2)
        }
    }
    if let Err(e) = w.finish() {
        eprintln!("{e}");
        std::process::exit(2)
    }
    eprintln!(
        "wrote {n} records ({} checkpoints) to {} in {:.1} s; cumulative {cumulative}",
        header.checkpoints.len(),
        out.display(),
        started.elapsed().as_secs_f64()
    );
}
