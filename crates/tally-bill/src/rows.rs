//! The bill's table: one row per record, kept as columns so the page can filter a million
//! rows with typed arrays (spec/BILL.md §3).
//!
//! A record signs no route and no HTTP status (the request hash is salted, spec/PROTOCOL.md
//! §3.3), so the row's *class* is what the signed bytes prove: the routes of the terms whose
//! price explains the record's units and amount, a credit, or an uncharged call.

use std::collections::HashMap;

use tally_core::{Record, Units, METERS};
use tally_http::Terms;

/// The most classes a bill names; rows beyond it share the last one, "other".
pub const MAX_CLASSES: usize = 255;

/// Class names that do not come from a route.
pub const CREDIT: &str = "credit";
/// An uncharged call (no units, no amount: an upstream error the terms do not charge, or a
/// free answer).
pub const UNCHARGED: &str = "uncharged";
/// A charge no route of the terms explains (or the statement carries no terms).
pub const UNEXPLAINED: &str = "charge (no route explains it)";
/// A line that is not a readable record.
pub const UNREADABLE: &str = "unreadable line";
/// What rows share once [`MAX_CLASSES`] are named.
pub const OTHER: &str = "other";

/// The table's columns, `n` rows each.
#[derive(Debug, Default)]
pub struct Rows {
    /// Provider time of each record, ms since the Unix epoch.
    pub time_ms: Vec<f64>,
    /// Net amount in the asset's base units (exact up to 2^53; the page shows exact values
    /// from the record bytes when it has them).
    pub amount: Vec<f64>,
    /// Position on its lane, saturated at `u32::MAX`.
    pub seq: Vec<u32>,
    /// Units per meter, saturated at `u32::MAX`.
    pub units: [Vec<u32>; METERS],
    /// The lane (`< 1024`, spec/PROTOCOL.md §5.4).
    pub lane: Vec<u16>,
    /// Index into [`Classes::names`].
    pub class: Vec<u8>,
}

impl Rows {
    /// The number of rows.
    pub fn len(&self) -> usize {
        self.class.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.class.is_empty()
    }

    /// Appends the row of a readable record.
    pub fn push(&mut self, record: &Record, class: u8) {
        let a = &record.authorization;
        let o = &record.outcome;
        self.time_ms.push(o.time_ms as f64);
        self.amount.push(o.amount as f64);
        self.seq.push(u32::try_from(a.seq).unwrap_or(u32::MAX));
        for (col, u) in self.units.iter_mut().zip(o.units) {
            col.push(u32::try_from(u).unwrap_or(u32::MAX));
        }
        self.lane.push(u16::try_from(a.lane).unwrap_or(u16::MAX));
        self.class.push(class);
    }

    /// Appends the row of an unreadable line: no time, no amount.
    pub fn push_unreadable(&mut self, class: u8) {
        self.time_ms.push(0.0);
        self.amount.push(0.0);
        self.seq.push(0);
        for col in &mut self.units {
            col.push(0);
        }
        self.lane.push(0);
        self.class.push(class);
    }

    /// The columns little-endian, widest first so each column starts aligned for a typed
    /// array over the whole buffer: time, amount (f64), seq, units ×4 (u32), lane (u16),
    /// class (u8) (spec/BILL.md §3).
    pub fn encode(&self) -> Vec<u8> {
        let n = self.len();
        let mut out = Vec::with_capacity(n * (8 + 8 + 4 * (1 + METERS) + 2 + 1));
        for v in self.time_ms.iter().chain(&self.amount) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in self.seq.iter().chain(self.units.iter().flatten()) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for v in &self.lane {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.class);
        out
    }
}

/// Names rows by what their signed bytes prove.
#[derive(Debug)]
pub struct Classes<'t> {
    terms: Option<&'t Terms>,
    names: Vec<String>,
    by_name: HashMap<String, u8>,
    /// Memo of `(units, amount, max_amount)` → class: most bills repeat a few prices.
    memo: HashMap<(Units, i128, u128), u8>,
}

impl<'t> Classes<'t> {
    /// Classes under `terms` (`None`: every charge is [`UNEXPLAINED`]).
    pub fn new(terms: Option<&'t Terms>) -> Self {
        Classes {
            terms,
            names: Vec::new(),
            by_name: HashMap::new(),
            memo: HashMap::new(),
        }
    }

    /// The class names, in id order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The class id of `name`, naming it if new.
    pub fn id(&mut self, name: &str) -> u8 {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let name = if self.names.len() + 1 >= MAX_CLASSES {
            OTHER
        } else {
            name
        };
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = self.names.len() as u8;
        self.names.push(name.to_string());
        self.by_name.insert(name.to_string(), id);
        id
    }

    /// The class of a record.
    pub fn of(&mut self, record: &Record) -> u8 {
        let o = &record.outcome;
        let key = (o.units, o.amount, record.authorization.max_amount);
        if let Some(&id) = self.memo.get(&key) {
            return id;
        }
        let name = classify(self.terms, &o.units, o.amount, key.2);
        let id = self.id(&name);
        self.memo.insert(key, id);
        id
    }
}

/// The class name of `(units, amount)` under `max_amount`: the routes whose price explains
/// it (the same test the audit's price check uses, `Price::explains`), joined with " | "
/// when several share a price.
pub fn classify(terms: Option<&Terms>, units: &Units, amount: i128, max_amount: u128) -> String {
    if amount < 0 {
        return CREDIT.into();
    }
    if amount == 0 && *units == [0; METERS] {
        return UNCHARGED.into();
    }
    let routes: Vec<String> = terms
        .map(|t| {
            t.routes
                .iter()
                .filter(|r| r.price.explains(units, amount.unsigned_abs(), max_amount))
                .map(|r| format!("{} {}", r.method, r.path))
                .collect()
        })
        .unwrap_or_default();
    match routes.len() {
        0 => UNEXPLAINED.into(),
        _ => capped(&routes),
    }
}

/// The longest class name: terms may list many routes at one price, and every chart bar
/// repeats its class's name.
pub const MAX_CLASS_NAME: usize = 200;

/// Routes joined with " | ", cut at [`MAX_CLASS_NAME`] characters with a count of the rest.
fn capped(routes: &[String]) -> String {
    let mut name = String::new();
    for (k, r) in routes.iter().enumerate() {
        let sep = if k == 0 { "" } else { " | " };
        if name.chars().count() + sep.len() + r.chars().count() > MAX_CLASS_NAME {
            let cut: String = r
                .chars()
                .take(MAX_CLASS_NAME.saturating_sub(name.chars().count() + 3))
                .collect();
            if k == 0 {
                name.push_str(&cut);
            }
            name.push_str(&format!(" … (+{} routes)", routes.len() - k));
            return name;
        }
        name.push_str(sep);
        name.push_str(r);
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_laid_out_widest_first_and_aligned() {
        let mut rows = Rows::default();
        rows.push_unreadable(3);
        rows.push_unreadable(4);
        let bytes = rows.encode();
        // 2 rows × (8 + 8 + 4·5 + 2 + 1) bytes.
        assert_eq!(bytes.len(), 2 * 39);
        // The class column is the last n bytes.
        assert_eq!(&bytes[bytes.len() - 2..], &[3, 4]);
    }

    #[test]
    fn classes_are_named_once_and_capped() {
        let mut c = Classes::new(None);
        assert_eq!(c.id("a"), 0);
        assert_eq!(c.id("b"), 1);
        assert_eq!(c.id("a"), 0);
        for k in 0..400 {
            c.id(&format!("route {k}"));
        }
        assert_eq!(c.names().len(), MAX_CLASSES);
        assert_eq!(c.names().last().map(String::as_str), Some(OTHER));
        assert_eq!(c.id("yet another"), c.id(OTHER));
    }

    #[test]
    fn long_class_names_are_cut_with_a_count() {
        let few = vec!["GET /a".to_string(), "GET /b".to_string()];
        assert_eq!(capped(&few), "GET /a | GET /b");
        let many: Vec<String> = (0..100).map(|k| format!("GET /route/{k:03}")).collect();
        let name = capped(&many);
        assert!(name.chars().count() <= MAX_CLASS_NAME + 20, "{name}");
        assert!(
            name.starts_with("GET /route/000 | GET /route/001"),
            "{name}"
        );
        assert!(name.ends_with("routes)"), "{name}");
        let huge = vec!["GET /".to_string() + &"x".repeat(5000)];
        assert!(capped(&huge).chars().count() <= MAX_CLASS_NAME + 20);
    }

    #[test]
    fn credits_and_uncharged_calls_have_their_own_class() {
        assert_eq!(classify(None, &[0; METERS], -5, 0), CREDIT);
        assert_eq!(classify(None, &[0; METERS], 0, 10), UNCHARGED);
        assert_eq!(classify(None, &[1, 0, 0, 0], 10, 10), UNEXPLAINED);
    }
}
