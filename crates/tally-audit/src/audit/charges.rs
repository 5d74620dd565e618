//! Each charge against the terms the client signed (spec/HTTP.md §4): the terms hash every
//! authorization carries, the lane limit, and the amount, recomputed with
//! [`Price::charge_for`] — the one charge formula the gateway charges by and the client
//! checks receipts with.

use tally_core::{Hash, Record, Units, METERS};
use tally_http::Terms;

use super::report::{at, whole, Discrepancy, Findings};
use crate::statement::StatementHeader;

/// The terms document of the statement and its hash.
pub(crate) struct TermsInForce {
    pub terms: Terms,
    pub hash: Hash,
}

/// Parses the header's terms, if any; an unreadable document or another provider key is a
/// discrepancy (prices then go unchecked).
pub(crate) fn read_terms(h: &StatementHeader, found: &mut Findings) -> Option<TermsInForce> {
    let text = h.terms.as_ref()?;
    match Terms::parse(text.as_bytes()) {
        Ok(terms) => {
            if terms.provider_key != h.provider_key {
                found.push(whole(
                    "terms",
                    "the terms name another provider key than the statement".into(),
                ));
            }
            Some(TermsInForce {
                terms,
                hash: tally_http::terms::terms_hash(text.as_bytes()),
            })
        }
        Err(e) => {
            found.push(whole("terms", format!("unreadable terms document: {e}")));
            None
        }
    }
}

/// Whether `(units, amount)` under `max_amount` is what some route of the terms charges
/// (or an uncharged call: no units, no amount).
fn priced_by_terms(terms: &Terms, units: &Units, amount: u128, max_amount: u128) -> bool {
    if *units == [0; METERS] && amount == 0 {
        return true;
    }
    terms
        .routes
        .iter()
        .any(|r| r.price.explains(units, amount, max_amount))
}

/// Checks record `index` against the terms (when known) and the credit rule
/// (spec/PROTOCOL.md §5.3: credits are signed with `max_amount = 0`).
pub(crate) fn check(
    terms: Option<&TermsInForce>,
    index: u64,
    record: &Record,
    out: &mut Vec<Discrepancy>,
) {
    let a = &record.authorization;
    let o = &record.outcome;
    if let Some(t) = terms {
        if a.terms_hash != t.hash {
            out.push(at(
                index,
                "terms",
                format!(
                    "signed terms hash {} but the statement's terms hash to {}",
                    a.terms_hash.to_hex(),
                    t.hash.to_hex()
                ),
            ));
        } else if o.amount >= 0
            && a.max_amount > 0
            && !priced_by_terms(&t.terms, &o.units, o.amount.unsigned_abs(), a.max_amount)
        {
            out.push(at(
                index,
                "price",
                format!(
                    "charged {} for units {:?} (authorized at most {}): no route of the terms prices that",
                    o.amount, o.units, a.max_amount
                ),
            ));
        }
        if a.lane >= t.terms.max_lanes {
            out.push(at(
                index,
                "sequence",
                format!(
                    "lane {} is not below the terms' max_lanes {}",
                    a.lane, t.terms.max_lanes
                ),
            ));
        }
    }
    if o.amount < 0 && a.max_amount != 0 {
        out.push(at(
            index,
            "record",
            format!(
                "credit of {} under an authorization of max {} (credits are signed with max 0)",
                o.amount, a.max_amount
            ),
        ));
    }
}
