//! Writes spec/vectors/: message encodings, hashes and signatures under fixed test keys, BLAKE3
//! tree roots for sizes 0..=64, and BLAKE3 inclusion and consistency proofs with mutated
//! negatives in the layout of the RFC 6962 vectors.
//!
//! Run: `cargo run -p tally-log --example gen-vectors`. The test `vectors.rs` calls
//! [`generate`] and fails if the committed files differ.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use tally_core::bundle::{ProofBundle, BUNDLE_FORMAT};
use tally_core::checkpoint::SignedCheckpoint;
use tally_core::encoding::Canonical;
use tally_core::request::{request_hash, response_hash, RequestSalt};
use tally_core::{Authorization, ChannelId, Checkpoint, Hash, Outcome, Record, SecretKey};
use tally_log::{consistency_proof, inclusion_proof, Blake3Hasher, MemoryTree, TreeHasher};

/// The seed of the test client's session key.
pub const CLIENT_SEED: [u8; 32] = [0x01; 32];
/// The seed of the test provider's key.
pub const PROVIDER_SEED: [u8; 32] = [0x02; 32];

/// The leaf data of leaf `i` in the tree vectors.
pub fn tree_leaf(i: u64) -> Vec<u8> {
    format!("tally leaf {i}").into_bytes()
}

/// Every vector file, as (path relative to spec/vectors, contents).
pub fn generate() -> Vec<(PathBuf, String)> {
    let mut out = vec![
        (PathBuf::from("messages.json"), pretty(&messages())),
        (PathBuf::from("blake3/roots.json"), pretty(&roots())),
    ];
    out.extend(proof_vectors());
    out
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

fn b64(h: &Hash) -> String {
    B64.encode(h.0)
}

/// A three-record channel log under the test keys; returns the records, the provider
/// signatures and the tree.
fn sample_log() -> (
    Vec<Record>,
    Vec<tally_core::Signature>,
    MemoryTree<Blake3Hasher>,
) {
    let client = SecretKey::from_seed(&CLIENT_SEED);
    let provider = SecretKey::from_seed(&PROVIDER_SEED);
    let channel = ChannelId([0xc7; 32]);
    let salt = request_salt();
    let terms = Hash([0x7e; 32]);
    let mut tree = MemoryTree::new(Blake3Hasher);
    let mut records = Vec::new();
    let mut sigs = Vec::new();
    let mut cumulative = 0u128;
    // Two charges on two lanes, sent concurrently (both acknowledge the empty log, and
    // lane 1's request is recorded first), then a credit on lane 0 acknowledging both.
    // (lane, seq, ack_size, method, path, query, body, max_amount, amount, units)
    type Call<'a> = (
        u32,
        u64,
        u64,
        &'a str,
        &'a str,
        &'a str,
        &'a [u8],
        u128,
        i128,
        tally_core::Units,
    );
    let calls: [Call; 3] = [
        (
            1,
            0,
            0,
            "POST",
            "/v1/chat",
            "model=small",
            b"{\"prompt\":\"hi\"}",
            5000,
            1200,
            // Two meters: 120 input tokens at 1 and 360 output tokens at 3.
            [120, 360, 0, 0],
        ),
        (
            0,
            0,
            0,
            "GET",
            "/v1/items",
            "page=2",
            b"",
            1000,
            1000,
            tally_core::ONE_CALL,
        ),
        (
            0,
            1,
            2,
            "POST",
            "/tally/dispute",
            "",
            b"refund index 0",
            0,
            -1200,
            [0; tally_core::METERS],
        ),
    ];
    // (root, cumulative) at each size, for the acknowledgements.
    let mut states = vec![(tree.root(), 0u128)];
    for (index, call) in calls.into_iter().enumerate() {
        let (lane, seq, ack, method, path, query, body, max, amount, units) = call;
        let (ack_root, ack_cumulative) = states[ack as usize];
        let auth = Authorization {
            version: tally_core::VERSION,
            channel_id: channel,
            lane,
            seq,
            request_hash: request_hash(&salt, method, path, query, body),
            max_amount: max,
            ack_size: ack,
            ack_root,
            ack_cumulative,
            terms_hash: terms,
        };
        let client_sig = auth.sign(&client);
        cumulative = tally_core::record::apply_amount(cumulative, amount).unwrap_or_default();
        let outcome = Outcome {
            version: tally_core::VERSION,
            channel_id: channel,
            lane,
            seq,
            index: index as u64,
            authorization_hash: auth.signed_hash(&client_sig),
            units,
            amount,
            cumulative,
            response_hash: response_hash(200, format!("response {index}").as_bytes()),
            time_ms: 1_798_761_600_000 + index as u64,
        };
        let receipt = outcome.sign(&provider);
        let record = Record::new(auth, client_sig, outcome);
        tree.push(&record.to_bytes());
        states.push((tree.root(), cumulative));
        records.push(record);
        sigs.push(receipt.signature);
    }
    (records, sigs, tree)
}

fn messages() -> Value {
    let client = SecretKey::from_seed(&CLIENT_SEED);
    let provider = SecretKey::from_seed(&PROVIDER_SEED);
    let (records, sigs, tree) = sample_log();
    let r0 = &records[0];
    let auth = &r0.authorization;
    let outcome = &r0.outcome;
    let checkpoint = Checkpoint {
        channel_id: outcome.channel_id,
        size: tree.size(),
        root: tree.root(),
        cumulative: records[2].outcome.cumulative,
    };
    let cosign_time = 1_798_761_700u64;
    let signed = SignedCheckpoint {
        checkpoint,
        client_signature: checkpoint.sign_client(&client),
        provider_cosignature: Some((
            cosign_time,
            checkpoint.cosign_provider(&provider, cosign_time),
        )),
    };
    let note = signed.to_note(&client.public(), &provider.public());
    let proof = inclusion_proof(&Blake3Hasher, &tree, 1, tree.size()).unwrap_or_default();
    let bundle = ProofBundle {
        format: BUNDLE_FORMAT.to_string(),
        client_key: client.public(),
        provider_key: provider.public(),
        record: hex::encode(records[1].to_bytes()),
        provider_signature: sigs[1],
        index: 1,
        inclusion_proof: proof,
        checkpoint: note.clone(),
        chain: None,
    };
    let auth_bytes = auth.to_bytes();
    let mut truncated = auth_bytes.clone();
    truncated.pop();
    let mut trailing = auth_bytes.clone();
    trailing.push(0);
    let mut version1 = auth_bytes.clone();
    version1[Authorization::DOMAIN.len()] = 1;
    let mut wrong_domain = auth_bytes.clone();
    wrong_domain[0] ^= 0x20;
    let mut malleated = r0.client_signature.0;
    add_group_order(&mut malleated);
    let mut flipped = r0.client_signature.0;
    flipped[0] ^= 1;
    json!({
        "description": "tally message vectors, protocol version 2 (spec/PROTOCOL.md §2–§7). Generated by `cargo run -p tally-log --example gen-vectors`.",
        "keys": {
            "client_seed": hex::encode(CLIENT_SEED),
            "client_public": client.public().to_hex(),
            "provider_seed": hex::encode(PROVIDER_SEED),
            "provider_public": provider.public().to_hex(),
        },
        "request": {
            "request_salt": request_salt().to_hex(),
            "method": "POST", "path": "/v1/chat", "query": "model=small",
            "body_hex": hex::encode(b"{\"prompt\":\"hi\"}"),
            "request_hash": auth.request_hash.to_hex(),
        },
        "read_token": read_token_vector(&client),
        "restore": restore_vector(&client, &tree, &records),
        "response": {
            "status": 200,
            "body_hex": hex::encode(b"response 0"),
            "response_hash": outcome.response_hash.to_hex(),
        },
        "authorization": {
            "fields": auth,
            "bytes": hex::encode(&auth_bytes),
            "client_signature": r0.client_signature.to_hex(),
            "authorization_hash": auth.signed_hash(&r0.client_signature).to_hex(),
        },
        "outcome": {
            "fields": outcome,
            "bytes": hex::encode(outcome.to_bytes()),
            "provider_signature": sigs[0].to_hex(),
        },
        "records": records.iter().zip(&sigs).map(|(r, s)| json!({
            "bytes": hex::encode(r.to_bytes()),
            "leaf_hash": r.leaf_hash().to_hex(),
            "provider_signature": s.to_hex(),
        })).collect::<Vec<_>>(),
        "log": {
            "size": tree.size(),
            "root": tree.root().to_hex(),
            "cumulative": records[2].outcome.cumulative,
        },
        "checkpoint": {
            "body": checkpoint.body(),
            "cosign_time": cosign_time,
            "note": note,
        },
        "bundle": serde_json::from_str::<Value>(&bundle.to_json()).unwrap_or(Value::Null),
        "negative_decodings": [
            { "desc": "truncated authorization", "bytes": hex::encode(&truncated) },
            { "desc": "trailing byte", "bytes": hex::encode(&trailing) },
            { "desc": "version 1 (not spoken)", "bytes": hex::encode(&version1) },
            { "desc": "wrong domain prefix", "bytes": hex::encode(&wrong_domain) },
        ],
        "negative_signatures": [
            { "desc": "s + L (malleated, non-canonical s)", "signature": hex::encode(malleated) },
            { "desc": "one bit of R flipped", "signature": hex::encode(flipped) },
        ],
    })
}

/// Adds the ed25519 group order L to the little-endian scalar `s` (bytes 32..64): the
/// classic malleation a strict verifier must reject.
fn add_group_order(sig: &mut [u8; 64]) {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for i in 0..32 {
        let v = sig[32 + i] as u16 + L[i] as u16 + carry;
        sig[32 + i] = v as u8;
        carry = v >> 8;
    }
}

fn roots() -> Value {
    let mut tree = MemoryTree::new(Blake3Hasher);
    let mut roots = vec![json!({ "size": 0, "root": b64(&tree.root()) })];
    for i in 0..64u64 {
        tree.push(&tree_leaf(i));
        roots.push(json!({ "size": tree.size(), "root": b64(&tree.root()) }));
    }
    json!({
        "description": "BLAKE3 RFC 6962 tree roots; leaf i's data is the ASCII text `tally leaf <i>`.",
        "roots": roots,
    })
}

/// Inclusion and consistency vectors in the RFC 6962 vector layout (base64 fields).
fn proof_vectors() -> Vec<(PathBuf, String)> {
    let h = Blake3Hasher;
    let mut tree = MemoryTree::new(h);
    for i in 0..64u64 {
        tree.push(&tree_leaf(i));
    }
    let mut out = Vec::new();
    let inclusion_cases = [(0u64, 1u64), (0, 8), (5, 8), (2, 5), (12, 13), (30, 63)];
    for (n, (index, size)) in inclusion_cases.into_iter().enumerate() {
        let root = tree.root_at(size).unwrap_or_default();
        let leaf = h.leaf(&tree_leaf(index));
        let proof = inclusion_proof(&h, &tree, index, size).unwrap_or_default();
        let case = |desc: &str,
                    index: u64,
                    size: u64,
                    leaf: &Hash,
                    proof: &[Hash],
                    root: &Hash,
                    want_err: bool| {
            json!({
                "leafIdx": index, "treeSize": size, "root": b64(root), "leafHash": b64(leaf),
                "proof": proof.iter().map(b64).collect::<Vec<_>>(),
                "desc": desc, "wantErr": want_err,
            })
        };
        let dir = format!("blake3/inclusion/{n}");
        let mut cases = vec![(
            "happy-path".to_string(),
            case("happy path", index, size, &leaf, &proof, &root, false),
        )];
        cases.push((
            "wrong-leaf".into(),
            case(
                "wrong leaf",
                index,
                size,
                &flip(&leaf, 0),
                &proof,
                &root,
                true,
            ),
        ));
        cases.push((
            "wrong-root".into(),
            case(
                "wrong root",
                index,
                size,
                &leaf,
                &proof,
                &flip(&root, 255),
                true,
            ),
        ));
        cases.push((
            "leafIdx-plus-1".into(),
            case("leafIdx + 1", index + 1, size, &leaf, &proof, &root, true),
        ));
        // treeSize + 1 is no negative: a proof can fit two sizes whose trees share its shape.
        cases.push((
            "treeSize-mul-2".into(),
            case("treeSize * 2", index, size * 2, &leaf, &proof, &root, true),
        ));
        let mut extended = proof.clone();
        extended.push(leaf);
        cases.push((
            "trailing-garbage".into(),
            case(
                "trailing garbage",
                index,
                size,
                &leaf,
                &extended,
                &root,
                true,
            ),
        ));
        let mut preceding = vec![root];
        preceding.extend_from_slice(&proof);
        cases.push((
            "preceding-root".into(),
            case(
                "preceding root",
                index,
                size,
                &leaf,
                &preceding,
                &root,
                true,
            ),
        ));
        if !proof.is_empty() {
            let mut truncated = proof.clone();
            truncated.pop();
            cases.push((
                "truncated-proof".into(),
                case(
                    "truncated proof",
                    index,
                    size,
                    &leaf,
                    &truncated,
                    &root,
                    true,
                ),
            ));
            for i in 0..proof.len() {
                let mut m = proof.clone();
                m[i] = flip(&m[i], 3);
                cases.push((
                    format!("modified-proof@{i}"),
                    case(
                        &format!("bit 3 of proof hash {i} flipped"),
                        index,
                        size,
                        &leaf,
                        &m,
                        &root,
                        true,
                    ),
                ));
            }
        }
        for (name, v) in cases {
            out.push((PathBuf::from(&dir).join(format!("{name}.json")), pretty(&v)));
        }
    }
    let consistency_cases = [(1u64, 1u64), (1, 8), (3, 7), (4, 8), (6, 13), (27, 64)];
    for (n, (old, new)) in consistency_cases.into_iter().enumerate() {
        let r1 = tree.root_at(old).unwrap_or_default();
        let r2 = tree.root_at(new).unwrap_or_default();
        let proof = consistency_proof(&h, &tree, old, new).unwrap_or_default();
        let case =
            |desc: &str, s1: u64, s2: u64, r1: &Hash, r2: &Hash, proof: &[Hash], want_err: bool| {
                json!({
                    "size1": s1, "size2": s2, "root1": b64(r1), "root2": b64(r2),
                    "proof": proof.iter().map(b64).collect::<Vec<_>>(),
                    "desc": desc, "wantErr": want_err,
                })
            };
        let dir = format!("blake3/consistency/{n}");
        let mut cases = vec![(
            "happy-path".to_string(),
            case("happy path", old, new, &r1, &r2, &proof, false),
        )];
        cases.push((
            "wrong-root1".into(),
            case("wrong root1", old, new, &flip(&r1, 1), &r2, &proof, true),
        ));
        cases.push((
            "wrong-root2".into(),
            case("wrong root2", old, new, &r1, &flip(&r2, 1), &proof, true),
        ));
        if old != new {
            cases.push((
                "swapped-roots".into(),
                case("swapped roots", old, new, &r2, &r1, &proof, true),
            ));
        }
        cases.push((
            "size1-zero".into(),
            case(
                "size1 = 0",
                0,
                new,
                &Blake3Hasher.empty(),
                &r2,
                &proof,
                true,
            ),
        ));
        let mut extended = proof.clone();
        extended.push(r1);
        cases.push((
            "trailing-garbage".into(),
            case("trailing garbage", old, new, &r1, &r2, &extended, true),
        ));
        if !proof.is_empty() {
            let mut truncated = proof.clone();
            truncated.pop();
            cases.push((
                "truncated-proof".into(),
                case("truncated proof", old, new, &r1, &r2, &truncated, true),
            ));
            for i in 0..proof.len() {
                let mut m = proof.clone();
                m[i] = flip(&m[i], 4);
                cases.push((
                    format!("modified-proof@{i}"),
                    case(
                        &format!("bit 4 of proof hash {i} flipped"),
                        old,
                        new,
                        &r1,
                        &r2,
                        &m,
                        true,
                    ),
                ));
            }
        }
        for (name, v) in cases {
            out.push((PathBuf::from(&dir).join(format!("{name}.json")), pretty(&v)));
        }
    }
    out
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut b = h.0;
    b[bit / 8] ^= 1 << (bit % 8);
    Hash(b)
}

/// The request salt of the vectors (spec/PROTOCOL.md §3.3): bytes 0x00..=0x1f.
fn request_salt() -> RequestSalt {
    let mut b = [0u8; 32];
    for (i, x) in b.iter_mut().enumerate() {
        *x = i as u8;
    }
    RequestSalt(b)
}

/// A read token (spec/PROTOCOL.md §5.4, spec/HTTP.md §5.1) for the vectors' channel.
fn read_token_vector(client: &SecretKey) -> serde_json::Value {
    let channel = ChannelId([0xc7; 32]);
    let (method, target, at) = (
        "GET",
        "/tally/v1/channels/c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7c7/records?from=0",
        1_798_761_600_000u64,
    );
    let bytes = tally_core::read::read_token_bytes(&channel, method, target, at);
    let sig = tally_core::read::sign_read(client, &channel, method, target, at);
    json!({
        "channel_id": channel.to_hex(),
        "method": method,
        "target": target,
        "issued_at_ms": at,
        "bytes": hex::encode(&bytes),
        "signature": sig.to_hex(),
        "header": format!("{at}.{}", sig.to_hex()),
    })
}

/// A restore statement (spec/PROTOCOL.md §5.7): from the sample log's state at size 1 to its
/// whole state, complete.
fn restore_vector(
    client: &SecretKey,
    tree: &MemoryTree<Blake3Hasher>,
    records: &[Record],
) -> serde_json::Value {
    let base = tally_core::LogState {
        size: 1,
        root: tree.root_at(1).unwrap_or_else(|_| tree.root()),
        cumulative: records[0].outcome.cumulative,
    };
    let after = tally_core::LogState {
        size: tree.size(),
        root: tree.root(),
        cumulative: records[records.len() - 1].outcome.cumulative,
    };
    let nonce = Hash(*blake3::hash(b"restore nonce").as_bytes());
    let statement =
        tally_core::Restore::new(records[0].outcome.channel_id, nonce, &base, &after, true);
    json!({
        "fields": statement,
        "bytes": hex::encode(statement.to_bytes()),
        "client_signature": statement.sign(client).to_hex(),
    })
}

/// The spec/vectors directory of this checkout.
pub fn vectors_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors")
}

#[allow(dead_code)]
fn main() -> std::io::Result<()> {
    let dir = vectors_dir();
    // The BLAKE3 proof vectors are rewritten whole, so a dropped case leaves no stale file.
    let blake3 = dir.join("blake3");
    if blake3.exists() {
        std::fs::remove_dir_all(&blake3)?;
    }
    let files = generate();
    for (path, contents) in &files {
        let full = dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&full, contents)?;
    }
    println!("wrote {} vector files under {}", files.len(), dir.display());
    Ok(())
}
