//! The client's pool of lanes (spec/PROTOCOL.md §5.4): one request in flight per lane, so a
//! client sends up to `lanes` requests of one channel at once. A request leases a lane and
//! gives it back, with the lane's next seq, when it is answered.
//!
//! A request whose answer was lost stays *unanswered* on its lane: sending the same request
//! again leases that lane and reuses that seq, so the provider answers it as a retry (the
//! same response, or the record) and never charges it twice (spec/HTTP.md §9).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tally_core::Hash;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// A lane and what the client knows of its next seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LaneSlot {
    /// The lane number.
    pub lane: u32,
    /// The seq to send next; `None` when unknown (a request whose answer was lost may or may
    /// not have been recorded), so the lane is resynced with the provider before its next use.
    pub next_seq: Option<u64>,
    /// The seq and request hash of a request on this lane whose answer was lost.
    pub unanswered: Option<(u64, Hash)>,
}

/// Free lanes, and a semaphore that makes a request wait when all are leased.
#[derive(Clone)]
pub(crate) struct LanePool {
    free: Arc<Mutex<Vec<LaneSlot>>>,
    permits: Arc<Semaphore>,
    /// Request hash → the lane it is unanswered on.
    unanswered: Arc<Mutex<HashMap<[u8; 32], u32>>>,
    returned: Arc<Notify>,
}

/// A leased lane; dropped, it returns to the pool with its `slot` as last set.
pub(crate) struct Lease {
    pub slot: LaneSlot,
    pool: LanePool,
    _permit: OwnedSemaphorePermit,
}

impl LanePool {
    /// A pool of lanes `0..count`, each starting at `next_seq(lane)`.
    pub fn new(count: u32, next_seq: impl Fn(u32) -> Option<u64>) -> Self {
        let count = count.max(1);
        // Lane 0 is leased first (popped from the end).
        let free = (0..count)
            .rev()
            .map(|lane| LaneSlot {
                lane,
                next_seq: next_seq(lane),
                unanswered: None,
            })
            .collect();
        LanePool {
            free: Arc::new(Mutex::new(free)),
            permits: Arc::new(Semaphore::new(count as usize)),
            unanswered: Arc::default(),
            returned: Arc::new(Notify::new()),
        }
    }

    /// Waits for a free lane: the one `request` is unanswered on, if any (then its slot's
    /// `unanswered` names it), else any, preferring lanes with nothing unanswered.
    pub async fn lease_for(&self, request: &Hash) -> Lease {
        loop {
            // Registered before the free list is looked at, so a lane returned meanwhile
            // still wakes this request.
            let returned = self.returned.notified();
            // The semaphore is never closed, so acquiring only waits.
            let permit = match self.permits.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => unreachable!("the lane semaphore is never closed"),
            };
            let pinned = lock(&self.unanswered).get(&request.0).copied();
            let taken = self.with_free(|f| {
                let at = match pinned {
                    Some(lane) => f.iter().rposition(|s| s.lane == lane),
                    None => f
                        .iter()
                        .rposition(|s| s.unanswered.is_none())
                        .or_else(|| f.len().checked_sub(1)),
                };
                at.map(|i| f.remove(i))
            });
            if let Some(slot) = taken {
                return Lease {
                    slot,
                    pool: self.clone(),
                    _permit: permit,
                };
            }
            drop(permit);
            returned.await;
        }
    }

    /// Sets every free lane's next seq (once the mirror is level with the provider's log).
    pub fn set_free(&self, next_seq: impl Fn(u32) -> u64) {
        self.with_free(|f| {
            f.iter_mut()
                .for_each(|s| s.next_seq = Some(next_seq(s.lane)))
        });
    }

    fn with_free<T>(&self, f: impl FnOnce(&mut Vec<LaneSlot>) -> T) -> T {
        f(&mut lock(&self.free))
    }
}

/// A poisoned lock only means a panic elsewhere; the lane data is still consistent.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Lease {
    /// Notes that the request `request` sent at `seq` got no answer.
    pub fn unanswered(&mut self, seq: u64, request: Hash) {
        self.slot.next_seq = None;
        self.slot.unanswered = Some((seq, request));
    }

    /// Notes an answer for `request` on this lane, which now continues at `next_seq`: a
    /// request unanswered here is settled once it is this one, or once a later seq is known
    /// (its seq was used, by it or by another request, so it can never be recorded again).
    pub fn answered(&mut self, request: &Hash, next_seq: u64) {
        self.slot.next_seq = Some(next_seq);
        if self
            .slot
            .unanswered
            .is_some_and(|(seq, h)| h == *request || next_seq > seq)
        {
            self.slot.unanswered = None;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let slot = self.slot;
        {
            let mut unanswered = lock(&self.pool.unanswered);
            unanswered.retain(|_, lane| *lane != slot.lane);
            if let Some((_, request)) = slot.unanswered {
                unanswered.insert(request.0, slot.lane);
            }
        }
        self.pool.with_free(|f| f.push(slot));
        self.pool.returned.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lanes_are_leased_once_and_come_back_with_their_seq() {
        let any = Hash([0; 32]);
        let pool = LanePool::new(2, |lane| Some(u64::from(lane) * 10));
        let mut a = pool.lease_for(&any).await;
        let b = pool.lease_for(&any).await;
        assert_eq!(a.slot.lane, 0);
        assert_eq!(b.slot.lane, 1);
        assert_eq!(b.slot.next_seq, Some(10));
        // A third lease waits until one is returned.
        let third =
            tokio::time::timeout(std::time::Duration::from_millis(50), pool.lease_for(&any)).await;
        assert!(third.is_err());
        a.slot.next_seq = Some(1);
        drop(a);
        let again = pool.lease_for(&any).await;
        assert_eq!((again.slot.lane, again.slot.next_seq), (0, Some(1)));
        drop(again);
        pool.set_free(|lane| u64::from(lane) + 100);
        assert_eq!(pool.lease_for(&any).await.slot.next_seq, Some(100));
        let unknown = LanePool::new(1, |_| None);
        assert_eq!(unknown.lease_for(&any).await.slot.next_seq, None);
    }

    #[tokio::test]
    async fn a_resend_of_an_unanswered_request_waits_for_its_lane_and_seq() {
        let (lost, other) = (Hash([1; 32]), Hash([2; 32]));
        let pool = LanePool::new(2, |_| Some(0));
        let mut a = pool.lease_for(&other).await;
        a.unanswered(4, lost);
        let lane = a.slot.lane;
        drop(a);
        // Another request prefers a lane with nothing unanswered.
        let b = pool.lease_for(&other).await;
        assert_ne!(b.slot.lane, lane);
        // The resend gets the lane it is unanswered on, with its seq named…
        let mut c = pool.lease_for(&lost).await;
        assert_eq!((c.slot.lane, c.slot.unanswered), (lane, Some((4, lost))));
        // …and, while that lane is leased, a second resend waits for it.
        drop(b);
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), pool.lease_for(&lost));
        assert!(waiting.await.is_err(), "the resend took another lane");
        c.answered(&lost, 5);
        assert_eq!(c.slot.unanswered, None);
        drop(c);
        let d = pool.lease_for(&lost).await;
        assert_eq!(d.slot.next_seq, Some(5));
    }
}
