//! Subtree arithmetic of the RFC 6962 tree (RFC 9162 §2.1.1).
//!
//! A *stored hash* `(level, index)` is the root of the complete subtree over leaves
//! `index·2^level .. (index+1)·2^level`. It exists once the log holds `(index+1)·2^level`
//! leaves and never changes after. Every other node of any historical tree is computed from
//! O(log n) of them.

use tally_core::hash::{Hash, TreeHasher};

use crate::error::LogError;

/// Where stored hashes come from: the sled store, an in-memory tree, or a test double.
pub trait HashReader {
    /// The stored hash at `(level, index)`; it must exist.
    fn stored_hash(&self, level: u8, index: u64) -> Result<Hash, LogError>;
}

/// The largest power of two strictly below `n` (`n ≥ 2`): RFC 9162's split point `k`.
pub(crate) fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The hash of the node covering leaves `lo..hi` of some tree, where the range is a node of
/// the RFC 6962 tree (lo is a multiple of the largest power of two not above `hi - lo`).
/// It costs `popcount(hi - lo)` reads: the range splits into complete subtrees of decreasing
/// size, folded from the right.
pub(crate) fn range_hash<H: TreeHasher, R: HashReader + ?Sized>(
    hasher: &H,
    reader: &R,
    lo: u64,
    hi: u64,
) -> Result<Hash, LogError> {
    if lo == hi {
        return Ok(hasher.empty());
    }
    let top = 63 - hi.saturating_sub(lo).leading_zeros().min(63);
    if lo > hi || lo & ((1u64 << top) - 1) != 0 {
        // Not a node of the tree: its hash would silently be some other range's.
        return Err(LogError::BadSizes {
            old: lo,
            new: hi,
            size: hi,
        });
    }
    let mut parts = Vec::with_capacity(64);
    let mut at = lo;
    while at < hi {
        let level = 63 - (hi - at).leading_zeros();
        parts.push(reader.stored_hash(level as u8, at >> level)?);
        at += 1u64 << level;
    }
    Ok(fold_right(hasher, &parts).unwrap_or_else(|| hasher.empty()))
}

/// Folds complete-subtree hashes listed from left (largest) to right into one root.
fn fold_right<H: TreeHasher>(hasher: &H, parts: &[Hash]) -> Option<Hash> {
    let (last, rest) = parts.split_last()?;
    Some(rest.iter().rev().fold(*last, |acc, h| hasher.node(h, &acc)))
}

/// The right edge of a growing tree: the roots of the complete subtrees that the binary
/// decomposition of its size gives, largest first. It is all an appender needs to compute
/// every new stored hash and the current root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    edge: Vec<Hash>,
}

impl Frontier {
    /// The frontier of a tree with `size` leaves, read from its stored hashes.
    pub fn load<R: HashReader + ?Sized>(reader: &R, size: u64) -> Result<Self, LogError> {
        let mut edge = Vec::with_capacity(size.count_ones() as usize);
        let mut at = 0u64;
        while at < size {
            let level = 63 - (size - at).leading_zeros();
            edge.push(reader.stored_hash(level as u8, at >> level)?);
            at += 1u64 << level;
        }
        Ok(Frontier { size, edge })
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash and returns the stored hashes it completes, as
    /// `(level, index, hash)`, starting with the leaf itself at level 0.
    pub fn push<H: TreeHasher>(&mut self, hasher: &H, leaf: Hash) -> Vec<(u8, u64, Hash)> {
        let index = self.size;
        let mut out = Vec::with_capacity(1 + index.trailing_ones() as usize);
        out.push((0u8, index, leaf));
        let mut node = leaf;
        let mut level = 0u8;
        while (index >> level) & 1 == 1 {
            // A node whose index is odd at its level is a right child: its left sibling is the
            // last complete subtree on the edge.
            let Some(left) = self.edge.pop() else { break };
            node = hasher.node(&left, &node);
            level += 1;
            out.push((level, index >> level, node));
        }
        self.edge.push(node);
        self.size += 1;
        out
    }

    /// Appends a record: its leaf is `H(0x00 || record)` over the whole record bytes (RFC 9162
    /// §2.1.1). The one leaf rule of every backend (the sled writer, the PostgreSQL store of
    /// spec/CLUSTER.md §2), so the same records give the same tree everywhere.
    pub fn push_record<H: TreeHasher>(
        &mut self,
        hasher: &H,
        record: &[u8],
    ) -> Vec<(u8, u64, Hash)> {
        self.push(hasher, hasher.leaf(record))
    }

    /// `MTH` of the whole tree (RFC 9162 §2.1.1).
    pub fn root<H: TreeHasher>(&self, hasher: &H) -> Hash {
        fold_right(hasher, &self.edge).unwrap_or_else(|| hasher.empty())
    }
}

/// A whole tree in memory, every level kept: for a client's mirror of a small log, for tests
/// and for generating vectors.
#[derive(Clone, Debug)]
pub struct MemoryTree<H: TreeHasher> {
    hasher: H,
    levels: Vec<Vec<Hash>>,
    frontier: Frontier,
}

impl<H: TreeHasher> MemoryTree<H> {
    /// An empty tree.
    pub fn new(hasher: H) -> Self {
        MemoryTree {
            hasher,
            levels: Vec::new(),
            frontier: Frontier::default(),
        }
    }

    /// Appends leaf data (hashed with `H(0x00 || data)`) and returns its index.
    pub fn push(&mut self, data: &[u8]) -> u64 {
        let leaf = self.hasher.leaf(data);
        self.push_hash(leaf)
    }

    /// Appends an already computed leaf hash and returns its index.
    pub fn push_hash(&mut self, leaf: Hash) -> u64 {
        let index = self.frontier.size();
        for (level, _, hash) in self.frontier.push(&self.hasher, leaf) {
            let level = level as usize;
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(hash);
        }
        index
    }

    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The current root.
    pub fn root(&self) -> Hash {
        self.frontier.root(&self.hasher)
    }

    /// The root at an earlier size.
    pub fn root_at(&self, size: u64) -> Result<Hash, LogError> {
        if size > self.size() {
            return Err(LogError::OutOfRange {
                index: size,
                size: self.size(),
            });
        }
        range_hash(&self.hasher, self, 0, size)
    }

    /// The hasher.
    pub fn hasher(&self) -> &H {
        &self.hasher
    }
}

impl<H: TreeHasher> HashReader for MemoryTree<H> {
    fn stored_hash(&self, level: u8, index: u64) -> Result<Hash, LogError> {
        self.levels
            .get(level as usize)
            .and_then(|l| usize::try_from(index).ok().and_then(|i| l.get(i)))
            .copied()
            .ok_or(LogError::OutOfRange {
                index: index << level,
                size: self.size(),
            })
    }
}
