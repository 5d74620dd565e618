//! The client's restore statement (spec/PROTOCOL.md §5.7): after a provider in promise mode
//! restarted uncleanly, the client says, under its session key, which records it holds beyond
//! the provider's durable head and that it holds nothing further.
//!
//! The statement is what lets the provider take new appends at indices it may once have
//! promised (DESIGN.md §8): the client uploads every co-signed record it holds that extends
//! the durable log, and signs that the log, once they are appended, is `(size, root,
//! cumulative)`. Any receipt the client holds for an index at or beyond `size` is disowned by
//! its own signature, so it can never be shown later as the provider signing two outcomes for
//! one index.

use serde::{Deserialize, Serialize};

use crate::encoding::Canonical;
use crate::error::Result;
use crate::hash::{ChannelId, Hash};
use crate::keys::{PublicKey, SecretKey};
use crate::sequence::LogState;
use crate::signature::Signature;

/// `tally\0restore\0` · version · channel · the provider's restore nonce · the provider's
/// durable state the upload starts from · the state after it (spec/PROTOCOL.md §5.7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restore {
    /// [`crate::VERSION`].
    pub version: u8,
    /// The channel.
    pub channel_id: ChannelId,
    /// The nonce the provider drew for this restore (given with `restore_required`): binds
    /// the statement to one restore, so it can be neither replayed after a later crash nor
    /// cited for one.
    pub nonce: Hash,
    /// The provider's durable size the upload starts at (from its `restore_required`).
    pub base_size: u64,
    /// The provider's durable root at `base_size`, which the client's mirror agrees with.
    pub base_root: Hash,
    /// The log's size once the uploaded records are appended.
    pub size: u64,
    /// Its root.
    pub root: Hash,
    /// Its cumulative net amount.
    pub cumulative: u128,
    /// Whether the client holds nothing beyond `size` (the last chunk of an upload): only
    /// then may the provider append new records after it.
    pub complete: bool,
}

impl Canonical for Restore {
    const DOMAIN: &'static [u8] = b"tally\0restore\0";
    const NAME: &'static str = "restore statement";
    fn version(&self) -> u8 {
        self.version
    }
}

impl Restore {
    /// The statement that, in the restore `nonce` names, the log goes from `base` to `after`,
    /// and whether that is all.
    pub fn new(
        channel_id: ChannelId,
        nonce: Hash,
        base: &LogState,
        after: &LogState,
        complete: bool,
    ) -> Self {
        Restore {
            version: crate::VERSION,
            channel_id,
            nonce,
            base_size: base.size,
            base_root: base.root,
            size: after.size,
            root: after.root,
            cumulative: after.cumulative,
            complete,
        }
    }

    /// The state the statement ends at.
    pub fn after(&self) -> LogState {
        LogState {
            size: self.size,
            root: self.root,
            cumulative: self.cumulative,
        }
    }

    /// The session key's signature over the canonical bytes.
    pub fn sign(&self, key: &SecretKey) -> Signature {
        key.sign(&self.to_bytes())
    }

    /// Strict verification (spec/PROTOCOL.md §4.1) under the channel's session key.
    pub fn verify(&self, key: &PublicKey, signature: &Signature) -> Result<()> {
        key.verify(&self.to_bytes(), signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(size: u64, b: u8, cumulative: u128) -> LogState {
        LogState {
            size,
            root: Hash([b; 32]),
            cumulative,
        }
    }

    #[test]
    fn bytes_have_the_specified_layout_and_round_trip() {
        let r = Restore::new(
            ChannelId([7; 32]),
            Hash([5; 32]),
            &state(3, 1, 0),
            &state(5, 2, 900),
            true,
        );
        let bytes = r.to_bytes();
        // prefix 14 + version 1 + channel 32 + nonce 32 + size 8 + root 32 + size 8 + root 32
        // + u128 16 + bool 1
        assert_eq!(bytes.len(), 14 + 1 + 32 + 32 + 8 + 32 + 8 + 32 + 16 + 1);
        assert_eq!(bytes[175], 1);
        let mut two = bytes.clone();
        two[175] = 2;
        assert!(Restore::from_bytes(&two).is_err(), "a bool is 0 or 1");
        assert!(bytes.starts_with(b"tally\0restore\0"));
        assert_eq!(bytes[14], crate::VERSION);
        assert_eq!(&bytes[47..79], &[5u8; 32]);
        assert_eq!(&bytes[79..87], &3u64.to_le_bytes());
        assert_eq!(&bytes[159..175], &900u128.to_le_bytes());
        assert_eq!(Restore::from_bytes(&bytes).unwrap(), r);
        assert_eq!(r.after(), state(5, 2, 900));
    }

    #[test]
    fn only_the_session_key_over_these_bytes_verifies() {
        let key = SecretKey::from_seed(&[9; 32]);
        let other = SecretKey::from_seed(&[8; 32]);
        let r = Restore::new(
            ChannelId([7; 32]),
            Hash([5; 32]),
            &state(3, 1, 0),
            &state(3, 1, 0),
            true,
        );
        let sig = r.sign(&key);
        r.verify(&key.public(), &sig).unwrap();
        assert!(r.verify(&other.public(), &sig).is_err());
        let mut changed = r;
        changed.size = 4;
        assert!(changed.verify(&key.public(), &sig).is_err());
        let mut other_restore = r;
        other_restore.nonce = Hash([6; 32]);
        assert!(other_restore.verify(&key.public(), &sig).is_err());
    }
}
