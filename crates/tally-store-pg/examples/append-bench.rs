//! Appends per second and the latency of one durable append, PostgreSQL (one fenced group
//! commit per append, spec/CLUSTER.md §4) against the sled store in the same run, both
//! through `tally_log::LogBackend`. PostgreSQL 15 is started by this program as the tests do
//! (initdb in a temporary directory, 127.0.0.1 only, fsync on); the sled store lives in a
//! temporary directory on the same disk. BENCHMARKS.md has the numbers.
//!
//! `cargo run --release -p tally-store-pg --example append-bench [APPENDS]`

#[path = "../tests/support/mod.rs"]
mod support;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, Instant};

use tally_log::LogBackend;
use tally_store_pg::{ChannelId, LeasedLog, PgStore};

/// One protocol record's size (PROTOCOL.md §5.3).
const RECORD_BYTES: usize = 435;

/// (label, channels appending at once, records per append).
const SCENARIOS: [(&str, usize, usize); 3] = [
    ("1 channel, 1 record per append", 1, 1),
    ("1 channel, 64 records per append", 1, 64),
    ("16 channels at once, 1 record per append", 16, 1),
];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let appends: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 2000,
    };
    let pg = support::PgServer::start();
    let store = PgStore::connect(&pg.url(), 1).await?;
    store.init().await?;
    let lease = store
        .acquire(0, "bench", 3_600_000)
        .await?
        .ok_or("shard 0 is leased")?;
    let pg_log = LeasedLog::new(&store, lease);
    let dir = tempfile::tempdir()?;
    let sled_log = tally_log::LogStore::open(dir.path().join("log"))?;
    println!(
        "{appends} appends per channel; {RECORD_BYTES}-byte records; PostgreSQL 15 (fsync on, \
         synchronous_commit on, one connection) and sled (group commit, flush per batch)"
    );
    println!("| scenario | store | appends/s | records/s | p50 | p99 |");
    println!("|---|---|---:|---:|---:|---:|");
    for (i, (label, channels, batch)) in SCENARIOS.into_iter().enumerate() {
        let base = (i * 32) as u8;
        let sled = run(&sled_log, base, channels, batch, appends).await?;
        let pg = run(&pg_log, base, channels, batch, appends).await?;
        for (name, s) in [("sled", &sled), ("PostgreSQL", &pg)] {
            println!(
                "| {label} | {name} | {:.0} | {:.0} | {:.2} ms | {:.2} ms |",
                s.per_s,
                s.per_s * batch as f64,
                s.p50.as_secs_f64() * 1e3,
                s.p99.as_secs_f64() * 1e3
            );
        }
        println!(
            "|   | PostgreSQL / sled | {:.2}x | | {:.1}x | {:.1}x |",
            pg.per_s / sled.per_s,
            pg.p50.as_secs_f64() / sled.p50.as_secs_f64(),
            pg.p99.as_secs_f64() / sled.p99.as_secs_f64()
        );
    }
    Ok(())
}

/// One writer's work, borrowing the backend.
type Task<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

struct Stats {
    per_s: f64,
    p50: Duration,
    p99: Duration,
}

/// `channels` writers (channel ids from `base`, all in shard 0 of a 1-shard cluster), each
/// appending `appends` times `batch` records in sequence, all at once in this task.
async fn run<B: LogBackend + Sync>(
    log: &B,
    base: u8,
    channels: usize,
    batch: usize,
    appends: usize,
) -> Result<Stats, Box<dyn std::error::Error>> {
    let records = vec![vec![0xab_u8; RECORD_BYTES]; batch];
    let start = Instant::now();
    let writers: Vec<Task<'_, Result<Vec<Duration>, B::Error>>> = (0..channels)
        .map(|c| {
            let channel = ChannelId([base + c as u8; 32]);
            let records = records.clone();
            Box::pin(async move {
                let mut latencies = Vec::with_capacity(appends);
                let mut size = 0;
                for _ in 0..appends {
                    let t = Instant::now();
                    size = log.append(&channel, size, records.clone()).await?.end;
                    latencies.push(t.elapsed());
                }
                Ok(latencies)
            }) as Task<'_, _>
        })
        .collect();
    let mut latencies = Vec::new();
    for done in join_all(writers).await {
        latencies.extend(done?);
    }
    let total = start.elapsed();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    Ok(Stats {
        per_s: latencies.len() as f64 / total.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
    })
}

/// Polls every future in this task until all are done (a `join_all` without a crate: the
/// writers borrow the backend, so they cannot be spawned).
async fn join_all<T>(mut futures: Vec<Task<'_, T>>) -> Vec<T> {
    let mut out: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futures.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *slot = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}
