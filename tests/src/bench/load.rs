//! The load generator: every channel's client sends from `lanes` tasks at once (protocol v2
//! lanes, DESIGN.md §7), at full speed or paced, and the run's throughput, latency and the
//! CPU both processes spent on it are measured.

use std::time::{Duration, Instant};

use crate::fail;
use crate::probe::{cpu_split, percentile, TICKS_PER_S};

/// What one run measured.
pub struct Run {
    /// Requests answered.
    pub n: f64,
    /// Requests per second over the run.
    pub rps: f64,
    /// Latency of one request, µs.
    pub p50_us: f64,
    pub p99_us: f64,
    /// The gateway process's CPU (user + kernel) per request, µs.
    pub cpu_us_per_req: f64,
    /// Of which in the kernel.
    pub sys_us_per_req: f64,
    /// The bench process's CPU (the clients: signing, receipt checks, mirrors) per request, µs.
    pub bench_us_per_req: f64,
    /// Cores both processes used on average during the run.
    pub cores: f64,
}

impl Run {
    /// CPU of both processes per request, µs: what one request costs the machine.
    pub fn total_us_per_req(&self) -> f64 {
        self.cpu_us_per_req + self.bench_us_per_req
    }
}

/// One load: `per_task` requests to `path` from each of `lanes` tasks per client, all
/// clients at once; `interval` paces each task (none: as fast as answers come back).
pub struct Load<'a> {
    pub clients: &'a [tally_client::Client],
    pub path: &'static str,
    pub lanes: u32,
    pub per_task: u32,
    pub interval: Option<Duration>,
    /// The gateway process.
    pub child: u32,
}

impl Load<'_> {
    /// Runs the load and measures it.
    pub async fn run(&self) -> Run {
        let me = std::process::id();
        let (cu0, cs0) = cpu_split(self.child);
        let (bu0, bs0) = cpu_split(me);
        let start = Instant::now();
        let mut tasks = Vec::new();
        for c in self.clients {
            for _ in 0..self.lanes {
                tasks.push(tokio::spawn(task(
                    c.clone(),
                    self.path,
                    self.per_task,
                    self.interval,
                )));
            }
        }
        let mut all = Vec::new();
        for t in tasks {
            match t.await {
                Ok(l) => all.extend(l),
                Err(e) => fail(&format!("client task: {e}")),
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        let (cu1, cs1) = cpu_split(self.child);
        let (bu1, bs1) = cpu_split(me);
        let secs = |t: u64| t as f64 / TICKS_PER_S;
        let child_cpu = secs((cu1 + cs1).saturating_sub(cu0 + cs0));
        let child_sys = secs(cs1.saturating_sub(cs0));
        let bench_cpu = secs((bu1 + bs1).saturating_sub(bu0 + bs0));
        all.sort_by(|a, b| a.total_cmp(b));
        let n = all.len() as f64;
        Run {
            n,
            rps: n / elapsed,
            p50_us: percentile(&all, 0.5),
            p99_us: percentile(&all, 0.99),
            cpu_us_per_req: child_cpu * 1e6 / n,
            sys_us_per_req: child_sys * 1e6 / n,
            bench_us_per_req: bench_cpu * 1e6 / n,
            cores: (child_cpu + bench_cpu) / elapsed,
        }
    }
}

/// One sending task: `requests` requests one after the other on a shared client (each
/// `send` leases a lane of its own).
async fn task(
    c: tally_client::Client,
    path: &'static str,
    requests: u32,
    interval: Option<Duration>,
) -> Vec<f64> {
    let mut lat = Vec::with_capacity(requests as usize);
    let begin = Instant::now();
    for i in 0..requests {
        if let Some(iv) = interval {
            tokio::time::sleep_until((begin + iv * i).into()).await;
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
}

/// Prints one run as a line of the report.
pub fn print_run(name: &str, r: &Run) {
    println!(
        "{name}: {:>8.0} req/s  p50 {:>7.0} us  p99 {:>7.0} us  gateway CPU {:>6.1} us/req \
         ({:.1} in the kernel)  bench CPU {:>6.1} us/req  cores used {:.2}",
        r.rps, r.p50_us, r.p99_us, r.cpu_us_per_req, r.sys_us_per_req, r.bench_us_per_req, r.cores
    );
}
