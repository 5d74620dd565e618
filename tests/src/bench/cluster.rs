//! `--scenario cluster` (issue 15, spec/CLUSTER.md): in one invocation,
//!
//! 1. one `tally serve` node on the sled store and on the PostgreSQL store, each in `sync`
//!    and `promise` mode: metered req/s at full load, the latency added at half load over
//!    the same node's unmetered baseline, gateway CPU per metered call (durability.rs's
//!    measurement);
//! 2. three nodes on one PostgreSQL behind a round-robin balancer (cluster_lb.rs), so most
//!    requests reach a node that does not own the channel's shard and are forwarded: total
//!    metered req/s, CPU per call per node, the forwarded share, PostgreSQL commits/s and its
//!    CPU; then failover: the owner of a busy channel's shard is SIGKILLed, later another
//!    owner SIGSTOPped (and resumed), and the time until that channel's next paid call
//!    served at a new epoch is measured;
//! 3. the node count for 100k paid calls/s from the CPU per call (2 cores per node at 70 %).
//!
//! The nodes are real `tally serve` processes (`--serve-node`): funding is read from a real
//! anvil, logs go to a PostgreSQL with `fsync=on` on this machine's disk.

use std::collections::HashMap;
use std::time::Duration;

use tally_client::Client;

use crate::child::Gateway;
use crate::cluster_failover::failovers;
use crate::cluster_lb::{self, NODE_HEADER};
use crate::cluster_nodes::{shard_of, tempdir, Store, World};
use crate::durability::{measure, Mode};
use crate::load::{print_run, Load, Run};
use crate::probe::{cpu_split, TICKS_PER_S};
use crate::report::{Bench, FREE, PAID};
use crate::Config;

/// How late PostgreSQL 15's idle backends may report their statistics, and a margin.
const STATS_LAG: Duration = Duration::from_millis(11_000);
/// Nodes of the cluster.
const NODES: usize = 3;
/// Sizing target (issue 15): paid calls per second, cores per node, usable share of them.
const TARGET_RPS: f64 = 100_000.0;
const CORES_PER_NODE: f64 = 2.0;
const USABLE: f64 = 0.7;

/// Runs the scenario.
pub async fn scenario(cfg: &Config) {
    println!(
        "tally-bench cluster: {} channels x {} lanes, {} requests per channel at full load, \
         upstream delay {} ms; nodes are `tally serve` on anvil funding; PostgreSQL 15 fsync=on",
        cfg.channels, cfg.lanes, cfg.requests, cfg.delay_ms
    );
    let mut world = World::start().await;
    let mut single = Vec::new();
    for (store, promise, name) in [
        (Store::Sled, false, "sled sync"),
        (Store::Postgres, false, "postgres sync"),
        (Store::Sled, true, "sled promise"),
        (Store::Postgres, true, "postgres promise"),
    ] {
        single.push(one_node(&mut world, cfg, store, promise, name).await);
    }
    println!("== 1. one node, the same load");
    for m in &single {
        println!(
            "{:>16}: metered {:>7.0} req/s at full load ({:.3}x unmetered); added at half load \
             p50 {:>6.0} us, p99 {:>6.0} us; gateway CPU {:>6.1} us per metered call",
            m.name,
            m.full_rps,
            m.full_rps / m.free_rps,
            m.added_p50,
            m.added_p99,
            m.cpu_per_call
        );
    }
    let pg_cpu = single
        .iter()
        .find(|m| m.name == "postgres sync")
        .map_or(0.0, |m| m.cpu_per_call);
    let c = three_nodes(&mut world, cfg).await;
    sizing(&c, pg_cpu);
}

/// Part 1: one node on `store`, measured as the durability scenario measures a mode.
async fn one_node(
    world: &mut World,
    cfg: &Config,
    store: Store,
    promise: bool,
    name: &'static str,
) -> Mode {
    let chans = world.channels(cfg.channels).await;
    let work = tempdir();
    let node = world.node(&work.path().join("gateway"), store, promise, cfg.delay_ms);
    let configs = World::client_configs(&chans, &node.url, work.path());
    let clients = crate::child::connect_clients(configs, cfg.lanes).await;
    let b = Bench::from_parts(work, node, clients);
    let m = measure(&b, cfg, name).await;
    // A clean stop releases the node's leases: the next node starts on a free database.
    b.terminate();
    m
}

/// What the 3-node run measured.
struct ClusterRun {
    metered: Run,
    /// Gateway CPU per call, summed over the nodes, µs.
    cpu_per_call: f64,
    /// PostgreSQL transactions per second (reads included), write transactions per second
    /// (exact: transaction ids assigned) and WAL flushes per second.
    xacts_per_s: f64,
    writes_per_s: f64,
    flushes_per_s: f64,
    calls_per_flush: f64,
    /// The PostgreSQL processes' CPU per paid call, µs.
    pg_us_per_call: f64,
    /// A raw `fdatasync` of 4 KiB on this disk, p50, µs.
    fsync_p50: f64,
}

/// Part 2: three nodes, one database, a round-robin balancer in front.
async fn three_nodes(world: &mut World, cfg: &Config) -> ClusterRun {
    let chans = world.channels(cfg.channels).await;
    let work = tempdir();
    let mut nodes: Vec<Option<Gateway>> = (0..NODES)
        .map(|i| {
            let dir = work.path().join(format!("node{i}"));
            Some(world.node(&dir, Store::Postgres, false, cfg.delay_ms))
        })
        .collect();
    let urls: Vec<String> = nodes.iter().flatten().map(|n| n.url.clone()).collect();
    let pids: Vec<u32> = nodes.iter().flatten().map(|n| n.pid).collect();
    let (lb, lb_server) = cluster_lb::start(urls.clone()).await;
    let configs = World::client_configs(&chans, &lb_server.url(), work.path())
        .into_iter()
        .map(|mut c| {
            // A stopped node accepts connections and never answers (CLUSTER.md §7).
            c.timeout = Duration::from_secs(2);
            c.retries = 1;
            c
        })
        .collect();
    world.spread(&chans, &urls).await;
    let clients = crate::child::connect_clients(configs, cfg.lanes).await;
    let per_task = (cfg.requests / cfg.lanes).max(1);
    let load = |path, per_task| Load {
        clients: &clients,
        path,
        lanes: cfg.lanes,
        per_task,
        interval: None,
        child: pids[0],
    };
    let _ = load(PAID, (20 / cfg.lanes).max(1)).run().await;
    let free = load(FREE, per_task).run().await;
    // pg_stat_* are fed by idle backends up to 10 s late: let the last run's land.
    tokio::time::sleep(STATS_LAG).await;
    let cpu0: Vec<u64> = pids.iter().map(|&p| ticks(p)).collect();
    let (db0, pg0) = (world.db_counts(), world.pg_ticks());
    let metered = load(PAID, per_task).run().await;
    let cpu1: Vec<u64> = pids.iter().map(|&p| ticks(p)).collect();
    let pg1 = world.pg_ticks();
    let writes = world.db_counts().since(&db0).xids as f64;
    tokio::time::sleep(STATS_LAG).await;
    let db = world.db_counts().since(&db0);
    let (xacts, flushes) = (db.xacts as f64, db.flushes as f64);
    let secs = metered.n / metered.rps;
    println!(
        "== 2. {NODES} nodes on one PostgreSQL, requests round-robin over the nodes \
         (channel i's shard first taken through node i mod {NODES})"
    );
    println!("(the two lines below show node 0's CPU only; every node's follows)");
    print_run("unmetered, full load, through the balancer", &free);
    print_run("metered,   full load, through the balancer", &metered);
    let total_cpu = per_node_cpu(&cpu0, &cpu1, metered.n);
    let pg_us = pg1.saturating_sub(pg0) as f64 / TICKS_PER_S * 1e6;
    let (fsync_p50, _) = crate::probe::fsync_latency(work.path());
    let run = ClusterRun {
        cpu_per_call: total_cpu / metered.n,
        xacts_per_s: xacts / secs,
        writes_per_s: writes / secs,
        flushes_per_s: flushes / secs,
        calls_per_flush: metered.n / flushes.max(1.0),
        pg_us_per_call: pg_us / metered.n,
        fsync_p50,
        metered,
    };
    println!(
        "cluster: {:.0} metered req/s in total ({:.0} records appended); gateway CPU {:.1} us per call \
         over all nodes; PostgreSQL: {:.0} transactions/s ({:.1} per call, reads included), \
         {:.0} write transactions/s ({:.2} per call), {:.0} WAL flushes/s ({:.2} calls per flush), \
         its CPU {:.1} us per call",
        run.metered.rps,
        db.records as f64,
        run.cpu_per_call,
        run.xacts_per_s,
        xacts / run.metered.n,
        run.writes_per_s,
        writes / run.metered.n,
        run.flushes_per_s,
        run.calls_per_flush,
        run.pg_us_per_call
    );
    forwarded_share(world, &clients, &chans, &urls).await;
    failovers(world, &lb, &mut nodes, &clients, &chans, &urls).await;
    for n in nodes.into_iter().flatten() {
        n.terminate();
    }
    lb_server.stop().await;
    run
}

/// Prints each node's CPU per call between two samples; returns their sum, µs.
fn per_node_cpu(cpu0: &[u64], cpu1: &[u64], calls: f64) -> f64 {
    let mut total_cpu = 0.0;
    for (i, (a, b)) in cpu0.iter().zip(cpu1).enumerate() {
        let us = b.saturating_sub(*a) as f64 / TICKS_PER_S * 1e6;
        total_cpu += us;
        println!(
            "node {i}: CPU {:.1} us per call it received ({:.0} calls), {:.1} us per call of the cluster",
            us / (calls / NODES as f64),
            calls / NODES as f64,
            us / calls
        );
    }
    total_cpu
}

fn ticks(pid: u32) -> u64 {
    let (u, s) = cpu_split(pid);
    u + s
}

/// Sends 10 paid calls per channel and counts those the balancer gave to a node that does
/// not own the channel's shard (the database's lease table says who does).
async fn forwarded_share(
    world: &World,
    clients: &[Client],
    chans: &[tally_e2e::TestChannel],
    urls: &[String],
) {
    let mut owner = HashMap::new();
    for ch in chans {
        let shard = shard_of(ch);
        let url = world.owner_url(shard);
        owner.insert(shard, url.and_then(|u| urls.iter().position(|x| *x == u)));
    }
    let mut tasks = Vec::new();
    for (c, ch) in clients.iter().zip(chans) {
        let (c, shard) = (c.clone(), shard_of(ch));
        let own = owner.get(&shard).copied().flatten();
        tasks.push(tokio::spawn(async move {
            let (mut sent, mut forwarded) = (0u32, 0u32);
            for _ in 0..10 {
                let Ok(r) = c.post(PAID).body("payload").send().await else {
                    continue;
                };
                let node = r.headers.get(NODE_HEADER).and_then(|v| v.to_str().ok());
                let node: Option<usize> = node.and_then(|v| v.parse().ok());
                sent += 1;
                if node.is_some() && node != own {
                    forwarded += 1;
                }
            }
            (sent, forwarded)
        }));
    }
    let (mut sent, mut forwarded) = (0, 0);
    for t in tasks {
        if let Ok((s, f)) = t.await {
            sent += s;
            forwarded += f;
        }
    }
    let shards_by_node = (0..urls.len())
        .map(|i| {
            owner
                .values()
                .filter(|o| **o == Some(i))
                .count()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("/");
    println!(
        "forwarded: {forwarded} of {sent} paid calls ({:.0} %) reached a node that does not own \
         the channel's shard; the channels' shards are owned {shards_by_node} by node 0/1/2",
        100.0 * f64::from(forwarded) / f64::from(sent.max(1))
    );
}

/// Part 3: nodes for [`TARGET_RPS`] paid calls/s at [`CORES_PER_NODE`] cores used to
/// [`USABLE`], from the CPU per call measured, and what the database has to commit.
fn sizing(c: &ClusterRun, single_pg_cpu: f64) {
    let capacity = |us: f64| CORES_PER_NODE * USABLE * 1e6 / us;
    println!(
        "== 3. sizing for {TARGET_RPS:.0} paid calls/s ({CORES_PER_NODE} cores per node at {:.0} %)",
        USABLE * 100.0
    );
    let per_node = capacity(c.cpu_per_call);
    println!(
        "round-robin balancer (forwards included): {:.1} us per call -> {per_node:.0} calls/s per node \
         -> {} nodes",
        c.cpu_per_call,
        (TARGET_RPS / per_node).ceil()
    );
    if single_pg_cpu > 0.0 {
        let per_node = capacity(single_pg_cpu);
        println!(
            "channel-affine balancer (no forwards; one node's CPU on PostgreSQL, sync): {single_pg_cpu:.1} us \
             per call -> {per_node:.0} calls/s per node -> {} nodes",
            (TARGET_RPS / per_node).ceil()
        );
    }
    println!(
        "database, measured: {:.0} transactions/s ({:.0} of them writes) and {:.0} WAL flushes/s ({:.2} paid calls per flush) \
         at {:.0} paid calls/s; PostgreSQL CPU {:.1} us per call -> one PostgreSQL on \
         {CORES_PER_NODE} cores at {:.0} % serves at most {:.0} calls/s (CPU); the disk's fdatasync \
         p50 {:.0} us allows {:.0} serial flushes/s -> {:.0} calls/s at this batching",
        c.xacts_per_s,
        c.writes_per_s,
        c.flushes_per_s,
        c.calls_per_flush,
        c.metered.rps,
        c.pg_us_per_call,
        USABLE * 100.0,
        capacity(c.pg_us_per_call.max(1e-9)),
        c.fsync_p50,
        1e6 / c.fsync_p50.max(1e-9),
        1e6 / c.fsync_p50.max(1e-9) * c.calls_per_flush
    );
}
