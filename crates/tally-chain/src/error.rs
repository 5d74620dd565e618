//! The one error type every fallible operation in this crate returns.

use alloy::primitives::{Address, B256};
use tally_core::ChannelId;

use crate::contract::Tally::TallyErrors;

/// Why a chain operation failed. [`ChainError::is_transient`] tells retryable failures apart.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The RPC endpoint could not be reached or answered with a non-revert error.
    #[error("rpc: {0}")]
    Rpc(String),
    /// The contract rejected the call with one of its declared errors.
    #[error("contract reverted: {0:?}")]
    Reverted(TallyErrors),
    /// The call reverted with data this crate does not know how to decode.
    #[error("call reverted: {0}")]
    RevertedOther(String),
    /// A transaction was mined but failed.
    #[error("transaction {0} was mined but reverted")]
    TxFailed(B256),
    /// The contract has no channel with this id.
    #[error("unknown channel {}", .0.to_hex())]
    UnknownChannel(ChannelId),
    /// A signature is malformed, malleable, or from the wrong key.
    #[error("bad signature: {0}")]
    Signature(String),
    /// A value read from the chain does not fit the type the protocol uses.
    #[error("value out of range: {0}")]
    OutOfRange(&'static str),
    /// The project-local anvil binary is missing.
    #[error("anvil not found at {path}: {hint}")]
    AnvilNotFound {
        /// Where it was looked for.
        path: String,
        /// How to get it.
        hint: &'static str,
    },
    /// The project-local tools (solc, anvil) could not be installed (no npm, no network, ...).
    #[error("installing the project-local tools: {0}")]
    ToolsInstall(String),
    /// anvil exists but could not be started.
    #[error("anvil failed to start: {0}")]
    AnvilSpawn(String),
    /// The gateway's checkpoint source failed.
    #[error("checkpoint source: {0}")]
    Source(String),
    /// The wallet given to the settlement worker does not sign for the client's sender.
    #[error("wallet signs for {wallet}, but the client sends from {sender}")]
    WalletMismatch {
        /// The wallet's default signer.
        wallet: Address,
        /// The client's sender (the payee).
        sender: Address,
    },
    /// The chain cannot run the contract, or a deployment does not answer as this build
    /// expects (spec/CHAIN.md §10).
    #[error("unsupported chain or deployment: {0}")]
    Unsupported(String),
    /// A file needed by a report or check could not be read or written.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl ChainError {
    /// True for failures that may go away on retry (RPC transport trouble); false for
    /// definitive answers such as reverts or bad signatures.
    pub fn is_transient(&self) -> bool {
        matches!(self, ChainError::Rpc(_))
    }
}

impl From<alloy::contract::Error> for ChainError {
    fn from(e: alloy::contract::Error) -> Self {
        if let Some(decoded) = e.as_decoded_interface_error::<TallyErrors>() {
            return ChainError::Reverted(decoded);
        }
        if let Some(data) = e.as_revert_data() {
            return ChainError::RevertedOther(data.to_string());
        }
        ChainError::Rpc(e.to_string())
    }
}

impl From<alloy::transports::TransportError> for ChainError {
    fn from(e: alloy::transports::TransportError) -> Self {
        ChainError::from(alloy::contract::Error::TransportError(e))
    }
}

impl From<alloy::providers::PendingTransactionError> for ChainError {
    fn from(e: alloy::providers::PendingTransactionError) -> Self {
        ChainError::Rpc(e.to_string())
    }
}
