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

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::path::Path;
use std::pin::Pin;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::thread::JoinHandle;

use tally_core::hash::{Blake3Hasher, Hash, TreeHasher};
use tally_core::ChannelId;
use tokio::sync::oneshot;

use crate::error::LogError;
use crate::proof;
use crate::tile_cache::TileCache;
use crate::tree::{range_hash, Frontier, HashReader};

const FORMAT: u8 = b'V';
const ENTRY: u8 = b'E';
const TILE: u8 = b'T';
const UPPER: u8 = b'U';
const HEAD: u8 = b'M';
const CHECKPOINT: u8 = b'C';
const KEYED: u8 = b'K';

/// Height of a tile: a tile holds the stored hashes of levels `0..TILE_HEIGHT` of one block of
/// `2^TILE_HEIGHT` leaves.
pub const TILE_HEIGHT: u8 = 6;
const BLOCK: u64 = 1 << TILE_HEIGHT;
/// Hashes in a tile: 64 + 32 + 16 + 8 + 4 + 2.
const TILE_HASHES: usize = 126;

/// Offset (in hashes) of `level`'s first hash inside a tile.
fn tile_offset(level: u8) -> usize {
    128 - (128 >> level)
}

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

struct Job {
    channel: ChannelId,
    /// Each record's data, and the key it updates in the keyed index, if any.
    records: Vec<(Option<u32>, Vec<u8>)>,
    /// The index the first record must get, if the caller built the records for it: the
    /// writer refuses the job (writing nothing) when the log has another size.
    expected_start: Option<u64>,
    reply: oneshot::Sender<Result<Range<u64>, LogError>>,
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

/// Levels `0..TILE_HEIGHT` of the incomplete last block of a channel's log.
#[derive(Clone, Debug)]
struct Partial {
    /// The block these hashes belong to: `size / 64`.
    block: u64,
    /// `levels[l]` lists the stored hashes of level `l` inside the block, in order.
    levels: Vec<Vec<Hash>>,
}

impl Partial {
    fn new(block: u64) -> Self {
        Partial {
            block,
            levels: vec![Vec::new(); TILE_HEIGHT as usize],
        }
    }

    /// The tile value of a complete block.
    fn tile_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(TILE_HASHES * 32);
        for level in &self.levels {
            for h in level {
                out.extend_from_slice(&h.0);
            }
        }
        out
    }
}

/// What readers of one channel take from memory: the incomplete block and, once loaded, the
/// levels above the tiles.
#[derive(Debug)]
struct Memory {
    partial: RwLock<Arc<Partial>>,
    /// `upper[j]` is level `TILE_HEIGHT + j`, in index order; `None` until first needed.
    upper: RwLock<Option<Vec<Vec<Hash>>>>,
}

type MemoryMap = HashMap<ChannelId, Arc<Memory>>;
type Memories = Arc<RwLock<MemoryMap>>;

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
        // Never block the caller (often an async task): a full queue is back-pressure the
        // caller can turn into "retry later".
        match self.jobs.as_ref().map(|tx| tx.try_send(job)) {
            Some(Ok(())) => Ticket(TicketState::Waiting(rx)),
            Some(Err(mpsc::TrySendError::Full(_))) => {
                Ticket(TicketState::Failed(Some(LogError::Busy)))
            }
            _ => Ticket(TicketState::Failed(Some(LogError::WriterStopped))),
        }
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

    /// Recomputes `channel`'s whole log from its records and compares every stored hash (tiles
    /// and upper levels) and the head root. Reports the first record index where anything
    /// disagrees: for a bad stored hash, the record whose append completed it.
    pub fn fsck(&self, channel: &ChannelId) -> Result<FsckReport, LogError> {
        let head = self.head(channel);
        let size = head.map_or(0, |h| h.size);
        let mut report = FsckReport {
            channel: *channel,
            size,
            first_bad_index: None,
            problem: None,
            note: None,
        };
        let bad = |report: &mut FsckReport, index: u64, problem: String| {
            report.first_bad_index = Some(index);
            report.problem = Some(problem);
        };
        let complete_blocks = size / BLOCK;
        let mut frontier = Frontier::default();
        let mut tile: Option<sled::IVec> = None;
        let mut expected = 0u64;
        for item in self
            .tree
            .range(entry_key(channel, 0)..entry_key(channel, size))
        {
            let (k, record) = item?;
            let index = key_index(channel, &k)?;
            if index != expected {
                bad(
                    &mut report,
                    expected,
                    format!("record {expected} is missing"),
                );
                return Ok(report);
            }
            let block = index / BLOCK;
            if index % BLOCK == 0 && block < complete_blocks {
                tile = self.tree.get(tile_key(channel, block))?;
                if tile.as_ref().map(|t| t.len()) != Some(TILE_HASHES * 32) {
                    bad(
                        &mut report,
                        index,
                        format!("tile {block} is missing or truncated"),
                    );
                    return Ok(report);
                }
            }
            for (level, k, hash) in frontier.push(&self.hasher, self.hasher.leaf(&record)) {
                let stored = if level >= TILE_HEIGHT {
                    self.tree
                        .get(upper_key(channel, level, k))?
                        .map(|v| v.to_vec())
                } else if block < complete_blocks {
                    let at =
                        32 * (tile_offset(level) + (k - (block << (TILE_HEIGHT - level))) as usize);
                    tile.as_ref()
                        .and_then(|t| t.get(at..at + 32))
                        .map(|b| b.to_vec())
                } else {
                    // The incomplete block's hashes are not stored; they are recomputed from
                    // these same records on open.
                    continue;
                };
                if stored.as_deref() != Some(&hash.0[..]) {
                    bad(
                        &mut report,
                        index,
                        format!(
                            "stored hash at level {level} index {k} does not match record {index}"
                        ),
                    );
                    return Ok(report);
                }
            }
            expected += 1;
        }
        if expected != size {
            bad(
                &mut report,
                expected,
                format!("record {expected} is missing"),
            );
            return Ok(report);
        }
        if self.tree.get(entry_key(channel, size))?.is_some() {
            // Left by a failed commit (or written by an append in flight): never readable,
            // overwritten by the next append, so worth reporting but not damage.
            report.note = Some(format!(
                "record {size} exists beyond the head (a failed or in-flight append)"
            ));
        }
        if let Some(head) = head {
            if head.root != frontier.root(&self.hasher) {
                report.problem = Some("head root does not match the recomputed root".into());
            }
        }
        Ok(report)
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

/// Stored hashes of one channel: tiles from sled (the last one read is kept), the incomplete
/// block and the upper levels from memory, upper levels from sled when not in memory.
struct ChannelReader<'a> {
    tree: &'a sled::Tree,
    channel: &'a ChannelId,
    memory: Option<Arc<Memory>>,
    tiles: Option<&'a TileCache>,
    tile: RefCell<Option<(u64, sled::IVec)>>,
}

impl<'a> ChannelReader<'a> {
    fn new(tree: &'a sled::Tree, channel: &'a ChannelId, memory: Option<Arc<Memory>>) -> Self {
        ChannelReader {
            tree,
            channel,
            memory,
            tiles: None,
            tile: RefCell::new(None),
        }
    }

    /// Reads tiles through `cache`.
    fn with_tiles(mut self, cache: &'a TileCache) -> Self {
        self.tiles = Some(cache);
        self
    }

    fn corrupt(&self, detail: String) -> LogError {
        LogError::Corrupt {
            channel: *self.channel,
            detail,
        }
    }

    fn upper_hash(&self, level: u8, index: u64) -> Result<Hash, LogError> {
        let cached = self.memory.as_ref().and_then(|m| {
            let upper = m.upper.read().ok()?;
            let l = upper.as_ref()?.get((level - TILE_HEIGHT) as usize)?;
            l.get(usize::try_from(index).ok()?).copied()
        });
        if let Some(h) = cached {
            return Ok(h);
        }
        let v = self
            .tree
            .get(upper_key(self.channel, level, index))?
            .ok_or_else(|| {
                self.corrupt(format!(
                    "stored hash at level {level} index {index} is missing"
                ))
            })?;
        let bytes: [u8; 32] = v.as_ref().try_into().map_err(|_| {
            self.corrupt(format!(
                "stored hash at level {level} index {index} is not 32 bytes"
            ))
        })?;
        Ok(Hash(bytes))
    }

    fn lower_hash(&self, level: u8, index: u64) -> Result<Hash, LogError> {
        let shift = TILE_HEIGHT - level;
        let block = index >> shift;
        let within = (index - (block << shift)) as usize;
        if let Some(memory) = &self.memory {
            if let Ok(partial) = memory.partial.read() {
                if partial.block == block {
                    return partial.levels[level as usize]
                        .get(within)
                        .copied()
                        .ok_or_else(|| {
                            self.corrupt(format!(
                                "hash at level {level} index {index} is beyond the head"
                            ))
                        });
                }
            }
        }
        let mut cached = self.tile.borrow_mut();
        let tile = match cached.as_ref() {
            Some((b, t)) if *b == block => t.clone(),
            _ => {
                let t = match self.tiles.and_then(|c| c.get(self.channel, block)) {
                    Some(t) => t,
                    None => {
                        let t = self
                            .tree
                            .get(tile_key(self.channel, block))?
                            .ok_or_else(|| self.corrupt(format!("tile {block} is missing")))?;
                        if let Some(c) = self.tiles {
                            c.insert(*self.channel, block, t.clone());
                        }
                        t
                    }
                };
                *cached = Some((block, t.clone()));
                t
            }
        };
        let at = 32 * (tile_offset(level) + within);
        let bytes: [u8; 32] = tile
            .get(at..at + 32)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| self.corrupt(format!("tile {block} is truncated")))?;
        Ok(Hash(bytes))
    }
}

impl HashReader for ChannelReader<'_> {
    fn stored_hash(&self, level: u8, index: u64) -> Result<Hash, LogError> {
        if level >= TILE_HEIGHT {
            self.upper_hash(level, index)
        } else {
            self.lower_hash(level, index)
        }
    }
}

/// The writer's view of a channel's right edge: the frontier and the incomplete block.
struct Tip {
    frontier: Frontier,
    partial: Partial,
}

struct Writer<H: TreeHasher> {
    db: sled::Db,
    tree: sled::Tree,
    hasher: H,
    heads: Heads,
    memories: Memories,
    tiles: Arc<TileCache>,
    tips: HashMap<ChannelId, Tip>,
    max_group: usize,
    /// Set when a group commit failed: what is on disk is then unknown until the store is
    /// reopened (and checked), so no further write is accepted.
    poisoned: Poison,
    /// sled's data file, synced after each flush (see [`StoreConfig::sync_data`]).
    data_file: Option<Arc<std::fs::File>>,
}

impl<H: TreeHasher> Writer<H> {
    fn run(mut self, jobs: Receiver<Job>) {
        while let Ok(first) = jobs.recv() {
            let mut group = vec![first];
            let mut count = group[0].records.len();
            while count < self.max_group {
                match jobs.try_recv() {
                    Ok(job) => {
                        count += job.records.len();
                        group.push(job);
                    }
                    Err(_) => break,
                }
            }
            self.commit(group);
        }
    }

    /// The tip of `channel`, loaded from the durable state if the writer has none.
    fn tip(&mut self, channel: &ChannelId) -> Result<&mut Tip, LogError> {
        if !self.tips.contains_key(channel) {
            let size = self
                .heads
                .read()
                .ok()
                .and_then(|h| h.get(channel).map(|h| h.size))
                .unwrap_or(0);
            let memory = self
                .memories
                .read()
                .ok()
                .and_then(|m| m.get(channel).cloned());
            let partial = match &memory {
                Some(m) => m
                    .partial
                    .read()
                    .map(|p| (**p).clone())
                    .map_err(|_| LogError::WriterStopped)?,
                None => Partial::new(0),
            };
            let reader = ChannelReader::new(&self.tree, channel, memory);
            let frontier = Frontier::load(&reader, size)?;
            self.tips.insert(*channel, Tip { frontier, partial });
        }
        self.tips.get_mut(channel).ok_or(LogError::WriterStopped)
    }

    fn poison(&self, reason: &str) {
        if let Ok(mut p) = self.poisoned.write() {
            p.get_or_insert_with(|| reason.to_string());
        }
    }

    /// One group commit: one batch, one flush, then the replies.
    fn commit(&mut self, group: Vec<Job>) {
        if let Some(reason) = poisoned(&self.poisoned) {
            for job in group {
                let _ = job.reply.send(Err(LogError::CommitFailed(reason.clone())));
            }
            return;
        }
        let mut batch = sled::Batch::default();
        let mut replies = Vec::with_capacity(group.len());
        let mut touched: HashMap<ChannelId, Head> = HashMap::new();
        let mut new_upper: Vec<(ChannelId, u8, u64, Hash)> = Vec::new();
        let mut new_tiles: Vec<(ChannelId, u64, sled::IVec)> = Vec::new();
        let mut failed: Option<String> = None;
        let hasher = self.hasher.clone();
        for job in group {
            let channel = job.channel;
            let tip = match self.tip(&channel) {
                Ok(tip) => tip,
                Err(e) => {
                    failed.get_or_insert(e.to_string());
                    replies.push((job.reply, Err(LogError::WriterStopped)));
                    continue;
                }
            };
            let start = tip.frontier.size();
            if job.expected_start.is_some_and(|e| e != start) {
                let expected = job.expected_start.unwrap_or_default();
                replies.push((
                    job.reply,
                    Err(LogError::WrongPosition {
                        expected,
                        size: start,
                    }),
                ));
                continue;
            }
            for (key, record) in &job.records {
                let index = tip.frontier.size();
                if let Some(key) = key {
                    batch.insert(
                        keyed_key(&channel, *key).to_vec(),
                        index.to_be_bytes().to_vec(),
                    );
                }
                for (level, k, hash) in tip.frontier.push(&hasher, hasher.leaf(record)) {
                    if level < TILE_HEIGHT {
                        tip.partial.levels[level as usize].push(hash);
                    } else {
                        batch.insert(upper_key(&channel, level, k).to_vec(), hash.0.to_vec());
                        new_upper.push((channel, level, k, hash));
                    }
                }
                batch.insert(entry_key(&channel, index).to_vec(), record.as_slice());
                if index % BLOCK == BLOCK - 1 {
                    let tile = sled::IVec::from(tip.partial.tile_bytes());
                    batch.insert(tile_key(&channel, index / BLOCK).to_vec(), tile.clone());
                    new_tiles.push((channel, index / BLOCK, tile));
                    tip.partial = Partial::new(index / BLOCK + 1);
                }
            }
            let head = Head {
                size: tip.frontier.size(),
                root: tip.frontier.root(&hasher),
            };
            if !job.records.is_empty() {
                touched.insert(channel, head);
            }
            replies.push((job.reply, Ok(start..head.size)));
        }
        for (channel, head) in &touched {
            batch.insert(head_key(channel).to_vec(), encode_head(head).to_vec());
        }
        let outcome = match failed {
            Some(e) => Err(e),
            None if touched.is_empty() => Ok(()),
            // sled 0.34 applies a batch key by key in memory, so a failed apply may leave a
            // prefix of it that a later flush persists; a failed flush leaves it unknown what
            // reached the disk. Either way the writer stops until the store is reopened.
            None => self
                .tree
                .apply_batch(batch)
                .and_then(|()| self.db.flush().map(|_| ()))
                .and_then(|()| match &self.data_file {
                    Some(f) => f.sync_data().map_err(sled::Error::from),
                    None => Ok(()),
                })
                .map_err(|e| {
                    let reason = format!("group commit failed ({e}); reopen the store");
                    self.poison(&reason);
                    reason
                }),
        };
        match outcome {
            Ok(()) => {
                for (channel, block, tile) in new_tiles {
                    self.tiles.insert(channel, block, tile);
                }
                self.publish(&touched, new_upper);
                if let Ok(mut heads) = self.heads.write() {
                    heads.extend(touched);
                }
                for (reply, result) in replies {
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                // Whether any of this group reached the disk is unknown; reopening decides.
                // Forget the advanced tips so nothing builds on them.
                for channel in touched.keys() {
                    self.tips.remove(channel);
                }
                for (reply, _) in replies {
                    let _ = reply.send(Err(LogError::CommitFailed(e.clone())));
                }
            }
        }
    }

    /// Makes a durable group's in-memory hashes visible to readers: each touched channel's
    /// incomplete block, and the new upper-level hashes of channels whose upper levels are
    /// loaded (a cache that would fall out of order is dropped and reloads).
    fn publish(
        &self,
        touched: &HashMap<ChannelId, Head>,
        new_upper: Vec<(ChannelId, u8, u64, Hash)>,
    ) {
        let mut targets: HashMap<ChannelId, Arc<Memory>> = HashMap::new();
        if let Ok(mut memories) = self.memories.write() {
            for channel in touched.keys() {
                let Some(tip) = self.tips.get(channel) else {
                    continue;
                };
                let partial = Arc::new(tip.partial.clone());
                let memory = memories.entry(*channel).or_insert_with(|| {
                    Arc::new(Memory {
                        partial: RwLock::new(partial.clone()),
                        upper: RwLock::new(None),
                    })
                });
                if let Ok(mut p) = memory.partial.write() {
                    *p = partial;
                }
                targets.insert(*channel, memory.clone());
            }
        }
        for (channel, level, k, hash) in new_upper {
            let Some(memory) = targets.get(&channel) else {
                continue;
            };
            let Ok(mut upper) = memory.upper.write() else {
                continue;
            };
            let Some(levels) = upper.as_mut() else {
                continue;
            };
            if !self.extend_level(&channel, levels, level, k, hash) {
                // Something disagrees with sled; let the next reader load afresh.
                *upper = None;
            }
        }
    }

    /// Puts the durable hash `(level, k)` into a loaded upper cache. A cache loaded behind the
    /// writer is brought up to date from sled (every hash below `k` is durable); one loaded
    /// ahead must already hold the same hash. Returns false if the cache cannot be trusted.
    fn extend_level(
        &self,
        channel: &ChannelId,
        levels: &mut Vec<Vec<Hash>>,
        level: u8,
        k: u64,
        hash: Hash,
    ) -> bool {
        let j = (level - TILE_HEIGHT) as usize;
        while levels.len() <= j {
            levels.push(Vec::new());
        }
        let l = &mut levels[j];
        if (l.len() as u64) > k {
            return usize::try_from(k).ok().and_then(|i| l.get(i)) == Some(&hash);
        }
        let reader = ChannelReader::new(&self.tree, channel, None);
        while (l.len() as u64) < k {
            match reader.upper_hash(level, l.len() as u64) {
                Ok(h) => l.push(h),
                Err(_) => return false,
            }
        }
        l.push(hash);
        true
    }
}

/// Refuses a store written with another hasher or format; marks a new store.
fn check_format<H: TreeHasher>(
    db: &sled::Db,
    tree: &sled::Tree,
    hasher: &H,
) -> Result<(), LogError> {
    let want = format!("tally-log/1 {}", hasher.name());
    match tree.get([FORMAT])? {
        Some(v) if v.as_ref() == want.as_bytes() => Ok(()),
        Some(v) => Err(LogError::Format {
            found: String::from_utf8_lossy(&v).into_owned(),
            expected: want,
        }),
        None if tree.is_empty() => {
            tree.insert([FORMAT], want.as_bytes())?;
            db.flush()?;
            Ok(())
        }
        None => Err(LogError::Format {
            found: "no format marker".into(),
            expected: want,
        }),
    }
}

/// Recomputes the incomplete last block's hashes from its records.
fn load_partial<H: TreeHasher>(
    tree: &sled::Tree,
    hasher: &H,
    channel: &ChannelId,
    size: u64,
) -> Result<Partial, LogError> {
    let block = size / BLOCK;
    let mut partial = Partial::new(block);
    let mut local = Frontier::default();
    for index in block * BLOCK..size {
        let record = read_record(tree, channel, index)?;
        for (level, _, hash) in local.push(hasher, hasher.leaf(&record)) {
            partial.levels[level as usize].push(hash);
        }
    }
    Ok(partial)
}

/// Reads the stored hashes of level 6 and above of `channel` that a log of `size` has, in
/// order.
fn load_upper(
    tree: &sled::Tree,
    channel: &ChannelId,
    size: u64,
) -> Result<Vec<Vec<Hash>>, LogError> {
    let mut levels = Vec::new();
    let mut level = TILE_HEIGHT;
    while level < 64 && (size >> level) > 0 {
        let count = size >> level;
        let mut hashes = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
        for item in tree.range(upper_key(channel, level, 0)..upper_key(channel, level, count)) {
            let (k, v) = item?;
            let corrupt = |detail: &str| LogError::Corrupt {
                channel: *channel,
                detail: format!("level {level}: {detail}"),
            };
            let index = k.get(34..).map(be_u64);
            if index != Some(hashes.len() as u64) || k.len() != 42 {
                return Err(corrupt("upper-level hashes are not contiguous"));
            }
            let hash: [u8; 32] = v
                .as_ref()
                .try_into()
                .map_err(|_| corrupt("upper-level hash is not 32 bytes"))?;
            hashes.push(Hash(hash));
        }
        if hashes.len() as u64 != count {
            return Err(LogError::Corrupt {
                channel: *channel,
                detail: format!("level {level} holds {} of {count} hashes", hashes.len()),
            });
        }
        levels.push(hashes);
        level += 1;
    }
    Ok(levels)
}

/// The latest checkpoint of `channel` as `(size, root, bytes)`.
fn latest_checkpoint(
    tree: &sled::Tree,
    channel: &ChannelId,
) -> Result<Option<(u64, Hash, Vec<u8>)>, LogError> {
    let lo = checkpoint_key(channel, 0);
    let hi = checkpoint_key(channel, u64::MAX);
    match tree.range(lo..=hi).next_back() {
        Some(item) => {
            let (k, v) = item?;
            let (root, bytes) = split_checkpoint(channel, &v)?;
            Ok(Some((key_index(channel, &k)?, root, bytes)))
        }
        None => Ok(None),
    }
}

/// A stored checkpoint value: the root it commits to, then the caller's bytes.
fn split_checkpoint(channel: &ChannelId, v: &[u8]) -> Result<(Hash, Vec<u8>), LogError> {
    let root: [u8; 32] =
        v.get(..32)
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| LogError::Corrupt {
                channel: *channel,
                detail: "stored checkpoint shorter than its root".into(),
            })?;
    Ok((Hash(root), v[32..].to_vec()))
}

fn read_record(tree: &sled::Tree, channel: &ChannelId, index: u64) -> Result<Vec<u8>, LogError> {
    tree.get(entry_key(channel, index))?
        .map(|v| v.to_vec())
        .ok_or_else(|| LogError::Corrupt {
            channel: *channel,
            detail: format!("record {index} is missing"),
        })
}

fn load_and_check_heads<H: TreeHasher>(
    tree: &sled::Tree,
    hasher: &H,
) -> Result<(HashMap<ChannelId, Head>, MemoryMap), LogError> {
    let mut heads = HashMap::new();
    let mut memories = HashMap::new();
    for item in tree.scan_prefix([HEAD]) {
        let (k, v) = item?;
        let id: [u8; 32] = k[1..].try_into().map_err(|_| LogError::Corrupt {
            channel: ChannelId::default(),
            detail: "head key of wrong length".into(),
        })?;
        let channel = ChannelId(id);
        let head = decode_head(&v).ok_or_else(|| LogError::Corrupt {
            channel,
            detail: "head value of wrong length".into(),
        })?;
        let memory = Arc::new(Memory {
            partial: RwLock::new(Arc::new(load_partial(tree, hasher, &channel, head.size)?)),
            upper: RwLock::new(None),
        });
        let reader = ChannelReader::new(tree, &channel, Some(memory.clone()));
        let root = Frontier::load(&reader, head.size)?.root(hasher);
        if root != head.root {
            return Err(LogError::Corrupt {
                channel,
                detail: format!(
                    "stored hashes give a different root at head size {}",
                    head.size
                ),
            });
        }
        if head.size > 0 {
            read_record(tree, &channel, head.size - 1)?;
        }
        if let Some((size, cp_root, _)) = latest_checkpoint(tree, &channel)? {
            let at = if size <= head.size {
                range_hash(hasher, &reader, 0, size)?
            } else {
                Hash::default()
            };
            if size > head.size || at != cp_root {
                return Err(LogError::Corrupt {
                    channel,
                    detail: format!("the latest checkpoint (size {size}) does not match the log"),
                });
            }
        }
        heads.insert(channel, head);
        memories.insert(channel, memory);
    }
    Ok((heads, memories))
}

fn entry_key(channel: &ChannelId, index: u64) -> [u8; 41] {
    channel_key(ENTRY, channel, index)
}

fn tile_key(channel: &ChannelId, block: u64) -> [u8; 41] {
    channel_key(TILE, channel, block)
}

fn checkpoint_key(channel: &ChannelId, size: u64) -> [u8; 41] {
    channel_key(CHECKPOINT, channel, size)
}

fn channel_key(tag: u8, channel: &ChannelId, n: u64) -> [u8; 41] {
    let mut k = [0u8; 41];
    k[0] = tag;
    k[1..33].copy_from_slice(&channel.0);
    k[33..].copy_from_slice(&n.to_be_bytes());
    k
}

fn upper_key(channel: &ChannelId, level: u8, index: u64) -> [u8; 42] {
    let mut k = [0u8; 42];
    k[0] = UPPER;
    k[1..33].copy_from_slice(&channel.0);
    k[33] = level;
    k[34..].copy_from_slice(&index.to_be_bytes());
    k
}

fn keyed_key(channel: &ChannelId, key: u32) -> [u8; 37] {
    let mut k = [0u8; 37];
    k[0] = KEYED;
    k[1..33].copy_from_slice(&channel.0);
    k[33..].copy_from_slice(&key.to_be_bytes());
    k
}

fn head_key(channel: &ChannelId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = HEAD;
    k[1..].copy_from_slice(&channel.0);
    k
}

fn encode_head(head: &Head) -> [u8; 40] {
    let mut v = [0u8; 40];
    v[..8].copy_from_slice(&head.size.to_be_bytes());
    v[8..].copy_from_slice(&head.root.0);
    v
}

fn decode_head(v: &[u8]) -> Option<Head> {
    if v.len() != 40 {
        return None;
    }
    let mut root = [0u8; 32];
    root.copy_from_slice(&v[8..]);
    Some(Head {
        size: be_u64(&v[..8]),
        root: Hash(root),
    })
}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(a)
}

/// The big-endian number at the end of a 41-byte key, refusing a key of another length
/// (which only corruption can produce).
fn key_index(channel: &ChannelId, key: &[u8]) -> Result<u64, LogError> {
    match key.get(33..) {
        Some(tail) if tail.len() == 8 => Ok(be_u64(tail)),
        _ => Err(LogError::Corrupt {
            channel: *channel,
            detail: format!("key of {} bytes where 41 are expected", key.len()),
        }),
    }
}
