//! `tally fsck STORE`: tally-log's integrity check of every channel (or one).

use serde_json::json;
use tally_log::LogStore;

use crate::cli::FsckArgs;
use crate::error::{CliError, Result};
use crate::output::Output;

/// Checks; exit 1 if any channel is damaged.
pub fn run(a: FsckArgs, out: Output) -> Result<()> {
    if !a.store.is_dir() {
        return Err(CliError::Usage(format!(
            "{} is not a log store directory",
            a.store.display()
        )));
    }
    let store = LogStore::open(&a.store)?;
    let channels = match &a.channel {
        Some(c) => vec![super::channel_id(c)?],
        None => store.channels(),
    };
    let mut reports = Vec::new();
    let mut bad = 0;
    for ch in channels {
        let r = store.fsck(&ch)?;
        if !r.is_ok() {
            bad += 1;
        }
        reports.push(
            json!({"channel": ch.to_hex(), "size": r.size, "ok": r.is_ok(),
            "first_bad_index": r.first_bad_index, "problem": r.problem, "note": r.note}),
        );
    }
    out.emit(&json!({"channels": reports}), || {
        let mut s = String::new();
        for r in &reports {
            s += &format!(
                "{} size {} {}{}\n",
                r["channel"].as_str().unwrap_or_default(),
                r["size"],
                if r["ok"] == true { "ok" } else { "DAMAGED: " },
                r["problem"].as_str().unwrap_or_default()
            );
        }
        if reports.is_empty() {
            s += "no channels in the store\n";
        }
        s
    });
    if bad > 0 {
        return Err(CliError::Verification(format!("{bad} channel(s) damaged")));
    }
    Ok(())
}
