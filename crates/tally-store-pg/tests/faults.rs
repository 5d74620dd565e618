//! Crash and interleaving tests of the PostgreSQL store (spec/CLUSTER.md §3–§4).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::PgServer;
use tally_log::{Blake3Hasher, Hash, MemoryTree};
use tally_store_pg::{ChannelId, Lease, PgError, PgStore};

fn rec(tag: &str, i: u64) -> Vec<u8> {
    format!("{tag}-{i}").into_bytes()
}

/// The root of a log holding `records`, by tally-log's in-memory tree.
fn root_of(records: &[Vec<u8>]) -> Hash {
    let mut tree = MemoryTree::new(Blake3Hasher);
    for r in records {
        tree.push(r);
    }
    tree.root()
}

/// `pg_ctl stop -m immediate` while a writer appends: after restart every acknowledged
/// append is there with its bytes, and no index holds anything but one attempted record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_an_immediate_stop() {
    let pg = PgServer::start();
    let store = Arc::new(PgStore::connect(&pg.url(), 1).await.unwrap());
    store.init().await.unwrap();
    let ch = ChannelId([9; 32]);
    let lease = store.acquire(0, "node-a", 600_000).await.unwrap().unwrap();

    let writer = {
        let (store, lease) = (store.clone(), lease.clone());
        tokio::spawn(async move {
            let (mut size, mut acked) = (0u64, Vec::new());
            loop {
                let batch: Vec<_> = (size..size + 4).map(|i| rec("w", i)).collect();
                match store.append(&lease, &ch, size, &batch).await {
                    Ok(range) => {
                        assert_eq!(range, size..size + 4);
                        acked.push(range);
                        size += 4;
                    }
                    Err(PgError::Db(_)) => return acked,
                    Err(other) => panic!("{other}"),
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    pg.stop_immediate();
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 5,
        "only {} commits before the crash",
        acked.len()
    );
    pg.pg_ctl_start();

    // The same store reconnects by itself.
    let head = store.head(&ch).await.unwrap().unwrap();
    let last_acked = acked.last().unwrap().end;
    // The commit in flight at the crash may have landed (its outcome was unknown).
    assert!(
        head.size == last_acked || head.size == last_acked + 4,
        "{head:?}"
    );
    let all = store.records(&ch, 0..head.size).await.unwrap();
    let attempted: Vec<_> = (0..head.size).map(|i| rec("w", i)).collect();
    assert_eq!(all, attempted);
    // And it appends on from the durable head.
    let next = store
        .append(&lease, &ch, head.size, &[rec("w", head.size)])
        .await
        .unwrap();
    assert_eq!(next, head.size..head.size + 1);
}

/// What the test believes of one shard's lease row.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    owner: usize,
    epoch: u64,
    live: bool,
}

/// Randomized acquire / renew / expire / append / checkpoint across 3 nodes, 2 shards, with stale views:
/// every result is the one the fencing rule prescribes, no index ever gets two records, and
/// every acknowledged record reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_interleavings_of_three_nodes_keep_one_record_per_index() {
    let pg = PgServer::start();
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let store = PgStore::connect(&pg.url(), 2).await.unwrap();
        store.init().await.unwrap();
        nodes.push(store);
    }
    let (clock, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let channels = [ChannelId([0; 32]), ChannelId([1; 32])]; // shards 0 and 1 of 2
    for seed in 0..4u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        // The same two shards each run, fresh channels (byte 2 is the seed).
        let chans: Vec<ChannelId> = channels
            .iter()
            .map(|c| {
                let mut c = *c;
                c.0[2] = seed as u8;
                c
            })
            .collect();
        run_interleaving(&nodes, &clock, &chans, &mut rng, seed).await;
    }
}

async fn run_interleaving(
    nodes: &[PgStore],
    clock: &tokio_postgres::Client,
    chans: &[ChannelId],
    rng: &mut StdRng,
    seed: u64,
) {
    // Start from free shards: expire whatever the previous seed left.
    clock
        .execute(
            "UPDATE tally_leases SET expires_at = now() - interval '1 ms'",
            &[],
        )
        .await
        .unwrap();
    let mut rows: HashMap<u32, Row> = current_rows(clock).await.into_iter().collect();
    let mut leases: HashMap<(usize, u32), Lease> = HashMap::new();
    let mut views: HashMap<(usize, u32), u64> = HashMap::new();
    let mut log: Vec<Vec<Vec<u8>>> = vec![Vec::new(); chans.len()];
    for step in 0..250u64 {
        let node = rng.gen_range(0..3);
        let shard = rng.gen_range(0..2u32);
        match rng.gen_range(0..11) {
            0..=1 => {
                let what = format!("seed {seed} step {step}");
                let got = acquire_step(&nodes[node], node, shard, &mut rows, &what).await;
                if let Some(lease) = got {
                    leases.insert((node, shard), lease);
                }
            }
            2 => {
                let Some(lease) = leases.get(&(node, shard)) else {
                    continue;
                };
                let holds = rows.get(&shard) == Some(&held(node, lease));
                let got = nodes[node].renew(lease).await;
                assert_eq!(got.is_ok(), holds, "seed {seed} step {step}: {got:?}");
            }
            3 => {
                clock
                    .execute(
                        "UPDATE tally_leases SET expires_at = now() - interval '1 ms'
                          WHERE shard = $1",
                        &[&(shard as i32)],
                    )
                    .await
                    .unwrap();
                if let Some(r) = rows.get_mut(&shard) {
                    r.live = false;
                }
            }
            10 => {
                let Some(lease) = leases.get(&(node, shard)) else {
                    continue;
                };
                let c = shard as usize;
                let at = rng.gen_range(0..=log[c].len());
                let holds = rows.get(&shard) == Some(&held(node, lease));
                let what = format!("seed {seed} step {step}");
                let step = Step {
                    store: &nodes[node],
                    lease,
                    chan: &chans[c],
                    holds,
                    what: &what,
                };
                checkpoint_step(step, &log[c][..at]).await;
            }
            _ => {
                let Some(lease) = leases.get(&(node, shard)).cloned() else {
                    continue;
                };
                let c = shard as usize;
                // A node's view of the head may be stale (it learns only from its own results).
                let expected = *views.get(&(node, shard)).unwrap_or(&0);
                let batch: Vec<_> = (0..rng.gen_range(1..4u64))
                    .map(|i| rec(&format!("s{seed}n{node}e{}", lease.epoch), expected + i))
                    .collect();
                let holds = rows.get(&shard) == Some(&held(node, &lease));
                let what = format!("seed {seed} step {step}");
                let step = Step {
                    store: &nodes[node],
                    lease: &lease,
                    chan: &chans[c],
                    holds,
                    what: &what,
                };
                if let Some(view) = append_step(step, expected, batch, &mut log[c]).await {
                    views.insert((node, shard), view);
                }
            }
        }
    }
    check_logs(nodes, chans, &log, seed).await;
}

/// An acquire by `node` (named `n<node>`): the epoch the model of the lease rows predicts,
/// or none while another node's lease is live; the model follows the database.
async fn acquire_step(
    store: &PgStore,
    node: usize,
    shard: u32,
    rows: &mut HashMap<u32, Row>,
    what: &str,
) -> Option<Lease> {
    let got = store
        .acquire(shard, &format!("n{node}"), 600_000)
        .await
        .unwrap();
    let want = match rows.get(&shard) {
        None => Some(1),
        Some(r) if r.live && r.owner == node => Some(r.epoch),
        Some(r) if r.live => None,
        Some(r) => Some(r.epoch + 1),
    };
    assert_eq!(got.as_ref().map(|l| l.epoch), want, "{what}");
    if let Some(lease) = &got {
        let row = Row {
            owner: node,
            epoch: lease.epoch,
            live: true,
        };
        rows.insert(shard, row);
    }
    got
}

/// One node's write in a random run, and what the model says of its lease.
struct Step<'a> {
    store: &'a PgStore,
    lease: &'a Lease,
    chan: &'a ChannelId,
    holds: bool,
    what: &'a str,
}

/// An append at the node's (possibly stale) view of the head: accepted exactly when the
/// lease holds and the view is the head. Returns the node's new view of the head.
async fn append_step(
    s: Step<'_>,
    expected: u64,
    batch: Vec<Vec<u8>>,
    log: &mut Vec<Vec<u8>>,
) -> Option<u64> {
    let (holds, what) = (s.holds, s.what);
    let got = s.store.append(s.lease, s.chan, expected, &batch).await;
    let size = log.len() as u64;
    match got {
        Ok(range) => {
            assert!(holds, "{what}: a stale lease appended");
            assert_eq!(range, size..size + batch.len() as u64);
            log.extend(batch);
            Some(range.end)
        }
        Err(PgError::Fenced { .. }) => {
            assert!(!holds, "{what}: a live lease was fenced");
            None
        }
        Err(PgError::SizeMismatch { actual, .. }) => {
            assert!(holds && expected != size, "{what}");
            assert_eq!(actual, size);
            Some(actual)
        }
        Err(other) => panic!("{what}: {other}"),
    }
}

/// A checkpoint of the log's first records with their true root: stored exactly when the
/// lease holds (CLUSTER.md §2, checkpoints are fenced like appends).
async fn checkpoint_step(s: Step<'_>, prefix: &[Vec<u8>]) {
    let size = prefix.len() as u64;
    let got = s
        .store
        .put_checkpoint(s.lease, s.chan, size, &root_of(prefix), b"cp")
        .await;
    match got {
        Ok(()) => assert!(s.holds, "{}: a stale lease stored a checkpoint", s.what),
        Err(PgError::Fenced { .. }) => assert!(!s.holds, "{}: a live lease was fenced", s.what),
        Err(other) => panic!("{}: {other}", s.what),
    }
}

/// Every acknowledged record reads back, and the hashes written by racing, fenced and
/// refused commits give the tree of exactly those records.
async fn check_logs(nodes: &[PgStore], chans: &[ChannelId], log: &[Vec<Vec<u8>>], seed: u64) {
    for (c, chan) in chans.iter().enumerate() {
        let stored = nodes[0].records(chan, 0..u64::MAX).await.unwrap();
        assert_eq!(stored, log[c], "seed {seed}: channel {c}");
        let root = nodes[1].root_at(chan, log[c].len() as u64).await.unwrap();
        assert_eq!(root, root_of(&log[c]), "seed {seed}: channel {c}");
    }
}

/// The row a lease held by `node` corresponds to.
fn held(node: usize, lease: &Lease) -> Row {
    Row {
        owner: node,
        epoch: lease.epoch,
        live: true,
    }
}

/// The lease rows as the database has them (after the expiry at the start of a run).
async fn current_rows(clock: &tokio_postgres::Client) -> Vec<(u32, Row)> {
    let rows = clock
        .query("SELECT shard, owner, epoch FROM tally_leases", &[])
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let shard: i32 = r.get(0);
            let owner: String = r.get(1);
            let epoch: i64 = r.get(2);
            let owner = owner.trim_start_matches('n').parse().unwrap();
            (
                shard as u32,
                Row {
                    owner,
                    epoch: epoch as u64,
                    live: false,
                },
            )
        })
        .collect()
}
