//! Measurements beside the load: per-process and per-thread CPU from /proc, the crypto floor,
//! the disk's durable-write latency, a one-record tally-log commit, and the gateway's
//! `/metrics` (BENCHMARKS.md, "Metering gateway" and "Lanes (protocol v2)").

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Instant;

use tally_core::{ChannelId, SecretKey};

use crate::fail;

/// USER_HZ on Linux: /proc reports CPU time in these ticks.
pub const TICKS_PER_S: f64 = 100.0;

/// `(user, system)` clock ticks of a process.
pub fn cpu_split(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    (utime, stime)
}

/// `(user, system)` ticks of a process's threads, summed by thread name (`comm`): which
/// part of the gateway process (tokio workers, the log writer, sled's I/O pool) spent them.
pub fn cpu_by_thread(pid: u32) -> BTreeMap<String, (u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        // Thread names with a numeric suffix are one pool.
        let name = stat[open + 1..close]
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
            .to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let u: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
        let s: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        let e = out.entry(name).or_insert((0, 0));
        e.0 += u;
        e.1 += s;
    }
    out
}

/// Voluntary context switches (a thread blocked: a futex wait, an fsync, an empty poll) of a
/// process's threads, summed by thread name: each is one hand-off between threads.
pub fn switches_by_thread(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
        };
        let name = field("Name:")
            .unwrap_or_default()
            .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
            .to_string();
        let n: u64 = field("voluntary_ctxt_switches:")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        *out.entry(name).or_insert(0) += n;
    }
    out
}

/// Context switches per request between two [`switches_by_thread`] samples.
pub fn switch_split(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    n: f64,
) -> String {
    let mut parts = Vec::new();
    let mut total = 0;
    for (name, a) in after {
        let d = a.saturating_sub(before.get(name).copied().unwrap_or(0));
        if d > 0 {
            total += d;
            parts.push(format!("{name} {:.2}", d as f64 / n));
        }
    }
    format!("{:.2} ({})", total as f64 / n, parts.join(", "))
}

/// Per-thread CPU between two [`cpu_by_thread`] samples, in µs per request, as
/// `name user+kernel` items.
pub fn thread_split(
    before: &BTreeMap<String, (u64, u64)>,
    after: &BTreeMap<String, (u64, u64)>,
    requests: f64,
) -> String {
    let mut parts = Vec::new();
    for (name, (u1, s1)) in after {
        let (u0, s0) = before.get(name).copied().unwrap_or((0, 0));
        let (u, s) = (u1.saturating_sub(u0), s1.saturating_sub(s0));
        if u + s > 0 {
            let per = |t: u64| t as f64 / TICKS_PER_S * 1e6 / requests;
            parts.push(format!("{name} {:.1}+{:.1}", per(u), per(s)));
        }
    }
    parts.join(", ")
}

/// Total size of the files under `p`.
pub fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => total += dir_bytes(&e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The `p` quantile of sorted samples (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// p50 and p99 of unsorted samples.
pub fn quantiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

/// The `_sum` and `_count` samples of the gateway's `/metrics`.
pub async fn scrape(url: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    let text = match reqwest::get(format!("{url}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    for line in text.lines() {
        if let Some((name, value)) = line.split_once(' ') {
            if name.ends_with("_sum") || name.ends_with("_count") {
                if let Ok(v) = value.trim().parse::<f64>() {
                    out.insert(name.to_string(), v);
                }
            }
        }
    }
    out
}

/// Mean of a histogram between two scrapes, in µs (0 if nothing was observed).
pub fn mean_us(before: &HashMap<String, f64>, after: &HashMap<String, f64>, name: &str) -> f64 {
    let delta = |suffix: &str| {
        let key = format!("{name}_{suffix}");
        after.get(&key).copied().unwrap_or(0.0) - before.get(&key).copied().unwrap_or(0.0)
    };
    let count = delta("count");
    if count > 0.0 {
        delta("sum") / count * 1e6
    } else {
        0.0
    }
}

/// `write` 4 KiB + `fdatasync`, one at a time: the disk's own durable-write latency.
pub fn fsync_latency(dir: &Path) -> (f64, f64) {
    use std::io::Write;
    if let Err(e) = std::fs::create_dir_all(dir) {
        fail(&format!("probe dir: {e}"));
    }
    let mut f = match std::fs::File::create(dir.join("fsync")) {
        Ok(f) => f,
        Err(e) => fail(&format!("probe file: {e}")),
    };
    let block = [0x5au8; 4096];
    let mut lat = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        if let Err(e) = f.write_all(&block).and_then(|()| f.sync_data()) {
            fail(&format!("probe fsync: {e}"));
        }
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    quantiles(lat)
}

/// One 400-byte record appended to a tally-log store and awaited, one at a time: the least
/// a durable receipt can wait (P8). Also the heap allocations per commit `(count, bytes)`
/// (zeros unless counting is on, `TALLY_BENCH_ALLOCS`).
pub async fn commit_latency(dir: &Path) -> ((f64, f64), (f64, f64)) {
    let store = match tally_log::LogStore::open(dir.join("log")) {
        Ok(s) => s,
        Err(e) => fail(&format!("probe store: {e}")),
    };
    let channel = ChannelId([0x77; 32]);
    let mut lat = Vec::with_capacity(200);
    let a0 = crate::allocs::totals();
    for _ in 0..200 {
        let t = Instant::now();
        if let Err(e) = store.append(channel, vec![vec![0x33u8; 400]]).await {
            fail(&format!("probe append: {e}"));
        }
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let a1 = crate::allocs::totals();
    let allocs = ((a1.0 - a0.0) as f64 / 200.0, (a1.1 - a0.1) as f64 / 200.0);
    (quantiles(lat), allocs)
}

/// CPU time the calling thread has run, ns (`/proc/thread-self/schedstat`, first field): CPU
/// time rather than wall time, so other processes' load does not inflate what is measured.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One strict verify + one sign of a record-sized message, µs of this thread's CPU time: the
/// least CPU one side of a metered call can spend (DESIGN.md §5), measured in the same run as
/// the load. The best of five rounds, so a preempted round's cache misses do not count.
pub fn crypto_floor() -> f64 {
    let key = SecretKey::from_seed(&[3u8; 32]);
    let public = key.public();
    let msg = [5u8; 189];
    let n = 1000;
    let mut best = f64::MAX;
    for round in 0..5u8 {
        let wall = Instant::now();
        let cpu0 = thread_cpu_ns();
        for i in 0..n {
            let mut m = msg;
            m[0] = i as u8;
            m[1] = round;
            let sig = key.sign(&m);
            if public.verify(&m, &sig).is_err() {
                fail("crypto floor: verify failed");
            }
        }
        let us = match (cpu0, thread_cpu_ns()) {
            (Some(a), Some(b)) => (b - a) as f64 / 1e3,
            _ => wall.elapsed().as_secs_f64() * 1e6,
        };
        best = best.min(us / f64::from(n));
    }
    best
}

/// The 1-minute load average, for the report.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The cumulative bucket counts `(le, count)` of histogram `name` on the gateway's
/// `/metrics`, in bucket order (the `+Inf` bucket left out).
pub async fn scrape_buckets(url: &str, name: &str) -> Vec<(f64, f64)> {
    let text = match reqwest::get(format!("{url}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.parse().ok()?, count.trim().parse().ok()?))
        })
        .collect()
}

/// The upper bound (µs) of the bucket holding quantile `q` of what was observed between
/// two bucket scrapes: a p99 "at most this" from a histogram (infinite if beyond the last).
pub fn bucket_quantile_us(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> f64 {
    let delta: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, n - was)
        })
        .collect();
    let total = delta.last().map_or(0.0, |(_, n)| *n);
    if total <= 0.0 {
        return 0.0;
    }
    delta
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map_or(f64::INFINITY, |(le, _)| le * 1e6)
}
