//! tally-chain: the onchain half of tally.
//!
//! It holds the settlement contract's compiled artifact and alloy bindings, the EIP-712
//! encoding of checkpoints, a client for every contract operation, the [`Funding`] view the
//! gateway uses to decide whether a channel is funded, and the provider's settlement worker.
//! The protocol it implements is spec/CHAIN.md.
//!
//! What it must never do: put anything per request onchain (only deposits and checkpoints go
//! there), sign a checkpoint on a client's behalf without that client's key, submit a claim
//! whose checkpoint the chain already accepted, or treat an unverified signature as funds.

pub mod anvil;
pub mod channel;
pub mod contract;
pub mod deploy;
pub mod eip712;
pub mod error;
pub mod funding;
pub mod gas;
pub mod gasless;
pub mod settle;

pub use channel::{channel_id, OpenParams, TallyClient, TxOutcome};
pub use eip712::{ChainCheckpoint, CloseAgreement, Eip712Sig};
pub use error::ChainError;
pub use funding::{
    ChainFunding, ChannelFunding, Funding, FundingRefusal, WithdrawState,
    DEFAULT_MIN_WITHDRAW_DELAY, MAX_WITHDRAW_DELAY, MIN_WITHDRAW_DELAY,
};
pub use gasless::{DepositAuth, DepositDomains, GaslessOpen, GaslessTopUp};
pub use settle::{
    skip_reason, skipped_in, AgreedClose, CheckpointSource, FeeBid, SettleConfig, SettlementWorker,
    TickObserver, TickReport, WorkerStats,
};

/// A boxed, sendable future; keeps the async traits here object-safe without extra crates.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
