//! Proves that `LogStore` (in a temporary directory) agrees with `MemoryTree` on heads, roots
//! and proofs at every historical size while many channels are appended to, interleaved and
//! concurrently; that record reads, checkpoints and out-of-range errors behave as documented;
//! that everything survives a reopen and appends continue correctly after it; and that fsck
//! and open detect records and hashes tampered with directly in sled, naming the exact first
//! bad index.

use std::collections::BTreeMap;
use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tally_core::ChannelId;
use tally_log::{
    consistency_proof, inclusion_proof, verify_consistency, verify_inclusion, Blake3Hasher, Hash,
    HashReader, Head, LogError, LogStore, MemoryTree, Sha256Hasher, StoreConfig, TreeHasher,
};

fn channel(n: u8) -> ChannelId {
    ChannelId(*blake3::hash(&[b'c', n]).as_bytes())
}

/// Record `i` of channel number `c`: distinct per (c, i), of varied length.
fn record(c: u8, i: u64) -> Vec<u8> {
    let mut r = format!("channel {c} record {i} ").into_bytes();
    r.extend(vec![b'x'; (i % 13) as usize]);
    r
}

fn config() -> StoreConfig {
    StoreConfig {
        max_group_records: 16,
        queue_depth: 256,
        cache_bytes: 8 << 20,
        tile_cache_bytes: 1 << 20,
        sync_data: true,
    }
}

/// Opens the store. sled releases its file lock from a background thread shortly after the
/// previous handle is dropped, so a lock conflict is retried for a few seconds; any other
/// result is returned as it is.
fn open(path: &Path) -> Result<LogStore, LogError> {
    retry_lock(
        || LogStore::open_with(path, Blake3Hasher, config()),
        |e| e.to_string(),
    )
}

fn retry_lock<T, E>(
    mut f: impl FnMut() -> Result<T, E>,
    msg: impl Fn(&E) -> String,
) -> Result<T, E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match f() {
            Err(e)
                if msg(&e).contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn mirror(records: &[Vec<u8>]) -> MemoryTree<Blake3Hasher> {
    let mut t = MemoryTree::new(Blake3Hasher);
    for r in records {
        t.push(r);
    }
    t
}

/// Appends `records` to `c` and waits, checking the indices it reports.
fn append_wait(store: &LogStore, c: &ChannelId, records: Vec<Vec<u8>>, start: u64) {
    let n = records.len() as u64;
    let got = store.append(*c, records).wait().expect("append");
    assert_eq!(got, start..start + n);
}

/// Everything the store says about `c` equals the in-memory tree of `records`: head, every
/// historical root, every inclusion proof and every consistency proof (all pairs when
/// `all_pairs`, otherwise every index and old size against the head plus a diagonal band).
fn assert_matches_memory<H: TreeHasher>(
    store: &LogStore<H>,
    c: &ChannelId,
    records: &[Vec<u8>],
    mem: &MemoryTree<H>,
    all_pairs: bool,
) {
    let h = store.hasher().clone();
    let size = records.len() as u64;
    assert_eq!(mem.size(), size);
    if size == 0 {
        assert_eq!(store.head(c), None);
    } else {
        assert_eq!(
            store.head(c),
            Some(Head {
                size,
                root: mem.root()
            })
        );
    }
    assert_eq!(store.records(c, 0..size).unwrap(), records);
    for s in 0..=size {
        let root = store.root_at(c, s).unwrap();
        assert_eq!(root, mem.root_at(s).unwrap(), "root at {s}");
        for i in 0..s {
            if !(all_pairs || s == size || s - i <= 2) {
                continue;
            }
            let p = store.inclusion_proof(c, i, s).unwrap();
            assert_eq!(
                p,
                inclusion_proof(&h, mem, i, s).unwrap(),
                "inclusion {i} at {s}"
            );
            assert_eq!(
                verify_inclusion(&h, i, s, &h.leaf(&records[i as usize]), &p, &root),
                Ok(())
            );
        }
        for m in 1..=s {
            if !(all_pairs || s == size || s - m <= 2) {
                continue;
            }
            let p = store.consistency_proof(c, m, s).unwrap();
            assert_eq!(
                p,
                consistency_proof(&h, mem, m, s).unwrap(),
                "consistency {m} -> {s}"
            );
            assert_eq!(
                verify_consistency(&h, m, s, &p, &mem.root_at(m).unwrap(), &root),
                Ok(())
            );
        }
    }
}

/// Appends randomly sized batches to channels `0..channels` without waiting between them (so
/// the writer groups several jobs, of several channels, into one commit), then checks every
/// reported range. Returns what each channel holds.
fn interleaved_appends(
    store: &LogStore,
    rng: &mut StdRng,
    channels: u8,
    jobs: usize,
    have: &mut BTreeMap<u8, Vec<Vec<u8>>>,
) {
    let mut pending = Vec::new();
    for _ in 0..jobs {
        let c = rng.gen_range(0..channels);
        let list = have.entry(c).or_default();
        let start = list.len() as u64;
        let batch: Vec<Vec<u8>> = (0..rng.gen_range(1..=9u64))
            .map(|k| record(c, start + k))
            .collect();
        list.extend(batch.iter().cloned());
        let n = batch.len() as u64;
        pending.push((store.append(channel(c), batch), start..start + n));
        if pending.len() >= 32 || rng.gen_bool(0.05) {
            for (ticket, want) in pending.drain(..) {
                assert_eq!(ticket.wait().unwrap(), want);
            }
        }
    }
    for (ticket, want) in pending {
        assert_eq!(ticket.wait().unwrap(), want);
    }
}

#[test]
fn interleaved_channels_match_memory_trees_at_every_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let mut rng = StdRng::seed_from_u64(0x0005_707e_0001);
    let mut have = BTreeMap::new();
    interleaved_appends(&store, &mut rng, 4, 120, &mut have);
    let mut ids: Vec<ChannelId> = have.keys().map(|&c| channel(c)).collect();
    ids.sort();
    assert_eq!(store.channels(), ids);
    for (c, records) in &have {
        assert!(records.len() > 50, "channel {c} got only {}", records.len());
        let all_pairs = *c == 0;
        assert_matches_memory(&store, &channel(*c), records, &mirror(records), all_pairs);
        let report = store.fsck(&channel(*c)).unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.size, records.len() as u64);
    }
    // A channel nobody wrote to.
    let other = channel(200);
    assert_eq!(store.head(&other), None);
    assert_eq!(store.root_at(&other, 0).unwrap(), Blake3Hasher.empty());
    assert!(store.fsck(&other).unwrap().is_ok());
}

/// An append as its caller saw it: the indices it got and the records it sent.
type Appended = (std::ops::Range<u64>, Vec<Vec<u8>>);

#[test]
fn concurrent_appenders_share_one_channel_without_losing_or_reordering() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let shared = channel(9);
    // Each thread appends distinct records to the shared channel and to its own channel.
    let results: Vec<Vec<Appended>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4u8)
            .map(|t| {
                let store = &store;
                s.spawn(move || {
                    let mut got = Vec::new();
                    let own = channel(t);
                    for j in 0..40u64 {
                        let batch: Vec<Vec<u8>> = (0..1 + j % 4)
                            .map(|k| format!("thread {t} job {j} part {k}").into_bytes())
                            .collect();
                        let range = store.append(shared, batch.clone()).wait().unwrap();
                        assert_eq!(range.end - range.start, batch.len() as u64);
                        got.push((range, batch));
                        append_wait(store, &own, vec![record(t, j)], j);
                    }
                    got
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut by_start = BTreeMap::new();
    for (range, batch) in results.into_iter().flatten() {
        assert!(by_start.insert(range.start, (range, batch)).is_none());
    }
    // The ranges tile 0..total exactly, and each holds what its caller sent.
    let mut expected = Vec::new();
    for (start, (range, batch)) in &by_start {
        assert_eq!(*start, expected.len() as u64, "gap or overlap at {start}");
        assert_eq!(store.records(&shared, range.clone()).unwrap(), *batch);
        expected.extend(batch.iter().cloned());
    }
    assert_eq!(expected.len(), 4 * 10 * (1 + 2 + 3 + 4));
    assert_matches_memory(&store, &shared, &expected, &mirror(&expected), false);
    for t in 0..4u8 {
        let own: Vec<Vec<u8>> = (0..40).map(|j| record(t, j)).collect();
        assert_matches_memory(&store, &channel(t), &own, &mirror(&own), false);
    }
}

/// Reads between appends: roots and proofs stay right as the log crosses sizes where new
/// upper-level stored hashes appear (the store keeps those in memory once loaded).
#[test]
fn reads_between_appends_stay_right_as_the_tree_grows() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let h = Blake3Hasher;
    let mut rng = StdRng::seed_from_u64(0x0005_707e_0003);
    let (a, b) = (channel(1), channel(2));
    let mut ra: Vec<Vec<u8>> = Vec::new();
    let mut mem = MemoryTree::new(Blake3Hasher);
    let mut nb = 0u64;
    // Read before anything is written, so a cache (if any) is loaded while empty.
    assert_eq!(store.root_at(&a, 0).unwrap(), h.empty());
    while ra.len() < 1200 {
        let start = ra.len() as u64;
        let n = rng.gen_range(1..=70u64);
        let batch: Vec<Vec<u8>> = (start..start + n).map(|i| record(1, i)).collect();
        for r in &batch {
            mem.push(r);
        }
        ra.extend(batch.iter().cloned());
        // Another channel in the same groups.
        let tb = store.append(b, vec![record(2, nb)]);
        append_wait(&store, &a, batch, start);
        assert_eq!(tb.wait().unwrap(), nb..nb + 1);
        nb += 1;
        let size = ra.len() as u64;
        assert_eq!(store.head(&a).unwrap().root, mem.root());
        for s in [size, size - 1, size / 2, size & !63, size & !127, 1] {
            assert_eq!(
                store.root_at(&a, s).unwrap(),
                mem.root_at(s).unwrap(),
                "{s} of {size}"
            );
        }
        let i = rng.gen_range(0..size);
        assert_eq!(
            store.inclusion_proof(&a, i, size).unwrap(),
            inclusion_proof(&h, &mem, i, size).unwrap()
        );
        let m = rng.gen_range(1..=size);
        assert_eq!(
            store.consistency_proof(&a, m, size).unwrap(),
            consistency_proof(&h, &mem, m, size).unwrap()
        );
    }
    assert_matches_memory(&store, &a, &ra, &mem, false);
    // A fresh process sees the same.
    drop(store);
    let store = open(dir.path()).unwrap();
    assert_matches_memory(&store, &a, &ra, &mem, false);
}

/// A reader racing the writer always finds the head's root and valid proofs under it.
#[test]
fn readers_racing_the_writer_see_consistent_heads() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let h = Blake3Hasher;
    let a = channel(1);
    let total = 3000u64;
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let (store, done) = (&store, &done);
        s.spawn(move || {
            let mut rng = StdRng::seed_from_u64(0x0005_707e_0004);
            let mut next = 0;
            while next < total {
                let n = rng.gen_range(1..=50u64).min(total - next);
                let batch = (next..next + n).map(|i| record(1, i)).collect();
                // Several tickets in flight, so commits group them.
                let t1 = store.append(a, batch);
                let t2 = store.append(a, vec![record(1, next + n)]);
                assert_eq!(t1.wait().unwrap(), next..next + n);
                assert_eq!(t2.wait().unwrap(), next + n..next + n + 1);
                next += n + 1;
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        for reader in 0..2u64 {
            s.spawn(move || {
                let mut rng = StdRng::seed_from_u64(0x0005_707e_0005 + reader);
                let mut checks = 0u64;
                let mut last = 0;
                while !done.load(std::sync::atomic::Ordering::SeqCst) || checks == 0 {
                    let Some(head) = store.head(&a) else { continue };
                    assert!(head.size >= last, "head went back");
                    last = head.size;
                    assert_eq!(store.root_at(&a, head.size).unwrap(), head.root);
                    let i = rng.gen_range(0..head.size);
                    let p = store.inclusion_proof(&a, i, head.size).unwrap();
                    let leaf = h.leaf(&record(1, i));
                    assert_eq!(
                        verify_inclusion(&h, i, head.size, &leaf, &p, &head.root),
                        Ok(())
                    );
                    let m = rng.gen_range(1..=head.size);
                    let old_root = store.root_at(&a, m).unwrap();
                    let c = store.consistency_proof(&a, m, head.size).unwrap();
                    assert_eq!(
                        verify_consistency(&h, m, head.size, &c, &old_root, &head.root),
                        Ok(())
                    );
                    checks += 1;
                }
            });
        }
    });
    let records: Vec<Vec<u8>> = (0..store.head(&a).unwrap().size)
        .map(|i| record(1, i))
        .collect();
    assert!(records.len() as u64 >= total);
    assert_matches_memory(&store, &a, &records, &mirror(&records), false);
}

#[test]
fn an_empty_append_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let (a, b) = (channel(1), channel(2));
    assert_eq!(store.append(a, vec![]).wait().unwrap(), 0..0);
    assert_eq!(
        store.head(&a),
        None,
        "a channel with no records has no head"
    );
    assert!(store.channels().is_empty());
    append_wait(&store, &b, vec![record(2, 0), record(2, 1)], 0);
    let head = store.head(&b).unwrap();
    assert_eq!(store.append(b, vec![]).wait().unwrap(), 2..2);
    assert_eq!(store.head(&b), Some(head));
    assert_eq!(store.channels(), vec![b]);
    drop(store);
    let store = open(dir.path()).unwrap();
    assert_eq!(store.head(&a), None);
    assert_eq!(store.channels(), vec![b]);
    assert_eq!(store.head(&b), Some(head));
}

#[test]
fn the_keyed_index_names_each_keys_newest_record_and_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let (a, b) = (channel(1), channel(2));
    let keyed = |c: u8, start: u64, keys: &[u32]| -> Vec<(u32, Vec<u8>)> {
        keys.iter()
            .enumerate()
            .map(|(k, key)| (*key, record(c, start + k as u64)))
            .collect()
    };
    assert_eq!(
        store
            .append_keyed(a, 0, keyed(1, 0, &[3, 0, 3]))
            .wait()
            .unwrap(),
        0..3
    );
    // Unkeyed records leave the index alone; another channel's keys are its own.
    assert_eq!(store.append(a, vec![record(1, 3)]).wait().unwrap(), 3..4);
    assert_eq!(
        store.append_keyed(b, 0, keyed(2, 0, &[3])).wait().unwrap(),
        0..1
    );
    // Records built for a position the log is not at are refused whole.
    assert!(matches!(
        store.append_keyed(a, 3, keyed(1, 4, &[7])).wait(),
        Err(LogError::WrongPosition {
            expected: 3,
            size: 4
        })
    ));
    assert_eq!(
        store
            .append_keyed(a, 4, keyed(1, 4, &[7, 0]))
            .wait()
            .unwrap(),
        4..6
    );
    let expect_a = vec![(0, 5), (3, 2), (7, 4)];
    assert_eq!(store.keyed(&a).unwrap(), expect_a);
    assert_eq!(store.keyed(&b).unwrap(), vec![(3, 0)]);
    assert!(store.keyed(&channel(9)).unwrap().is_empty());
    drop(store);
    let store = open(dir.path()).unwrap();
    assert_eq!(store.keyed(&a).unwrap(), expect_a);
    let records: Vec<Vec<u8>> = (0..6).map(|i| record(1, i)).collect();
    assert_matches_memory(&store, &a, &records, &mirror(&records), false);
}

#[test]
fn record_reads_and_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let (a, b) = (channel(1), channel(2));
    let ra: Vec<Vec<u8>> = (0..30).map(|i| record(1, i)).collect();
    let rb: Vec<Vec<u8>> = (0..5).map(|i| record(2, i)).collect();
    append_wait(&store, &a, ra[..17].to_vec(), 0);
    append_wait(&store, &b, rb.clone(), 0);
    append_wait(&store, &a, ra[17..].to_vec(), 17);
    for i in 0..30 {
        assert_eq!(store.record(&a, i).unwrap(), ra[i as usize]);
    }
    for lo in 0..=32u64 {
        for hi in lo..=33u64 {
            let want: Vec<Vec<u8>> = ra
                .iter()
                .take(hi.min(30) as usize)
                .skip(lo as usize)
                .cloned()
                .collect();
            assert_eq!(store.records(&a, lo..hi).unwrap(), want, "{lo}..{hi}");
        }
    }
    // A reversed range is empty, and channels never see each other's records.
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = 10..3;
    assert!(store.records(&a, reversed).unwrap().is_empty());
    assert_eq!(store.records(&b, 0..u64::MAX).unwrap(), rb);
    assert!(store.records(&channel(3), 0..10).unwrap().is_empty());
    assert!(matches!(
        store.record(&a, 30),
        Err(LogError::OutOfRange {
            index: 30,
            size: 30
        })
    ));
    assert!(matches!(
        store.record(&b, 5),
        Err(LogError::OutOfRange { index: 5, size: 5 })
    ));
    assert!(matches!(
        store.record(&channel(3), 0),
        Err(LogError::OutOfRange { index: 0, size: 0 })
    ));
}

#[test]
fn out_of_range_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let a = channel(1);
    append_wait(&store, &a, (0..10).map(|i| record(1, i)).collect(), 0);
    assert!(matches!(
        store.root_at(&a, 11),
        Err(LogError::OutOfRange {
            index: 11,
            size: 10
        })
    ));
    assert!(store.root_at(&a, 10).is_ok());
    assert!(matches!(
        store.inclusion_proof(&a, 3, 11),
        Err(LogError::OutOfRange {
            index: 11,
            size: 10
        })
    ));
    assert!(matches!(
        store.inclusion_proof(&a, 10, 10),
        Err(LogError::OutOfRange {
            index: 10,
            size: 10
        })
    ));
    assert!(matches!(
        store.inclusion_proof(&a, 4, 4),
        Err(LogError::OutOfRange { index: 4, size: 4 })
    ));
    assert!(matches!(
        store.inclusion_proof(&a, 0, 0),
        Err(LogError::OutOfRange { index: 0, size: 0 })
    ));
    for (old, new) in [(0, 5), (0, 0), (6, 5), (3, 11), (11, 11)] {
        assert!(
            matches!(
                store.consistency_proof(&a, old, new),
                Err(LogError::BadSizes { old: o, new: n, size: 10 }) if o == old && n == new
            ),
            "{old} -> {new}"
        );
    }
    let unknown = channel(2);
    assert!(matches!(
        store.root_at(&unknown, 1),
        Err(LogError::OutOfRange { index: 1, size: 0 })
    ));
    assert!(matches!(
        store.consistency_proof(&unknown, 1, 1),
        Err(LogError::BadSizes { size: 0, .. })
    ));
}

#[test]
fn checkpoints_are_kept_per_channel_in_size_order() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (channel(1), channel(2));
    {
        let store = open(dir.path()).unwrap();
        assert_eq!(store.latest_checkpoint(&a).unwrap(), None);
        assert!(store.checkpoints(&a).unwrap().is_empty());
        // A checkpoint can only name a size the log has durably reached.
        assert!(matches!(
            store.put_checkpoint(&a, 1, &Hash::default(), b"too early"),
            Err(LogError::OutOfRange { index: 1, size: 0 })
        ));
        append_wait(&store, &a, (0..300).map(|i| record(1, i)).collect(), 0);
        append_wait(&store, &b, (0..7).map(|i| record(2, i)).collect(), 0);
        let root = |c: &ChannelId, n: u64| store.root_at(c, n).unwrap();
        store.put_checkpoint(&a, 5, &root(&a, 5), b"five").unwrap();
        store.put_checkpoint(&a, 2, &root(&a, 2), b"two").unwrap();
        store
            .put_checkpoint(&a, 300, &root(&a, 300), b"three hundred")
            .unwrap();
        store
            .put_checkpoint(&b, 7, &root(&b, 7), b"b seven")
            .unwrap();
        assert!(store
            .put_checkpoint(&b, 8, &root(&b, 7), b"b eight")
            .is_err());
        // A checkpoint whose root is not the log's is refused.
        assert!(matches!(
            store.put_checkpoint(&a, 6, &root(&a, 5), b"wrong root"),
            Err(LogError::CheckpointMismatch { size: 6, .. })
        ));
        assert_eq!(
            store.latest_checkpoint(&a).unwrap(),
            Some((300, b"three hundred".to_vec()))
        );
        // Overwriting one size replaces it.
        store
            .put_checkpoint(&a, 5, &root(&a, 5), b"five again")
            .unwrap();
        assert_eq!(
            store.checkpoints(&a).unwrap(),
            vec![
                (2, b"two".to_vec()),
                (5, b"five again".to_vec()),
                (300, b"three hundred".to_vec())
            ]
        );
        assert_eq!(
            store.checkpoints(&b).unwrap(),
            vec![(7, b"b seven".to_vec())]
        );
        assert_eq!(store.checkpoints(&channel(3)).unwrap(), vec![]);
        // Checkpoints are not records: the heads are unchanged.
        assert_eq!(store.head(&a).map(|h| h.size), Some(300));
    }
    let store = open(dir.path()).unwrap();
    assert_eq!(store.checkpoints(&a).unwrap().len(), 3);
    assert_eq!(
        store.latest_checkpoint(&a).unwrap(),
        Some((300, b"three hundred".to_vec()))
    );
    assert_eq!(
        store.checkpoints(&b).unwrap(),
        vec![(7, b"b seven".to_vec())]
    );
}

#[test]
fn open_checks_the_latest_checkpoint_against_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = filled_store(dir.path(), SIZE);
    {
        let store = open(dir.path()).unwrap();
        let root = store.root_at(&a, 100).unwrap();
        store.put_checkpoint(&a, 100, &root, b"cp").unwrap();
    }
    let cp = key(b'C', &a, 100);
    // The stored checkpoint's root, tampered: the store no longer agrees with what the
    // parties signed, and open says so.
    let old = with_sled(dir.path(), |t| flip_byte(t, &cp, 3));
    assert!(matches!(open(dir.path()), Err(LogError::Corrupt { channel, .. }) if channel == a));
    with_sled(dir.path(), |t| t.insert(&cp, old).unwrap());
    // A tile under the checkpoint's root, tampered: caught through the checkpoint even
    // though the head's frontier does not use that tile.
    let tile = key(b'T', &a, 1);
    // Level 5 index 2 (leaves 64..96) is one of the hashes the root at 100 is folded from.
    let old = with_sled(dir.path(), |t| flip_byte(t, &tile, 32 * 124));
    assert!(matches!(open(dir.path()), Err(LogError::Corrupt { .. })));
    with_sled(dir.path(), |t| t.insert(&tile, old).unwrap());
    assert!(open(dir.path()).unwrap().fsck(&a).unwrap().is_ok());
}

#[test]
fn reopen_keeps_every_root_and_proof_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(0x0005_707e_0002);
    let mut have = BTreeMap::new();
    {
        let store = open(dir.path()).unwrap();
        interleaved_appends(&store, &mut rng, 3, 60, &mut have);
    }
    for round in 0..3 {
        let store = open(dir.path()).unwrap();
        let mut ids: Vec<ChannelId> = have.keys().map(|&c| channel(c)).collect();
        ids.sort();
        assert_eq!(store.channels(), ids, "round {round}");
        for (c, records) in &have {
            assert_matches_memory(&store, &channel(*c), records, &mirror(records), round == 0);
            assert!(store.fsck(&channel(*c)).unwrap().is_ok());
        }
        // Appending after the reopen extends the same trees (and a new channel starts at 0).
        let before: BTreeMap<u8, (u64, Hash)> = have
            .iter()
            .map(|(c, r)| (*c, (r.len() as u64, mirror(r).root())))
            .collect();
        interleaved_appends(&store, &mut rng, 4, 30, &mut have);
        for (c, records) in &have {
            let mem = mirror(records);
            assert_matches_memory(&store, &channel(*c), records, &mem, false);
            if let Some(&(old, old_root)) = before.get(c) {
                let new = records.len() as u64;
                if old > 0 {
                    let p = store.consistency_proof(&channel(*c), old, new).unwrap();
                    assert_eq!(
                        verify_consistency(&Blake3Hasher, old, new, &p, &old_root, &mem.root()),
                        Ok(())
                    );
                }
            }
        }
    }
}

#[test]
fn a_sha256_store_is_the_rfc6962_tree() {
    let dir = tempfile::tempdir().unwrap();
    let c = channel(1);
    let records: Vec<Vec<u8>> = (0..40).map(|i| record(1, i)).collect();
    let store = LogStore::open_with(dir.path(), Sha256Hasher, config()).unwrap();
    for (i, r) in records.iter().enumerate() {
        let got = store.append(c, vec![r.clone()]).wait().unwrap();
        assert_eq!(got, i as u64..i as u64 + 1);
    }
    let mut mem = MemoryTree::new(Sha256Hasher);
    for r in &records {
        mem.push(r);
    }
    assert_matches_memory(&store, &c, &records, &mem, true);
    assert!(store.fsck(&c).unwrap().is_ok());
}

// ---------------------------------------------------------------------------------------
// Tampering with the sled database directly, with no LogStore open. The layout is the one
// documented in store.rs: tree `logs`; `E`·channel·index:u64be = record; `T`·channel·block:u64be
// = the 126 stored hashes of levels 0–5 inside the complete 64-leaf block (level 0's 64 first,
// then level 1's 32, …, level 5's 2); `U`·channel·level:u8·index:u64be = a stored hash of level
// 6 or more; `M`·channel = size:u64be · root. The incomplete last block's hashes are not
// stored: they are recomputed from its records on open.
// ---------------------------------------------------------------------------------------

fn key(tag: u8, c: &ChannelId, n: u64) -> Vec<u8> {
    let mut k = vec![tag];
    k.extend_from_slice(&c.0);
    k.extend_from_slice(&n.to_be_bytes());
    k
}

fn entry_key(c: &ChannelId, index: u64) -> Vec<u8> {
    key(b'E', c, index)
}

fn head_key(c: &ChannelId) -> Vec<u8> {
    let mut k = vec![b'M'];
    k.extend_from_slice(&c.0);
    k
}

/// Where stored hash `(level, k)` lives on disk for a log of `size`: a key and byte offset,
/// or `None` when it belongs to the incomplete last block (memory only).
fn hash_location(c: &ChannelId, size: u64, level: u8, k: u64) -> Option<(Vec<u8>, usize)> {
    if level >= 6 {
        let mut key = vec![b'U'];
        key.extend_from_slice(&c.0);
        key.push(level);
        key.extend_from_slice(&k.to_be_bytes());
        return Some((key, 0));
    }
    let block = k >> (6 - level);
    if (block + 1) * 64 > size {
        return None;
    }
    let offset = 128 - (128 >> level);
    let within = k - (block << (6 - level));
    Some((key(b'T', c, block), 32 * (offset + within as usize)))
}

/// The record whose append completed stored hash `(level, k)`.
fn completing_record(level: u8, k: u64) -> u64 {
    ((k + 1) << level) - 1
}

/// Runs `f` on the store's sled tree with no `LogStore` open, then flushes.
fn with_sled<T>(path: &Path, f: impl FnOnce(&sled::Tree) -> T) -> T {
    let db = retry_lock(|| sled::open(path), |e| e.to_string()).unwrap();
    let tree = db.open_tree("logs").unwrap();
    let out = f(&tree);
    db.flush().unwrap();
    out
}

/// Flips the low bit of byte `at` of the value under `key`; returns the old value.
fn flip_byte(tree: &sled::Tree, key: &[u8], at: usize) -> Vec<u8> {
    let old = tree.get(key).unwrap().expect("key present").to_vec();
    let mut new = old.clone();
    new[at] ^= 1;
    tree.insert(key, new).unwrap();
    old
}

/// A store with channel 1 of `size` records and an untouched channel 2 of 20 records.
fn filled_store(path: &Path, size: u64) -> (ChannelId, ChannelId) {
    let (a, b) = (channel(1), channel(2));
    let store = open(path).unwrap();
    for chunk in (0..size).collect::<Vec<_>>().chunks(7) {
        let start = chunk[0];
        append_wait(
            &store,
            &a,
            chunk.iter().map(|&i| record(1, i)).collect(),
            start,
        );
    }
    append_wait(&store, &b, (0..20).map(|i| record(2, i)).collect(), 0);
    for c in [a, b] {
        let report = store.fsck(&c).unwrap();
        assert!(report.is_ok(), "fresh store: {report:?}");
    }
    (a, b)
}

/// 150 = 2 complete blocks (tiles 0 and 1) and 22 records in the incomplete block 2.
const SIZE: u64 = 150;

#[test]
fn the_documented_layout_is_the_one_on_disk() {
    // Guards the helpers below: if the layout changed, the tamper tests would prove nothing.
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = filled_store(dir.path(), SIZE);
    let mem = mirror(&(0..SIZE).map(|i| record(1, i)).collect::<Vec<_>>());
    with_sled(dir.path(), |t| {
        assert_eq!(
            t.get([b'V']).unwrap().unwrap().as_ref(),
            b"tally-log/1 blake3"
        );
        for i in 0..SIZE {
            let entry = t.get(entry_key(&a, i)).unwrap().expect("entry");
            assert_eq!(entry.as_ref(), &record(1, i)[..], "record {i}");
        }
        let (mut stored, mut in_memory) = (0, 0);
        for level in 0..8u8 {
            for k in 0..SIZE >> level {
                match hash_location(&a, SIZE, level, k) {
                    Some((key, at)) => {
                        let v = t.get(&key).unwrap().expect("stored hash");
                        assert_eq!(
                            v[at..at + 32],
                            mem.stored_hash(level, k).unwrap().0,
                            "hash ({level}, {k})"
                        );
                        stored += 1;
                    }
                    None => in_memory += 1,
                }
            }
        }
        assert!(stored > 200 && in_memory > 20, "{stored} {in_memory}");
        for block in 0..2 {
            assert_eq!(
                t.get(key(b'T', &a, block)).unwrap().unwrap().len(),
                126 * 32
            );
        }
        assert!(
            t.get(key(b'T', &a, 2)).unwrap().is_none(),
            "no tile for the open block"
        );
        let head = t.get(head_key(&a)).unwrap().unwrap();
        assert_eq!(head[..8], SIZE.to_be_bytes());
        assert_eq!(head[8..], mem.root().0);
        assert!(t.get(entry_key(&a, SIZE)).unwrap().is_none());
    });
}

#[test]
fn fsck_names_the_first_tampered_record() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = filled_store(dir.path(), SIZE);
    // Records in complete blocks: open does not reread them; fsck finds them.
    for bad in [0, 1, 17, 63, 64, 100, 127] {
        let key = entry_key(&a, bad);
        let old = with_sled(dir.path(), |t| flip_byte(t, &key, 0));
        {
            let store = open(dir.path()).unwrap();
            let report = store.fsck(&a).unwrap();
            assert_eq!(report.first_bad_index, Some(bad), "{report:?}");
            assert!(report.problem.is_some());
            assert!(!report.is_ok());
            assert_eq!(report.size, SIZE);
            assert!(store.fsck(&b).unwrap().is_ok(), "other channel unaffected");
        }
        // A second, later corruption (still in a complete block) does not hide the first.
        if bad + 5 < 128 {
            let key2 = entry_key(&a, bad + 5);
            let old2 = with_sled(dir.path(), |t| flip_byte(t, &key2, 0));
            let store = open(dir.path()).unwrap();
            assert_eq!(store.fsck(&a).unwrap().first_bad_index, Some(bad));
            drop(store);
            with_sled(dir.path(), |t| t.insert(&key2, old2).unwrap());
        }
        with_sled(dir.path(), |t| t.insert(&key, old).unwrap());
        let store = open(dir.path()).unwrap();
        assert!(store.fsck(&a).unwrap().is_ok(), "restored {bad}");
    }
    // Records of the incomplete block are rehashed on open, so open itself refuses them.
    for bad in [128, 140, SIZE - 1] {
        let key = entry_key(&a, bad);
        let old = with_sled(dir.path(), |t| flip_byte(t, &key, 0));
        assert!(
            matches!(open(dir.path()), Err(LogError::Corrupt { channel, .. }) if channel == a),
            "record {bad}"
        );
        with_sled(dir.path(), |t| t.insert(&key, old).unwrap());
    }
    assert!(open(dir.path()).unwrap().fsck(&a).unwrap().is_ok());
}

#[test]
fn missing_short_and_extra_entries_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = filled_store(dir.path(), SIZE);
    // A hole in the middle.
    let old = with_sled(dir.path(), |t| {
        t.remove(entry_key(&a, 20)).unwrap().unwrap()
    });
    {
        let store = open(dir.path()).unwrap();
        let report = store.fsck(&a).unwrap();
        assert_eq!(report.first_bad_index, Some(20), "{report:?}");
        assert!(
            matches!(store.record(&a, 20), Err(LogError::Corrupt { channel, .. }) if channel == a)
        );
        assert!(matches!(
            store.records(&a, 10..30),
            Err(LogError::Corrupt { .. })
        ));
        assert_eq!(store.records(&a, 21..30).unwrap().len(), 9);
    }
    with_sled(dir.path(), |t| t.insert(entry_key(&a, 20), old).unwrap());
    // A tile cut short: fsck names the block's first record, and proofs through it fail
    // with a typed error instead of a wrong answer.
    let tile = key(b'T', &a, 1);
    let old = with_sled(dir.path(), |t| {
        let old = t.get(&tile).unwrap().unwrap().to_vec();
        t.insert(&tile, &old[..100]).unwrap();
        old
    });
    {
        let store = open(dir.path()).unwrap();
        assert_eq!(store.fsck(&a).unwrap().first_bad_index, Some(64));
        assert!(matches!(
            store.inclusion_proof(&a, 70, SIZE),
            Err(LogError::Corrupt { .. })
        ));
    }
    with_sled(dir.path(), |t| t.insert(&tile, old).unwrap());
    // The last entry missing: open refuses the store.
    let old = with_sled(dir.path(), |t| {
        t.remove(entry_key(&a, SIZE - 1)).unwrap().unwrap()
    });
    assert!(matches!(open(dir.path()), Err(LogError::Corrupt { channel, .. }) if channel == a));
    with_sled(dir.path(), |t| {
        t.insert(entry_key(&a, SIZE - 1), old).unwrap()
    });
    // An entry past the head.
    with_sled(dir.path(), |t| {
        t.insert(entry_key(&a, SIZE), vec![7u8; 80]).unwrap()
    });
    {
        let store = open(dir.path()).unwrap();
        let report = store.fsck(&a).unwrap();
        // A stray record beyond the head is what a failed commit can leave: reported, but
        // not damage, since nothing can read it and the next append overwrites it.
        assert!(report.is_ok(), "{report:?}");
        assert!(
            report
                .note
                .as_deref()
                .unwrap_or("")
                .contains("beyond the head"),
            "{report:?}"
        );
        // The head is the durable truth: the stray entry is not readable.
        assert_eq!(store.head(&a).unwrap().size, SIZE);
        assert!(store.record(&a, SIZE).is_err());
    }
    with_sled(dir.path(), |t| t.remove(entry_key(&a, SIZE)).unwrap());
    assert!(open(dir.path()).unwrap().fsck(&a).unwrap().is_ok());
}

/// The stored hashes `(level, index)` whose roots make up the frontier of a tree of `size`.
fn frontier_positions(size: u64) -> Vec<(u8, u64)> {
    let mut out = Vec::new();
    let mut at = 0;
    for level in (0..64u8).rev() {
        if size & (1 << level) != 0 {
            out.push((level, at >> level));
            at += 1 << level;
        }
    }
    out
}

/// Flips one bit of every stored hash of channel 1 that lives on disk, in turn: open must
/// refuse the store when the hash is part of the head's frontier, and otherwise fsck must name
/// the record that completed it.
fn tamper_every_stored_hash(size: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = filled_store(dir.path(), size);
    let frontier = frontier_positions(size);
    let (mut open_failures, mut fsck_failures, mut on_disk) = (0, 0, 0);
    let mut on_disk_frontier = 0;
    for level in 0..64u8 {
        for k in 0..size >> level {
            let Some((key, at)) = hash_location(&a, size, level, k) else {
                continue;
            };
            on_disk += 1;
            if frontier.contains(&(level, k)) {
                on_disk_frontier += 1;
            }
            let old = with_sled(dir.path(), |t| flip_byte(t, &key, at + 31));
            let ctx = format!("size {size}: hash at level {level} index {k}");
            match open(dir.path()) {
                Err(LogError::Corrupt { channel, .. }) => {
                    assert_eq!(channel, a, "{ctx}");
                    // The head root is folded from exactly the frontier hashes.
                    assert!(frontier.contains(&(level, k)), "{ctx}: open failed");
                    open_failures += 1;
                }
                Err(e) => panic!("{ctx}: unexpected error {e}"),
                Ok(store) => {
                    assert!(!frontier.contains(&(level, k)), "{ctx}: open succeeded");
                    let report = store.fsck(&a).unwrap();
                    assert_eq!(
                        report.first_bad_index,
                        Some(completing_record(level, k)),
                        "{ctx}: {report:?}"
                    );
                    assert!(store.fsck(&b).unwrap().is_ok());
                    fsck_failures += 1;
                }
            }
            with_sled(dir.path(), |t| t.insert(&key, old).unwrap());
        }
    }
    assert!(on_disk > 100, "only {on_disk} hashes on disk");
    assert_eq!(open_failures, on_disk_frontier);
    assert_eq!(open_failures + fsck_failures, on_disk);
    assert!(open(dir.path()).unwrap().fsck(&a).unwrap().is_ok());
}

#[test]
fn every_tampered_stored_hash_fails_open_or_fsck() {
    // 150 = 128 + 16 + 4 + 2: the level-7 frontier hash is on disk (upper levels), the rest
    // of the frontier is in the incomplete block.
    assert_eq!(
        frontier_positions(150),
        vec![(7, 0), (4, 8), (2, 36), (1, 74)]
    );
    tamper_every_stored_hash(150);
    // 256 = one level-8 hash, four complete tiles and no incomplete block.
    tamper_every_stored_hash(256);
}

#[test]
fn a_truncated_record_of_the_open_block_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = filled_store(dir.path(), SIZE);
    let key = entry_key(&a, SIZE - 1);
    with_sled(dir.path(), |t| {
        let old = t.get(&key).unwrap().unwrap();
        t.insert(&key, &old[..old.len() - 1]).unwrap()
    });
    assert!(matches!(open(dir.path()), Err(LogError::Corrupt { channel, .. }) if channel == a));
}

#[test]
fn a_store_is_never_reopened_with_another_hasher() {
    let dir = tempfile::tempdir().unwrap();
    filled_store(dir.path(), 10);
    assert!(matches!(
        retry_lock(
            || LogStore::open_with(dir.path(), Sha256Hasher, config()),
            |e| e.to_string()
        ),
        Err(LogError::Format { .. })
    ));
    assert!(open(dir.path()).is_ok());
}

#[test]
fn a_tampered_head_fails_open() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = filled_store(dir.path(), SIZE);
    let key = head_key(&a);
    let good = with_sled(dir.path(), |t| t.get(&key).unwrap().unwrap().to_vec());
    assert_eq!(good.len(), 40);
    let mut bad_root = good.clone();
    bad_root[8 + 31] ^= 0x80;
    let mut bigger = good.clone();
    bigger[..8].copy_from_slice(&(SIZE + 1).to_be_bytes());
    let mut smaller = good.clone();
    smaller[..8].copy_from_slice(&(SIZE - 1).to_be_bytes());
    for (what, value) in [
        ("root", bad_root),
        ("size + 1", bigger),
        ("size - 1", smaller),
        ("short", good[..39].to_vec()),
    ] {
        with_sled(dir.path(), |t| t.insert(&key, value).unwrap());
        assert!(
            matches!(open(dir.path()), Err(LogError::Corrupt { .. })),
            "head {what}"
        );
    }
    with_sled(dir.path(), |t| t.insert(&key, good).unwrap());
    assert!(open(dir.path()).unwrap().fsck(&a).unwrap().is_ok());
}

/// The store reports what is queued and not yet durable apart from its durable head (issue
/// 11): a resolved ticket is no longer pending, and the head covers it.
#[test]
fn pending_counts_queued_records_until_they_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).unwrap();
    let c = channel(1);
    assert_eq!(
        store.pending(),
        tally_log::Pending {
            records: 0,
            oldest: None
        }
    );
    let tickets: Vec<_> = (0..200u64)
        .map(|i| store.append(c, vec![record(1, i)]))
        .collect();
    let p = store.pending();
    // 200 synced records take at least 13 group commits of 16; queueing them is far quicker.
    assert!(p.records > 0 && p.records <= 200, "{p:?}");
    assert!(p.oldest.is_some());
    for t in tickets {
        let r = t.wait().unwrap();
        assert!(store.head(&c).unwrap().size >= r.end);
    }
    assert_eq!(
        store.pending(),
        tally_log::Pending {
            records: 0,
            oldest: None
        }
    );
}
