//! Token amounts in JSON: decimal strings, never numbers (spec/HTTP.md §1), because JSON
//! numbers are floats to many parsers and a u128 does not survive that.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An unsigned amount in token base units, written as a canonical decimal string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub u128);

impl Amount {
    /// Parses a canonical decimal: digits only, no sign, no leading zeros except `0`.
    pub fn parse(text: &str) -> Option<Amount> {
        if text.is_empty() || text.len() > 39 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if text.len() > 1 && text.starts_with('0') {
            return None;
        }
        text.parse().ok().map(Amount)
    }

    /// Whether this is zero (optional amounts are omitted from documents when zero).
    pub fn is_zero(&self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Amount::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!("{text:?} is not a canonical decimal amount"))
        })
    }
}

/// A signed amount (a record's net amount: negative for a credit), as a decimal string with
/// an optional leading `-`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SignedAmount(pub i128);

impl Serialize for SignedAmount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for SignedAmount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let (neg, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text.as_str()),
        };
        let bad = || serde::de::Error::custom(format!("{text:?} is not a canonical decimal"));
        let magnitude = Amount::parse(digits).ok_or_else(bad)?;
        if neg && magnitude.0 == 0 {
            return Err(bad());
        }
        let v = i128::try_from(magnitude.0).map_err(|_| bad())?;
        Ok(SignedAmount(if neg { -v } else { v }))
    }
}
