//! spec/vectors/ is what the code produces (regenerating changes nothing), and the committed
//! vectors check out under an independent reading: decode, re-derive, verify, reject.

#[path = "../examples/gen-vectors.rs"]
mod gen;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::Value;
use tally_core::checkpoint::SignedCheckpoint;
use tally_core::encoding::Canonical;
use tally_core::request::{request_hash, response_hash, RequestSalt};
use tally_core::{
    Authorization, Hash, Outcome, ProofBundle, PublicKey, Record, SecretKey, Signature,
};
use tally_log::bundle::verify_bundle;
use tally_log::{verify_consistency, verify_inclusion, Blake3Hasher, MemoryTree, TreeHasher};

fn read(rel: &str) -> Value {
    let path = gen::vectors_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hexb(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn s(v: &Value) -> &str {
    v.as_str().expect("string field")
}

#[test]
fn committed_vectors_equal_generated() {
    let generated = gen::generate();
    assert!(
        generated.len() > 50,
        "generator produced only {} files",
        generated.len()
    );
    for (rel, contents) in &generated {
        let path = gen::vectors_dir().join(rel);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} missing ({e}); run the generator", path.display()));
        assert_eq!(
            &committed,
            contents,
            "{} is stale; run `cargo run -p tally-log --example gen-vectors`",
            rel.display()
        );
    }
    // No stale leftovers: every committed BLAKE3 vector is one the generator writes.
    let mut committed = Vec::new();
    collect_json(&gen::vectors_dir().join("blake3"), &mut committed);
    let names: std::collections::HashSet<_> = generated
        .iter()
        .map(|(p, _)| gen::vectors_dir().join(p))
        .collect();
    for p in committed {
        assert!(
            names.contains(&p),
            "{} is not produced by the generator",
            p.display()
        );
    }
}

fn collect_json(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("vector dir") {
        let p = entry.expect("dir entry").path();
        if p.is_dir() {
            collect_json(&p, out);
        } else if p.extension().is_some_and(|e| e == "json") {
            out.push(p);
        }
    }
}

#[test]
fn message_vectors_check_out() {
    let v = read("messages.json");
    let seed = |f: &str| -> [u8; 32] { hexb(&v["keys"][f]).try_into().expect("32 bytes") };
    let client = SecretKey::from_seed(&seed("client_seed"));
    let provider = SecretKey::from_seed(&seed("provider_seed"));
    let client_pk = PublicKey::from_hex(s(&v["keys"]["client_public"])).expect("key");
    let provider_pk = PublicKey::from_hex(s(&v["keys"]["provider_public"])).expect("key");
    assert_eq!(client.public(), client_pk);
    assert_eq!(provider.public(), provider_pk);

    // Request and response hashes from their parts.
    let req = &v["request"];
    let salt = RequestSalt::from_hex(s(&req["request_salt"])).expect("salt");
    let request = request_hash(
        &salt,
        s(&req["method"]),
        s(&req["path"]),
        s(&req["query"]),
        &hexb(&req["body_hex"]),
    );
    assert_eq!(
        request,
        Hash::from_hex(s(&req["request_hash"])).expect("hash")
    );
    // Read token: the signed bytes from their parts, the signature under the client key.
    let rt = &v["read_token"];
    let channel = tally_core::ChannelId::from_hex(s(&rt["channel_id"])).expect("channel");
    let at = rt["issued_at_ms"].as_u64().expect("ms");
    let bytes =
        tally_core::read::read_token_bytes(&channel, s(&rt["method"]), s(&rt["target"]), at);
    assert_eq!(hex::encode(&bytes), s(&rt["bytes"]));
    let sig = tally_core::Signature::from_hex(s(&rt["signature"])).expect("signature");
    client_pk
        .verify(&bytes, &sig)
        .expect("read token signature");
    assert_eq!(format!("{at}.{}", sig.to_hex()), s(&rt["header"]));

    // Restore statement: fields → committed bytes → fields, the deterministic signature, and
    // its final state is the log's.
    let r = &v["restore"];
    let fields: tally_core::Restore = serde_json::from_value(r["fields"].clone()).expect("fields");
    let bytes = hexb(&r["bytes"]);
    assert_eq!(fields.to_bytes(), bytes);
    assert_eq!(
        tally_core::Restore::from_bytes(&bytes).expect("decodes"),
        fields
    );
    let sig = Signature::from_hex(s(&r["client_signature"])).expect("sig");
    assert_eq!(fields.sign(&client), sig, "ed25519 is deterministic");
    fields.verify(&client_pk, &sig).expect("restore signature");
    assert!(fields.complete);
    assert_eq!(fields.size, v["log"]["size"].as_u64().expect("size"));
    assert_eq!(fields.root.to_hex(), s(&v["log"]["root"]));

    let resp = &v["response"];
    let status = resp["status"].as_u64().expect("status") as u16;
    assert_eq!(
        response_hash(status, &hexb(&resp["body_hex"])),
        Hash::from_hex(s(&resp["response_hash"])).expect("hash")
    );

    // Authorization: the JSON fields encode to the committed bytes, which decode back.
    let a = &v["authorization"];
    let fields: Authorization = serde_json::from_value(a["fields"].clone()).expect("fields");
    let bytes = hexb(&a["bytes"]);
    assert_eq!(fields.to_bytes(), bytes);
    assert_eq!(Authorization::from_bytes(&bytes).expect("decodes"), fields);
    assert_eq!(fields.request_hash, request);
    let sig = Signature::from_hex(s(&a["client_signature"])).expect("sig");
    assert_eq!(fields.sign(&client), sig, "ed25519 is deterministic");
    fields
        .verify(&client_pk, &sig)
        .expect("client signature verifies");
    assert_eq!(
        fields.signed_hash(&sig).to_hex(),
        s(&a["authorization_hash"])
    );

    // Outcome.
    let o = &v["outcome"];
    let outcome: Outcome = serde_json::from_value(o["fields"].clone()).expect("fields");
    assert_eq!(hex::encode(outcome.to_bytes()), s(&o["bytes"]));
    let receipt = outcome.sign(&provider);
    assert_eq!(receipt.signature.to_hex(), s(&o["provider_signature"]));
    receipt.verify(&provider_pk).expect("receipt verifies");

    // The records form a valid log (R5, R7, R8): two lanes, acknowledgements that lag.
    let mut tree = MemoryTree::new(Blake3Hasher);
    let mut sequence = tally_core::Sequence::new(tree.root());
    let mut cumulative = 0u128;
    let mut lanes_seen = std::collections::BTreeSet::new();
    for (i, r) in v["records"].as_array().expect("records").iter().enumerate() {
        let bytes = hexb(&r["bytes"]);
        let record = Record::from_bytes(&bytes).expect("record decodes");
        assert_eq!(record.outcome.index, i as u64);
        lanes_seen.insert(record.authorization.lane);
        sequence
            .check_next(&record)
            .unwrap_or_else(|e| panic!("record {i}: {e}"));
        record.verify(&client_pk).expect("record is valid");
        let psig = Signature::from_hex(s(&r["provider_signature"])).expect("sig");
        record
            .verify_receipt(&provider_pk, &psig)
            .expect("provider signature");
        assert_eq!(Blake3Hasher.leaf(&bytes).to_hex(), s(&r["leaf_hash"]));
        assert_eq!(record.leaf_hash().to_hex(), s(&r["leaf_hash"]));
        tree.push(&bytes);
        sequence.push(&record, tree.root());
        cumulative = record.outcome.cumulative;
    }
    assert!(lanes_seen.len() > 1, "the vectors exercise several lanes");
    assert_eq!(tree.root().to_hex(), s(&v["log"]["root"]));
    assert_eq!(Some(cumulative as u64), v["log"]["cumulative"].as_u64());

    // Checkpoint note.
    let note = s(&v["checkpoint"]["note"]);
    let signed =
        SignedCheckpoint::from_note(note, &client_pk, &provider_pk, true).expect("note verifies");
    assert_eq!(signed.checkpoint.root, tree.root());
    assert_eq!(signed.checkpoint.size, tree.size());
    assert_eq!(signed.checkpoint.body(), s(&v["checkpoint"]["body"]));
    assert_eq!(
        signed.provider_cosignature.map(|c| c.0),
        v["checkpoint"]["cosign_time"].as_u64()
    );
    assert_eq!(
        signed.to_note(&client_pk, &provider_pk),
        note,
        "note re-renders identically"
    );

    // Bundle.
    let bundle = ProofBundle::from_json(&v["bundle"].to_string()).expect("bundle parses");
    let verified = verify_bundle(&bundle).expect("bundle verifies");
    assert_eq!(verified.record.outcome.index, 1);

    // Negatives.
    for n in v["negative_decodings"].as_array().expect("array") {
        assert!(
            Authorization::from_bytes(&hexb(&n["bytes"])).is_err(),
            "{} must be rejected",
            n["desc"]
        );
    }
    for n in v["negative_signatures"].as_array().expect("array") {
        let bad = Signature::from_hex(s(&n["signature"])).expect("sig");
        assert!(
            fields.verify(&client_pk, &bad).is_err(),
            "{} must be rejected",
            n["desc"]
        );
    }
}

#[test]
fn blake3_roots_match() {
    let v = read("blake3/roots.json");
    let roots = v["roots"].as_array().expect("roots");
    assert_eq!(roots.len(), 65);
    let mut tree = MemoryTree::new(Blake3Hasher);
    for (size, r) in roots.iter().enumerate() {
        assert_eq!(r["size"].as_u64(), Some(size as u64));
        assert_eq!(
            B64.encode(tree.root().0),
            s(&r["root"]),
            "root at size {size}"
        );
        tree.push(&gen::tree_leaf(size as u64));
    }
}

fn h32(v: &Value) -> Option<Hash> {
    let b = B64.decode(v.as_str()?).ok()?;
    Some(Hash(b.try_into().ok()?))
}

#[test]
fn blake3_proof_vectors_verify_or_fail_as_labelled() {
    let mut files = Vec::new();
    collect_json(&gen::vectors_dir().join("blake3/inclusion"), &mut files);
    let n_inclusion = files.len();
    collect_json(&gen::vectors_dir().join("blake3/consistency"), &mut files);
    assert!(
        n_inclusion > 20 && files.len() > n_inclusion + 20,
        "too few vectors"
    );
    let (mut accepted, mut rejected) = (0, 0);
    for path in &files {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
        let want_err = v["wantErr"].as_bool().expect("wantErr");
        let proof: Option<Vec<Hash>> = v["proof"]
            .as_array()
            .expect("proof")
            .iter()
            .map(h32)
            .collect();
        let proof = proof.expect("proof hashes are 32 bytes");
        let ok = if v.get("leafIdx").is_some() {
            verify_inclusion(
                &Blake3Hasher,
                v["leafIdx"].as_u64().expect("u64"),
                v["treeSize"].as_u64().expect("u64"),
                &h32(&v["leafHash"]).expect("leaf"),
                &proof,
                &h32(&v["root"]).expect("root"),
            )
            .is_ok()
        } else {
            verify_consistency(
                &Blake3Hasher,
                v["size1"].as_u64().expect("u64"),
                v["size2"].as_u64().expect("u64"),
                &proof,
                &h32(&v["root1"]).expect("root1"),
                &h32(&v["root2"]).expect("root2"),
            )
            .is_ok()
        };
        assert_eq!(ok, !want_err, "{}", path.display());
        if ok {
            accepted += 1
        } else {
            rejected += 1
        }
    }
    assert!(accepted >= 12 && rejected > accepted);
}
