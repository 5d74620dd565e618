//! The gateway's error type and its HTTP rendering (spec/HTTP.md §8): every refusal is a
//! JSON [`ErrorBody`] with the reason's status; payment refusals (402) also carry an x402
//! `PAYMENT-REQUIRED` header.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};
use tally_http::headers::{encode_header, PAYMENT_REQUIRED};
use tally_http::{ErrorBody, PaymentRequired, Reason};
use thiserror::Error;

/// A refusal or failure, with the reason a client acts on.
#[derive(Debug, Error, Clone)]
#[error("{}: {message}", reason.code())]
pub struct GatewayError {
    /// The machine-readable reason (boxed: some carry a record).
    pub reason: Box<Reason>,
    /// A sentence for humans; never contains key material.
    pub message: String,
    /// The x402 requirements to attach to a 402, if known.
    pub required: Option<Box<PaymentRequired>>,
}

impl GatewayError {
    /// A refusal with `reason`.
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        GatewayError {
            reason: Box::new(reason),
            message: message.into(),
            required: None,
        }
    }

    /// A `malformed` refusal.
    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new(Reason::Malformed, message)
    }

    /// An `internal` failure (storage); nothing was recorded.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Reason::Internal, message)
    }

    /// Attaches x402 requirements (sent only if the status is 402), with the reason in
    /// x402's vocabulary as `error` (spec/HTTP.md §8).
    pub fn with_required(mut self, required: PaymentRequired) -> Self {
        let mut required = required;
        required.error = self.reason.x402_reason().to_string();
        self.required = Some(Box::new(required));
        self
    }
}

/// Failures while starting a gateway.
#[derive(Debug, Error)]
pub enum StartError {
    /// The log store could not be opened.
    #[error("log store: {0}")]
    Log(#[from] tally_log::LogError),
    /// The gateway's own sled database could not be opened.
    #[error("gateway database: {0}")]
    Db(#[from] sled::Error),
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// A key file is missing, malformed or readable by others.
    #[error("key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The `[settlement]` payee key is not the key of `chain.pay_to`: its Close signatures
    /// and claims would be worthless, so the gateway does not start.
    #[error("the payee key signs for {key}, but chain.pay_to is {pay_to}")]
    PayeeKeyMismatch {
        /// The key file's address (public).
        key: String,
        /// The configured payee.
        pay_to: String,
    },
    /// The chain could not be reached at start-up, or the settlement worker refused its
    /// configuration.
    #[error("chain: {0}")]
    Chain(#[from] tally_chain::ChainError),
    /// The listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The configured `listen`.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Binding or serving failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.reason.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = match &*self.reason {
            Reason::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        };
        let body = ErrorBody::new(*self.reason, self.message);
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(seconds) = retry_after {
            resp.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::PAYMENT_REQUIRED {
            if let Some(req) = self.required {
                if let Ok(text) = encode_header(PAYMENT_REQUIRED, &*req) {
                    if let Ok(v) = HeaderValue::from_str(&text) {
                        resp.headers_mut().insert(PAYMENT_REQUIRED, v);
                    }
                }
            }
        }
        resp
    }
}
