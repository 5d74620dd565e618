//! A gateway node's view of the cluster on a real PostgreSQL 15 (spec/CLUSTER.md §3, §7–§9):
//! who owns a shard, the ordered commit queue, takeover after a lease runs out, and the fence
//! refusing a node that still believes it owns the shard.

mod support;

use std::time::Duration;

use support::PgServer;
use tally_store_pg::{ChannelId, NodeConfig, Owner, PgError, PgNode, Target};

fn config(pg: &PgServer, node_url: &str, lease_ms: u64) -> NodeConfig {
    NodeConfig {
        target: Target::new(&pg.url()),
        shards: 4,
        lease_ms,
        node_url: node_url.into(),
    }
}

async fn node(pg: &PgServer, url: &str, lease_ms: u64) -> std::sync::Arc<PgNode> {
    PgNode::start(config(pg, url, lease_ms)).await.unwrap()
}

/// The first node to ask takes a free shard; the second is told who holds it and where it is
/// reached (schema version 4's members), and the settlement lease is a shard of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_asker_owns_a_shard_and_others_learn_where_it_is() {
    let pg = PgServer::start();
    let a = node(&pg, "http://127.0.0.1:1001", 60_000).await;
    let b = node(&pg, "http://127.0.0.1:1002", 60_000).await;
    assert_ne!(a.id(), b.id());
    assert!(a.id().starts_with("127.0.0.1:1001-"), "{}", a.id());
    // Peeking (what routing does) takes nothing.
    assert!(a.peek(2).await.unwrap().is_none());
    assert!(
        a.store().holder(2).await.unwrap().is_none(),
        "a peek took the shard"
    );
    let Owner::Mine(lease) = a.owner(2).await.unwrap() else {
        panic!("a free shard is taken by the first node to ask");
    };
    assert!(matches!(a.peek(2).await.unwrap(), Some(Owner::Mine(_))));
    assert_eq!((lease.shard, lease.epoch), (2, 1));
    match b.owner(2).await.unwrap() {
        Owner::Other(h) => {
            assert_eq!(h.node, a.id());
            assert_eq!(h.url.as_deref(), Some("http://127.0.0.1:1001"));
            assert_eq!(h.epoch, 1);
            assert!(h.expires_in_ms > 0);
        }
        Owner::Mine(_) => panic!("a live lease of another node is not taken"),
    }
    assert!(a.settlement_lease().await.unwrap().is_some());
    assert!(
        b.settlement_lease().await.unwrap().is_none(),
        "one settlement worker"
    );
}

/// Records queued in index order, several before the first commits, all commit in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_appends_commit_in_order() {
    let pg = PgServer::start();
    let node = node(&pg, "http://127.0.0.1:1001", 60_000).await;
    let ch = ChannelId([3; 32]);
    let Owner::Mine(lease) = node.owner(node.shard_of(&ch)).await.unwrap() else {
        panic!("free shard");
    };
    let tickets: Vec<_> = (0..50u64)
        .map(|i| {
            let rec = vec![(u32::try_from(i % 3).unwrap(), format!("r{i}").into_bytes())];
            node.enqueue(lease.clone(), ch, i, rec).unwrap()
        })
        .collect();
    for (i, t) in tickets.into_iter().enumerate() {
        let range = t.await.unwrap().unwrap();
        assert_eq!(range, i as u64..i as u64 + 1);
    }
    let head = node.store().head(&ch).await.unwrap().unwrap();
    assert_eq!((head.size, head.epoch), (50, 1));
    let recs = node.store().records(&ch, 0..50).await.unwrap();
    assert_eq!(recs[49], b"r49".to_vec());
    // An append at a position the log is not at is refused, and nothing moves.
    let wrong = node
        .enqueue(lease, ch, 7, vec![(0, b"x".to_vec())])
        .unwrap();
    assert!(matches!(
        *wrong.await.unwrap().unwrap_err(),
        PgError::SizeMismatch {
            expected: 7,
            actual: 50
        }
    ));
    // The failure is noted before the append leaves the queue count: whoever waited for the
    // count to reach 0 (a state about to load) learns that promises may be lost (once).
    assert!(!node.take_failure(&ChannelId([4; 32])));
    assert_eq!(node.queued_for(&ch), 0);
    assert!(node.take_failure(&ch));
    assert!(!node.take_failure(&ch));
}

/// A node that stops renewing (here: its leases are taken over after they ran out) is
/// fenced by the database even though it still holds the lease value: its queued append is
/// refused, and it stops trusting the lease. The new owner continues at epoch + 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_fences_the_old_owner() {
    let pg = PgServer::start();
    let lease_ms = 600;
    let a = node(&pg, "http://127.0.0.1:1001", lease_ms).await;
    let ch = ChannelId([1; 32]);
    let shard = a.shard_of(&ch);
    let Owner::Mine(old) = a.owner(shard).await.unwrap() else {
        panic!("free shard");
    };
    a.enqueue(old.clone(), ch, 0, vec![(0, b"a0".to_vec())])
        .unwrap()
        .await
        .unwrap()
        .unwrap();
    // Simulate a paused node: its lease row is made to run out in the database (a renewal
    // it would have sent never arrives), and another node takes the shard.
    let client = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(client.1);
    client
        .0
        .execute(
            "UPDATE tally_leases SET expires_at = now() WHERE shard = $1",
            &[&i32::try_from(shard).unwrap()],
        )
        .await
        .unwrap();
    let b = node(&pg, "http://127.0.0.1:1002", lease_ms).await;
    let Owner::Mine(new) = b.owner(shard).await.unwrap() else {
        panic!("an expired lease is taken over");
    };
    assert_eq!(new.epoch, old.epoch + 1);
    // The old owner still holds the lease value; the database refuses it.
    let stale = a
        .enqueue(old.clone(), ch, 1, vec![(0, b"a1".to_vec())])
        .unwrap();
    assert!(matches!(
        *stale.await.unwrap().unwrap_err(),
        PgError::Fenced { .. }
    ));
    assert!(
        a.held(shard).is_none(),
        "a fenced node stops trusting the lease"
    );
    b.enqueue(new, ch, 1, vec![(0, b"b1".to_vec())])
        .unwrap()
        .await
        .unwrap()
        .unwrap();
    let recs = b.store().records(&ch, 0..10).await.unwrap();
    assert_eq!(recs, vec![b"a0".to_vec(), b"b1".to_vec()]);
    // The renewal loop keeps the new owner's lease alive well past its length.
    tokio::time::sleep(Duration::from_millis(lease_ms * 3)).await;
    assert!(b.held(shard).is_some(), "renewed every third of lease_ms");
    match a.owner(shard).await.unwrap() {
        Owner::Other(h) => assert_eq!(h.node, b.id()),
        Owner::Mine(_) => panic!("a renewed lease is not taken"),
    }
}

/// A clean shutdown releases every lease: another node takes the shard at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_leases_are_taken_at_once() {
    let pg = PgServer::start();
    let a = node(&pg, "http://127.0.0.1:1001", 60_000).await;
    let b = node(&pg, "http://127.0.0.1:1002", 60_000).await;
    assert!(matches!(a.owner(0).await.unwrap(), Owner::Mine(_)));
    assert!(matches!(b.owner(0).await.unwrap(), Owner::Other(_)));
    a.release_all().await;
    b.forget(0);
    match b.owner(0).await.unwrap() {
        Owner::Mine(l) => assert_eq!(l.epoch, 2),
        Owner::Other(_) => panic!("a released lease is free"),
    }
}

/// A live owner's commit holding its lease row (an open transaction, as a paused node's
/// would) delays no other node: lookups read the holder without locking the row, and renewals
/// run on a connection of their own (review finding H3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lease_row_blocks_no_other_node() {
    let pg = PgServer::start();
    let lease_ms = 600;
    let a = node(&pg, "http://127.0.0.1:1001", lease_ms).await;
    let b = node(&pg, "http://127.0.0.1:1002", lease_ms).await;
    assert!(matches!(a.owner(0).await.unwrap(), Owner::Mine(_)));
    assert!(matches!(b.owner(1).await.unwrap(), Owner::Mine(_)));
    let (client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("BEGIN; SELECT 1 FROM tally_leases WHERE shard = 0 FOR SHARE")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(lease_ms * 3) {
        let t = std::time::Instant::now();
        b.forget(0);
        let owner = b.owner(0).await;
        assert!(
            t.elapsed() < Duration::from_millis(lease_ms),
            "a lookup waited {:?} behind the held row",
            t.elapsed()
        );
        assert!(
            matches!(owner, Ok(Owner::Other(_)) | Err(PgError::Unsettled { .. })),
            "{owner:?}"
        );
        assert!(b.held(1).is_some(), "b's own lease stays renewed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.batch_execute("ROLLBACK").await.unwrap();
}
