//! Authenticated reads (spec/HTTP.md §5.1): the channel endpoints that reveal a client's
//! usage (state, records, proofs, checkpoints) answer only the channel's bound session key,
//! through a `TALLY-READ-AUTH` token, or the provider's admin token
//! (`Authorization: Bearer …`, config key `admin_token_file`).
//!
//! Every refusal is the same `unauthorized` (401); an unknown or unbound channel answers
//! exactly as a bad signature does, so reads are no oracle for which channels exist. The time
//! window is checked before any lookup for the same reason.

use std::fmt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{FromRequestParts, OriginalUri, Path as PathParam};
use http::request::Parts;
use tally_core::hash::blake3_of;
use tally_core::{ChannelId, Hash};
use tally_http::read_auth::{ReadToken, READ_AUTH, READ_AUTH_WINDOW_MS};
use tally_http::Reason;

use crate::errors::{GatewayError, StartError};
use crate::gateway::Gateway;

/// Domain prefix of the admin token's digest: the token itself is never kept in memory
/// after start-up, only this hash, compared in constant time.
const ADMIN_DOMAIN: &[u8] = b"tally\0admin-token\0";
/// The shortest admin token accepted (characters).
pub const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// The one message of every signature-level refusal: the same for a bad signature, another
/// key, an unknown channel and an unbound one.
const NO_ORACLE: &str = "the read token does not verify for this channel";

/// The provider's admin token, as a digest (spec/HTTP.md §5.1, §10 `admin_token_file`).
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Hash);

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A token from its text: at least [`MIN_ADMIN_TOKEN_LEN`] visible ASCII characters, no
    /// spaces (what fits `Authorization: Bearer <token>` unchanged).
    pub fn new(text: &str) -> Result<Self, String> {
        if text.len() < MIN_ADMIN_TOKEN_LEN {
            return Err(format!(
                "the admin token must be at least {MIN_ADMIN_TOKEN_LEN} characters"
            ));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the admin token must be visible ASCII without spaces".into());
        }
        Ok(AdminToken(blake3_of(&[ADMIN_DOMAIN, text.as_bytes()])))
    }

    /// Whether `presented` is the token. Both sides are hashed first and the digests compared
    /// with `Hash`'s constant-time equality (subtle), so neither the length nor a matching
    /// prefix leaks through timing.
    pub fn matches(&self, presented: &[u8]) -> bool {
        blake3_of(&[ADMIN_DOMAIN, presented]) == self.0
    }

    /// The key of the provider console's session cookies (spec/HTTP.md §11.2), derived
    /// from the digest: never the token itself, and a new token voids every session.
    pub(crate) fn session_key(&self) -> [u8; 32] {
        blake3::derive_key("tally console session key v1", self.0.as_bytes())
    }
}

/// Reads `admin_token_file`: refused, like a key file, if group or others may read it; one
/// token, surrounding whitespace (a final newline) ignored.
pub fn read_admin_token_file(path: &Path) -> Result<AdminToken, StartError> {
    let err = |reason: String| StartError::KeyFile {
        path: path.display().to_string(),
        reason,
    };
    let text = crate::config::read_secret_file(path)?;
    AdminToken::new(text.trim()).map_err(err)
}

fn unauthorized(message: impl Into<String>) -> GatewayError {
    GatewayError::new(Reason::Unauthorized, message)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// An extractor for the read endpoints: the `{id}` path parameter, allowed to be read by
/// this request. A handler that takes it cannot run for an unauthenticated reader.
pub struct ReadAuthorized {
    /// The channel read.
    pub channel: ChannelId,
}

impl FromRequestParts<Gateway> for ReadAuthorized {
    type Rejection = GatewayError;

    async fn from_request_parts(parts: &mut Parts, gw: &Gateway) -> Result<Self, GatewayError> {
        let PathParam(id) = PathParam::<String>::from_request_parts(parts, gw)
            .await
            .map_err(|e| GatewayError::malformed(format!("channel id: {e}")))?;
        let channel = ChannelId::from_hex(&id)
            .map_err(|e| GatewayError::malformed(format!("channel id: {e}")))?;
        let target = match parts.extensions.get::<OriginalUri>() {
            Some(OriginalUri(uri)) => uri.path_and_query().map(|p| p.as_str().to_string()),
            None => parts.uri.path_and_query().map(|p| p.as_str().to_string()),
        }
        .unwrap_or_default();
        authorize(gw, &channel, parts.method.as_str(), &target, &parts.headers).await?;
        Ok(ReadAuthorized { channel })
    }
}

/// The check itself (spec/HTTP.md §5.1), in order: an `Authorization` header must carry the
/// admin token; otherwise a `TALLY-READ-AUTH` token must parse, lie within
/// ±[`READ_AUTH_WINDOW_MS`] of this clock, and verify under the channel's bound session key
/// over `(channel, method, target, issued_at_ms)`.
pub async fn authorize(
    gw: &Gateway,
    channel: &ChannelId,
    method: &str,
    target: &str,
    headers: &http::HeaderMap,
) -> Result<(), GatewayError> {
    if let Some(v) = headers.get(http::header::AUTHORIZATION) {
        let presented = v.as_bytes().strip_prefix(b"Bearer ");
        let admin = gw.settings().admin_token.as_ref();
        return match (admin, presented) {
            (Some(t), Some(p)) if t.matches(p) => Ok(()),
            _ => Err(unauthorized("the admin token is not this gateway's")),
        };
    }
    let value = headers.get(READ_AUTH).ok_or_else(|| {
        unauthorized("channel reads need TALLY-READ-AUTH (the session key) or the admin token")
    })?;
    let token = ReadToken::parse(value.as_bytes()).map_err(|e| unauthorized(e.to_string()))?;
    token
        .check_time(now_ms(), READ_AUTH_WINDOW_MS)
        .map_err(|e| unauthorized(e.to_string()))?;
    let key = gw.stored_session(channel).await?;
    // Unbound or unknown: verify against the provider's own key anyway (it cannot pass), so
    // the answer costs what a bad signature costs and reads the same.
    let (key, bound) = match key {
        Some(k) => (k, true),
        None => (gw.public_key(), false),
    };
    match token.verify(&key, channel, method, target) {
        Ok(()) if bound => Ok(()),
        _ => Err(unauthorized(NO_ORACLE)),
    }
}
