//! Token amounts as decimal strings on the wire: JSON numbers lose precision past 2^53 in
//! JavaScript, and a deposit can be up to 2^128 − 1.

use serde::{de::Error, Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

/// Accepts only plain decimal digits (no sign, no spaces, no exponent), as spec/HTTP.md §12
/// requires; anything else is a clear error rather than a guess.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() || s.len() > 39 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(D::Error::custom(
            "amount must be a decimal string of digits",
        ));
    }
    s.parse::<u128>()
        .map_err(|_| D::Error::custom("amount does not fit in 128 bits"))
}
