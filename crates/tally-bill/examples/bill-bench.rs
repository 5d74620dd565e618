//! Times writing the HTML bill of a statement (BENCHMARKS.md, "The HTML bill"): the audit
//! once, then the bill's own pass (read, classify, tree, proofs, page) three times.
//!
//! ```sh
//! cargo run --release -p tally-audit --example gen-statement -- 1000000 /tmp/statement.jsonl
//! cargo run --release -p tally-bill --example bill-bench -- /tmp/statement.jsonl /tmp/bill.html
//! node tools/browser/bill-check.mjs /tmp/bill.html /tmp/bill.png --record 999999
//! ```

use std::io::{BufWriter, Write};
use std::time::Instant;

use tally_audit::{audit, AuditContext, StatementReader};
use tally_bill::{read_bill, write_page, BillOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [statement, out] = args.as_slice() else {
        return Err("usage: bill-bench STATEMENT.jsonl OUT.html".into());
    };
    let t = Instant::now();
    let report = audit(
        StatementReader::open(statement.as_ref())?,
        &AuditContext::default(),
        0,
    )?;
    println!(
        "audit: {} records in {:.2} s ({:.0} records/s), {} discrepancies",
        report.records,
        t.elapsed().as_secs_f64(),
        report.records_per_second,
        report.discrepancy_count
    );
    for run in 1..=3 {
        let cpu = cpu_seconds();
        let t = Instant::now();
        let bill = read_bill(
            StatementReader::open(statement.as_ref())?,
            &report,
            BillOptions::default(),
        )?;
        let read = t.elapsed().as_secs_f64();
        let mut w = BufWriter::new(std::fs::File::create(out)?);
        write_page(&bill, &report, &mut w)?;
        w.flush()?;
        let size = std::fs::metadata(out)?.len();
        println!(
            "bill run {run}: read {read:.2} s, page {:.2} s, total {:.2} s wall, {:.2} s CPU; {:.1} MB, {} records with proofs",
            t.elapsed().as_secs_f64() - read,
            t.elapsed().as_secs_f64(),
            cpu_seconds() - cpu,
            size as f64 / 1e6,
            bill.evidence_count
        );
    }
    Ok(())
}

/// This process's user + system CPU time so far, from /proc/self/stat (Linux; clock ticks of
/// 1/100 s), so a run's cost can be read apart from the machine's load.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |k: usize| {
        fields
            .get(k)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // After the command name: state is field 0, utime field 11, stime field 12.
    (ticks(11) + ticks(12)) / 100.0
}
