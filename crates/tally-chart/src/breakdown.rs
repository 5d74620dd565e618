//! Horizontal bars for a breakdown (refusals by reason, revenue by route, …).

use crate::escape;
use crate::svg::{clean, label, no_data, open, px, value, FONT, PALETTE};

const W: u32 = 640;
const TOP: f64 = 30.0;
const ROW: f64 = 22.0;
const BAR_H: f64 = 14.0;
const LABEL_W: f64 = 190.0;
/// Room on the right for the printed value.
const VALUE_W: f64 = 120.0;

/// Horizontal bars for a breakdown (route, reason, …) with values printed.
///
/// Items keep the caller's order; each bar's length is proportional to its value (the
/// longest bar is the largest value), and the exact value and `unit` are printed after
/// it. NaN, infinite and negative values draw as zero-length bars and print as `0`.
/// No items gives a "no data" chart.
pub fn breakdown(title: &str, unit: &str, items: &[(String, f64)]) -> String {
    if items.is_empty() {
        return no_data(title, W);
    }
    let max = items.iter().map(|(_, v)| clean(*v)).fold(0.0, f64::max);
    let h = TOP + items.len() as f64 * ROW + 8.0;
    let mut s = open(title, W, h.ceil() as u32);
    let span = f64::from(W) - LABEL_W - VALUE_W;
    let unit = escape(unit);
    for (i, (name, v)) in items.iter().enumerate() {
        let v = clean(*v);
        let y = TOP + i as f64 * ROW;
        let len = if max > 0.0 { v / max * span } else { 0.0 };
        s.push_str(&format!(
            r#"<text x="{}" y="{}" font-size="12" text-anchor="end" {FONT}>{}</text>"#,
            px(LABEL_W - 8.0),
            px(y + 11.0),
            label(name)
        ));
        s.push_str(&format!(
            r#"<rect class="bar" x="{}" y="{}" width="{}" height="{BAR_H}" fill="{}"><title>{}: {} {}</title></rect>"#,
            px(LABEL_W),
            px(y),
            px(len),
            PALETTE[i % PALETTE.len()],
            escape(name),
            value(v),
            unit
        ));
        s.push_str(&format!(
            r#"<text x="{}" y="{}" font-size="12" {FONT}>{} {}</text>"#,
            px(LABEL_W + len + 6.0),
            px(y + 11.0),
            value(v),
            unit
        ));
    }
    s.push_str("</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widths(svg: &str) -> Vec<f64> {
        svg.split(r#"<rect class="bar""#)
            .skip(1)
            .map(|r| {
                let w = r.split("width=\"").nth(1).unwrap();
                w[..w.find('"').unwrap()].parse().unwrap()
            })
            .collect()
    }

    fn items(v: &[(&str, f64)]) -> Vec<(String, f64)> {
        v.iter().map(|(l, x)| (l.to_string(), *x)).collect()
    }

    #[test]
    fn bars_are_proportional_and_values_printed() {
        let svg = breakdown(
            "Refusals",
            "calls",
            &items(&[("insufficient_funds", 4.0), ("bad_signature", 1.0)]),
        );
        assert_eq!(widths(&svg), vec![330.0, 82.5]);
        assert!(svg.contains(">4 calls</text>"));
        assert!(svg.contains(">1 calls</text>"));
        assert!(svg.contains(">insufficient_funds</text>"));
    }

    #[test]
    fn labels_are_escaped_and_bad_values_are_zero() {
        let svg = breakdown(
            "<b>",
            "u",
            &items(&[
                ("<script>x</script>", f64::NAN),
                ("ok", f64::INFINITY),
                ("n", -1.0),
            ]),
        );
        assert!(!svg.contains("<script") && !svg.contains("<b>"));
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
        assert_eq!(widths(&svg), vec![0.0, 0.0, 0.0]);
    }

    #[test]
    fn no_items_is_no_data() {
        let svg = breakdown("Refusals", "calls", &[]);
        assert!(svg.contains(">no data</text>") && svg.ends_with("</svg>"));
    }
}
