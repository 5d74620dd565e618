//! The client's errors. A [`Misbehavior`] is proof the provider broke the protocol; once
//! one is seen the client refuses to pay on the channel again.

use tally_core::Hash;
use tally_http::Reason;
use thiserror::Error;

/// A provider answer that breaks the protocol, named precisely.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Misbehavior {
    /// The receipt's signature does not verify under the provider key.
    #[error("receipt signature does not verify under the provider key")]
    BadReceiptSignature,
    /// The receipt answers another channel, seq or authorization.
    #[error("receipt does not answer this request: {0}")]
    WrongAuthorization(String),
    /// The amount exceeds the authorized maximum.
    #[error("charged {amount}, above the authorized maximum {max}")]
    OverMaximum {
        /// Charged.
        amount: i128,
        /// Authorized.
        max: u128,
    },
    /// The amount is not what the terms give for this response.
    #[error("charged {got}, but the terms give {expected} for this response")]
    WrongAmount {
        /// What the terms give.
        expected: i128,
        /// What was charged.
        got: i128,
    },
    /// The units are not what the upstream reported.
    #[error("recorded units {got:?}, but the response reports {expected:?}")]
    WrongUnits {
        /// Reported, one count per meter.
        expected: tally_core::Units,
        /// Recorded.
        got: tally_core::Units,
    },
    /// `cumulative != prev_cumulative + amount`.
    #[error("cumulative {got} is not {expected} (previous + amount)")]
    WrongCumulative {
        /// prev + amount.
        expected: u128,
        /// What the receipt says.
        got: u128,
    },
    /// The response hash does not match the body received.
    #[error("receipt's response hash does not match the response received")]
    WrongResponseHash,
    /// The provider's log has a different root than the mirror at the same size.
    #[error("forked log: at size {size} the provider's root is {theirs}, the mirror's {ours}")]
    Fork {
        /// The size compared.
        size: u64,
        /// Mirror root.
        ours: Hash,
        /// Provider root.
        theirs: Hash,
    },
    /// The provider's log is shorter than receipts the client holds (P8 broken).
    #[error("the provider's log has {theirs} records but the client holds receipts for {ours}")]
    LostRecords {
        /// Mirror size.
        ours: u64,
        /// Provider size.
        theirs: u64,
    },
    /// A record the provider returned was not authorized by this client as it claims.
    #[error("record {index} from the provider is invalid: {why}")]
    BadRecord {
        /// Its index.
        index: u64,
        /// Why.
        why: String,
    },
    /// The provider answered a close request with another state, or with a payee signature
    /// that does not recover to the channel's payee: `cooperativeClose` would reject it.
    #[error("bad cooperative close from the provider: {0}")]
    BadClose(String),
    /// The provider's `TALLY-CREDIT-STATE` is not the state after the credit it granted, or
    /// its signature does not recover to the payee: `claimCosigned` would reject it
    /// (spec/HTTP.md §7).
    #[error("bad credit state from the provider: {0}")]
    BadCredit(String),
    /// The terms' provider key changed from the one pinned.
    #[error("the provider key changed from {pinned} to {served}")]
    ProviderKeyChanged {
        /// Pinned.
        pinned: String,
        /// Served now.
        served: String,
    },
}

/// Everything that can go wrong in the client.
#[derive(Debug, Error)]
pub enum ClientError {
    /// HTTP transport failure (after retries).
    #[error("http: {0}")]
    Http(String),
    /// The provider refused with a protocol reason the client could not resolve.
    #[error("refused ({}): {message}", reason.code())]
    Refused {
        /// The reason.
        reason: Reason,
        /// The provider's message.
        message: String,
    },
    /// The provider misbehaved; the channel is no longer used.
    #[error("provider misbehaved: {0}")]
    Misbehavior(#[from] Misbehavior),
    /// An earlier misbehavior stopped this channel.
    #[error("this channel was stopped after provider misbehavior: {0}")]
    Stopped(Misbehavior),
    /// The streamed response to the request at `seq` broke before its end (spec/HTTP.md
    /// §5.7). The gateway records what it forwarded; that record, if any, comes into the
    /// mirror from the log before the lane is used again, and may be disputed.
    #[error("the stream of request {seq} broke before its end")]
    StreamCut {
        /// The seq.
        seq: u64,
    },
    /// The request at `seq` was recorded (and mirrored) but its response body is lost.
    #[error("request {seq} was recorded but the provider no longer holds its response")]
    ResponseLost {
        /// The seq.
        seq: u64,
    },
    /// The provider answered something unparseable.
    #[error("unreadable provider answer: {0}")]
    Protocol(String),
    /// The mirror log failed.
    #[error("mirror log: {0}")]
    Mirror(String),
    /// Signing a checkpoint failed.
    #[error("checkpoint signing: {0}")]
    Signing(String),
    /// A chain read or transaction failed (the credit watcher, spec/CHAIN.md §4.6).
    #[error("chain: {0}")]
    Chain(#[from] tally_chain::ChainError),
    /// The URL is not under the client's base URL or is invalid.
    #[error("bad url {0}")]
    BadUrl(String),
    /// The provider's terms now charge more (or credit less) than the terms this client
    /// accepted, and the caller did not opt in (spec/HTTP.md §4.4); nothing was paid.
    #[error(
        "the provider's terms changed against this client and were not accepted: {}",
        list_changes(changes)
    )]
    TermsRaised {
        /// Every change, old and new value.
        changes: Vec<tally_http::TermsIncrease>,
    },
}

fn list_changes(changes: &[tally_http::TermsIncrease]) -> String {
    changes
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<tally_log::LogError> for ClientError {
    fn from(e: tally_log::LogError) -> Self {
        ClientError::Mirror(e.to_string())
    }
}

impl From<sled::Error> for ClientError {
    fn from(e: sled::Error) -> Self {
        ClientError::Mirror(e.to_string())
    }
}

impl From<reqwest::Error> for ClientError {
    fn from(e: reqwest::Error) -> Self {
        ClientError::Http(e.to_string())
    }
}
