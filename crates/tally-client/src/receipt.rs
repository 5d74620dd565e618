//! Checking a receipt against what the client itself knows (DESIGN.md §3 "Response n"):
//! its own authorization, the response it received and the terms. Any mismatch is a
//! [`Misbehavior`].

use http::HeaderMap;
use tally_core::request::response_hash_with_body_hash;
use tally_core::{Authorization, Hash, Outcome, PublicKey, Receipt, Signature, Units};
use tally_http::usage::UsageReader;
use tally_http::Price;

use crate::error::Misbehavior;

/// What the terms say this response costs, `(units, amount)`, for the units the client saw
/// the upstream report ([`tally_http::usage::UsageReader`] over the same response): the
/// gateway's own formula ([`Price::charge_answer`]).
pub fn expected_charge(
    charge_server_errors: bool,
    price: &Price,
    status: u16,
    reported: Units,
    max_amount: u128,
) -> (Units, i128) {
    let (units, amount) = price.charge_answer(status, reported, max_amount, charge_server_errors);
    (units, i128::try_from(amount).unwrap_or(i128::MAX))
}

/// The units a buffered response reports for `price`'s meters: its headers and body.
pub fn reported_units(price: &Price, headers: &HeaderMap, body: &[u8]) -> Units {
    let mut reader = UsageReader::for_price(price, body.len() as u64);
    reader.headers(headers);
    reader.chunk(body);
    reader.finish()
}

/// Verifies a receipt for a request this client signed. `expected` is `(units, amount)` the
/// terms give, or `None` to check only the protocol bounds (e.g. credits).
pub fn check_receipt(
    receipt: &Receipt,
    provider: &PublicKey,
    auth: &Authorization,
    signature: &Signature,
    status: u16,
    body_hash: &Hash,
    expected: Option<(Units, i128)>,
) -> Result<Outcome, Misbehavior> {
    receipt
        .verify(provider)
        .map_err(|_| Misbehavior::BadReceiptSignature)?;
    let o = receipt.outcome;
    if o.channel_id != auth.channel_id {
        return Err(Misbehavior::WrongAuthorization("channel".into()));
    }
    if o.lane != auth.lane || o.seq != auth.seq {
        return Err(Misbehavior::WrongAuthorization(format!(
            "lane/seq {}/{} for request {}/{}",
            o.lane, o.seq, auth.lane, auth.seq
        )));
    }
    if o.authorization_hash != auth.signed_hash(signature) {
        return Err(Misbehavior::WrongAuthorization("authorization hash".into()));
    }
    if o.amount > 0 && o.amount.unsigned_abs() > auth.max_amount {
        return Err(Misbehavior::OverMaximum {
            amount: o.amount,
            max: auth.max_amount,
        });
    }
    if let Some((units, amount)) = expected {
        if o.amount != amount {
            return Err(Misbehavior::WrongAmount {
                expected: amount,
                got: o.amount,
            });
        }
        if o.units != units {
            return Err(Misbehavior::WrongUnits {
                expected: units,
                got: o.units,
            });
        }
    }
    // The index and cumulative are checked when the record takes its place in the mirror
    // (spec/PROTOCOL.md §5.5): receipts of concurrent requests may arrive in any order.
    if o.response_hash != response_hash_with_body_hash(status, body_hash) {
        return Err(Misbehavior::WrongResponseHash);
    }
    Ok(o)
}
