//! Price discovery: fetch the terms document and hash the exact bytes served
//! (spec/HTTP.md §4), so the first paid request needs no 402 round trip (P1).

use tally_core::Hash;
use tally_http::headers::WELL_KNOWN_PATH;
use tally_http::terms::{terms_hash, MAX_TERMS_BYTES};
use tally_http::Terms;

use crate::error::ClientError;

/// The provider's terms and their hash.
#[derive(Clone, Debug)]
pub struct Discovered {
    /// The parsed terms.
    pub terms: Terms,
    /// `terms_hash` of the served bytes.
    pub hash: Hash,
}

/// Fetches `/.well-known/tally` from `base`.
pub async fn discover(http: &reqwest::Client, base: &str) -> Result<Discovered, ClientError> {
    let resp = http.get(format!("{base}{WELL_KNOWN_PATH}")).send().await?;
    if !resp.status().is_success() {
        return Err(ClientError::Protocol(format!(
            "terms document answered {}",
            resp.status()
        )));
    }
    let bytes = resp.bytes().await?;
    if bytes.len() > MAX_TERMS_BYTES {
        return Err(ClientError::Protocol("terms document too large".into()));
    }
    let terms = Terms::parse(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))?;
    Ok(Discovered {
        terms,
        hash: terms_hash(&bytes),
    })
}
