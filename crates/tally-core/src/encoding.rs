//! The canonical byte encoding of signed messages (spec/PROTOCOL.md §2).
//!
//! Every signed or hashed message is `DOMAIN || bincode(body)`, where bincode 1.3.3 runs with
//! fixed-width little-endian integers and rejects trailing bytes. Decoding re-encodes the value
//! and compares, so exactly one byte string stands for each message.

use bincode::Options;
use serde::de::DeserializeOwned;
use serde::{Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// Upper bound on the body a decoder will look at. Every tally message body is fixed-size and
/// far smaller; the limit keeps a hostile length prefix from allocating.
pub const MAX_BODY: u64 = 4096;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(MAX_BODY)
}

/// A message with one canonical encoding under a domain-separation prefix
/// (spec/PROTOCOL.md §2.1–§2.3).
pub trait Canonical: Serialize + DeserializeOwned {
    /// The domain-separation prefix that starts the encoding (spec/PROTOCOL.md §2.1).
    const DOMAIN: &'static [u8];
    /// A short name for errors.
    const NAME: &'static str;

    /// The version byte of this value; checked by [`Canonical::from_bytes`].
    fn version(&self) -> u8;

    /// The canonical bytes: `DOMAIN || bincode(self)`.
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::DOMAIN.len() + 256);
        out.extend_from_slice(Self::DOMAIN);
        // Serialising a fixed-size struct of integers and byte arrays into a Vec cannot fail:
        // no map, no unsized sequence, no writer error, and every body is below MAX_BODY.
        if let Err(e) = options().serialize_into(&mut out, self) {
            unreachable!("encoding a {} cannot fail: {e}", Self::NAME);
        }
        out
    }

    /// Decodes canonical bytes, rejecting a wrong prefix, a wrong version, trailing bytes and
    /// any encoding that does not re-encode identically.
    fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let body = bytes.strip_prefix(Self::DOMAIN).ok_or(Error::WrongDomain {
            expected: Self::NAME,
        })?;
        let value: Self = options().deserialize(body).map_err(|e| Error::Malformed {
            what: Self::NAME,
            reason: e.to_string(),
        })?;
        if value.version() != crate::VERSION {
            return Err(Error::UnsupportedVersion {
                found: value.version(),
                expected: crate::VERSION,
            });
        }
        if value.to_bytes() != bytes {
            return Err(Error::NonCanonical(Self::NAME));
        }
        Ok(value)
    }
}

/// Serde support for fixed-size byte arrays: a bare tuple of N bytes in binary formats
/// (bincode, so no length prefix), lowercase hex in human-readable ones (JSON).
pub mod fixed_bytes {
    use super::*;
    use serde::de::{Error as _, SeqAccess, Visitor};
    use std::fmt;

    /// Serialises `bytes` as described in the module docs.
    pub fn serialize<S: Serializer, const N: usize>(
        bytes: &[u8; N],
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(bytes))
        } else {
            use serde::ser::SerializeTuple;
            let mut t = s.serialize_tuple(N)?;
            for b in bytes {
                t.serialize_element(b)?;
            }
            t.end()
        }
    }

    /// Deserialises what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> std::result::Result<[u8; N], D::Error> {
        struct V<const N: usize>;
        impl<'de, const N: usize> Visitor<'de> for V<N> {
            type Value = [u8; N];
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "{N} bytes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<[u8; N], E> {
                let mut out = [0u8; N];
                decode_lower_hex(v, &mut out).map_err(E::custom)?;
                Ok(out)
            }
            fn visit_seq<A: SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<[u8; N], A::Error> {
                let mut out = [0u8; N];
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| A::Error::invalid_length(i, &self))?;
                }
                Ok(out)
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V::<N>)
        } else {
            d.deserialize_tuple(N, V::<N>)
        }
    }
}

/// Parses exactly `N` bytes of lowercase hex (surrounding whitespace ignored, for files and
/// CLI arguments). Every hex string tally writes is lowercase, so anything else is refused:
/// one value has one spelling (spec/PROTOCOL.md §2).
pub fn parse_hex<const N: usize>(what: &'static str, text: &str) -> Result<[u8; N]> {
    let mut out = [0u8; N];
    decode_lower_hex(text.trim(), &mut out).map_err(|reason| Error::BadText { what, reason })?;
    Ok(out)
}

/// Decodes lowercase hex of exactly `out.len()` bytes; upper-case digits are refused.
pub fn decode_lower_hex(text: &str, out: &mut [u8]) -> std::result::Result<(), String> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("hex must be lowercase".into());
    }
    hex::decode_to_slice(text, out).map_err(|e| e.to_string())
}
