//! The one conformance suite every [`LogBackend`] runs (spec/CLUSTER.md §11): the sled store in
//! this crate's tests, the PostgreSQL store in tally-store-pg's. Written once, generic over
//! the trait, so the two backends cannot drift apart one test file at a time.
//!
//! Every root and proof is compared with a [`MemoryTree`] holding the same records and
//! checked with this crate's verifiers; two backends equal to the same tree are equal to each
//! other, and [`same_log`] compares two backends directly as well. The suite panics on the
//! first difference (it is test code, compiled only for tests or with the `conformance`
//! feature). It writes channels whose ids start with `0x00 0x00` (shard 0 of any shard
//! count, CLUSTER.md §3), so a PostgreSQL backend needs only the lease of shard 0.

use std::fmt::Debug;

use tally_core::hash::{Blake3Hasher, Hash, TreeHasher};
use tally_core::ChannelId;

use crate::backend::{ErrorKind, LogBackend};
use crate::proof::{self, verify_consistency, verify_inclusion};
use crate::tree::MemoryTree;

/// The log sizes the suite builds: empty, the smallest trees, both sides of a power of two,
/// and one large enough for several levels above any tile.
pub const SIZES: [u64; 8] = [0, 1, 2, 3, 7, 8, 9, 1000];

/// The batch lengths appends cycle through, so every size is reached over several group
/// commits of uneven lengths (a batch that crosses a complete subtree included).
const BATCHES: [u64; 8] = [1, 2, 3, 5, 8, 13, 64, 200];

/// A channel id in shard 0 for the suite's `n`th log.
pub fn channel(n: u8) -> ChannelId {
    let mut id = [n; 32];
    id[0] = 0;
    id[1] = 0;
    ChannelId(id)
}

/// The `i`th record of a log tagged `tag`: distinct across logs and indices.
pub fn record(tag: u8, i: u64) -> Vec<u8> {
    format!("record {i} of log {tag}").into_bytes()
}

/// Runs the whole suite on a backend that holds no channel of the suite yet.
pub async fn run_all<B: LogBackend>(log: &B) {
    empty_channel(log, &channel(0xe0)).await;
    for (n, size) in (1u8..).zip(SIZES) {
        let ch = channel(n);
        let tree = build(log, &ch, n, size).await;
        check_tree(log, &ch, &tree).await;
        check_refusals(log, &ch, size).await;
    }
    checkpoints(log, &channel(0xe1)).await;
    keyed_lanes(log, &channel(0xe2)).await;
}

/// Unwraps a backend result, naming the call that failed.
fn ok<T, E: Debug>(result: Result<T, E>, what: &str) -> T {
    match result {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e:?}"),
    }
}

/// Asserts that `result` is a refusal of `kind`.
fn refused<B: LogBackend, T: Debug>(result: Result<T, B::Error>, kind: ErrorKind, what: &str) {
    match result {
        Ok(v) => panic!("{what}: accepted ({v:?}), expected {kind:?}"),
        Err(e) => assert_eq!(B::kind(&e), kind, "{what}: {e}"),
    }
}

/// A channel without records: no head, nothing to read, the empty tree's root at 0.
pub async fn empty_channel<B: LogBackend>(log: &B, ch: &ChannelId) {
    assert!(ok(log.head(ch).await, "head").is_none());
    assert!(ok(log.records(ch, 0..10).await, "records").is_empty());
    assert_eq!(
        ok(log.root_at(ch, 0).await, "root_at 0"),
        Blake3Hasher.empty()
    );
    refused::<B, _>(log.record(ch, 0).await, ErrorKind::OutOfRange, "record 0");
    refused::<B, _>(log.root_at(ch, 1).await, ErrorKind::OutOfRange, "root_at 1");
    assert!(ok(log.latest_checkpoint(ch).await, "latest").is_none());
    assert!(ok(log.checkpoints(ch).await, "checkpoints").is_empty());
    assert!(ok(log.keyed(ch).await, "keyed").is_empty());
}

/// Appends `size` records in uneven batches, checking the head against the tree after each.
pub async fn build<B: LogBackend>(
    log: &B,
    ch: &ChannelId,
    tag: u8,
    size: u64,
) -> MemoryTree<Blake3Hasher> {
    let mut tree = MemoryTree::new(Blake3Hasher);
    let mut batches = BATCHES.iter().cycle();
    while tree.size() < size {
        let start = tree.size();
        let len = batches.next().copied().unwrap_or(1).min(size - start);
        let batch: Vec<Vec<u8>> = (start..start + len).map(|i| record(tag, i)).collect();
        for r in &batch {
            tree.push(r);
        }
        let appended = ok(log.append(ch, start, batch).await, "append");
        assert_eq!(appended, start..start + len);
        check_head(log, ch, &tree).await;
    }
    tree
}

/// The backend's head is the tree's: its size and root.
pub async fn check_head<B: LogBackend>(log: &B, ch: &ChannelId, tree: &MemoryTree<Blake3Hasher>) {
    let head = ok(log.head(ch).await, "head").map(|h| (h.size, h.root));
    let want = (tree.size() > 0).then(|| (tree.size(), tree.root()));
    assert_eq!(head, want, "head");
}

/// The sizes at which roots and proofs are checked: all of a small log, around each power of
/// two of a large one.
fn sample_sizes(size: u64) -> Vec<u64> {
    if size <= 20 {
        return (0..=size).collect();
    }
    let mut out: Vec<u64> = (0..10).map(|k| 1u64 << k).collect();
    out.extend(out.clone().iter().flat_map(|p| [p - 1, p + 1]));
    out.extend([0, size - 1, size, size / 2]);
    out.retain(|s| *s <= size);
    out.sort_unstable();
    out.dedup();
    out
}

/// Roots, records, inclusion and consistency proofs at the sample sizes: equal to the tree's
/// and accepted by the verifiers.
pub async fn check_tree<B: LogBackend>(log: &B, ch: &ChannelId, tree: &MemoryTree<Blake3Hasher>) {
    let h = Blake3Hasher;
    let sizes = sample_sizes(tree.size());
    let all = ok(log.records(ch, 0..tree.size() + 5).await, "records");
    assert_eq!(all.len() as u64, tree.size());
    for &n in &sizes {
        let root = ok(log.root_at(ch, n).await, "root_at");
        assert_eq!(root, ok(tree.root_at(n), "tree root"), "root at {n}");
        let mut indices = vec![0, 1, n / 2, n.saturating_sub(2), n.saturating_sub(1)];
        indices.retain(|i| *i < n);
        indices.dedup();
        for i in indices {
            let got = ok(log.inclusion_proof(ch, i, n).await, "inclusion");
            let want = ok(proof::inclusion_proof(&h, tree, i, n), "tree inclusion");
            assert_eq!(got, want, "inclusion of {i} in {n}");
            let leaf = h.leaf(&ok(log.record(ch, i).await, "record"));
            ok(
                verify_inclusion(&h, i, n, &leaf, &got, &root),
                "verify inclusion",
            );
        }
        for &m in sizes.iter().filter(|m| **m > 0 && **m <= n) {
            let got = ok(log.consistency_proof(ch, m, n).await, "consistency");
            let want = ok(proof::consistency_proof(&h, tree, m, n), "tree consistency");
            assert_eq!(got, want, "consistency {m} → {n}");
            let old = ok(tree.root_at(m), "tree root");
            ok(verify_consistency(&h, m, n, &got, &old, &root), "verify");
        }
    }
}

/// The calls both backends must refuse, and why.
pub async fn check_refusals<B: LogBackend>(log: &B, ch: &ChannelId, size: u64) {
    let k = ErrorKind::OutOfRange;
    refused::<B, _>(log.root_at(ch, size + 1).await, k, "root beyond head");
    refused::<B, _>(log.record(ch, size).await, k, "record at head");
    refused::<B, _>(
        log.inclusion_proof(ch, size, size).await,
        k,
        "index at size",
    );
    refused::<B, _>(log.inclusion_proof(ch, 0, size + 1).await, k, "size beyond");
    let b = ErrorKind::BadSizes;
    refused::<B, _>(log.consistency_proof(ch, 0, size).await, b, "from 0");
    refused::<B, _>(log.consistency_proof(ch, 1, size + 1).await, b, "beyond");
    refused::<B, _>(log.consistency_proof(ch, 2, 1).await, b, "out of order");
    let wrong = vec![b"misplaced".to_vec()];
    let w = ErrorKind::WrongPosition;
    refused::<B, _>(log.append(ch, size + 1, wrong.clone()).await, w, "ahead");
    if size > 0 {
        refused::<B, _>(log.append(ch, size - 1, wrong).await, w, "behind");
    }
    let head = ok(log.head(ch).await, "head").map_or(0, |h| h.size);
    assert_eq!(head, size, "a refused append wrote nothing");
    // An empty batch writes nothing, at the head or elsewhere.
    assert_eq!(
        ok(log.append(ch, size, Vec::new()).await, "empty"),
        size..size
    );
    refused::<B, _>(log.append(ch, size + 1, Vec::new()).await, w, "empty ahead");
    // Reads are clamped to the head.
    let tail = ok(
        log.records(ch, size.saturating_sub(1)..size + 3).await,
        "tail",
    );
    assert_eq!(tail.len() as u64, size.min(1));
    assert!(ok(log.records(ch, size..u64::MAX).await, "past the head").is_empty());
}

/// Checkpoints: stored only with the log's root at their size, listed by size, the latest
/// being the largest size.
pub async fn checkpoints<B: LogBackend>(log: &B, ch: &ChannelId) {
    let tree = build(log, ch, 0xe1, 9).await;
    let root = |n| ok(tree.root_at(n), "tree root");
    ok(log.put_checkpoint(ch, 5, &root(5), b"five").await, "cp 5");
    ok(log.put_checkpoint(ch, 9, &root(9), b"nine").await, "cp 9");
    ok(log.put_checkpoint(ch, 3, &root(3), b"three").await, "cp 3");
    let c = ErrorKind::CheckpointMismatch;
    let wrong = Hash([0x5a; 32]);
    refused::<B, _>(
        log.put_checkpoint(ch, 7, &wrong, b"x").await,
        c,
        "wrong root",
    );
    refused::<B, _>(
        log.put_checkpoint(ch, 7, &root(6), b"x").await,
        c,
        "another size's",
    );
    let beyond = log.put_checkpoint(ch, 10, &root(9), b"x").await;
    refused::<B, _>(beyond, ErrorKind::OutOfRange, "beyond the head");
    let want = vec![
        (3, b"three".to_vec()),
        (5, b"five".to_vec()),
        (9, b"nine".to_vec()),
    ];
    assert_eq!(ok(log.checkpoints(ch).await, "checkpoints"), want);
    let latest = ok(log.latest_checkpoint(ch).await, "latest");
    assert_eq!(latest, Some((9, b"nine".to_vec())));
}

/// The keyed lane index: each key's newest index, a key repeated in one batch included, and a
/// keyed append at the wrong position writing neither records nor keys.
pub async fn keyed_lanes<B: LogBackend>(log: &B, ch: &ChannelId) {
    let r = |i| record(0xe2, i);
    let first = vec![(5, r(0)), (9, r(1)), (5, r(2))];
    assert_eq!(ok(log.append_keyed(ch, 0, first).await, "keyed"), 0..3);
    assert_eq!(ok(log.keyed(ch).await, "keyed"), vec![(5, 2), (9, 1)]);
    let stale = log.append_keyed(ch, 2, vec![(7, r(9))]).await;
    refused::<B, _>(stale, ErrorKind::WrongPosition, "keyed behind");
    assert_eq!(ok(log.keyed(ch).await, "keyed"), vec![(5, 2), (9, 1)]);
    ok(log.append(ch, 3, vec![r(3)]).await, "plain append");
    assert_eq!(
        ok(log.append_keyed(ch, 4, vec![(1, r(4))]).await, "k"),
        4..5
    );
    assert_eq!(
        ok(log.keyed(ch).await, "keyed"),
        vec![(1, 4), (5, 2), (9, 1)]
    );
    let all = ok(log.records(ch, 0..5).await, "records");
    assert_eq!(all, (0..5).map(r).collect::<Vec<_>>());
}

/// Two backends that took the same appends serve the same head, records, roots and proofs
/// for `ch` (of `size` records) at every sample size.
pub async fn same_log<A: LogBackend, B: LogBackend>(a: &A, b: &B, ch: &ChannelId, size: u64) {
    let head = |h: Option<crate::store::Head>| h.map(|h| (h.size, h.root));
    assert_eq!(
        head(ok(a.head(ch).await, "a head")),
        head(ok(b.head(ch).await, "b head"))
    );
    let range = 0..size + 1;
    assert_eq!(
        ok(a.records(ch, range.clone()).await, "a records"),
        ok(b.records(ch, range).await, "b records")
    );
    let sizes = sample_sizes(size);
    for &n in &sizes {
        let root = ok(a.root_at(ch, n).await, "a root");
        assert_eq!(root, ok(b.root_at(ch, n).await, "b root"), "root at {n}");
        for i in [0, n / 3, n.saturating_sub(1)]
            .into_iter()
            .filter(|i| *i < n)
        {
            let pa = ok(a.inclusion_proof(ch, i, n).await, "a inclusion");
            assert_eq!(pa, ok(b.inclusion_proof(ch, i, n).await, "b inclusion"));
        }
        for &m in sizes.iter().filter(|m| **m > 0 && **m <= n) {
            let pa = ok(a.consistency_proof(ch, m, n).await, "a consistency");
            assert_eq!(pa, ok(b.consistency_proof(ch, m, n).await, "b consistency"));
        }
    }
}
