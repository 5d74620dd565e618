//! The client's pool of lanes (spec/PROTOCOL.md §5.4): one request in flight per lane, so a
//! client sends up to `lanes` requests of one channel at once. A request leases a lane and
//! gives it back, with the lane's next seq, when it is answered.

use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A lane and what the client knows of its next seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LaneSlot {
    /// The lane number.
    pub lane: u32,
    /// The seq to send next; `None` when unknown (a request whose answer was lost may or may
    /// not have been recorded), so the lane is resynced with the provider before its next use.
    pub next_seq: Option<u64>,
}

/// Free lanes, and a semaphore that makes a request wait when all are leased.
#[derive(Clone)]
pub(crate) struct LanePool {
    free: Arc<Mutex<Vec<LaneSlot>>>,
    permits: Arc<Semaphore>,
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
            })
            .collect();
        LanePool {
            free: Arc::new(Mutex::new(free)),
            permits: Arc::new(Semaphore::new(count as usize)),
        }
    }

    /// Waits for a free lane.
    pub async fn lease(&self) -> Lease {
        // The semaphore is never closed, so acquiring only waits.
        let permit = match self.permits.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => unreachable!("the lane semaphore is never closed"),
        };
        let slot = self.with_free(|f| f.pop()).unwrap_or(LaneSlot {
            lane: 0,
            next_seq: None,
        });
        Lease {
            slot,
            pool: self.clone(),
            _permit: permit,
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
        match self.free.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let slot = self.slot;
        self.pool.with_free(|f| f.push(slot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lanes_are_leased_once_and_come_back_with_their_seq() {
        let pool = LanePool::new(2, |lane| Some(u64::from(lane) * 10));
        let mut a = pool.lease().await;
        let b = pool.lease().await;
        assert_eq!(a.slot.lane, 0);
        assert_eq!(b.slot.lane, 1);
        assert_eq!(b.slot.next_seq, Some(10));
        // A third lease waits until one is returned.
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), pool.lease()).await;
        assert!(third.is_err());
        a.slot.next_seq = Some(1);
        drop(a);
        let again = pool.lease().await;
        assert_eq!(
            again.slot,
            LaneSlot {
                lane: 0,
                next_seq: Some(1)
            }
        );
        drop(again);
        pool.set_free(|lane| u64::from(lane) + 100);
        assert_eq!(pool.lease().await.slot.next_seq, Some(100));
        let unknown = LanePool::new(1, |_| None);
        assert_eq!(unknown.lease().await.slot.next_seq, None);
    }
}
