//! Hashes that bind an HTTP exchange into signed messages (spec/PROTOCOL.md §3.3).

use crate::hash::{blake3_of, Hash};

/// Domain prefix of a request hash.
pub const REQUEST_DOMAIN: &[u8] = b"tally\0request\0";
/// Domain prefix of a response hash.
pub const RESPONSE_DOMAIN: &[u8] = b"tally\0response\0";

/// The hash of a request as the client will send it: method, path, query and body
/// (spec/PROTOCOL.md §3.3). Each string is length-prefixed (u64 little-endian) so no two
/// different requests share an input.
///
/// ```
/// use tally_core::request::request_hash;
/// let a = request_hash("GET", "/v1/items", "page=2", b"");
/// let b = request_hash("GET", "/v1/items", "page=3", b"");
/// assert_ne!(a, b);
/// ```
pub fn request_hash(method: &str, path: &str, query: &str, body: &[u8]) -> Hash {
    request_hash_with_body_hash(method, path, query, &body_hash(body))
}

/// As [`request_hash`], for callers that hashed a streamed body themselves with [`body_hash`].
pub fn request_hash_with_body_hash(method: &str, path: &str, query: &str, body: &Hash) -> Hash {
    let m = (method.len() as u64).to_le_bytes();
    let p = (path.len() as u64).to_le_bytes();
    let q = (query.len() as u64).to_le_bytes();
    blake3_of(&[
        REQUEST_DOMAIN,
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

/// The hash of a response: HTTP status and body (spec/PROTOCOL.md §3.3).
pub fn response_hash(status: u16, body: &[u8]) -> Hash {
    response_hash_with_body_hash(status, &body_hash(body))
}

/// As [`response_hash`], for a body already hashed with [`body_hash`] (streamed, or stated in
/// a dispute).
pub fn response_hash_with_body_hash(status: u16, body: &Hash) -> Hash {
    blake3_of(&[RESPONSE_DOMAIN, &status.to_le_bytes(), &body.0])
}
