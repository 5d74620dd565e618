//! Proves that `MemoryTree<Blake3Hasher>`'s roots, inclusion proofs and consistency proofs
//! equal those of a naive reference written here straight from RFC 9162 (§2.1.1 MTH,
//! §2.1.3.1 PATH, §2.1.4.1 SUBPROOF, as recursion over a slice of leaves, with BLAKE3 called
//! directly), for random sizes up to 2000; and that its roots and single-leaf proofs equal
//! those of the independent rs_merkle crate given the same domain separation.

use proptest::prelude::*;
use proptest::sample::Index;
use tally_log::{
    consistency_proof, inclusion_proof, verify_consistency, verify_inclusion, Blake3Hasher, Hash,
    MemoryTree,
};

// ---------------------------------------------------------------------------------------
// The reference: RFC 9162 §2.1, transcribed as directly as possible.
// ---------------------------------------------------------------------------------------

fn blake3_parts(parts: &[&[u8]]) -> Hash {
    let mut h = blake3::Hasher::new();
    for p in parts {
        h.update(p);
    }
    Hash(*h.finalize().as_bytes())
}

/// `HASH(0x00 || d)`.
fn ref_leaf(d: &[u8]) -> Hash {
    blake3_parts(&[&[0x00], d])
}

/// `HASH(0x01 || l || r)`.
fn ref_node(l: &Hash, r: &Hash) -> Hash {
    blake3_parts(&[&[0x01], &l.0, &r.0])
}

/// "the largest power of two smaller than n" (`n > 1`).
fn ref_k(n: usize) -> usize {
    assert!(n > 1);
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// §2.1.1: `MTH(D[n])`.
fn mth(d: &[Vec<u8>]) -> Hash {
    match d.len() {
        0 => blake3_parts(&[]),
        1 => ref_leaf(&d[0]),
        n => {
            let k = ref_k(n);
            ref_node(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

/// §2.1.3.1: `PATH(m, D[n])`.
fn path(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
    let n = d.len();
    if n == 1 {
        return Vec::new();
    }
    let k = ref_k(n);
    if m < k {
        let mut p = path(m, &d[..k]);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = path(m - k, &d[k..]);
        p.push(mth(&d[..k]));
        p
    }
}

/// §2.1.4.1: `SUBPROOF(m, D[n], b)`.
fn subproof(m: usize, d: &[Vec<u8>], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { Vec::new() } else { vec![mth(d)] };
    }
    let k = ref_k(n);
    if m <= k {
        let mut p = subproof(m, &d[..k], b);
        p.push(mth(&d[k..]));
        p
    } else {
        let mut p = subproof(m - k, &d[k..], false);
        p.push(mth(&d[..k]));
        p
    }
}

/// §2.1.4.1: `PROOF(m, D[n]) = SUBPROOF(m, D[n], true)`.
fn ref_consistency(m: usize, d: &[Vec<u8>]) -> Vec<Hash> {
    subproof(m, d, true)
}

/// Leaf data of varied length (including empty), derived from `(seed, i)`.
fn leaves(seed: u64, n: usize) -> Vec<Vec<u8>> {
    (0..n as u64)
        .map(|i| {
            let h = blake3_parts(&[&seed.to_le_bytes(), &i.to_le_bytes()]);
            let len = (h.0[0] as usize) % 48;
            h.0.iter().cycle().take(len).copied().collect()
        })
        .collect()
}

fn memory_tree(d: &[Vec<u8>]) -> MemoryTree<Blake3Hasher> {
    let mut t = MemoryTree::new(Blake3Hasher);
    for (i, x) in d.iter().enumerate() {
        assert_eq!(t.push(x), i as u64);
    }
    t
}

/// Compares everything about tree size `s` (a prefix of `t`) with the reference.
fn check_against_reference(
    t: &MemoryTree<Blake3Hasher>,
    d: &[Vec<u8>],
    s: usize,
    i: usize,
    m: usize,
) {
    let h = Blake3Hasher;
    let prefix = &d[..s];
    let root = t.root_at(s as u64).unwrap();
    assert_eq!(root, mth(prefix), "root at {s}");
    let proof = inclusion_proof(&h, t, i as u64, s as u64).unwrap();
    assert_eq!(proof, path(i, prefix), "inclusion of {i} at {s}");
    assert_eq!(
        verify_inclusion(&h, i as u64, s as u64, &ref_leaf(&d[i]), &proof, &root),
        Ok(())
    );
    let cproof = consistency_proof(&h, t, m as u64, s as u64).unwrap();
    assert_eq!(cproof, ref_consistency(m, prefix), "consistency {m} -> {s}");
    assert_eq!(
        verify_consistency(&h, m as u64, s as u64, &cproof, &mth(&d[..m]), &root),
        Ok(())
    );
}

#[test]
fn reference_agrees_on_every_small_case() {
    let d = leaves(1, 64);
    let t = memory_tree(&d);
    assert_eq!(t.root_at(0).unwrap(), mth(&[]));
    for s in 1..=64 {
        for i in 0..s {
            // Every index and every old size (both range over 0..s and 1..=s).
            check_against_reference(&t, &d, s, i, i + 1);
        }
    }
}

#[test]
fn reference_agrees_on_every_root_up_to_1100() {
    let d = leaves(2, 1100);
    let mut t = MemoryTree::new(Blake3Hasher);
    assert_eq!(t.root(), mth(&[]));
    for (n, x) in d.iter().enumerate() {
        t.push(x);
        assert_eq!(t.root(), mth(&d[..=n]), "size {}", n + 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn reference_agrees_on_random_trees(
        n in 1usize..=2000,
        seed in any::<u64>(),
        picks in proptest::collection::vec((any::<Index>(), any::<Index>(), any::<Index>()), 1..6),
    ) {
        let d = leaves(seed, n);
        let t = memory_tree(&d);
        prop_assert_eq!(t.root(), mth(&d));
        prop_assert_eq!(t.size(), n as u64);
        for (a, b, c) in picks {
            let s = 1 + a.index(n);
            let i = b.index(s);
            let m = 1 + c.index(s);
            check_against_reference(&t, &d, s, i, m);
        }
        // The extreme cases of every tree are always among those checked.
        check_against_reference(&t, &d, n, n - 1, 1);
        check_against_reference(&t, &d, n, 0, n);
    }
}

// ---------------------------------------------------------------------------------------
// rs_merkle as a second, independent oracle.
// ---------------------------------------------------------------------------------------

/// rs_merkle's view of our hash: leaves are hashed by us (`ref_leaf`) before insertion, and
/// a pair of nodes is `BLAKE3(0x01 || l || r)`. rs_merkle's tree promotes a lone last node to
/// the next level unchanged (`right == None`), rather than splitting at the largest power of
/// two as RFC 6962 does.
#[derive(Clone)]
struct RsBlake3;

impl rs_merkle::Hasher for RsBlake3 {
    type Hash = [u8; 32];

    // Only the default `concat_and_hash` would call this, and it is overridden below; it is
    // plain BLAKE3 so that any unexpected use would show up as a mismatch.
    fn hash(data: &[u8]) -> [u8; 32] {
        blake3_parts(&[data]).0
    }

    fn concat_and_hash(left: &[u8; 32], right: Option<&[u8; 32]>) -> [u8; 32] {
        match right {
            Some(r) => ref_node(&Hash(*left), &Hash(*r)).0,
            None => *left,
        }
    }
}

fn rs_tree(d: &[Vec<u8>]) -> rs_merkle::MerkleTree<RsBlake3> {
    let hashes: Vec<[u8; 32]> = d.iter().map(|x| ref_leaf(x).0).collect();
    rs_merkle::MerkleTree::<RsBlake3>::from_leaves(&hashes)
}

// Working it out: the two constructions build the same tree for every size. Bottom-up
// pairing with promotion leaves, at level L, the aligned complete subtrees of 2^L leaves
// plus (when 2^L does not divide n) one node over the remaining n mod 2^L leaves, and that
// node is exactly the RFC node over the same range: at the top the left part is the largest
// complete subtree, i.e. RFC 6962's split at the largest power of two below n. The tests
// below assert that equality for every size 1..=1100 (every power of two up to 1024 and every
// size in between) and for random sizes, and that single-leaf proofs (rs_merkle lists one
// sibling per level, bottom-up, skipping levels where the node was promoted) equal PATH. The
// one difference is the empty tree: rs_merkle has no root for it, RFC 6962 defines H("").
#[test]
fn rs_merkle_roots_equal_ours_for_every_size_up_to_1100() {
    let d = leaves(3, 1100);
    let t = memory_tree(&d);
    let h = Blake3Hasher;
    assert_eq!(rs_tree(&[]).root(), None);
    assert_eq!(t.root_at(0).unwrap(), blake3_parts(&[]));
    let mut powers_of_two = 0;
    for n in 1..=d.len() {
        let rs = rs_tree(&d[..n]);
        let ours = t.root_at(n as u64).unwrap();
        assert_eq!(rs.root().map(Hash), Some(ours), "size {n}");
        powers_of_two += usize::from(n.is_power_of_two());
        let indices: Vec<usize> = if n <= 64 {
            (0..n).collect()
        } else {
            vec![0, n / 3, n / 2, n - 1]
        };
        for i in indices {
            let rs_proof: Vec<Hash> = rs
                .proof(&[i])
                .proof_hashes()
                .iter()
                .copied()
                .map(Hash)
                .collect();
            assert_eq!(
                rs_proof,
                inclusion_proof(&h, &t, i as u64, n as u64).unwrap(),
                "proof of {i} at size {n}"
            );
        }
    }
    assert_eq!(powers_of_two, 11);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn rs_merkle_roots_equal_ours_for_random_sizes(n in 1usize..=2000, seed in any::<u64>()) {
        let d = leaves(seed, n);
        prop_assert_eq!(rs_tree(&d).root().map(Hash), Some(memory_tree(&d).root()));
    }
}
