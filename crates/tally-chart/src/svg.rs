//! Shared drawing helpers: palette, number formatting, the SVG frame and the "no data" chart.

use crate::escape;

/// Fixed palette (colour-blind friendly, Okabe–Ito order); layer k uses `PALETTE[k % len]`.
pub(crate) const PALETTE: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#666666",
];

/// Longest label drawn, in characters; longer labels are cut and end in `…` (the full
/// label stays in the `<title>` tooltip).
pub(crate) const MAX_LABEL: usize = 28;

/// The font attributes every text element carries (presentation attributes, CSP-safe).
pub(crate) const FONT: &str = r##"font-family="system-ui, sans-serif" fill="#222""##;

/// A value made drawable: NaN, infinities and negatives count as zero, so no coordinate
/// in the output is ever `NaN` or `inf` (which would make the SVG invalid).
pub(crate) fn clean(v: f64) -> f64 {
    if v.is_finite() && v > 0.0 {
        v
    } else {
        0.0
    }
}

/// A coordinate with two decimals (deterministic; never NaN because inputs are cleaned).
pub(crate) fn px(v: f64) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    let s = format!("{v:.2}");
    trim(s)
}

/// A value as people read it: integers without decimals, else up to six decimals with
/// trailing zeros removed; non-finite values print as `0`.
pub(crate) fn value(v: f64) -> String {
    let v = clean_signed(v);
    if v == v.trunc() && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        trim(format!("{v:.6}"))
    }
}

fn clean_signed(v: f64) -> f64 {
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

fn trim(s: String) -> String {
    if !s.contains('.') {
        return s;
    }
    let t = s.trim_end_matches('0').trim_end_matches('.');
    if t == "-0" {
        "0".to_string()
    } else {
        t.to_string()
    }
}

/// A label cut to [`MAX_LABEL`] characters and escaped.
pub(crate) fn label(s: &str) -> String {
    if s.chars().count() <= MAX_LABEL {
        return escape(s);
    }
    let cut: String = s.chars().take(MAX_LABEL - 1).collect();
    escape(&format!("{cut}…"))
}

/// The smallest "nice" number (1, 2 or 5 times a power of ten) at or above `v`; at least 1.
pub(crate) fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let mut p = 10f64.powf(v.log10().floor());
    if !(p.is_finite() && p > 0.0) {
        p = 1.0;
    }
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= v {
            return m * p;
        }
    }
    10.0 * p
}

/// The opening `<svg>` tag with its accessible `<title>` and the visible title text.
pub(crate) fn open(title: &str, w: u32, h: u32) -> String {
    let t = escape(title);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" role="img" class="tally-chart"><title>{t}</title><rect x="0" y="0" width="{w}" height="{h}" fill="#ffffff"/><text x="8" y="18" font-size="14" font-weight="bold" {FONT}>{t}</text>"##
    )
}

/// A complete chart that says "no data" (used for empty series and empty breakdowns).
pub(crate) fn no_data(title: &str, w: u32) -> String {
    let h = 80;
    let mut s = open(title, w, h);
    s.push_str(&format!(
        r#"<text x="{}" y="52" font-size="13" text-anchor="middle" {FONT}>no data</text></svg>"#,
        w / 2
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_without_noise() {
        assert_eq!(value(3.0), "3");
        assert_eq!(value(0.25), "0.25");
        assert_eq!(value(0.000001), "0.000001");
        assert_eq!(value(f64::NAN), "0");
        assert_eq!(px(12.0), "12");
        assert_eq!(px(12.345), "12.35");
        assert_eq!(px(f64::INFINITY), "0");
    }

    #[test]
    fn nice_max_rounds_up_to_1_2_5() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(10.0), 10.0);
        assert_eq!(nice_max(11.0), 20.0);
        assert_eq!(nice_max(41.0), 50.0);
        assert_eq!(nice_max(f64::INFINITY), 1.0);
    }

    #[test]
    fn long_labels_are_cut_then_escaped() {
        let l = label(&"<".repeat(40));
        assert!(!l.contains('<'));
        assert!(l.ends_with('…'));
        assert_eq!(l.matches("&lt;").count(), MAX_LABEL - 1);
    }
}
