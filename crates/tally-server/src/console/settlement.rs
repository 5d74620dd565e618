//! What the console shows of the settlement worker (spec/HTTP.md §11.3): the worker runs in
//! its own task and owns its state, so the standalone gateway feeds every tick's
//! [`TickReport`] to a [`SettlementView`] (its `on_tick` observer, next to the log line) and
//! the console reads that. A gateway without `[settlement]` has a view that says so.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tally_chain::{ChainError, TickReport};

use crate::redact::redact_text;

/// The most failed claims remembered (the newest replace the oldest).
const MAX_FAILED: usize = 50;

/// A shared, cheap-to-clone view of the worker's claims.
#[derive(Clone, Default)]
pub struct SettlementView {
    inner: Arc<Mutex<SettlementState>>,
}

/// The worker's claims as the console shows them.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct SettlementState {
    /// Whether a settlement worker reports here (false: claims are manual, `tally settle`).
    pub running: bool,
    /// Ticks seen.
    pub ticks: u64,
    /// Ticks that failed.
    pub errors: u64,
    /// The last failed tick's error (redacted: no node URL).
    pub last_error: Option<String>,
    /// The claim transaction in flight and the channels it covers.
    pub in_flight: Option<Claim>,
    /// Channels whose newer checkpoint waits for the current state's challenge window.
    pub waiting: Vec<String>,
    /// The last claim confirmed, and whether it succeeded.
    pub last_confirmed: Option<(String, bool)>,
    /// Claims the contract rejected or skipped, by channel, with why.
    pub failed: Vec<FailedClaim>,
}

/// A claim transaction.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Claim {
    /// Its hash.
    pub tx: String,
    /// The channels it claims.
    pub channels: Vec<String>,
}

/// A channel whose claim failed.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct FailedClaim {
    /// The channel.
    pub channel: String,
    /// Why (the contract's error name or the simulation's reason).
    pub reason: String,
}

impl SettlementView {
    /// Marks the view as fed by a running worker.
    pub fn started(&self) {
        if let Ok(mut s) = self.inner.lock() {
            s.running = true;
        }
    }

    /// A copy of the current state.
    pub fn snapshot(&self) -> SettlementState {
        self.inner.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Takes in one tick's outcome (the worker's `on_tick` observer).
    pub fn observe(&self, tick: &Result<TickReport, ChainError>) {
        let Ok(mut s) = self.inner.lock() else { return };
        s.running = true;
        s.ticks += 1;
        match tick {
            Err(e) => {
                s.errors += 1;
                s.last_error = Some(redact_text(&e.to_string()));
            }
            Ok(r) => apply(&mut s, r),
        }
    }
}

fn apply(s: &mut SettlementState, r: &TickReport) {
    if let Some((tx, channels)) = &r.submitted {
        s.in_flight = Some(Claim {
            tx: tx.to_string(),
            channels: channels.iter().map(|c| c.to_hex()).collect(),
        });
    }
    if let Some(tx) = r.resent {
        if let Some(c) = s.in_flight.as_mut() {
            c.tx = tx.to_string();
        }
    }
    if let Some((tx, ok)) = r.confirmed {
        s.last_confirmed = Some((tx.to_string(), ok));
        s.in_flight = None;
    }
    if r.abandoned.is_some() {
        s.in_flight = None;
    }
    s.waiting = r.in_window.iter().map(|c| c.to_hex()).collect();
    let mut failed: BTreeMap<String, String> =
        s.failed.drain(..).map(|f| (f.channel, f.reason)).collect();
    for (c, why) in r.rejected.iter().chain(&r.skipped).chain(&r.close_rejected) {
        failed.insert(c.to_hex(), redact_text(why));
    }
    s.failed = failed
        .into_iter()
        .map(|(channel, reason)| FailedClaim { channel, reason })
        .take(MAX_FAILED)
        .collect();
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::B256;
    use tally_core::ChannelId;

    #[test]
    fn ticks_move_claims_from_in_flight_to_confirmed() {
        let v = SettlementView::default();
        assert!(!v.snapshot().running);
        let c = ChannelId([7; 32]);
        let tx = B256::repeat_byte(1);
        v.observe(&Ok(TickReport {
            submitted: Some((tx, vec![c])),
            rejected: vec![(ChannelId([8; 32]), "BadSignature".into())],
            ..Default::default()
        }));
        let s = v.snapshot();
        assert!(s.running);
        assert_eq!(s.in_flight.as_ref().unwrap().channels, vec![c.to_hex()]);
        assert_eq!(s.failed[0].reason, "BadSignature");
        v.observe(&Ok(TickReport {
            confirmed: Some((tx, true)),
            ..Default::default()
        }));
        v.observe(&Err(ChainError::UnknownChannel(c)));
        let s = v.snapshot();
        assert_eq!(s.in_flight, None);
        assert_eq!(s.last_confirmed, Some((tx.to_string(), true)));
        assert_eq!((s.ticks, s.errors), (3, 1));
        assert!(s.last_error.is_some());
        assert_eq!(s.failed.len(), 1, "failures are kept until replaced");
    }
}
