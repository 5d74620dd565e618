//! Schema version 2 on a real PostgreSQL 15: the Merkle hashes and checkpoints
//! (spec/CLUSTER.md §2), the reads built on them (§5), the fencing of checkpoints (§4), and
//! tally-log's one conformance suite run on this store and compared with the sled store.

mod support;

use std::time::Duration;

use support::PgServer;
use tally_log::conformance::{self, channel, record, SIZES};
use tally_log::{
    verify_consistency, verify_inclusion, Blake3Hasher, LogBackend, LogError, LogStore, MemoryTree,
    TreeHasher,
};
use tally_store_pg::{ChannelId, Lease, LeasedLog, PgError, PgStore};

const SHARDS: u16 = 4;

async fn store(pg: &PgServer) -> PgStore {
    let store = PgStore::connect(&pg.url(), SHARDS).await.unwrap();
    store.init().await.unwrap();
    store
}

/// The lease of shard 0, where the conformance suite's channels are (CLUSTER.md §3).
async fn lease0(store: &PgStore, node: &str, ms: u64) -> Lease {
    store.acquire(0, node, ms).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_store_passes_the_conformance_suite() {
    let pg = PgServer::start();
    let store = store(&pg).await;
    let log = LeasedLog::new(&store, lease0(&store, "node-a", 600_000).await);
    conformance::run_all(&log).await;
}

/// The same appends, in the same batches, to the sled store and to PostgreSQL: the same
/// heads, records, roots and proofs at every sample size (each also equal to `MemoryTree`,
/// checked by `build`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_serve_the_same_roots_and_proofs() {
    let pg = PgServer::start();
    let store = store(&pg).await;
    let pg_log = LeasedLog::new(&store, lease0(&store, "node-a", 600_000).await);
    let dir = tempfile::tempdir().unwrap();
    let sled_log = LogStore::open(dir.path()).unwrap();
    for (n, size) in (1u8..).zip(SIZES) {
        let ch = channel(n);
        let a = conformance::build(&sled_log, &ch, n, size).await;
        let b = conformance::build(&pg_log, &ch, n, size).await;
        assert_eq!(a.root(), b.root());
        conformance::same_log(&sled_log, &pg_log, &ch, size).await;
    }
}

/// A node whose lease expired and was taken still holds its `Lease` value: its checkpoint and
/// its append are refused by the database, even with the right root and the right size,
/// while the new owner's are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_epoch_checkpoint_and_append_are_refused_at_the_database() {
    let pg = PgServer::start();
    let (a, b) = (store(&pg).await, store(&pg).await);
    let ch = channel(0x31);
    let stale = LeasedLog::new(&a, lease0(&a, "node-a", 300).await);
    let tree = conformance::build(&stale, &ch, 0x31, 9).await;
    stale
        .put_checkpoint(&ch, 4, &tree.root_at(4).unwrap(), b"a at 4")
        .await
        .unwrap();

    tokio::time::sleep(Duration::from_millis(450)).await;
    let owner = LeasedLog::new(&b, lease0(&b, "node-b", 600_000).await);
    assert_eq!(owner.lease().epoch, stale.lease().epoch + 1);

    let root9 = tree.root_at(9).unwrap();
    let err = stale.put_checkpoint(&ch, 9, &root9, b"a at 9").await;
    assert!(
        matches!(err, Err(PgError::Fenced { shard: 0, epoch }) if epoch == stale.lease().epoch),
        "{err:?}"
    );
    let err = stale.append(&ch, 9, vec![record(0x31, 9)]).await;
    assert!(matches!(err, Err(PgError::Fenced { .. })), "{err:?}");
    assert_eq!(
        owner.checkpoints(&ch).await.unwrap(),
        vec![(4, b"a at 4".to_vec())]
    );

    owner
        .put_checkpoint(&ch, 9, &root9, b"b at 9")
        .await
        .unwrap();
    assert_eq!(
        owner.latest_checkpoint(&ch).await.unwrap(),
        Some((9, b"b at 9".to_vec()))
    );
    conformance::check_head(&owner, &ch, &tree).await;
}

/// A node that takes a shard over continues each log from the hashes in the database (it has
/// no tree state of its own): its appends give the roots of one tree with the old owner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owner_continues_the_tree_from_the_database() {
    let pg = PgServer::start();
    let (a, b) = (store(&pg).await, store(&pg).await);
    let ch = channel(0x32);
    let first = LeasedLog::new(&a, lease0(&a, "node-a", 600_000).await);
    let mut tree = conformance::build(&first, &ch, 0x32, 13).await;
    assert!(a.release(first.lease()).await.unwrap());

    let second = LeasedLog::new(&b, lease0(&b, "node-b", 600_000).await);
    for len in [1u64, 2, 5, 49] {
        let start = tree.size();
        let batch: Vec<_> = (start..start + len).map(|i| record(0x32, i)).collect();
        for r in &batch {
            tree.push(r);
        }
        assert_eq!(
            second.append(&ch, start, batch).await.unwrap(),
            start..start + len
        );
        conformance::check_head(&second, &ch, &tree).await;
    }
    conformance::check_tree(&second, &ch, &tree).await;
}

/// The rows `(level, idx, hash)` of `channel` in `tally_nodes`, sorted.
async fn node_rows(raw: &tokio_postgres::Client, ch: &ChannelId) -> Vec<(i16, i64, Vec<u8>)> {
    raw.query(
        "SELECT level, idx, hash FROM tally_nodes WHERE channel = $1 ORDER BY level, idx",
        &[&ch.0.as_slice()],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

/// A database written at version 1 (records only) is migrated by `init`: the hashes of its
/// logs are computed, the same rows the fenced commit writes for the same records, and the
/// log then serves verifying proofs and keeps growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_gets_the_hashes_of_its_logs() {
    let pg = PgServer::start();
    let old = PgStore::connect(&pg.url(), SHARDS).await.unwrap();
    old.init_at_version(1).await.unwrap();
    let (raw, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let (migrated, direct) = (channel(0x41), channel(0x42));
    let bodies: Vec<Vec<u8>> = (0..300).map(|i| record(0x41, i)).collect();
    raw.execute(
        "INSERT INTO tally_heads (channel, shard, size, epoch) VALUES ($1, 0, 300, 1)",
        &[&migrated.0.as_slice()],
    )
    .await
    .unwrap();
    raw.execute(
        "INSERT INTO tally_records (channel, idx, epoch, body)
         SELECT $1, t.ord - 1, 1, t.body FROM unnest($2::bytea[]) WITH ORDINALITY AS t(body, ord)",
        &[&migrated.0.as_slice(), &bodies],
    )
    .await
    .unwrap();

    let store = store(&pg).await; // migrates to version 2
    let log = LeasedLog::new(&store, lease0(&store, "node-a", 600_000).await);
    log.append(&direct, 0, bodies.clone()).await.unwrap();
    let rows = node_rows(&raw, &migrated).await;
    assert_eq!(rows.len(), 300 + 150 + 75 + 37 + 18 + 9 + 4 + 2 + 1);
    assert_eq!(rows, node_rows(&raw, &direct).await);

    let mut tree = MemoryTree::new(Blake3Hasher);
    bodies.iter().for_each(|b| {
        tree.push(b);
    });
    let root = log.root_at(&migrated, 300).await.unwrap();
    assert_eq!(root, tree.root());
    let proof = log.inclusion_proof(&migrated, 123, 300).await.unwrap();
    let leaf = Blake3Hasher.leaf(&bodies[123]);
    verify_inclusion(&Blake3Hasher, 123, 300, &leaf, &proof, &root).unwrap();
    let next = record(0x41, 300);
    log.append(&migrated, 300, vec![next.clone()])
        .await
        .unwrap();
    tree.push(&next);
    let new_root = log.root_at(&migrated, 301).await.unwrap();
    assert_eq!(new_root, tree.root());
    let proof = log.consistency_proof(&migrated, 300, 301).await.unwrap();
    verify_consistency(&Blake3Hasher, 300, 301, &proof, &root, &new_root).unwrap();
}

/// A missing stored hash is reported as corruption, never answered with some other hash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_hash_is_corruption() {
    let pg = PgServer::start();
    let store = store(&pg).await;
    let log = LeasedLog::new(&store, lease0(&store, "node-a", 600_000).await);
    let ch = channel(0x51);
    conformance::build(&log, &ch, 0x51, 8).await;
    let (raw, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    raw.execute(
        "DELETE FROM tally_nodes WHERE channel = $1 AND level = 3",
        &[&ch.0.as_slice()],
    )
    .await
    .unwrap();
    let err = log.root_at(&ch, 8).await;
    assert!(
        matches!(err, Err(PgError::Log(LogError::Corrupt { .. }))),
        "{err:?}"
    );
    // Sizes that do not need the deleted hash still answer.
    assert!(log.root_at(&ch, 7).await.is_ok());
    let err = log.append(&ch, 8, vec![record(0x51, 8)]).await;
    assert!(
        matches!(err, Err(PgError::Log(LogError::Corrupt { .. }))),
        "{err:?}"
    );
}
