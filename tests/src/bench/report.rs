//! The scenarios: what is run, in which order, and what is printed (BENCHMARKS.md).

use std::time::Duration;

use crate::load::{print_run, Load, Run};
use crate::probe::{
    commit_latency, cpu_by_thread, crypto_floor, dir_bytes, fsync_latency, mean_us, scrape,
    switch_split, switches_by_thread, thread_split,
};
use crate::{child, fail, Config};

pub(crate) const PAID: &str = "/v1/echo";
pub(crate) const FREE: &str = "/free";

pub(crate) struct Bench {
    work: tempfile::TempDir,
    gdir: std::path::PathBuf,
    gateway: child::Gateway,
    pub(crate) pid: u32,
    pub(crate) url: String,
    /// The upstream's URL (unmetered baselines straight to it).
    pub(crate) upstream: String,
    pub(crate) clients: Vec<tally_client::Client>,
}

async fn start(cfg: &Config) -> Bench {
    start_mode(cfg, false).await
}

/// [`start`] with the gateway in promise mode if `promise`.
pub(crate) async fn start_mode(cfg: &Config, promise: bool) -> Bench {
    let work = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => fail(&format!("tempdir: {e}")),
    };
    let gdir = work.path().join("gateway");
    let gateway = child::start(&gdir, cfg.channels, cfg.delay_ms, promise);
    let (pid, url, upstream) = (gateway.pid, gateway.url.clone(), gateway.upstream.clone());
    let clients = child::clients(&url, work.path(), cfg.channels, cfg.lanes).await;
    Bench {
        work,
        gdir,
        gateway,
        pid,
        url,
        upstream,
        clients,
    }
}

impl Bench {
    /// A bench over a gateway process started some other way (a `tally serve` node,
    /// cluster.rs) and its clients; `work` holds their files.
    pub(crate) fn from_parts(
        work: tempfile::TempDir,
        gateway: child::Gateway,
        clients: Vec<tally_client::Client>,
    ) -> Bench {
        Bench {
            gdir: work.path().join("gateway"),
            pid: gateway.pid,
            url: gateway.url.clone(),
            upstream: gateway.upstream.clone(),
            work,
            gateway,
            clients,
        }
    }

    pub(crate) fn load(&self, path: &'static str, lanes: u32, per_task: u32) -> Load<'_> {
        Load {
            clients: &self.clients,
            path,
            lanes,
            per_task: per_task.max(1),
            interval: None,
            child: self.pid,
        }
    }

    pub(crate) fn stop(self) {
        self.gateway.stop();
    }

    /// Stops the gateway cleanly (SIGTERM first: a cluster node releases its leases).
    pub(crate) fn terminate(self) {
        self.gateway.terminate();
    }
}

/// Issue 10 (a): one channel, many lanes, a slow upstream. The paid rate with all lanes,
/// beside the unmetered rate at the same concurrency and the paid rate with one lane (what
/// protocol v1 allowed), all in one run.
pub async fn delay_scenario(cfg: &Config) {
    let b = start(cfg).await;
    let per_task = cfg.requests / cfg.lanes;
    let _ = b.load(PAID, cfg.lanes, 2).run().await;
    let _ = b.load(FREE, cfg.lanes, 2).run().await;
    let free = b.load(FREE, cfg.lanes, per_task).run().await;
    let paid = b.load(PAID, cfg.lanes, per_task).run().await;
    let one_lane = b.load(PAID, 1, 40).run().await;
    b.stop();
    let lanes = cfg.channels * cfg.lanes;
    println!(
        "tally-bench lanes-delay: {} channel(s) x {} lanes, upstream delay {} ms, {} requests per channel",
        cfg.channels, cfg.lanes, cfg.delay_ms, cfg.requests
    );
    print_run("unmetered, all lanes", &free);
    print_run("metered,   all lanes", &paid);
    print_run("metered,   one lane ", &one_lane);
    let bound = f64::from(lanes) * 1000.0 / (cfg.delay_ms.max(1) as f64);
    println!(
        "paid req/s with {lanes} lanes: {:.0} = {:.2}x unmetered at the same concurrency, {:.1}x one lane \
         ({:.1} req/s); the upstream's own bound is {bound:.0} req/s (lanes / delay)",
        paid.rps,
        paid.rps / free.rps,
        paid.rps / one_lane.rps,
        one_lane.rps
    );
}

/// The full-load runs, unmetered then metered, and the gateway-side breakdown of the metered
/// one (CPU and context switches by thread, allocations), as report lines.
async fn full_load(b: &mut Bench, cfg: &Config, per_task: u32) -> (Run, Run, Vec<String>) {
    let a0 = b.gateway.allocs();
    let s0 = switches_by_thread(b.pid);
    let free = b.load(FREE, cfg.lanes, per_task).run().await;
    let s1 = switches_by_thread(b.pid);
    let a1 = b.gateway.allocs();
    let threads0 = cpu_by_thread(b.pid);
    let profiling = Profile::start(b.pid);
    let metered = b.load(PAID, cfg.lanes, per_task).run().await;
    profiling.stop();
    let threads1 = cpu_by_thread(b.pid);
    let s2 = switches_by_thread(b.pid);
    let a2 = b.gateway.allocs();
    let mut lines = vec![
        format!(
            "gateway CPU per metered call at full load by thread, user+kernel us: {}",
            thread_split(&threads0, &threads1, metered.n)
        ),
        format!(
            "gateway voluntary context switches per call at full load: unmetered {}; metered {}",
            switch_split(&s0, &s1, free.n),
            switch_split(&s1, &s2, metered.n)
        ),
    ];
    if a2.0 > 0 {
        let per = |(c0, b0): (u64, u64), (c1, b1): (u64, u64), n: f64| {
            ((c1 - c0) as f64 / n, (b1 - b0) as f64 / n)
        };
        let (fc, fb) = per(a0, a1, free.n);
        let (mc, mb) = per(a1, a2, metered.n);
        lines.push(format!(
            "gateway heap allocations per call at full load: unmetered {fc:.0} ({fb:.0} bytes), \
             metered {mc:.0} ({mb:.0} bytes)"
        ));
    }
    (free, metered, lines)
}

/// Half of the metered maximum, paced per task, unmetered then metered; the metered run's
/// means inside the gateway (`/metrics`) as a report line; and the requests per task.
pub(crate) async fn half_load(
    b: &Bench,
    cfg: &Config,
    per_task: u32,
    max_rps: f64,
) -> (Run, Run, String, u32) {
    let tasks = f64::from(cfg.channels * cfg.lanes);
    let per_task_rate = (max_rps / 2.0 / tasks).max(0.5);
    let interval = Duration::from_secs_f64(1.0 / per_task_rate);
    let half_per_task = ((per_task_rate * 5.0) as u32)
        .max(50 / cfg.lanes)
        .clamp(3, per_task.max(3));
    let mut half = b.load(FREE, cfg.lanes, half_per_task);
    half.interval = Some(interval);
    let free = half.run().await;
    let before = scrape(&b.url).await;
    half.path = PAID;
    let metered = half.run().await;
    let after = scrape(&b.url).await;
    let line = format!(
        "inside the gateway at half load (means, /metrics): metered request {:.0} us, \
         of which metering {:.0} us, of which waiting for the durable group commit {:.0} us",
        mean_us(&before, &after, "tally_metered_request_seconds"),
        mean_us(&before, &after, "tally_metering_overhead_seconds"),
        mean_us(&before, &after, "tally_log_commit_seconds"),
    );
    (free, metered, line, half_per_task)
}

/// What one durable append costs on this disk with nothing else queued, as report lines.
async fn disk_probes(dir: &std::path::Path) -> Vec<String> {
    let (sync_p50, sync_p99) = fsync_latency(dir);
    let counting = std::env::var_os("TALLY_BENCH_ALLOCS").is_some();
    if counting {
        crate::allocs::enable();
    }
    let ((commit_p50, commit_p99), allocs) = commit_latency(dir).await;
    let mut lines = vec![format!(
        "one durable append alone on this disk: fdatasync(4 KiB) p50 {sync_p50:.0} us, p99 {sync_p99:.0} us; \
         tally-log 1-record group commit p50 {commit_p50:.0} us, p99 {commit_p99:.0} us"
    )];
    if counting {
        lines.push(format!(
            "heap allocations of one 1-record tally-log group commit (probe, nothing else queued): \
             {:.0} ({:.0} bytes)",
            allocs.0, allocs.1
        ));
    }
    lines
}

/// The default scenario and issue 10 (b) and (c): full-load throughput metered and
/// unmetered, the ceiling, the gateway's CPU against the crypto floor, the latency added at
/// half load, and the probes that decompose it.
pub async fn load_scenario(cfg: &Config) {
    let mut b = start(cfg).await;
    let per_task = cfg.requests / cfg.lanes;
    let warm = (20 / cfg.lanes).max(1);
    let _ = b.load(PAID, cfg.lanes, warm).run().await;
    let _ = b.load(FREE, cfg.lanes, warm).run().await;
    let (free_max, metered_max, breakdown) = full_load(&mut b, cfg, per_task).await;
    let (free_half, metered_half, inside, half_per_task) =
        half_load(&b, cfg, per_task, metered_max.rps).await;
    let floor = crypto_floor();
    let disk = disk_probes(&b.work.path().join("probe")).await;
    let records = f64::from(cfg.channels * cfg.lanes * (warm + per_task + half_per_task));
    let log_bytes = dir_bytes(&b.gdir.join("log"));
    b.stop();
    println!(
        "tally-bench: {} channels x {} lanes, {} requests each at full load, {} per lane paced at half load, upstream delay {} ms",
        cfg.channels, cfg.lanes, cfg.lanes * per_task, half_per_task, cfg.delay_ms
    );
    println!("crypto floor (1 strict verify + 1 sign): {floor:.1} us");
    print_run("unmetered, full load", &free_max);
    print_run("metered,   full load", &metered_max);
    print_run("unmetered, half load", &free_half);
    print_run("metered,   half load", &metered_half);
    throughput(&free_max, &metered_max, floor);
    println!(
        "added by metering at half load: p50 {:.0} us, p99 {:.0} us",
        metered_half.p50_us - free_half.p50_us,
        metered_half.p99_us - free_half.p99_us
    );
    for line in disk.iter().chain([&inside]).chain(&breakdown) {
        println!("{line}");
    }
    let cpu_added = metered_max.cpu_us_per_req - free_max.cpu_us_per_req;
    println!(
        "gateway CPU per metered call: {:.1} us = {:.2}x the crypto floor; added over unmetered: \
         {cpu_added:.1} us = {:.2}x the crypto floor",
        metered_max.cpu_us_per_req,
        metered_max.cpu_us_per_req / floor,
        cpu_added / floor
    );
    println!(
        "log bytes per record: {:.0} (sled files {log_bytes} bytes / {records} records)",
        log_bytes as f64 / records
    );
}

/// Metered against unmetered throughput, and the ceiling: with the machine's cores shared by
/// gateway and clients, a metered request costs at least the unmetered request's CPU (both
/// processes) plus the crypto floor on each side (the gateway verifies and signs, the client
/// signs and verifies), so metered/unmetered ≤ u / (u + 2·floor).
fn throughput(free: &Run, metered: &Run, floor: f64) {
    let u = free.total_us_per_req();
    let ceiling = u / (u + 2.0 * floor);
    let ratio = metered.rps / free.rps;
    println!(
        "metered / unmetered throughput: {ratio:.3}x; ceiling from this run: unmetered CPU {u:.1} us/req \
         (gateway {:.1} + bench {:.1}) + 2 x {floor:.1} us floor -> {ceiling:.3}x ({:.0} req/s); \
         metered is {:.2} of the ceiling",
        free.cpu_us_per_req,
        free.bench_us_per_req,
        free.rps * ceiling,
        ratio / ceiling
    );
    println!(
        "machine CPU per metered call: {:.1} us (gateway {:.1} + bench {:.1}) vs the ceiling's {:.1} us",
        metered.total_us_per_req(),
        metered.cpu_us_per_req,
        metered.bench_us_per_req,
        u + 2.0 * floor
    );
}

/// `TALLY_BENCH_PERF=DIR`: `perf record` of the gateway process and of the bench process
/// (the clients) during the metered full-load run only, into `DIR/gateway.data` and
/// `DIR/clients.data` (BENCHMARKS.md, "Lanes (protocol v2)": where the CPU goes). With
/// `TALLY_BENCH_PERF_CALLERS=1` it records call graphs (DWARF unwinding, at a lower rate).
struct Profile(Vec<std::process::Child>);

impl Profile {
    fn start(gateway: u32) -> Profile {
        let Some(dir) = std::env::var_os("TALLY_BENCH_PERF") else {
            return Profile(Vec::new());
        };
        let dir = std::path::PathBuf::from(dir);
        let callers = std::env::var_os("TALLY_BENCH_PERF_CALLERS").is_some();
        let mode: &[&str] = if callers {
            &["-F", "499", "--call-graph", "dwarf,16384"]
        } else {
            &["-F", "1999"]
        };
        let mut out = Vec::new();
        for (pid, name) in [(gateway, "gateway"), (std::process::id(), "clients")] {
            let spawned = std::process::Command::new("perf")
                .args(["record", "-q"])
                .args(mode)
                .args(["-p", &pid.to_string(), "-o"])
                .arg(dir.join(format!("{name}.data")))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn();
            match spawned {
                Ok(c) => out.push(c),
                Err(e) => fail(&format!("perf record: {e}")),
            }
        }
        // perf needs a moment to attach before the load starts.
        std::thread::sleep(Duration::from_millis(300));
        Profile(out)
    }

    fn stop(self) {
        for mut c in self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let _ = c.wait();
        }
    }
}
