//! Generates a valid synthetic v2 statement for tests and benchmarks of the bill audit:
//!
//! ```sh
//! cargo run --release -p tally-audit --example gen-statement -- 1000000 /tmp/statement.jsonl
//! target/release/tally verify --statement /tmp/statement.jsonl
//! ```
//!
//! Options after the two arguments: `--lanes N` (default 8), `--max-lag N` (default 24),
//! `--checkpoint-every N` (default 100000), `--seed N`. Records travel on several lanes with
//! lagging acknowledgements and are self-checked with `tally_core::Sequence` as they are
//! built; see `tests/support/gen.rs`. Keys are derived from constant seeds: this is test data.

#[path = "../tests/support/gen.rs"]
mod gen;

use std::time::Instant;

fn parse(args: &[String]) -> Result<(gen::Options, std::path::PathBuf), String> {
    let usage = "usage: gen-statement RECORDS OUT.jsonl [--lanes N] [--max-lag N] [--checkpoint-every N] [--seed N]";
    let records = args
        .first()
        .and_then(|a| a.parse::<u64>().ok())
        .ok_or(usage)?;
    let out = args.get(1).ok_or(usage)?.into();
    let mut opts = gen::Options::new(records);
    let mut rest = args[2..].iter();
    while let Some(flag) = rest.next() {
        let value: u64 = rest
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number\n{usage}"))?;
        match flag.as_str() {
            "--lanes" => {
                opts.lanes = u32::try_from(value)
                    .map_err(|e| e.to_string())?
                    .clamp(1, 1024)
            }
            "--max-lag" => opts.max_lag = value,
            "--checkpoint-every" => opts.checkpoint_every = value,
            "--seed" => opts.seed = value,
            _ => return Err(usage.into()),
        }
    }
    Ok((opts, out))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (opts, out) = parse(&args).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let started = Instant::now();
    match gen::write_file(opts, &out) {
        Ok(g) => eprintln!(
            "wrote {} records on {} lanes ({} checkpoints) to {} in {:.1} s; cumulative {}",
            opts.records,
            opts.lanes,
            g.checkpoints.len(),
            out.display(),
            started.elapsed().as_secs_f64(),
            g.head().cumulative
        ),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1)
        }
    }
}
