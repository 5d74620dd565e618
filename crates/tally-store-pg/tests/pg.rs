//! The PostgreSQL store against a real PostgreSQL 15 (spec/CLUSTER.md §3–§5).

mod support;

use std::time::Duration;

use support::PgServer;
use tally_store_pg::{shard_of, ChannelId, Lease, PgError, PgStore};

const SHARDS: u16 = 4;

/// A channel id in `shard` (of [`SHARDS`]), distinct per `n`.
fn channel(shard: u8, n: u8) -> ChannelId {
    let mut id = ChannelId([n; 32]);
    id.0[0] = 0;
    id.0[1] = shard;
    assert_eq!(shard_of(&id, SHARDS), u32::from(shard));
    id
}

fn rec(tag: &str, i: u64) -> Vec<u8> {
    format!("{tag}-{i}").into_bytes()
}

async fn store(pg: &PgServer) -> PgStore {
    let store = PgStore::connect(&pg.url(), SHARDS).await.unwrap();
    store.init().await.unwrap();
    store
}

async fn acquire(store: &PgStore, shard: u32, node: &str, ms: u64) -> Lease {
    store.acquire(shard, node, ms).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_read_back_and_a_wrong_size_is_refused() {
    let pg = PgServer::start();
    let store = store(&pg).await;
    store.init().await.unwrap(); // idempotent
    let ch = channel(1, 7);
    let lease = acquire(&store, 1, "a", 60_000).await;
    assert_eq!(lease.epoch, 1);
    assert_eq!(store.head(&ch).await.unwrap(), None);

    let batch: Vec<_> = (0..3).map(|i| rec("a", i)).collect();
    assert_eq!(store.append(&lease, &ch, 0, &batch).await.unwrap(), 0..3);
    let head = store.head(&ch).await.unwrap().unwrap();
    assert_eq!((head.size, head.epoch), (3, 1));
    assert_eq!(store.records(&ch, 0..10).await.unwrap(), batch);
    assert_eq!(store.records(&ch, 1..2).await.unwrap(), vec![rec("a", 1)]);

    let err = store.append(&lease, &ch, 2, &[rec("x", 2)]).await;
    assert!(
        matches!(
            err,
            Err(PgError::SizeMismatch {
                expected: 2,
                actual: 3
            })
        ),
        "{err:?}"
    );
    assert_eq!(store.head(&ch).await.unwrap().unwrap().size, 3);

    // Keyed: each key's newest index, a key repeated within one batch included.
    let keyed = vec![(5, rec("k", 3)), (9, rec("k", 4)), (5, rec("k", 5))];
    assert_eq!(
        store.append_keyed(&lease, &ch, 3, &keyed).await.unwrap(),
        3..6
    );
    assert_eq!(store.keyed(&ch).await.unwrap(), vec![(5, 5), (9, 4)]);

    assert!(matches!(
        store.append(&lease, &ch, 6, &[]).await,
        Err(PgError::EmptyBatch)
    ));
    let other_shard = channel(2, 7);
    assert!(matches!(
        store.append(&lease, &other_shard, 0, &[rec("a", 0)]).await,
        Err(PgError::WrongShard { .. })
    ));
    let wrong = PgStore::connect(&pg.url(), SHARDS + 1).await.unwrap();
    assert!(matches!(
        wrong.init().await,
        Err(PgError::ShardsMismatch { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_epoch_append_is_refused_at_the_database() {
    let pg = PgServer::start();
    let a = store(&pg).await;
    let b = store(&pg).await;
    let ch = channel(3, 1);
    let lease_a = acquire(&a, 3, "node-a", 300).await;
    assert_eq!(
        a.append(&lease_a, &ch, 0, &[rec("a", 0)]).await.unwrap(),
        0..1
    );
    // While A's lease is live, B cannot take the shard.
    assert_eq!(b.acquire(3, "node-b", 300).await.unwrap(), None);

    // A pauses past its lease; B takes over with the next epoch and appends.
    tokio::time::sleep(Duration::from_millis(450)).await;
    let lease_b = acquire(&b, 3, "node-b", 60_000).await;
    assert_eq!(lease_b.epoch, lease_a.epoch + 1);
    let b_batch = vec![rec("b", 1), rec("b", 2)];
    assert_eq!(b.append(&lease_b, &ch, 1, &b_batch).await.unwrap(), 1..3);

    // A wakes up still holding its old Lease value: refused by the database, whether it
    // names the old size or the current one (so it is the fence, not the size, that refuses).
    for expected in [1, 3] {
        let err = a
            .append(&lease_a, &ch, expected, &[rec("a", expected)])
            .await;
        assert!(
            matches!(err, Err(PgError::Fenced { shard: 3, epoch }) if epoch == lease_a.epoch),
            "{err:?}"
        );
    }
    assert!(matches!(
        a.renew(&lease_a).await,
        Err(PgError::Fenced { .. })
    ));
    assert!(!a.release(&lease_a).await.unwrap());

    let head = a.head(&ch).await.unwrap().unwrap();
    assert_eq!((head.size, head.epoch), (3, lease_b.epoch));
    let all = a.records(&ch, 0..10).await.unwrap();
    assert_eq!(all, vec![rec("a", 0), rec("b", 1), rec("b", 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_cannot_append_or_renew_even_untaken() {
    let pg = PgServer::start();
    let a = store(&pg).await;
    let ch = channel(0, 2);
    let lease = acquire(&a, 0, "node-a", 200).await;
    let renewed = a.renew(&lease).await.unwrap();
    assert_eq!(renewed.epoch, lease.epoch);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = a.append(&renewed, &ch, 0, &[rec("a", 0)]).await;
    assert!(matches!(err, Err(PgError::Fenced { .. })), "{err:?}");
    assert!(matches!(
        a.renew(&renewed).await,
        Err(PgError::Fenced { .. })
    ));
    assert_eq!(a.head(&ch).await.unwrap(), None);
    // Acquiring again gives a new epoch, and the old value stays fenced.
    let again = acquire(&a, 0, "node-a", 60_000).await;
    assert_eq!(again.epoch, lease.epoch + 1);
    let err = a.append(&renewed, &ch, 0, &[rec("a", 0)]).await;
    assert!(matches!(err, Err(PgError::Fenced { .. })), "{err:?}");
    assert_eq!(
        a.append(&again, &ch, 0, &[rec("a", 0)]).await.unwrap(),
        0..1
    );
    // Release lets another node take the shard at once, with the next epoch.
    assert!(a.release(&again).await.unwrap());
    let b = acquire(&a, 0, "node-b", 60_000).await;
    assert_eq!(b.epoch, again.epoch + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_appends_at_one_size_have_one_winner() {
    let pg = PgServer::start();
    let first = store(&pg).await;
    let second = store(&pg).await;
    let ch = channel(2, 3);
    let lease = acquire(&first, 2, "node-a", 60_000).await;
    for size in 0..30u64 {
        let (bx, by) = ([rec("x", size)], [rec("y", size)]);
        let (x, y) = tokio::join!(
            first.append(&lease, &ch, size, &bx),
            second.append(&lease, &ch, size, &by),
        );
        let winner = match (&x, &y) {
            (Ok(r), Err(PgError::SizeMismatch { actual, .. })) if *actual == size + 1 => {
                assert_eq!(*r, size..size + 1);
                rec("x", size)
            }
            (Err(PgError::SizeMismatch { actual, .. }), Ok(r)) if *actual == size + 1 => {
                assert_eq!(*r, size..size + 1);
                rec("y", size)
            }
            other => panic!("round {size}: {other:?}"),
        };
        assert_eq!(
            first.records(&ch, size..size + 1).await.unwrap(),
            vec![winner]
        );
    }
    assert_eq!(first.head(&ch).await.unwrap().unwrap().size, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_is_idempotent_concurrent_and_refuses_a_newer_schema() {
    let pg = PgServer::start();
    let nodes = connect3(&pg).await;
    let (a, b, c) = tokio::join!(nodes[0].init(), nodes[1].init(), nodes[2].init());
    for result in [a, b, c] {
        result.unwrap();
    }
    let (raw, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let versions: Vec<i32> = raw
        .query("SELECT version FROM tally_schema ORDER BY version", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Each version applied once, by one of the three.
    assert_eq!(
        versions,
        (1..=tally_store_pg::SCHEMA_VERSION).collect::<Vec<_>>()
    );
    raw.execute("INSERT INTO tally_schema (version) VALUES (99)", &[])
        .await
        .unwrap();
    assert!(matches!(
        nodes[0].init().await,
        Err(PgError::SchemaTooNew { found: 99, .. })
    ));
}

async fn connect3(pg: &PgServer) -> Vec<PgStore> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(PgStore::connect(&pg.url(), SHARDS).await.unwrap());
    }
    nodes
}
