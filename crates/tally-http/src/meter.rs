//! Metered prices (spec/HTTP.md §4.1 `metered`): up to [`METERS`] meters per route, each with
//! its own unit price and the place its units come from (a response header, a trailer, a
//! JSON pointer into the body, or into the last server-sent event that has it).
//!
//! The formula that turns units into an amount lives here once ([`MeteredPrice::charge`]):
//! the gateway charges by it, and the client and the auditor check against it.

use serde::{Deserialize, Serialize};
use tally_core::{Units, METERS};

use crate::amount::Amount;

/// Where a meter's units come from. Every source reads a non-negative integer; anything
/// else (absent, negative, fractional, text, out of range) reads as no report, never a guess.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum UnitSource {
    /// A response header holding a plain decimal.
    Header(String),
    /// A response trailer holding a plain decimal (an upstream that counts while it streams).
    Trailer(String),
    /// An RFC 6901 JSON pointer into a JSON response body, e.g. `/usage/total_tokens`.
    Json(String),
    /// An RFC 6901 JSON pointer into the `data` of server-sent events: the last event of the
    /// stream whose data is JSON with a number there (OpenAI-compatible `usage`).
    Sse(String),
}

impl UnitSource {
    /// Why this source cannot be read, if it cannot: header names must be lowercase
    /// tokens (the gateway compares them as HTTP/2 spells them), pointers must be empty or
    /// start with `/` (RFC 6901 §3).
    fn invalid(&self) -> Option<String> {
        match self {
            UnitSource::Header(h) | UnitSource::Trailer(h) => {
                let token = !h.is_empty()
                    && h.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                (!token).then(|| format!("{h:?} is not a lowercase header name"))
            }
            UnitSource::Json(p) | UnitSource::Sse(p) => (!p.is_empty() && !p.starts_with('/'))
                .then(|| format!("{p:?} is not a JSON pointer (RFC 6901)")),
        }
    }
}

/// One meter of a route: a name (what the client is shown), a unit price and a source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meter {
    /// A short name, unique in the route (`input`, `output`).
    pub name: String,
    /// Price of one unit.
    pub unit_price: Amount,
    /// Where the units are read.
    pub from: UnitSource,
}

/// A metered price: `Σ units_i × unit_price_i`, at least `min_charge`, capped at
/// `max_amount` and at the authorization's `max_amount`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "MeteredSpelling", into = "MeteredSpelling")]
pub struct MeteredPrice {
    /// 1 ..= [`METERS`] meters, in the order their units are signed in an outcome.
    pub meters: Vec<Meter>,
    /// The most one call costs; what a client should authorize.
    pub max_amount: Amount,
    /// The least one call is charged whatever the upstream reports (0: none).
    pub min_charge: Amount,
}

impl MeteredPrice {
    /// One meter read from a response header: the version 1 shape of a metered route.
    pub fn header(units_header: &str, unit_price: u128, max_amount: u128) -> Self {
        MeteredPrice {
            meters: vec![Meter {
                name: "units".into(),
                unit_price: Amount(unit_price),
                from: UnitSource::Header(units_header.into()),
            }],
            max_amount: Amount(max_amount),
            min_charge: Amount(0),
        }
    }

    /// Why this price cannot be metered, if it cannot: 1 to [`METERS`] meters, with unique
    /// non-empty names and readable sources. Checked when terms are parsed and when a
    /// gateway starts.
    pub fn check(&self) -> Result<(), String> {
        let meters = &self.meters;
        if meters.is_empty() || meters.len() > METERS {
            return Err(format!(
                "a metered price has 1 to {METERS} meters, not {}",
                meters.len()
            ));
        }
        for (i, m) in meters.iter().enumerate() {
            if m.name.is_empty() || meters[..i].iter().any(|o| o.name == m.name) {
                return Err(format!(
                    "meter names must be unique and non-empty: {:?}",
                    m.name
                ));
            }
            if let Some(why) = m.from.invalid() {
                return Err(format!("meter {:?}: {why}", m.name));
            }
        }
        Ok(())
    }

    /// What a call costs for `units` (one count per meter), capped by the client's
    /// `max_amount` (P5). Saturating: no count an upstream reports can overflow it.
    pub fn charge(&self, units: &Units, max_amount: u128) -> u128 {
        let sum = self
            .meters
            .iter()
            .zip(units.iter())
            .fold(0u128, |acc, (m, &u)| {
                acc.saturating_add(u128::from(u).saturating_mul(m.unit_price.0))
            });
        sum.max(self.min_charge.0)
            .min(self.max_amount.0)
            .min(max_amount)
    }

    /// Whether `units` has nothing in the slots past this route's meters.
    pub fn fits(&self, units: &Units) -> bool {
        units[self.meters.len().min(METERS)..]
            .iter()
            .all(|&u| u == 0)
    }

    /// The smallest authorization that can pay one unit of any meter and the minimum.
    pub fn min_authorization(&self) -> u128 {
        self.meters
            .iter()
            .map(|m| m.unit_price.0)
            .max()
            .unwrap_or(0)
            .max(self.min_charge.0)
            .max(1)
    }

    /// Whether the meters can only be read once the body has ended (a trailer, the body, or
    /// the last event): a response priced by one of them has its receipt after the body.
    pub fn reads_after_body(&self) -> bool {
        self.meters
            .iter()
            .any(|m| !matches!(m.from, UnitSource::Header(_)))
    }

    /// A human summary, for `terms_changed` explanations.
    pub fn describe(&self) -> String {
        let meters: Vec<String> = self
            .meters
            .iter()
            .map(|m| format!("{} {} per unit from {:?}", m.name, m.unit_price, m.from))
            .collect();
        format!(
            "metered [{}], min {}, max {}",
            meters.join("; "),
            self.min_charge,
            self.max_amount
        )
    }

    /// Whether `new` can charge one call more than `self`: a meter's unit price went up, the
    /// maximum or minimum went up, or a meter was added, removed, renamed or moved to another
    /// source (the client can no longer tell what a unit is).
    pub fn raised_by(&self, new: &MeteredPrice) -> bool {
        let same_meters = self.meters.len() == new.meters.len()
            && self
                .meters
                .iter()
                .zip(&new.meters)
                .all(|(a, b)| a.name == b.name && a.from == b.from);
        !same_meters
            || self
                .meters
                .iter()
                .zip(&new.meters)
                .any(|(a, b)| b.unit_price.0 > a.unit_price.0)
            || new.max_amount.0 > self.max_amount.0
            || new.min_charge.0 > self.min_charge.0
    }
}

/// The JSON and TOML spelling of a metered price: `meters`, or the version 1 shorthand
/// `units_header` + `unit_price` (one header meter named `units`). Rendered always with
/// `meters`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MeteredSpelling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    units_header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit_price: Option<Amount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    meters: Option<Vec<Meter>>,
    max_amount: Amount,
    #[serde(default, skip_serializing_if = "Amount::is_zero")]
    min_charge: Amount,
}

impl TryFrom<MeteredSpelling> for MeteredPrice {
    type Error = String;

    fn try_from(s: MeteredSpelling) -> Result<Self, String> {
        let meters =
            match (s.meters, s.units_header, s.unit_price) {
                (Some(m), None, None) => m,
                (None, Some(h), Some(p)) => MeteredPrice::header(&h, p.0, 0).meters,
                _ => return Err(
                    "a metered price has either `meters` or both `units_header` and `unit_price`"
                        .into(),
                ),
            };
        let price = MeteredPrice {
            meters,
            max_amount: s.max_amount,
            min_charge: s.min_charge,
        };
        price.check()?;
        Ok(price)
    }
}

impl From<MeteredPrice> for MeteredSpelling {
    fn from(p: MeteredPrice) -> Self {
        MeteredSpelling {
            units_header: None,
            unit_price: None,
            meters: Some(p.meters),
            max_amount: p.max_amount,
            min_charge: p.min_charge,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> MeteredPrice {
        serde_json::from_str(
            r#"{"meters":[
                {"name":"input","unit_price":"1","from":{"sse":"/usage/prompt_tokens"}},
                {"name":"output","unit_price":"3","from":{"sse":"/usage/completion_tokens"}}],
               "max_amount":"1000","min_charge":"2"}"#,
        )
        .unwrap()
    }

    #[test]
    fn each_meter_is_priced_then_capped() {
        let p = tokens();
        assert_eq!(p.charge(&[10, 20, 0, 0], u128::MAX), 10 + 60);
        assert_eq!(p.charge(&[0, 0, 0, 0], u128::MAX), 2, "the minimum");
        assert_eq!(p.charge(&[10, 20, 0, 0], 50), 50, "the authorization");
        assert_eq!(p.charge(&[1000, 1000, 0, 0], u128::MAX), 1000, "the route");
        assert_eq!(
            p.charge(&[u64::MAX; METERS], u128::MAX),
            1000,
            "no overflow"
        );
        assert!(p.fits(&[1, 2, 0, 0]) && !p.fits(&[1, 2, 3, 0]));
        assert_eq!(p.min_authorization(), 3);
        assert!(p.reads_after_body());
    }

    #[test]
    fn the_header_shorthand_is_one_meter_and_renders_long() {
        let short: MeteredPrice = serde_json::from_str(
            r#"{"units_header":"x-tokens","unit_price":"2","max_amount":"40"}"#,
        )
        .unwrap();
        assert_eq!(short, MeteredPrice::header("x-tokens", 2, 40));
        assert!(!short.reads_after_body());
        let json = serde_json::to_string(&short).unwrap();
        assert!(
            json.contains("\"meters\"") && !json.contains("units_header"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<MeteredPrice>(&json).unwrap(), short);
    }

    #[test]
    fn bad_spellings_are_refused() {
        for bad in [
            r#"{"max_amount":"1"}"#,
            r#"{"units_header":"x","max_amount":"1"}"#,
            r#"{"meters":[],"max_amount":"1"}"#,
            r#"{"meters":[{"name":"a","unit_price":"1","from":{"json":"usage"}}],"max_amount":"1"}"#,
            r#"{"meters":[{"name":"a","unit_price":"1","from":{"header":"X-Tokens"}}],"max_amount":"1"}"#,
            r#"{"meters":[{"name":"a","unit_price":"1","from":{"header":"a"}},{"name":"a","unit_price":"1","from":{"header":"b"}}],"max_amount":"1"}"#,
            r#"{"meters":[{"name":"a","unit_price":"1","from":{"header":"a"}}],"units_header":"x","unit_price":"1","max_amount":"1"}"#,
        ] {
            assert!(serde_json::from_str::<MeteredPrice>(bad).is_err(), "{bad}");
        }
        let five = (0..5)
            .map(|i| format!(r#"{{"name":"m{i}","unit_price":"1","from":{{"header":"h{i}"}}}}"#))
            .collect::<Vec<_>>()
            .join(",");
        let json = format!(r#"{{"meters":[{five}],"max_amount":"1"}}"#);
        assert!(serde_json::from_str::<MeteredPrice>(&json).is_err());
    }

    #[test]
    fn raising_a_price_or_moving_a_meter_is_an_increase() {
        let p = tokens();
        assert!(!p.raised_by(&p));
        let mut q = p.clone();
        q.meters[1].unit_price = Amount(4);
        assert!(p.raised_by(&q) && !q.raised_by(&p));
        let mut q = p.clone();
        q.meters[0].from = UnitSource::Json("/usage/prompt_tokens".into());
        assert!(p.raised_by(&q));
        let mut q = p.clone();
        q.meters.pop();
        assert!(p.raised_by(&q));
    }
}
