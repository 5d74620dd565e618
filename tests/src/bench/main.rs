//! `tally-bench`: load benchmark of the metering gateway (issues 3 and 10). In one run it
//! measures, against the same loopback upstream, unmetered proxying (a free route through the
//! same proxy) and metered proxying: requests/s at full load, p50/p99 latency at half of the
//! metered maximum, the added latency, the gateway process's CPU µs per request (from
//! /proc/<pid>/stat of a child process that runs only gateway + upstream), the bench
//! process's CPU per request (the clients' signing, receipt checks and mirrors), the crypto
//! floor (one strict verify + one sign) measured in the same run, the metered ceiling that
//! follows from them, and log bytes per request.
//!
//! It also measures, on the same disk, what one durable append costs with nothing else
//! queued (a raw `fdatasync` of 4 KiB and a one-record group commit of tally-log, p50/p99),
//! so the added latency can be split into the fsync (physics, P8) and everything else.
//!
//! `--scenario durability` (issue 11) runs the half-load comparison twice in one invocation,
//! a gateway in `sync` mode and one in `promise` mode, each against its own unmetered
//! baseline, beside a raw `fdatasync` of 4 KiB on the same disk.
//!
//! `--scenario stream` (issue 12) measures streamed paid responses: SSE events/s metered
//! vs unmetered, and the time to first and last byte that metering adds (stream.rs).
//!
//! `--scenario cluster` (issue 15) compares, on one node, the sled store with the PostgreSQL
//! store (both durability modes), then runs a 3-node cluster on one PostgreSQL behind a
//! round-robin balancer: throughput, CPU per call per node, forwarded share, failover after
//! SIGKILL and SIGSTOP of a shard's owner, and the node count for 100k calls/s (cluster.rs).
//!
//! Usage: `tally-bench [--scenario default|lanes-delay|lanes-load|durability|stream|cluster] [--channels N]
//! [--requests M] [--lanes L] [--upstream-delay-ms D]`. `--requests` is per channel, split
//! over its `L` concurrent sending tasks (protocol v2 lanes, DESIGN.md §7).
//! `TALLY_BENCH_WRAP="valgrind --tool=callgrind ..."` runs the gateway process under the
//! given command (profiling); `TALLY_BENCH_PERF=DIR` profiles the metered run with `perf`;
//! `TALLY_BENCH_ALLOCS=1` counts the gateway's allocations per call; `TALLY_BENCH_LOG=text`
//! makes the gateway log as `tally-gateway` does.

mod allocs;
mod child;
mod cluster;
mod cluster_failover;
mod cluster_lb;
mod cluster_nodes;
mod durability;
mod load;
mod probe;
mod report;
mod stream;

use std::path::PathBuf;

#[global_allocator]
static ALLOCATOR: allocs::Counting = allocs::Counting;

/// What to run; unset values take the scenario's defaults.
#[derive(Default)]
struct Args {
    scenario: Option<String>,
    channels: Option<u32>,
    requests: Option<u32>,
    lanes: Option<u32>,
    delay_ms: Option<u32>,
}

/// The settings of one run, after the scenario's defaults.
pub struct Config {
    pub channels: u32,
    pub requests: u32,
    pub lanes: u32,
    pub delay_ms: u64,
}

pub(crate) fn fail(msg: &str) -> ! {
    eprintln!("tally-bench: {msg}");
    std::process::exit(1)
}

const USAGE: &str =
    "usage: tally-bench [--scenario default|lanes-delay|lanes-load|durability|stream|cluster] \
    [--channels N] [--requests M] [--lanes L] [--upstream-delay-ms D]";

fn parse(args: &[String]) -> Args {
    let mut out = Args::default();
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let Some(v) = it.next() else { fail(USAGE) };
        let n = v.parse::<u32>().ok();
        match (a.as_str(), n) {
            ("--scenario", _) => out.scenario = Some(v.clone()),
            ("--channels", Some(v)) => out.channels = Some(v.clamp(1, 256)),
            ("--requests", Some(v)) => out.requests = Some(v.clamp(1, 100_000)),
            ("--lanes", Some(v)) => out.lanes = Some(v.clamp(1, 64)),
            ("--upstream-delay-ms", Some(v)) => out.delay_ms = Some(v.min(10_000)),
            _ => fail(USAGE),
        }
    }
    out
}

#[tokio::main]
async fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--serve-child") {
        let dir = PathBuf::from(argv.get(2).cloned().unwrap_or_default());
        let channels = argv.get(3).and_then(|v| v.parse().ok()).unwrap_or(16);
        let delay = argv.get(4).and_then(|v| v.parse().ok()).unwrap_or(0);
        let promise = argv.get(5).map(String::as_str) == Some("promise");
        child::serve_child(dir, channels, delay, promise).await;
        return;
    }
    if argv.get(1).map(String::as_str) == Some("--serve-node") {
        let config = PathBuf::from(argv.get(2).cloned().unwrap_or_default());
        let url = argv.get(3).cloned().unwrap_or_default();
        let port = argv.get(4).and_then(|v| v.parse().ok()).unwrap_or(0);
        let delay = argv.get(5).and_then(|v| v.parse().ok()).unwrap_or(0);
        child::serve_node(config, url, port, delay).await;
        return;
    }
    let a = parse(&argv);
    // (channels, requests per channel, lanes, upstream delay) of each scenario.
    let scenario = a.scenario.as_deref().unwrap_or("default");
    let (c, r, l, d) = match scenario {
        "default" | "durability" => (16, 400, 1, 0),
        // Issue 15: sled vs PostgreSQL on one node, then a 3-node cluster.
        "cluster" => (16, 400, 1, 0),
        // Issue 10: one channel, 32 lanes, a 50 ms upstream.
        "lanes-delay" => (1, 1280, 32, 50),
        // Issue 10: 16 channels × 8 lanes, no delay.
        "lanes-load" => (16, 800, 8, 0),
        // Issue 12: 4 channels × 2 lanes of concurrent streams, `requests` streams per task
        // and round; the delay is the small token delay of the latency runs.
        "stream" => (4, 20, 2, 1),
        _ => fail(USAGE),
    };
    let cfg = Config {
        channels: a.channels.unwrap_or(c),
        requests: a.requests.unwrap_or(r),
        lanes: a.lanes.unwrap_or(l),
        delay_ms: u64::from(a.delay_ms.unwrap_or(d)),
    };
    println!("load average at start: {}", probe::loadavg());
    match scenario {
        "lanes-delay" => report::delay_scenario(&cfg).await,
        "durability" => durability::scenario(&cfg).await,
        "stream" => stream::scenario(&cfg).await,
        "cluster" => cluster::scenario(&cfg).await,
        _ => report::load_scenario(&cfg).await,
    }
    println!("load average at end: {}", probe::loadavg());
}
