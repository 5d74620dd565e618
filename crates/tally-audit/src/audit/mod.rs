//! The bill audit behind `tally verify`: a provider's statement checked with public keys
//! only, and against the client's own mirror and the chain when given.
//!
//! Checks, each discrepancy named with its record index:
//! - every record decodes canonically and obeys R1–R4 on its own (spec/PROTOCOL.md §5.3),
//!   and belongs to the statement's channel;
//! - every client and provider signature, batch-verified (§4.2) on all cores, with a strict
//!   per-signature pass only inside a batch that fails, to name each bad one;
//! - R5, R7 and R8 with [`tally_core::Sequence`]: the index and the cumulative arithmetic,
//!   per-lane strict seqs and non-decreasing acknowledgements, and every acknowledged state
//!   (size, root, cumulative) is one the recomputed log really had, within `ACK_WINDOW`;
//! - each charge against the terms' price list with `Price::charge_for`, the terms hash each
//!   record signed and the terms' `max_lanes`;
//! - every checkpoint's signatures, and its root and cumulative against the recomputed log;
//! - the client's mirror head and the chain's claim against the recomputed root at their
//!   sizes, and the claim against a checkpoint the client signed.
//!
//! It never stops at the first problem (except an unreadable header), and never trusts a
//! value from the statement that it can recompute.
//!
//! The audit streams: a reader (the calling thread) reads [`CHUNK`] lines at a time, worker
//! threads decode and batch-verify whole chunks, and the calling thread folds the checked
//! chunks back in order. At most `2 × threads + 1` chunks are in flight, so memory is bounded
//! by a few chunks, the sequence's window and the frontier, whatever the statement's length.

mod charges;
mod checkpoints;
mod log;
mod report;
mod signatures;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::sync::{mpsc, Mutex};
use std::time::Instant;

use alloy::sol_types::Eip712Domain;
use tally_chain::ChannelFunding;
use tally_core::Hash;

pub use report::{AuditReport, Discrepancy, OnchainView, Totals, MAX_LISTED};

use self::checkpoints::Claims;
use self::log::LogFold;
use self::report::Findings;
use self::signatures::{check_chunk, Checked, Shared};
use crate::statement::{StatementError, StatementReader};

/// Records per batch-verification job (two signatures each). ed25519-dalek switches to
/// Pippenger's multiscalar method for large batches; 2,048 was the cheapest measured
/// (BENCHMARKS.md, "Bill audit").
pub const CHUNK: usize = 2048;

/// What else the audit compares the statement with.
#[derive(Default)]
pub struct AuditContext {
    /// The client's mirror head `(size, root)`.
    pub mirror: Option<(u64, Hash)>,
    /// The channel's onchain state and the contract's EIP-712 domain.
    pub onchain: Option<(ChannelFunding, Eip712Domain)>,
    /// Called with the number of records audited so far.
    pub progress: Option<Box<dyn Fn(u64) + Sync>>,
}

/// Audits the statement `statement` streams. `threads` is the number of verifying threads
/// (0 = all cores). Fails only when the statement cannot be read; everything wrong with the
/// bill is a [`Discrepancy`] in the report.
pub fn audit<R: BufRead>(
    mut statement: StatementReader<R>,
    ctx: &AuditContext,
    threads: usize,
) -> Result<AuditReport, StatementError> {
    let started = Instant::now();
    let h = statement.header().clone();
    let mut found = Findings::default();
    let terms = charges::read_terms(&h, &mut found);
    let mut claims = Claims::new(&h, ctx.mirror, ctx.onchain.as_ref(), &mut found);
    let mut fold = LogFold::new();
    claims.reached(fold.head(), &mut found);
    let shared = Shared {
        channel: h.channel_id,
        client: &h.client_key,
        provider: &h.provider_key,
        terms: terms.as_ref(),
    };
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let mut records = 0u64;
    stream(&mut statement, &shared, threads, |checked| {
        found.extend(checked.found);
        for (k, item) in checked.records.iter().enumerate() {
            let index = checked.first + k as u64;
            if let Some(state) = fold.push(index, item.as_ref(), &mut found) {
                claims.reached(state, &mut found);
            }
        }
        records = checked.first + checked.records.len() as u64;
        if let Some(p) = &ctx.progress {
            p(records);
        }
    })?;
    fold.finish(&mut found);
    claims.finish(fold.head().size, fold.broken_at, &mut found);
    let head = fold.head();
    let seconds = started.elapsed().as_secs_f64();
    Ok(AuditReport {
        channel_id: h.channel_id.to_hex(),
        records,
        root: head.root.to_hex(),
        cumulative: head.cumulative.to_string(),
        charged: fold.charged.to_string(),
        credited: fold.credited.to_string(),
        checkpoints: claims.checkpoints,
        lanes: fold.lanes(),
        prices_checked: terms.is_some(),
        onchain: claims.onchain.take(),
        mirror_size: ctx.mirror.map(|m| m.0),
        discrepancy_count: found.total,
        discrepancies: found.listed,
        totals: Totals {
            size: head.size,
            root: head.root,
            cumulative: head.cumulative,
            charged: fold.charged,
            credited: fold.credited,
        },
        seconds,
        records_per_second: if seconds > 0.0 {
            records as f64 / seconds
        } else {
            0.0
        },
    })
}

/// Reads the body chunk by chunk, has `threads` workers check chunks, and hands the checked
/// chunks to `fold` in stream order, with at most `2 × threads + 1` chunks in flight.
fn stream<R: BufRead>(
    statement: &mut StatementReader<R>,
    shared: &Shared<'_>,
    threads: usize,
    mut fold: impl FnMut(Checked),
) -> Result<(), StatementError> {
    let max_in_flight = 2 * threads as u64 + 1;
    let (work_tx, work_rx) = mpsc::channel::<crate::statement::Chunk>();
    let work_rx = Mutex::new(work_rx);
    let (done_tx, done_rx) = mpsc::channel::<Checked>();
    std::thread::scope(|s| {
        // Owned by this closure, so every return path drops it and the workers stop.
        let work_tx = work_tx;
        for _ in 0..threads {
            let (work_rx, done_tx) = (&work_rx, done_tx.clone());
            s.spawn(move || loop {
                let job = match work_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => break,
                };
                let Ok(chunk) = job else { break };
                if done_tx.send(check_chunk(shared, chunk)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        let mut pending: BTreeMap<u64, Checked> = BTreeMap::new();
        let (mut sent, mut folded, mut eof) = (0u64, 0u64, false);
        let mut spares: Vec<Vec<u8>> = Vec::new();
        let result = loop {
            while !eof && sent - folded < max_in_flight {
                let buf = spares
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(CHUNK * 1100));
                let chunk = match statement.read_chunk(CHUNK, buf) {
                    Ok(c) => c,
                    Err(e) => return Err(e),
                };
                eof = chunk.lines.len() < CHUNK;
                if chunk.lines.is_empty() {
                    break;
                }
                if work_tx.send(chunk).is_err() {
                    return Err(StatementError::Workers);
                }
                sent += 1;
            }
            if folded == sent {
                break Ok(());
            }
            match done_rx.recv() {
                Ok(c) => {
                    pending.insert(c.number, c);
                }
                Err(_) => break Err(StatementError::Workers),
            }
            while let Some(mut c) = pending.remove(&folded) {
                spares.push(std::mem::take(&mut c.spare));
                fold(c);
                folded += 1;
            }
        };
        drop(work_tx);
        result
    })
}
