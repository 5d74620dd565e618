//! `tally-bench`: load benchmark of the metering gateway (issue 3). In one run it measures,
//! against the same loopback upstream, unmetered proxying (a free route through the same
//! proxy) and metered proxying: requests/s at full load, p50/p99 latency at half of the
//! metered maximum, the added latency, the gateway process's CPU µs per request (from
//! /proc/<pid>/stat of a child process that runs only gateway + upstream), the crypto floor
//! (one strict verify + one sign) measured in the same run, and log bytes per request.
//!
//! Usage: `tally-bench [--channels N] [--requests M]` (defaults 16 × 400, bounded).

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

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    utime + stime
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
    all.sort_by(|a, b| a.total_cmp(b));
    let n = all.len() as f64;
    Run {
        rps: n / elapsed,
        p50_us: percentile(&all, 0.5),
        p99_us: percentile(&all, 0.99),
        cpu_us_per_req: cpu * 1e6 / n,
    }
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
    let mut child = match std::process::Command::new(exe)
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
    let metered_max = run(&clients, "/v1/echo", requests, None, pid).await;
    // Half of the metered maximum, paced per client, for both.
    let per_client = metered_max.rps / 2.0 / f64::from(channels);
    let interval = Duration::from_secs_f64(1.0 / per_client.max(1.0));
    let half_requests = requests.min(((per_client * 5.0) as u32).max(50));
    let free_half = run(&clients, "/free", half_requests, Some(interval), pid).await;
    let metered_half = run(&clients, "/v1/echo", half_requests, Some(interval), pid).await;
    let floor = crypto_floor();
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
            "{name}: {:>8.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  gateway CPU {:>6.1} us/req",
            r.rps, r.p50_us, r.p99_us, r.cpu_us_per_req
        );
    }
    println!(
        "added by metering at half load: p50 {:.0} us, p99 {:.0} us",
        metered_half.p50_us - free_half.p50_us,
        metered_half.p99_us - free_half.p99_us
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
