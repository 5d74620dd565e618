//! The session-key binding digest (spec/HTTP.md §5.2): EIP-712 under the settlement
//! contract's domain (tally-chain's `eip712::domain`), so the channel's checkpoint key, the
//! only key the contract knows, vouches for the ed25519 key that signs authorizations.

use alloy::primitives::{keccak256, Address, B256};
use tally_core::{ChannelId, PublicKey};

/// The EIP-712 type of the binding.
pub const SESSION_KEY_TYPE: &str = "SessionKey(bytes32 channelId,bytes32 sessionKey)";

/// `keccak256(0x1901 || domainSeparator || keccak256(typeHash || channelId || sessionKey))`.
pub fn session_digest(
    chain_id: u64,
    contract: Address,
    channel: &ChannelId,
    session_key: &PublicKey,
) -> B256 {
    let separator = tally_chain::eip712::domain(chain_id, contract).separator();
    let type_hash = keccak256(SESSION_KEY_TYPE.as_bytes());
    let mut data = Vec::with_capacity(96);
    data.extend_from_slice(type_hash.as_slice());
    data.extend_from_slice(&channel.0);
    data.extend_from_slice(&session_key.to_bytes());
    let struct_hash = keccak256(&data);
    let mut msg = Vec::with_capacity(66);
    msg.extend_from_slice(&[0x19, 0x01]);
    msg.extend_from_slice(separator.as_slice());
    msg.extend_from_slice(struct_hash.as_slice());
    keccak256(&msg)
}
