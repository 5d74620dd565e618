//! Checkpoints, the client's mirror and the chain's claim, each compared with the log as the
//! stream passes its size.
//!
//! Every checkpoint's note is verified first (client signature and provider cosignature,
//! spec/PROTOCOL.md §6); its root and cumulative are then compared with the recomputed log
//! when the stream reaches its size. Recomputing the root at every checkpoint size from the
//! records is stronger than a consistency proof between consecutive checkpoints (§7.2): both
//! roots are shown to be prefixes of the one log the records make.

use alloy::sol_types::Eip712Domain;
use tally_chain::{ChainCheckpoint, ChannelFunding};
use tally_core::sequence::LogState;
use tally_core::{Hash, SignedCheckpoint};

use super::report::{at, whole, Findings, OnchainView};
use crate::statement::StatementHeader;

/// Who made a claim about the log at some size.
#[derive(Clone, Copy, Debug)]
enum Claimant {
    /// Checkpoint `#k` of the header.
    Checkpoint(usize),
    /// The client's mirror head.
    Mirror,
    /// The chain's last accepted claim.
    Chain,
}

/// A claim to compare when the stream reaches `size`.
#[derive(Clone, Copy, Debug)]
struct Claim {
    size: u64,
    root: Hash,
    cumulative: Option<u128>,
    by: Claimant,
}

/// Every claim, sorted by size, and how far the stream has got.
pub(crate) struct Claims {
    claims: Vec<Claim>,
    next: usize,
    /// The header's checkpoints that verified.
    pub checkpoints: usize,
    /// The chain's view, once the header was read.
    pub onchain: Option<OnchainView>,
}

impl Claims {
    /// Verifies the header's checkpoints and collects them, the mirror head and the chain's
    /// claim for comparison with the log.
    pub fn new(
        h: &StatementHeader,
        mirror: Option<(u64, Hash)>,
        onchain: Option<&(ChannelFunding, Eip712Domain)>,
        found: &mut Findings,
    ) -> Self {
        let mut claims = Vec::new();
        let mut chain_sigs = Vec::new();
        let mut last_size = None::<u64>;
        for (k, wc) in h.checkpoints.iter().enumerate() {
            let bad = |detail: String| whole("checkpoint", format!("checkpoint #{k}: {detail}"));
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
            if let Some(prev) = last_size.filter(|&p| cp.size < p) {
                found.push(whole(
                    "consistency",
                    format!("checkpoint at size {} follows one at size {prev}", cp.size),
                ));
            }
            last_size = Some(cp.size);
            claims.push(Claim {
                size: cp.size,
                root: cp.root,
                cumulative: Some(cp.cumulative),
                by: Claimant::Checkpoint(k),
            });
            chain_sigs.push(ChainCheckpoint {
                checkpoint: cp,
                sig: tally_chain::Eip712Sig::from_parts(wc.eip712.parts()),
            });
        }
        if let Some((size, root)) = mirror {
            claims.push(Claim {
                size,
                root,
                cumulative: None,
                by: Claimant::Mirror,
            });
        }
        let onchain = onchain.map(|(f, domain)| {
            if f.claimed_size > 0 {
                claims.push(Claim {
                    size: f.claimed_size,
                    root: f.claimed_root,
                    cumulative: None,
                    by: Claimant::Chain,
                });
            }
            chain_view(f, domain, &chain_sigs, found)
        });
        claims.sort_by_key(|c| c.size);
        Claims {
            claims,
            next: 0,
            checkpoints: h.checkpoints.len(),
            onchain,
        }
    }

    /// Compares every claim at `state.size` with the recomputed state.
    pub fn reached(&mut self, state: LogState, found: &mut Findings) {
        while let Some(c) = self
            .claims
            .get(self.next)
            .copied()
            .filter(|c| c.size <= state.size)
        {
            self.next += 1;
            if c.size < state.size {
                continue;
            }
            let root_ok = c.root == state.root;
            let cum_ok = c.cumulative.is_none_or(|v| v == state.cumulative);
            if root_ok && cum_ok {
                continue;
            }
            let size = c.size;
            found.push(match c.by {
                Claimant::Checkpoint(k) if !root_ok => whole(
                    "checkpoint",
                    format!(
                        "checkpoint #{k}: signs root {} at size {size} but the records give {}",
                        c.root.to_hex(),
                        state.root.to_hex()
                    ),
                ),
                Claimant::Checkpoint(k) => whole(
                    "checkpoint",
                    format!(
                        "checkpoint #{k}: signs cumulative {} at size {size} but the records give {}",
                        c.cumulative.unwrap_or_default(),
                        state.cumulative
                    ),
                ),
                Claimant::Mirror => whole(
                    "mirror",
                    format!(
                        "at size {size} the client's mirror has root {} but the statement gives {}",
                        c.root.to_hex(),
                        state.root.to_hex()
                    ),
                ),
                Claimant::Chain => whole(
                    "chain",
                    format!(
                        "the chain claimed root {} at size {size} but the records give {}",
                        c.root.to_hex(),
                        state.root.to_hex()
                    ),
                ),
            });
        }
    }

    /// Reports the claims the stream never reached: beyond its `size` records, or past
    /// `broken_at`, a record that did not decode.
    pub fn finish(&mut self, size: u64, broken_at: Option<u64>, found: &mut Findings) {
        for c in &self.claims[self.next..] {
            let why = match broken_at {
                Some(b) => format!("not checked: the log cannot be recomputed past record {b}"),
                None => format!("beyond the {size} records of the statement"),
            };
            found.push(match c.by {
                Claimant::Checkpoint(k) => whole(
                    "checkpoint",
                    format!("checkpoint #{k}: size {}: {why}", c.size),
                ),
                Claimant::Mirror if broken_at.is_none() => at(
                    size,
                    "mirror",
                    format!(
                        "the client holds receipts for {} records, the statement has {size}",
                        c.size
                    ),
                ),
                Claimant::Mirror => whole("mirror", format!("mirror size {}: {why}", c.size)),
                Claimant::Chain => whole("chain", format!("claimed size {}: {why}", c.size)),
            });
        }
        self.next = self.claims.len();
    }
}

/// The chain's claim against the checkpoints the client signed: the claimed (size, root)
/// must be one of them, paid up to the deposit, with a valid EIP-712 signature of the
/// channel's checkpoint key (spec/PROTOCOL.md §8.2).
fn chain_view(
    f: &ChannelFunding,
    domain: &Eip712Domain,
    chain_sigs: &[ChainCheckpoint],
    found: &mut Findings,
) -> OnchainView {
    let mut matches = false;
    if f.claimed_size == 0 {
        matches = f.claimed == 0;
        if !matches {
            found.push(whole(
                "chain",
                format!("{} claimed onchain without a checkpoint", f.claimed),
            ));
        }
    } else {
        let hit = chain_sigs
            .iter()
            .find(|c| c.checkpoint.size == f.claimed_size && c.checkpoint.root == f.claimed_root);
        match hit {
            None => found.push(whole(
                "chain",
                format!(
                    "the chain claimed size {} root {} but no checkpoint the client signed has that size and root",
                    f.claimed_size,
                    f.claimed_root.to_hex()
                ),
            )),
            Some(c) => {
                let capped = c.checkpoint.cumulative.min(f.deposit);
                if capped != f.claimed {
                    found.push(whole(
                        "chain",
                        format!(
                            "the chain paid {} but the checkpoint at size {} gives {capped}",
                            f.claimed, f.claimed_size
                        ),
                    ));
                } else if let Err(e) = c.verify(domain, f.signer) {
                    found.push(whole(
                        "chain",
                        format!("the matching checkpoint's EIP-712 signature: {e}"),
                    ));
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
}
