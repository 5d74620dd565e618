//! The gateway's side state, next to the log, behind one interface: which session key each
//! channel bound (spec/HTTP.md §5.2) and its request salt (PROTOCOL.md §3.3), which records a
//! dispute credited (HTTP.md §7), which channels the payee agreed to close (HTTP.md §5.4),
//! promise marks and restore statements (HTTP.md §5.6), and every terms document served
//! (HTTP.md §7). Two backends hold it: the gateway's sled `Bindings` (tally-server, one node)
//! and the PostgreSQL tables of cluster mode (tally-store-pg, spec/CLUSTER.md §2, version 3).
//!
//! **Why here.** Dependencies point one way (tally-server → tally-store-pg → tally-log), and
//! both backends must see the trait, its value types and its rules; tally-log already holds
//! the log's [`LogBackend`](crate::LogBackend) for the same reason, and its `conformance`
//! feature holds both suites. Nothing here touches sled or the network.
//!
//! **The rules live here, once.** Each backend provides only an atomic "insert if absent,
//! then read what is stored" (sled's compare-and-swap, PostgreSQL's `INSERT … ON CONFLICT DO
//! NOTHING` followed by a read in the same transaction); what that outcome means — accepted,
//! a harmless repeat, or a refusal — is decided by [`first_writer_wins`]. The byte shapes of
//! stored values and their decoding (a value that does not decode is an error, never
//! "absent") are here too, so a value one backend refuses the other refuses alike.

use std::future::Future;

use tally_core::{ChannelId, Hash, PublicKey, RequestSalt, Signature};

/// A dispute's credit: the index of the credit record, and the request hash of the dispute
/// that asked for it, which the credit record's authorization must carry (HTTP.md §7). A
/// mark whose record is not in the log (a crash between the two writes) does not count, and
/// the next credit of the same record replaces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CreditMark {
    /// The index the credit record was appended at (written under the channel's lock when
    /// the index is assigned, before the append is durable).
    pub index: u64,
    /// The dispute request's hash.
    pub request_hash: Hash,
}

/// The stored length of a [`CreditMark`]: index (8, big-endian) ‖ request hash (32).
pub const CREDIT_LEN: usize = 8 + 32;

impl CreditMark {
    /// The stored bytes.
    pub fn to_bytes(&self) -> [u8; CREDIT_LEN] {
        let mut v = [0u8; CREDIT_LEN];
        v[..8].copy_from_slice(&self.index.to_be_bytes());
        v[8..].copy_from_slice(&self.request_hash.0);
        v
    }

    /// Decodes stored bytes; a wrong shape is [`RuleError::Corrupt`], never "not credited".
    pub fn from_bytes(v: &[u8]) -> Result<CreditMark, RuleError> {
        let bad = || RuleError::Corrupt("stored credit mark has the wrong length");
        let v: &[u8; CREDIT_LEN] = v.try_into().map_err(|_| bad())?;
        let (index, hash) = v.split_at(8);
        Ok(CreditMark {
            index: u64::from_be_bytes(index.try_into().map_err(|_| bad())?),
            request_hash: Hash(hash.try_into().map_err(|_| bad())?),
        })
    }
}

/// One EIP-712 signature as stored: v (1) ‖ r (32) ‖ s (32).
pub const SIG_LEN: usize = 1 + 32 + 32;

/// A cooperative close the payee signed (HTTP.md §5.4): the channel's final state and both
/// parties' Close signatures over it. Once stored, the channel records nothing more, and a
/// repeat of the same close request gets these very signatures back. The signatures are
/// bytes here (tally-chain's `Eip712Sig` is above this crate); the gateway converts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseMark {
    /// The log size closed at (the whole log).
    pub size: u64,
    /// The root at `size`.
    pub root: Hash,
    /// The cumulative at `size`.
    pub cumulative: u128,
    /// The checkpoint signer's Close signature.
    pub signer_sig: [u8; SIG_LEN],
    /// The payee's Close signature.
    pub payee_sig: [u8; SIG_LEN],
}

/// The stored length of a [`CloseMark`]: size (8) ‖ root (32) ‖ cumulative (16) ‖ signer
/// signature ‖ payee signature, integers big-endian.
pub const CLOSE_LEN: usize = 8 + 32 + 16 + 2 * SIG_LEN;

impl CloseMark {
    /// The stored bytes.
    pub fn to_bytes(&self) -> [u8; CLOSE_LEN] {
        let mut b = [0u8; CLOSE_LEN];
        b[..8].copy_from_slice(&self.size.to_be_bytes());
        b[8..40].copy_from_slice(&self.root.0);
        b[40..56].copy_from_slice(&self.cumulative.to_be_bytes());
        b[56..56 + SIG_LEN].copy_from_slice(&self.signer_sig);
        b[56 + SIG_LEN..].copy_from_slice(&self.payee_sig);
        b
    }

    /// Decodes stored bytes; a wrong length is [`RuleError::Corrupt`], never "not closing".
    pub fn from_bytes(b: &[u8]) -> Result<CloseMark, RuleError> {
        let bad = || RuleError::Corrupt("stored close agreement has the wrong length");
        let b: &[u8; CLOSE_LEN] = b.try_into().map_err(|_| bad())?;
        let part = |from: usize, to: usize| b.get(from..to).ok_or_else(bad);
        Ok(CloseMark {
            size: u64::from_be_bytes(part(0, 8)?.try_into().map_err(|_| bad())?),
            root: Hash(part(8, 40)?.try_into().map_err(|_| bad())?),
            cumulative: u128::from_be_bytes(part(40, 56)?.try_into().map_err(|_| bad())?),
            signer_sig: part(56, 56 + SIG_LEN)?.try_into().map_err(|_| bad())?,
            payee_sig: part(56 + SIG_LEN, CLOSE_LEN)?
                .try_into()
                .map_err(|_| bad())?,
        })
    }
}

/// Decodes a stored session key: a value that is not a valid key is an error, never
/// "unbound".
pub fn decode_session(v: &[u8]) -> Result<PublicKey, RuleError> {
    let bytes: &[u8; 32] = v
        .try_into()
        .map_err(|_| RuleError::Corrupt("stored session key has the wrong length"))?;
    PublicKey::from_bytes(bytes).map_err(|_| RuleError::Corrupt("stored session key is invalid"))
}

/// Decodes a stored request salt: a wrong length is an error, never "no salt".
pub fn decode_salt(v: &[u8]) -> Result<RequestSalt, RuleError> {
    <[u8; 32]>::try_from(v)
        .map(RequestSalt)
        .map_err(|_| RuleError::Corrupt("stored request salt has the wrong length"))
}

/// A kept restore statement as stored: its canonical bytes, then the 64-byte signature.
pub fn restore_value(statement: &[u8], signature: &Signature) -> Vec<u8> {
    let mut v = Vec::with_capacity(statement.len() + 64);
    v.extend_from_slice(statement);
    v.extend_from_slice(&signature.0);
    v
}

/// Splits a stored restore value into the statement and its signature.
pub fn split_restore(v: &[u8]) -> Result<(Vec<u8>, Signature), RuleError> {
    let short = || RuleError::Corrupt("a kept restore statement is too short");
    let split = v.len().checked_sub(64).ok_or_else(short)?;
    let sig = <[u8; 64]>::try_from(&v[split..]).map_err(|_| short())?;
    Ok((v[..split].to_vec(), Signature(sig)))
}

/// A refusal of the rules, or a stored value that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Another session key is already bound to the channel (HTTP.md §5.2: a binding is
    /// first-writer-wins; the gateway answers `session_key_conflict`).
    #[error("another session key is bound to this channel")]
    SessionConflict,
    /// The channel already holds another close agreement (HTTP.md §5.4: once agreed, a close
    /// is final; only a repeat of the same agreement is accepted).
    #[error("another close agreement is stored for this channel")]
    ClosingConflict,
    /// A stored value has the wrong shape.
    #[error("{0}")]
    Corrupt(&'static str),
}

/// The one first-writer-wins rule: after an insert-if-absent, `stored` is what the database
/// holds (ours or an earlier writer's). Equal to `requested` is accepted (a first write or a
/// harmless repeat, so a retry after an unknown outcome succeeds); anything else is refused
/// with `conflict`, and the stored value stays.
pub fn first_writer_wins<T: PartialEq>(
    stored: &T,
    requested: &T,
    conflict: RuleError,
) -> Result<(), RuleError> {
    if stored == requested {
        Ok(())
    } else {
        Err(conflict)
    }
}

/// What a backend's error means, whatever the backend: the suite checks that both refuse the
/// same calls for the same reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingsErrorKind {
    /// [`RuleError::SessionConflict`].
    SessionConflict,
    /// [`RuleError::ClosingConflict`].
    ClosingConflict,
    /// [`RuleError::Corrupt`].
    Corrupt,
    /// An owner's write refused because the writer's lease is gone (PostgreSQL only,
    /// CLUSTER.md §4): nothing was written.
    Fenced,
    /// Anything else (storage failures).
    Other,
}

impl BindingsErrorKind {
    /// The kind of a [`RuleError`].
    pub fn of(error: &RuleError) -> BindingsErrorKind {
        match error {
            RuleError::SessionConflict => BindingsErrorKind::SessionConflict,
            RuleError::ClosingConflict => BindingsErrorKind::ClosingConflict,
            RuleError::Corrupt(_) => BindingsErrorKind::Corrupt,
        }
    }
}

/// The gateway's side state. Every write is durable before its future resolves. In cluster
/// mode the *owner's writes* (`mark_closing`, `mark_credited`, `mark_promising`,
/// `clear_promising`) are fenced by the writer's lease; the others are first-writer-wins or
/// insert-only facts any node may write (CLUSTER.md §2, version 3, says why each).
pub trait BindingsBackend {
    /// The backend's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// What `error` means to a caller of either backend.
    fn kind(error: &Self::Error) -> BindingsErrorKind;

    /// Keeps a served terms document under its hash; a second document under a kept hash is
    /// ignored (the first stays).
    fn remember_terms(
        &self,
        hash: &Hash,
        bytes: &[u8],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The terms document kept under `hash`.
    fn terms(
        &self,
        hash: &Hash,
    ) -> impl Future<Output = Result<Option<Vec<u8>>, Self::Error>> + Send;

    /// The session key bound to `channel`.
    fn session(
        &self,
        channel: &ChannelId,
    ) -> impl Future<Output = Result<Option<PublicKey>, Self::Error>> + Send;

    /// Binds `key` to `channel`, first-writer-wins: the same key again is accepted, another
    /// key is [`RuleError::SessionConflict`].
    fn bind(
        &self,
        channel: &ChannelId,
        key: &PublicKey,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The channel's request salt.
    fn salt(
        &self,
        channel: &ChannelId,
    ) -> impl Future<Output = Result<Option<RequestSalt>, Self::Error>> + Send;

    /// The channel's salt, storing `fresh` if none is stored (first-writer-wins: racing
    /// callers all get the one stored).
    fn salt_or_insert(
        &self,
        channel: &ChannelId,
        fresh: RequestSalt,
    ) -> impl Future<Output = Result<RequestSalt, Self::Error>> + Send;

    /// The close agreement stored for `channel`.
    fn closing(
        &self,
        channel: &ChannelId,
    ) -> impl Future<Output = Result<Option<CloseMark>, Self::Error>> + Send;

    /// Marks `channel` closing at `close` (owner's write), first-writer-wins: a repeat of the
    /// same agreement is accepted and keeps the first agreement time; another agreement is
    /// [`RuleError::ClosingConflict`].
    fn mark_closing(
        &self,
        channel: &ChannelId,
        close: &CloseMark,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Every stored close with when it was first agreed (unix seconds; `None` for a close
    /// stored before the time was kept), ordered by channel id.
    #[allow(clippy::type_complexity)]
    fn closings(
        &self,
    ) -> impl Future<Output = Result<Vec<(ChannelId, CloseMark, Option<u64>)>, Self::Error>> + Send;

    /// The credit mark of record `index` of `channel`.
    fn credit_for(
        &self,
        channel: &ChannelId,
        index: u64,
    ) -> impl Future<Output = Result<Option<CreditMark>, Self::Error>> + Send;

    /// Marks record `index` credited by `mark` (owner's write). Replaces an earlier mark: the
    /// gateway writes one only when no mark of that record landed in the log (HTTP.md §7).
    fn mark_credited(
        &self,
        channel: &ChannelId,
        index: u64,
        mark: &CreditMark,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Marks `channel` as possibly holding promises not yet durable (owner's write; a
    /// repeat is a no-op).
    fn mark_promising(
        &self,
        channel: &ChannelId,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Whether `channel` carries a promise mark.
    fn is_promising(
        &self,
        channel: &ChannelId,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;

    /// Clears the promise marks of `channels` (owner's write; unmarked channels are fine).
    fn clear_promising(
        &self,
        channels: &[ChannelId],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Keeps a client's signed restore statement under `(channel, nonce, size)`; a second one
    /// under the same key replaces it.
    fn keep_restore(
        &self,
        channel: &ChannelId,
        nonce: &Hash,
        size: u64,
        statement: &[u8],
        signature: &Signature,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// The restore statements kept for `channel`, ordered by `(nonce, size)`.
    #[allow(clippy::type_complexity)]
    fn restores(
        &self,
        channel: &ChannelId,
    ) -> impl Future<Output = Result<Vec<(Vec<u8>, Signature)>, Self::Error>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_shapes_round_trip_and_a_wrong_length_is_corrupt() {
        let close = CloseMark {
            size: 9,
            root: Hash([3; 32]),
            cumulative: u128::MAX - 1,
            signer_sig: [0x5c; SIG_LEN],
            payee_sig: [0xaa; SIG_LEN],
        };
        assert_eq!(CloseMark::from_bytes(&close.to_bytes()), Ok(close));
        assert!(matches!(
            CloseMark::from_bytes(&close.to_bytes()[1..]),
            Err(RuleError::Corrupt(_))
        ));
        let mark = CreditMark {
            index: 41,
            request_hash: Hash([9; 32]),
        };
        assert_eq!(CreditMark::from_bytes(&mark.to_bytes()), Ok(mark));
        assert!(CreditMark::from_bytes(&41u64.to_be_bytes()).is_err());
        assert!(decode_session(&[0; 31]).is_err());
        assert!(decode_salt(&[0; 33]).is_err());
        let v = restore_value(b"st", &Signature([4; 64]));
        assert_eq!(split_restore(&v), Ok((b"st".to_vec(), Signature([4; 64]))));
        assert!(split_restore(&[0; 63]).is_err());
    }

    #[test]
    fn first_writer_wins_accepts_a_repeat_and_refuses_another_value() {
        assert_eq!(
            first_writer_wins(&1, &1, RuleError::SessionConflict),
            Ok(())
        );
        assert_eq!(
            first_writer_wins(&1, &2, RuleError::ClosingConflict),
            Err(RuleError::ClosingConflict)
        );
    }
}
