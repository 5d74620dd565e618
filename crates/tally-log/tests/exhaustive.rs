//! Proves, for every tree size up to 128 and every leaf index and every pair of sizes, that
//! the generated inclusion and consistency proofs have the length the `*_proof_len` formulas
//! give and verify, and that every single-bit change to a proof hash, leaf or root, a wrong
//! index or size, and every truncation or extension of a proof is rejected. Also that proofs
//! involving the empty tree are refused.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tally_log::proof::{consistency_proof_len, inclusion_proof_len};
use tally_log::{
    consistency_proof, inclusion_proof, verify_consistency, verify_inclusion, Blake3Hasher, Hash,
    HashReader, LogError, MemoryTree, ProofError, TreeHasher,
};

const MAX: u64 = 128;
/// Up to this size every bit of every hash is flipped; above it a seeded sample is.
const ALL_BITS_UP_TO: u64 = 32;
/// Bits flipped per hash position above `ALL_BITS_UP_TO`.
const SAMPLED_BITS: usize = 3;

fn tree(n: u64) -> MemoryTree<Blake3Hasher> {
    let mut t = MemoryTree::new(Blake3Hasher);
    for i in 0..n {
        t.push(format!("leaf {i}").as_bytes());
    }
    t
}

fn flip(h: &Hash, bit: usize) -> Hash {
    let mut out = *h;
    out.0[bit / 8] ^= 1 << (bit % 8);
    out
}

/// The bits to flip in one hash position of a case whose tree size is `n`: all 256 for small
/// trees, otherwise a few drawn from the seeded rng (always at least one).
fn bits(rng: &mut StdRng, n: u64) -> Vec<usize> {
    if n <= ALL_BITS_UP_TO {
        (0..256).collect()
    } else {
        (0..SAMPLED_BITS).map(|_| rng.gen_range(0..256)).collect()
    }
}

/// Which side each sibling of leaf `index` sits on, from the leaf up, taken straight from the
/// RFC 9162 §2.1.3.1 recursion (`true` = the sibling is on the left).
fn path_shape(index: u64, size: u64) -> Vec<bool> {
    let mut shape = Vec::new();
    let (mut m, mut n) = (index, size);
    while n > 1 {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        if m < k {
            shape.push(false);
            n = k;
        } else {
            shape.push(true);
            m -= k;
            n -= k;
        }
    }
    shape.reverse();
    shape
}

#[test]
fn inclusion_proofs_for_every_size_and_index() {
    let h = Blake3Hasher;
    let t = tree(MAX);
    let mut rng = StdRng::seed_from_u64(0x7a11_0001);
    let mut grown = MemoryTree::new(Blake3Hasher);
    let roots: Vec<Hash> = (0..=MAX).map(|n| t.root_at(n).unwrap()).collect();
    let mut checked = 0u64;
    let mut accepted_at_other_size = 0u64;
    for n in 1..=MAX {
        grown.push(format!("leaf {}", n - 1).as_bytes());
        let root = roots[n as usize];
        // The root of the big tree at size n is the root of the tree that had n leaves.
        assert_eq!(root, grown.root(), "root_at({n})");
        for i in 0..n {
            let leaf = h.leaf(format!("leaf {i}").as_bytes());
            assert_eq!(t.stored_hash(0, i).unwrap(), leaf, "stored leaf {i}");
            let proof = inclusion_proof(&h, &t, i, n).unwrap();
            let ctx = format!("index {i} size {n}");
            assert_eq!(proof.len(), inclusion_proof_len(i, n), "{ctx}");
            assert_eq!(
                verify_inclusion(&h, i, n, &leaf, &proof, &root),
                Ok(()),
                "{ctx}"
            );

            // Every single-bit change of a proof hash, the leaf or the root.
            for pos in 0..proof.len() {
                for bit in bits(&mut rng, n) {
                    let mut bad = proof.clone();
                    bad[pos] = flip(&bad[pos], bit);
                    assert_eq!(
                        verify_inclusion(&h, i, n, &leaf, &bad, &root),
                        Err(ProofError::RootMismatch),
                        "{ctx}: proof[{pos}] bit {bit}"
                    );
                }
            }
            for bit in bits(&mut rng, n) {
                assert_eq!(
                    verify_inclusion(&h, i, n, &flip(&leaf, bit), &proof, &root),
                    Err(ProofError::RootMismatch),
                    "{ctx}: leaf bit {bit}"
                );
                assert_eq!(
                    verify_inclusion(&h, i, n, &leaf, &proof, &flip(&root, bit)),
                    Err(ProofError::RootMismatch),
                    "{ctx}: root bit {bit}"
                );
            }

            // A wrong index: never accepted, since a path's shape fixes the leaf position.
            let others: Vec<u64> = if n <= ALL_BITS_UP_TO {
                (0..n).filter(|&j| j != i).collect()
            } else {
                let mut v: Vec<u64> = [i.wrapping_sub(1), i + 1, i ^ 1, rng.gen_range(0..n)]
                    .into_iter()
                    .filter(|&j| j < n && j != i)
                    .collect();
                v.dedup();
                v
            };
            for j in others {
                assert!(
                    verify_inclusion(&h, j, n, &leaf, &proof, &root).is_err(),
                    "{ctx}: accepted at wrong index {j}"
                );
            }
            for j in [n, n + 1, u64::MAX] {
                assert_eq!(
                    verify_inclusion(&h, j, n, &leaf, &proof, &root),
                    Err(ProofError::IndexOutOfRange { index: j, size: n }),
                    "{ctx}: index {j}"
                );
            }

            // A wrong size. Against the root of the claimed size, a proof is accepted only if
            // it is that size's proof too. Against this size's root, the checker recomputes
            // this root exactly when the leaf's path has the same shape in both trees (an
            // inclusion proof binds the size only through the root the verifier trusts), so
            // that, and nothing else, is accepted.
            let sizes: Vec<u64> = if n <= ALL_BITS_UP_TO {
                (1..=2 * ALL_BITS_UP_TO).filter(|&s| s != n).collect()
            } else {
                [
                    n - 2,
                    n - 1,
                    n + 1,
                    n + 2,
                    n / 2,
                    2 * n,
                    MAX,
                    rng.gen_range(1..=MAX),
                ]
                .into_iter()
                .filter(|&s| s != n && s > i && s <= MAX)
                .collect()
            };
            for s in sizes {
                if i >= s {
                    assert_eq!(
                        verify_inclusion(&h, i, s, &leaf, &proof, &root),
                        Err(ProofError::IndexOutOfRange { index: i, size: s })
                    );
                    continue;
                }
                let same_shape = path_shape(i, s) == path_shape(i, n);
                accepted_at_other_size += u64::from(same_shape);
                assert_eq!(
                    verify_inclusion(&h, i, s, &leaf, &proof, &root).is_ok(),
                    same_shape,
                    "{ctx}: claimed size {s} against root of {n}"
                );
                let their_proof = inclusion_proof(&h, &t, i, s).unwrap();
                assert_eq!(
                    verify_inclusion(&h, i, s, &leaf, &proof, &roots[s as usize]).is_ok(),
                    their_proof == proof,
                    "{ctx}: claimed size {s} against root of {s}"
                );
            }
            assert_eq!(
                verify_inclusion(&h, i, 0, &leaf, &proof, &root),
                Err(ProofError::IndexOutOfRange { index: i, size: 0 })
            );

            // Truncated and extended proofs, at either end.
            let len = proof.len();
            for cut in 1..=len {
                for bad in [proof[..len - cut].to_vec(), proof[cut..].to_vec()] {
                    assert_eq!(
                        verify_inclusion(&h, i, n, &leaf, &bad, &root),
                        Err(ProofError::WrongLength {
                            expected: len,
                            got: len - cut
                        }),
                        "{ctx}: cut {cut}"
                    );
                }
            }
            for extra in [leaf, root, Hash([0; 32]), *proof.last().unwrap_or(&leaf)] {
                let mut at_end = proof.clone();
                at_end.push(extra);
                let mut at_start = vec![extra];
                at_start.extend_from_slice(&proof);
                for bad in [at_end, at_start] {
                    assert_eq!(
                        verify_inclusion(&h, i, n, &leaf, &bad, &root),
                        Err(ProofError::WrongLength {
                            expected: len,
                            got: len + 1
                        }),
                        "{ctx}: extended"
                    );
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, MAX * (MAX + 1) / 2);
    // The same-shape exception is real (e.g. leaf 0 of sizes 3 and 4), so both outcomes of
    // the wrong-size check were exercised.
    assert!(accepted_at_other_size > 0);
}

#[test]
fn consistency_proofs_for_every_pair_of_sizes() {
    let h = Blake3Hasher;
    let t = tree(MAX);
    let mut rng = StdRng::seed_from_u64(0x7a11_0002);
    let roots: Vec<Hash> = (0..=MAX).map(|n| t.root_at(n).unwrap()).collect();
    let mut checked = 0u64;
    for n in 1..=MAX {
        for m in 1..=n {
            let (old_root, new_root) = (roots[m as usize], roots[n as usize]);
            let proof = consistency_proof(&h, &t, m, n).unwrap();
            let ctx = format!("sizes {m} -> {n}");
            let len = proof.len();
            assert_eq!(len, consistency_proof_len(m, n), "{ctx}");
            if m == n {
                assert!(proof.is_empty(), "{ctx}");
            }
            assert_eq!(
                verify_consistency(&h, m, n, &proof, &old_root, &new_root),
                Ok(()),
                "{ctx}"
            );

            let rejected = |r: Result<(), ProofError>| {
                matches!(
                    r,
                    Err(ProofError::RootMismatch) | Err(ProofError::OldRootMismatch)
                )
            };
            for pos in 0..len {
                for bit in bits(&mut rng, n) {
                    let mut bad = proof.clone();
                    bad[pos] = flip(&bad[pos], bit);
                    assert!(
                        rejected(verify_consistency(&h, m, n, &bad, &old_root, &new_root)),
                        "{ctx}: proof[{pos}] bit {bit}"
                    );
                }
            }
            for bit in bits(&mut rng, n) {
                assert!(
                    rejected(verify_consistency(
                        &h,
                        m,
                        n,
                        &proof,
                        &flip(&old_root, bit),
                        &new_root
                    )),
                    "{ctx}: old root bit {bit}"
                );
                assert!(
                    rejected(verify_consistency(
                        &h,
                        m,
                        n,
                        &proof,
                        &old_root,
                        &flip(&new_root, bit)
                    )),
                    "{ctx}: new root bit {bit}"
                );
            }
            if m != n {
                assert!(
                    verify_consistency(&h, m, n, &proof, &new_root, &old_root).is_err(),
                    "{ctx}: swapped roots"
                );
            }

            for cut in 1..=len {
                for bad in [proof[..len - cut].to_vec(), proof[cut..].to_vec()] {
                    assert_eq!(
                        verify_consistency(&h, m, n, &bad, &old_root, &new_root),
                        Err(ProofError::WrongLength {
                            expected: len,
                            got: len - cut
                        }),
                        "{ctx}: cut {cut}"
                    );
                }
            }
            for extra in [old_root, new_root, Hash([0; 32])] {
                let mut at_end = proof.clone();
                at_end.push(extra);
                let mut at_start = vec![extra];
                at_start.extend_from_slice(&proof);
                for bad in [at_end, at_start] {
                    assert_eq!(
                        verify_consistency(&h, m, n, &bad, &old_root, &new_root),
                        Err(ProofError::WrongLength {
                            expected: len,
                            got: len + 1
                        }),
                        "{ctx}: extended"
                    );
                }
            }
            checked += 1;
        }
        // Time travel: an old size above the new one is refused by both sides.
        assert_eq!(
            verify_consistency(&h, n + 1, n, &[], &roots[n as usize], &roots[n as usize]),
            Err(ProofError::SizeOrder { old: n + 1, new: n })
        );
        assert!(matches!(
            consistency_proof(&h, &t, n, n - 1),
            Err(LogError::BadSizes { .. })
        ));
    }
    assert_eq!(checked, MAX * (MAX + 1) / 2);
}

#[test]
fn the_empty_tree_has_no_proofs() {
    let h = Blake3Hasher;
    let t = tree(MAX);
    let empty = h.empty();
    assert_eq!(t.root_at(0).unwrap(), empty);
    assert_eq!(MemoryTree::new(Blake3Hasher).root(), empty);
    for n in 0..=MAX {
        let root = t.root_at(n).unwrap();
        // Whatever proof is offered, including the would-be "proof" n's root itself.
        for proof in [vec![], vec![root], vec![empty, root]] {
            assert_eq!(
                verify_consistency(&h, 0, n, &proof, &empty, &root),
                Err(ProofError::FromEmptyTree),
                "0 -> {n}"
            );
        }
        assert!(
            matches!(
                consistency_proof(&h, &t, 0, n),
                Err(LogError::BadSizes { old: 0, .. })
            ),
            "generator 0 -> {n}"
        );
    }
    let leaf = h.leaf(b"leaf 0");
    for proof in [vec![], vec![leaf]] {
        assert_eq!(
            verify_inclusion(&h, 0, 0, &leaf, &proof, &empty),
            Err(ProofError::IndexOutOfRange { index: 0, size: 0 })
        );
    }
    assert!(matches!(
        inclusion_proof(&h, &t, 0, 0),
        Err(LogError::OutOfRange { index: 0, size: 0 })
    ));
    assert!(matches!(
        inclusion_proof(&h, &MemoryTree::new(Blake3Hasher), 0, 0),
        Err(LogError::OutOfRange { index: 0, size: 0 })
    ));
}

/// Sizes near 2^64 must not overflow the length arithmetic: the verifier refuses cleanly.
#[test]
fn huge_sizes_are_refused_without_panicking() {
    let h = Hash([7; 32]);
    for (index, size) in [
        (1u64, (1u64 << 63) + 1),
        (0, u64::MAX),
        (u64::MAX - 1, u64::MAX),
        (5, 3),
    ] {
        let expected = inclusion_proof_len(index, size);
        assert!(expected <= 64 + 64);
        let proof = vec![h; expected.min(128)];
        assert!(verify_inclusion(&Blake3Hasher, index, size, &h, &proof, &h).is_err());
    }
    assert_eq!(inclusion_proof_len(1, (1u64 << 63) + 1), 64);
    assert_eq!(inclusion_proof_len(3, 0), 0);
    assert_eq!(consistency_proof_len(0, 1), 0);
    assert_eq!(consistency_proof_len(5, 1), 0);
    for (old, new) in [
        (1u64, u64::MAX),
        (u64::MAX - 1, u64::MAX),
        ((1 << 63) + 1, u64::MAX),
    ] {
        let proof = vec![h; consistency_proof_len(old, new)];
        assert!(verify_consistency(&Blake3Hasher, old, new, &proof, &h, &h).is_err());
    }
}
