//! The durable store: many channel logs in one sled database (DESIGN.md §4, "The log store").
//!
//! Layout of the single sled tree `logs` (integers big-endian, so keys sort by index):
//!
//! | key | value |
//! |---|---|
//! | `V` | format: `tally-log/1 ` followed by the hasher's name |
//! | `E` · channel · index:u64 | the record (leaf data) |
//! | `T` · channel · block:u64 | tile: the 126 stored hashes of levels 0–5 inside the complete 64-leaf block |
//! | `U` · channel · level:u8 · index:u64 | a stored hash of level 6 or above |
//! | `M` · channel | head: size:u64 · root (32 bytes) |
//! | `C` · channel · size:u64 | a checkpoint the parties signed at that size |
//! | `K` · channel · key:u32 | index:u64 of the newest record appended under that key |
//!
//! A tile lists level 0's 64 hashes, then level 1's 32, down to level 5's 2 (tlog's tiles,
//! height 6). Any inclusion proof reads one tile for its lower six levels; the levels above
//! are few (one hash per 32 records) and are kept in memory per channel once read. The hashes
//! of the last, incomplete block are kept in memory only: on open they are recomputed from its
//! at most 63 records.
//!
//! One writer thread owns all appends. It drains whatever is queued, writes one
//! `apply_batch` (atomic: records, hashes and heads together) and one `flush()`, and only
//! then answers the callers: an index reported durable is on disk (P8).

mod fsck;
mod layout;
mod reader;
mod recovery;
mod writer;

use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::pin::Pin;
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use tally_core::hash::{Blake3Hasher, Hash, TreeHasher};
use tally_core::ChannelId;
use tokio::sync::oneshot;

pub use layout::TILE_HEIGHT;

use crate::error::LogError;
use crate::proof;
use crate::tile_cache::TileCache;
use crate::tree::range_hash;
use layout::{checkpoint_key, entry_key, key_index, KEYED};
use reader::{
    latest_checkpoint, load_upper, read_record, split_checkpoint, ChannelReader, Memories,
};
use recovery::{check_format, load_and_check_heads};
use writer::{Job, Writer};

/// Tuning of a [`LogStore`].
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The most records one group commit takes; more wait for the next.
    pub max_group_records: usize,
    /// How many append requests may queue before `append` blocks (back-pressure).
    pub queue_depth: usize,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
    /// The in-memory budget for hash tiles (64 bytes per record), in bytes.
    pub tile_cache_bytes: usize,
    /// Whether each group commit ends with `fdatasync` on sled's data file. sled 0.34's
    /// `flush()` uses `sync_file_range` on Linux, which survives a process crash but does not
    /// flush the disk's write cache; only this makes a commit survive a power loss (P8). Turn
    /// it off only for throwaway stores.
    pub sync_data: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_group_records: 4096,
            queue_depth: 65536,
            cache_bytes: 256 << 20,
            tile_cache_bytes: 256 << 20,
            sync_data: true,
        }
    }
}

/// The durable head of one channel's log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    /// Number of durable records.
    pub size: u64,
    /// Root at `size`.
    pub root: Hash,
}

/// Appends queued and not yet durable ([`LogStore::pending`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// Records enqueued whose tickets have not resolved yet.
    pub records: u64,
    /// How long the oldest of them has waited, if any.
    pub oldest: Option<std::time::Duration>,
}

/// What [`LogStore::fsck`] found for one channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsckReport {
    /// The channel checked.
    pub channel: ChannelId,
    /// The head size the store claims.
    pub size: u64,
    /// The first record index at which recomputation disagrees with what is stored, if any.
    pub first_bad_index: Option<u64>,
    /// A description of the first problem, if any.
    pub problem: Option<String>,
    /// Something worth knowing that is not damage (a stray record beyond the head).
    pub note: Option<String>,
}

impl FsckReport {
    /// Whether everything recomputed matches.
    pub fn is_ok(&self) -> bool {
        self.first_bad_index.is_none() && self.problem.is_none()
    }
}

/// A pending append. Await it, or call [`Ticket::wait`] outside an async context; it resolves
/// to the indices appended once they are durable.
pub struct Ticket(TicketState);

enum TicketState {
    Waiting(oneshot::Receiver<Result<Range<u64>, LogError>>),
    Failed(Option<LogError>),
}

impl Ticket {
    /// Whether the append was refused before it was queued (a full queue, a stopped
    /// writer): nothing of it will be written, so the caller may undo what it prepared.
    pub fn refused_now(&self) -> bool {
        matches!(self.0, TicketState::Failed(_))
    }

    /// Blocks until the append is durable. Must not be called from inside an async runtime;
    /// `.await` the ticket there.
    pub fn wait(self) -> Result<Range<u64>, LogError> {
        match self.0 {
            TicketState::Waiting(rx) => rx.blocking_recv().unwrap_or(Err(LogError::WriterStopped)),
            TicketState::Failed(e) => Err(e.unwrap_or(LogError::WriterStopped)),
        }
    }
}

impl Future for Ticket {
    type Output = Result<Range<u64>, LogError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            TicketState::Waiting(rx) => Pin::new(rx)
                .poll(cx)
                .map(|r| r.unwrap_or(Err(LogError::WriterStopped))),
            TicketState::Failed(e) => Poll::Ready(Err(e.take().unwrap_or(LogError::WriterStopped))),
        }
    }
}

type Heads = Arc<RwLock<HashMap<ChannelId, Head>>>;

/// Why the store stopped accepting writes, once a commit has failed.
type Poison = Arc<RwLock<Option<String>>>;

fn poisoned(flag: &Poison) -> Option<String> {
    flag.read().ok().and_then(|p| p.clone())
}

/// Many channel logs in one sled database, with one group-committing writer.
pub struct LogStore<H: TreeHasher = Blake3Hasher> {
    db: sled::Db,
    tree: sled::Tree,
    hasher: H,
    heads: Heads,
    memories: Memories,
    tiles: Arc<TileCache>,
    poisoned: Poison,
    data_file: Option<Arc<std::fs::File>>,
    pending: Arc<writer::PendingQueue>,
    jobs: Option<SyncSender<Job>>,
    writer: Option<JoinHandle<()>>,
}

impl LogStore<Blake3Hasher> {
    /// Opens (or creates) a BLAKE3 store at `path` with default tuning.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, LogError> {
        Self::open_with(path, Blake3Hasher, StoreConfig::default())
    }
}

impl<H: TreeHasher> LogStore<H> {
    /// Opens (or creates) a store, checks every channel's head against its stored hashes, and
    /// starts the writer.
    pub fn open_with(
        path: impl AsRef<Path>,
        hasher: H,
        config: StoreConfig,
    ) -> Result<Self, LogError> {
        let path = path.as_ref();
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(config.cache_bytes)
            .open()?;
        // sled keeps every record and tile of ours in this one file (values this small never
        // become separate blobs), so syncing it makes a flushed group durable.
        let data_file = if config.sync_data {
            Some(Arc::new(std::fs::File::open(path.join("db")).map_err(
                |e| LogError::CommitFailed(format!("cannot open sled's data file to sync it: {e}")),
            )?))
        } else {
            None
        };
        let tree = db.open_tree("logs")?;
        check_format(&db, &tree, &hasher)?;
        let (heads, memories) = load_and_check_heads(&tree, &hasher)?;
        let heads: Heads = Arc::new(RwLock::new(heads));
        let memories: Memories = Arc::new(RwLock::new(memories));
        let tiles = Arc::new(TileCache::new(config.tile_cache_bytes));
        let poisoned_flag: Poison = Arc::default();
        let (tx, rx) = mpsc::sync_channel(config.queue_depth.max(1));
        let pending = Arc::new(writer::PendingQueue::default());
        let writer = Writer {
            db: db.clone(),
            tree: tree.clone(),
            hasher: hasher.clone(),
            heads: heads.clone(),
            memories: memories.clone(),
            tiles: tiles.clone(),
            tips: HashMap::new(),
            max_group: config.max_group_records.max(1),
            poisoned: poisoned_flag.clone(),
            data_file: data_file.clone(),
            pending: pending.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("tally-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| LogError::CommitFailed(format!("cannot start writer thread: {e}")))?;
        Ok(LogStore {
            db,
            tree,
            hasher,
            heads,
            memories,
            tiles,
            poisoned: poisoned_flag,
            data_file,
            pending,
            jobs: Some(tx),
            writer: Some(handle),
        })
    }

    /// Why the store refuses writes, if a group commit failed: what reached the disk is then
    /// unknown, and only reopening the store (which checks it) clears this.
    pub fn poisoned(&self) -> Option<String> {
        poisoned(&self.poisoned)
    }

    /// Queues records for `channel` and returns a ticket that resolves once they are durable.
    pub fn append(&self, channel: ChannelId, records: Vec<Vec<u8>>) -> Ticket {
        self.enqueue(
            channel,
            records.into_iter().map(|r| (None, r)).collect(),
            None,
        )
    }

    /// [`append`](Self::append) of records built for positions `start..`: if the log has
    /// another size when the writer reaches them, nothing is written and the ticket fails
    /// with [`LogError::WrongPosition`], as with [`append_keyed`](Self::append_keyed). The
    /// PostgreSQL store's fenced append has the same contract (spec/CLUSTER.md §4), so both
    /// backends answer one [`crate::LogBackend`] call alike.
    pub fn append_at(&self, channel: ChannelId, start: u64, records: Vec<Vec<u8>>) -> Ticket {
        self.enqueue(
            channel,
            records.into_iter().map(|r| (None, r)).collect(),
            Some(start),
        )
    }

    /// [`append`](Self::append), also noting each record as the newest under its key, in the
    /// same atomic batch: [`keyed`](Self::keyed) then finds every key's newest record without
    /// a scan. The gateway keys records by lane (spec/PROTOCOL.md §5.4), so that after a
    /// restart each lane's last record, which a retry is answered from, is one read away.
    ///
    /// The records must land at `start..`: records that state their own index (the gateway's
    /// do, spec/PROTOCOL.md §5.2) are built for one position, so if the log has another size
    /// when the writer reaches this job (an earlier append of the channel failed), nothing is
    /// written and the ticket fails with [`LogError::WrongPosition`].
    pub fn append_keyed(
        &self,
        channel: ChannelId,
        start: u64,
        records: Vec<(u32, Vec<u8>)>,
    ) -> Ticket {
        self.enqueue(
            channel,
            records.into_iter().map(|(k, r)| (Some(k), r)).collect(),
            Some(start),
        )
    }

    /// The newest durable record index under each key of `channel`, in key order.
    pub fn keyed(&self, channel: &ChannelId) -> Result<Vec<(u32, u64)>, LogError> {
        let mut prefix = Vec::with_capacity(33);
        prefix.push(KEYED);
        prefix.extend_from_slice(&channel.0);
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(&prefix) {
            let (k, v) = item?;
            let key = k
                .get(33..37)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_be_bytes);
            let index = <[u8; 8]>::try_from(v.as_ref()).ok().map(u64::from_be_bytes);
            match (key, index) {
                (Some(key), Some(index)) => out.push((key, index)),
                _ => {
                    return Err(LogError::Corrupt {
                        channel: *channel,
                        detail: "malformed keyed index entry".into(),
                    })
                }
            }
        }
        Ok(out)
    }

    fn enqueue(
        &self,
        channel: ChannelId,
        records: Vec<(Option<u32>, Vec<u8>)>,
        expected_start: Option<u64>,
    ) -> Ticket {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            channel,
            records,
            expected_start,
            reply,
        };
        let count = job.records.len() as u64;
        let Some(jobs) = self.jobs.as_ref() else {
            return Ticket(TicketState::Failed(Some(LogError::WriterStopped)));
        };
        // Never block the caller (often an async task): a full queue is back-pressure the
        // caller can turn into "retry later".
        match self.pending.push(count, || jobs.try_send(job)) {
            Ok(()) => Ticket(TicketState::Waiting(rx)),
            Err(mpsc::TrySendError::Full(_)) => Ticket(TicketState::Failed(Some(LogError::Busy))),
            Err(mpsc::TrySendError::Disconnected(_)) => {
                Ticket(TicketState::Failed(Some(LogError::WriterStopped)))
            }
        }
    }

    /// What is queued and not yet durable, over all channels: the store reports its durable
    /// head ([`head`](Self::head)) and what is still pending apart (issue 11). Appends refused
    /// at once ([`Ticket::refused_now`]) are not counted.
    pub fn pending(&self) -> Pending {
        let (records, oldest) = self.pending.report();
        Pending { records, oldest }
    }

    /// The durable head of `channel`, or `None` if it has no records.
    pub fn head(&self, channel: &ChannelId) -> Option<Head> {
        self.heads.read().ok().and_then(|h| h.get(channel).copied())
    }

    /// Every channel that has records, in id order.
    pub fn channels(&self) -> Vec<ChannelId> {
        let mut ids: Vec<ChannelId> = self
            .heads
            .read()
            .map(|h| h.keys().copied().collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    fn size(&self, channel: &ChannelId) -> u64 {
        self.head(channel).map_or(0, |h| h.size)
    }

    /// A reader of `channel`'s stored hashes. The first reader of a channel loads the levels
    /// above the tiles into memory (one hash per 32 records).
    fn reader<'a>(&'a self, channel: &'a ChannelId) -> Result<ChannelReader<'a>, LogError> {
        let memory = self
            .memories
            .read()
            .ok()
            .and_then(|m| m.get(channel).cloned());
        if let Some(memory) = &memory {
            let loaded = memory.upper.read().map(|u| u.is_some()).unwrap_or(false);
            if !loaded {
                // Scan without holding the lock (the writer must not wait on a scan), bounded
                // to the durable head; the writer fills any gap when it next publishes.
                let levels = load_upper(&self.tree, channel, self.size(channel))?;
                if let Ok(mut upper) = memory.upper.write() {
                    if upper.is_none() {
                        *upper = Some(levels);
                    }
                }
            }
        }
        Ok(ChannelReader::new(&self.tree, channel, memory).with_tiles(&self.tiles))
    }

    /// The root of `channel`'s log at `size` (any size up to the head): O(log n) reads.
    pub fn root_at(&self, channel: &ChannelId, size: u64) -> Result<Hash, LogError> {
        let head = self.size(channel);
        if size > head {
            return Err(LogError::OutOfRange {
                index: size,
                size: head,
            });
        }
        range_hash(&self.hasher, &self.reader(channel)?, 0, size)
    }

    /// The record at `index`.
    pub fn record(&self, channel: &ChannelId, index: u64) -> Result<Vec<u8>, LogError> {
        let size = self.size(channel);
        if index >= size {
            return Err(LogError::OutOfRange { index, size });
        }
        read_record(&self.tree, channel, index)
    }

    /// The records in `range` (clamped to the head), in order.
    pub fn records(
        &self,
        channel: &ChannelId,
        range: Range<u64>,
    ) -> Result<Vec<Vec<u8>>, LogError> {
        let end = range.end.min(self.size(channel));
        if range.start >= end {
            return Ok(Vec::new());
        }
        let mut out = Vec::with_capacity((end - range.start).min(1 << 16) as usize);
        let mut expected = range.start;
        for item in self
            .tree
            .range(entry_key(channel, range.start)..entry_key(channel, end))
        {
            let (k, v) = item?;
            if key_index(channel, &k)? != expected {
                break;
            }
            out.push(v.to_vec());
            expected += 1;
        }
        if expected != end {
            return Err(LogError::Corrupt {
                channel: *channel,
                detail: format!("record {expected} is missing below head {end}"),
            });
        }
        Ok(out)
    }

    /// The inclusion proof of record `index` in the tree of `size` (RFC 9162 §2.1.3).
    pub fn inclusion_proof(
        &self,
        channel: &ChannelId,
        index: u64,
        size: u64,
    ) -> Result<Vec<Hash>, LogError> {
        let head = self.size(channel);
        if size > head {
            return Err(LogError::OutOfRange {
                index: size,
                size: head,
            });
        }
        proof::inclusion_proof(&self.hasher, &self.reader(channel)?, index, size)
    }

    /// The consistency proof between sizes `old` and `new` (RFC 9162 §2.1.4).
    pub fn consistency_proof(
        &self,
        channel: &ChannelId,
        old: u64,
        new: u64,
    ) -> Result<Vec<Hash>, LogError> {
        let head = self.size(channel);
        if old == 0 || old > new || new > head {
            return Err(LogError::BadSizes {
                old,
                new,
                size: head,
            });
        }
        proof::consistency_proof(&self.hasher, &self.reader(channel)?, old, new)
    }

    /// Stores a signed checkpoint of `channel` at `size` (at most the durable head), durably.
    /// The checkpoint's bytes are opaque to the store, but its `root` must be the log's root
    /// at `size`: a checkpoint that contradicts the log is refused, and on every open the
    /// latest checkpoint is checked against the log again.
    pub fn put_checkpoint(
        &self,
        channel: &ChannelId,
        size: u64,
        root: &Hash,
        bytes: &[u8],
    ) -> Result<(), LogError> {
        if let Some(reason) = poisoned(&self.poisoned) {
            return Err(LogError::CommitFailed(reason));
        }
        let head = self.size(channel);
        if size > head {
            return Err(LogError::OutOfRange {
                index: size,
                size: head,
            });
        }
        if self.root_at(channel, size)? != *root {
            return Err(LogError::CheckpointMismatch {
                channel: *channel,
                size,
            });
        }
        let mut value = Vec::with_capacity(32 + bytes.len());
        value.extend_from_slice(&root.0);
        value.extend_from_slice(bytes);
        self.tree.insert(checkpoint_key(channel, size), value)?;
        self.db.flush()?;
        if let Some(f) = &self.data_file {
            f.sync_data().map_err(sled::Error::from)?;
        }
        Ok(())
    }

    /// The latest stored checkpoint of `channel`, as `(size, bytes)`.
    pub fn latest_checkpoint(
        &self,
        channel: &ChannelId,
    ) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        Ok(latest_checkpoint(&self.tree, channel)?.map(|(size, _, bytes)| (size, bytes)))
    }

    /// All stored checkpoints of `channel`, oldest first, as `(size, bytes)`.
    pub fn checkpoints(&self, channel: &ChannelId) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        let lo = checkpoint_key(channel, 0);
        let hi = checkpoint_key(channel, u64::MAX);
        let mut out = Vec::new();
        for item in self.tree.range(lo..=hi) {
            let (k, v) = item?;
            let (_, bytes) = split_checkpoint(channel, &v)?;
            out.push((key_index(channel, &k)?, bytes));
        }
        Ok(out)
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, LogError> {
        Ok(self.db.size_on_disk()?)
    }

    /// The hasher of this store.
    pub fn hasher(&self) -> &H {
        &self.hasher
    }
}

impl<H: TreeHasher> Drop for LogStore<H> {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what is queued and exit.
        self.jobs.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}
