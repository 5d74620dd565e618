//! The `TALLY-READ-AUTH` header (spec/HTTP.md §5.1): a short read token by which the
//! channel's session key authenticates one read of the gateway's channel endpoints. Its
//! signed bytes are tally-core's ([`tally_core::read`], spec/PROTOCOL.md §5.4); this module
//! renders and strictly parses the header value and applies the time window.

use tally_core::read::{sign_read, verify_read};
use tally_core::{ChannelId, PublicKey, SecretKey, Signature};

use crate::error::WireError;

/// The header carrying a read token (spec/HTTP.md §2, §5.1).
pub const READ_AUTH: &str = "tally-read-auth";

/// How far a token's `issued_at_ms` may be from the gateway's clock, either way
/// (spec/HTTP.md §5.1): a captured token replays for at most this long, and only for the
/// very read it signs.
pub const READ_AUTH_WINDOW_MS: u64 = 60_000;

/// The most decimal digits of a u64.
const MAX_MS_DIGITS: usize = 20;
/// 64 signature bytes as lowercase hex.
const SIG_HEX: usize = 128;

/// A parsed read token: `<issued_at_ms>.<signature>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadToken {
    /// When the client signed it, ms since the Unix epoch, by the client's clock.
    pub issued_at_ms: u64,
    /// The session key's signature over `read_token_bytes` (spec/PROTOCOL.md §5.4).
    pub signature: Signature,
}

/// Why a read token was refused. Every variant answers `unauthorized` (401).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ReadAuthError {
    /// The header value is not `<decimal>.<128 lowercase hex>`.
    #[error("malformed read token: {0}")]
    Malformed(&'static str),
    /// `issued_at_ms` is more than the window away from the verifier's clock.
    #[error("read token issued at {issued_at_ms} ms is outside ±{window_ms} ms of the gateway clock ({now_ms} ms)")]
    OutsideWindow {
        /// The token's time.
        issued_at_ms: u64,
        /// The verifier's time.
        now_ms: u64,
        /// The window.
        window_ms: u64,
    },
    /// The signature does not verify under the key given.
    #[error("read token signature does not verify")]
    BadSignature,
}

impl ReadToken {
    /// Signs a token for `method` on `target` (path and query exactly as sent) of `channel`.
    pub fn sign(
        key: &SecretKey,
        channel: &ChannelId,
        method: &str,
        target: &str,
        issued_at_ms: u64,
    ) -> Self {
        ReadToken {
            issued_at_ms,
            signature: sign_read(key, channel, method, target, issued_at_ms),
        }
    }

    /// The header value: decimal ms (no sign, no leading zeros), `.`, 128 lowercase hex.
    pub fn to_header(&self) -> String {
        format!("{}.{}", self.issued_at_ms, self.signature.to_hex())
    }

    /// Parses a header value strictly: anything [`to_header`](Self::to_header) would not
    /// produce is refused (upper-case hex, leading zeros, signs, spaces, other lengths).
    pub fn parse(value: &[u8]) -> Result<Self, ReadAuthError> {
        if value.len() > MAX_MS_DIGITS + 1 + SIG_HEX {
            return Err(ReadAuthError::Malformed("too long"));
        }
        let dot = value
            .iter()
            .position(|&b| b == b'.')
            .ok_or(ReadAuthError::Malformed("no '.'"))?;
        let (ms, sig) = (&value[..dot], &value[dot + 1..]);
        if ms.is_empty() || ms.len() > MAX_MS_DIGITS || !ms.iter().all(u8::is_ascii_digit) {
            return Err(ReadAuthError::Malformed("issued_at_ms is not a decimal"));
        }
        if ms.len() > 1 && ms[0] == b'0' {
            return Err(ReadAuthError::Malformed("issued_at_ms has a leading zero"));
        }
        let issued_at_ms = std::str::from_utf8(ms)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .ok_or(ReadAuthError::Malformed("issued_at_ms is not a u64"))?;
        if sig.len() != SIG_HEX || !sig.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ReadAuthError::Malformed(
                "signature is not 128 lowercase hex digits",
            ));
        }
        let mut bytes = [0u8; 64];
        hex::decode_to_slice(sig, &mut bytes)
            .map_err(|_| ReadAuthError::Malformed("signature is not hex"))?;
        Ok(ReadToken {
            issued_at_ms,
            signature: Signature(bytes),
        })
    }

    /// The time check alone: `|now_ms − issued_at_ms| ≤ window_ms`. Run before any key is
    /// looked up, so its answer says nothing about whether the channel exists.
    pub fn check_time(&self, now_ms: u64, window_ms: u64) -> Result<(), ReadAuthError> {
        if self.issued_at_ms.abs_diff(now_ms) > window_ms {
            return Err(ReadAuthError::OutsideWindow {
                issued_at_ms: self.issued_at_ms,
                now_ms,
                window_ms,
            });
        }
        Ok(())
    }

    /// Strict signature verification under `key` for this exact read.
    pub fn verify(
        &self,
        key: &PublicKey,
        channel: &ChannelId,
        method: &str,
        target: &str,
    ) -> Result<(), ReadAuthError> {
        verify_read(
            key,
            channel,
            method,
            target,
            self.issued_at_ms,
            &self.signature,
        )
        .map_err(|_| ReadAuthError::BadSignature)
    }
}

impl From<ReadAuthError> for WireError {
    fn from(e: ReadAuthError) -> Self {
        WireError::Malformed {
            what: "TALLY-READ-AUTH",
            reason: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> (SecretKey, ChannelId, ReadToken) {
        let key = SecretKey::from_seed(&[3; 32]);
        let ch = ChannelId([4; 32]);
        let t = ReadToken::sign(&key, &ch, "GET", "/tally/v1/channels/x", 1_700_000_000_000);
        (key, ch, t)
    }

    #[test]
    fn round_trips_and_verifies() {
        let (key, ch, t) = token();
        let text = t.to_header();
        assert_eq!(text.len(), 13 + 1 + 128);
        let back = ReadToken::parse(text.as_bytes()).unwrap();
        assert_eq!(back, t);
        back.verify(&key.public(), &ch, "GET", "/tally/v1/channels/x")
            .unwrap();
        assert_eq!(
            back.verify(&key.public(), &ch, "GET", "/tally/v1/channels/y"),
            Err(ReadAuthError::BadSignature)
        );
    }

    #[test]
    fn parsing_is_strict() {
        let (_, _, t) = token();
        let good = t.to_header();
        let sig = t.signature.to_hex();
        for bad in [
            good.to_uppercase(),
            format!("0{good}"),
            format!("+{good}"),
            format!(" {good}"),
            format!("{good} "),
            format!("{good}0"),
            good[..good.len() - 1].to_string(),
            format!("{}.{}", t.issued_at_ms, &sig[..126]),
            format!(".{sig}"),
            format!("{}{sig}", t.issued_at_ms),
            format!("{}.{}", u128::from(u64::MAX) + 1, sig),
            format!("{}..{sig}", t.issued_at_ms),
        ] {
            assert!(ReadToken::parse(bad.as_bytes()).is_err(), "{bad:?} parsed");
        }
        assert!(ReadToken::parse(format!("0.{sig}").as_bytes()).is_ok());
        assert!(ReadToken::parse(format!("{}.{sig}", u64::MAX).as_bytes()).is_ok());
    }

    #[test]
    fn window_is_inclusive_both_ways() {
        let (_, _, t) = token();
        let at = t.issued_at_ms;
        assert!(t
            .check_time(at + READ_AUTH_WINDOW_MS, READ_AUTH_WINDOW_MS)
            .is_ok());
        assert!(t
            .check_time(at - READ_AUTH_WINDOW_MS, READ_AUTH_WINDOW_MS)
            .is_ok());
        assert!(t
            .check_time(at + READ_AUTH_WINDOW_MS + 1, READ_AUTH_WINDOW_MS)
            .is_err());
        assert!(t
            .check_time(at - READ_AUTH_WINDOW_MS - 1, READ_AUTH_WINDOW_MS)
            .is_err());
    }
}
