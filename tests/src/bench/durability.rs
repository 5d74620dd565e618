//! Issue 11's numbers in one invocation: the same load against a gateway in `sync` mode and
//! one in `promise` mode, each at full load (its own maximum) and at half of it beside the
//! unmetered baseline of the same gateway, with the gateway's own metering overhead p99 (its
//! `/metrics` histogram), its CPU per metered call against the crypto floor, and a raw
//! `fdatasync` of 4 KiB on the same disk.

use crate::load::print_run;
use crate::probe::{bucket_quantile_us, crypto_floor, fsync_latency, scrape_buckets};
use crate::report::{half_load, start_mode, Bench, FREE, PAID};
use crate::Config;

/// What one mode measured.
pub(crate) struct Mode {
    pub(crate) name: &'static str,
    pub(crate) added_p50: f64,
    pub(crate) added_p99: f64,
    pub(crate) overhead_p99: f64,
    pub(crate) cpu_per_call: f64,
    pub(crate) full_rps: f64,
    pub(crate) free_rps: f64,
}

async fn run_mode(cfg: &Config, promise: bool) -> Mode {
    let name = if promise { "promise" } else { "sync" };
    let b = start_mode(cfg, promise).await;
    let m = measure(&b, cfg, name).await;
    b.stop();
    m
}

/// Full load (metered and unmetered), then half load beside the unmetered baseline of the
/// same gateway, on a started bench; prints the runs under `name`.
pub(crate) async fn measure(b: &Bench, cfg: &Config, name: &'static str) -> Mode {
    let per_task = cfg.requests / cfg.lanes;
    let warm = (20 / cfg.lanes).max(1);
    let _ = b.load(PAID, cfg.lanes, warm).run().await;
    let _ = b.load(FREE, cfg.lanes, warm).run().await;
    let free_max = b.load(FREE, cfg.lanes, per_task).run().await;
    let metered_max = b.load(PAID, cfg.lanes, per_task).run().await;
    let before = scrape_buckets(&b.url, "tally_metering_overhead_seconds").await;
    let (free_half, metered_half, inside, _) = half_load(b, cfg, per_task, metered_max.rps).await;
    let after = scrape_buckets(&b.url, "tally_metering_overhead_seconds").await;
    println!("-- {name} mode");
    print_run("unmetered, full load", &free_max);
    print_run("metered,   full load", &metered_max);
    print_run("unmetered, half load", &free_half);
    print_run("metered,   half load", &metered_half);
    println!("{inside}");
    Mode {
        name,
        added_p50: metered_half.p50_us - free_half.p50_us,
        added_p99: metered_half.p99_us - free_half.p99_us,
        overhead_p99: bucket_quantile_us(&before, &after, 0.99),
        cpu_per_call: metered_max.cpu_us_per_req,
        full_rps: metered_max.rps,
        free_rps: free_max.rps,
    }
}

/// Runs both modes and prints the comparison.
pub async fn scenario(cfg: &Config) {
    println!(
        "tally-bench durability: {} channels x {} lanes, {} requests per channel at full load",
        cfg.channels, cfg.lanes, cfg.requests
    );
    let sync = run_mode(cfg, false).await;
    let promise = run_mode(cfg, true).await;
    let floor = crypto_floor();
    let work = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => crate::fail(&format!("tempdir: {e}")),
    };
    let (fsync_p50, fsync_p99) = fsync_latency(work.path());
    println!("crypto floor (1 strict verify + 1 sign): {floor:.1} us");
    println!("raw fdatasync of 4 KiB on this disk: p50 {fsync_p50:.0} us, p99 {fsync_p99:.0} us");
    for m in [&sync, &promise] {
        println!(
            "{:>7}: added at half load p50 {:.0} us, p99 {:.0} us; gateway metering overhead p99 <= {:.0} us \
             (/metrics bucket); gateway CPU per metered call {:.1} us = {:.2}x the crypto floor; \
             full load {:.0} req/s metered = {:.3}x unmetered",
            m.name,
            m.added_p50,
            m.added_p99,
            m.overhead_p99,
            m.cpu_per_call,
            m.cpu_per_call / floor,
            m.full_rps,
            m.full_rps / m.free_rps
        );
    }
    println!(
        "sync vs the disk: added p50 - fdatasync p50 = {:.0} us (target <= 300), added p99 - fdatasync p99 = {:.0} us (target <= 1000)",
        sync.added_p50 - fsync_p50,
        sync.added_p99 - fsync_p99
    );
}
