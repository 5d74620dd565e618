//! EIP-712 encoding and signing of checkpoints and cooperative-close agreements
//! (spec/CHAIN.md §3).
//!
//! The struct definitions below are an independent Rust statement of the types in
//! `contracts/Tally.sol`; the differential test checks both produce the same digest.

use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use alloy::sol_types::{Eip712Domain, SolStruct};
use tally_core::{ChannelId, Checkpoint, Hash};

use crate::contract::Tally;
use crate::error::ChainError;

/// The EIP-712 domain name every tally contract uses.
pub const DOMAIN_NAME: &str = "tally";
/// The EIP-712 domain version.
pub const DOMAIN_VERSION: &str = "1";

mod typed {
    alloy::sol! {
        struct Checkpoint {
            bytes32 channelId;
            uint64 size;
            bytes32 root;
            uint256 cumulative;
        }
        struct Close {
            bytes32 channelId;
            uint64 size;
            bytes32 root;
            uint256 cumulative;
        }
    }
}

/// The domain binding a signature to one chain and one contract deployment.
pub fn domain(chain_id: u64, contract: Address) -> Eip712Domain {
    Eip712Domain::new(
        Some(DOMAIN_NAME.into()),
        Some(DOMAIN_VERSION.into()),
        Some(U256::from(chain_id)),
        Some(contract),
        None,
    )
}

/// The digest the payer's checkpoint signer signs so the payee can `claim`.
pub fn checkpoint_digest(domain: &Eip712Domain, cp: &Checkpoint) -> B256 {
    typed::Checkpoint {
        channelId: B256::from(cp.channel_id.0),
        size: cp.size,
        root: B256::from(cp.root.0),
        cumulative: U256::from(cp.cumulative),
    }
    .eip712_signing_hash(domain)
}

/// The digest both the checkpoint signer and the payee sign to `cooperativeClose`.
pub fn close_digest(domain: &Eip712Domain, cp: &Checkpoint) -> B256 {
    typed::Close {
        channelId: B256::from(cp.channel_id.0),
        size: cp.size,
        root: B256::from(cp.root.0),
        cumulative: U256::from(cp.cumulative),
    }
    .eip712_signing_hash(domain)
}

/// half the secp256k1 group order: the largest `s` the contract accepts.
const HALF_N: U256 = U256::from_be_slice(&[
    0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0x5D, 0x57, 0x6E, 0x73, 0x57, 0xA4, 0x50, 0x1D, 0xDF, 0xE9, 0x2F, 0x46, 0x68, 0x1B, 0x20, 0xA0,
]);

/// A secp256k1 signature in the contract's (v, r, s) form, always canonical (low s, v 27/28)
/// when made here; one read from the wire is checked by [`Eip712Sig::verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eip712Sig {
    /// 27 or 28.
    pub v: u8,
    /// The r scalar.
    pub r: B256,
    /// The s scalar, at most half the group order.
    pub s: B256,
}

impl Eip712Sig {
    /// From `(v, r, s)`, as the wire form carries them (tally-http's `WireEip712Sig`).
    pub fn from_parts((v, r, s): (u8, [u8; 32], [u8; 32])) -> Self {
        Eip712Sig {
            v,
            r: B256::from(r),
            s: B256::from(s),
        }
    }

    /// `(v, r, s)`, for the wire form.
    pub fn parts(&self) -> (u8, [u8; 32], [u8; 32]) {
        (self.v, self.r.0, self.s.0)
    }

    /// Converts an alloy signature, normalizing a high `s` to its low twin.
    pub fn from_alloy(sig: alloy::primitives::Signature) -> Self {
        let sig = sig.normalize_s().unwrap_or(sig);
        Eip712Sig {
            v: 27 + u8::from(sig.v()),
            r: B256::from(sig.r()),
            s: B256::from(sig.s()),
        }
    }

    /// Recovers the signer of `digest` under the contract's rules: rejects high `s`, a `v`
    /// other than 27/28 and anything that does not recover to a key.
    pub fn recover(&self, digest: &B256) -> Result<Address, ChainError> {
        let s = U256::from_be_bytes(self.s.0);
        if s > HALF_N {
            return Err(ChainError::Signature("high s (malleable) signature".into()));
        }
        let parity = match self.v {
            27 => false,
            28 => true,
            v => {
                return Err(ChainError::Signature(format!(
                    "v must be 27 or 28, got {v}"
                )))
            }
        };
        let sig = alloy::primitives::Signature::new(U256::from_be_bytes(self.r.0), s, parity);
        sig.recover_address_from_prehash(digest)
            .map_err(|e| ChainError::Signature(e.to_string()))
    }

    /// Checks, with the contract's rules, that `expected` signed `digest`: what checkpoint and
    /// close verification share, so neither is laxer than the contract.
    pub fn verify(&self, digest: &B256, expected: Address) -> Result<(), ChainError> {
        let got = self.recover(digest)?;
        if got != expected {
            return Err(ChainError::Signature(format!(
                "signed by {got}, expected {expected}"
            )));
        }
        Ok(())
    }

    /// The ABI value the contract takes.
    pub fn to_abi(&self) -> Tally::Sig {
        Tally::Sig {
            v: self.v,
            r: self.r,
            s: self.s,
        }
    }
}

/// Signs `digest` with `key`, returning the canonical contract form.
pub fn sign_digest(key: &PrivateKeySigner, digest: &B256) -> Result<Eip712Sig, ChainError> {
    let sig = key
        .sign_hash_sync(digest)
        .map_err(|e| ChainError::Signature(e.to_string()))?;
    Ok(Eip712Sig::from_alloy(sig))
}

/// A checkpoint with the checkpoint signer's EIP-712 signature: what a payee claims with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainCheckpoint {
    /// The signed state.
    pub checkpoint: Checkpoint,
    /// The checkpoint signer's signature over [`checkpoint_digest`].
    pub sig: Eip712Sig,
}

impl ChainCheckpoint {
    /// Signs `checkpoint` with the payer's checkpoint key (the client side of the protocol).
    pub fn sign(
        key: &PrivateKeySigner,
        domain: &Eip712Domain,
        checkpoint: Checkpoint,
    ) -> Result<Self, ChainError> {
        let sig = sign_digest(key, &checkpoint_digest(domain, &checkpoint))?;
        Ok(ChainCheckpoint { checkpoint, sig })
    }

    /// Checks offchain, with the contract's rules, that `expected` signed this checkpoint,
    /// so a provider never counts on a checkpoint the contract would reject.
    pub fn verify(&self, domain: &Eip712Domain, expected: Address) -> Result<(), ChainError> {
        self.sig
            .verify(&checkpoint_digest(domain, &self.checkpoint), expected)
    }

    /// The ABI value `claim` and `claimMany` take.
    pub fn to_abi(&self) -> Tally::SignedCheckpoint {
        Tally::SignedCheckpoint {
            checkpoint: checkpoint_to_abi(&self.checkpoint),
            sig: self.sig.to_abi(),
        }
    }
}

/// Signs the EIP-712 **Close** struct of `cp` (spec/CHAIN.md §3.3): the checkpoint key signs
/// it on the payer's side, the payee key on the provider's. Never a checkpoint signature: the
/// type hashes differ, so a close agreement cannot be replayed as a claim or the reverse.
pub fn sign_close(
    key: &PrivateKeySigner,
    domain: &Eip712Domain,
    cp: &Checkpoint,
) -> Result<Eip712Sig, ChainError> {
    sign_digest(key, &close_digest(domain, cp))
}

/// Checks, with the contract's rules, that `expected` signed the Close struct of `cp`, so
/// neither party counts on a close agreement `cooperativeClose` would reject.
pub fn verify_close(
    sig: &Eip712Sig,
    domain: &Eip712Domain,
    cp: &Checkpoint,
    expected: Address,
) -> Result<(), ChainError> {
    sig.verify(&close_digest(domain, cp), expected)
}

/// Everything `cooperativeClose` takes: the final state and both parties' Close signatures.
/// Whoever holds it can close the channel at once (anyone may submit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CloseAgreement {
    /// The final state: the log's size, root and cumulative.
    pub checkpoint: Checkpoint,
    /// The channel's checkpoint signer's Close signature.
    pub signer_sig: Eip712Sig,
    /// The channel's payee's Close signature.
    pub payee_sig: Eip712Sig,
}

impl CloseAgreement {
    /// Checks both signatures against the channel's `signer` and `payee`.
    pub fn verify(
        &self,
        domain: &Eip712Domain,
        signer: Address,
        payee: Address,
    ) -> Result<(), ChainError> {
        verify_close(&self.signer_sig, domain, &self.checkpoint, signer)?;
        verify_close(&self.payee_sig, domain, &self.checkpoint, payee)
    }
}

/// Converts a tally-core checkpoint into the contract's ABI struct.
pub fn checkpoint_to_abi(cp: &Checkpoint) -> Tally::Checkpoint {
    Tally::Checkpoint {
        channelId: B256::from(cp.channel_id.0),
        size: cp.size,
        root: B256::from(cp.root.0),
        cumulative: U256::from(cp.cumulative),
    }
}

/// Builds a tally-core checkpoint from its parts (convenience for callers holding B256s).
pub fn checkpoint(channel_id: B256, size: u64, root: B256, cumulative: u128) -> Checkpoint {
    Checkpoint {
        channel_id: ChannelId(channel_id.0),
        size,
        root: Hash(root.0),
        cumulative,
    }
}

/// The EIP-712 type of the session-key binding (spec/HTTP.md §5.2): the channel's checkpoint
/// key, the only key the contract knows, vouches for the ed25519 key that signs
/// authorizations.
pub const SESSION_KEY_TYPE: &str = "SessionKey(bytes32 channelId,bytes32 sessionKey)";

/// `keccak256(0x1901 || domainSeparator || keccak256(typeHash || channelId || sessionKey))`,
/// under the settlement contract's domain.
pub fn session_digest(
    chain_id: u64,
    contract: Address,
    channel: &tally_core::ChannelId,
    session_key: &tally_core::PublicKey,
) -> B256 {
    let separator = domain(chain_id, contract).separator();
    let type_hash = alloy::primitives::keccak256(SESSION_KEY_TYPE.as_bytes());
    let mut data = Vec::with_capacity(96);
    data.extend_from_slice(type_hash.as_slice());
    data.extend_from_slice(&channel.0);
    data.extend_from_slice(&session_key.to_bytes());
    let struct_hash = alloy::primitives::keccak256(&data);
    let mut msg = Vec::with_capacity(66);
    msg.extend_from_slice(&[0x19, 0x01]);
    msg.extend_from_slice(separator.as_slice());
    msg.extend_from_slice(struct_hash.as_slice());
    alloy::primitives::keccak256(&msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (PrivateKeySigner, Eip712Domain, Checkpoint) {
        let key = PrivateKeySigner::random();
        let d = domain(31337, Address::repeat_byte(0x11));
        let cp = Checkpoint {
            channel_id: ChannelId([1; 32]),
            size: 5,
            root: Hash([2; 32]),
            cumulative: 77,
        };
        (key, d, cp)
    }

    #[test]
    fn sign_then_verify_and_reject_tampering() {
        let (key, d, cp) = sample();
        let signed = ChainCheckpoint::sign(&key, &d, cp).unwrap();
        signed.verify(&d, key.address()).unwrap();
        assert!(U256::from_be_bytes(signed.sig.s.0) <= HALF_N);

        let mut more = signed;
        more.checkpoint.cumulative += 1;
        assert!(more.verify(&d, key.address()).is_err());
        let other_chain = domain(1, Address::repeat_byte(0x11));
        assert!(signed.verify(&other_chain, key.address()).is_err());
        let mut badv = signed;
        badv.sig.v = 0;
        assert!(matches!(
            badv.verify(&d, key.address()),
            Err(ChainError::Signature(_))
        ));
    }

    #[test]
    fn high_s_is_normalized_on_conversion_and_rejected_on_recovery() {
        let (key, d, cp) = sample();
        let digest = checkpoint_digest(&d, &cp);
        let sig = key.sign_hash_sync(&digest).unwrap();
        let n = HALF_N * U256::from(2u8) + U256::from(1u8);
        let high = alloy::primitives::Signature::new(sig.r(), n - sig.s(), !sig.v());
        assert_eq!(
            high.recover_address_from_prehash(&digest).unwrap(),
            key.address()
        );
        let converted = Eip712Sig::from_alloy(high);
        assert_eq!(converted.recover(&digest).unwrap(), key.address());
        let raw = Eip712Sig {
            v: 27 + u8::from(high.v()),
            r: B256::from(high.r()),
            s: B256::from(high.s()),
        };
        assert!(raw.recover(&digest).is_err());
    }

    #[test]
    fn close_signatures_verify_only_as_closes_and_are_deterministic() {
        let (key, d, cp) = sample();
        let payee = PrivateKeySigner::random();
        let agreement = CloseAgreement {
            checkpoint: cp,
            signer_sig: sign_close(&key, &d, &cp).unwrap(),
            payee_sig: sign_close(&payee, &d, &cp).unwrap(),
        };
        agreement
            .verify(&d, key.address(), payee.address())
            .unwrap();
        assert!(agreement
            .verify(&d, payee.address(), key.address())
            .is_err());
        // RFC 6979: the same key, digest and state give the same signature every time.
        assert_eq!(sign_close(&payee, &d, &cp).unwrap(), agreement.payee_sig);
        // A Close signature is not a checkpoint signature.
        let as_checkpoint = ChainCheckpoint {
            checkpoint: cp,
            sig: agreement.signer_sig,
        };
        assert!(as_checkpoint.verify(&d, key.address()).is_err());
        let mut other = cp;
        other.size += 1;
        assert!(verify_close(&agreement.signer_sig, &d, &other, key.address()).is_err());
    }

    #[test]
    fn checkpoint_and_close_digests_differ() {
        let (_, d, cp) = sample();
        assert_ne!(checkpoint_digest(&d, &cp), close_digest(&d, &cp));
    }
}
