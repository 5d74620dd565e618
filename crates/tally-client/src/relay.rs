//! Asking a provider's relay to submit a gasless deposit (spec/HTTP.md §12): the client signs
//! (tally-chain's `GaslessOpen` / `GaslessTopUp`), the provider pays the gas. The answer is
//! only a transaction hash; a caller that cares reads the channel from the chain itself (as
//! `tally channel open --gasless` does) rather than trusting it.

use tally_chain::{GaslessOpen, GaslessTopUp};
use tally_http::api::Relayed;
use tally_http::headers::API_PREFIX;

use crate::client::{json_answer, JsonBody};
use crate::error::ClientError;

/// `POST {base}/tally/v1/relay/open`: the provider submits `open` and answers once it is
/// mined. A refusal is [`ClientError::Refused`] with `relay_refused`, `rate_limited`,
/// `chain_unavailable` or `not_found` (the provider runs no relay).
pub async fn relay_open(
    http: &reqwest::Client,
    base: &str,
    open: &GaslessOpen,
) -> Result<Relayed, ClientError> {
    let url = format!("{base}{API_PREFIX}/relay/open");
    json_answer(http.post(url).json_body(open)?.send().await?).await
}

/// `POST {base}/tally/v1/relay/topup`, as [`relay_open`].
pub async fn relay_top_up(
    http: &reqwest::Client,
    base: &str,
    top_up: &GaslessTopUp,
) -> Result<Relayed, ClientError> {
    let url = format!("{base}{API_PREFIX}/relay/topup");
    json_answer(http.post(url).json_body(top_up)?.send().await?).await
}
