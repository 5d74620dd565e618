//! The fault tests of cluster mode (issue 15, spec/CLUSTER.md §1–§9): three `tally serve`
//! processes of one provider share its channels through one PostgreSQL, with funding on a
//! real anvil. Clients pay through a TCP load balancer (which passes over a dead node) and,
//! for the busy channel's shard, one client is pinned to each node (so one pays through the
//! shard's owner and the others are forwarded to it). Under load the test kills a node
//! (SIGKILL), pauses one past its lease (SIGSTOP, then SIGCONT), crashes and restarts
//! PostgreSQL, or cuts one node's database connection. After each, against the database read
//! directly: every client's mirror is the database's log byte for byte and every receipt is
//! in it (no index holds two records anywhere); commit epochs never decrease along a log and
//! each receipt's `TALLY-EPOCH` is its record's; the stale node committed nothing under its
//! old leases once they had moved. Each prints its failover time.

use std::time::{Duration, Instant};

use tally_client::Client;
use tally_e2e::cluster::{first_receipt_after, last_calls, Cluster, Load, Payer, LEASE_MS};
use tally_e2e::cluster_check::{assert_consistent, assert_no_stale_appends, Totals};
use tally_e2e::cluster_db::LeaseRow;
use tally_e2e::traffic::Seen;

const BIN: &str = env!("CARGO_BIN_EXE_tally-e2e-gateway");
/// Nodes in the cluster.
const NODES: usize = 3;
/// Clients paying through the load balancer (the first is the busy channel's).
const LB_CLIENTS: usize = 3;
/// Requests each client keeps in flight.
const IN_FLIGHT: usize = 3;
/// The longest one test may take.
const TEST_LIMIT: Duration = Duration::from_secs(180);

/// Each test runs three gateways, anvil and PostgreSQL on a 2-core machine: one at a time,
/// so their timings mean something.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn lease() -> Duration {
    Duration::from_millis(LEASE_MS)
}

async fn sleep_until(t: Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await;
}

/// A cluster under load.
struct Run {
    cluster: Cluster,
    payers: Vec<Payer>,
    load: Load,
    /// The busy channel's shard.
    busy: u32,
}

impl Run {
    /// Starts the cluster and its clients, and waits until every channel has committed.
    async fn begin() -> Run {
        let mut cluster = Cluster::start(BIN, NODES).await;
        let payers = cluster.payers(LB_CLIENTS).await;
        let mut clients: Vec<Client> = Vec::new();
        for p in &payers {
            clients.push(cluster.connect(p).await);
        }
        let load = Load::start(clients, IN_FLIGHT);
        cluster
            .wait_progress(&payers, &load, Duration::from_secs(30))
            .await;
        let busy = payers[0].shard;
        Run {
            cluster,
            payers,
            load,
            busy,
        }
    }

    /// The busy shard's owner and lease, and every lease that owner holds.
    async fn busy_owner(&self) -> (usize, LeaseRow, Vec<(u32, u64)>) {
        let (k, lease) = self.cluster.owner_of(self.busy).await;
        let held = self.cluster.leases_of(&lease.owner).await;
        eprintln!(
            "cluster: node {k} owns the busy shard {} at epoch {} ({}); its leases {held:?}",
            self.busy, lease.epoch, lease.owner
        );
        (k, lease, held)
    }

    /// The clients of the busy shard that do not go through node `k` only.
    fn busy_not_pinned_to(&self, k: usize) -> Vec<&Payer> {
        self.payers
            .iter()
            .filter(|p| p.shard == self.busy && p.pinned != Some(k))
            .collect()
    }

    /// After a fault on node `k` (holding `old`, the busy shard's lease): the shard is taken
    /// over by another node, and its channels commit again through the other nodes.
    async fn takeover_from(&self, k: usize, old: &LeaseRow) -> LeaseRow {
        let new = self
            .cluster
            .wait_takeover(self.busy, old, lease() * 10)
            .await;
        assert_ne!(new.owner, old.owner, "the stale node kept the busy shard");
        let moving: Vec<&Payer> = self.busy_not_pinned_to(k);
        self.progress(&moving, Duration::from_secs(20)).await;
        eprintln!(
            "cluster: shard {} taken over at epoch {} ({})",
            self.busy, new.epoch, new.owner
        );
        new
    }

    async fn progress(&self, payers: &[&Payer], within: Duration) {
        for p in payers {
            self.cluster
                .wait_progress(std::slice::from_ref(*p), &self.load, within)
                .await;
        }
    }

    /// Stops the load, makes one last call per client, and checks what must hold after
    /// every fault (tally_e2e::cluster_check); `stale` are the stale node's
    /// `(shard, epoch, records)` counted once its leases had expired. Prints the failover
    /// time: from `t` (the moment named `from`) to the first receipt of the busy shard served
    /// above `epoch`; there must be one.
    async fn end(
        self,
        stale: &[(u32, u64, u64)],
        (t, from, epoch): (Instant, &str, u64),
        name: &str,
    ) -> Totals {
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.load.assert_running();
        let mut paid: Vec<(Client, Seen)> = self.load.stop().await;
        last_calls(&mut paid, &self.payers).await;
        let failover = first_receipt_after(&paid, &self.payers, self.busy, t, epoch);
        assert_no_stale_appends(&self.cluster, stale).await;
        let totals = assert_consistent(&self.cluster, paid, &self.payers).await;
        let Some(failover) = failover else {
            panic!(
                "{name}: no receipt of shard {} above epoch {epoch} after the {from}",
                self.busy
            );
        };
        eprintln!(
            "{name}: {from} → first receipt of shard {} above epoch {epoch}: {failover:?}; \
             {totals:?}",
            self.busy
        );
        assert!(totals.receipts > 0, "{totals:?}");
        totals
    }
}

/// Runs `test` alone (see [`SERIAL`]) within [`TEST_LIMIT`].
async fn serial(name: &str, test: impl std::future::Future<Output = ()>) {
    let _one = SERIAL.lock().await;
    if tokio::time::timeout(TEST_LIMIT, test).await.is_err() {
        panic!("{name} took longer than {TEST_LIMIT:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_a_node_under_load() {
    serial("kill -9", async {
        let mut run = Run::begin().await;
        let (k, old, held) = run.busy_owner().await;
        let t_kill = Instant::now();
        run.cluster.nodes[k].process.crash();
        run.takeover_from(k, &old).await;
        // Every lease of the dead node has expired by now (no renewal since the kill).
        sleep_until(t_kill + lease() + Duration::from_millis(500)).await;
        let stale = run.cluster.epoch_counts(&held).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The node comes back (a new process: a new node id, no lease of its own yet); its
        // pinned client pays through it again.
        let restart = run.cluster.nodes[k].process.start().await;
        eprintln!("kill -9: node {k} restarted in {restart:?}");
        let all: Vec<&Payer> = run.payers.iter().collect();
        run.progress(&all, Duration::from_secs(20)).await;
        run.end(&stale, (t_kill, "SIGKILL", old.epoch), "kill -9")
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_past_the_lease_then_sigcont() {
    serial("SIGSTOP", async {
        let run = Run::begin().await;
        let (k, old, held) = run.busy_owner().await;
        let t_stop = Instant::now();
        run.cluster.nodes[k].process.pause();
        let new = run.takeover_from(k, &old).await;
        // Paused for three leases: long past its own lease.
        sleep_until(t_stop + lease() * 3).await;
        let stale = run.cluster.epoch_counts(&held).await;
        let t_cont = Instant::now();
        run.cluster.nodes[k].process.resume();
        // The woken node still believes it owns the shard until it fails to renew; its
        // pinned client pays through it: forwarded to the new owner, or refused, never
        // appended under the old epoch (checked at the end).
        let pinned: Vec<&Payer> = run.payers.iter().filter(|p| p.pinned == Some(k)).collect();
        run.progress(&pinned, Duration::from_secs(20)).await;
        eprintln!(
            "SIGSTOP: node {k} paused for {:?}; its pinned client paid again {:?} after SIGCONT",
            t_cont - t_stop,
            t_cont.elapsed()
        );
        let now = run.cluster.db.lease(run.busy).await;
        assert!(
            now.as_ref().is_some_and(|l| l.epoch >= new.epoch),
            "the busy shard's lease went back: {now:?} after {new:?}"
        );
        run.end(&stale, (t_stop, "SIGSTOP", old.epoch), "SIGSTOP")
            .await;
    })
    .await;
}

/// Pauses node `k` at random moments, a few ms each, until PostgreSQL shows one of its
/// sessions idle inside a transaction that has written (a commit between its gate and its
/// `COMMIT`, holding the lease row `FOR SHARE` and the head row, CLUSTER.md §4), and leaves it
/// paused there; returns when it was paused and how many tries it took.
async fn pause_inside_a_commit(run: &Run, k: usize) -> Option<(Instant, usize)> {
    let node = &run.cluster.nodes[k].process;
    for attempt in 1..=300 {
        node.pause();
        let t = Instant::now();
        tokio::time::sleep(Duration::from_millis(30)).await;
        if run.cluster.db.stalled_writers(20).await > 0 {
            // Still there 100 ms later: not another node's commit that was merely slow.
            tokio::time::sleep(Duration::from_millis(100)).await;
            if run.cluster.db.stalled_writers(120).await > 0 {
                return Some((t, attempt));
            }
        }
        node.resume();
        let gap = rand::Rng::gen_range(&mut rand::thread_rng(), 1..30);
        tokio::time::sleep(Duration::from_millis(gap)).await;
    }
    None
}

/// The paused writer at its worst: the owner is stopped inside its commit transaction,
/// holding the busy shard's lease row `FOR SHARE` and a channel's head row. The shard must
/// still be taken over within a few leases (nothing may wait on the paused session), and
/// whatever the paused commit does when it wakes, nothing lands under its old epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_a_writer_inside_its_commit() {
    serial("SIGSTOP inside a commit", async {
        let run = Run::begin().await;
        let (k, old, held) = run.busy_owner().await;
        let Some((t_stop, tries)) = pause_inside_a_commit(&run, k).await else {
            panic!("node {k} was never paused inside a commit in 300 tries");
        };
        eprintln!("SIGSTOP inside a commit: node {k} caught mid-commit after {tries} tries");
        run.takeover_from(k, &old).await;
        sleep_until(t_stop + lease() * 3).await;
        let stale = run.cluster.epoch_counts(&held).await;
        run.cluster.nodes[k].process.resume();
        let all: Vec<&Payer> = run.payers.iter().collect();
        run.progress(&all, Duration::from_secs(20)).await;
        run.end(
            &stale,
            (t_stop, "SIGSTOP", old.epoch),
            "SIGSTOP inside a commit",
        )
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restart_under_load() {
    serial("PostgreSQL restart", async {
        let run = Run::begin().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t_stop = Instant::now();
        run.cluster.pg.stop_immediate().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        run.cluster.pg.start_again().await;
        let t_start = Instant::now();
        eprintln!("PostgreSQL restart: down for {:?}", t_start - t_stop);
        let all: Vec<&Payer> = run.payers.iter().collect();
        run.progress(&all, Duration::from_secs(30)).await;
        eprintln!(
            "PostgreSQL restart: every channel committed again {:?} after the restart",
            t_start.elapsed()
        );
        // No node was stale: every node lost the database at once. The time printed runs
        // from the restart to the first receipt after it.
        run.end(&[], (t_start, "restart", 0), "PostgreSQL restart")
            .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_database_connection() {
    serial("cut", async {
        let run = Run::begin().await;
        let (k, old, held) = run.busy_owner().await;
        let t_cut = Instant::now();
        run.cluster.nodes[k].db_proxy.cut();
        run.takeover_from(k, &old).await;
        // Cut for three leases: every lease of node k expired without renewal.
        sleep_until(t_cut + lease() * 3).await;
        let stale = run.cluster.epoch_counts(&held).await;
        run.cluster.nodes[k].db_proxy.restore();
        let t_restore = Instant::now();
        // Node k reaches the database again; every client, its pinned one included, pays.
        let all: Vec<&Payer> = run.payers.iter().collect();
        run.progress(&all, Duration::from_secs(30)).await;
        eprintln!(
            "cut: node {k} cut off for {:?}; every channel committed again {:?} after the restore",
            t_restore - t_cut,
            t_restore.elapsed()
        );
        run.end(&stale, (t_cut, "cut", old.epoch), "cut").await;
    })
    .await;
}
