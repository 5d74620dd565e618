//! The log's numbers for BENCHMARKS.md (DESIGN.md §5): durable appends per second through the
//! group-committing writer, against plain sled batches of the same bytes in the same run;
//! inclusion and consistency proof generation p50/p99 at the log's size; verification time;
//! bytes on disk per record.
//!
//! `cargo bench -p tally-log --bench log -- --records 1000000`
//!
//! Records are 400 bytes, the size of a v1 record (spec/PROTOCOL.md §5.3); their content does
//! not matter to the store, so they are cheap deterministic bytes rather than signed records.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use tally_core::ChannelId;
use tally_log::{
    verify_consistency, verify_inclusion, Blake3Hasher, LogStore, StoreConfig, TreeHasher,
};

const RECORD_LEN: usize = 400;

fn record(i: u64) -> Vec<u8> {
    let mut r = vec![0u8; RECORD_LEN];
    r[..8].copy_from_slice(&i.to_le_bytes());
    r[8..16].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    r
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let records: u64 = args
        .iter()
        .position(|a| a == "--records")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let samples = 20_000usize;
    let dir = tempfile::tempdir()?;
    println!("records: {records} x {RECORD_LEN} bytes, one channel, group commit");

    // Baseline: the same bytes into sled with one batch + flush per 4096, no Merkle work.
    let baseline_n = records.min(500_000);
    {
        let db = sled::open(dir.path().join("baseline"))?;
        let tree = db.open_tree("raw")?;
        let t = Instant::now();
        let mut i = 0u64;
        while i < baseline_n {
            let mut batch = sled::Batch::default();
            for j in i..(i + 4096).min(baseline_n) {
                batch.insert(&j.to_be_bytes(), record(j));
            }
            tree.apply_batch(batch)?;
            db.flush()?;
            i += 4096;
        }
        let rate = baseline_n as f64 / t.elapsed().as_secs_f64();
        println!(
            "baseline sled batch+flush (no Merkle), {baseline_n} records: {rate:.0} records/s"
        );
    }

    // tally: one producer keeps up to 4096 single-record appends in flight.
    // A tile budget that holds every tile (64 bytes of hashes per record) keeps proof reads
    // off the disk; the records themselves need not fit in memory.
    let config = StoreConfig {
        tile_cache_bytes: (records as usize * 64).max(1 << 20),
        ..StoreConfig::default()
    };
    println!(
        "sled cache: {} MiB, tile cache: {} MiB",
        config.cache_bytes >> 20,
        config.tile_cache_bytes >> 20
    );
    let store = LogStore::open_with(dir.path().join("tally"), Blake3Hasher, config)?;
    let channel = ChannelId([7; 32]);
    let t = Instant::now();
    let mut inflight = std::collections::VecDeque::new();
    for i in 0..records {
        inflight.push_back(store.append(channel, vec![record(i)]));
        if inflight.len() >= 4096 {
            if let Some(ticket) = inflight.pop_front() {
                ticket.wait()?;
            }
        }
        if i > 0 && i % 1_000_000 == 0 {
            eprintln!(
                "  appended {i} ({:.0}/s)",
                i as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    for ticket in inflight {
        ticket.wait()?;
    }
    let elapsed = t.elapsed();
    let rate = records as f64 / elapsed.as_secs_f64();
    println!(
        "tally durable appends (1 record per append, group commit): {rate:.0} records/s ({:.1} s)",
        elapsed.as_secs_f64()
    );
    let head = store.head(&channel).ok_or("no head")?;
    assert_eq!(head.size, records);

    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let n = head.size;
    // Warm the cache the way a running server's would be.
    for _ in 0..samples {
        store.inclusion_proof(&channel, rng.gen_range(0..n), n)?;
    }
    let mut times = Vec::with_capacity(samples);
    let mut proofs = Vec::with_capacity(samples);
    for _ in 0..samples {
        let index = rng.gen_range(0..n);
        let t = Instant::now();
        let p = store.inclusion_proof(&channel, index, n)?;
        times.push(t.elapsed());
        proofs.push((index, p));
    }
    times.sort();
    let len = proofs.iter().map(|(_, p)| p.len()).max().unwrap_or(0);
    println!(
        "inclusion proof generation at {n}: p50 {:.1} us, p99 {:.1} us, up to {len} hashes",
        us(percentile(&times, 0.5)),
        us(percentile(&times, 0.99))
    );

    let mut vt = Vec::with_capacity(samples);
    for (index, p) in &proofs {
        let leaf = Blake3Hasher.leaf(&record(*index));
        let t = Instant::now();
        verify_inclusion(&Blake3Hasher, *index, n, &leaf, p, &head.root)?;
        vt.push(t.elapsed());
    }
    vt.sort();
    println!(
        "inclusion proof verification: p50 {:.1} us, p99 {:.1} us",
        us(percentile(&vt, 0.5)),
        us(percentile(&vt, 0.99))
    );

    let mut ct = Vec::with_capacity(samples);
    let mut cproofs = Vec::with_capacity(samples / 10);
    for k in 0..samples {
        let old = rng.gen_range(1..=n);
        let t = Instant::now();
        let p = store.consistency_proof(&channel, old, n)?;
        ct.push(t.elapsed());
        if k % 10 == 0 {
            cproofs.push((old, p));
        }
    }
    ct.sort();
    println!(
        "consistency proof generation to {n}: p50 {:.1} us, p99 {:.1} us",
        us(percentile(&ct, 0.5)),
        us(percentile(&ct, 0.99))
    );
    let mut cvt = Vec::with_capacity(cproofs.len());
    for (old, p) in &cproofs {
        let old_root = store.root_at(&channel, *old)?;
        let t = Instant::now();
        verify_consistency(&Blake3Hasher, *old, n, p, &old_root, &head.root)?;
        cvt.push(t.elapsed());
    }
    cvt.sort();
    println!(
        "consistency proof verification: p50 {:.1} us, p99 {:.1} us",
        us(percentile(&cvt, 0.5)),
        us(percentile(&cvt, 0.99))
    );

    let mut rt = Vec::with_capacity(samples);
    for _ in 0..samples {
        let size = rng.gen_range(1..=n);
        let t = Instant::now();
        store.root_at(&channel, size)?;
        rt.push(t.elapsed());
    }
    rt.sort();
    println!(
        "historical root at a random size: p50 {:.1} us, p99 {:.1} us",
        us(percentile(&rt, 0.5)),
        us(percentile(&rt, 0.99))
    );

    let disk = store.size_on_disk()?;
    println!(
        "bytes on disk: {disk} ({:.0} per record of {RECORD_LEN} bytes)",
        disk as f64 / records as f64
    );
    Ok(())
}
