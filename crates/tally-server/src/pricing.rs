//! What one call costs (spec/HTTP.md §4.1 `routes`): a fixed price, or units reported by the
//! upstream times a unit price, capped by the route maximum and the client's authorized
//! maximum (P5). Upstream 5xx responses are free unless the terms say otherwise.

use http::HeaderMap;
use tally_http::Price;

/// The metered result of one response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Charge {
    /// Units recorded in the outcome.
    pub units: u64,
    /// The amount charged (never above `max_amount`).
    pub amount: u128,
}

/// Meters a response on a priced route.
///
/// A metered route whose upstream omits or garbles the units header is charged zero units:
/// the gateway never invents usage.
pub fn charge(
    price: &Price,
    status: u16,
    headers: &HeaderMap,
    max_amount: u128,
    charge_server_errors: bool,
) -> Charge {
    if status >= 500 && !charge_server_errors {
        return Charge {
            units: 0,
            amount: 0,
        };
    }
    let units = match price {
        Price::Free => 0,
        Price::Fixed { .. } => 1,
        Price::Metered { units_header, .. } => reported_units(headers, units_header).unwrap_or(0),
    };
    Charge {
        units,
        amount: price.charge_for(units, max_amount),
    }
}

/// The units an upstream reported in `header` ([`tally_http::terms::parse_units`]).
pub fn reported_units(headers: &HeaderMap, header: &str) -> Option<u64> {
    tally_http::terms::parse_units(headers.get(header)?.to_str().ok()?)
}
