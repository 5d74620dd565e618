//! Machine-readable error reasons (spec/HTTP.md §8). Every failure of the gateway answers
//! with an [`ErrorBody`]; the reason alone tells a client what to do next.

use serde::{Deserialize, Serialize};
use tally_core::Hash;

use crate::amount::Amount;
use crate::payment::WireRecord;

/// Why a request was refused, with what the client needs to recover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Reason {
    /// A priced route was called without `PAYMENT-SIGNATURE`.
    PaymentRequired,
    /// A header, path parameter or body could not be parsed.
    Malformed,
    /// A request body (or header) exceeds the limit.
    PayloadTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The channel does not exist onchain, or has no registered session key.
    UnknownChannel,
    /// The authorization's or a checkpoint's signature fails strict verification.
    InvalidSignature,
    /// The payment's `accepted` is not the requirement the gateway advertises for this route
    /// (spec/HTTP.md §3.2); the 402's `PAYMENT-REQUIRED` carries the right one.
    RequirementsMismatch {
        /// The first member that differs (`amount`, `payTo`, `extra.contract`, …).
        member: String,
    },
    /// `seq` is not the lane's next seq and the request is not a retry of the lane's last
    /// recorded one (spec/PROTOCOL.md §5.4). The client resyncs its mirror (the records
    /// endpoint) and continues the lane at `expected_seq`.
    StaleSeq {
        /// The lane.
        lane: u32,
        /// The seq the lane expects next: the number of records on it.
        expected_seq: u64,
        /// The lane's last record and its provider signature, if it has one (boxed: it is
        /// the one large field of a reason).
        last_record: Option<Box<WireRecord>>,
    },
    /// The lane is at or beyond the terms' `max_lanes`.
    LaneOutOfRange {
        /// The terms' `max_lanes`.
        max_lanes: u32,
    },
    /// A request on this lane is being served; a client has one request in flight per lane
    /// (spec/PROTOCOL.md §5.4). Retry once it is answered.
    LaneBusy {
        /// The lane.
        lane: u32,
        /// The seq in flight.
        seq: u64,
    },
    /// The acknowledged state is not one the log had, goes back on its lane, or is outside
    /// the acknowledgement window (spec/PROTOCOL.md §5.3 R7–R8); the log's durable head is
    /// given so the client can resync.
    StateMismatch {
        /// The log size.
        size: u64,
        /// The log's root at `size`.
        root: Hash,
        /// The cumulative amount at `size`.
        cumulative: Amount,
    },
    /// The gateway restarted in promise mode without committing every record it had
    /// promised (spec/HTTP.md §5.6): nothing more is appended to this channel until its client
    /// uploads the co-signed records it holds beyond this durable state, or signs that it
    /// holds none.
    RestoreRequired {
        /// The durable log size.
        size: u64,
        /// The root at `size`.
        root: Hash,
        /// The cumulative amount at `size`.
        cumulative: Amount,
        /// The nonce the restore statement must carry (spec/PROTOCOL.md §5.7).
        nonce: Hash,
    },
    /// A restore upload was refused (spec/HTTP.md §5.6): nothing of it was appended.
    RestoreRefused {
        /// The first uploaded record that was refused, if a record was at fault.
        index: Option<u64>,
    },
    /// The authorization's `request_hash` is not the hash of the request received.
    RequestMismatch {
        /// The hash the gateway computed (spec/PROTOCOL.md §3.3).
        request_hash: Hash,
    },
    /// The authorization signs other terms than those served now.
    TermsChanged {
        /// The current terms hash.
        terms_hash: Hash,
    },
    /// The deposit cannot cover the log's cumulative, plus what requests in flight may
    /// still be charged, plus `max_amount` (P5).
    InsufficientFunds {
        /// Deposit minus the cumulative and the reservations in flight.
        remaining: Amount,
    },
    /// Serving would exceed the credit limit beyond the last client-signed checkpoint.
    CheckpointRequired {
        /// The size to sign a checkpoint at (the log size).
        size: u64,
    },
    /// `max_amount` is below the route's fixed price.
    AmountTooLow {
        /// The price of this route.
        price: Amount,
    },
    /// The channel is closed or its withdrawal has started: no new credit.
    ChannelClosed,
    /// A different session key is already bound to this channel.
    SessionKeyConflict,
    /// The request at this lane and seq was recorded, but its response body is no longer held; the
    /// record and receipt are returned so the client's mirror stays complete.
    AlreadyRecorded {
        /// The record and its provider signature.
        record: Box<WireRecord>,
    },
    /// The upstream did not answer; nothing was recorded or charged.
    UpstreamUnavailable,
    /// The upstream's response is larger than the gateway meters; nothing was charged.
    ResponseTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// A dispute was not granted.
    DisputeRefused {
        /// Why.
        why: String,
    },
    /// The chain could not be read, so funding is unknown; retry later.
    ChainUnavailable,
    /// The gateway's log cannot take writes (a failed commit, e.g. a full disk); nothing was
    /// forwarded or recorded. It reopens the log by itself once writes succeed again.
    StoreUnavailable,
    /// This gateway holds no payee key (no `[settlement]` in its configuration), so it
    /// cannot cosign a cooperative close; the client exits with a withdrawal instead.
    CloseUnavailable,
    /// The gateway is already serving its limit of paid requests (`max_inflight_paid`,
    /// spec/HTTP.md §10); nothing was read, recorded or charged. Retry shortly.
    Overloaded,
    /// A channel read without a valid read token or admin token (spec/HTTP.md §5.1). Also
    /// the answer for an unknown or unbound channel, so a read says nothing about which
    /// channels exist.
    Unauthorized,
    /// The gasless-deposit relay (spec/HTTP.md §12) will not submit this deposit: it names
    /// another payee or token or too short a delay, it is below the relay's minimum, a
    /// signature fails, or the chain would revert it. Nothing was sent; submit it yourself or
    /// fix it.
    RelayRefused {
        /// Why.
        why: String,
    },
    /// Too many requests of this kind for now (the relay's rate limits, spec/HTTP.md §12);
    /// retry after `retry_after` seconds (also the `Retry-After` header).
    RateLimited {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// No such endpoint or record.
    NotFound,
    /// The gateway failed (storage); nothing was recorded.
    Internal,
}

impl Reason {
    /// The reason's code, as in the JSON `reason` field and x402's `error`.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::PaymentRequired => "payment_required",
            Reason::Malformed => "malformed",
            Reason::PayloadTooLarge { .. } => "payload_too_large",
            Reason::UnknownChannel => "unknown_channel",
            Reason::InvalidSignature => "invalid_signature",
            Reason::RequirementsMismatch { .. } => "requirements_mismatch",
            Reason::StaleSeq { .. } => "stale_seq",
            Reason::LaneOutOfRange { .. } => "lane_out_of_range",
            Reason::LaneBusy { .. } => "lane_busy",
            Reason::StateMismatch { .. } => "state_mismatch",
            Reason::RestoreRequired { .. } => "restore_required",
            Reason::RestoreRefused { .. } => "restore_refused",
            Reason::RequestMismatch { .. } => "request_mismatch",
            Reason::TermsChanged { .. } => "terms_changed",
            Reason::InsufficientFunds { .. } => "insufficient_funds",
            Reason::CheckpointRequired { .. } => "checkpoint_required",
            Reason::AmountTooLow { .. } => "amount_too_low",
            Reason::ChannelClosed => "channel_closed",
            Reason::SessionKeyConflict => "session_key_conflict",
            Reason::AlreadyRecorded { .. } => "already_recorded",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::ResponseTooLarge { .. } => "response_too_large",
            Reason::DisputeRefused { .. } => "dispute_refused",
            Reason::ChainUnavailable => "chain_unavailable",
            Reason::StoreUnavailable => "store_unavailable",
            Reason::CloseUnavailable => "close_unavailable",
            Reason::Overloaded => "overloaded",
            Reason::Unauthorized => "unauthorized",
            Reason::RelayRefused { .. } => "relay_refused",
            Reason::RateLimited { .. } => "rate_limited",
            Reason::NotFound => "not_found",
            Reason::Internal => "internal",
        }
    }

    /// The reason in x402's `errorReason` vocabulary where x402 has one with the same
    /// meaning, else tally's own code (spec/HTTP.md §8): what a 402's `PAYMENT-REQUIRED`
    /// carries as `error`, as the official x402 servers put their verification failure there.
    pub fn x402_reason(&self) -> &'static str {
        match self {
            Reason::Malformed => "invalid_payload",
            Reason::InsufficientFunds { .. } => "insufficient_funds",
            Reason::RequirementsMismatch { member } => match member.as_str() {
                "scheme" => "unsupported_scheme",
                "network" => "invalid_network",
                _ => "invalid_payment_requirements",
            },
            other => other.code(),
        }
    }

    /// The HTTP status of the reason (spec/HTTP.md §8).
    pub fn status(&self) -> u16 {
        match self {
            Reason::Malformed | Reason::RequestMismatch { .. } | Reason::LaneOutOfRange { .. } => {
                400
            }
            Reason::PayloadTooLarge { .. } => 413,
            Reason::StaleSeq { .. }
            | Reason::LaneBusy { .. }
            | Reason::StateMismatch { .. }
            | Reason::RestoreRequired { .. }
            | Reason::SessionKeyConflict
            | Reason::AlreadyRecorded { .. } => 409,
            Reason::DisputeRefused { .. }
            | Reason::RestoreRefused { .. }
            | Reason::RelayRefused { .. } => 422,
            Reason::RateLimited { .. } => 429,
            Reason::UpstreamUnavailable | Reason::ResponseTooLarge { .. } => 502,
            Reason::ChainUnavailable | Reason::StoreUnavailable | Reason::Overloaded => 503,
            Reason::CloseUnavailable => 501,
            Reason::Unauthorized => 401,
            Reason::NotFound => 404,
            Reason::Internal => 500,
            Reason::PaymentRequired
            | Reason::UnknownChannel
            | Reason::InvalidSignature
            | Reason::RequirementsMismatch { .. }
            | Reason::TermsChanged { .. }
            | Reason::InsufficientFunds { .. }
            | Reason::CheckpointRequired { .. }
            | Reason::AmountTooLow { .. }
            | Reason::ChannelClosed => 402,
        }
    }
}

/// The inner object of an error body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// The reason and its fields, flattened (`"reason": "<code>"`).
    #[serde(flatten)]
    pub reason: Reason,
    /// A human-readable sentence; never contains secrets.
    pub message: String,
}

/// The JSON body of every error: `{"error": {"reason": "...", "message": "...", ...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

impl ErrorBody {
    /// Builds a body.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        ErrorBody {
            error: ErrorDetail {
                reason,
                message: message.into(),
            },
        }
    }
}
