//! Hashes that bind an HTTP exchange into signed messages (spec/PROTOCOL.md §3.3).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::encoding::fixed_bytes;
use crate::hash::{blake3_of, Hash};

/// Domain prefix of a request hash.
pub const REQUEST_DOMAIN: &[u8] = b"tally\0request\0";
/// Domain prefix of a response hash.
pub const RESPONSE_DOMAIN: &[u8] = b"tally\0response\0";

/// The channel's request salt: 32 random bytes the provider draws when the session key is
/// bound (spec/HTTP.md §5.2) and mixes into every request hash of the channel
/// (spec/PROTOCOL.md §3.3), so a request hash seen in a statement or a record cannot be
/// matched against a dictionary of likely requests by anyone who lacks the salt.
#[derive(Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSalt(#[serde(with = "fixed_bytes")] pub [u8; 32]);

impl RequestSalt {
    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 lowercase hex digits.
    pub fn from_hex(text: &str) -> crate::error::Result<Self> {
        crate::encoding::parse_hex("request salt", text).map(RequestSalt)
    }
}

impl fmt::Debug for RequestSalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestSalt({})", self.to_hex())
    }
}

/// The hash of a request as the client will send it: the channel's salt, then method, path,
/// query and body (spec/PROTOCOL.md §3.3). Each string is length-prefixed (u64
/// little-endian) so no two different requests share an input; the salt is fixed-length
/// and comes first.
///
/// ```
/// use tally_core::request::{request_hash, RequestSalt};
/// let salt = RequestSalt([7; 32]);
/// let a = request_hash(&salt, "GET", "/v1/items", "page=2", b"");
/// let b = request_hash(&salt, "GET", "/v1/items", "page=3", b"");
/// assert_ne!(a, b);
/// let c = request_hash(&RequestSalt([8; 32]), "GET", "/v1/items", "page=2", b"");
/// assert_ne!(a, c);
/// ```
pub fn request_hash(
    salt: &RequestSalt,
    method: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> Hash {
    request_hash_with_body_hash(salt, method, path, query, &body_hash(body))
}

/// As [`request_hash`], for callers that hashed a streamed body themselves with [`body_hash`].
pub fn request_hash_with_body_hash(
    salt: &RequestSalt,
    method: &str,
    path: &str,
    query: &str,
    body: &Hash,
) -> Hash {
    let m = (method.len() as u64).to_le_bytes();
    let p = (path.len() as u64).to_le_bytes();
    let q = (query.len() as u64).to_le_bytes();
    blake3_of(&[
        REQUEST_DOMAIN,
        &salt.0,
        &m,
        method.as_bytes(),
        &p,
        path.as_bytes(),
        &q,
        query.as_bytes(),
        &body.0,
    ])
}

/// The plain BLAKE3 hash of a body.
pub fn body_hash(body: &[u8]) -> Hash {
    blake3_of(&[body])
}

/// [`body_hash`] of a body that arrives in pieces (a streamed response, spec/HTTP.md §5.7):
/// fed every piece in order, it ends with the hash of their concatenation.
#[derive(Default)]
pub struct BodyHasher(blake3::Hasher);

impl BodyHasher {
    /// The next bytes of the body.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The body's hash.
    pub fn finish(&self) -> Hash {
        Hash(*self.0.finalize().as_bytes())
    }
}

/// The hash of a response: HTTP status and body (spec/PROTOCOL.md §3.3).
pub fn response_hash(status: u16, body: &[u8]) -> Hash {
    response_hash_with_body_hash(status, &body_hash(body))
}

/// As [`response_hash`], for a body already hashed with [`body_hash`] (streamed, or stated in
/// a dispute).
pub fn response_hash_with_body_hash(status: u16, body: &Hash) -> Hash {
    blake3_of(&[RESPONSE_DOMAIN, &status.to_le_bytes(), &body.0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_hashed_in_pieces_is_the_body_hash() {
        let body = b"data: one\n\ndata: two\n\n";
        for cut in 0..body.len() {
            let mut h = BodyHasher::default();
            h.update(&body[..cut]);
            h.update(&body[cut..]);
            assert_eq!(h.finish(), body_hash(body));
        }
    }
}
