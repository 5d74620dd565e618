//! The right edge ([`Frontier`]) of a stored log at its head, for a party that keeps appending
//! in memory ahead of the store: the gateway's in-memory head in promise mode
//! (spec/DESIGN-DECISIONS.md, "Promise mode") and the client's pipelined mirror.

use tally_core::ChannelId;

use crate::error::LogError;
use crate::store::LogStore;
use crate::tree::{Frontier, HashReader};
use crate::{Blake3Hasher, Hash};

/// Answers the stored hashes of one frontier from a list (largest subtree first).
struct EdgeReader(Vec<(u8, u64, Hash)>);

impl HashReader for EdgeReader {
    fn stored_hash(&self, level: u8, index: u64) -> Result<Hash, LogError> {
        self.0
            .iter()
            .find(|(l, i, _)| *l == level && *i == index)
            .map(|(_, _, h)| *h)
            .ok_or(LogError::OutOfRange { index, size: 0 })
    }
}

/// The frontier of `channel`'s durable log at `size` (its head), checked against `root`.
///
/// The inclusion proof of the last leaf lists the complete subtrees of size `size - 1`,
/// smallest first (RFC 9162 §2.1.3.1: the last leaf is always in the right part); pushing
/// that leaf gives the frontier of `size`. O(log n) reads through the store's public API.
pub fn frontier_at(
    log: &LogStore<Blake3Hasher>,
    channel: &ChannelId,
    size: u64,
    root: &Hash,
) -> Result<Frontier, LogError> {
    if size == 0 {
        return Ok(Frontier::default());
    }
    let proof = log.inclusion_proof(channel, size - 1, size)?;
    let before = size - 1;
    let mut edge = Vec::with_capacity(proof.len());
    let mut hashes = proof.iter().rev();
    let mut at = 0u64;
    while at < before {
        let level = 63 - (before - at).leading_zeros();
        let h = hashes.next().ok_or_else(|| LogError::Corrupt {
            channel: *channel,
            detail: "short proof loading the frontier".into(),
        })?;
        edge.push((level as u8, at >> level, *h));
        at += 1u64 << level;
    }
    let mut frontier = Frontier::load(&EdgeReader(edge), before)?;
    let last = log.record(channel, size - 1)?;
    frontier.push_record(&Blake3Hasher, &last);
    if frontier.root(&Blake3Hasher) != *root {
        return Err(LogError::Corrupt {
            channel: *channel,
            detail: "the frontier does not give the stored root".into(),
        });
    }
    Ok(frontier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::MemoryTree;
    use crate::TreeHasher;

    #[test]
    fn the_frontier_at_any_size_continues_like_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogStore::open(dir.path()).unwrap();
        let ch = ChannelId([3; 32]);
        let mut tree = MemoryTree::new(Blake3Hasher);
        for n in 0..70u64 {
            let head = log
                .head(&ch)
                .map_or((0, Blake3Hasher.empty()), |h| (h.size, h.root));
            let mut f = frontier_at(&log, &ch, head.0, &head.1).unwrap();
            assert_eq!(f.size(), n);
            let rec = format!("record {n}").into_bytes();
            f.push(&Blake3Hasher, Blake3Hasher.leaf(&rec));
            tree.push(&rec);
            assert_eq!(f.root(&Blake3Hasher), tree.root(), "size {}", n + 1);
            log.append(ch, vec![rec]).wait().unwrap();
        }
        let head = log.head(&ch).unwrap();
        assert!(frontier_at(&log, &ch, head.size, &Hash([0; 32])).is_err());
    }
}
