//! Proves that the proof checkers, in SHA-256 mode (`Sha256Hasher`), accept exactly the
//! `wantErr: false` cases of the published RFC 6962 inclusion and consistency vectors under
//! spec/vectors/rfc6962/ (see SOURCE.md there) and reject every `wantErr: true` case.

use std::fs;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tally_log::{verify_consistency, verify_inclusion, Hash, Sha256Hasher, TreeHasher};

fn vector_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors/rfc6962")
}

/// Every `*.json` file below `dir`, sorted so failures are listed in a stable order.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "json") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InclusionCase {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    #[allow(dead_code)]
    desc: String,
    want_err: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConsistencyCase {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    #[allow(dead_code)]
    desc: String,
    want_err: bool,
}

/// A proof hash or leaf hash: it must be base64 of exactly 32 bytes, and anything else makes
/// the case a rejection (returned as `Err`).
fn exact_hash(b64: &str) -> Result<Hash, String> {
    let bytes = STANDARD
        .decode(b64)
        .map_err(|e| format!("bad base64 {b64:?}: {e}"))?;
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("hash of {} bytes, not 32", bytes.len()))?;
    Ok(Hash(arr))
}

/// A root, which the checkers only ever compare for equality.
///
/// Some vectors use placeholder roots that are not 32 bytes long (base64 of "don't care 1",
/// "WrongRoot", or the empty string). A 32-byte root is used as it is; any other byte string
/// is mapped to BLAKE3("rfc6962-vector placeholder root" || len || bytes). That map is
/// injective up to BLAKE3 collisions, so two roots compare equal after it exactly when they
/// were equal before it, and a placeholder can never equal a real SHA-256 root by accident.
fn root_value(b64: &str) -> Result<Hash, String> {
    let bytes = STANDARD
        .decode(b64)
        .map_err(|e| format!("bad base64 {b64:?}: {e}"))?;
    if let Ok(arr) = <[u8; 32]>::try_from(bytes.as_slice()) {
        return Ok(Hash(arr));
    }
    let mut h = blake3::Hasher::new();
    h.update(b"rfc6962-vector placeholder root");
    h.update(&(bytes.len() as u64).to_be_bytes());
    h.update(&bytes);
    Ok(Hash(*h.finalize().as_bytes()))
}

fn proof_hashes(proof: &Option<Vec<String>>) -> Result<Vec<Hash>, String> {
    proof
        .iter()
        .flatten()
        .map(|p| exact_hash(p))
        .collect::<Result<Vec<_>, _>>()
}

/// `Ok` when our checker accepts the case, `Err(reason)` when it (or parsing) rejects it.
fn run_inclusion(c: &InclusionCase) -> Result<(), String> {
    let leaf = exact_hash(&c.leaf_hash)?;
    let proof = proof_hashes(&c.proof)?;
    let root = root_value(&c.root)?;
    verify_inclusion(&Sha256Hasher, c.leaf_idx, c.tree_size, &leaf, &proof, &root)
        .map_err(|e| e.to_string())
}

fn run_consistency(c: &ConsistencyCase) -> Result<(), String> {
    let proof = proof_hashes(&c.proof)?;
    let root1 = root_value(&c.root1)?;
    let root2 = root_value(&c.root2)?;
    verify_consistency(&Sha256Hasher, c.size1, c.size2, &proof, &root1, &root2)
        .map_err(|e| e.to_string())
}

/// The verdict on one case against what the file wants: `Err` describes a disagreement.
fn judge(path: &Path, want_err: bool, outcome: Result<(), String>) -> Result<(), String> {
    match (want_err, outcome) {
        (false, Ok(())) | (true, Err(_)) => Ok(()),
        (false, Err(e)) => Err(format!(
            "{}: wantErr=false but it was rejected: {e}",
            path.display()
        )),
        (true, Ok(())) => Err(format!(
            "{}: wantErr=true but it was accepted",
            path.display()
        )),
    }
}

#[test]
fn every_vector_file_gets_the_wanted_verdict() {
    let dir = vector_dir();
    let files = json_files(&dir);
    let mut failures = Vec::new();
    let (mut inclusion, mut consistency) = (0usize, 0usize);
    let (mut accepted, mut rejected) = (0usize, 0usize);
    for path in &files {
        let text = fs::read_to_string(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let kind = path
            .strip_prefix(&dir)
            .expect("file below the vector dir")
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .unwrap_or_default()
            .to_owned();
        let (want_err, verdict) = match kind.as_str() {
            "inclusion" => {
                inclusion += 1;
                let case: InclusionCase = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: not an inclusion case: {e}", path.display()));
                (
                    case.want_err,
                    judge(path, case.want_err, run_inclusion(&case)),
                )
            }
            "consistency" => {
                consistency += 1;
                let case: ConsistencyCase = serde_json::from_str(&text)
                    .unwrap_or_else(|e| panic!("{}: not a consistency case: {e}", path.display()));
                (
                    case.want_err,
                    judge(path, case.want_err, run_consistency(&case)),
                )
            }
            other => panic!("{}: unexpected vector kind {other:?}", path.display()),
        };
        if want_err {
            rejected += 1;
        } else {
            accepted += 1;
        }
        if let Err(msg) = verdict {
            failures.push(msg);
        }
    }
    let total = inclusion + consistency;
    assert!(
        total > 100,
        "only {total} vector files found under {}",
        dir.display()
    );
    assert!(
        inclusion > 50 && consistency > 50,
        "{inclusion} inclusion and {consistency} consistency files"
    );
    // Both verdicts must actually be exercised, not just one of them.
    assert!(
        accepted >= 10 && rejected >= 100,
        "{accepted} accept and {rejected} reject cases"
    );
    assert!(
        failures.is_empty(),
        "{} of {total} vector files got the wrong verdict:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Each numbered folder holds one happy path; its mutations are only meaningful if the happy
/// path itself verifies, so check that separately and by name.
#[test]
fn every_numbered_folder_has_a_verifying_happy_path() {
    let dir = vector_dir();
    let mut seen = 0;
    for kind in ["inclusion", "consistency"] {
        for n in 0..5 {
            let path = dir.join(kind).join(n.to_string()).join("happy-path.json");
            let text = fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            let outcome = if kind == "inclusion" {
                let c: InclusionCase = serde_json::from_str(&text).expect("inclusion case");
                assert!(!c.want_err, "{}", path.display());
                run_inclusion(&c)
            } else {
                let c: ConsistencyCase = serde_json::from_str(&text).expect("consistency case");
                assert!(!c.want_err, "{}", path.display());
                run_consistency(&c)
            };
            assert_eq!(outcome, Ok(()), "{}", path.display());
            seen += 1;
        }
    }
    assert_eq!(seen, 10);
}

/// The vectors only mean something if `Sha256Hasher` is RFC 6962's hash: compare it with
/// SHA-256 computed here directly.
#[test]
fn sha256_hasher_is_rfc6962_domain_separated_sha256() {
    let direct = |parts: &[&[u8]]| {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Hash(h.finalize().into())
    };
    let h = Sha256Hasher;
    assert_eq!(h.empty(), direct(&[]));
    for data in [&b""[..], b"\x00", b"leaf", &[0xffu8; 100][..]] {
        assert_eq!(h.leaf(data), direct(&[&[0x00], data]));
    }
    let (l, r) = (h.leaf(b"l"), h.leaf(b"r"));
    assert_eq!(h.node(&l, &r), direct(&[&[0x01], &l.0, &r.0]));
    assert_ne!(h.node(&l, &r), h.node(&r, &l));
}
