//! Per-channel state held in memory, rebuilt from the log on first use (so a restarted
//! gateway continues exactly where its durable log ends), and the lock that orders the
//! admissions and appends of one channel while different channels run in parallel.
//!
//! The lock is held for admission and for the append only, never across the upstream call
//! (DESIGN.md §7): between the two, an admitted request holds a *reservation* of its
//! `max_amount` and its lane is *busy*.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tally_core::encoding::Canonical;
use tally_core::hash::TreeHasher;
use tally_core::sequence::{LaneTail, LogState};
use tally_core::{ChannelId, Hash, PublicKey, Record};
use tally_http::WireCheckpoint;
use tally_log::Frontier;
use tokio::sync::Mutex as AsyncMutex;

use crate::backend::{Log, Side};
use crate::bindings::Closing;
use crate::errors::GatewayError;

/// A response kept so a retry of a lane's last seq gets the same bytes (spec/HTTP.md §9).
#[derive(Clone, Debug)]
pub struct CachedResponse {
    /// HTTP status.
    pub status: u16,
    /// `content-type`, if any.
    pub content_type: Option<http::HeaderValue>,
    /// The body.
    pub body: Bytes,
    /// The `PAYMENT-RESPONSE` value.
    pub payment_response: http::HeaderValue,
}

impl CachedResponse {
    /// The byte-identical response a retry of its seq gets (spec/HTTP.md §9).
    pub fn into_response(self) -> axum::response::Response {
        let mut resp = axum::response::Response::new(axum::body::Body::from(self.body));
        *resp.status_mut() =
            http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::OK);
        if let Some(ct) = self.content_type {
            resp.headers_mut().insert(http::header::CONTENT_TYPE, ct);
        }
        resp.headers_mut()
            .insert(tally_http::headers::PAYMENT_RESPONSE, self.payment_response);
        resp
    }
}

/// A lane's last recorded request: what a retry of it is answered from.
#[derive(Clone, Debug)]
pub struct LaneLast {
    /// Its seq.
    pub seq: u64,
    /// The request hash it signed.
    pub request_hash: Hash,
    /// Its record's index in the log.
    pub index: u64,
    /// Its response, while held.
    pub cached: Option<CachedResponse>,
}

/// A record handed to the log and not yet durable: what the gateway answers from for it
/// meanwhile (an acknowledgement of the state after it, a retry, a stale seq).
#[derive(Clone, Debug)]
pub struct PendingRecord {
    /// The cumulative after the record.
    pub cumulative: u128,
    /// The log's root after the record, from the gateway's in-memory frontier.
    pub root: Hash,
    /// The record's canonical bytes.
    pub bytes: Bytes,
}

/// One lane of a channel (spec/PROTOCOL.md §5.4).
#[derive(Clone, Debug, Default)]
pub struct LaneState {
    /// The next seq and the largest acknowledged size.
    pub tail: LaneTail,
    /// The seq and request hash admitted and not yet recorded or refused.
    pub busy: Option<(u64, Hash)>,
    /// The last recorded request.
    pub last: Option<LaneLast>,
}

/// What the gateway knows of one channel. Mutated only under the channel's lock.
#[derive(Debug)]
pub struct ChannelState {
    /// The channel.
    pub id: ChannelId,
    /// The bound session key.
    pub session_key: Option<PublicKey>,
    /// The channel's request salt (spec/PROTOCOL.md §3.3), stored before the session key, so
    /// a bound channel loaded from the database always has one (older bindings excepted).
    pub salt: Option<tally_core::RequestSalt>,
    /// The durable head of the log, with its cumulative.
    pub durable: LogState,
    /// Each record handed to the log but not yet durable: indices `durable.size ..`, in
    /// order.
    pub pending: VecDeque<PendingRecord>,
    /// The right edge of the log with every pending record: its size is
    /// [`next_index`](Self::next_index).
    pub frontier: Frontier,
    /// The channel may have lost promised records in a crash and takes no append until its
    /// client restores it (spec/HTTP.md §5.6).
    pub restore_required: bool,
    /// While a restore is required: the nonce drawn for it, which every restore statement
    /// must carry (spec/PROTOCOL.md §5.7); a new one is drawn whenever the state is loaded.
    pub restore_nonce: Hash,
    /// This run of the gateway has durably marked the channel as one that may hold promises
    /// (spec/HTTP.md §5.6), so its receipts may be promised.
    pub promising: bool,
    /// The sum of the `max_amount`s of admitted requests not yet recorded (P5).
    pub reserved: u128,
    /// How many admitted requests are not yet recorded or refused.
    pub in_flight: u64,
    /// The lanes used so far.
    pub lanes: HashMap<u32, LaneState>,
    /// The last acknowledged state checked against the store, so a run of requests that
    /// acknowledge the same state reads it once.
    pub acked: Option<LogState>,
    /// Size of the latest client-signed checkpoint (0 if none).
    pub checkpoint_size: u64,
    /// Its cumulative.
    pub checkpoint_cumulative: u128,
    /// When it was accepted (or when this state was loaded, if earlier).
    pub checkpoint_at: Instant,
    /// Bytes of responses held for retries, over all lanes.
    pub cached_bytes: usize,
    /// The cooperative close the payee signed, if any: then nothing more is recorded.
    pub closing: Option<Closing>,
    /// The generation of the log store this state was loaded from: after the store is
    /// reopened, state of an older generation may not append.
    pub generation: u64,
    /// Which load of the channel this is, unique in the process: an admission taken from
    /// one state never settles or records into a state loaded after it (the state may be
    /// dropped and reloaded within one generation, after a failed commit).
    pub load: u64,
    /// Set when the state was found out of step with the log: it is reloaded on next use.
    pub stale: bool,
}

/// A process-wide counter of channel-state loads.
static LOADS: AtomicU64 = AtomicU64::new(1);

impl ChannelState {
    /// The index the next appended record gets.
    pub fn next_index(&self) -> u64 {
        self.durable.size + self.pending.len() as u64
    }

    /// The cumulative after every record handed to the log.
    pub fn tail_cumulative(&self) -> u128 {
        self.pending
            .back()
            .map_or(self.durable.cumulative, |p| p.cumulative)
    }

    /// The log's state after every record handed to it: what a promise-mode client may
    /// acknowledge.
    pub fn tail_state(&self) -> LogState {
        self.state_at(self.next_index()).unwrap_or(self.durable)
    }

    /// The state at `size` if it is the durable head or a pending one (`None` below the
    /// durable head: read it from the store).
    pub fn state_at(&self, size: u64) -> Option<LogState> {
        if size == self.durable.size {
            return Some(self.durable);
        }
        let k = size.checked_sub(self.durable.size + 1)?;
        let p = self.pending.get(usize::try_from(k).ok()?)?;
        Some(LogState {
            size,
            root: p.root,
            cumulative: p.cumulative,
        })
    }

    /// A pending record's bytes (`None`: durable or unknown, read it from the store).
    pub fn pending_record(&self, index: u64) -> Option<&Bytes> {
        let k = index.checked_sub(self.durable.size)?;
        self.pending.get(usize::try_from(k).ok()?).map(|p| &p.bytes)
    }

    /// Hands `bytes` (the record at [`next_index`](Self::next_index), whose cumulative is
    /// `cumulative`) to the in-memory head: the frontier and `pending` advance together.
    pub fn push_pending(&mut self, frontier: Frontier, cumulative: u128, bytes: Bytes) {
        let root = frontier.root(&tally_log::Blake3Hasher);
        self.frontier = frontier;
        self.pending.push_back(PendingRecord {
            cumulative,
            root,
            bytes,
        });
    }

    /// Moves the durable head up to the store's: records of this channel that became
    /// durable since (possibly appended by other requests' tasks) leave `pending`.
    pub(crate) async fn sync_durable(&mut self, store: &Log) -> Result<(), GatewayError> {
        // The size first (one read on PostgreSQL); the root only when it moved.
        if store.size(&self.id).await? == self.durable.size {
            return Ok(());
        }
        let Some(head) = store.head(&self.id).await? else {
            return Ok(());
        };
        while self.durable.size < head.size {
            let Some(p) = self.pending.pop_front() else {
                // Another writer's records, or this state was loaded while appends of an
                // earlier one were still queued: reload from the log.
                self.stale = true;
                return Err(GatewayError::new(
                    tally_http::Reason::StoreUnavailable,
                    "the channel's state is being reloaded; nothing was recorded; retry",
                ));
            };
            self.durable = LogState {
                size: self.durable.size + 1,
                root: p.root,
                cumulative: p.cumulative,
            };
        }
        if self.durable.root != head.root {
            self.stale = true;
            return Err(GatewayError::internal(
                "the durable root is not the one the gateway computed",
            ));
        }
        Ok(())
    }

    /// Keeps `response` as the answer to a retry of `lane`'s last request, within the
    /// per-channel budget `budget`: other lanes' held responses are dropped first.
    pub fn hold_response(
        &mut self,
        lane: u32,
        index: u64,
        response: CachedResponse,
        budget: usize,
    ) {
        let size = response.body.len();
        if size > budget {
            return;
        }
        let mut others: Vec<u32> = self
            .lanes
            .iter()
            .filter(|(l, s)| **l != lane && s.last.as_ref().is_some_and(|x| x.cached.is_some()))
            .map(|(l, _)| *l)
            .collect();
        others.sort_unstable();
        for other in others {
            if self.cached_bytes + size <= budget {
                break;
            }
            if let Some(dropped) = self
                .lanes
                .get_mut(&other)
                .and_then(|s| s.last.as_mut())
                .and_then(|x| x.cached.take())
            {
                self.cached_bytes = self.cached_bytes.saturating_sub(dropped.body.len());
            }
        }
        if self.cached_bytes + size > budget {
            return;
        }
        if let Some(last) = self
            .lanes
            .get_mut(&lane)
            .and_then(|s| s.last.as_mut())
            .filter(|x| x.index == index)
        {
            if let Some(old) = last.cached.replace(response) {
                self.cached_bytes = self.cached_bytes.saturating_sub(old.body.len());
            }
            self.cached_bytes += size;
        }
    }

    /// Rebuilds a channel's state from the durable log, the stored checkpoints, the keyed
    /// index of each lane's last record and the bindings (session key, close agreement).
    pub(crate) async fn load(
        id: ChannelId,
        store: &Log,
        generation: u64,
        side: &Side,
        promising: bool,
    ) -> Result<Self, GatewayError> {
        let salt = side
            .salt(&id)
            .await
            .map_err(|e| e.into_gateway("request salt"))?;
        let session_key = side
            .session(&id)
            .await
            .map_err(|e| e.into_gateway("session binding"))?;
        let closing = side
            .closing(&id)
            .await
            .map_err(|e| e.into_gateway("close agreement"))?;
        let durable = match store.head(&id).await? {
            Some(h) if h.size > 0 => LogState {
                size: h.size,
                root: h.root,
                cumulative: read_record(store, &id, h.size - 1)
                    .await?
                    .outcome
                    .cumulative,
            },
            _ => LogState {
                size: 0,
                root: tally_log::Blake3Hasher.empty(),
                cumulative: 0,
            },
        };
        let frontier = store.frontier_at(&id, durable.size, &durable.root).await?;
        let marked = side
            .is_promising(&id)
            .await
            .map_err(|e| e.into_gateway("promise mark"))?;
        let mut lanes = HashMap::new();
        for (lane, index) in store.keyed(&id).await? {
            let a = read_record(store, &id, index).await?.authorization;
            lanes.insert(
                lane,
                LaneState {
                    tail: LaneTail {
                        next_seq: a.seq.saturating_add(1),
                        ack_size: a.ack_size,
                    },
                    busy: None,
                    last: Some(LaneLast {
                        seq: a.seq,
                        request_hash: a.request_hash,
                        index,
                        cached: None,
                    }),
                },
            );
        }
        let (checkpoint_size, checkpoint_cumulative) = match store.latest_checkpoint(&id).await? {
            Some((size, bytes)) => {
                let wire: WireCheckpoint = serde_json::from_slice(&bytes)
                    .map_err(|e| GatewayError::internal(format!("stored checkpoint: {e}")))?;
                let body_end = wire.note.find("\n\n").map_or(0, |i| i + 1);
                let cp = tally_core::Checkpoint::parse_body(&wire.note[..body_end])
                    .map_err(|e| GatewayError::internal(format!("stored checkpoint: {e}")))?;
                (size, cp.cumulative)
            }
            None => (0, 0),
        };
        Ok(ChannelState {
            id,
            session_key,
            salt,
            durable,
            pending: VecDeque::new(),
            frontier,
            // A mark this run did not set: promises of an earlier run (or of the store
            // before it was reopened) may be lost.
            restore_required: marked && !promising,
            restore_nonce: Hash(rand::random()),
            promising,
            reserved: 0,
            in_flight: 0,
            lanes,
            acked: None,
            checkpoint_size,
            checkpoint_cumulative,
            checkpoint_at: Instant::now(),
            cached_bytes: 0,
            closing,
            generation,
            load: LOADS.fetch_add(1, Ordering::Relaxed),
            stale: false,
        })
    }
}

/// The record at `index` of the durable log, decoded.
pub(crate) async fn read_record(
    store: &Log,
    id: &ChannelId,
    index: u64,
) -> Result<Record, GatewayError> {
    let bytes = store.record(id, index).await?;
    Record::from_bytes(&bytes).map_err(|e| GatewayError::internal(format!("stored record: {e}")))
}

pub(crate) type Slot = Arc<AsyncMutex<Option<ChannelState>>>;

/// One lock per channel, for at most `capacity` channels at a time. Holding a channel's lock
/// is the only way to change its log.
///
/// Past the capacity, the least recently used slots that nobody holds are evicted; their
/// state is rebuilt from the log on next use. A slot is never evicted while a request holds
/// it (its `Arc` is shared then), so one channel never has two live locks.
pub struct Channels {
    map: Mutex<HashMap<ChannelId, (Slot, u64)>>,
    capacity: usize,
    clock: AtomicU64,
}

impl Channels {
    /// An empty map holding at most `capacity` (at least 1) channels.
    pub fn new(capacity: usize) -> Self {
        Channels {
            map: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            clock: AtomicU64::new(0),
        }
    }

    fn with_map<T>(&self, f: impl FnOnce(&mut HashMap<ChannelId, (Slot, u64)>) -> T) -> T {
        // A poisoned map only means another thread panicked while inserting; the data
        // (Arcs and counters) is still consistent.
        match self.map.lock() {
            Ok(mut m) => f(&mut m),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    /// The lock of `id` if it is in memory.
    pub fn existing(&self, id: &ChannelId) -> Option<Slot> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        self.with_map(|m| {
            m.get_mut(id).map(|(slot, used)| {
                *used = now;
                slot.clone()
            })
        })
    }

    /// The lock of `id`, created (state `None`, loaded under the lock) if absent.
    pub fn slot(&self, id: &ChannelId) -> Slot {
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        let capacity = self.capacity;
        self.with_map(|m| {
            if let Some((slot, used)) = m.get_mut(id) {
                *used = now;
                return slot.clone();
            }
            if m.len() >= capacity {
                evict_idle(m, capacity);
            }
            let slot = Slot::default();
            m.insert(*id, (slot.clone(), now));
            slot
        })
    }

    /// How many channels are in memory.
    pub fn len(&self) -> usize {
        self.with_map(|m| m.len())
    }

    /// Whether no channel is in memory.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every channel (after the log store was reopened): each reloads on next use.
    pub fn clear(&self) {
        self.with_map(|m| m.clear());
    }
}

/// Removes the least recently used eighth of the map among slots nobody holds, so an
/// eviction scan is paid once per `capacity / 8` insertions.
fn evict_idle(m: &mut HashMap<ChannelId, (Slot, u64)>, capacity: usize) {
    let mut idle: Vec<(u64, ChannelId)> = m
        .iter()
        .filter(|(_, (slot, _))| Arc::strong_count(slot) == 1)
        .map(|(id, (_, used))| (*used, *id))
        .collect();
    idle.sort_unstable();
    let excess = m.len() + 1 - capacity.min(m.len());
    let target = excess.max(capacity / 8).max(1);
    for (_, id) in idle.into_iter().take(target) {
        m.remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_slots_are_evicted_held_ones_are_not() {
        let channels = Channels::new(16);
        let held = channels.slot(&ChannelId([0; 32]));
        for i in 1..200u8 {
            channels.slot(&ChannelId([i; 32]));
            assert!(channels.len() <= 16, "map grew to {}", channels.len());
        }
        // The held slot survived every eviction and is still the same lock.
        let again = channels.existing(&ChannelId([0; 32])).unwrap();
        assert!(Arc::ptr_eq(&held, &again));
        // A recently used channel outlives older idle ones.
        assert!(channels.existing(&ChannelId([199; 32])).is_some());
        assert!(channels.existing(&ChannelId([1; 32])).is_none());
    }
}
