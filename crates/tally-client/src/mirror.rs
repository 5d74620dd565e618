//! The client's mirror of its channel's log, in its own sled file (tally-log's
//! [`LogStore`]), plus what it needs to resume and to prove: the provider's signature of
//! every record and the checkpoints it signed.

use std::path::Path;

use tally_core::encoding::Canonical;
use tally_core::hash::TreeHasher;
use tally_core::{ChannelId, Hash, Record, Signature};
use tally_log::{Blake3Hasher, LogStore};

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
}

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
        Ok(Mirror {
            channel,
            log,
            meta,
            sigs,
            size,
            root,
            cumulative,
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

    /// Appends a verified record at the next index and waits until it is durable, then
    /// stores the provider's signature. The signature is not flushed here (sled flushes
    /// within 500 ms); one lost in a crash is fetched again on resume
    /// ([`Mirror::missing_signatures`]), since the provider can always recompute it.
    pub async fn append(
        &mut self,
        record: &Record,
        provider: Signature,
    ) -> Result<(), ClientError> {
        if record.outcome.seq != self.size {
            return Err(ClientError::Mirror(format!(
                "record {} does not extend the mirror of size {}",
                record.outcome.seq, self.size
            )));
        }
        let range = self
            .log
            .append(self.channel, vec![record.to_bytes()])
            .await?;
        if range.start != self.size {
            return Err(ClientError::Mirror(format!(
                "mirror appended at {range:?}, expected {}",
                self.size
            )));
        }
        self.sigs
            .insert(record.outcome.seq.to_be_bytes(), &provider.0[..])?;
        let head = self
            .log
            .head(&self.channel)
            .ok_or_else(|| ClientError::Mirror("no head after append".into()))?;
        self.size = head.size;
        self.root = head.root;
        self.cumulative = record.outcome.cumulative;
        Ok(())
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

    /// Checks that a record the provider holds extends the mirror exactly as the client
    /// would have: our authorization and signature, the mirror's root and cumulative.
    pub fn check_extends(
        &self,
        record: &Record,
        provider_sig: &Signature,
        client: &tally_core::PublicKey,
        provider: &tally_core::PublicKey,
    ) -> Result<(), Misbehavior> {
        let index = self.size;
        let bad = |why: String| Misbehavior::BadRecord { index, why };
        let a = &record.authorization;
        if a.channel_id != self.channel || a.seq != index {
            return Err(bad("wrong channel or seq".into()));
        }
        if a.prev_root != self.root || a.prev_cumulative != self.cumulative {
            return Err(bad(
                "does not acknowledge the mirror's root and cumulative".into()
            ));
        }
        record.verify(client).map_err(|e| bad(e.to_string()))?;
        record
            .verify_receipt(provider, provider_sig)
            .map_err(|e| bad(format!("provider signature: {e}")))?;
        Ok(())
    }
}
