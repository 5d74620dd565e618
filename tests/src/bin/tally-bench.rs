//! `tally-bench`: load benchmark of the metering gateway (issue 3). In one run it measures,
//! against the same loopback upstream, unmetered proxying (a free route through the same
//! proxy) and metered proxying: requests/s at full load, p50/p99 latency at half of the
//! metered maximum, the added latency, the gateway process's CPU µs per request (from
//! /proc/<pid>/stat of a child process that runs only gateway + upstream), the crypto floor
//! (one strict verify + one sign) measured in the same run, and log bytes per request.
//!
//! It also measures, on the same disk, what one durable append costs with nothing else
//! queued (a raw `fdatasync` of 4 KiB and a one-record group commit of tally-log, p50/p99),
//! so the added latency can be split into the fsync (physics, P8) and everything else.
//!
//! Usage: `tally-bench [--channels N] [--requests M]` (defaults 16 × 400, bounded).
//! `TALLY_BENCH_WRAP="valgrind --tool=callgrind ..."` runs the gateway process under the
//! given command (profiling).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy::signers::local::PrivateKeySigner;
use tally_core::{ChannelId, SecretKey};
use tally_e2e::*;

fn channel_keys(i: u32) -> (SecretKey, PrivateKeySigner, ChannelId) {
    let mut seed = [7u8; 32];
    seed[..4].copy_from_slice(&i.to_le_bytes());
    let session = SecretKey::from_seed(&seed);
    seed[31] = 1;
    let signer = match PrivateKeySigner::from_bytes(&alloy::primitives::B256::from(seed)) {
        Ok(s) => s,
        Err(e) => fail(&format!("checkpoint key: {e}")),
    };
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&i.to_le_bytes());
    id[4] = 0x42;
    (session, signer, ChannelId(id))
}

fn fail(msg: &str) -> ! {
    eprintln!("tally-bench: {msg}");
    std::process::exit(1)
}

/// Child mode: serve upstream + gateway, print the gateway address, run until stdin closes.
async fn serve_child(dir: PathBuf, channels: u32) {
    let funding = MemFunding::default();
    for i in 0..channels {
        let (_, signer, id) = channel_keys(i);
        funding.open(id, signer.address(), u128::MAX / 4);
    }
    let upstream = spawn_upstream().await;
    let mut s = settings(&dir);
    s.credit_limit = u128::MAX / 8;
    s.checkpoint.every_records = 0;
    s.checkpoint.every_seconds = 0;
    s.checkpoint.every_amount = tally_http::Amount(0);
    let key = SecretKey::from_seed(&[9u8; 32]);
    let (_gw, server) = spawn_gateway(s, &key, &funding, &upstream).await;
    println!("{}", server.url());
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    })
    .await;
    server.stop().await;
    upstream.stop().await;
}

/// `(user, system)` clock ticks of a process.
fn cpu_split(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    (utime, stime)
}

/// `(user, system)` ticks of a process's threads, summed by thread name (`comm`): which
/// part of the gateway process (tokio workers, the log writer, sled's I/O pool) spent them.
fn cpu_by_thread(pid: u32) -> std::collections::BTreeMap<String, (u64, u64)> {
    let mut out = std::collections::BTreeMap::new();
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

fn cpu_ticks(pid: u32) -> u64 {
    let (u, s) = cpu_split(pid);
    u + s
}

fn dir_bytes(p: &Path) -> u64 {
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

struct Run {
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    cpu_us_per_req: f64,
    sys_us_per_req: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs `requests` per client on every client concurrently; `interval` paces each client.
async fn run(
    clients: &[tally_client::Client],
    path: &'static str,
    requests: u32,
    interval: Option<Duration>,
    child: u32,
) -> Run {
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let cpu0 = cpu_ticks(child);
    let sys0 = cpu_split(child).1;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(requests as usize);
            let begin = Instant::now();
            for i in 0..requests {
                if let Some(iv) = interval {
                    let due = begin + iv * i;
                    tokio::time::sleep_until(due.into()).await;
                }
                let t = Instant::now();
                match c.post(path).body("payload").send().await {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => fail(&format!("{path}: status {}", r.status)),
                    Err(e) => fail(&format!("{path}: {e}")),
                }
                lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        match t.await {
            Ok(l) => all.extend(l),
            Err(e) => fail(&format!("client task: {e}")),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(child) - cpu0) as f64 / ticks_per_s;
    let sys = (cpu_split(child).1 - sys0) as f64 / ticks_per_s;
    all.sort_by(|a, b| a.total_cmp(b));
    let n = all.len() as f64;
    Run {
        rps: n / elapsed,
        p50_us: percentile(&all, 0.5),
        p99_us: percentile(&all, 0.99),
        cpu_us_per_req: cpu * 1e6 / n,
        sys_us_per_req: sys * 1e6 / n,
    }
}

/// The `_sum` and `_count` samples of the gateway's `/metrics`.
async fn scrape(url: &str) -> std::collections::HashMap<String, f64> {
    let mut out = std::collections::HashMap::new();
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

fn quantiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

/// `write` 4 KiB + `fdatasync`, one at a time: the disk's own durable-write latency.
fn fsync_latency(dir: &Path) -> (f64, f64) {
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
/// a durable receipt can wait (P8).
async fn commit_latency(dir: &Path) -> (f64, f64) {
    let store = match tally_log::LogStore::open(dir.join("log")) {
        Ok(s) => s,
        Err(e) => fail(&format!("probe store: {e}")),
    };
    let channel = ChannelId([0x77; 32]);
    let mut lat = Vec::with_capacity(200);
    for _ in 0..200 {
        let t = Instant::now();
        if let Err(e) = store.append(channel, vec![vec![0x33u8; 400]]).await {
            fail(&format!("probe append: {e}"));
        }
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    quantiles(lat)
}

fn crypto_floor() -> f64 {
    let key = SecretKey::from_seed(&[3u8; 32]);
    let public = key.public();
    let msg = [5u8; 189];
    let n = 3000;
    let start = Instant::now();
    for i in 0..n {
        let mut m = msg;
        m[0] = i as u8;
        let sig = key.sign(&m);
        if public.verify(&m, &sig).is_err() {
            fail("crypto floor: verify failed");
        }
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve-child") {
        let dir = PathBuf::from(args.get(2).cloned().unwrap_or_default());
        let channels = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(16);
        serve_child(dir, channels).await;
        return;
    }
    let mut channels = 16u32;
    let mut requests = 400u32;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match (a.as_str(), it.next().and_then(|v| v.parse::<u32>().ok())) {
            ("--channels", Some(v)) => channels = v.clamp(1, 256),
            ("--requests", Some(v)) => requests = v.clamp(1, 20_000),
            _ => fail("usage: tally-bench [--channels N] [--requests M]"),
        }
    }
    let work = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => fail(&format!("tempdir: {e}")),
    };
    let gdir = work.path().join("gateway");
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => fail(&format!("current exe: {e}")),
    };
    let wrap: Vec<String> = std::env::var("TALLY_BENCH_WRAP")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let mut command = match wrap.split_first() {
        Some((program, args)) => {
            let mut c = std::process::Command::new(program);
            c.args(args).arg(&exe);
            c
        }
        None => std::process::Command::new(&exe),
    };
    let mut child = match command
        .arg("--serve-child")
        .arg(&gdir)
        .arg(channels.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => fail(&format!("spawning the gateway process: {e}")),
    };
    let pid = child.id();
    let url = {
        use std::io::BufRead;
        let mut line = String::new();
        let out = child.stdout.take().unwrap_or_else(|| fail("child stdout"));
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        line.trim().to_string()
    };
    if url.is_empty() {
        fail("the gateway process did not start");
    }
    let mut clients = Vec::new();
    for i in 0..channels {
        let (session, signer, id) = channel_keys(i);
        let cfg = tally_client::ClientConfig::new(
            url.clone(),
            work.path().join(format!("client{i}")),
            id,
            session,
            signer,
        );
        match tally_client::Client::connect(cfg).await {
            Ok(c) => clients.push(c),
            Err(e) => fail(&format!("client {i}: {e}")),
        }
    }
    // Warm-up, then full-load runs.
    let _ = run(&clients, "/v1/echo", 20, None, pid).await;
    let _ = run(&clients, "/free", 20, None, pid).await;
    let free_max = run(&clients, "/free", requests, None, pid).await;
    let threads0 = cpu_by_thread(pid);
    let metered_max = run(&clients, "/v1/echo", requests, None, pid).await;
    let threads1 = cpu_by_thread(pid);
    // Half of the metered maximum, paced per client, for both.
    let per_client = metered_max.rps / 2.0 / f64::from(channels);
    let interval = Duration::from_secs_f64(1.0 / per_client.max(1.0));
    let half_requests = requests.min(((per_client * 5.0) as u32).max(50));
    let free_half = run(&clients, "/free", half_requests, Some(interval), pid).await;
    let before = scrape(&url).await;
    let metered_half = run(&clients, "/v1/echo", half_requests, Some(interval), pid).await;
    let after = scrape(&url).await;
    let mean_us = |name: &str| {
        let sum = after.get(&format!("{name}_sum")).copied().unwrap_or(0.0)
            - before.get(&format!("{name}_sum")).copied().unwrap_or(0.0);
        let count = after.get(&format!("{name}_count")).copied().unwrap_or(0.0)
            - before.get(&format!("{name}_count")).copied().unwrap_or(0.0);
        if count > 0.0 {
            sum / count * 1e6
        } else {
            0.0
        }
    };
    let gw_commit = mean_us("tally_log_commit_seconds");
    let gw_overhead = mean_us("tally_metering_overhead_seconds");
    let gw_total = mean_us("tally_metered_request_seconds");
    let floor = crypto_floor();
    let probe = work.path().join("probe");
    let (sync_p50, sync_p99) = fsync_latency(&probe);
    let (commit_p50, commit_p99) = commit_latency(&probe).await;
    let records = u64::from(channels) * u64::from(20 + requests + half_requests);
    let log_bytes = dir_bytes(&gdir.join("log"));
    let _ = child.stdin.take();
    let _ = child.wait();
    println!("tally-bench: {channels} channels, {requests} requests each at full load, {half_requests} paced at half load");
    println!("crypto floor (1 strict verify + 1 sign): {floor:.1} us");
    for (name, r) in [
        ("unmetered, full load", &free_max),
        ("metered,   full load", &metered_max),
        ("unmetered, half load", &free_half),
        ("metered,   half load", &metered_half),
    ] {
        println!(
            "{name}: {:>8.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  gateway CPU {:>6.1} us/req ({:.1} in the kernel)",
            r.rps, r.p50_us, r.p99_us, r.cpu_us_per_req, r.sys_us_per_req
        );
    }
    println!(
        "added by metering at half load: p50 {:.0} us, p99 {:.0} us",
        metered_half.p50_us - free_half.p50_us,
        metered_half.p99_us - free_half.p99_us
    );
    println!(
        "one durable append alone on this disk: fdatasync(4 KiB) p50 {sync_p50:.0} us, p99 {sync_p99:.0} us; \
         tally-log 1-record group commit p50 {commit_p50:.0} us, p99 {commit_p99:.0} us"
    );
    println!(
        "added p50 at half load minus one group commit (p50): {:.0} us of code and queueing",
        metered_half.p50_us - free_half.p50_us - commit_p50
    );
    println!(
        "inside the gateway at half load (means, /metrics): metered request {gw_total:.0} us, \
         of which metering {gw_overhead:.0} us, of which waiting for the durable group commit {gw_commit:.0} us"
    );
    let metered_n = f64::from(channels) * f64::from(requests);
    let mut parts = Vec::new();
    for (name, (u1, s1)) in &threads1 {
        let (u0, s0) = threads0.get(name).copied().unwrap_or((0, 0));
        let (u, s) = (u1.saturating_sub(u0), s1.saturating_sub(s0));
        if u + s > 0 {
            parts.push(format!(
                "{name} {:.1}+{:.1}",
                u as f64 * 1e4 / metered_n,
                s as f64 * 1e4 / metered_n
            ));
        }
    }
    println!(
        "gateway CPU per metered call at full load by thread, user+kernel us: {}",
        parts.join(", ")
    );
    let cpu_added = metered_max.cpu_us_per_req - free_max.cpu_us_per_req;
    println!(
        "gateway CPU added per metered call: {cpu_added:.1} us = {:.2}x the crypto floor",
        cpu_added / floor
    );
    println!(
        "log bytes per record: {:.0} (sled files {} bytes / {records} records)",
        log_bytes as f64 / records as f64,
        log_bytes
    );
}
