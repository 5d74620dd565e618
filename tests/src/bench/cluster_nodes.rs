//! What the cluster scenario runs on (issue 15): a real anvil with the Tally contract (the
//! nodes are `tally serve`, which reads funding from the chain), a throwaway PostgreSQL 15
//! (tally-store-pg's test server: 127.0.0.1 only, `fsync=on`), one provider key, and node
//! processes configured as an operator would (spec/CLUSTER.md §10). Also the database-side
//! probes: who owns a shard (`tally_leases` and `tally_members`), transactions committed
//! (`pg_stat_database`) and the CPU of the PostgreSQL processes (/proc).

#[path = "../../../crates/tally-store-pg/tests/support/mod.rs"]
mod pg_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use tally_cli::gateway::GatewayFile;
use tally_core::SecretKey;
use tally_e2e::chain::ChainEnv;
use tally_e2e::TestChannel;
use tally_http::terms::CheckpointPolicy;
use tally_http::Amount;
use tally_server::config::{StoreConfig, StoreKind};
use tally_server::durability::DurabilityConfig;

use crate::child::{self, Gateway};
use crate::fail;

/// Shards of the bench database (CLUSTER.md §3): the default.
pub const SHARDS: u16 = 64;
/// Lease length of the nodes: a dead owner's channels wait at most this long.
pub const LEASE_MS: u64 = 2000;
/// The nodes' upstream timeout: a forward to a stopped owner gives up after this + 5 s
/// (CLUSTER.md §7).
const UPSTREAM_TIMEOUT_MS: u64 = 2000;
/// Deposit of every bench channel: far more than a run spends.
const DEPOSIT: u128 = 1 << 90;
const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";

/// Which store a node uses.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sled,
    Postgres,
}

/// anvil, PostgreSQL and the provider's key.
pub struct World {
    env: ChainEnv,
    pg: pg_support::PgServer,
    key_file: PathBuf,
    _key_dir: tempfile::TempDir,
}

impl World {
    /// Starts anvil (contracts deployed) and PostgreSQL; writes the provider's key file.
    pub async fn start() -> World {
        let env = ChainEnv::new().await;
        let pg = match tokio::task::spawn_blocking(pg_support::PgServer::start).await {
            Ok(pg) => pg,
            Err(e) => fail(&format!("starting PostgreSQL: {e}")),
        };
        let key_dir = tempdir();
        let key_file = key_dir.path().join("provider.key");
        let key = SecretKey::from_seed(&[9u8; 32]);
        if let Err(e) = tally_server::config::write_key_file(&key_file, &key) {
            fail(&format!("key file: {e}"));
        }
        World {
            env,
            pg,
            key_file,
            _key_dir: key_dir,
        }
    }

    /// Opens `n` fresh channels onchain.
    pub async fn channels(&mut self, n: u32) -> Vec<TestChannel> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.env.open(DEPOSIT).await);
        }
        out
    }

    /// Writes a node's config under `dir` and starts it: listening on a free loopback port
    /// (also its `node_url`), its data in `dir/data`, the shared database for
    /// [`Store::Postgres`], checkpoints off and a large credit limit as in the other
    /// scenarios.
    pub fn node(&self, dir: &Path, store: Store, promise: bool, delay_ms: u64) -> Gateway {
        if let Err(e) = std::fs::create_dir_all(dir) {
            fail(&format!("{}: {e}", dir.display()));
        }
        let (port, upstream_port) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{port}");
        let mut file = GatewayFile::new(
            &format!("127.0.0.1:{port}"),
            &format!("http://127.0.0.1:{upstream_port}"),
            &self.env.rpc_url(),
            self.env.chain_terms(),
            tally_e2e::routes(),
        );
        file.data_dir = dir.join("data");
        file.provider_key_file = self.key_file.clone();
        file.credit_limit = Amount(u128::MAX / 8);
        file.min_withdraw_delay = Some(tally_e2e::chain::WITHDRAW_DELAY);
        file.checkpoint = CheckpointPolicy {
            every_records: 0,
            every_seconds: 0,
            every_amount: Amount(0),
        };
        let mode = if promise { "promise" } else { "sync" };
        file.durability = Some(DurabilityConfig::Mode(mode.into()));
        if store == Store::Postgres {
            file.store = Some(StoreConfig {
                kind: StoreKind::Postgres,
                url: Some(self.pg.url()),
                password_file: None,
                shards: SHARDS,
                lease_ms: LEASE_MS,
                node_url: Some(url.clone()),
            });
        }
        let toml = match file.to_toml() {
            Ok(t) => t,
            Err(e) => fail(&format!("node config: {e}")),
        };
        let config = dir.join("gateway.toml");
        // A top-level key before every table: valid TOML whatever `to_toml` wrote.
        let text = format!("upstream_timeout_ms = {UPSTREAM_TIMEOUT_MS}\n{toml}");
        if let Err(e) = std::fs::write(&config, text) {
            fail(&format!("{}: {e}", config.display()));
        }
        child::start_node(&config, &url, upstream_port, delay_ms)
    }

    /// Client configurations of `chans` sending to `url`, mirrors under `work`.
    pub fn client_configs(
        chans: &[TestChannel],
        url: &str,
        work: &Path,
    ) -> Vec<tally_client::ClientConfig> {
        chans
            .iter()
            .enumerate()
            .map(|(i, ch)| tally_e2e::client_config(url, &work.join(format!("client{i}")), ch))
            .collect()
    }

    /// The node URL owning `shard` by the database (a live lease), if any.
    pub fn owner_url(&self, shard: u32) -> Option<String> {
        let out = self.psql(&format!(
            "SELECT m.url FROM tally_leases l JOIN tally_members m ON m.node = l.owner \
             WHERE l.shard = {shard} AND l.expires_at > now()"
        ));
        out.lines()
            .next()
            .map(str::to_string)
            .filter(|s| !s.is_empty())
    }

    /// `(transactions committed in the tally database, reads included; WAL flushes of the
    /// server; records in every channel's log; transaction ids assigned, i.e. write
    /// transactions, exact)` so far. The first two are statistics the backends report when
    /// they go idle, up to 10 s late (PostgreSQL 15's idle interval): wait that long around a
    /// run before reading them.
    pub fn db_counts(&self) -> DbCounts {
        let out = self.psql(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = 'tally'), \
             (SELECT wal_sync FROM pg_stat_wal), \
             (SELECT COALESCE(sum(size), 0) FROM tally_heads), \
             pg_current_xact_id()::text::bigint",
        );
        let mut it = out.trim().split('|').map(|v| v.parse().unwrap_or(0));
        let mut next = || it.next().unwrap_or(0);
        DbCounts {
            xacts: next(),
            flushes: next(),
            records: next(),
            xids: next(),
        }
    }

    /// Takes channel `i`'s shard through node `i mod n`, so the channels' owners spread over
    /// the nodes whatever order requests come in: its session is bound there (what a client
    /// does first), and a node takes a free shard for a channel it has checked, such as one
    /// whose binding verified (routing alone takes none, CLUSTER.md §7). The clients bind the
    /// same key again later, through the balancer: a no-op.
    pub async fn spread(&self, chans: &[TestChannel], urls: &[String]) {
        let terms = self.env.chain_terms();
        let contract: alloy::primitives::Address = match terms.contract.parse() {
            Ok(a) => a,
            Err(e) => fail(&format!("contract address: {e}")),
        };
        let http = reqwest::Client::new();
        for (i, ch) in chans.iter().enumerate() {
            let session = ch.session.public();
            let digest =
                tally_chain::eip712::session_digest(terms.chain_id, contract, &ch.id, &session);
            let sig = match tally_chain::eip712::sign_digest(&ch.checkpoint, &digest) {
                Ok(s) => s,
                Err(e) => fail(&format!("signing a session binding: {e}")),
            };
            let binding = tally_http::SessionBinding {
                session_key: session,
                eip712: tally_http::payment::WireEip712Sig::from_parts(sig.parts()),
            };
            let url = format!(
                "{}{}/channels/{}/session",
                urls[i % urls.len()],
                tally_http::headers::API_PREFIX,
                ch.id.to_hex()
            );
            match http.post(&url).json(&binding).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => fail(&format!("binding through {url}: {}", r.status())),
                Err(e) => fail(&format!("binding through {url}: {e}")),
            }
        }
    }

    /// The database sessions of the nodes: state, what they wait for, how long their
    /// transaction has been open, the statement (for a failover that does not complete).
    pub fn sessions(&self) -> String {
        self.psql(
            "SELECT pid, state, coalesce(wait_event_type || ':' || wait_event, '-'), \
             coalesce(round(extract(epoch FROM now() - xact_start)::numeric, 1)::text, '-'), \
             left(regexp_replace(query, '\\s+', ' ', 'g'), 90) \
             FROM pg_stat_activity WHERE datname = 'tally' AND pid <> pg_backend_pid() \
             ORDER BY xact_start NULLS LAST",
        )
    }

    /// CPU ticks (user + kernel) of the PostgreSQL server and its live backends.
    pub fn pg_ticks(&self) -> u64 {
        let port = self.port();
        let Some(master) = postmaster(port) else {
            return 0;
        };
        let mut total = 0;
        for (pid, ppid) in processes() {
            if pid == master || ppid == master {
                let (u, s) = crate::probe::cpu_split(pid);
                total += u + s;
            }
        }
        total
    }

    fn port(&self) -> u16 {
        self.pg
            .url()
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("port="))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    fn psql(&self, sql: &str) -> String {
        let out = Command::new(PSQL)
            .args(["-h", "127.0.0.1", "-p", &self.port().to_string()])
            .args(["-U", "postgres", "-d", "tally", "-At", "-c", sql])
            .output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
            Ok(o) => fail(&format!(
                "psql {sql:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            )),
            Err(e) => fail(&format!("psql: {e}")),
        }
    }
}

/// Database counters ([`World::db_counts`]).
#[derive(Clone, Copy, Default)]
pub struct DbCounts {
    pub xacts: u64,
    pub flushes: u64,
    pub records: u64,
    pub xids: u64,
}

impl DbCounts {
    /// `self - earlier`, counter by counter; the probe's own transaction id taken off.
    pub fn since(&self, earlier: &DbCounts) -> DbCounts {
        DbCounts {
            xacts: self.xacts.saturating_sub(earlier.xacts),
            flushes: self.flushes.saturating_sub(earlier.flushes),
            records: self.records.saturating_sub(earlier.records),
            xids: self.xids.saturating_sub(earlier.xids).saturating_sub(1),
        }
    }
}

/// The shard of a channel (CLUSTER.md §3).
pub fn shard_of(ch: &TestChannel) -> u32 {
    u32::from(u16::from_be_bytes([ch.id.0[0], ch.id.0[1]]) % SHARDS)
}

/// The pid of the PostgreSQL server listening on `port` (its command line names the port).
fn postmaster(port: u16) -> Option<u32> {
    let needle = format!("-p {port} ");
    let rd = std::fs::read_dir("/proc").ok()?;
    rd.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.contains("bin/postgres") && cmd.contains(&needle)).then_some(pid)
    })
}

/// `(pid, parent pid)` of every process.
fn processes() -> Vec<(u32, u32)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let after = stat.rsplit_once(')')?.1;
            let ppid = after.split_whitespace().nth(1)?.parse().ok()?;
            Some((pid, ppid))
        })
        .collect()
}

fn free_port() -> u16 {
    match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => fail(&format!("free port: {e}")),
    }
}

/// A temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => fail(&format!("tempdir: {e}")),
    }
}
