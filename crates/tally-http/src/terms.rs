//! The provider's terms: the discovery document served at `/.well-known/tally` and the hash
//! every authorization signs (spec/HTTP.md §4).
//!
//! The hash is over the exact bytes served, under a domain prefix, so it never depends on how
//! a JSON library orders keys or prints numbers.

use serde::{Deserialize, Serialize};
use tally_core::hash::{blake3_of, Hash};
use tally_core::PublicKey;

use tally_core::{Units, METERS, ONE_CALL};

use crate::amount::Amount;
use crate::error::WireError;
use crate::meter::MeteredPrice;

/// The `format` of a terms document.
pub const TERMS_FORMAT: &str = "tally-terms/v2";
/// Domain prefix of the terms hash (spec/HTTP.md §4.2).
pub const TERMS_DOMAIN: &[u8] = b"tally\0terms\0";
/// The largest terms document a client reads.
pub const MAX_TERMS_BYTES: usize = 64 * 1024;

/// `terms_hash = BLAKE3("tally\0terms\0" || served bytes)` (spec/HTTP.md §4.2).
pub fn terms_hash(served: &[u8]) -> Hash {
    blake3_of(&[TERMS_DOMAIN, served])
}

/// Where and in what the channel settles.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainTerms {
    /// EIP-155 chain id.
    pub chain_id: u64,
    /// The Tally settlement contract, `0x` hex.
    pub contract: String,
    /// The ERC-20 token deposits are in, `0x` hex (x402 `asset`).
    pub asset: String,
    /// The provider's payee address, `0x` hex (x402 `payTo`).
    pub pay_to: String,
}

/// When the gateway asks for a checkpoint (spec/HTTP.md §6): whichever comes first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointPolicy {
    /// After this many records since the last checkpoint (0 = never for this reason).
    pub every_records: u64,
    /// After this many seconds since the last checkpoint (0 = never for this reason).
    pub every_seconds: u64,
    /// After this much net amount since the last checkpoint (0 = never for this reason).
    pub every_amount: Amount,
}

/// How a route is priced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Price {
    /// Not metered: no payment, no record.
    Free,
    /// A fixed amount per call; the authorization's `max_amount` must be at least this.
    Fixed {
        /// The price of one call.
        amount: Amount,
    },
    /// Units reported by the upstream times unit prices, one per meter (spec/HTTP.md §4.1),
    /// capped at the route's and the authorization's `max_amount`.
    Metered(MeteredPrice),
}

impl Price {
    /// The most one call on this route can cost: what a client authorizes.
    pub fn max_per_call(&self) -> Option<u128> {
        match self {
            Price::Free => None,
            Price::Fixed { amount } => Some(amount.0),
            Price::Metered(m) => Some(m.max_amount.0),
        }
    }

    /// What one served call costs under this price when the upstream reported `units`
    /// (ignored by fixed prices), capped by the client's `max_amount` (P5): the one formula
    /// the gateway charges by and the client and the auditor check against.
    pub fn charge_for(&self, units: &Units, max_amount: u128) -> u128 {
        match self {
            Price::Free => 0,
            Price::Fixed { amount } => amount.0.min(max_amount),
            Price::Metered(m) => m.charge(units, max_amount),
        }
    }

    /// What a served call is charged, as `(units, amount)`: the units the price records for
    /// what the upstream `reported` (one count per meter, [`crate::usage::UsageReader`]) and
    /// their amount under the client's `max_amount` (P5). A 5xx answer (and a stream the
    /// upstream broke, recorded as 502) records nothing unless `charge_server_errors`
    /// (spec/HTTP.md §4.1). The gateway charges by this and the client checks by it.
    pub fn charge_answer(
        &self,
        status: u16,
        reported: Units,
        max_amount: u128,
        charge_server_errors: bool,
    ) -> (Units, u128) {
        if status >= 500 && !charge_server_errors {
            return ([0; METERS], 0);
        }
        let units = self.units_for(reported);
        (units, self.charge_for(&units, max_amount))
    }

    /// The units a served call under this price records when the upstream reported
    /// `reported` (one count per meter): one call for a fixed price, nothing for a free one.
    pub fn units_for(&self, reported: Units) -> Units {
        match self {
            Price::Free => [0; METERS],
            Price::Fixed { .. } => ONE_CALL,
            Price::Metered(_) => reported,
        }
    }

    /// Whether `(units, amount)` under an authorization of `max_amount` is what this price
    /// charges for some served call.
    pub fn explains(&self, units: &Units, amount: u128, max_amount: u128) -> bool {
        let shape = match self {
            Price::Free => false,
            Price::Fixed { .. } => *units == ONE_CALL,
            Price::Metered(m) => m.fits(units),
        };
        shape && amount == self.charge_for(units, max_amount)
    }

    /// The smallest `max_amount` an authorization for this route may carry: the fixed price,
    /// or one unit and the minimum charge of a metered route, and never zero — a zero maximum
    /// is valid only on the dispute endpoint (spec/HTTP.md §9), since it could not pay for
    /// anything the upstream does. `None` for free routes.
    pub fn min_authorization(&self) -> Option<u128> {
        match self {
            Price::Free => None,
            Price::Fixed { amount } => Some(amount.0.max(1)),
            Price::Metered(m) => Some(m.min_authorization()),
        }
    }
}

/// What the gateway does with a request no route prices (spec/HTTP.md §4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// Forward it unmetered (the default).
    #[default]
    Free,
    /// Refuse it with `not_found`: only priced routes reach the upstream.
    Deny,
}

/// How paths of a route are matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// The path equals `path`.
    Exact,
    /// The path equals `path` or continues it after a `/`.
    Prefix,
}

/// One entry of the price list. The first entry that matches a request prices it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutePrice {
    /// Upper-case HTTP method, or `*` for any.
    pub method: String,
    /// The path, as sent (percent-encoding kept).
    pub path: String,
    /// How `path` matches.
    #[serde(rename = "match")]
    pub path_match: PathMatch,
    /// The price.
    pub price: Price,
    /// The media type of the route's responses, if the provider declares it: a 402's
    /// `resource.mimeType` (spec/HTTP.md §3.1). Omitted from the document when unset, so
    /// terms without it keep their bytes and hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

impl RoutePrice {
    /// Whether this entry applies to `method` and `path`.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        if self.method != "*" && self.method != method {
            return false;
        }
        match self.path_match {
            PathMatch::Exact => path == self.path,
            PathMatch::Prefix => match path.strip_prefix(self.path.as_str()) {
                Some(rest) => rest.is_empty() || rest.starts_with('/') || self.path.ends_with('/'),
                None => false,
            },
        }
    }
}

/// Refunds the gateway grants on a dispute without a human (spec/HTTP.md §7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundPolicy {
    /// Refund a charged record whose response had a 5xx status.
    pub server_errors: bool,
    /// Refund the part of a charge above the route's price list maximum.
    pub over_max: bool,
}

/// The terms document (spec/HTTP.md §4.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Terms {
    /// Always [`TERMS_FORMAT`].
    pub format: String,
    /// The provider's ed25519 key: it signs receipts and cosigns checkpoints.
    pub provider_key: PublicKey,
    /// Where the channel settles.
    pub chain: ChainTerms,
    /// The most the gateway serves beyond the last client-signed checkpoint (P5).
    pub credit_limit: Amount,
    /// How many lanes a channel may use, so how many of its requests may be in flight at
    /// once (spec/PROTOCOL.md §5.4): `1 ..= MAX_LANES`.
    pub max_lanes: u32,
    /// When the gateway asks for checkpoints.
    pub checkpoint: CheckpointPolicy,
    /// Whether upstream 5xx responses are charged.
    pub charge_server_errors: bool,
    /// Automatic refunds on dispute.
    pub refunds: RefundPolicy,
    /// The largest paid request body the gateway reads.
    pub max_request_bytes: u64,
    /// The largest paid response body the gateway returns.
    pub max_response_bytes: u64,
    /// The price list, first match wins.
    pub routes: Vec<RoutePrice>,
    /// What happens to requests no route matches.
    #[serde(default)]
    pub unmatched: Unmatched,
}

impl Terms {
    /// The price entry of a request, if any route matches. `path` must be canonical
    /// ([`crate::path::canonical_path`]). A `HEAD` is priced like the `GET` of the same path
    /// (RFC 9110 §9.3.2: the upstream does the same work), unless a route names `HEAD`.
    pub fn route_for(&self, method: &str, path: &str) -> Option<&RoutePrice> {
        self.routes.iter().find(|r| {
            r.matches(method, path)
                || (method == "HEAD" && r.method == "GET" && r.matches("GET", path))
        })
    }

    /// The price of a request: [`Price::Free`] when nothing matches.
    pub fn price_for(&self, method: &str, path: &str) -> &Price {
        const FREE: &Price = &Price::Free;
        self.route_for(method, path).map_or(FREE, |r| &r.price)
    }

    /// The exact bytes to serve (pretty JSON with a final newline). Rendered once; the hash is
    /// of these bytes.
    pub fn render(&self) -> Vec<u8> {
        // Strings, integers, booleans and hex: serialising to JSON cannot fail.
        let mut bytes = match serde_json::to_vec_pretty(self) {
            Ok(b) => b,
            Err(e) => unreachable!("terms JSON cannot fail: {e}"),
        };
        bytes.push(b'\n');
        bytes
    }

    /// Parses served bytes, refusing oversize documents, unknown fields and other formats.
    pub fn parse(bytes: &[u8]) -> Result<Terms, WireError> {
        let bad = |reason: String| WireError::Malformed {
            what: "terms document",
            reason,
        };
        if bytes.len() > MAX_TERMS_BYTES {
            return Err(bad(format!(
                "{} bytes exceeds the {MAX_TERMS_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let terms: Terms = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if terms.format != TERMS_FORMAT {
            return Err(bad(format!(
                "format {:?} is not {TERMS_FORMAT:?}",
                terms.format
            )));
        }
        if terms.max_lanes == 0 || terms.max_lanes > tally_core::sequence::MAX_LANES {
            return Err(bad(format!(
                "max_lanes {} is not in 1..={}",
                terms.max_lanes,
                tally_core::sequence::MAX_LANES
            )));
        }
        Ok(terms)
    }
}

/// One way a new terms document is worse for the client than the one it accepted before:
/// what changed, from what, to what (spec/HTTP.md §4.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermsIncrease {
    /// The route (`GET /v1/items`) or the field (`charge_server_errors`) that changed.
    pub what: String,
    /// Its old value.
    pub from: String,
    /// Its new value.
    pub to: String,
}

impl std::fmt::Display for TermsIncrease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} -> {}", self.what, self.from, self.to)
    }
}

/// A probe method no route names: matched only by `*` routes ("any other method").
const OTHER_METHOD: &str = "(any other method)";

fn describe(price: &Price) -> String {
    match price {
        Price::Free => "free".into(),
        Price::Fixed { amount } => format!("fixed {amount}"),
        Price::Metered(m) => m.describe(),
    }
}

/// Whether moving from `old` to `new` can charge one call more: a free route became priced,
/// a fixed price or a metered maximum or minimum went up, a metered unit price went up, or a
/// meter changed (the client can no longer tell what a unit is).
fn price_raised(old: &Price, new: &Price) -> bool {
    match (old, new) {
        (_, Price::Free) => false,
        (Price::Free, _) => true,
        (Price::Metered(a), Price::Metered(b)) => a.raised_by(b),
        _ => new.max_per_call() > old.max_per_call(),
    }
}

/// Every way `new` charges the client more, or credits it less, than `old` (spec/HTTP.md
/// §4.4): prices compared as the routes resolve them (first match wins, so a reordered or
/// shadowing route counts), at every route path of either document (and a child of every
/// prefix route) for every method either names and for "any other method"; then
/// `charge_server_errors` turned on, an automatic refund turned off, and a changed settlement
/// target (`chain`). Empty when `new` is no worse for the client. Pure: no I/O.
pub fn price_increases(old: &Terms, new: &Terms) -> Vec<TermsIncrease> {
    let all = || old.routes.iter().chain(new.routes.iter());
    let mut methods: Vec<&str> = all()
        .map(|r| r.method.as_str())
        .filter(|m| *m != "*")
        .collect();
    methods.push(OTHER_METHOD);
    let mut paths: Vec<String> = Vec::new();
    for r in all() {
        paths.push(r.path.clone());
        if r.path_match == PathMatch::Prefix {
            let sep = if r.path.ends_with('/') { "" } else { "/" };
            paths.push(format!("{}{sep}…", r.path));
        }
    }
    let mut out: Vec<TermsIncrease> = Vec::new();
    for path in &paths {
        for method in &methods {
            let (from, to) = (old.price_for(method, path), new.price_for(method, path));
            if !price_raised(from, to) {
                continue;
            }
            let change = TermsIncrease {
                what: format!("{method} {path}"),
                from: describe(from),
                to: describe(to),
            };
            if !out.contains(&change) {
                out.push(change);
            }
        }
    }
    let mut flag = |what: &str, from: String, to: String| {
        out.push(TermsIncrease {
            what: what.into(),
            from,
            to,
        })
    };
    if new.charge_server_errors && !old.charge_server_errors {
        flag("charge_server_errors", "false".into(), "true".into());
    }
    if old.refunds.server_errors && !new.refunds.server_errors {
        flag("refunds.server_errors", "true".into(), "false".into());
    }
    if old.refunds.over_max && !new.refunds.over_max {
        flag("refunds.over_max", "true".into(), "false".into());
    }
    if old.chain != new.chain {
        flag(
            "chain",
            format!("{:?}", old.chain),
            format!("{:?}", new.chain),
        );
    }
    out
}

#[cfg(test)]
mod increase_tests {
    use super::*;

    fn route(method: &str, path: &str, m: PathMatch, price: Price) -> RoutePrice {
        RoutePrice {
            method: method.into(),
            path: path.into(),
            path_match: m,
            mime_type: None,
            price,
        }
    }

    fn fixed(a: u128) -> Price {
        Price::Fixed { amount: Amount(a) }
    }

    fn metered(unit: u128, max: u128) -> Price {
        Price::Metered(MeteredPrice::header("x-tokens", unit, max))
    }

    fn terms(routes: Vec<RoutePrice>) -> Terms {
        Terms {
            format: TERMS_FORMAT.into(),
            provider_key: tally_core::SecretKey::from_seed(&[7; 32]).public(),
            chain: ChainTerms {
                chain_id: 31337,
                contract: "0x01".into(),
                asset: "0x02".into(),
                pay_to: "0x03".into(),
            },
            credit_limit: Amount(1000),
            max_lanes: 8,
            checkpoint: CheckpointPolicy {
                every_records: 10,
                every_seconds: 0,
                every_amount: Amount(0),
            },
            charge_server_errors: false,
            refunds: RefundPolicy {
                server_errors: true,
                over_max: true,
            },
            max_request_bytes: 1 << 20,
            max_response_bytes: 1 << 23,
            routes,
            unmatched: Unmatched::Free,
        }
    }

    fn base() -> Terms {
        terms(vec![
            route("GET", "/v1/items", PathMatch::Prefix, fixed(10)),
            route("POST", "/v1/complete", PathMatch::Exact, metered(2, 4000)),
        ])
    }

    fn whats(v: &[TermsIncrease]) -> Vec<&str> {
        v.iter().map(|c| c.what.as_str()).collect()
    }

    #[test]
    fn identical_and_cheaper_terms_are_no_increase() {
        assert!(price_increases(&base(), &base()).is_empty());
        let mut cheaper = base();
        cheaper.routes[0].price = fixed(5);
        cheaper.routes[1].price = metered(1, 3000);
        cheaper.credit_limit = Amount(1);
        cheaper.charge_server_errors = false;
        assert!(price_increases(&base(), &cheaper).is_empty());
        cheaper.routes.remove(0);
        assert!(
            price_increases(&base(), &cheaper).is_empty(),
            "unmatched is free"
        );
    }

    #[test]
    fn a_raised_fixed_price_is_listed_with_both_values() {
        let mut new = base();
        new.routes[0].price = fixed(11);
        let got = price_increases(&base(), &new);
        assert_eq!(whats(&got), ["GET /v1/items", "GET /v1/items/…"]);
        assert_eq!(got[0].to_string(), "GET /v1/items: fixed 10 -> fixed 11");
    }

    #[test]
    fn metered_unit_price_max_and_units_header() {
        for price in [
            metered(3, 4000),
            metered(2, 4001),
            Price::Metered(MeteredPrice::header("x-chars", 2, 4000)),
            fixed(4001),
        ] {
            let mut new = base();
            new.routes[1].price = price.clone();
            assert_eq!(
                whats(&price_increases(&base(), &new)),
                ["POST /v1/complete"],
                "{price:?}"
            );
        }
        let mut lower = base();
        lower.routes[1].price = fixed(4000);
        assert!(price_increases(&base(), &lower).is_empty());
    }

    #[test]
    fn a_route_that_became_priced_or_a_shadowing_route() {
        let mut new = base();
        new.routes
            .push(route("*", "/v1/free", PathMatch::Exact, fixed(1)));
        let got = price_increases(&base(), &new);
        assert!(got.iter().any(|c| c.what == "GET /v1/free"), "{got:?}");
        assert!(got.iter().any(|c| c.what == "(any other method) /v1/free"));
        assert!(got.iter().all(|c| c.from == "free"));
        // A new first route that shadows a child of the prefix route at a higher price.
        let mut new = base();
        let child = route("GET", "/v1/items/9", PathMatch::Exact, fixed(50));
        new.routes.insert(0, child);
        assert_eq!(whats(&price_increases(&base(), &new)), ["GET /v1/items/9"]);
    }

    #[test]
    fn credit_terms_against_the_client() {
        let mut new = base();
        new.charge_server_errors = true;
        new.refunds.server_errors = false;
        new.refunds.over_max = false;
        new.chain.pay_to = "0x04".into();
        assert_eq!(
            whats(&price_increases(&base(), &new)),
            [
                "charge_server_errors",
                "refunds.server_errors",
                "refunds.over_max",
                "chain"
            ]
        );
        // The reverse direction is in the client's favour.
        assert_eq!(whats(&price_increases(&new, &base())), ["chain"]);
    }
}
