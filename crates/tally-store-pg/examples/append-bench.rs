//! Appends per second and the latency of one fenced group commit (spec/CLUSTER.md §4)
//! against a PostgreSQL 15 this program starts itself (as the tests do: initdb in a
//! temporary directory, 127.0.0.1 only, fsync on). BENCHMARKS.md has the numbers.
//!
//! `cargo run --release -p tally-store-pg --example append-bench [APPENDS]`

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use tally_store_pg::{ChannelId, PgStore};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let appends: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 2000,
    };
    let pg = support::PgServer::start();
    let store = PgStore::connect(&pg.url(), 16).await?;
    store.init().await?;
    println!("PostgreSQL 15, synchronous_commit on, fsync on, one connection, 435-byte records");
    for (n, batch) in [(0u8, 1usize), (1, 64)] {
        let mut channel = ChannelId([n; 32]);
        channel.0[0] = 0;
        channel.0[1] = 0;
        let lease = store
            .acquire(0, "bench", 600_000)
            .await?
            .ok_or("shard 0 is leased")?;
        let record = vec![0xabu8; 435]; // one protocol record's size (PROTOCOL.md §5.3)
        let records = vec![record; batch];
        let mut latencies = Vec::with_capacity(appends);
        let mut size = 0u64;
        let start = Instant::now();
        for _ in 0..appends {
            let t = Instant::now();
            let range = store.append(&lease, &channel, size, &records).await?;
            latencies.push(t.elapsed());
            size = range.end;
        }
        report(batch, appends, start.elapsed(), &mut latencies);
    }
    Ok(())
}

fn report(batch: usize, appends: usize, total: Duration, latencies: &mut [Duration]) {
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let per_s = appends as f64 / total.as_secs_f64();
    println!(
        "batch {batch:>2}: {appends} appends in {:.2} s: {per_s:.0} appends/s, {:.0} records/s, \
         p50 {:.2} ms, p99 {:.2} ms",
        total.as_secs_f64(),
        per_s * batch as f64,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
    );
}
