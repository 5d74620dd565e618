//! The cluster's shared database read directly, as the fault tests' referee: the records and
//! their epochs (spec/CLUSTER.md §2), the heads and the leases (§3). Every read opens its own
//! connection (retried while the database restarts), so a test can keep using it across a
//! `pg_ctl stop -m immediate`.

use std::time::{Duration, Instant};

use tally_core::ChannelId;
use tokio_postgres::{Client, NoTls};

/// One row of `tally_records`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredRecord {
    /// The index in the channel's log.
    pub idx: u64,
    /// The epoch of the lease under which it was committed.
    pub epoch: u64,
    /// The record bytes (tally_core::Record's canonical encoding).
    pub body: Vec<u8>,
}

/// One row of `tally_leases`, with the database's verdict on whether it is live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseRow {
    /// The shard.
    pub shard: u32,
    /// The holder's node id (unique per process start).
    pub owner: String,
    /// Its epoch.
    pub epoch: u64,
    /// `expires_at` in ms since the Unix epoch, by the database's clock.
    pub expires_ms: i64,
    /// `expires_at > now()` by the database's clock.
    pub live: bool,
}

/// `tally_heads` of one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadRow {
    /// The channel's shard.
    pub shard: u32,
    /// The durable head (the number of records).
    pub size: u64,
    /// The epoch of the last commit.
    pub epoch: u64,
}

/// The shard a channel belongs to (spec/CLUSTER.md §3): its first two bytes, big-endian,
/// modulo the shard count.
pub fn shard_of(channel: &ChannelId, shards: u16) -> u32 {
    u32::from(u16::from_be_bytes([channel.0[0], channel.0[1]]) % shards)
}

/// The database as the test reads it.
#[derive(Clone, Debug)]
pub struct ClusterDb {
    url: String,
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or_else(|_| panic!("a negative value {v} in the database"))
}

impl ClusterDb {
    /// Reads the database at `url` (a libpq string).
    pub fn new(url: String) -> ClusterDb {
        ClusterDb { url }
    }

    /// A connection, retried for up to 20 s (the database may be restarting).
    async fn client(&self) -> Client {
        let t = Instant::now();
        loop {
            match tokio_postgres::connect(&self.url, NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(connection);
                    return client;
                }
                Err(e) if t.elapsed() > Duration::from_secs(20) => {
                    panic!("connecting to the cluster's database: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Runs `sql` and returns its rows; a failure fails the test.
    async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<tokio_postgres::Row> {
        match self.client().await.query(sql, params).await {
            Ok(rows) => rows,
            Err(e) => match e.as_db_error() {
                Some(db) => panic!("{sql}: {}", db.message()),
                None => panic!("{sql}: {e}"),
            },
        }
    }

    /// Every record of `channel`, by index.
    pub async fn records(&self, channel: &ChannelId) -> Vec<StoredRecord> {
        let rows = self
            .rows(
                "SELECT idx, epoch, body FROM tally_records WHERE channel = $1 ORDER BY idx",
                &[&channel.0.as_slice()],
            )
            .await;
        rows.iter()
            .map(|r| StoredRecord {
                idx: unsigned(r.get(0)),
                epoch: unsigned(r.get(1)),
                body: r.get(2),
            })
            .collect()
    }

    /// The channel's head row, if it has one.
    pub async fn head(&self, channel: &ChannelId) -> Option<HeadRow> {
        let rows = self
            .rows(
                "SELECT shard, size, epoch FROM tally_heads WHERE channel = $1",
                &[&channel.0.as_slice()],
            )
            .await;
        rows.first().map(|r| HeadRow {
            shard: u32::try_from(r.get::<_, i32>(0)).unwrap_or(u32::MAX),
            size: unsigned(r.get(1)),
            epoch: unsigned(r.get(2)),
        })
    }

    /// The durable head size of `channel` (0 without a row).
    pub async fn size(&self, channel: &ChannelId) -> u64 {
        self.head(channel).await.map_or(0, |h| h.size)
    }

    /// Every lease row (the settlement lease, shard -1, is left out), by shard.
    pub async fn leases(&self) -> Vec<LeaseRow> {
        let rows = self
            .rows(
                "SELECT shard, owner, epoch, \
                        (extract(epoch FROM expires_at) * 1000)::BIGINT, expires_at > now() \
                   FROM tally_leases WHERE shard >= 0 ORDER BY shard",
                &[],
            )
            .await;
        rows.iter()
            .map(|r| LeaseRow {
                shard: u32::try_from(r.get::<_, i32>(0)).unwrap_or(u32::MAX),
                owner: r.get(1),
                epoch: unsigned(r.get(2)),
                expires_ms: r.get(3),
                live: r.get(4),
            })
            .collect()
    }

    /// The base URL node `owner` registered (`tally_members`, schema version 4), if any.
    pub async fn member_url(&self, owner: &str) -> Option<String> {
        let rows = self
            .rows("SELECT url FROM tally_members WHERE node = $1", &[&owner])
            .await;
        rows.first().map(|r| r.get(0))
    }

    /// Sessions idle inside a transaction that has written (it holds row locks: a fenced
    /// commit between its gate and its `COMMIT`, CLUSTER.md §4) for at least `ms`
    /// milliseconds: while one node is paused, such a session can only be its own.
    pub async fn stalled_writers(&self, ms: u32) -> u64 {
        let secs = f64::from(ms) / 1000.0;
        let rows = self
            .rows(
                "SELECT count(*) FROM pg_stat_activity \
                  WHERE state = 'idle in transaction' AND backend_xid IS NOT NULL \
                    AND pid <> pg_backend_pid() AND now() - state_change > make_interval(secs => $1)",
                &[&secs],
            )
            .await;
        rows.first().map_or(0, |r| unsigned(r.get(0)))
    }

    /// One line per other session of the database (state, what it waits on, how long its
    /// transaction has been open, its last statement), for a failure message.
    pub async fn activity(&self) -> String {
        let rows = self
            .rows(
                "SELECT coalesce(state, ''), coalesce(wait_event_type || '/' || wait_event, ''), \
                        coalesce(extract(epoch FROM now() - xact_start)::float8, 0), \
                        left(regexp_replace(coalesce(query, ''), '\\s+', ' ', 'g'), 90) \
                   FROM pg_stat_activity WHERE datname = current_database() \
                    AND pid <> pg_backend_pid() ORDER BY xact_start NULLS LAST",
                &[],
            )
            .await;
        rows.iter()
            .map(|r| {
                let (state, wait, open, query): (String, String, f64, String) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                format!("  [{state}] wait {wait:<24} open {open:>6.2}s  {query}\n")
            })
            .collect()
    }

    /// The lease row of `shard`, if any.
    pub async fn lease(&self, shard: u32) -> Option<LeaseRow> {
        self.leases().await.into_iter().find(|l| l.shard == shard)
    }

    /// How many records of `shard`'s channels were committed under `epoch`.
    pub async fn count_at_epoch(&self, shard: u32, epoch: u64) -> u64 {
        let shard = i32::try_from(shard).unwrap_or(i32::MAX);
        let epoch = i64::try_from(epoch).unwrap_or(i64::MAX);
        let rows = self
            .rows(
                "SELECT count(*) FROM tally_records r JOIN tally_heads h ON h.channel = r.channel \
                  WHERE h.shard = $1 AND r.epoch = $2",
                &[&shard, &epoch],
            )
            .await;
        rows.first().map_or(0, |r| unsigned(r.get(0)))
    }
}
