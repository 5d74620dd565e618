//! tally's PostgreSQL log store, for cluster mode (spec/CLUSTER.md, issue 15).
//!
//! Several gateway nodes share one provider's channels; their logs live in one PostgreSQL
//! database. Channels are grouped into shards by channel id (CLUSTER.md §3); a node writes a
//! shard's channels only while it holds the shard's [`Lease`], and every group commit
//! ([`PgStore::append`]) is *fenced*: the records and the head move in one transaction whose
//! head update succeeds only if the database still names this node and this epoch as the
//! shard's owner (CLUSTER.md §4). Records are opaque bytes here, as in tally-log's sled store;
//! the same transaction stores the Merkle hashes the new records complete (CLUSTER.md §2,
//! schema version 2), computed by tally-log's tree code, so roots, proofs and checked
//! checkpoints are served from the database alone, by any node ([`LeasedLog`] is the
//! store behind tally-log's `LogBackend` interface). Schema version 3 adds the gateway's side
//! state (session bindings, salts, close and credit marks, promise marks, restores, terms;
//! [`LeasedBindings`] is the store behind tally-log's `BindingsBackend`, the interface the
//! gateway's sled `Bindings` implements too). The trait and its rules live in tally-log
//! because dependencies point one way (tally-server → tally-store-pg → tally-log): both
//! backends see it there, and this crate never depends on the gateway. Owner's writes are
//! fenced by the lease like appends; first-writer-wins facts are not (CLUSTER.md §2).
//!
//! What this crate must never do:
//! - advance a channel head without the fencing condition in the same statement: a node that
//!   lost its lease (a pause, a partition) must be refused by the database even if it does not
//!   know it lost it;
//! - trust a lease it has not renewed: [`PgStore::renew`] fails once the lease has expired in
//!   the database's clock, and the node must [`acquire`](PgStore::acquire) again (a new epoch);
//! - report an append before PostgreSQL's `COMMIT` has returned;
//! - keep tree state in memory: a node that takes a shard over loads each channel's frontier
//!   from the database, inside the commit that extends it.

mod backend;
mod bindings;
mod bindings_backend;
mod checkpoint;
mod error;
mod lease;
mod log;
mod members;
mod merkle;
mod node;
mod schema;
pub mod throwaway;

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::{Client, NoTls};

pub use backend::LeasedLog;
pub use bindings_backend::LeasedBindings;
pub use error::PgError;
pub use lease::Lease;
pub use log::Head;
pub use members::Holder;
pub use node::{Committed, NodeConfig, Owner, PgNode, QueueFull};
pub use schema::SCHEMA_VERSION;

/// A channel id (PROTOCOL.md §8.1): 32 bytes, of which the first two pick the shard. The same
/// type as tally-log's, so both stores answer about the same channels (CLUSTER.md §2).
pub use tally_core::ChannelId;

/// The shard of `channel` among `shards`: its first two bytes, big-endian, modulo `shards`
/// (CLUSTER.md §3). Channel ids are hashes, so shards fill evenly.
pub fn shard_of(channel: &ChannelId, shards: u16) -> u32 {
    let prefix = u32::from(u16::from_be_bytes([channel.0[0], channel.0[1]]));
    prefix % u32::from(shards.max(1))
}

/// How to reach the database: a libpq-style connection string or URI, and the password kept
/// apart from it (it never appears in a string that could be printed). `Debug` omits both.
#[derive(Clone, Default)]
pub struct Target {
    /// `host=… port=… user=… dbname=…` or `postgresql://user@host/db`, without a password.
    pub url: String,
    /// The password, if the server asks for one.
    pub password: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Target { .. }")
    }
}

impl Target {
    /// A target without a password.
    pub fn new(url: &str) -> Target {
        Target {
            url: url.into(),
            password: None,
        }
    }

    /// Checks `url` parses and carries no password (passwords belong in a file, never in a
    /// config string that may be logged or shown).
    pub fn check_url(url: &str) -> Result<(), String> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("the database url does not parse: {e}"))?;
        if config.get_password().is_some() {
            return Err("the database url carries a password; put it in password_file".into());
        }
        Ok(())
    }

    /// The connection settings: the parsed url, the password, a 5 s connect timeout unless
    /// the url sets one, and TCP keepalives so a dead peer is noticed in seconds.
    fn config(&self) -> Result<tokio_postgres::Config, PgError> {
        let mut config: tokio_postgres::Config = self.url.parse()?;
        if let Some(p) = &self.password {
            config.password(p.as_bytes());
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(std::time::Duration::from_secs(5));
        }
        config.keepalives(true);
        config.keepalives_idle(std::time::Duration::from_secs(10));
        Ok(config)
    }
}

/// Server-side limits a connection sets on itself (`SET` after every connect), so no
/// statement or transaction of a stalled node holds locks other nodes wait for (a paused
/// node's open transaction would otherwise hold its lease row for hours).
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits {
    /// `statement_timeout`, ms (0: none).
    pub statement_ms: u64,
    /// `lock_timeout`, ms (0: none).
    pub lock_ms: u64,
    /// `idle_in_transaction_session_timeout`, ms (0: none).
    pub idle_in_transaction_ms: u64,
}

impl Limits {
    fn sql(&self) -> String {
        format!(
            "SET statement_timeout = {}; SET lock_timeout = {}; \
             SET idle_in_transaction_session_timeout = {}",
            self.statement_ms, self.lock_ms, self.idle_in_transaction_ms
        )
    }
}

/// One node's handle on the cluster database: one connection, reopened when it drops.
pub struct PgStore {
    target: Target,
    limits: Limits,
    shards: u16,
    client: Mutex<Client>,
}

impl PgStore {
    /// Connects to `url` (a libpq-style string, e.g. `host=127.0.0.1 port=5432 user=tally
    /// dbname=tally`; no TLS: the database is expected on a private network). `shards` must
    /// be the same on every node and for the database's life; [`init`](Self::init) checks it.
    pub async fn connect(url: &str, shards: u16) -> Result<PgStore, PgError> {
        Self::connect_to(&Target::new(url), shards, Limits::default()).await
    }

    /// [`connect`](Self::connect) with a password and server-side [`Limits`].
    pub async fn connect_to(
        target: &Target,
        shards: u16,
        limits: Limits,
    ) -> Result<PgStore, PgError> {
        if shards == 0 {
            return Err(PgError::BadShards);
        }
        let client = open(target, &limits).await?;
        Ok(PgStore {
            target: target.clone(),
            limits,
            shards,
            client: Mutex::new(client),
        })
    }

    /// Creates or migrates the schema (idempotent, versioned in `tally_schema`) and records
    /// the shard count, refusing a database set up with another (CLUSTER.md §2).
    pub async fn init(&self) -> Result<(), PgError> {
        let mut client = self.client().await?;
        schema::init(&mut client, self.shards, SCHEMA_VERSION).await
    }

    /// [`init`](Self::init) stopping at schema `version`: for tests of the migrations only
    /// (a database left at an old version, then migrated by `init`).
    #[doc(hidden)]
    pub async fn init_at_version(&self, version: i32) -> Result<(), PgError> {
        let mut client = self.client().await?;
        schema::init(&mut client, self.shards, version.min(SCHEMA_VERSION)).await
    }

    /// One trivial query: whether the database answers on this store's connection.
    pub async fn ping(&self) -> Result<(), PgError> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }

    /// The number of shards this store was opened with.
    pub fn shards(&self) -> u16 {
        self.shards
    }

    /// The connection, reopened if it closed (the database restarted, the network dropped):
    /// a node must outlive its database's restarts. Leases are in the database, so a new
    /// connection loses nothing.
    pub(crate) async fn client(&self) -> Result<MutexGuard<'_, Client>, PgError> {
        let mut guard = self.client.lock().await;
        if guard.is_closed() {
            *guard = open(&self.target, &self.limits).await?;
        }
        Ok(guard)
    }
}

/// Opens a connection and drives it on a task of its own. The task ends when the connection
/// does; its error then reaches the caller of the next query, which fails as closed.
async fn open(target: &Target, limits: &Limits) -> Result<Client, PgError> {
    let (client, connection) = target.config()?.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ended = connection.await;
    });
    client.batch_execute(&limits.sql()).await?;
    Ok(client)
}
