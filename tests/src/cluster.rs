//! A gateway cluster on this machine for the fault tests of issue 15 (spec/CLUSTER.md): a
//! real anvil, a throwaway PostgreSQL, and several `tally-e2e-gateway` processes of one
//! provider (one key file, one set of chain terms, a data directory each) sharing it, each
//! through a [`TcpProxy`] of its own (so a test can cut one node's database connection),
//! behind a [`TcpProxy`] used as the load balancer.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tally_client::Client;
use tally_core::SecretKey;
use tally_server::config::{StoreConfig, StoreKind};
use tokio::task::JoinHandle;

use crate::chain::ChainEnv;
use crate::cluster_db::{shard_of, ClusterDb, LeaseRow};
use crate::pg::Postgres;
use crate::process::{free_port, GatewayProcess};
use crate::tcp_proxy::TcpProxy;
use crate::traffic::{call, traffic, Seen};
use crate::{client_config, spawn_upstream, tmp, Server, TestChannel};

/// Shards of the test database (CLUSTER.md §3).
pub const SHARDS: u16 = 8;
/// Lease length: short, so a failover takes a second or two.
pub const LEASE_MS: u64 = 1500;

fn ok<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

/// One gateway node.
pub struct Node {
    /// The process.
    pub process: GatewayProcess,
    /// Its listening port.
    pub port: u16,
    /// `http://127.0.0.1:<port>`, also its `node_url`.
    pub url: String,
    /// Its only way to the database.
    pub db_proxy: TcpProxy,
    _dir: tempfile::TempDir,
}

/// The running cluster.
pub struct Cluster {
    /// The chain.
    pub env: ChainEnv,
    /// The upstream API.
    pub upstream: Server,
    /// The database server.
    pub pg: Postgres,
    /// The database, read directly.
    pub db: ClusterDb,
    /// The nodes, started in order.
    pub nodes: Vec<Node>,
    /// The load balancer in front of every node.
    pub lb: TcpProxy,
    /// The provider's key.
    pub key: SecretKey,
    _key_dir: tempfile::TempDir,
}

/// Writes a node's config in `dir`: the provider's shared key file and chain terms, its own
/// data directory (`dir/data`), the shared database at `db_url`, `node_url` its own address.
fn write_config(
    dir: &Path,
    port: u16,
    upstream: &str,
    db_url: String,
    key_file: &Path,
    env: &ChainEnv,
) -> PathBuf {
    let mut file = env.gateway_file(port, upstream);
    file.provider_key_file = key_file.to_path_buf();
    file.store = Some(StoreConfig {
        kind: StoreKind::Postgres,
        url: Some(db_url),
        password_file: None,
        shards: SHARDS,
        lease_ms: LEASE_MS,
        node_url: Some(format!("http://127.0.0.1:{port}")),
    });
    let path = dir.join("gateway.toml");
    ok("writing the config", file.write(&path));
    path
}

impl Cluster {
    /// Starts anvil, PostgreSQL, the upstream and `n` nodes (one after the other, each
    /// creating the schema if needed), and the load balancer. `bin` is
    /// `env!("CARGO_BIN_EXE_tally-e2e-gateway")`.
    pub async fn start(bin: &str, n: usize) -> Cluster {
        let env = ChainEnv::new().await;
        let upstream = spawn_upstream().await;
        let pg = Postgres::start().await;
        let db = ClusterDb::new(pg.url());
        let key_dir = tmp();
        let key = SecretKey::generate(&mut rand::rngs::OsRng);
        let key_file = key_dir.path().join("provider.key");
        ok(
            "key file",
            tally_server::config::write_key_file(&key_file, &key),
        );
        let mut nodes = Vec::new();
        for _ in 0..n {
            let dir = tmp();
            let port = free_port();
            let db_proxy = TcpProxy::start(vec![pg.addr()]).await;
            let config = write_config(
                dir.path(),
                port,
                &upstream.url(),
                pg.url_via(db_proxy.addr().port()),
                &key_file,
                &env,
            );
            let url = format!("http://127.0.0.1:{port}");
            let process =
                GatewayProcess::new(bin, config, dir.path().join("gateway.log"), url.clone());
            nodes.push(Node {
                process,
                port,
                url,
                db_proxy,
                _dir: dir,
            });
        }
        for node in &mut nodes {
            let took = node.process.start().await;
            eprintln!("cluster: {} up in {took:?}", node.url);
        }
        let addrs = nodes
            .iter()
            .map(|n| std::net::SocketAddr::from(([127, 0, 0, 1], n.port)))
            .collect();
        let lb = TcpProxy::start(addrs).await;
        Cluster {
            env,
            upstream,
            pg,
            db,
            nodes,
            lb,
            key,
            _key_dir: key_dir,
        }
    }

    /// The last lines of every node's stderr, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let all = n.process.output();
            let lines: Vec<&str> = all.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            out.push_str(&format!(
                "---- {} (last lines) ----\n{}\n",
                n.url,
                tail.join("\n")
            ));
        }
        out
    }
}

/// A paying client's channel, its mirror directory, and where it sends.
pub struct Payer {
    /// The channel.
    pub ch: TestChannel,
    /// The mirror's directory (kept while the client lives).
    pub dir: tempfile::TempDir,
    /// `None`: through the load balancer; `Some(i)`: to node `i` only.
    pub pinned: Option<usize>,
    /// The channel's shard.
    pub shard: u32,
}

impl Payer {
    /// A label for messages.
    pub fn label(&self) -> String {
        match self.pinned {
            None => format!(
                "channel {} (lb, shard {})",
                &self.ch.id.to_hex()[..8],
                self.shard
            ),
            Some(i) => format!(
                "channel {} (node {i}, shard {})",
                &self.ch.id.to_hex()[..8],
                self.shard
            ),
        }
    }
}

/// Deposit of every test channel: far more than a test spends.
const DEPOSIT: u128 = 1_000_000_000;

impl Cluster {
    /// Opens the test's channels: `through_lb` paid through the load balancer, the first of
    /// them the *busy* channel, and for each node one more channel in the busy channel's
    /// shard, pinned to that node, so that whichever node owns the shard one client pays
    /// through it and the others are forwarded to it (CLUSTER.md §7).
    pub async fn payers(&mut self, through_lb: usize) -> Vec<Payer> {
        let mut payers = Vec::new();
        for _ in 0..through_lb.max(1) {
            let ch = self.env.open(DEPOSIT).await;
            let shard = shard_of(&ch.id, SHARDS);
            payers.push(Payer {
                ch,
                dir: tmp(),
                pinned: None,
                shard,
            });
        }
        let busy = payers[0].shard;
        for i in 0..self.nodes.len() {
            let mut tries = 0;
            let ch = loop {
                tries += 1;
                assert!(tries < 500, "no channel landed in shard {busy}");
                let ch = self.env.open(DEPOSIT).await;
                if shard_of(&ch.id, SHARDS) == busy {
                    break ch;
                }
            };
            payers.push(Payer {
                ch,
                dir: tmp(),
                pinned: Some(i),
                shard: busy,
            });
        }
        payers
    }

    /// Connects `payer`'s client: a 2 s timeout per attempt (a stopped node accepts
    /// connections and never answers), 3 transport retries through the load balancer (each
    /// may reach another node), 1 when pinned.
    pub async fn connect(&self, payer: &Payer) -> Client {
        let url = match payer.pinned {
            None => self.lb.url(),
            Some(i) => self.nodes[i].url.clone(),
        };
        let mut config = client_config(&url, payer.dir.path(), &payer.ch);
        config.timeout = Duration::from_secs(2);
        config.retries = if payer.pinned.is_some() { 1 } else { 3 };
        ok("connect", Client::connect(config).await)
    }

    /// The live lease of `shard`, waited for up to 10 s (a node takes a shard when it first
    /// serves one of its channels, or at start).
    pub async fn live_lease(&self, shard: u32) -> LeaseRow {
        let t = Instant::now();
        loop {
            if let Some(l) = self.db.lease(shard).await.filter(|l| l.live) {
                return l;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no live lease of shard {shard}: {:?}\n{}",
                self.db.leases().await,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Which node holds `shard`'s lease, and the lease: the owner's id is registered with
    /// its base URL (`tally_members`, CLUSTER.md §7) and starts with its address
    /// (`127.0.0.1:<port>-<random>`, unique per process start, CLUSTER.md §3).
    pub async fn owner_of(&self, shard: u32) -> (usize, LeaseRow) {
        let lease = self.live_lease(shard).await;
        let registered = self.db.member_url(&lease.owner).await;
        let named: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                let n = &self.nodes[i];
                registered.as_deref() == Some(n.url.as_str())
                    || lease.owner.starts_with(&format!("127.0.0.1:{}-", n.port))
            })
            .collect();
        match named[..] {
            [i] => (i, lease),
            _ => {
                panic!("no single node owns shard {shard}: {lease:?}, registered at {registered:?}")
            }
        }
    }

    /// Waits until `shard` is taken over from `old` (a live lease at a higher epoch, CLUSTER.md
    /// §3); returns the new lease and when it was first seen. Fails after `within`.
    pub async fn wait_takeover(&self, shard: u32, old: &LeaseRow, within: Duration) -> LeaseRow {
        let t = Instant::now();
        loop {
            if let Some(l) = self.db.lease(shard).await {
                if l.live && l.epoch > old.epoch {
                    return l;
                }
            }
            assert!(
                t.elapsed() < within,
                "shard {shard} was not taken over from {old:?} in {within:?}: {:?}\n\
                 database sessions:\n{}{}",
                self.db.lease(shard).await,
                self.db.activity().await,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Waits until every channel of `payers` commits beyond its head at the call (traffic
    /// resumed for each); fails after `within`, or at once if a client of `load` stopped
    /// (its panic, printed above, says why).
    pub async fn wait_progress(&self, payers: &[Payer], load: &Load, within: Duration) {
        let mut from = Vec::new();
        for p in payers {
            from.push(self.db.size(&p.ch.id).await);
        }
        let t = Instant::now();
        for (p, size) in payers.iter().zip(from) {
            while self.db.size(&p.ch.id).await <= size {
                load.assert_running();
                assert!(
                    t.elapsed() < within,
                    "{}: no commit beyond {size} in {within:?}\n{}",
                    p.label(),
                    self.logs()
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
    }

    /// How many records of each `(shard, epoch)` are committed now, as
    /// `(shard, epoch, records)`. Taken once a stale node's leases have expired, it must not
    /// change afterwards: the node appended nothing after its shards moved (CLUSTER.md §4).
    pub async fn epoch_counts(&self, leases: &[(u32, u64)]) -> Vec<(u32, u64, u64)> {
        let mut counts = Vec::new();
        for &(shard, epoch) in leases {
            counts.push((shard, epoch, self.db.count_at_epoch(shard, epoch).await));
        }
        counts
    }

    /// Every `(shard, epoch)` whose lease `owner` holds now.
    pub async fn leases_of(&self, owner: &str) -> Vec<(u32, u64)> {
        let rows = self.db.leases().await;
        rows.into_iter()
            .filter(|l| l.owner == owner)
            .map(|l| (l.shard, l.epoch))
            .collect()
    }
}

/// Paying clients at work until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<(Client, Seen)>>,
}

impl Load {
    /// Each client pays with `in_flight` requests at once (on as many lanes), moving on
    /// after failures (crate::traffic::traffic).
    pub fn start(clients: Vec<Client>, in_flight: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let workers = clients
            .into_iter()
            .enumerate()
            .map(|(c, client)| tokio::spawn(traffic(client, c, in_flight, stop.clone())))
            .collect();
        Load { stop, workers }
    }

    /// Fails the test if a client stopped before [`Self::stop`]: it met an answer it cannot
    /// go on from (crate::traffic::call panics on anything but a receipt, a lost response,
    /// a transport failure or a `503`).
    pub fn assert_running(&self) {
        let stopped: Vec<usize> = (0..self.workers.len())
            .filter(|&c| self.workers[c].is_finished())
            .collect();
        assert!(
            stopped.is_empty(),
            "traffic client(s) {stopped:?} stopped under load: see the panic above"
        );
    }

    /// Stops it; each client with what it saw, in the order given.
    pub async fn stop(self) -> Vec<(Client, Seen)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for w in self.workers {
            out.push(ok("traffic task", w.await));
        }
        out
    }
}

/// One last paid call per client once the cluster is whole again (retried for up to 30 s:
/// a shard may still be between owners), then a flush, so the mirror holds the whole log.
pub async fn last_calls(paid: &mut [(Client, Seen)], payers: &[Payer]) {
    for (c, ((client, seen), payer)) in paid.iter_mut().zip(payers).enumerate() {
        let t = Instant::now();
        let mut n = 0;
        loop {
            n += 1;
            let body = format!("last call {c} try {n}");
            match call(client, "/v1/echo", &body, seen).await {
                Ok(()) => break,
                Err(e) => assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "{}: no last call in 30 s: {e}",
                    payer.label()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ok("flush", client.flush().await);
    }
}

/// The time from `t` to the first receipt of a `shard` channel that arrived after it from a
/// writer of an epoch above `epoch` (`TALLY-EPOCH`): the failover time when `epoch` is the
/// stale owner's. A receipt without the header counts by its time alone (the checks fail on
/// it anyway).
pub fn first_receipt_after(
    paid: &[(Client, Seen)],
    payers: &[Payer],
    shard: u32,
    t: Instant,
    epoch: u64,
) -> Option<Duration> {
    paid.iter()
        .zip(payers)
        .filter(|(_, p)| p.shard == shard)
        .flat_map(|((_, seen), _)| seen.stamps.iter())
        .filter(|s| s.at > t && s.epoch.is_none_or(|(_, e)| e > epoch))
        .map(|s| s.at - t)
        .min()
}
