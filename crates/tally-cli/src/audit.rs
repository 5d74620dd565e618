//! The bill audit behind `tally verify`: a provider's statement checked with public keys
//! only, and against the client's own mirror and the chain when given.
//!
//! Checks, each discrepancy named with its record index:
//! - every record decodes canonically and is consistent (PROTOCOL.md §5.3 R1–R5, which
//!   include the authorization hash and the cumulative arithmetic);
//! - every client and provider signature, batch-verified (§4.2) on all cores, with a strict
//!   per-signature pass only inside a batch that fails, to name each bad one;
//! - record `i` has seq `i` and acknowledges the recomputed root and cumulative before it;
//! - each charge against the terms' price list (and the terms hash each record signed);
//! - every checkpoint's signatures, root and cumulative against the recomputed log, and a
//!   consistency proof between every pair of consecutive checkpoints;
//! - the client's mirror head against the recomputed root at its size;
//! - the chain's claimed (size, root, amount) against a checkpoint the client signed.
//!
//! It never stops at the first problem (except an unreadable header), and never trusts a
//! value from the statement that it can recompute.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;
use tally_chain::ChannelFunding;
use tally_core::encoding::Canonical;
use tally_core::hash::TreeHasher;
use tally_core::signature::{verify_batch, BatchItem};
use tally_core::{Hash, PublicKey, Record, SignedCheckpoint};
use tally_http::{Price, Terms, WireRecord};
use tally_log::{Blake3Hasher, MemoryTree};

use crate::statement::Statement;

/// Records per batch-verification job (two signatures each).
pub const CHUNK: usize = 2048;

/// One thing found wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Discrepancy {
    /// The record it concerns, if it concerns one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    /// A stable short name: `record`, `client_signature`, `provider_signature`, `sequence`,
    /// `acknowledgement`, `price`, `terms`, `checkpoint`, `consistency`, `mirror`, `chain`.
    pub kind: &'static str,
    /// What is wrong, with the values involved.
    pub detail: String,
}

/// What the chain says about the channel, for the audit to compare.
#[derive(Clone, Debug, Serialize)]
pub struct OnchainView {
    /// Log size of the last claim.
    pub claimed_size: u64,
    /// Root of the last claim, hex.
    pub claimed_root: String,
    /// Total paid to the provider.
    pub claimed: String,
    /// Total deposited.
    pub deposit: String,
    /// Whether a client-signed checkpoint of the statement matches the claim.
    pub matches_checkpoint: bool,
}

/// The audit's result.
#[derive(Clone, Debug, Serialize)]
pub struct AuditReport {
    /// The channel, hex.
    pub channel_id: String,
    /// Records in the statement.
    pub records: u64,
    /// Recomputed root over them, hex.
    pub root: String,
    /// Final cumulative net amount.
    pub cumulative: String,
    /// Sum of charges.
    pub charged: String,
    /// Sum of credits (absolute).
    pub credited: String,
    /// Checkpoints checked.
    pub checkpoints: usize,
    /// Whether prices were checked against the terms.
    pub prices_checked: bool,
    /// The chain's view, if it was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onchain: Option<OnchainView>,
    /// The mirror size compared, if a mirror was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_size: Option<u64>,
    /// Everything found wrong; empty means the bill verifies.
    pub discrepancies: Vec<Discrepancy>,
    /// Wall time of the audit, seconds.
    pub seconds: f64,
    /// Records audited per second.
    pub records_per_second: f64,
}

impl AuditReport {
    /// Whether nothing was found wrong.
    pub fn ok(&self) -> bool {
        self.discrepancies.is_empty()
    }

    /// The human form: totals, then each discrepancy (the first 50, then a count).
    pub fn render(&self) -> String {
        let mut s = format!(
            "channel     {}\nrecords     {}\nroot        {}\ncharged     {}\ncredited    {}\nnet total   {}\ncheckpoints {}\n",
            self.channel_id, self.records, self.root, self.charged, self.credited, self.cumulative, self.checkpoints
        );
        if let Some(o) = &self.onchain {
            s += &format!(
                "onchain     claimed {} of deposit {} at size {} ({})\n",
                o.claimed,
                o.deposit,
                o.claimed_size,
                if o.matches_checkpoint {
                    "matches a checkpoint the client signed"
                } else {
                    "no matching client-signed checkpoint"
                }
            );
        }
        if let Some(m) = self.mirror_size {
            s += &format!("mirror      compared at size {m}\n");
        }
        s += &format!(
            "audited in {:.2} s ({:.0} records/s)\n",
            self.seconds, self.records_per_second
        );
        if self.discrepancies.is_empty() {
            s += "VERIFIED: no discrepancies\n";
        } else {
            s += &format!("FAILED: {} discrepancies\n", self.discrepancies.len());
            for d in self.discrepancies.iter().take(50) {
                match d.index {
                    Some(i) => s += &format!("  record {i}: [{}] {}\n", d.kind, d.detail),
                    None => s += &format!("  [{}] {}\n", d.kind, d.detail),
                }
            }
            if self.discrepancies.len() > 50 {
                s += &format!("  … and {} more\n", self.discrepancies.len() - 50);
            }
        }
        s
    }
}

/// What else the audit compares the statement with.
#[derive(Default)]
pub struct AuditContext {
    /// The client's mirror head `(size, root)`.
    pub mirror: Option<(u64, Hash)>,
    /// The channel's onchain state and the contract's EIP-712 domain.
    pub onchain: Option<(ChannelFunding, alloy::sol_types::Eip712Domain)>,
    /// Called with the number of records whose signatures were checked so far.
    pub progress: Option<Box<dyn Fn(u64) + Sync>>,
}

/// What the parallel stage keeps of each record for the sequential one.
#[derive(Clone, Copy)]
struct Summary {
    record: Record,
    leaf: Hash,
}

/// A decoded record with its provider signature and the two signed messages.
type Decoded = (u64, Record, tally_core::Signature, Vec<u8>, Vec<u8>);
/// What checking one chunk yields.
type ChunkResult = (Vec<Option<Summary>>, Vec<Discrepancy>);

struct Shared<'a> {
    client: &'a PublicKey,
    provider: &'a PublicKey,
    terms: Option<(&'a Terms, Hash)>,
}

fn d(index: u64, kind: &'static str, detail: String) -> Discrepancy {
    Discrepancy {
        index: Some(index),
        kind,
        detail,
    }
}

/// Whether `(units, amount)` under `max_amount` is what some route of the terms charges
/// (or an uncharged server error: no units, no amount).
fn priced_by_terms(terms: &Terms, units: u64, amount: u128, max_amount: u128) -> bool {
    if units == 0 && amount == 0 {
        return true;
    }
    terms.routes.iter().any(|r| match &r.price {
        Price::Free => false,
        Price::Fixed { .. } => units == 1 && amount == r.price.charge_for(units, max_amount),
        Price::Metered { .. } => amount == r.price.charge_for(units, max_amount),
    })
}

/// Decodes and checks one chunk of lines; `first` is the index of its first record.
fn check_chunk(sh: &Shared<'_>, first: u64, lines: &[&[u8]]) -> ChunkResult {
    let mut out = Vec::with_capacity(lines.len());
    let mut bad = Vec::new();
    let mut decoded: Vec<Decoded> = Vec::with_capacity(lines.len());
    for (k, line) in lines.iter().enumerate() {
        let index = first + k as u64;
        let wire: WireRecord = match serde_json::from_slice(line) {
            Ok(w) => w,
            Err(e) => {
                bad.push(d(index, "record", format!("unreadable line: {e}")));
                out.push(None);
                continue;
            }
        };
        let record = match wire.decode() {
            Ok(r) => r,
            Err(e) => {
                bad.push(d(index, "record", format!("not a canonical record: {e}")));
                out.push(None);
                continue;
            }
        };
        if let Err(e) = record.check_consistency() {
            bad.push(d(index, "record", e.to_string()));
        }
        let a = &record.authorization;
        let o = &record.outcome;
        if let Some((terms, hash)) = sh.terms {
            if a.terms_hash != hash {
                bad.push(d(
                    index,
                    "terms",
                    format!(
                        "signed terms hash {} but the statement's terms hash to {}",
                        a.terms_hash.to_hex(),
                        hash.to_hex()
                    ),
                ));
            } else if o.amount >= 0
                && a.max_amount > 0
                && !priced_by_terms(terms, o.units, o.amount.unsigned_abs(), a.max_amount)
            {
                bad.push(d(
                    index,
                    "price",
                    format!(
                        "charged {} for {} units (authorized at most {}): no route of the terms prices that",
                        o.amount, o.units, a.max_amount
                    ),
                ));
            }
        }
        if o.amount < 0 && a.max_amount != 0 {
            bad.push(d(
                index,
                "record",
                format!(
                    "credit of {} under an authorization of max {} (credits are signed with max 0)",
                    o.amount, a.max_amount
                ),
            ));
        }
        let bytes = record.to_bytes();
        out.push(Some(Summary {
            record,
            leaf: Blake3Hasher.leaf(&bytes),
        }));
        let auth_bytes = a.to_bytes();
        let outcome_bytes = o.to_bytes();
        decoded.push((
            index,
            record,
            wire.provider_signature,
            auth_bytes,
            outcome_bytes,
        ));
    }
    let mut items = Vec::with_capacity(decoded.len() * 2);
    for (_, r, psig, ab, ob) in &decoded {
        items.push(BatchItem {
            key: sh.client,
            message: ab,
            signature: &r.client_signature,
        });
        items.push(BatchItem {
            key: sh.provider,
            message: ob,
            signature: psig,
        });
    }
    if verify_batch(&items).is_err() {
        // Name every bad signature of this batch, strictly.
        for (k, item) in items.iter().enumerate() {
            if item.key.verify(item.message, item.signature).is_err() {
                let index = decoded[k / 2].0;
                if k % 2 == 0 {
                    bad.push(d(index, "client_signature", "the client's authorization signature does not verify under the session key".into()));
                } else {
                    bad.push(d(
                        index,
                        "provider_signature",
                        "the provider's receipt signature does not verify under the provider key"
                            .into(),
                    ));
                }
            }
        }
    }
    (out, bad)
}

/// Audits `statement`. `threads` is the number of verifying threads (0 = all cores).
pub fn audit(statement: &Statement, ctx: &AuditContext, threads: usize) -> AuditReport {
    let started = Instant::now();
    let h = &statement.header;
    let mut found: Vec<Discrepancy> = Vec::new();
    let terms = match &h.terms {
        Some(text) => match Terms::parse(text.as_bytes()) {
            Ok(t) => {
                if t.provider_key != h.provider_key {
                    found.push(Discrepancy {
                        index: None,
                        kind: "terms",
                        detail: "the terms name another provider key than the statement".into(),
                    });
                }
                Some((t, tally_http::terms::terms_hash(text.as_bytes())))
            }
            Err(e) => {
                found.push(Discrepancy {
                    index: None,
                    kind: "terms",
                    detail: format!("unreadable terms document: {e}"),
                });
                None
            }
        },
        None => None,
    };
    let lines = statement.lines();
    let n = lines.len();
    let shared = Shared {
        client: &h.client_key,
        provider: &h.provider_key,
        terms: terms.as_ref().map(|(t, hash)| (t, *hash)),
    };
    // Parallel stage: decode, per-record rules, prices, batched signatures.
    let chunks: Vec<&[&[u8]]> = lines.chunks(CHUNK).collect();
    let results: Vec<Mutex<Option<ChunkResult>>> =
        (0..chunks.len()).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        threads
    };
    std::thread::scope(|s| {
        for _ in 0..threads.min(chunks.len().max(1)) {
            s.spawn(|| loop {
                let c = next.fetch_add(1, Ordering::Relaxed);
                if c >= chunks.len() {
                    break;
                }
                let r = check_chunk(&shared, (c * CHUNK) as u64, chunks[c]);
                if let Ok(mut slot) = results[c].lock() {
                    *slot = Some(r);
                }
                let total = done.fetch_add(chunks[c].len(), Ordering::Relaxed) + chunks[c].len();
                if let Some(p) = &ctx.progress {
                    p(total as u64);
                }
            });
        }
    });
    let mut summaries: Vec<Option<Summary>> = Vec::with_capacity(n);
    for slot in results {
        let (sums, bad) = slot
            .into_inner()
            .ok()
            .flatten()
            .unwrap_or_else(|| (Vec::new(), Vec::new()));
        summaries.extend(sums);
        found.extend(bad);
    }
    // Sequential stage: the chain of acknowledgements, the tree, the totals.
    let mut tree = MemoryTree::new(Blake3Hasher);
    let mut sequence = tally_core::Sequence::new(tree.root());
    let mut cumulative_at: Vec<u128> = Vec::with_capacity(n + 1);
    cumulative_at.push(0);
    let (mut cumulative, mut charged, mut credited) = (0u128, 0u128, 0u128);
    let (mut root_break, mut later_breaks) = (None::<usize>, 0u64);
    for (i, s) in summaries.iter().enumerate() {
        let index = i as u64;
        let Some(s) = s else {
            // An undecodable record: the log cannot be recomputed past it.
            found.push(d(index, "record", "the log cannot be recomputed past an undecodable record; later records not checked against it".into()));
            break;
        };
        // R5, R7, R8 (spec/PROTOCOL.md §5.3): index, cumulative, acknowledgement, lanes.
        if let Err(e) = sequence.check_next(&s.record) {
            use tally_core::SequenceError as E;
            let kind = match e {
                E::WrongIndex { .. } => "sequence",
                E::WrongCumulative { .. } => "cumulative",
                E::LaneOutOfRange { .. } | E::SeqGap { .. } | E::AckBackwards { .. } => "lanes",
                E::AckOutOfWindow { .. } | E::AckMismatch { .. } => "acknowledgement",
            };
            if matches!(e, E::AckMismatch { .. }) && root_break.is_some() {
                later_breaks += 1;
            } else {
                if matches!(e, E::AckMismatch { .. }) {
                    root_break = Some(found.len());
                }
                found.push(d(index, kind, e.to_string()));
            }
        }
        let amount = s.record.outcome.amount;
        cumulative = s.record.outcome.cumulative;
        if amount >= 0 {
            charged = charged.saturating_add(amount.unsigned_abs());
        } else {
            credited = credited.saturating_add(amount.unsigned_abs());
        }
        tree.push_hash(s.leaf);
        sequence.push(&s.record, tree.root());
        cumulative_at.push(cumulative);
    }
    if let (Some(at), true) = (root_break, later_breaks > 0) {
        // One altered leaf changes every later root: say so once, not per record.
        found[at].detail += &format!(
            "; the {later_breaks} later records that acknowledge a root differ from the recomputed log too"
        );
    }
    let size = tree.size();
    // Checkpoints.
    let mut verified: Vec<tally_core::Checkpoint> = Vec::new();
    let mut chain_sigs = Vec::new();
    for (k, wc) in h.checkpoints.iter().enumerate() {
        let bad = |detail: String| Discrepancy {
            index: None,
            kind: "checkpoint",
            detail: format!("checkpoint #{k}: {detail}"),
        };
        let signed =
            match SignedCheckpoint::from_note(&wc.note, &h.client_key, &h.provider_key, true) {
                Ok(s) => s,
                Err(e) => {
                    found.push(bad(format!("note does not verify: {e}")));
                    continue;
                }
            };
        let cp = signed.checkpoint;
        if cp.channel_id != h.channel_id {
            found.push(bad(format!("for channel {}", cp.channel_id.to_hex())));
            continue;
        }
        if cp.size > size {
            found.push(bad(format!(
                "size {} beyond the {size} records recomputed",
                cp.size
            )));
            continue;
        }
        match tree.root_at(cp.size) {
            Ok(r) if r == cp.root => {}
            Ok(r) => found.push(bad(format!(
                "signs root {} at size {} but the records give {}",
                cp.root.to_hex(),
                cp.size,
                r.to_hex()
            ))),
            Err(e) => found.push(bad(e.to_string())),
        }
        let expected = cumulative_at[cp.size as usize];
        if cp.cumulative != expected {
            found.push(bad(format!(
                "signs cumulative {} at size {} but the records give {expected}",
                cp.cumulative, cp.size
            )));
        }
        chain_sigs.push(tally_chain::ChainCheckpoint {
            checkpoint: cp,
            sig: wc.eip712.to_sig(),
        });
        verified.push(cp);
    }
    for pair in verified.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.size < a.size {
            found.push(Discrepancy {
                index: None,
                kind: "consistency",
                detail: format!(
                    "checkpoint at size {} follows one at size {}",
                    b.size, a.size
                ),
            });
            continue;
        }
        if a.size == 0 {
            continue;
        }
        let ok = tally_log::consistency_proof(&Blake3Hasher, &tree, a.size, b.size)
            .ok()
            .map(|p| {
                tally_log::verify_consistency(&Blake3Hasher, a.size, b.size, &p, &a.root, &b.root)
                    .is_ok()
            })
            .unwrap_or(false);
        if !ok {
            found.push(Discrepancy {
                index: None,
                kind: "consistency",
                detail: format!(
                    "checkpoints at sizes {} and {} are not consistent (no consistency proof verifies)",
                    a.size, b.size
                ),
            });
        }
    }
    // The client's mirror.
    let mut mirror_size = None;
    if let Some((msize, mroot)) = ctx.mirror {
        mirror_size = Some(msize);
        if msize > size {
            found.push(Discrepancy {
                index: Some(size),
                kind: "mirror",
                detail: format!(
                    "the client holds receipts for {msize} records, the statement has {size}"
                ),
            });
        } else if let Ok(r) = tree.root_at(msize) {
            if r != mroot {
                found.push(Discrepancy {
                    index: None,
                    kind: "mirror",
                    detail: format!(
                        "at size {msize} the client's mirror has root {} but the statement gives {}",
                        mroot.to_hex(),
                        r.to_hex()
                    ),
                });
            }
        }
    }
    // The chain.
    let onchain = ctx.onchain.as_ref().map(|(f, domain)| {
        let mut matches = false;
        if f.claimed_size == 0 {
            matches = f.claimed == 0;
            if !matches {
                found.push(Discrepancy { index: None, kind: "chain", detail: format!("{} claimed onchain without a checkpoint", f.claimed) });
            }
        } else {
            let hit = chain_sigs.iter().find(|c| {
                c.checkpoint.size == f.claimed_size && c.checkpoint.root == f.claimed_root
            });
            match hit {
                None => found.push(Discrepancy {
                    index: None,
                    kind: "chain",
                    detail: format!(
                        "the chain claimed size {} root {} but no checkpoint the client signed has that size and root",
                        f.claimed_size,
                        f.claimed_root.to_hex()
                    ),
                }),
                Some(c) => {
                    let capped = c.checkpoint.cumulative.min(f.deposit);
                    if capped != f.claimed {
                        found.push(Discrepancy {
                            index: None,
                            kind: "chain",
                            detail: format!(
                                "the chain paid {} but the checkpoint at size {} gives {capped}",
                                f.claimed, f.claimed_size
                            ),
                        });
                    } else if let Err(e) = c.verify(domain, f.signer) {
                        found.push(Discrepancy {
                            index: None,
                            kind: "chain",
                            detail: format!("the matching checkpoint's EIP-712 signature: {e}"),
                        });
                    } else {
                        matches = true;
                    }
                }
            }
        }
        OnchainView {
            claimed_size: f.claimed_size,
            claimed_root: f.claimed_root.to_hex(),
            claimed: f.claimed.to_string(),
            deposit: f.deposit.to_string(),
            matches_checkpoint: matches,
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    AuditReport {
        channel_id: h.channel_id.to_hex(),
        records: n as u64,
        root: tree.root().to_hex(),
        cumulative: cumulative.to_string(),
        charged: charged.to_string(),
        credited: credited.to_string(),
        checkpoints: h.checkpoints.len(),
        prices_checked: terms.is_some(),
        onchain,
        mirror_size,
        discrepancies: found,
        seconds,
        records_per_second: if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        },
    }
}
