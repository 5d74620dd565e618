//! The durable store: many channel logs in one sled database (DESIGN.md §4, "The log store").
//!
//! Layout of the single sled tree `logs` (all integers big-endian so keys sort by index):
//!
//! | key | value |
//! |---|---|
//! | `R` · channel · index:u64 | record bytes (leaf data) |
//! | `H` · channel · level:u8 · index:u64 | stored hash (32 bytes) |
//! | `M` · channel | head: size:u64 · root (32 bytes) |
//! | `C` · channel · size:u64 | a checkpoint the parties signed at that size |
//!
//! One writer thread owns all appends. It drains whatever is queued, writes one
//! `apply_batch` (atomic: records, hashes and heads together) and one `flush()`, and only
//! then answers the callers: an index reported durable is on disk (P8).

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
use crate::tree::{range_hash, Frontier, HashReader};

const RECORD: u8 = b'R';
const HASH: u8 = b'H';
const HEAD: u8 = b'M';
const CHECKPOINT: u8 = b'C';

/// Tuning of a [`LogStore`].
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The most records one group commit takes; more wait for the next.
    pub max_group_records: usize,
    /// How many append requests may queue before `append` blocks (back-pressure).
    pub queue_depth: usize,
    /// sled's page cache, in bytes.
    pub cache_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            max_group_records: 4096,
            queue_depth: 65536,
            cache_bytes: 256 << 20,
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
}

impl FsckReport {
    /// Whether everything recomputed matches.
    pub fn is_ok(&self) -> bool {
        self.first_bad_index.is_none() && self.problem.is_none()
    }
}

struct Job {
    channel: ChannelId,
    records: Vec<Vec<u8>>,
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

/// Many channel logs in one sled database, with one group-committing writer.
pub struct LogStore<H: TreeHasher = Blake3Hasher> {
    db: sled::Db,
    tree: sled::Tree,
    hasher: H,
    heads: Heads,
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
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(config.cache_bytes)
            .open()?;
        let tree = db.open_tree("logs")?;
        let heads = load_and_check_heads(&tree, &hasher)?;
        let heads: Heads = Arc::new(RwLock::new(heads));
        let (tx, rx) = mpsc::sync_channel(config.queue_depth.max(1));
        let writer = Writer {
            db: db.clone(),
            tree: tree.clone(),
            hasher: hasher.clone(),
            heads: heads.clone(),
            frontiers: HashMap::new(),
            max_group: config.max_group_records.max(1),
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
            jobs: Some(tx),
            writer: Some(handle),
        })
    }

    /// Queues records for `channel` and returns a ticket that resolves once they are durable.
    pub fn append(&self, channel: ChannelId, records: Vec<Vec<u8>>) -> Ticket {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            channel,
            records,
            reply,
        };
        match self.jobs.as_ref().map(|tx| tx.send(job)) {
            Some(Ok(())) => Ticket(TicketState::Waiting(rx)),
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

    fn reader<'a>(&'a self, channel: &'a ChannelId) -> ChannelReader<'a> {
        ChannelReader {
            tree: &self.tree,
            channel,
        }
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
        range_hash(&self.hasher, &self.reader(channel), 0, size)
    }

    /// The record at `index`.
    pub fn record(&self, channel: &ChannelId, index: u64) -> Result<Vec<u8>, LogError> {
        let size = self.size(channel);
        if index >= size {
            return Err(LogError::OutOfRange { index, size });
        }
        self.tree
            .get(record_key(channel, index))?
            .map(|v| v.to_vec())
            .ok_or_else(|| LogError::Corrupt {
                channel: *channel,
                detail: format!("record {index} is missing below head {size}"),
            })
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
        for item in self
            .tree
            .range(record_key(channel, range.start)..record_key(channel, end))
        {
            let (_, v) = item?;
            out.push(v.to_vec());
        }
        if out.len() as u64 != end - range.start {
            return Err(LogError::Corrupt {
                channel: *channel,
                detail: format!("records {}..{end} are not all present", range.start),
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
        proof::inclusion_proof(&self.hasher, &self.reader(channel), index, size)
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
        proof::consistency_proof(&self.hasher, &self.reader(channel), old, new)
    }

    /// Stores a signed checkpoint (opaque bytes) of `channel` at `size`, durably.
    pub fn put_checkpoint(
        &self,
        channel: &ChannelId,
        size: u64,
        bytes: &[u8],
    ) -> Result<(), LogError> {
        self.tree.insert(checkpoint_key(channel, size), bytes)?;
        self.db.flush()?;
        Ok(())
    }

    /// The latest stored checkpoint of `channel`, as `(size, bytes)`.
    pub fn latest_checkpoint(
        &self,
        channel: &ChannelId,
    ) -> Result<Option<(u64, Vec<u8>)>, LogError> {
        let lo = checkpoint_key(channel, 0);
        let hi = checkpoint_key(channel, u64::MAX);
        match self.tree.range(lo..=hi).next_back() {
            Some(item) => {
                let (k, v) = item?;
                Ok(Some((key_index(channel, &k)?, v.to_vec())))
            }
            None => Ok(None),
        }
    }

    /// All stored checkpoints of `channel`, oldest first.
    pub fn checkpoints(&self, channel: &ChannelId) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        let lo = checkpoint_key(channel, 0);
        let hi = checkpoint_key(channel, u64::MAX);
        let mut out = Vec::new();
        for item in self.tree.range(lo..=hi) {
            let (k, v) = item?;
            out.push((key_index(channel, &k)?, v.to_vec()));
        }
        Ok(out)
    }

    /// Recomputes `channel`'s whole log from its records: every leaf, every stored hash and
    /// the head root. Reports the first record index where anything disagrees.
    pub fn fsck(&self, channel: &ChannelId) -> Result<FsckReport, LogError> {
        let size = self.size(channel);
        let mut report = FsckReport {
            channel: *channel,
            size,
            first_bad_index: None,
            problem: None,
        };
        let mut frontier = Frontier::default();
        let reader = self.reader(channel);
        let mut expected = 0u64;
        for item in self
            .tree
            .range(record_key(channel, 0)..record_key(channel, size))
        {
            let (k, v) = item?;
            let index = key_index(channel, &k)?;
            if index != expected {
                report.first_bad_index = Some(expected);
                report.problem = Some(format!("record {expected} is missing"));
                return Ok(report);
            }
            let leaf = self.hasher.leaf(&v);
            for (level, idx, hash) in frontier.push(&self.hasher, leaf) {
                let stored = reader.stored_hash(level, idx);
                if !matches!(stored, Ok(ref h) if *h == hash) {
                    report.first_bad_index = Some(index);
                    report.problem = Some(format!(
                        "stored hash at level {level} index {idx} does not match record {index}"
                    ));
                    return Ok(report);
                }
            }
            expected += 1;
        }
        if expected != size {
            report.first_bad_index = Some(expected);
            report.problem = Some(format!("record {expected} is missing"));
            return Ok(report);
        }
        let head = self.head(channel);
        if let Some(head) = head {
            if head.root != frontier.root(&self.hasher) {
                report.problem = Some("head root does not match the recomputed root".into());
            }
        }
        if self.tree.get(record_key(channel, size))?.is_some() {
            report.first_bad_index = Some(size);
            report.problem = Some(format!("record {size} exists beyond the head"));
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

/// Stored hashes of one channel, read straight from sled.
struct ChannelReader<'a> {
    tree: &'a sled::Tree,
    channel: &'a ChannelId,
}

impl HashReader for ChannelReader<'_> {
    fn stored_hash(&self, level: u8, index: u64) -> Result<Hash, LogError> {
        let v = self
            .tree
            .get(hash_key(self.channel, level, index))?
            .ok_or_else(|| LogError::Corrupt {
                channel: *self.channel,
                detail: format!("stored hash at level {level} index {index} is missing"),
            })?;
        let bytes: [u8; 32] = v.as_ref().try_into().map_err(|_| LogError::Corrupt {
            channel: *self.channel,
            detail: format!("stored hash at level {level} index {index} is not 32 bytes"),
        })?;
        Ok(Hash(bytes))
    }
}

struct Writer<H: TreeHasher> {
    db: sled::Db,
    tree: sled::Tree,
    hasher: H,
    heads: Heads,
    frontiers: HashMap<ChannelId, Frontier>,
    max_group: usize,
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

    fn frontier(&mut self, channel: &ChannelId) -> Result<&mut Frontier, LogError> {
        if !self.frontiers.contains_key(channel) {
            let size = self
                .heads
                .read()
                .ok()
                .and_then(|h| h.get(channel).map(|h| h.size))
                .unwrap_or(0);
            let reader = ChannelReader {
                tree: &self.tree,
                channel,
            };
            let f = Frontier::load(&reader, size)?;
            self.frontiers.insert(*channel, f);
        }
        self.frontiers
            .get_mut(channel)
            .ok_or(LogError::WriterStopped)
    }

    /// One group commit: one atomic batch, one flush, then the replies.
    fn commit(&mut self, group: Vec<Job>) {
        let mut batch = sled::Batch::default();
        let mut replies = Vec::with_capacity(group.len());
        let mut touched: HashMap<ChannelId, Head> = HashMap::new();
        let mut failed: Option<String> = None;
        for job in group {
            let hasher = self.hasher.clone();
            match self.frontier(&job.channel) {
                Ok(frontier) => {
                    let start = frontier.size();
                    for record in &job.records {
                        let index = frontier.size();
                        for (level, idx, hash) in frontier.push(&hasher, hasher.leaf(record)) {
                            batch.insert(
                                hash_key(&job.channel, level, idx).to_vec(),
                                hash.0.to_vec(),
                            );
                        }
                        batch.insert(record_key(&job.channel, index).to_vec(), record.as_slice());
                    }
                    let head = Head {
                        size: frontier.size(),
                        root: frontier.root(&hasher),
                    };
                    touched.insert(job.channel, head);
                    replies.push((job.reply, Ok(start..head.size)));
                }
                Err(e) => {
                    failed.get_or_insert(e.to_string());
                    replies.push((job.reply, Err(())));
                }
            }
        }
        for (channel, head) in &touched {
            batch.insert(head_key(channel).to_vec(), encode_head(head).to_vec());
        }
        let outcome = match failed {
            Some(e) => Err(e),
            None => self
                .tree
                .apply_batch(batch)
                .and_then(|()| self.db.flush().map(|_| ()))
                .map_err(|e| e.to_string()),
        };
        match outcome {
            Ok(()) => {
                if let Ok(mut heads) = self.heads.write() {
                    heads.extend(touched);
                }
                for (reply, result) in replies {
                    let _ = reply.send(result.map_err(|()| LogError::WriterStopped));
                }
            }
            Err(e) => {
                // Nothing of this group is durable: forget the advanced frontiers so the next
                // group starts again from the durable heads.
                for channel in touched.keys() {
                    self.frontiers.remove(channel);
                }
                for (reply, _) in replies {
                    let _ = reply.send(Err(LogError::CommitFailed(e.clone())));
                }
            }
        }
    }
}

fn load_and_check_heads<H: TreeHasher>(
    tree: &sled::Tree,
    hasher: &H,
) -> Result<HashMap<ChannelId, Head>, LogError> {
    let mut heads = HashMap::new();
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
        let reader = ChannelReader {
            tree,
            channel: &channel,
        };
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
        if head.size > 0 && tree.get(record_key(&channel, head.size - 1))?.is_none() {
            return Err(LogError::Corrupt {
                channel,
                detail: format!("last record {} is missing", head.size - 1),
            });
        }
        heads.insert(channel, head);
    }
    Ok(heads)
}

fn record_key(channel: &ChannelId, index: u64) -> [u8; 41] {
    let mut k = [0u8; 41];
    k[0] = RECORD;
    k[1..33].copy_from_slice(&channel.0);
    k[33..].copy_from_slice(&index.to_be_bytes());
    k
}

fn hash_key(channel: &ChannelId, level: u8, index: u64) -> [u8; 42] {
    let mut k = [0u8; 42];
    k[0] = HASH;
    k[1..33].copy_from_slice(&channel.0);
    k[33] = level;
    k[34..].copy_from_slice(&index.to_be_bytes());
    k
}

fn head_key(channel: &ChannelId) -> [u8; 33] {
    let mut k = [0u8; 33];
    k[0] = HEAD;
    k[1..].copy_from_slice(&channel.0);
    k
}

fn checkpoint_key(channel: &ChannelId, size: u64) -> [u8; 41] {
    let mut k = [0u8; 41];
    k[0] = CHECKPOINT;
    k[1..33].copy_from_slice(&channel.0);
    k[33..].copy_from_slice(&size.to_be_bytes());
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

/// The big-endian index at the end of a record or checkpoint key, refusing a key of the wrong
/// length (which only corruption can produce).
fn key_index(channel: &ChannelId, key: &[u8]) -> Result<u64, LogError> {
    match key.get(33..) {
        Some(tail) if tail.len() == 8 => Ok(be_u64(tail)),
        _ => Err(LogError::Corrupt {
            channel: *channel,
            detail: format!("key of {} bytes where 41 are expected", key.len()),
        }),
    }
}
