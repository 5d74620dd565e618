//! tally-chart: small hand-made SVG charts for the people who look at tally's numbers —
//! the provider console (`/tally/console`, spec/HTTP.md §11) and the HTML bill.
//!
//! Every function here is pure: it takes numbers and labels and returns one
//! self-contained inline `<svg>` string. The crate must never do I/O, never read a clock
//! (callers pass times in), never pull in a dependency, and never draw a label without
//! passing it through [`escape`]: labels are routes, reasons and channel ids that a
//! paying client or an upstream can influence, and the SVG is pasted into HTML pages.
//!
//! Output is deterministic (same input, same bytes), colours come from a fixed palette,
//! and sizes are given by a `viewBox` so the chart scales with the page. Charts use SVG
//! presentation attributes only (no `style=""`, no script), so they render under a strict
//! `Content-Security-Policy` that forbids inline styles.

mod bars;
mod breakdown;
mod svg;
mod time;

pub use bars::stacked_bars;
pub use breakdown::breakdown;
pub use time::{step_for, utc_full};

/// Evenly spaced time buckets: bucket k covers [start_ms + k*step_ms, start_ms + (k+1)*step_ms).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeSeries {
    pub start_ms: u64,
    pub step_ms: u64,
    pub series: Vec<Series>,
}

/// One stacked layer: a label (e.g. a route) and one value per bucket (all series have equal length).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub values: Vec<f64>,
}

/// Escapes text for HTML/XML text and attribute values.
///
/// The five characters with meaning in markup (`& < > " '`) become entities; control
/// characters other than tab, newline and carriage return are dropped, because XML 1.0
/// forbids them and one would make the whole inline SVG invalid.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_turns_markup_into_entities() {
        assert_eq!(
            escape(r#"<script>alert("x" & 'y')</script>"#),
            "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;"
        );
        assert_eq!(escape("GET /v1/chat"), "GET /v1/chat");
        assert_eq!(escape("a\u{0}b\u{1b}c\td"), "abc\td");
    }
}
