//! Checking a receipt against what the client itself knows (DESIGN.md §3 "Response n"):
//! its own authorization, the response it received and the terms. Any mismatch is a
//! [`Misbehavior`].

use http::HeaderMap;
use tally_core::request::response_hash;
use tally_core::{Authorization, Outcome, PublicKey, Receipt, Signature};
use tally_http::Price;

use crate::error::Misbehavior;

/// What the terms say this response costs: `(units, amount)`; `None` for units means the
/// client cannot know (never happens for tally's price kinds).
pub fn expected_charge(
    charge_server_errors: bool,
    price: &Price,
    status: u16,
    headers: &HeaderMap,
    max_amount: u128,
) -> (u64, i128) {
    if status >= 500 && !charge_server_errors {
        return (0, 0);
    }
    let units = match price {
        Price::Free => 0,
        Price::Fixed { .. } => 1,
        Price::Metered { units_header, .. } => headers
            .get(units_header.as_str())
            .and_then(|v| v.to_str().ok())
            .and_then(tally_http::terms::parse_units)
            .unwrap_or(0),
    };
    let amount = price.charge_for(units, max_amount);
    (units, i128::try_from(amount).unwrap_or(i128::MAX))
}

/// Verifies a receipt for a request this client signed. `expected` is `(units, amount)` the
/// terms give, or `None` to check only the protocol bounds (e.g. credits).
pub fn check_receipt(
    receipt: &Receipt,
    provider: &PublicKey,
    auth: &Authorization,
    signature: &Signature,
    status: u16,
    body: &[u8],
    expected: Option<(u64, i128)>,
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
    if o.response_hash != response_hash(status, body) {
        return Err(Misbehavior::WrongResponseHash);
    }
    Ok(o)
}
