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
    match price {
        Price::Free => Charge {
            units: 0,
            amount: 0,
        },
        Price::Fixed { amount } => Charge {
            units: 1,
            amount: amount.0.min(max_amount),
        },
        Price::Metered {
            units_header,
            unit_price,
            max_amount: route_max,
        } => {
            let units = reported_units(headers, units_header).unwrap_or(0);
            let amount = u128::from(units)
                .saturating_mul(unit_price.0)
                .min(route_max.0)
                .min(max_amount);
            Charge { units, amount }
        }
    }
}

/// The units an upstream reported in `header`, as a plain decimal.
pub fn reported_units(headers: &HeaderMap, header: &str) -> Option<u64> {
    let text = headers.get(header)?.to_str().ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}
