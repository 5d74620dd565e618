//! The inclusion verifier on arbitrary indices, sizes and hashes: never a panic. Also checks
//! that a proof generated for a real tree verifies, whatever the fuzzer picked as the leaves.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tally_log::{inclusion_proof, verify_inclusion, Blake3Hasher, Hash, MemoryTree, TreeHasher};

fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let index = u64::from_le_bytes(data[0..8].try_into().unwrap_or_default());
    let size = u64::from_le_bytes(data[8..16].try_into().unwrap_or_default());
    let hashes: Vec<Hash> = data[16..]
        .chunks_exact(32)
        .map(|c| Hash(c.try_into().unwrap_or_default()))
        .collect();
    if let Some((root, rest)) = hashes.split_first() {
        if let Some((leaf, proof)) = rest.split_first() {
            let _ = verify_inclusion(&Blake3Hasher, index, size, leaf, proof, root);
        }
    }
    // A small real tree: its proofs must verify.
    let n = (size % 64) + 1;
    let mut tree = MemoryTree::new(Blake3Hasher);
    for i in 0..n {
        tree.push(&[data, &i.to_le_bytes()].concat());
    }
    let i = index % n;
    let proof = inclusion_proof(&Blake3Hasher, &tree, i, n).unwrap_or_default();
    let leaf = Blake3Hasher.leaf(&[data, &i.to_le_bytes()].concat());
    assert!(verify_inclusion(&Blake3Hasher, i, n, &leaf, &proof, &tree.root()).is_ok());
});
