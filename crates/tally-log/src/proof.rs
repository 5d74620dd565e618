//! Inclusion and consistency proofs (RFC 9162 §2.1.3 and §2.1.4), each generator next to its
//! checker.
//!
//! Proofs list hashes from the leaf (or the old tree) upwards, exactly as the RFC's `PATH` and
//! `SUBPROOF` define them. The checkers follow the RFC's verification steps and, before
//! hashing anything, require the exact proof length the sizes determine.

use subtle::ConstantTimeEq;
use tally_core::hash::{Hash, TreeHasher};

use crate::error::{LogError, ProofError};
use crate::tree::{range_hash, split, HashReader};

/// The inclusion proof of leaf `index` in the tree of size `size` (RFC 9162 §2.1.3.1).
pub fn inclusion_proof<H: TreeHasher, R: HashReader + ?Sized>(
    hasher: &H,
    reader: &R,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, LogError> {
    if index >= size {
        return Err(LogError::OutOfRange { index, size });
    }
    // Walk down from the root, collecting the sibling at each step, then reverse so the proof
    // starts next to the leaf.
    let mut proof = Vec::with_capacity(64);
    let (mut lo, mut hi) = (0u64, size);
    while hi - lo > 1 {
        let k = split(hi - lo);
        if index < lo + k {
            proof.push(range_hash(hasher, reader, lo + k, hi)?);
            hi = lo + k;
        } else {
            proof.push(range_hash(hasher, reader, lo, lo + k)?);
            lo += k;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// The exact length of the inclusion proof of `index` in a tree of `size`; 0 when
/// `index ≥ size` (no proof exists).
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    if index >= size {
        return 0;
    }
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Checks that `leaf` is at `index` in the tree of `size` with root `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion<H: TreeHasher>(
    hasher: &H,
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_proof_len(index, size);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            got: proof.len(),
        });
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return Err(ProofError::RootMismatch);
        }
        if f & 1 == 1 || f == s {
            r = hasher.node(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = hasher.node(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s == 0 && bool::from(r.0.ct_eq(&root.0)) {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// The consistency proof between the trees of sizes `old` and `new`
/// (RFC 9162 §2.1.4.1). Empty when `old == new`; refused when `old == 0`.
pub fn consistency_proof<H: TreeHasher, R: HashReader + ?Sized>(
    hasher: &H,
    reader: &R,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, LogError> {
    if old == 0 || old > new {
        return Err(LogError::BadSizes {
            old,
            new,
            size: new,
        });
    }
    let mut proof = Vec::with_capacity(64);
    // SUBPROOF(m, D[lo:hi], b), unrolled: each step records one sibling and descends.
    let (mut lo, mut hi, mut m) = (0u64, new, old);
    let mut complete = true;
    while m != hi - lo {
        let k = split(hi - lo);
        if m <= k {
            proof.push(range_hash(hasher, reader, lo + k, hi)?);
            hi = lo + k;
        } else {
            proof.push(range_hash(hasher, reader, lo, lo + k)?);
            lo += k;
            m -= k;
            complete = false;
        }
    }
    if !complete {
        proof.push(range_hash(hasher, reader, lo, hi)?);
    }
    proof.reverse();
    Ok(proof)
}

/// The exact length of the consistency proof between `old` and `new`; 0 unless
/// `0 < old ≤ new` (no proof exists).
pub fn consistency_proof_len(old: u64, new: u64) -> usize {
    if old == 0 || old > new {
        return 0;
    }
    let (mut lo, mut hi, mut m) = (0u64, new, old);
    let mut complete = true;
    let mut len = 0;
    while m != hi - lo {
        let k = split(hi - lo);
        if m <= k {
            hi = lo + k;
        } else {
            lo += k;
            m -= k;
            complete = false;
        }
        len += 1;
    }
    len + usize::from(!complete)
}

/// Checks that the tree of size `old` with root `old_root` is a prefix of the tree of size
/// `new` with root `new_root` (RFC 9162 §2.1.4.2).
///
/// Equal sizes need an empty proof and equal roots. An old size of 0 is refused: every tree
/// extends the empty one, so such a "proof" would say nothing (the RFC defines proofs for
/// `0 < m`).
pub fn verify_consistency<H: TreeHasher>(
    hasher: &H,
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizeOrder { old, new });
    }
    if old == 0 {
        return Err(ProofError::FromEmptyTree);
    }
    let expected = consistency_proof_len(old, new);
    if proof.len() != expected {
        return Err(ProofError::WrongLength {
            expected,
            got: proof.len(),
        });
    }
    if old == new {
        return if bool::from(old_root.0.ct_eq(&new_root.0)) {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    // RFC 9162 §2.1.4.2 step 2: when old is a power of two the old root itself starts the
    // path.
    let mut path = proof.iter();
    let first = if old.is_power_of_two() {
        *old_root
    } else {
        match path.next() {
            Some(h) => *h,
            None => return Err(ProofError::RootMismatch),
        }
    };
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in path {
        if s == 0 {
            return Err(ProofError::RootMismatch);
        }
        if f & 1 == 1 || f == s {
            fr = hasher.node(c, &fr);
            sr = hasher.node(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = hasher.node(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(ProofError::RootMismatch);
    }
    if !bool::from(fr.0.ct_eq(&old_root.0)) {
        return Err(ProofError::OldRootMismatch);
    }
    if !bool::from(sr.0.ct_eq(&new_root.0)) {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}
