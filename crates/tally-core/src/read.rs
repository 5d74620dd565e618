//! The signed bytes of a read token (spec/PROTOCOL.md §5.4): the channel's session key
//! proves, for one read request at one time, that the reader is the channel's client. The
//! HTTP header that carries it is tally-http's (`read_auth`, spec/HTTP.md §5.1).

use crate::hash::ChannelId;
use crate::keys::{PublicKey, SecretKey};
use crate::signature::Signature;

/// Domain prefix of a read token's signed bytes. Not a prefix of, nor prefixed by, any other
/// prefix of spec/PROTOCOL.md §2.1, and unlike every signed checkpoint note (which starts
/// with `tally/`), so a read token can never pass for an authorization or a note.
pub const READ_DOMAIN: &[u8] = b"tally\0read\0";

/// `"tally\0read\0" || channel_id || u64(len(method)) || method || u64(len(target)) || target
/// || u64(issued_at_ms)`, integers little-endian (spec/PROTOCOL.md §5.4). `target` is the
/// request's path and query exactly as sent (`/tally/v1/channels/…/records?from=0`).
pub fn read_token_bytes(
    channel: &ChannelId,
    method: &str,
    target: &str,
    issued_at_ms: u64,
) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(READ_DOMAIN.len() + 32 + 8 + method.len() + 8 + target.len() + 8);
    out.extend_from_slice(READ_DOMAIN);
    out.extend_from_slice(&channel.0);
    out.extend_from_slice(&(method.len() as u64).to_le_bytes());
    out.extend_from_slice(method.as_bytes());
    out.extend_from_slice(&(target.len() as u64).to_le_bytes());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(&issued_at_ms.to_le_bytes());
    out
}

/// The session key's signature over [`read_token_bytes`].
pub fn sign_read(
    key: &SecretKey,
    channel: &ChannelId,
    method: &str,
    target: &str,
    issued_at_ms: u64,
) -> Signature {
    key.sign(&read_token_bytes(channel, method, target, issued_at_ms))
}

/// Strict verification (spec/PROTOCOL.md §4.1) of a read token's signature. The time window
/// is the verifier's policy (spec/HTTP.md §5.1), not checked here: tally-core reads no clock.
pub fn verify_read(
    key: &PublicKey,
    channel: &ChannelId,
    method: &str,
    target: &str,
    issued_at_ms: u64,
    signature: &Signature,
) -> crate::error::Result<()> {
    key.verify(
        &read_token_bytes(channel, method, target, issued_at_ms),
        signature,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_bound() {
        let key = SecretKey::from_seed(&[9; 32]);
        let ch = ChannelId([1; 32]);
        let sig = sign_read(&key, &ch, "GET", "/a?b=1", 5);
        let pk = key.public();
        assert!(verify_read(&pk, &ch, "GET", "/a?b=1", 5, &sig).is_ok());
        assert!(verify_read(&pk, &ChannelId([2; 32]), "GET", "/a?b=1", 5, &sig).is_err());
        assert!(verify_read(&pk, &ch, "POST", "/a?b=1", 5, &sig).is_err());
        assert!(verify_read(&pk, &ch, "GET", "/a?b=2", 5, &sig).is_err());
        assert!(verify_read(&pk, &ch, "GET", "/a?b=1", 6, &sig).is_err());
        let other = SecretKey::from_seed(&[8; 32]).public();
        assert!(verify_read(&other, &ch, "GET", "/a?b=1", 5, &sig).is_err());
    }

    #[test]
    fn layout_is_the_spec_s() {
        let b = read_token_bytes(&ChannelId([0xab; 32]), "GET", "/x", 0x0102);
        assert_eq!(&b[..11], b"tally\0read\0");
        assert_eq!(&b[11..43], &[0xab; 32]);
        assert_eq!(&b[43..51], &3u64.to_le_bytes());
        assert_eq!(&b[51..54], b"GET");
        assert_eq!(&b[54..62], &2u64.to_le_bytes());
        assert_eq!(&b[62..64], b"/x");
        assert_eq!(&b[64..], &0x0102u64.to_le_bytes());
    }
}
