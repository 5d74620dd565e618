//! Per-channel state held in memory, rebuilt from the log on first use (so a restarted
//! gateway continues exactly where its durable log ends), and the lock that serializes the
//! requests of one channel while different channels run in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use tally_core::encoding::Canonical;
use tally_core::hash::TreeHasher;
use tally_core::{ChannelId, Hash, PublicKey, Record, SecretKey, Signature};
use tally_http::WireCheckpoint;
use tally_log::LogStore;
use tokio::sync::Mutex as AsyncMutex;

use crate::bindings::{Bindings, Closing};
use crate::errors::GatewayError;

/// A response kept so a retry of the last seq gets the same bytes (spec/HTTP.md §9).
#[derive(Clone, Debug)]
pub struct CachedResponse {
    /// The seq it answered.
    pub seq: u64,
    /// HTTP status.
    pub status: u16,
    /// `content-type`, if any.
    pub content_type: Option<http::HeaderValue>,
    /// The body.
    pub body: Bytes,
    /// The `PAYMENT-RESPONSE` value.
    pub payment_response: http::HeaderValue,
}

impl CachedResponse {
    /// The byte-identical response a retry of its seq gets (spec/HTTP.md §9).
    pub fn into_response(self) -> axum::response::Response {
        let mut resp = axum::response::Response::new(axum::body::Body::from(self.body));
        *resp.status_mut() =
            http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::OK);
        if let Some(ct) = self.content_type {
            resp.headers_mut().insert(http::header::CONTENT_TYPE, ct);
        }
        resp.headers_mut()
            .insert(tally_http::headers::PAYMENT_RESPONSE, self.payment_response);
        resp
    }
}

/// What the gateway knows of one channel. Mutated only under the channel's lock.
#[derive(Debug)]
pub struct ChannelState {
    /// The channel.
    pub id: ChannelId,
    /// The bound session key.
    pub session_key: Option<PublicKey>,
    /// Durable log size: the seq expected next.
    pub size: u64,
    /// Root at `size`.
    pub root: Hash,
    /// Cumulative net amount at `size`.
    pub cumulative: u128,
    /// The last record and the provider's signature over its outcome.
    pub last: Option<(Record, Signature)>,
    /// Size of the latest client-signed checkpoint (0 if none).
    pub checkpoint_size: u64,
    /// Its cumulative.
    pub checkpoint_cumulative: u128,
    /// When it was accepted (or when this state was loaded, if earlier).
    pub checkpoint_at: Instant,
    /// The last response, for byte-identical retries.
    pub cached: Option<CachedResponse>,
    /// The cooperative close the payee signed, if any: then nothing more is recorded.
    pub closing: Option<Closing>,
}

impl ChannelState {
    /// Rebuilds a channel's state from the durable log, the stored checkpoints and the
    /// bindings (session key, close agreement). The provider signature of the last record is recomputed (ed25519 is
    /// deterministic, spec/PROTOCOL.md §5.3).
    pub fn load(
        id: ChannelId,
        store: &LogStore,
        bindings: &Bindings,
        key: &SecretKey,
    ) -> Result<Self, GatewayError> {
        let session_key = bindings
            .session(&id)
            .map_err(|e| GatewayError::internal(format!("session binding: {e}")))?;
        let closing = bindings
            .closing(&id)
            .map_err(|e| GatewayError::internal(format!("close agreement: {e}")))?;
        let head = store.head(&id);
        let (size, root) = match head {
            Some(h) => (h.size, h.root),
            None => (0, tally_log::Blake3Hasher.empty()),
        };
        let last = if size > 0 {
            let bytes = store
                .record(&id, size - 1)
                .map_err(|e| GatewayError::internal(format!("reading the log: {e}")))?;
            let record = Record::from_bytes(&bytes)
                .map_err(|e| GatewayError::internal(format!("stored record: {e}")))?;
            let sig = key.sign(&record.outcome.to_bytes());
            Some((record, sig))
        } else {
            None
        };
        let cumulative = last.as_ref().map_or(0, |(r, _)| r.outcome.cumulative);
        let (checkpoint_size, checkpoint_cumulative) = match store
            .latest_checkpoint(&id)
            .map_err(|e| GatewayError::internal(format!("reading checkpoints: {e}")))?
        {
            Some((size, bytes)) => {
                let wire: WireCheckpoint = serde_json::from_slice(&bytes)
                    .map_err(|e| GatewayError::internal(format!("stored checkpoint: {e}")))?;
                let body_end = wire.note.find("\n\n").map_or(0, |i| i + 1);
                let cp = tally_core::Checkpoint::parse_body(&wire.note[..body_end])
                    .map_err(|e| GatewayError::internal(format!("stored checkpoint: {e}")))?;
                (size, cp.cumulative)
            }
            None => (0, 0),
        };
        Ok(ChannelState {
            id,
            session_key,
            size,
            root,
            cumulative,
            last,
            checkpoint_size,
            checkpoint_cumulative,
            checkpoint_at: Instant::now(),
            cached: None,
            closing,
        })
    }
}

/// One lock per channel. Holding a channel's lock is the only way to change its log.
#[derive(Default)]
pub struct Channels {
    map: Mutex<HashMap<ChannelId, Arc<AsyncMutex<Option<ChannelState>>>>>,
}

impl Channels {
    /// The lock of `id` (its state is `None` until first loaded under the lock).
    pub fn slot(&self, id: &ChannelId) -> Arc<AsyncMutex<Option<ChannelState>>> {
        match self.map.lock() {
            Ok(mut m) => m.entry(*id).or_default().clone(),
            // A poisoned map only means another thread panicked while inserting; the data
            // (Arcs) is still consistent.
            Err(p) => p.into_inner().entry(*id).or_default().clone(),
        }
    }
}
