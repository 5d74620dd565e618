//! The gateway's own small database, next to the log: which session key each channel bound
//! (spec/HTTP.md §5.2), which records a dispute already credited (§7) and which channels the
//! payee agreed to close, at what state and with what signature (§5.4), and every terms
//! document the gateway ever served (disputes are judged under a record's own terms, §7).
//! All must survive restarts; every write is flushed and its data file `fdatasync`ed before
//! the caller is answered, as the log's group commits are (sled's own flush only schedules
//! the write-back).
//!
//! Cluster mode keeps the same state in PostgreSQL (spec/CLUSTER.md §2, version 3): both
//! stores implement tally-log's `BindingsBackend` (this one in `backend.rs`), whose value
//! shapes, decoding and first-writer-wins rule live in tally-log, once, so the two answer
//! alike; one conformance suite runs on both. The byte layouts are the ones this database
//! always used, so existing databases read unchanged.

use std::path::Path;

use alloy::primitives::B256;
use tally_chain::Eip712Sig;
use tally_core::{ChannelId, Hash, PublicKey, RequestSalt};
use tally_log::bindings::SIG_LEN;

/// Session bindings, dispute credits and close agreements, in one sled database.
pub struct Bindings {
    db: sled::Db,
    data_file: std::fs::File,
    sessions: sled::Tree,
    credits: sled::Tree,
    closing: sled::Tree,
    /// When each close was agreed (unix seconds, 8 bytes big-endian), for the settlement
    /// worker's `close_timeout` (spec/CHAIN.md §9, "Agreed closes").
    closing_at: sled::Tree,
    terms: sled::Tree,
    salts: sled::Tree,
    promises: sled::Tree,
    restores: sled::Tree,
}

pub use tally_log::bindings::CreditMark;
use tally_log::bindings::{
    decode_salt, decode_session, first_writer_wins, restore_value, split_restore, CloseMark,
    RuleError,
};

mod backend;

/// Why a read or write of the gateway's database failed.
#[derive(Debug, thiserror::Error)]
pub enum BindingsError {
    /// sled or the file system failed.
    #[error("gateway database: {0}")]
    Db(#[from] sled::Error),
    /// The rules refused the write, or a stored value does not decode
    /// (tally-log's `bindings` module, shared with the PostgreSQL store).
    #[error(transparent)]
    Rule(#[from] RuleError),
}

/// A cooperative close the payee signed: the channel's final state and the payee's Close
/// signature over it. Once stored, the channel records nothing more, and a repeat of the same
/// close request gets this very signature back. Stored as tally-log's [`CloseMark`] shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closing {
    /// The log size closed at (the whole log).
    pub size: u64,
    /// The root at `size`.
    pub root: Hash,
    /// The cumulative at `size`.
    pub cumulative: u128,
    /// The checkpoint signer's EIP-712 Close signature, kept so the provider holds both
    /// halves of the agreement and can submit `cooperativeClose` itself.
    pub signer_sig: Eip712Sig,
    /// The payee's EIP-712 Close signature.
    pub payee_sig: Eip712Sig,
}

/// One signature as stored: v (1) ‖ r (32) ‖ s (32).
fn sig_bytes(sig: &Eip712Sig) -> [u8; SIG_LEN] {
    let mut b = [0u8; SIG_LEN];
    b[0] = sig.v;
    b[1..33].copy_from_slice(&sig.r.0);
    b[33..].copy_from_slice(&sig.s.0);
    b
}

fn sig_from(b: &[u8; SIG_LEN]) -> Eip712Sig {
    let mut r = [0u8; 32];
    let mut s = [0u8; 32];
    r.copy_from_slice(&b[1..33]);
    s.copy_from_slice(&b[33..]);
    Eip712Sig {
        v: b[0],
        r: B256::from(r),
        s: B256::from(s),
    }
}

impl From<Closing> for CloseMark {
    fn from(c: Closing) -> CloseMark {
        CloseMark {
            size: c.size,
            root: c.root,
            cumulative: c.cumulative,
            signer_sig: sig_bytes(&c.signer_sig),
            payee_sig: sig_bytes(&c.payee_sig),
        }
    }
}

impl From<CloseMark> for Closing {
    fn from(m: CloseMark) -> Closing {
        Closing {
            size: m.size,
            root: m.root,
            cumulative: m.cumulative,
            signer_sig: sig_from(&m.signer_sig),
            payee_sig: sig_from(&m.payee_sig),
        }
    }
}

impl Bindings {
    /// Opens or creates the database at `path`.
    pub fn open(path: &Path) -> Result<Self, sled::Error> {
        let db = sled::Config::new().path(path).open()?;
        let data_file = std::fs::File::open(path.join("db"))?;
        let sessions = db.open_tree("sessions")?;
        let credits = db.open_tree("credits")?;
        let closing = db.open_tree("closing")?;
        let closing_at = db.open_tree("closing_at")?;
        let terms = db.open_tree("terms")?;
        let salts = db.open_tree("salts")?;
        let promises = db.open_tree("promises")?;
        let restores = db.open_tree("restores")?;
        Ok(Bindings {
            db,
            data_file,
            sessions,
            credits,
            closing,
            closing_at,
            terms,
            salts,
            promises,
            restores,
        })
    }

    /// Makes every write so far durable: sled's flush, then `fdatasync` of its data file.
    fn sync(&self) -> Result<(), sled::Error> {
        self.db.flush()?;
        self.data_file.sync_data()?;
        Ok(())
    }

    /// Keeps a served terms document under its hash (a no-op if already kept).
    pub fn remember_terms(&self, hash: &Hash, bytes: &[u8]) -> Result<(), sled::Error> {
        if self.terms.get(hash.0)?.is_none() {
            self.terms.insert(hash.0, bytes)?;
            self.sync()?;
        }
        Ok(())
    }

    /// The terms document served under `hash`, if this gateway ever served it.
    pub fn terms(&self, hash: &Hash) -> Result<Option<Vec<u8>>, sled::Error> {
        Ok(self.terms.get(hash.0)?.map(|v| v.to_vec()))
    }

    /// The close the payee signed for `channel`, if any. A stored value that does not decode
    /// reads as an error, never as "not closing".
    pub fn closing(&self, channel: &ChannelId) -> Result<Option<Closing>, BindingsError> {
        match self.closing.get(channel.0)? {
            None => Ok(None),
            Some(v) => Ok(Some(CloseMark::from_bytes(&v)?.into())),
        }
    }

    /// Marks `channel` closing at `closing`'s state, durably (flushed before returning),
    /// and notes when (the first time only: a repeat keeps the original agreement time).
    /// First-writer-wins (tally-log's rule): a repeat of the stored agreement is accepted,
    /// another agreement is refused (`RuleError::ClosingConflict`) and the first stays.
    pub fn mark_closing(
        &self,
        channel: &ChannelId,
        closing: &Closing,
    ) -> Result<(), BindingsError> {
        let mark = CloseMark::from(*closing);
        let swapped =
            self.closing
                .compare_and_swap(channel.0, None::<&[u8]>, Some(&mark.to_bytes()[..]))?;
        if let Err(current) = swapped {
            let stored = current
                .current
                .ok_or(RuleError::Corrupt("close agreement vanished"))?;
            first_writer_wins(
                &CloseMark::from_bytes(&stored)?,
                &mark,
                RuleError::ClosingConflict,
            )?;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let _ = self.closing_at.compare_and_swap(
            channel.0,
            None::<&[u8]>,
            Some(&now.to_be_bytes()[..]),
        )?;
        Ok(self.sync()?)
    }

    /// Every stored close, with when it was agreed (unix seconds; `None` for a close stored
    /// before the time was kept). What the settlement worker submits when the client does
    /// not (spec/CHAIN.md §9). A stored value that does not decode is an error.
    pub fn closings(&self) -> Result<Vec<(ChannelId, Closing, Option<u64>)>, BindingsError> {
        let mut out = Vec::new();
        for entry in self.closing.iter() {
            let (key, value) = entry?;
            let id = <[u8; 32]>::try_from(key.as_ref())
                .map(ChannelId)
                .map_err(|_| RuleError::Corrupt("stored close agreement has a wrong key"))?;
            let closing = CloseMark::from_bytes(&value)?.into();
            let at = self
                .closing_at
                .get(id.0)?
                .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                .map(u64::from_be_bytes);
            out.push((id, closing, at));
        }
        Ok(out)
    }

    /// The session key bound to `channel`. A stored value that is not a valid key reads as
    /// an error, never as "unbound".
    pub fn session(&self, channel: &ChannelId) -> Result<Option<PublicKey>, BindingsError> {
        match self.sessions.get(channel.0)? {
            None => Ok(None),
            Some(v) => Ok(Some(decode_session(&v)?)),
        }
    }

    /// Binds `key` to `channel` durably, first-writer-wins (compare-and-swap, tally-log's
    /// rule): the bound key again is accepted, another key is refused
    /// (`RuleError::SessionConflict`). The gateway checks the bound key under the channel's
    /// lock first (spec/HTTP.md §5.2); the store holds the same line on its own.
    pub fn bind(&self, channel: &ChannelId, key: &PublicKey) -> Result<(), BindingsError> {
        let swapped =
            self.sessions
                .compare_and_swap(channel.0, None::<&[u8]>, Some(&key.to_bytes()[..]))?;
        if let Err(current) = swapped {
            let stored = current
                .current
                .ok_or(RuleError::Corrupt("session binding vanished"))?;
            first_writer_wins(&decode_session(&stored)?, key, RuleError::SessionConflict)?;
        }
        Ok(self.sync()?)
    }

    /// The credit mark of record `index` of `channel`, if a dispute asked for one. A stored
    /// value of the wrong shape reads as an error, never as "not credited".
    pub fn credit_for(
        &self,
        channel: &ChannelId,
        index: u64,
    ) -> Result<Option<CreditMark>, BindingsError> {
        match self.credits.get(credit_key(channel, index))? {
            None => Ok(None),
            Some(v) => Ok(Some(CreditMark::from_bytes(&v)?)),
        }
    }

    /// The channel's request salt (spec/PROTOCOL.md §3.3), if one was drawn. A stored value
    /// of the wrong length reads as an error, never as "no salt".
    pub fn salt(&self, channel: &ChannelId) -> Result<Option<RequestSalt>, BindingsError> {
        match self.salts.get(channel.0)? {
            None => Ok(None),
            Some(v) => Ok(Some(decode_salt(&v)?)),
        }
    }

    /// The channel's salt, drawing `fresh` and storing it durably if none is stored yet
    /// (compare-and-swap, so two racing binds agree on one salt). Flushed before returning.
    pub fn salt_or_insert(
        &self,
        channel: &ChannelId,
        fresh: RequestSalt,
    ) -> Result<RequestSalt, BindingsError> {
        let _ =
            self.salts
                .compare_and_swap(channel.0, None as Option<&[u8]>, Some(&fresh.0[..]))?;
        self.sync()?;
        self.salt(channel)?
            .ok_or(RuleError::Corrupt("request salt missing after storing it").into())
    }

    /// Marks record `index` as credited by `mark`, durably (before the credit record is
    /// appended, so a crash in between errs toward refusing a second credit until the mark
    /// is found not to be backed by its record). Replaces an earlier mark of the record.
    pub fn mark_credited(
        &self,
        channel: &ChannelId,
        index: u64,
        mark: &CreditMark,
    ) -> Result<(), BindingsError> {
        self.credits
            .insert(credit_key(channel, index), &mark.to_bytes()[..])?;
        Ok(self.sync()?)
    }
}

/// Promise-mode marks (spec/HTTP.md §5.6): a channel is marked, durably, before its first
/// receipt is promised ahead of durability; the marks are cleared only after a shutdown
/// that made every promise durable. A mark found by a gateway that did not set it (a new
/// process, or a reopened log) means promises may have been lost with memory.
impl Bindings {
    /// Marks `channel` as possibly holding promises not yet durable, durably.
    pub fn mark_promising(&self, channel: &ChannelId) -> Result<(), BindingsError> {
        if self.promises.contains_key(channel.0)? {
            return Ok(());
        }
        self.promises.insert(channel.0, &[][..])?;
        Ok(self.sync()?)
    }

    /// Whether `channel` carries a promise mark.
    pub fn is_promising(&self, channel: &ChannelId) -> Result<bool, BindingsError> {
        Ok(self.promises.contains_key(channel.0)?)
    }

    /// Clears the marks of `channels`, durably: only once every promise is durable, and only
    /// for channels whose promises this run holds (a channel still waiting for its restore
    /// keeps its mark).
    pub fn clear_promising<'a>(
        &self,
        channels: impl IntoIterator<Item = &'a ChannelId>,
    ) -> Result<(), BindingsError> {
        for channel in channels {
            self.promises.remove(channel.0)?;
        }
        Ok(self.sync()?)
    }

    /// Keeps a client's signed restore statement (its canonical bytes and signature), the
    /// provider's evidence that the client disowned any receipt beyond it.
    /// Kept under (channel, nonce, size): every chunk of every restore stays.
    pub fn keep_restore(
        &self,
        channel: &ChannelId,
        nonce: &Hash,
        size: u64,
        statement: &[u8],
        signature: &tally_core::Signature,
    ) -> Result<(), BindingsError> {
        let mut key = Vec::with_capacity(72);
        key.extend_from_slice(&channel.0);
        key.extend_from_slice(&nonce.0);
        key.extend_from_slice(&size.to_be_bytes());
        self.restores
            .insert(key, restore_value(statement, signature))?;
        Ok(self.sync()?)
    }

    /// The restore statements kept for `channel`, ordered by (nonce, size), as
    /// `(bytes, signature)`.
    pub fn restores(
        &self,
        channel: &ChannelId,
    ) -> Result<Vec<(Vec<u8>, tally_core::Signature)>, BindingsError> {
        let mut out = Vec::new();
        for item in self.restores.scan_prefix(channel.0) {
            let (_, v) = item?;
            out.push(split_restore(&v)?);
        }
        Ok(out)
    }
}

fn credit_key(channel: &ChannelId, index: u64) -> [u8; 40] {
    let mut k = [0u8; 40];
    k[..32].copy_from_slice(&channel.0);
    k[32..].copy_from_slice(&index.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promise_marks_and_restore_statements_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (ChannelId([1; 32]), ChannelId([2; 32]));
        {
            let db = Bindings::open(dir.path()).unwrap();
            db.mark_promising(&a).unwrap();
            db.mark_promising(&a).unwrap();
            db.keep_restore(
                &a,
                &Hash([1; 32]),
                5,
                b"one",
                &tally_core::Signature([4; 64]),
            )
            .unwrap();
            db.keep_restore(
                &a,
                &Hash([2; 32]),
                5,
                b"two",
                &tally_core::Signature([4; 64]),
            )
            .unwrap();
        }
        let db = Bindings::open(dir.path()).unwrap();
        assert!(db.is_promising(&a).unwrap());
        assert!(!db.is_promising(&b).unwrap());
        // Two restores at the same size: both statements are kept.
        assert_eq!(
            db.restores(&a).unwrap(),
            vec![
                (b"one".to_vec(), tally_core::Signature([4; 64])),
                (b"two".to_vec(), tally_core::Signature([4; 64]))
            ]
        );
        assert!(db.restores(&b).unwrap().is_empty());
        db.mark_promising(&b).unwrap();
        db.clear_promising([&a]).unwrap();
        drop(db);
        let db = Bindings::open(dir.path()).unwrap();
        assert!(!db.is_promising(&a).unwrap());
        assert!(
            db.is_promising(&b).unwrap(),
            "only the named marks are cleared"
        );
    }

    #[test]
    fn closing_round_trips_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let id = ChannelId([7; 32]);
        let closing = Closing {
            size: 9,
            root: Hash([3; 32]),
            cumulative: u128::MAX - 1,
            signer_sig: Eip712Sig {
                v: 27,
                r: B256::repeat_byte(0x5c),
                s: B256::repeat_byte(0x22),
            },
            payee_sig: Eip712Sig {
                v: 28,
                r: B256::repeat_byte(0xaa),
                s: B256::repeat_byte(0x11),
            },
        };
        {
            let b = Bindings::open(dir.path()).unwrap();
            assert_eq!(b.closing(&id).unwrap(), None);
            b.mark_closing(&id, &closing).unwrap();
        }
        let b = Bindings::open(dir.path()).unwrap();
        assert_eq!(b.closing(&id).unwrap(), Some(closing));
        let listed = b.closings().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].0, listed[0].1), (id, closing));
        let at = listed[0].2.unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(at <= now && at + 60 > now, "{at} vs {now}");
        // A repeat keeps the first agreement time.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        b.mark_closing(&id, &closing).unwrap();
        assert_eq!(b.closings().unwrap()[0].2, Some(at));
        assert_eq!(b.closing(&ChannelId([8; 32])).unwrap(), None);
        assert_eq!(Closing::from(CloseMark::from(closing)), closing);
    }

    #[test]
    fn credit_marks_name_their_dispute_survive_reopening_and_refuse_a_wrong_shape() {
        let dir = tempfile::tempdir().unwrap();
        let id = ChannelId([5; 32]);
        let mark = CreditMark {
            index: 41,
            request_hash: Hash([9; 32]),
        };
        {
            let b = Bindings::open(dir.path()).unwrap();
            assert_eq!(b.credit_for(&id, 7).unwrap(), None);
            b.mark_credited(&id, 7, &mark).unwrap();
        }
        let b = Bindings::open(dir.path()).unwrap();
        assert_eq!(b.credit_for(&id, 7).unwrap(), Some(mark));
        assert_eq!(b.credit_for(&id, 8).unwrap(), None);
        // A mark in the old shape (a bare seq) is an error, never "not credited".
        b.credits
            .insert(credit_key(&id, 8), &41u64.to_be_bytes())
            .unwrap();
        assert!(b.credit_for(&id, 8).is_err());
    }

    #[test]
    fn served_terms_are_kept_by_hash() {
        let dir = tempfile::tempdir().unwrap();
        let b = Bindings::open(dir.path()).unwrap();
        let (h1, h2) = (Hash([1; 32]), Hash([2; 32]));
        b.remember_terms(&h1, b"first").unwrap();
        b.remember_terms(&h1, b"ignored: already kept").unwrap();
        assert_eq!(b.terms(&h1).unwrap().as_deref(), Some(&b"first"[..]));
        assert_eq!(b.terms(&h2).unwrap(), None);
    }
}
