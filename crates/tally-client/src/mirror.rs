//! The client's mirror of its channel's log, in its own sled file (tally-log's
//! [`LogStore`]), plus what it needs to resume and to prove: the provider's signature of
//! every record and the checkpoints it signed.
//!
//! Appends can be pipelined ([`Mirror::append_pipelined`]): the record is queued to the
//! store's group-committing writer and the mirror's size, root and cumulative advance at
//! once (the root from the mirror's own right-edge [`Frontier`]), so the next authorization
//! can be signed without waiting for the fsync. [`Mirror::sync`] waits until everything
//! queued is durable; every read of stored records (resync, checkpoints, audits, disputes)
//! goes through it first. See spec/DESIGN-DECISIONS.md for what a client crash can lose.

use std::collections::VecDeque;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tally_core::encoding::Canonical;
use tally_core::hash::TreeHasher;
use tally_core::sequence::{LaneTail, RecentStates, ACK_WINDOW};
use tally_core::{ChannelId, Hash, Lanes, LogState, Record, SequenceError, Signature};
use tally_log::{Blake3Hasher, Frontier, LogError, LogStore, Ticket};

use crate::error::{ClientError, Misbehavior};

/// The mirror of one channel.
pub struct Mirror {
    channel: ChannelId,
    log: LogStore,
    meta: sled::Db,
    sigs: sled::Tree,
    size: u64,
    root: Hash,
    cumulative: u128,
    /// The right edge of the mirror at `size` (durable and pending records).
    frontier: Frontier,
    /// Appends queued but not yet known durable, oldest first: `(index, ticket)`.
    pending: VecDeque<(u64, Ticket)>,
    /// Why a pipelined append failed, if one did: the mirror refuses to go on.
    failed: Option<String>,
    /// Each lane's position (spec/PROTOCOL.md §5.3 R8).
    lanes: Lanes,
    /// The states since the mirror was opened (up to the acknowledgement window), so the
    /// acknowledgement of a record being appended is checked without a read.
    recent: RecentStates,
}

/// Most pipelined appends in flight before [`Mirror::append_pipelined`] waits for the oldest.
const MAX_PENDING: usize = 1024;

impl Mirror {
    /// Opens (or creates) the mirror under `dir` (`dir/log`, `dir/meta`).
    pub fn open(dir: &Path, channel: ChannelId) -> Result<Self, ClientError> {
        std::fs::create_dir_all(dir).map_err(|e| ClientError::Mirror(e.to_string()))?;
        let log = LogStore::open(dir.join("log"))?;
        let meta = sled::Config::new().path(dir.join("meta")).open()?;
        let sigs = meta.open_tree("provider_signatures")?;
        let (size, root) = match log.head(&channel) {
            Some(h) => (h.size, h.root),
            None => (0, Blake3Hasher.empty()),
        };
        let cumulative = if size > 0 {
            let bytes = log.record(&channel, size - 1)?;
            Record::from_bytes(&bytes)
                .map_err(|e| ClientError::Mirror(format!("mirrored record: {e}")))?
                .outcome
                .cumulative
        } else {
            0
        };
        let frontier = tally_log::frontier_at(&log, &channel, size, &root)?;
        let mut lanes = Lanes::default();
        for (lane, index) in log.keyed(&channel)? {
            let bytes = log.record(&channel, index)?;
            let a = Record::from_bytes(&bytes)
                .map_err(|e| ClientError::Mirror(format!("mirrored record: {e}")))?
                .authorization;
            lanes.set(
                lane,
                LaneTail {
                    next_seq: a.seq.saturating_add(1),
                    ack_size: a.ack_size,
                },
            );
        }
        let recent = RecentStates::starting_at(
            LogState {
                size,
                root,
                cumulative,
            },
            ACK_WINDOW as usize + 1,
        );
        Ok(Mirror {
            channel,
            log,
            meta,
            sigs,
            size,
            root,
            cumulative,
            frontier,
            pending: VecDeque::new(),
            failed: None,
            lanes,
            recent,
        })
    }

    /// Records held.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Root at [`Mirror::size`].
    pub fn root(&self) -> Hash {
        self.root
    }

    /// Cumulative at [`Mirror::size`].
    pub fn cumulative(&self) -> u128 {
        self.cumulative
    }

    /// The log store (for proofs).
    pub fn log(&self) -> &LogStore {
        &self.log
    }

    /// Root at an earlier size.
    pub fn root_at(&self, size: u64) -> Result<Hash, ClientError> {
        Ok(self.log.root_at(&self.channel, size)?)
    }

    /// Cumulative at an earlier size.
    pub fn cumulative_at(&self, size: u64) -> Result<u128, ClientError> {
        if size == 0 {
            return Ok(0);
        }
        Ok(self.record(size - 1)?.outcome.cumulative)
    }

    /// Record `index`.
    pub fn record(&self, index: u64) -> Result<Record, ClientError> {
        let bytes = self.log.record(&self.channel, index)?;
        Record::from_bytes(&bytes).map_err(|e| ClientError::Mirror(format!("record {index}: {e}")))
    }

    /// The provider's signature of record `index`, if held.
    pub fn provider_signature(&self, index: u64) -> Result<Option<Signature>, ClientError> {
        Ok(self.sigs.get(index.to_be_bytes())?.and_then(|v| {
            let b: [u8; 64] = v.as_ref().try_into().ok()?;
            Some(Signature(b))
        }))
    }

    /// Appends a verified record at the next index and waits until it (and every pipelined
    /// append before it) is durable, then stores the provider's signature. The signature is
    /// not flushed here (sled flushes within 500 ms); one lost in a crash is fetched again on
    /// resume ([`Mirror::missing_signatures`]), since the provider can always recompute it.
    pub async fn append(
        &mut self,
        record: &Record,
        provider: Signature,
    ) -> Result<(), ClientError> {
        self.append_pipelined(record, provider).await?;
        self.sync().await
    }

    /// Appends a verified record at the next index without waiting for the fsync: size, root
    /// and cumulative advance now, the record becomes durable with the store's next group
    /// commit. Waits only when [`MAX_PENDING`] appends are already in flight. A failure of
    /// an earlier pipelined append is returned here (or by [`Mirror::sync`]) and stops the
    /// mirror.
    pub async fn append_pipelined(
        &mut self,
        record: &Record,
        provider: Signature,
    ) -> Result<(), ClientError> {
        self.reap()?;
        if self.pending.len() >= MAX_PENDING {
            if let Some((index, ticket)) = self.pending.pop_front() {
                let done = ticket.await;
                self.settle(index, done)?;
            }
        }
        self.check_order(record).map_err(|e| {
            ClientError::Mirror(format!(
                "record {} does not extend the mirror of size {}: {e}",
                record.outcome.index, self.size
            ))
        })?;
        let bytes = record.to_bytes();
        let leaf = Blake3Hasher.leaf(&bytes);
        let lane = record.authorization.lane;
        let ticket = self
            .log
            .append_keyed(self.channel, self.size, vec![(lane, bytes)]);
        self.sigs
            .insert(record.outcome.index.to_be_bytes(), &provider.0[..])?;
        self.frontier.push(&Blake3Hasher, leaf);
        self.pending.push_back((self.size, ticket));
        self.size = self.frontier.size();
        self.root = self.frontier.root(&Blake3Hasher);
        self.cumulative = record.outcome.cumulative;
        self.lanes.advance(&record.authorization);
        self.recent.push(self.root, self.cumulative);
        Ok(())
    }

    /// Waits until every pipelined append is durable, and checks that the store's durable
    /// head is the mirror's.
    pub async fn sync(&mut self) -> Result<(), ClientError> {
        while let Some((index, ticket)) = self.pending.pop_front() {
            let done = ticket.await;
            self.settle(index, done)?;
        }
        if let Some(why) = &self.failed {
            return Err(ClientError::Mirror(why.clone()));
        }
        let durable = self.log.head(&self.channel).map(|h| (h.size, h.root));
        let expected = (self.size > 0).then_some((self.size, self.root));
        if durable != expected {
            let why = format!(
                "the mirror's durable head {durable:?} is not its size {} and root",
                self.size
            );
            self.failed = Some(why.clone());
            return Err(ClientError::Mirror(why));
        }
        Ok(())
    }

    /// Pipelined appends not yet known durable.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Takes the pipelined appends that have completed, without waiting.
    fn reap(&mut self) -> Result<(), ClientError> {
        let mut cx = Context::from_waker(Waker::noop());
        while let Some((index, ticket)) = self.pending.front_mut() {
            let index = *index;
            match Pin::new(ticket).poll(&mut cx) {
                Poll::Ready(done) => {
                    self.pending.pop_front();
                    self.settle(index, done)?;
                }
                Poll::Pending => break,
            }
        }
        match &self.failed {
            Some(why) => Err(ClientError::Mirror(why.clone())),
            None => Ok(()),
        }
    }

    /// Checks one completed append: durable exactly at `index`.
    fn settle(
        &mut self,
        index: u64,
        done: Result<std::ops::Range<u64>, LogError>,
    ) -> Result<(), ClientError> {
        let why = match done {
            Ok(range) if range.start == index && range.end == index + 1 => return Ok(()),
            Ok(range) => format!("mirror appended at {range:?}, expected {index}"),
            Err(e) => format!("mirror append of record {index}: {e}"),
        };
        self.failed.get_or_insert(why.clone());
        Err(ClientError::Mirror(why))
    }

    /// The indices at the end of the mirror whose provider signature is not held.
    pub fn missing_signatures(&self) -> Result<Vec<u64>, ClientError> {
        let mut out = Vec::new();
        let mut i = self.size;
        while i > 0 && self.provider_signature(i - 1)?.is_none() {
            out.push(i - 1);
            i -= 1;
        }
        out.reverse();
        Ok(out)
    }

    /// Stores a provider signature fetched again.
    pub fn put_signature(&self, index: u64, sig: &Signature) -> Result<(), ClientError> {
        self.sigs.insert(index.to_be_bytes(), &sig.0[..])?;
        Ok(())
    }

    /// Stores a value under `key` in the mirror's metadata, durably.
    pub fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), ClientError> {
        self.meta.insert(key.as_bytes(), value)?;
        self.meta.flush()?;
        Ok(())
    }

    /// Reads metadata.
    pub fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
        Ok(self.meta.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Each lane's position in the mirror.
    pub fn lanes(&self) -> &Lanes {
        &self.lanes
    }

    /// The mirror's head: the state the client acknowledges.
    pub fn head(&self) -> LogState {
        LogState {
            size: self.size,
            root: self.root,
            cumulative: self.cumulative,
        }
    }

    /// R5, R7 and R8 for `record` as the mirror's next record (spec/PROTOCOL.md §5.3).
    pub fn check_order(&self, record: &Record) -> Result<u128, SequenceError> {
        tally_core::check_position(record, self.head(), &self.lanes, |size| {
            self.recent.get(size).or_else(|| {
                let durable = self.log.head(&self.channel).map_or(0, |h| h.size);
                if size > durable {
                    return None;
                }
                let root = self.log.root_at(&self.channel, size).ok()?;
                let cumulative = self.cumulative_at(size).ok()?;
                Some(LogState {
                    size,
                    root,
                    cumulative,
                })
            })
        })
    }

    /// Checks that a record the provider holds extends the mirror exactly as the client
    /// would have: our authorization and signature, its place in the log (index,
    /// cumulative, acknowledgement, lane), and the provider's signature.
    pub fn check_extends(
        &self,
        record: &Record,
        provider_sig: &Signature,
        client: &tally_core::PublicKey,
        provider: &tally_core::PublicKey,
    ) -> Result<(), Misbehavior> {
        let index = self.size;
        let bad = |why: String| Misbehavior::BadRecord { index, why };
        if record.authorization.channel_id != self.channel {
            return Err(bad("another channel's record".into()));
        }
        record.verify(client).map_err(|e| bad(e.to_string()))?;
        self.check_order(record).map_err(|e| bad(e.to_string()))?;
        record
            .verify_receipt(provider, provider_sig)
            .map_err(|e| bad(format!("provider signature: {e}")))?;
        Ok(())
    }

    /// A proof bundle of record `index` (spec/PROTOCOL.md §7.3) against the latest
    /// checkpoint the provider cosigned (kept under the `checkpoint` metadata key).
    /// `chain` is left empty.
    pub fn proof_bundle(
        &self,
        index: u64,
        client: &tally_core::PublicKey,
        provider: &tally_core::PublicKey,
    ) -> Result<tally_core::ProofBundle, ClientError> {
        let note = self
            .get_meta("checkpoint")?
            .ok_or_else(|| ClientError::Protocol("no cosigned checkpoint held".into()))?;
        let note = String::from_utf8(note).map_err(|e| ClientError::Mirror(e.to_string()))?;
        let signed = tally_core::SignedCheckpoint::from_note(&note, client, provider, true)
            .map_err(|e| ClientError::Mirror(format!("held checkpoint: {e}")))?;
        let size = signed.checkpoint.size;
        if index >= size {
            return Err(ClientError::Protocol(format!(
                "record {index} is not covered by the latest checkpoint (size {size})"
            )));
        }
        let record = self.record(index)?;
        let provider_signature = self
            .provider_signature(index)?
            .ok_or_else(|| ClientError::Mirror(format!("no provider signature for {index}")))?;
        let inclusion_proof = self.log.inclusion_proof(&self.channel, index, size)?;
        Ok(tally_core::ProofBundle {
            format: tally_core::bundle::BUNDLE_FORMAT.into(),
            client_key: *client,
            provider_key: *provider,
            record: hex::encode(record.to_bytes()),
            provider_signature,
            index,
            inclusion_proof,
            checkpoint: note,
            chain: None,
        })
    }
}
