//! The bill audit's benchmark: records/s and peak memory auditing a statement streamed from
//! disk (BENCHMARKS.md, "Bill audit").
//!
//! ```sh
//! cargo run --release -p tally-audit --example audit-bench -- 1000000 /tmp/statement-v2.jsonl
//! ```
//!
//! If the file does not exist it is generated first, in a child process, so the peak RSS
//! reported (VmHWM) is the audit's alone. `--threads N` sets the verifying threads (default:
//! all cores).

#[path = "../tests/support/gen.rs"]
mod gen;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use tally_audit::{audit, AuditContext, StatementReader};

/// A line of /proc/self/status, in kB.
fn status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User and system CPU seconds of this process (from /proc/self/stat, at 100 ticks/s).
fn cpu_seconds() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| fields.get(i)?.parse::<f64>().ok().map(|t| t / 100.0);
    Some((tick(11)?, tick(12)?))
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("{e}");
    std::process::exit(1)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--generate") {
        let n = args
            .get(1)
            .and_then(|a| a.parse().ok())
            .unwrap_or(1_000_000);
        let path = PathBuf::from(args.get(2).cloned().unwrap_or_default());
        let started = Instant::now();
        if let Err(e) = gen::write_file(gen::Options::new(n), &path) {
            fail(e);
        }
        eprintln!(
            "generated {n} records in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        return;
    }
    let n: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let path = PathBuf::from(
        args.get(1)
            .cloned()
            .unwrap_or_else(|| format!("/tmp/tally-audit-bench-{n}.jsonl")),
    );
    let threads = match args.iter().position(|a| a == "--threads") {
        Some(i) => args.get(i + 1).and_then(|t| t.parse().ok()).unwrap_or(0),
        None => 0,
    };
    if !path.exists() {
        let me = std::env::current_exe().unwrap_or_else(|e| fail(e));
        let status = Command::new(me)
            .args(["--generate", &n.to_string()])
            .arg(&path)
            .status()
            .unwrap_or_else(|e| fail(e));
        if !status.success() {
            fail("generating the statement failed");
        }
    }
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let reader = StatementReader::open(&path).unwrap_or_else(|e| fail(e));
    let cpu0 = cpu_seconds().unwrap_or_default();
    let started = Instant::now();
    let report = audit(reader, &AuditContext::default(), threads).unwrap_or_else(|e| fail(e));
    let wall = started.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds().unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    println!("statement      {} ({} MB)", path.display(), bytes >> 20);
    println!(
        "records        {} on {} lanes, {} checkpoints",
        report.records, report.lanes, report.checkpoints
    );
    println!(
        "verdict        {}",
        if report.ok() { "VERIFIED" } else { "FAILED" }
    );
    println!(
        "throughput     {:.0} records/s",
        report.records as f64 / wall
    );
    println!("wall time      {wall:.1} s");
    println!(
        "CPU            user {:.1} s + sys {:.1} s ({:.0}% of {cores} cores)",
        cpu1.0 - cpu0.0,
        cpu1.1 - cpu0.1,
        100.0 * ((cpu1.0 - cpu0.0) + (cpu1.1 - cpu0.1)) / wall
    );
    println!(
        "peak RSS       {:.1} MB (VmHWM)",
        status_kb("VmHWM:").unwrap_or(0) as f64 / 1024.0
    );
    if !report.ok() {
        eprint!("{}", report.render());
        std::process::exit(1);
    }
}
