//! The rules a record must obey given its place in its channel's log (spec/PROTOCOL.md §5.3,
//! R5, R7 and R8), as pure state machines: the provider's admission, the client's mirror and
//! the bill audit all apply these, so the rules live here once.
//!
//! - R5, position: record `i` says `index = i`, and its cumulative is the previous record's
//!   cumulative plus its amount.
//! - R7, acknowledgement: the acknowledged state is one the log really had, at most
//!   [`ACK_WINDOW`] records before the record, so a verifier needs only a bounded window of
//!   recent states to check any log, however long (DESIGN-DECISIONS.md, "Acknowledgements
//!   stay within a window").
//! - R8, lanes: `lane < MAX_LANES`; on each lane, seqs run 0, 1, 2, … in log order and
//!   acknowledged sizes never decrease.

use std::collections::{BTreeMap, VecDeque};

use thiserror::Error;

use crate::authorization::Authorization;
use crate::hash::Hash;
use crate::record::{apply_amount, Record};

/// The most lanes any channel may have; the terms' `max_lanes` is at most this. A protocol
/// constant so that per-lane state is bounded for every verifier.
pub const MAX_LANES: u32 = 1024;

/// How far behind a record its acknowledged state may be: `index - ack_size ≤ ACK_WINDOW`.
pub const ACK_WINDOW: u64 = 65_536;

/// A state of a channel's log: what an authorization acknowledges and a checkpoint commits to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogState {
    /// Number of records.
    pub size: u64,
    /// Merkle root at `size`.
    pub root: Hash,
    /// Cumulative net amount at `size`.
    pub cumulative: u128,
}

impl LogState {
    /// The state an authorization acknowledges.
    pub fn acknowledged_by(a: &Authorization) -> Self {
        LogState {
            size: a.ack_size,
            root: a.ack_root,
            cumulative: a.ack_cumulative,
        }
    }
}

/// Why a record (or an authorization) cannot take the next place on its lane or in the log.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum SequenceError {
    /// `lane ≥ max_lanes`.
    #[error("lane {lane} is not below max_lanes {max_lanes}")]
    LaneOutOfRange {
        /// The lane named.
        lane: u32,
        /// The limit in force.
        max_lanes: u32,
    },
    /// The seq is not the lane's next one.
    #[error("lane {lane}: seq {got}, expected {expected}")]
    SeqGap {
        /// The lane.
        lane: u32,
        /// The lane's next seq.
        expected: u64,
        /// The seq named.
        got: u64,
    },
    /// The acknowledged size is below one this lane already acknowledged.
    #[error("lane {lane}: acknowledged size {got} is below the lane's earlier {previous}")]
    AckBackwards {
        /// The lane.
        lane: u32,
        /// The lane's largest acknowledged size so far.
        previous: u64,
        /// The size acknowledged now.
        got: u64,
    },
    /// The acknowledged size is beyond the log, or more than [`ACK_WINDOW`] behind it.
    #[error("acknowledged size {ack_size} is outside {low}..={high}")]
    AckOutOfWindow {
        /// The size acknowledged.
        ack_size: u64,
        /// The oldest size that may be acknowledged here.
        low: u64,
        /// The newest.
        high: u64,
    },
    /// The acknowledged root or cumulative is not the log's at that size.
    #[error("acknowledged state at size {size} is not the log's")]
    AckMismatch {
        /// The size acknowledged.
        size: u64,
    },
    /// The record's index is not its position.
    #[error("record at position {position} says index {index}")]
    WrongIndex {
        /// Where it is.
        position: u64,
        /// What it says.
        index: u64,
    },
    /// The cumulative does not follow from the previous one and the amount.
    #[error("cumulative: {previous} {amount:+} is not {cumulative}")]
    WrongCumulative {
        /// Cumulative before the record.
        previous: u128,
        /// The record's amount.
        amount: i128,
        /// The cumulative it states.
        cumulative: u128,
    },
}

/// One lane's position: the seq it expects next and the largest size it acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LaneTail {
    /// The next seq (the number of records on the lane).
    pub next_seq: u64,
    /// The largest acknowledged size among the lane's records.
    pub ack_size: u64,
}

/// Every lane's position (R8). At most [`MAX_LANES`] entries, so bounded for any log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lanes {
    tails: BTreeMap<u32, LaneTail>,
}

impl Lanes {
    /// The position of `lane` (zero if it has no record yet).
    pub fn tail(&self, lane: u32) -> LaneTail {
        self.tails.get(&lane).copied().unwrap_or_default()
    }

    /// Every lane with a record, in lane order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, LaneTail)> + '_ {
        self.tails.iter().map(|(l, t)| (*l, *t))
    }

    /// Whether `auth` may be the next record of its lane, with `max_lanes` in force
    /// (at most [`MAX_LANES`]).
    pub fn check(&self, auth: &Authorization, max_lanes: u32) -> Result<(), SequenceError> {
        let max_lanes = max_lanes.min(MAX_LANES);
        if auth.lane >= max_lanes {
            return Err(SequenceError::LaneOutOfRange {
                lane: auth.lane,
                max_lanes,
            });
        }
        let tail = self.tail(auth.lane);
        if auth.seq != tail.next_seq {
            return Err(SequenceError::SeqGap {
                lane: auth.lane,
                expected: tail.next_seq,
                got: auth.seq,
            });
        }
        if auth.ack_size < tail.ack_size {
            return Err(SequenceError::AckBackwards {
                lane: auth.lane,
                previous: tail.ack_size,
                got: auth.ack_size,
            });
        }
        Ok(())
    }

    /// Records `auth` as its lane's newest (after [`check`](Self::check) passed).
    pub fn advance(&mut self, auth: &Authorization) {
        let tail = self.tails.entry(auth.lane).or_default();
        tail.next_seq = auth.seq.saturating_add(1);
        tail.ack_size = tail.ack_size.max(auth.ack_size);
    }

    /// Sets a lane's position directly (when rebuilding from a stored record).
    pub fn set(&mut self, lane: u32, tail: LaneTail) {
        self.tails.insert(lane, tail);
    }
}

/// The acknowledgement window rule on its own (R7's bounds): a record at `index`, or a request
/// whose record can be at most at `index`, may acknowledge sizes
/// `index.saturating_sub(ACK_WINDOW) ..= newest` where `newest` is the newest size the
/// acknowledging party could know.
pub fn check_ack_bounds(ack_size: u64, index: u64, newest: u64) -> Result<(), SequenceError> {
    let low = index.saturating_sub(ACK_WINDOW);
    if ack_size < low || ack_size > newest {
        return Err(SequenceError::AckOutOfWindow {
            ack_size,
            low,
            high: newest,
        });
    }
    Ok(())
}

/// R5, R7 and R8 for `record` as the record after `head`: `lanes` are the lanes'
/// positions and `state_at` gives the log's state at an earlier size (`None`: unknown, which
/// fails the check). Returns the cumulative after the record. Every verifier of record order
/// (the gateway's mirror checks, the client's mirror, the bill audit) calls this.
pub fn check_position(
    record: &Record,
    head: LogState,
    lanes: &Lanes,
    state_at: impl FnOnce(u64) -> Option<LogState>,
) -> Result<u128, SequenceError> {
    let a = &record.authorization;
    let o = &record.outcome;
    if o.index != head.size {
        return Err(SequenceError::WrongIndex {
            position: head.size,
            index: o.index,
        });
    }
    match apply_amount(head.cumulative, o.amount) {
        Some(c) if c == o.cumulative => {}
        _ => {
            return Err(SequenceError::WrongCumulative {
                previous: head.cumulative,
                amount: o.amount,
                cumulative: o.cumulative,
            })
        }
    }
    check_ack_bounds(a.ack_size, head.size, head.size)?;
    let known = if a.ack_size == head.size {
        Some(head)
    } else {
        state_at(a.ack_size)
    };
    match known {
        Some(s) if s == LogState::acknowledged_by(a) => {}
        _ => return Err(SequenceError::AckMismatch { size: a.ack_size }),
    }
    lanes.check(a, MAX_LANES)?;
    Ok(o.cumulative)
}

/// The last [`ACK_WINDOW`]` + 1` states of a log: enough to check the acknowledgement of any
/// record appended next.
#[derive(Clone, Debug)]
pub struct RecentStates {
    /// The size of `states[0]`.
    first: u64,
    /// `(root, cumulative)` at sizes `first, first + 1, …`.
    states: VecDeque<(Hash, u128)>,
    capacity: usize,
}

impl RecentStates {
    /// A window holding the empty log's state (`empty_root` at size 0).
    pub fn new(empty_root: Hash) -> Self {
        Self::starting_at(
            LogState {
                size: 0,
                root: empty_root,
                cumulative: 0,
            },
            ACK_WINDOW as usize + 1,
        )
    }

    /// A window of `capacity` states whose oldest is `state`.
    pub fn starting_at(state: LogState, capacity: usize) -> Self {
        let mut states = VecDeque::new();
        states.push_back((state.root, state.cumulative));
        RecentStates {
            first: state.size,
            states,
            capacity: capacity.max(1),
        }
    }

    /// The newest state.
    pub fn head(&self) -> LogState {
        let (root, cumulative) = self.states.back().copied().unwrap_or_default();
        LogState {
            size: self.first + self.states.len() as u64 - 1,
            root,
            cumulative,
        }
    }

    /// The state at `size`, if still in the window.
    pub fn get(&self, size: u64) -> Option<LogState> {
        let k = size.checked_sub(self.first)?;
        let (root, cumulative) = *self.states.get(usize::try_from(k).ok()?)?;
        Some(LogState {
            size,
            root,
            cumulative,
        })
    }

    /// Adds the state after one more record, forgetting the oldest beyond the capacity.
    pub fn push(&mut self, root: Hash, cumulative: u128) {
        self.states.push_back((root, cumulative));
        while self.states.len() > self.capacity {
            self.states.pop_front();
            self.first += 1;
        }
    }
}

/// A log checked record by record in index order: R5, R7 and R8 for each record, in bounded
/// memory. The caller computes each new root (it owns the tree) and checks R1–R4 and the
/// signatures.
#[derive(Clone, Debug)]
pub struct Sequence {
    recent: RecentStates,
    lanes: Lanes,
}

impl Sequence {
    /// An empty log whose root is `empty_root`.
    pub fn new(empty_root: Hash) -> Self {
        Sequence {
            recent: RecentStates::new(empty_root),
            lanes: Lanes::default(),
        }
    }

    /// The log's current state.
    pub fn head(&self) -> LogState {
        self.recent.head()
    }

    /// The lanes' positions.
    pub fn lanes(&self) -> &Lanes {
        &self.lanes
    }

    /// Checks that `record` may be the next record: its index, cumulative, acknowledgement
    /// and lane position. Returns the cumulative after it.
    pub fn check_next(&self, record: &Record) -> Result<u128, SequenceError> {
        check_position(record, self.head(), &self.lanes, |size| {
            self.recent.get(size)
        })
    }

    /// Appends a record [`check_next`](Self::check_next) accepted; `root` is the log's root
    /// with it.
    pub fn push(&mut self, record: &Record, root: Hash) {
        self.lanes.advance(&record.authorization);
        self.recent.push(root, record.outcome.cumulative);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::ChannelId;
    use crate::outcome::Outcome;
    use crate::signature::Signature;

    fn auth(lane: u32, seq: u64, ack: LogState) -> Authorization {
        Authorization {
            version: crate::VERSION,
            channel_id: ChannelId([1; 32]),
            lane,
            seq,
            request_hash: Hash([2; 32]),
            max_amount: 100,
            ack_size: ack.size,
            ack_root: ack.root,
            ack_cumulative: ack.cumulative,
            terms_hash: Hash([3; 32]),
        }
    }

    fn record(a: Authorization, index: u64, amount: i128, cumulative: u128) -> Record {
        let sig = Signature([0; 64]);
        Record::new(
            a,
            sig,
            Outcome {
                version: crate::VERSION,
                channel_id: a.channel_id,
                lane: a.lane,
                seq: a.seq,
                index,
                authorization_hash: a.signed_hash(&sig),
                units: crate::ONE_CALL,
                amount,
                cumulative,
                response_hash: Hash([4; 32]),
                time_ms: 0,
            },
        )
    }

    fn root_of(n: u64) -> Hash {
        Hash([n as u8; 32])
    }

    #[test]
    fn lanes_interleave_and_each_lane_stays_strict() {
        let mut s = Sequence::new(root_of(0));
        let empty = s.head();
        // Two lanes acknowledge the empty log; their records land in either order.
        let r0 = record(auth(1, 0, empty), 0, 5, 5);
        s.check_next(&r0).unwrap();
        s.push(&r0, root_of(1));
        let r1 = record(auth(0, 0, empty), 1, 7, 12);
        s.check_next(&r1).unwrap();
        s.push(&r1, root_of(2));
        // Lane 1 again: seq 1, acknowledging size 1.
        let at1 = s.recent.get(1).unwrap();
        let r2 = record(auth(1, 1, at1), 2, 1, 13);
        assert_eq!(s.check_next(&r2), Ok(13));
        // A seq gap, a repeated seq, a wrong index, a wrong cumulative, a forged ack.
        let gap = record(auth(1, 2, at1), 2, 1, 13);
        assert!(matches!(
            s.check_next(&gap),
            Err(SequenceError::SeqGap { expected: 1, .. })
        ));
        let again = record(auth(0, 0, at1), 2, 1, 13);
        assert!(matches!(
            s.check_next(&again),
            Err(SequenceError::SeqGap { .. })
        ));
        let wrong_index = record(auth(1, 1, at1), 3, 1, 13);
        assert!(matches!(
            s.check_next(&wrong_index),
            Err(SequenceError::WrongIndex { .. })
        ));
        let wrong_cum = record(auth(1, 1, at1), 2, 1, 14);
        assert!(matches!(
            s.check_next(&wrong_cum),
            Err(SequenceError::WrongCumulative { .. })
        ));
        let forged = LogState {
            root: root_of(9),
            ..at1
        };
        let r_forged = record(auth(1, 1, forged), 2, 1, 13);
        assert_eq!(
            s.check_next(&r_forged),
            Err(SequenceError::AckMismatch { size: 1 })
        );
        s.push(&r2, root_of(3));
        // Lane 1 acknowledged size 1; acknowledging size 0 now goes backwards.
        let back = record(auth(1, 2, empty), 3, 1, 14);
        assert!(matches!(
            s.check_next(&back),
            Err(SequenceError::AckBackwards { previous: 1, .. })
        ));
        // Beyond the log.
        let future = LogState {
            size: 9,
            ..s.head()
        };
        let r_future = record(auth(1, 2, future), 3, 1, 14);
        assert!(matches!(
            s.check_next(&r_future),
            Err(SequenceError::AckOutOfWindow { .. })
        ));
    }

    #[test]
    fn lane_limit_is_enforced() {
        let lanes = Lanes::default();
        let empty = LogState {
            size: 0,
            root: root_of(0),
            cumulative: 0,
        };
        assert!(lanes.check(&auth(3, 0, empty), 4).is_ok());
        assert_eq!(
            lanes.check(&auth(4, 0, empty), 4),
            Err(SequenceError::LaneOutOfRange {
                lane: 4,
                max_lanes: 4
            })
        );
        assert!(matches!(
            lanes.check(&auth(MAX_LANES, 0, empty), u32::MAX),
            Err(SequenceError::LaneOutOfRange { .. })
        ));
    }

    #[test]
    fn the_window_forgets_only_what_no_record_may_acknowledge() {
        let mut w = RecentStates::starting_at(
            LogState {
                size: 0,
                root: root_of(0),
                cumulative: 0,
            },
            4,
        );
        for n in 1..=10u64 {
            w.push(root_of(n), u128::from(n));
        }
        assert_eq!(w.head().size, 10);
        assert!(w.get(6).is_none());
        assert_eq!(w.get(7).map(|s| s.root), Some(root_of(7)));
        assert_eq!(w.get(10).map(|s| s.cumulative), Some(10));
        assert!(w.get(11).is_none());
        assert!(check_ack_bounds(0, ACK_WINDOW, ACK_WINDOW).is_ok());
        assert!(check_ack_bounds(0, ACK_WINDOW + 1, ACK_WINDOW + 1).is_err());
    }
}
