//! Schema version 3 on a real PostgreSQL 15: the gateway's side state (spec/CLUSTER.md §2).
//! tally-log's side-state conformance suite (the one the sled `Bindings` pass), racing
//! writers of two nodes, owner's writes of a stale epoch or another shard refused by the
//! database, and the migration from version 2.

mod support;

use std::time::Duration;

use support::PgServer;
use tally_core::{PublicKey, RequestSalt, SecretKey, Signature};
use tally_log::bindings::{BindingsBackend, BindingsErrorKind, CreditMark};
use tally_log::bindings_conformance::{self, channel, close};
use tally_log::{Hash, RuleError};
use tally_store_pg::{shard_of, ChannelId, Lease, LeasedBindings, PgError, PgStore};

const SHARDS: u16 = 4;

async fn store(pg: &PgServer) -> PgStore {
    let store = PgStore::connect(&pg.url(), SHARDS).await.unwrap();
    store.init().await.unwrap();
    store
}

async fn lease(store: &PgStore, shard: u32, node: &str, ms: u64) -> Lease {
    store.acquire(shard, node, ms).await.unwrap().unwrap()
}

fn key(n: u8) -> PublicKey {
    SecretKey::from_seed(&[n; 32]).public()
}

/// A channel id in `shard` (of [`SHARDS`]), distinct per `n`.
fn in_shard(shard: u8, n: u8) -> ChannelId {
    let mut id = ChannelId([n; 32]);
    id.0[0] = 0;
    id.0[1] = shard;
    assert_eq!(shard_of(&id, SHARDS), u32::from(shard));
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_bindings_pass_the_conformance_suite() {
    let pg = PgServer::start();
    let store = store(&pg).await;
    let db = LeasedBindings::new(&store, lease(&store, 0, "node-a", 600_000).await);
    bindings_conformance::run_all(&db).await;
}

/// Two nodes (two connections) bind different keys to the same channels at the same time:
/// for each channel exactly one bind succeeds, the other is `SessionConflict`, and the stored
/// key is the winner's. Racing salts all come back as the one stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_binds_of_two_nodes_store_exactly_one_key() {
    let pg = PgServer::start();
    let (a, b) = (store(&pg).await, store(&pg).await);
    for n in 0..24u8 {
        let ch = in_shard(u8::from(n % 2 == 1), n);
        let (k1, k2) = (key(1), key(2));
        let (ra, rb) = tokio::join!(a.bind(&ch, &k1), b.bind(&ch, &k2));
        let winner = match (&ra, &rb) {
            (Ok(()), Err(PgError::Rule(RuleError::SessionConflict))) => key(1),
            (Err(PgError::Rule(RuleError::SessionConflict)), Ok(())) => key(2),
            other => panic!("channel {n}: exactly one bind must win, got {other:?}"),
        };
        assert_eq!(a.session(&ch).await.unwrap(), Some(winner));
        assert_eq!(b.session(&ch).await.unwrap(), Some(winner));
        // The loser's retry of its own key is still refused; the winner's repeat is fine.
        let (again_a, again_b) = (a.bind(&ch, &key(1)).await, b.bind(&ch, &key(2)).await);
        assert_eq!(again_a.is_ok(), winner == key(1), "{again_a:?}");
        assert_eq!(again_b.is_ok(), winner == key(2), "{again_b:?}");

        let (sa, sb) = tokio::join!(
            a.salt_or_insert(&ch, RequestSalt([1; 32])),
            b.salt_or_insert(&ch, RequestSalt([2; 32]))
        );
        let (sa, sb) = (sa.unwrap(), sb.unwrap());
        assert_eq!(sa, sb, "channel {n}: both nodes agree on one salt");
        assert_eq!(a.salt(&ch).await.unwrap(), Some(sa));
    }
}

/// Two connections of the shard's owner mark the same channel closing at different states at
/// once: exactly one agreement is stored, the other is `ClosingConflict`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_closes_store_exactly_one_agreement() {
    let pg = PgServer::start();
    let (a, b) = (store(&pg).await, store(&pg).await);
    let owner = lease(&a, 1, "node-a", 600_000).await;
    for n in 0..16u8 {
        let ch = in_shard(1, n);
        let (c1, c2) = (close(1), close(2));
        let (ra, rb) = tokio::join!(
            a.mark_closing(&owner, &ch, &c1),
            b.mark_closing(&owner, &ch, &c2)
        );
        let winner = match (&ra, &rb) {
            (Ok(()), Err(PgError::Rule(RuleError::ClosingConflict))) => close(1),
            (Err(PgError::Rule(RuleError::ClosingConflict)), Ok(())) => close(2),
            other => panic!("channel {n}: exactly one close must win, got {other:?}"),
        };
        assert_eq!(a.closing(&ch).await.unwrap(), Some(winner));
    }
    assert_eq!(a.closings().await.unwrap().len(), 16);
}

/// Node a's lease of shard 1 expires and node b takes the shard (epoch 2). Every owner's
/// write a still tries is refused by the database as `Fenced` and leaves nothing behind,
/// even a clear of the channel's promise mark; b's writes go through. a's unfenced first-writer-wins
/// writes (a binding) still land, by design (CLUSTER.md §2).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_writes_of_a_stale_epoch_are_refused_by_the_database() {
    let pg = PgServer::start();
    let (sa, sb) = (store(&pg).await, store(&pg).await);
    let stale = lease(&sa, 1, "node-a", 300).await;
    let ch = in_shard(1, 7);
    let a = LeasedBindings::new(&sa, stale.clone());
    a.mark_promising(&ch).await.unwrap(); // while the lease holds
    tokio::time::sleep(Duration::from_millis(450)).await;
    let fresh = lease(&sb, 1, "node-b", 600_000).await;
    assert_eq!(fresh.epoch, stale.epoch + 1);
    let b = LeasedBindings::new(&sb, fresh);
    let fenced = |what: &str, kind: BindingsErrorKind| {
        assert_eq!(kind, BindingsErrorKind::Fenced, "{what}");
    };
    let mark = CreditMark {
        index: 3,
        request_hash: Hash([9; 32]),
    };
    let err = a.mark_closing(&ch, &close(1)).await.unwrap_err();
    fenced("close", LeasedBindings::kind(&err));
    let err = a.mark_credited(&ch, 2, &mark).await.unwrap_err();
    fenced("credit", LeasedBindings::kind(&err));
    let err = a.clear_promising(&[ch]).await.unwrap_err();
    fenced("clear", LeasedBindings::kind(&err));
    let other = in_shard(1, 8);
    let err = a.mark_promising(&other).await.unwrap_err();
    fenced("promise", LeasedBindings::kind(&err));
    assert_eq!(b.closing(&ch).await.unwrap(), None);
    assert_eq!(b.credit_for(&ch, 2).await.unwrap(), None);
    assert!(
        b.is_promising(&ch).await.unwrap(),
        "the stale clear cleared nothing"
    );
    assert!(!b.is_promising(&other).await.unwrap());

    a.bind(&ch, &key(1)).await.unwrap();
    b.mark_closing(&ch, &close(2)).await.unwrap();
    b.mark_credited(&ch, 2, &mark).await.unwrap();
    b.clear_promising(&[ch]).await.unwrap();
    assert_eq!(b.closing(&ch).await.unwrap(), Some(close(2)));
    assert_eq!(b.credit_for(&ch, 2).await.unwrap(), Some(mark));
    assert!(!b.is_promising(&ch).await.unwrap());
    assert_eq!(b.session(&ch).await.unwrap(), Some(key(1)));
}

/// An owner's write for a channel of another shard than the lease's is refused before it
/// reaches the database, and a clear naming one such channel clears none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_writes_outside_the_lease_shard_are_refused() {
    let pg = PgServer::start();
    let store = store(&pg).await;
    let owner = LeasedBindings::new(&store, lease(&store, 1, "node-a", 600_000).await);
    let (mine, theirs) = (in_shard(1, 1), in_shard(2, 2));
    owner.mark_promising(&mine).await.unwrap();
    let wrong = |r: Result<(), PgError>| {
        assert!(
            matches!(
                r,
                Err(PgError::WrongShard {
                    channel_shard: 2,
                    lease_shard: 1
                })
            ),
            "{r:?}"
        )
    };
    wrong(owner.mark_promising(&theirs).await);
    wrong(owner.mark_closing(&theirs, &close(1)).await);
    let mark = CreditMark {
        index: 1,
        request_hash: Hash([1; 32]),
    };
    wrong(owner.mark_credited(&theirs, 0, &mark).await);
    wrong(owner.clear_promising(&[mine, theirs]).await);
    assert!(owner.is_promising(&mine).await.unwrap());
    assert!(!owner.is_promising(&theirs).await.unwrap());
    assert_eq!(owner.closing(&theirs).await.unwrap(), None);
}

/// A database at version 2 is migrated by `init` to version 3: its logs stay, and the side
/// state works at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_2_database_gains_the_side_state() {
    let pg = PgServer::start();
    let old = PgStore::connect(&pg.url(), SHARDS).await.unwrap();
    old.init_at_version(2).await.unwrap();
    let owner = lease(&old, 0, "node-a", 600_000).await;
    let ch = channel(0x31);
    old.append(&owner, &ch, 0, &[b"r0".to_vec(), b"r1".to_vec()])
        .await
        .unwrap();
    assert!(
        old.session(&ch).await.is_err(),
        "no side state at version 2"
    );
    drop(old);

    let store = store(&pg).await;
    assert_eq!(store.head(&ch).await.unwrap().map(|h| h.size), Some(2));
    store.bind(&ch, &key(3)).await.unwrap();
    store
        .keep_restore(&ch, &Hash([1; 32]), 2, b"st", &Signature([5; 64]))
        .await
        .unwrap();
    assert_eq!(store.session(&ch).await.unwrap(), Some(key(3)));
    assert_eq!(
        store.restores(&ch).await.unwrap(),
        vec![(b"st".to_vec(), Signature([5; 64]))]
    );
}

/// A stored value that does not decode is an error, never "absent" (the identity point is not
/// a session key); and the database's own checks refuse a value of the wrong length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_values_that_do_not_decode_are_errors() {
    let pg = PgServer::start();
    let store = store(&pg).await;
    let db = LeasedBindings::new(&store, lease(&store, 0, "node-a", 600_000).await);
    let (raw, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let ch = channel(0x51);
    let mut identity = [0u8; 32];
    identity[0] = 1;
    raw.execute(
        "INSERT INTO tally_sessions (channel, key) VALUES ($1, $2)",
        &[&ch.0.as_slice(), &identity.as_slice()],
    )
    .await
    .unwrap();
    let err = db.session(&ch).await.unwrap_err();
    assert_eq!(
        LeasedBindings::kind(&err),
        BindingsErrorKind::Corrupt,
        "{err}"
    );
    let err = db.bind(&ch, &key(1)).await.unwrap_err();
    assert_eq!(
        LeasedBindings::kind(&err),
        BindingsErrorKind::Corrupt,
        "{err}"
    );
    let short = raw
        .execute(
            "INSERT INTO tally_credits (channel, idx, body, epoch) VALUES ($1, 0, $2, 1)",
            &[&ch.0.as_slice(), &[0u8; 8].as_slice()],
        )
        .await;
    assert!(short.is_err(), "a credit mark of the old shape is refused");
    assert_eq!(db.credit_for(&ch, 0).await.unwrap(), None);
}

/// A takeover in progress (the lease row updated to node b's new epoch, not yet committed)
/// holds the row: node a's owner's write of the old epoch waits for it, then sees the new
/// epoch and is refused. It cannot commit after the takeover (CLUSTER.md §4, "Why FOR
/// SHARE"; the fence of CLUSTER.md §2, version 3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_write_meeting_a_takeover_waits_and_is_refused() {
    let pg = PgServer::start();
    let store = store(&pg).await;
    let a = LeasedBindings::new(&store, lease(&store, 1, "node-a", 600_000).await);
    let ch = in_shard(1, 9);
    let mark = CreditMark {
        index: 5,
        request_hash: Hash([7; 32]),
    };
    a.mark_credited(&ch, 1, &mark).await.unwrap();

    let (mut raw, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let takeover = raw.transaction().await.unwrap();
    let taken = takeover
        .execute(
            "UPDATE tally_leases SET owner = 'node-b', epoch = epoch + 1,
                    expires_at = now() + interval '60 seconds'
              WHERE shard = 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(taken, 1);
    let started = std::time::Instant::now();
    let commit_later = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        takeover.commit().await.unwrap();
    };
    let write = async {
        let result = a.mark_credited(&ch, 2, &mark).await;
        (result, started.elapsed())
    };
    let ((written, took), ()) = tokio::join!(write, commit_later);
    let err = written.unwrap_err();
    assert_eq!(
        LeasedBindings::kind(&err),
        BindingsErrorKind::Fenced,
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(400),
        "the write waited for the takeover's commit ({took:?})"
    );
    assert_eq!(a.credit_for(&ch, 2).await.unwrap(), None);
    assert_eq!(a.credit_for(&ch, 1).await.unwrap(), Some(mark));
}
