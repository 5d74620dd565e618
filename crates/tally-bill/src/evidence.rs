//! The proofs a bill carries: for each chosen record, its bytes, the provider's signature and
//! its inclusion proof against the newest checkpoint, so the page can verify it as a proof
//! bundle (spec/PROTOCOL.md §7.3, steps 1–7) with public keys only (spec/BILL.md §4).
//!
//! A record is about 1 KB of evidence, so a bill of a million records cannot carry all of
//! them and stay openable; [`select`] chooses which ones it carries.

use tally_core::Hash;
use tally_log::{inclusion_proof, Blake3Hasher, LogError, MemoryTree};

/// Records a bill carries evidence for by default: every record of a bill up to this size.
pub const DEFAULT_CAP: usize = 10_000;

/// `proof_len` of an entry that has no proof: the record is past the newest checkpoint (or
/// the statement has no valid checkpoint).
pub const NO_PROOF: u8 = 0xff;

/// The records to carry evidence for, ascending: all of them when `n ≤ cap`; otherwise the
/// discrepant ones first (up to half the cap), then records spread evenly over the log,
/// always including the first and the last.
pub fn select(n: u64, cap: usize, discrepant: &[u64]) -> Vec<u64> {
    if n <= cap as u64 {
        return (0..n).collect();
    }
    let mut chosen: Vec<u64> = discrepant
        .iter()
        .copied()
        .filter(|&i| i < n)
        .take(cap / 2)
        .collect();
    // The spread: `room - 1` records a stride apart from 0, and the last.
    let room = cap.saturating_sub(chosen.len()) as u64;
    if room > 0 {
        let stride = ((n - 1) / room.saturating_sub(1).max(1)).max(1);
        chosen.extend((0..room - 1).map(|k| (k * stride).min(n - 1)));
        chosen.push(n - 1);
    }
    chosen.sort_unstable();
    chosen.dedup();
    chosen
}

/// One record's evidence as read from the statement.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its index.
    pub index: u64,
    /// Its bytes (prefix included), or whatever the line decoded to if it is not a record.
    pub record: Vec<u8>,
    /// The provider's signature from the statement line (zeros if the line had none).
    pub provider_signature: [u8; 64],
}

/// Encodes the entries with their proofs against the tree's state at `proved_size`:
/// `m` indices as little-endian f64, then per entry `u32le record length || record ||
/// signature (64) || u8 proof length || proof hashes` (spec/BILL.md §4).
pub fn encode(
    entries: &[Entry],
    tree: &MemoryTree<Blake3Hasher>,
    proved_size: Option<u64>,
) -> Result<Vec<u8>, LogError> {
    let mut out = Vec::with_capacity(entries.len() * 1100);
    for e in entries {
        out.extend_from_slice(&(e.index as f64).to_le_bytes());
    }
    for e in entries {
        out.extend_from_slice(&(e.record.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.record);
        out.extend_from_slice(&e.provider_signature);
        let proof: Option<Vec<Hash>> = match proved_size {
            Some(size) if e.index < size => {
                Some(inclusion_proof(&Blake3Hasher, tree, e.index, size)?)
            }
            _ => None,
        };
        match proof {
            Some(p) => {
                // A proof has at most 64 hashes (one per bit of the index).
                out.push(p.len() as u8);
                for h in p {
                    out.extend_from_slice(&h.0);
                }
            }
            None => out.push(NO_PROOF),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_log::verify_inclusion;

    #[test]
    fn small_bills_carry_every_record() {
        assert_eq!(select(5, 10, &[3]), vec![0, 1, 2, 3, 4]);
        assert!(select(0, 10, &[]).is_empty());
    }

    #[test]
    fn large_bills_carry_discrepancies_the_ends_and_a_spread() {
        let n = 1_000_000;
        let s = select(n, 1000, &[123_457, 999_998]);
        assert!(s.len() <= 1000);
        assert!(s.contains(&123_457) && s.contains(&999_998));
        assert_eq!(s.first(), Some(&0));
        assert_eq!(s.last(), Some(&(n - 1)));
        assert!(s.windows(2).all(|w| w[0] < w[1]));
        // Spread: no gap much wider than n / cap.
        assert!(s.windows(2).all(|w| w[1] - w[0] <= 2 * n / 1000));
    }

    #[test]
    fn encoded_proofs_verify_against_the_tree() {
        let mut tree = MemoryTree::new(Blake3Hasher);
        let records: Vec<Vec<u8>> = (0..13u8).map(|k| vec![k; 448]).collect();
        for r in &records {
            tree.push(r);
        }
        let size = 11;
        let root = tree.root_at(size).unwrap();
        let entries: Vec<Entry> = [2u64, 10, 12]
            .iter()
            .map(|&i| Entry {
                index: i,
                record: records[i as usize].clone(),
                provider_signature: [7; 64],
            })
            .collect();
        let bytes = encode(&entries, &tree, Some(size)).unwrap();
        // Walk the encoding as the page does.
        let mut at = 8 * entries.len();
        for (k, e) in entries.iter().enumerate() {
            let idx = f64::from_le_bytes(bytes[8 * k..8 * k + 8].try_into().unwrap());
            assert_eq!(idx as u64, e.index);
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            at += 4;
            assert_eq!(&bytes[at..at + len], &e.record[..]);
            at += len + 64;
            let plen = bytes[at];
            at += 1;
            if e.index >= size {
                assert_eq!(plen, NO_PROOF);
                continue;
            }
            let proof: Vec<Hash> = (0..plen as usize)
                .map(|j| Hash(bytes[at + 32 * j..at + 32 * j + 32].try_into().unwrap()))
                .collect();
            at += 32 * plen as usize;
            let leaf = tally_log::TreeHasher::leaf(&Blake3Hasher, &e.record);
            verify_inclusion(&Blake3Hasher, e.index, size, &leaf, &proof, &root).unwrap();
        }
        assert_eq!(at, bytes.len());
    }
}
